//! containerd's snapshotter API served over rdpull's store: `rdpull snapshotter`, a
//! proxy plugin (`[proxy_plugins.rdpull] type = "snapshot"`).
//!
//! This crate owns the `containerd.services.snapshots.v1.Snapshots` gRPC service
//! ([`service`], generated from containerd's vendored protos with protox and tonic), the
//! semantics of containerd's overlayfs snapshotter ([`snapshotter`]: kinds, parents,
//! labels, mounts, usage recorded at commit), its metadata ([`metadata`], one redb
//! database), containerd's List filters ([`filter`]), the remote-snapshot path
//! ([`remote`]: a layer's Prepare labelled by the CRI with its image starts rdpull's own
//! pull of the image, and containerd is told the layer exists), and the daemon
//! ([`daemon`]: socket, lock, shutdown). Layers that rdpull's store holds are presented
//! to containerd by pinning them there ([`rdpull_snapshot::Store::pin`]), never unpacked
//! twice. It does not fetch or unpack (`rdpull-pipeline` does, through its library API),
//! and it does not mount: containerd mounts what Mounts returns.

/// The generated messages and service, in containerd's package layout.
#[allow(unreachable_pub, clippy::all, clippy::pedantic)]
pub mod proto {
    pub mod containerd {
        pub mod types {
            tonic::include_proto!("containerd.types");
        }
        pub mod services {
            pub mod snapshots {
                pub mod v1 {
                    tonic::include_proto!("containerd.services.snapshots.v1");
                }
            }
        }
    }
}

pub mod error;
pub mod filter;
pub mod metadata;
pub mod remote;
pub mod snapshotter;

pub use error::SnapshotterError;
pub mod daemon;
pub mod service;
