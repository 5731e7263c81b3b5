//! A pulled image as one plain directory.

use std::io;
use std::path::{Path, PathBuf};

use rdpull_snapshot::{FlattenStats, ImageRecord, Store};
use tokio_util::sync::CancellationToken;

use crate::error::PullError;

/// Flatten an image's snapshots into `dest`, which must not exist (its parent must).
/// Built in a hidden sibling and renamed into place, so `dest` appears whole or not at all;
/// when `cancel` fires, the sibling is removed and [`PullError::Interrupted`] returned.
pub fn unpack_to(
    store: &Store,
    image: &ImageRecord,
    dest: &Path,
    cancel: &CancellationToken,
) -> Result<FlattenStats, PullError> {
    let fail = |op: &'static str, source: io::Error| PullError::Rootfs {
        op,
        path: dest.display().to_string(),
        source,
    };
    if dest.symlink_metadata().is_ok() {
        let exists = io::Error::new(io::ErrorKind::AlreadyExists, "already exists");
        return Err(fail("unpack target", exists));
    }
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = dest.file_name().ok_or_else(|| {
        let nameless = io::Error::new(io::ErrorKind::InvalidInput, "has no file name");
        fail("unpack target", nameless)
    })?;
    let tmp = parent.join(format!(
        ".{}.rdpull-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let _lease = store.lease()?;
    std::fs::create_dir(&tmp).map_err(|e| fail("create", e))?;
    let result = flatten_into(store, image, &tmp, cancel).and_then(|stats| {
        std::fs::rename(&tmp, dest)
            .map(|_| stats)
            .map_err(|e| fail("rename into", e))
    });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}

fn flatten_into(
    store: &Store,
    image: &ImageRecord,
    dir: &Path,
    cancel: &CancellationToken,
) -> Result<FlattenStats, PullError> {
    let layers = image
        .chain
        .iter()
        .map(|c| store.stat(&c.to_string()).map(|i| store.fs_path(&i)))
        .collect::<Result<Vec<_>, _>>()?;
    match rdpull_snapshot::flatten_until(&layers, dir, &|| cancel.is_cancelled()) {
        Err(_) if cancel.is_cancelled() => Err(PullError::Interrupted),
        flattened => Ok(flattened?),
    }
}
