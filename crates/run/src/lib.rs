//! From a pulled image to something a runtime runs.
//!
//! This crate owns the *spec* stage: an image config and the user's `run` options become
//! an OCI runtime-spec `config.json` with Docker's and containerd's defaults
//! ([`runtime_spec`]: command, environment, user resolved from the image's own passwd
//! and group files, working directory, namespaces, mounts, capabilities, masked and
//! read-only paths, rlimits), and an OCI bundle around a rootfs ([`write_bundle`]:
//! `config.json` plus the container's own `/etc/hostname`, `/etc/hosts` and
//! `/etc/resolv.conf`), which runc and crun run unchanged. It also owns containers
//! ([`Container`]): a writable snapshot over the image, mounted as a bundle's rootfs and
//! run by a [`Runtime`] (the built-in launcher, or runc, crun), recorded until `rm`. It
//! does not fetch or unpack images (`rdpull-pipeline` does).
//!
//! The *launcher* part ([`launch`]) is a runtime of its own: it runs a bundle in new
//! namespaces from a single-threaded helper process, without runc.

mod bundle;
mod capabilities;
mod container;
mod error;
mod handoff;
pub mod launch;
mod resources;
mod rootfs;
mod seccomp;
mod spec;
mod user;

pub use bundle::{bundle_image, write_bundle, ContainerId};
pub use capabilities::DEFAULT_CAPABILITIES;
pub use container::{list_containers, remove_container_by_id, Container, ContainerRecord, Runtime};
pub use error::{RunError, SpecError};
pub use resources::{parse_bytes, Resources};
pub use seccomp::SeccompProfile;
pub use spec::{runtime_spec, Network, RunOptions};
pub use user::{resolve_user, ExecUser};
