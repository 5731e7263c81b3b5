//! The registry side of rdpull.
//!
//! This crate owns image [`Reference`]s, the registry v2 protocol ([`Registry`]: scheme
//! choice, `/v2/` ping, Basic and Bearer auth), manifests and indexes ([`resolve`] walks an
//! index to the manifest for a [`Platform`], with a size cap, digest checks and a clear
//! refusal of schema 1) and blob downloads as [`BlobStream`]s. It hands out bytes and
//! descriptors; it does not verify blob content (that is `rdpull-verify`, inline in the
//! consumer's pipeline), decompress, or write anything to disk.

mod auth;
mod blob;
mod client;
pub mod docker_config;
mod endpoint;
mod error;
pub mod hosts;
mod http;
pub mod manifest;
mod options;
mod platform;
mod reference;

pub use auth::{parse_challenges, Challenge, Credentials, Secret};
pub use blob::{blob_bytes, blob_json, BlobStream, StreamBudget};
pub use client::Registry;
pub use error::{with_causes, BodyMismatch, FetchError, SettingError};
pub use manifest::{resolve, BlobDescriptor, ResolvedImage};
pub use options::{Capability, ChunkPolicy, ClientOptions, EndpointSpec, Retry, RetryPolicy};
pub use platform::Platform;
pub use reference::Reference;
