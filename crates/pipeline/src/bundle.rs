//! A pulled image as an OCI bundle: its flattened rootfs and a runtime spec with
//! Docker's defaults (`rdpull-run`), which runc and crun run as they are.

use std::path::Path;

use oci_spec::image::ImageConfiguration;
use rdpull_run::{runtime_spec, write_bundle, ContainerId, RunOptions};
use rdpull_snapshot::{ImageRecord, Store};
use tokio_util::sync::CancellationToken;

use crate::error::{ConfigError, PullError};
use crate::rootfs::unpack_to;

/// The image config of a stored image.
pub fn image_config(store: &Store, image: &ImageRecord) -> Result<ImageConfiguration, PullError> {
    serde_json::from_slice(&store.blob(&image.config_digest)?).map_err(|e| PullError::Config {
        digest: image.config_digest.clone(),
        source: ConfigError::Json(e),
    })
}

/// Write `image` as a bundle in `dir`, which must not exist: `dir/rootfs` flattened,
/// `dir/config.json` for `run`, and the container's `/etc` files. Returns the
/// container id the spec was made for (its hostname is the id's first 12 characters
/// unless `run` names one). On failure `dir` is removed.
pub fn bundle_to(
    store: &Store,
    image: &ImageRecord,
    dir: &Path,
    run: &RunOptions,
    cancel: &CancellationToken,
) -> Result<ContainerId, PullError> {
    let fail = |op: &'static str, source: std::io::Error| PullError::Rootfs {
        op,
        path: dir.display().to_string(),
        source,
    };
    let config = image_config(store, image)?;
    std::fs::create_dir(dir).map_err(|e| fail("create bundle", e))?;
    let written = (|| {
        let rootfs = dir.join("rootfs");
        unpack_to(store, image, &rootfs, cancel)?;
        let id = ContainerId::random().map_err(|e| fail("container id", e))?;
        let hostname = run
            .hostname
            .clone()
            .unwrap_or_else(|| id.short().to_string());
        let spec = runtime_spec(&config, &rootfs, run, &hostname)?;
        write_bundle(dir, &spec)?;
        Ok(id)
    })();
    if written.is_err() {
        let _ = std::fs::remove_dir_all(dir);
    }
    written
}
