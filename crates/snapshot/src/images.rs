//! Image records (reference → manifest → config → chain) and the small content store
//! that keeps each image's manifest, index and config blobs.

use std::io::Write;
use std::path::PathBuf;

use oci_spec::image::ImageConfiguration;
use rdpull_verify::Digest;

use crate::error::{io_err, StoreError};
use crate::fsutil::{disk_usage, now_ns, sync_dir};
use crate::record::{
    ImageDetails, ImageRecord, KeptBlobDetails, LayerDetails, PartialDownloadDetails, StoreDetails,
};
use crate::store::{Kind, Store};

impl Store {
    /// Record an image; every snapshot of its chain must be committed.
    pub fn put_image(&self, mut image: ImageRecord) -> Result<(), StoreError> {
        let mut l = self.lock()?;
        for c in &image.chain {
            match l.meta.snapshots.get(&c.to_string()) {
                Some(i) if i.kind == Kind::Committed => {}
                _ => {
                    return Err(StoreError::InvalidState {
                        key: c.to_string(),
                        why: format!("image {} names it, but it is not committed", image.name),
                    })
                }
            }
        }
        image.created = now_ns();
        l.meta.images.insert(image.name.clone(), image);
        l.save()
    }

    pub fn image(&self, name: &str) -> Result<ImageRecord, StoreError> {
        self.lock()?
            .meta
            .images
            .get(name)
            .cloned()
            .ok_or_else(|| StoreError::ImageNotFound(name.into()))
    }

    pub fn images(&self) -> Result<Vec<ImageRecord>, StoreError> {
        Ok(self.lock()?.meta.images.values().cloned().collect())
    }

    /// The images whose manifest (or the index a reference named) has this digest.
    pub fn images_with_digest(&self, digest: &Digest) -> Result<Vec<ImageRecord>, StoreError> {
        Ok(self
            .images()?
            .into_iter()
            .filter(|i| i.manifest_digest == *digest || i.target_digest == *digest)
            .collect())
    }

    /// Forget the image record `name`. Its snapshots and blobs stay until
    /// [`Store::prune`].
    pub fn remove_image(&self, name: &str) -> Result<ImageRecord, StoreError> {
        let mut l = self.lock()?;
        let record = l
            .meta
            .images
            .remove(name)
            .ok_or_else(|| StoreError::ImageNotFound(name.into()))?;
        l.save()?;
        Ok(record)
    }

    /// Everything the store knows of an image: its record, its config, and per layer the
    /// snapshot that holds it and the space that takes.
    pub fn inspect(&self, image: &ImageRecord) -> Result<ImageDetails, StoreError> {
        let config_bytes = self.blob(&image.config_digest)?;
        let config =
            serde_json::from_slice(&config_bytes).map_err(|source| StoreError::Corrupt {
                path: self.blob_path(&image.config_digest).display().to_string(),
                source,
            })?;
        let mut layers = Vec::with_capacity(image.layers.len());
        for (layer, chain_id) in image.layers.iter().zip(&image.chain) {
            let dir = self.fs_path(&self.stat(&chain_id.to_string())?);
            layers.push(LayerDetails {
                digest: layer.digest.clone(),
                size: layer.size,
                media_type: layer.media_type.clone(),
                diff_id: layer.diff_id.clone(),
                chain_id: chain_id.to_string(),
                unpacked_size: disk_usage(&dir).bytes,
                snapshot_dir: dir,
                kept_blob: self
                    .kept_blob(&layer.digest, layer.size)?
                    .map(|_| self.blob_path(&layer.digest)),
            });
        }
        Ok(ImageDetails {
            name: image.name.clone(),
            target_digest: image.target_digest.clone(),
            manifest_digest: image.manifest_digest.clone(),
            config_digest: image.config_digest.clone(),
            platform: image.platform.clone(),
            config,
            layers,
        })
    }

    /// What the store holds besides its images: partial downloads and kept layer blobs.
    pub fn details(&self) -> Result<StoreDetails, StoreError> {
        let partial_downloads = self
            .partial_downloads()?
            .into_iter()
            .map(|p| PartialDownloadDetails {
                modified: p
                    .modified
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
                digest: p.digest,
                bytes: p.bytes,
                in_use: p.in_use,
            })
            .collect();
        let mut kept: std::collections::BTreeMap<String, KeptBlobDetails> = Default::default();
        for image in self.images()? {
            for layer in &image.layers {
                if self.kept_blob(&layer.digest, layer.size)?.is_none() {
                    continue;
                }
                kept.entry(layer.digest.to_string())
                    .or_insert_with(|| KeptBlobDetails {
                        digest: layer.digest.clone(),
                        size: layer.size,
                        path: self.blob_path(&layer.digest),
                        images: Vec::new(),
                    })
                    .images
                    .push(image.name.clone());
            }
        }
        Ok(StoreDetails {
            root: self.root().to_path_buf(),
            partial_downloads,
            kept_blobs: kept.into_values().collect(),
        })
    }

    pub(crate) fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root()
            .join("content/blobs")
            .join(digest.algorithm().name())
            .join(digest.hex())
    }

    /// Store a small blob (manifest, index, config) after checking its digest.
    pub fn put_blob(&self, digest: &Digest, data: &[u8]) -> Result<(), StoreError> {
        digest.verify(data).map_err(|source| StoreError::Blob {
            digest: digest.to_string(),
            source,
        })?;
        let path = self.blob_path(digest);
        if path.exists() {
            return Ok(());
        }
        let dir = path.parent().unwrap();
        std::fs::create_dir_all(dir).map_err(io_err(dir.display()))?;
        let tmp =
            self.root()
                .join("tmp")
                .join(format!("blob-{}-{}", digest.hex(), std::process::id()));
        let mut f = std::fs::File::create(&tmp).map_err(io_err(tmp.display()))?;
        f.write_all(data).map_err(io_err(tmp.display()))?;
        f.sync_all().map_err(io_err(tmp.display()))?;
        std::fs::rename(&tmp, &path).map_err(io_err(path.display()))?;
        sync_dir(dir)
    }

    /// The image config of a stored image.
    pub fn image_config(&self, image: &ImageRecord) -> Result<ImageConfiguration, StoreError> {
        let digest = &image.config_digest;
        serde_json::from_slice(&self.blob(digest)?).map_err(|source| StoreError::Config {
            digest: digest.to_string(),
            source,
        })
    }

    /// Read a stored blob back, verified.
    pub fn blob(&self, digest: &Digest) -> Result<Vec<u8>, StoreError> {
        let path = self.blob_path(digest);
        let data = std::fs::read(&path).map_err(io_err(path.display()))?;
        digest.verify(&data).map_err(|source| StoreError::Blob {
            digest: digest.to_string(),
            source,
        })?;
        Ok(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::ChainId;
    use crate::record::LayerRecord;
    use std::collections::BTreeMap;

    #[test]
    fn images_need_committed_chains_and_blobs_are_verified() {
        let t = tempfile::tempdir().unwrap();
        let s = Store::open(t.path()).unwrap();
        let diff = Digest::sha256_of(b"layer");
        let chain = ChainId::chain(std::slice::from_ref(&diff));
        let rec = ImageRecord {
            name: "example.com/a:b".into(),
            target_digest: Digest::sha256_of(b"m"),
            target_media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            manifest_digest: Digest::sha256_of(b"m"),
            config_digest: Digest::sha256_of(b"c"),
            platform: "linux/amd64".into(),
            layers: vec![LayerRecord {
                digest: Digest::sha256_of(b"blob"),
                size: 4,
                media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
                diff_id: diff,
            }],
            chain: chain.clone(),
            created: 0,
        };
        let e = s.put_image(rec.clone()).unwrap_err().to_string();
        assert!(
            e.ends_with("image example.com/a:b names it, but it is not committed"),
            "{e}"
        );
        s.prepare("x", None, BTreeMap::new()).unwrap();
        s.commit(&chain[0].to_string(), "x", BTreeMap::new())
            .unwrap();
        s.put_image(rec.clone()).unwrap();
        let got = s.image("example.com/a:b").unwrap();
        assert_eq!(
            (got.name.as_str(), got.size(), got.top()),
            ("example.com/a:b", 4, chain.last())
        );
        assert!(matches!(s.image("nope"), Err(StoreError::ImageNotFound(_))));

        s.put_blob(&Digest::sha256_of(b"m"), b"m").unwrap();
        assert_eq!(s.blob(&Digest::sha256_of(b"m")).unwrap(), b"m");
        assert!(s.put_blob(&Digest::sha256_of(b"m"), b"not m").is_err());
    }
}
