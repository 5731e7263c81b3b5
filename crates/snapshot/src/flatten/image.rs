//! A stored image flattened into a plain directory (`rdpull unpack`, a bundle's rootfs).

use std::io;
use std::path::{Path, PathBuf};

use super::{flatten_until, FlattenStats};
use crate::error::StoreError;
use crate::record::ImageRecord;
use crate::store::Store;

/// Flatten `image`'s snapshots into `dest`, which must not exist (its parent must).
/// Built in a hidden sibling and renamed into place, so `dest` appears whole or not at
/// all. `stop` is asked before each entry; once it says true, the sibling is removed and
/// [`StoreError::Interrupted`] returned.
pub fn flatten_image(
    store: &Store,
    image: &ImageRecord,
    dest: &Path,
    stop: &dyn Fn() -> bool,
) -> Result<FlattenStats, StoreError> {
    let fail = |op: &'static str, source: io::Error| StoreError::Rootfs {
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
    let result = flatten_into(store, image, &tmp, stop).and_then(|stats| {
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
    stop: &dyn Fn() -> bool,
) -> Result<FlattenStats, StoreError> {
    let layers = image
        .chain
        .iter()
        .map(|c| store.stat(&c.to_string()).map(|i| store.fs_path(&i)))
        .collect::<Result<Vec<_>, _>>()?;
    match flatten_until(&layers, dir, stop) {
        Err(_) if stop() => Err(StoreError::Interrupted),
        flattened => flattened,
    }
}
