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
pub mod manifest;
mod platform;
mod reference;

pub use auth::{parse_challenges, Challenge, Credentials, Secret};
pub use blob::{BlobStream, ChunkPolicy, StreamBudget};
pub use client::{ClientOptions, Registry, RetryPolicy};
pub use endpoint::{Capability, EndpointSpec};
pub use error::{with_causes, FetchError};
pub use manifest::{resolve, BlobDescriptor, ResolvedImage};
pub use platform::Platform;
pub use reference::Reference;
