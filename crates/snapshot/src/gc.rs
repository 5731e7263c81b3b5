//! Reclaiming space: what no image and no running pull uses goes.
//!
//! A pull holds a [`Lease`] (a shared `flock` on `lease.lock`) from before it looks at the
//! store until its image is recorded; [`Store::prune`] takes that lock exclusively, so it
//! waits for running pulls and no pull starts while it runs. Inside, everything is decided
//! under the metadata lock and the metadata is written before any file is deleted: a
//! crash leaves orphan directories, which the next prune removes, never a record that
//! points at deleted files.

use std::collections::{BTreeSet, HashSet};
use std::fs::File;
use std::path::PathBuf;

use rdpull_verify::Digest;
use rustix::fs::FlockOperation;

use crate::error::{io_err, StoreError};
use crate::fsutil::{disk_usage, lock_file, remove_dir};
use crate::owner::owner_gone;
use crate::store::{Kind, Metadata, Store};

/// Partial downloads untouched for this long are removed by a prune: the pull that would
/// have continued them is not coming back.
const PARTIAL_DOWNLOAD_AGE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Held by a pull while it uses the store; [`Store::prune`] waits until none is held.
#[derive(Debug)]
pub struct Lease {
    _lock: File,
}

/// What [`Store::prune`] removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PruneReport {
    /// Keys of the snapshots removed: committed layers no image uses, and active
    /// snapshots whose owner process is gone.
    pub snapshots: Vec<String>,
    /// Blobs (manifests, indexes, configs, kept layers) no image refers to.
    pub blobs: Vec<Digest>,
    /// Partial downloads no pull had written to for a day.
    pub partial_downloads: Vec<Digest>,
    /// Snapshot directories the metadata did not know (left by a crash).
    pub orphan_dirs: usize,
    /// Disk space given back, in bytes (allocated blocks).
    pub bytes_freed: u64,
}

impl Store {
    pub(crate) fn lease_lock(&self, op: FlockOperation) -> Result<File, StoreError> {
        lock_file(&self.root().join("lease.lock"), op)
    }

    /// Declare a pull in progress until the lease is dropped. Waits while a prune runs.
    pub fn lease(&self) -> Result<Lease, StoreError> {
        Ok(Lease {
            _lock: self.lease_lock(FlockOperation::LockShared)?,
        })
    }

    /// Remove the snapshots no image needs (committed layers outside every image's chain
    /// and outside the chains that active snapshots build on; active snapshots of dead
    /// owners), the blobs no image refers to, orphan snapshot directories, and partial
    /// downloads a day old. Waits for running pulls first.
    pub fn prune(&self) -> Result<PruneReport, StoreError> {
        let _exclusive = self.lease_lock(FlockOperation::LockExclusive)?;
        let mut l = self.lock()?;
        let keep = kept_snapshots(&l.meta);
        let snapshots = &l.meta.snapshots;
        let doomed: Vec<_> = snapshots
            .values()
            .filter(|i| !keep.contains(&i.key))
            .cloned()
            .collect();
        let known_ids: HashSet<u64> = keep
            .iter()
            .filter_map(|k| snapshots.get(k).map(|i| i.id))
            .collect();
        let wanted_blobs = wanted_blobs(&l.meta);
        // A directory with a newer id belongs to a snapshot made after this look.
        let next_id = l.meta.next_id;
        for d in &doomed {
            l.meta.snapshots.remove(&d.key);
        }
        if !doomed.is_empty() {
            l.save()?;
        }
        drop(l);
        let mut report = PruneReport {
            snapshots: doomed.iter().map(|d| d.key.clone()).collect(),
            ..PruneReport::default()
        };
        self.remove_unknown_dirs(&known_ids, next_id, &doomed, &mut report)?;
        self.remove_unwanted_blobs(&wanted_blobs, &mut report)?;
        let (partial, bytes) = self.remove_partial_downloads(PARTIAL_DOWNLOAD_AGE)?;
        report.partial_downloads = partial;
        report.bytes_freed += bytes;
        Ok(report)
    }

    /// Delete every snapshot directory below `next_id` whose id the metadata no longer
    /// knows: those just dropped from it, and orphans of earlier crashes.
    fn remove_unknown_dirs(
        &self,
        known: &HashSet<u64>,
        next_id: u64,
        doomed: &[crate::store::Info],
        report: &mut PruneReport,
    ) -> Result<(), StoreError> {
        let doomed_ids: HashSet<u64> = doomed.iter().map(|d| d.id).collect();
        for (id, dir) in self.snapshot_dirs()? {
            if known.contains(&id) || id >= next_id {
                continue;
            }
            if !doomed_ids.contains(&id) {
                report.orphan_dirs += 1;
            }
            report.bytes_freed += disk_usage(&dir).bytes;
            remove_dir(&dir)?;
        }
        Ok(())
    }

    /// `snapshots/<id>` directories on disk, with their ids.
    fn snapshot_dirs(&self) -> Result<Vec<(u64, PathBuf)>, StoreError> {
        let base = self.root().join("snapshots");
        let entries = std::fs::read_dir(&base).map_err(io_err(base.display()))?;
        let mut out = Vec::new();
        for e in entries {
            let e = e.map_err(io_err(base.display()))?;
            if let Some(id) = e.file_name().to_str().and_then(|n| n.parse().ok()) {
                out.push((id, e.path()));
            }
        }
        Ok(out)
    }

    fn remove_unwanted_blobs(
        &self,
        wanted: &HashSet<Digest>,
        report: &mut PruneReport,
    ) -> Result<(), StoreError> {
        for (digest, path) in self.stored_blobs()? {
            if wanted.contains(&digest) {
                continue;
            }
            report.bytes_freed += disk_usage(&path).bytes;
            std::fs::remove_file(&path).map_err(io_err(path.display()))?;
            report.blobs.push(digest);
        }
        Ok(())
    }

    /// Every blob of the content store, with its digest.
    fn stored_blobs(&self) -> Result<Vec<(Digest, PathBuf)>, StoreError> {
        let base = self.root().join("content/blobs");
        let mut out = Vec::new();
        let Ok(algorithms) = std::fs::read_dir(&base) else {
            return Ok(out);
        };
        for alg in algorithms.flatten() {
            let dir = alg.path();
            let files = std::fs::read_dir(&dir).map_err(io_err(dir.display()))?;
            for f in files.flatten() {
                let name = format!(
                    "{}:{}",
                    alg.file_name().to_string_lossy(),
                    f.file_name().to_string_lossy()
                );
                if let Ok(d) = name.parse() {
                    out.push((d, f.path()));
                }
            }
        }
        Ok(out)
    }
}

/// The snapshots to keep: every image's chain, every pinned chain, and the chains of active snapshots that
/// stay (their owner lives, or they have none).
pub(crate) fn kept_snapshots(meta: &Metadata) -> BTreeSet<String> {
    let snapshots = &meta.snapshots;
    let mut keep = BTreeSet::new();
    let mut roots: Vec<String> = meta
        .images
        .values()
        .filter_map(|i| i.top().map(|c| c.to_string()))
        .collect();
    roots.extend(meta.pins.values().cloned());
    roots.extend(
        snapshots
            .values()
            .filter(|i| i.kind != Kind::Committed && !owner_gone(i))
            .map(|i| i.key.clone()),
    );
    for root in roots {
        let mut next = Some(root);
        while let Some(k) = next.take() {
            if let Some(info) = snapshots.get(&k) {
                next = info.parent.clone();
            }
            if !keep.insert(k) {
                break;
            }
        }
    }
    keep
}

/// The blobs some image refers to: its manifest, config, and the index a reference named.
fn wanted_blobs(meta: &Metadata) -> HashSet<Digest> {
    meta.images
        .values()
        .flat_map(|i| {
            [
                i.target_digest.clone(),
                i.manifest_digest.clone(),
                i.config_digest.clone(),
            ]
            .into_iter()
            // Layer blobs kept with --keep-blobs.
            .chain(i.layers.iter().map(|l| l.digest.clone()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::*;
    use crate::owner::{owner_label, OWNER_LABEL};
    use crate::record::{ImageRecord, LayerRecord};
    use crate::store::tests::store;
    use crate::ChainId;

    /// Commit `name` on `parent` with one file of `size` bytes.
    fn layer(s: &Store, name: &str, parent: Option<&str>, size: usize) {
        let key = format!("extract-{name}");
        let info = s.prepare(&key, parent, BTreeMap::new()).unwrap();
        std::fs::write(s.fs_path(&info).join("f"), vec![1u8; size]).unwrap();
        s.commit(name, &key, BTreeMap::new()).unwrap();
    }

    /// An image whose chain is `chain` (bottom first); its blobs are stored.
    fn image(s: &Store, name: &str, chain: &[ChainId]) -> ImageRecord {
        let blob = |n: &str| {
            let data = format!("{name}-{n}");
            let d = Digest::sha256_of(data.as_bytes());
            s.put_blob(&d, data.as_bytes()).unwrap();
            d
        };
        let (manifest, config) = (blob("manifest"), blob("config"));
        let layer = LayerRecord {
            digest: Digest::sha256_of(b"l"),
            size: 1,
            media_type: String::new(),
            diff_id: Digest::sha256_of(b"l"),
        };
        ImageRecord {
            name: name.into(),
            target_digest: manifest.clone(),
            target_media_type: String::new(),
            manifest_digest: manifest,
            config_digest: config,
            platform: "linux/amd64".into(),
            layers: vec![layer; chain.len()],
            chain: chain.to_vec(),
            created: 0,
        }
    }

    fn d(n: u8) -> String {
        Digest::sha256_of(&[n]).to_string()
    }

    #[test]
    fn prune_keeps_what_images_and_live_pulls_use() {
        let (_t, s) = store();
        // Two images share the bottom layer; ChainIDs are the snapshot names.
        let (a, b, c) = (d(1), d(2), d(3));
        let base = ChainId::chain(&[a.parse().unwrap()]);
        let two = ChainId::chain(&[a.parse().unwrap(), b.parse().unwrap()]);
        let three = ChainId::chain(&[a.parse().unwrap(), c.parse().unwrap()]);
        layer(&s, &base[0].to_string(), None, 10);
        layer(&s, &two[1].to_string(), Some(&base[0].to_string()), 100_000);
        layer(&s, &three[1].to_string(), Some(&base[0].to_string()), 10);
        s.put_image(image(&s, "one", &two)).unwrap();
        s.put_image(image(&s, "two", &three)).unwrap();
        // A stale pull (dead owner) and a live one (this process) on top of `two`.
        let parent = two[1].to_string();
        let dead = BTreeMap::from([(OWNER_LABEL.to_string(), "1:1".to_string())]);
        let live = BTreeMap::from([(OWNER_LABEL.to_string(), owner_label())]);
        s.prepare("extract-dead", Some(&parent), dead).unwrap();
        s.prepare("extract-live", Some(&parent), live).unwrap();
        let loose = Digest::sha256_of(b"loose");
        s.put_blob(&loose, b"loose").unwrap();

        s.remove_image("one").unwrap();
        let report = s.prune().unwrap();
        // `two`'s top stays for the live pull, the dead pull's snapshot goes.
        assert_eq!(report.snapshots, ["extract-dead"]);
        assert_eq!(report.blobs.len(), 3, "{:?}", report.blobs); // one's manifest, config, loose
        assert!(report.blobs.contains(&loose));
        s.remove("extract-live").unwrap();
        let report = s.prune().unwrap();
        assert_eq!(report.snapshots, [two[1].to_string()]);
        assert!(report.bytes_freed >= 100_000, "{report:?}");
        let mut left: Vec<String> = s.list().unwrap().into_iter().map(|i| i.key).collect();
        left.sort();
        let mut want = vec![base[0].to_string(), three[1].to_string()];
        want.sort();
        assert_eq!(left, want);

        s.remove_image("two").unwrap();
        s.prune().unwrap();
        assert!(s.list().unwrap().is_empty());
        assert_eq!(s.snapshot_dirs().unwrap().len(), 0);
        assert_eq!(s.stored_blobs().unwrap().len(), 0);
    }

    #[test]
    fn prune_removes_orphan_directories_but_not_newer_ones() {
        let (_t, s) = store();
        let info = s.prepare("x", None, BTreeMap::new()).unwrap();
        {
            // A crash between mkdir and the metadata write leaves such a directory.
            let mut l = s.lock().unwrap();
            l.meta.snapshots.remove("x");
            l.save().unwrap();
        }
        let newer = s.root().join("snapshots").join((info.id + 5).to_string());
        std::fs::create_dir_all(&newer).unwrap();
        let report = s.prune().unwrap();
        assert_eq!(report.orphan_dirs, 1);
        assert!(!s.fs_path(&info).exists());
        assert!(
            newer.exists(),
            "a directory newer than the prune's look was removed"
        );
    }

    #[test]
    fn prune_waits_for_running_pulls() {
        let (_t, s) = store();
        let s = std::sync::Arc::new(s);
        let lease = s.lease().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let s2 = s.clone();
        let pruner = std::thread::spawn(move || {
            s2.prune().unwrap();
            tx.send(()).unwrap();
        });
        assert!(
            rx.recv_timeout(Duration::from_millis(300)).is_err(),
            "prune ran while a pull held its lease"
        );
        drop(lease);
        rx.recv_timeout(Duration::from_secs(10)).unwrap();
        pruner.join().unwrap();
    }
}
