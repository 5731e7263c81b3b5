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
pub mod snapshotter;
pub mod remote;

pub use error::SnapshotterError;
pub mod service;
pub mod daemon;
