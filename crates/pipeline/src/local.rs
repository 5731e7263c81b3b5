//! Images already in the store, named as a user names them: by reference (`debian`,
//! `127.0.0.1:5000/app:v1`) or by digest (the manifest's, or the index's a reference
//! named), as `docker rmi` and `docker inspect` take them.

use std::path::{Path, PathBuf};

use rdpull_fetch::{FetchError, Reference};
use rdpull_snapshot::{ImageRecord, Store, StoreError};
use rdpull_verify::Digest;

/// Why an image could not be found or removed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LocalError {
    /// Neither a stored image's name nor one of their digests.
    #[error("no such image: {0}")]
    NotFound(String),
    /// A digest that several image names point at, without `force`.
    #[error("image {digest} has several names ({names}): remove them by name, or use --force")]
    Ambiguous { digest: Digest, names: String },
    /// Not a valid reference.
    #[error(transparent)]
    Reference(#[from] FetchError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Writing an output file failed.
    #[error("{path}: {source}")]
    Output {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The images `arg` names: one for a reference, every image with that digest for a
/// digest. Never empty.
pub fn find_images(store: &Store, arg: &str) -> Result<Vec<ImageRecord>, LocalError> {
    if let Ok(digest) = arg.parse::<Digest>() {
        let found = store.images_with_digest(&digest)?;
        if found.is_empty() {
            return Err(LocalError::NotFound(arg.to_string()));
        }
        return Ok(found);
    }
    let reference: Reference = arg.parse()?;
    match store.image(&reference.to_string()) {
        Ok(image) => Ok(vec![image]),
        Err(StoreError::ImageNotFound(_)) => Err(LocalError::NotFound(arg.to_string())),
        Err(e) => Err(e.into()),
    }
}

/// Remove the image records `arg` names; a digest with several names only with `force`.
/// Snapshots and blobs stay until `Store::prune`.
pub fn remove_images(
    store: &Store,
    arg: &str,
    force: bool,
) -> Result<Vec<ImageRecord>, LocalError> {
    let found = find_images(store, arg)?;
    if found.len() > 1 && !force {
        let names: Vec<&str> = found.iter().map(|i| i.name.as_str()).collect();
        return Err(LocalError::Ambiguous {
            digest: arg.parse().expect("only a digest finds several"),
            names: names.join(", "),
        });
    }
    found
        .iter()
        .map(|i| Ok(store.remove_image(&i.name)?))
        .collect()
}

/// Write `image` to the file `path` as an OCI image layout tar ([`Store::save`]). The
/// archive appears at `path` only when it is complete; a failure leaves nothing there.
pub fn save_to_file(store: &Store, image: &ImageRecord, path: &Path) -> Result<(), LocalError> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let tmp = path.with_file_name(format!(".{}.rdpull-tmp", name.unwrap_or_default()));
    let output = |source| LocalError::Output {
        path: tmp.clone(),
        source,
    };
    let written = (|| {
        let file = std::fs::File::create(&tmp).map_err(output)?;
        let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
        store.save(image, &mut out)?;
        let file = out.into_inner().map_err(|e| output(e.into_error()))?;
        file.sync_all().map_err(output)?;
        std::fs::rename(&tmp, path).map_err(|source| LocalError::Output {
            path: path.to_path_buf(),
            source,
        })
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}
