//! The snapshotter's semantics: containerd's overlayfs snapshotter, over the metadata
//! database and a directory per snapshot, plus layers shared with rdpull's own store.
//!
//! Files live under `<root>/containerd/snapshots/<id>/{fs,work}`; a snapshot that
//! presents a committed layer of rdpull's store uses that layer's directory instead and
//! pins it there ([`Store::pin`]), so `rdpull prune` keeps it and containerd's removal
//! releases it. File work (creating, measuring, syncing, deleting directories) happens
//! outside the metadata transaction; a crash between the two leaves at most a directory
//! no record names, which [`Snapshotter::cleanup`] removes.
//!
//! One idea at about 500 lines: one method per call of containerd's snapshots API, each
//! a metadata transaction and its file work; the gRPC mapping is `service.rs`, the
//! database `metadata.rs`.

use std::collections::{BTreeMap, HashSet};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rdpull_snapshot::{Mount, Store};

use crate::error::SnapshotterError;
use crate::filter::{any_matches, Filter};
use crate::metadata::{Files, Kind, Metadata, Record, Usage};

/// containerd's limit on one label (key and value together).
const MAX_LABEL_SIZE: usize = 4096;
/// The label containerd puts on a layer's snapshot: the ChainID it will be committed as.
pub const SNAPSHOT_REF_LABEL: &str = "containerd.io/snapshot.ref";
/// Pin holders in rdpull's store are named for the snapshot that holds the pin.
const PIN_PREFIX: &str = "containerd:";

pub struct Snapshotter {
    dir: PathBuf,
    meta: Metadata,
    store: Arc<Store>,
    next_id: AtomicU64,
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn check_labels(labels: &BTreeMap<String, String>) -> Result<(), SnapshotterError> {
    match labels
        .iter()
        .find(|(k, v)| k.len() + v.len() > MAX_LABEL_SIZE)
    {
        Some((k, _)) => Err(SnapshotterError::InvalidArgument(format!(
            "label {k:?}: key and value exceed {MAX_LABEL_SIZE} bytes"
        ))),
        None => Ok(()),
    }
}

/// Usage as containerd's API gives it.
fn usage_of(path: &Path) -> Usage {
    let u = rdpull_snapshot::disk_usage(path);
    Usage {
        size: i64::try_from(u.bytes).unwrap_or(i64::MAX),
        inodes: i64::try_from(u.inodes).unwrap_or(i64::MAX),
    }
}

fn remove_dir(dir: &Path) {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            tracing::warn!("{}: not removed: {e}", dir.display());
        }
        _ => {}
    }
}

impl Snapshotter {
    /// Open the snapshotter's part of rdpull's store at `store.root()/containerd`.
    pub fn open(store: Arc<Store>) -> Result<Snapshotter, SnapshotterError> {
        let dir = store.root().join("containerd");
        let snapshots = dir.join("snapshots");
        std::fs::create_dir_all(&snapshots).map_err(SnapshotterError::io(snapshots.display()))?;
        let meta = Metadata::open(&dir.join("metadata.redb"))?;
        let mut max = 0;
        meta.for_each(|r| {
            if let Files::Own(id) = r.files {
                max = max.max(id);
            }
            Ok(())
        })?;
        for e in std::fs::read_dir(&snapshots).map_err(SnapshotterError::io(snapshots.display()))? {
            let name = e
                .map_err(SnapshotterError::io(snapshots.display()))?
                .file_name();
            max = max.max(name.to_str().and_then(|n| n.parse().ok()).unwrap_or(0));
        }
        Ok(Snapshotter {
            dir,
            meta,
            store,
            next_id: AtomicU64::new(max + 1),
        })
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    fn own_dir(&self, id: u64) -> PathBuf {
        self.dir.join("snapshots").join(id.to_string())
    }

    fn fs_dir(&self, r: &Record) -> PathBuf {
        match &r.files {
            Files::Own(id) => self.own_dir(*id).join("fs"),
            Files::Layer { fs, .. } => fs.clone(),
        }
    }

    fn record(&self, key: &str) -> Result<Record, SnapshotterError> {
        self.meta
            .get(key)?
            .ok_or_else(|| SnapshotterError::NotFound(key.into()))
    }

    /// Prepare (kind active) or View (kind view) `key` on `parent` ("" for none).
    pub fn create(
        &self,
        kind: Kind,
        key: &str,
        parent: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<Vec<Mount>, SnapshotterError> {
        if key.is_empty() {
            return Err(SnapshotterError::InvalidArgument(
                "empty snapshot key".into(),
            ));
        }
        check_labels(&labels)?;
        let parent_fs = match parent {
            "" => None,
            p => self.meta.get(p)?.map(|r| self.fs_dir(&r)),
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let own = self.own_dir(id);
        if let Err(e) = make_dirs(&own, parent_fs.as_deref()) {
            remove_dir(&own);
            return Err(e);
        }
        let now = now_ns();
        let record = Record {
            name: key.into(),
            parent: parent.into(),
            kind,
            labels,
            created: now,
            updated: now,
            usage: Usage::default(),
            files: Files::Own(id),
        };
        let written = self.meta.write(|w| {
            if w.get(key)?.is_some() {
                return Err(SnapshotterError::AlreadyExists(key.into()));
            }
            check_parent(w.get(parent)?, parent)?;
            w.put(&record)
        });
        if let Err(e) = written {
            remove_dir(&own);
            return Err(e);
        }
        self.mounts(key)
    }

    /// How to mount `key`, as containerd's overlayfs snapshotter builds it.
    pub fn mounts(&self, key: &str) -> Result<Vec<Mount>, SnapshotterError> {
        let chain = self.meta.chain(key)?;
        let top = &chain[0];
        let parents = &chain[1..];
        let bind = |source: PathBuf, ro: bool| Mount {
            kind: "bind".into(),
            source: source.display().to_string(),
            options: vec![if ro { "ro" } else { "rw" }.into(), "rbind".into()],
        };
        if parents.is_empty() {
            return Ok(vec![bind(self.fs_dir(top), top.kind == Kind::View)]);
        }
        let mut options = Vec::new();
        if top.kind == Kind::Active {
            let Files::Own(id) = top.files else {
                return Err(SnapshotterError::Inconsistent {
                    key: key.to_string(),
                    why: "active without files",
                });
            };
            options.push("index=off".to_string());
            options.push(format!(
                "workdir={}",
                self.own_dir(id).join("work").display()
            ));
            options.push(format!("upperdir={}", self.fs_dir(top).display()));
        } else if parents.len() == 1 {
            return Ok(vec![bind(self.fs_dir(&parents[0]), true)]);
        }
        let lowers: Vec<String> = parents
            .iter()
            .map(|p| self.fs_dir(p).display().to_string())
            .collect();
        options.push(format!("lowerdir={}", lowers.join(":")));
        Ok(vec![Mount {
            kind: "overlay".into(),
            source: "overlay".into(),
            options,
        }])
    }

    /// Commit the active `key` as `name`, recording its disk usage. `parent`, if given,
    /// must be the active snapshot's own, or gives one to a snapshot that had none
    /// (containerd 2's Commit carries it).
    pub fn commit(
        &self,
        name: &str,
        key: &str,
        labels: BTreeMap<String, String>,
        parent: &str,
    ) -> Result<(), SnapshotterError> {
        check_labels(&labels)?;
        let active = self.record(key)?;
        if active.kind != Kind::Active {
            return Err(SnapshotterError::FailedPrecondition {
                key: key.into(),
                why: format!("is a {} snapshot, not an active one", active.kind.as_str()),
            });
        }
        let fs = self.fs_dir(&active);
        let usage = usage_of(&fs);
        // The files containerd applied are made durable before the snapshot is committed.
        let f = std::fs::File::open(&fs).map_err(SnapshotterError::io(fs.display()))?;
        rustix::fs::syncfs(&f).map_err(|e| SnapshotterError::io(fs.display())(e.into()))?;
        self.meta.write(|w| {
            let mut r = w
                .get(key)?
                .filter(|r| r.kind == Kind::Active)
                .ok_or_else(|| SnapshotterError::NotFound(key.into()))?;
            if w.get(name)?.is_some() {
                return Err(SnapshotterError::AlreadyExists(name.into()));
            }
            w.delete(&r)?;
            if !parent.is_empty() && parent != r.parent {
                if !r.parent.is_empty() {
                    return Err(SnapshotterError::InvalidArgument(format!(
                        "snapshot {key}: cannot change its parent {} to {parent} on commit",
                        r.parent
                    )));
                }
                check_parent(w.get(parent)?, parent)?;
                r.parent = parent.into();
            }
            r.name = name.into();
            r.kind = Kind::Committed;
            r.labels = labels;
            r.created = now_ns();
            r.updated = r.created;
            r.usage = usage;
            w.put(&r)
        })
    }

    /// Remove `key`, which must have no children; its files go after the metadata.
    pub fn remove(&self, key: &str) -> Result<(), SnapshotterError> {
        let removed = self.meta.write(|w| {
            let r = w
                .get(key)?
                .ok_or_else(|| SnapshotterError::NotFound(key.into()))?;
            if w.has_children(key)? {
                return Err(SnapshotterError::FailedPrecondition {
                    key: key.into(),
                    why: "cannot remove a snapshot with children".into(),
                });
            }
            w.delete(&r)?;
            Ok(r)
        })?;
        match &removed.files {
            Files::Own(id) => remove_dir(&self.own_dir(*id)),
            Files::Layer { .. } => {
                let freed = self.store.unpin(&format!("{PIN_PREFIX}{key}"))?;
                if !freed.is_empty() {
                    tracing::info!("{key}: removed, and with it rdpull's layers {freed:?}");
                }
            }
        }
        Ok(())
    }

    pub fn stat(&self, key: &str) -> Result<Record, SnapshotterError> {
        self.record(key)
    }

    /// Update the labels of `name` (the only mutable field): all of them with no
    /// `paths`, or those `paths` (`labels`, `labels.<key>`) name.
    pub fn update(
        &self,
        name: &str,
        labels: BTreeMap<String, String>,
        paths: &[String],
    ) -> Result<Record, SnapshotterError> {
        check_labels(&labels)?;
        self.meta.write(|w| {
            let mut r = w
                .get(name)?
                .ok_or_else(|| SnapshotterError::NotFound(name.into()))?;
            if paths.is_empty() {
                r.labels = labels.clone();
            }
            for path in paths {
                if let Some(key) = path.strip_prefix("labels.") {
                    match labels.get(key) {
                        Some(v) => r.labels.insert(key.into(), v.clone()),
                        None => r.labels.remove(key),
                    };
                } else if path == "labels" {
                    r.labels = labels.clone();
                } else {
                    return Err(SnapshotterError::InvalidArgument(format!(
                        "snapshot {name}: cannot update field {path:?}"
                    )));
                }
            }
            r.updated = now_ns();
            w.put(&r)?;
            Ok(r)
        })
    }

    /// Every snapshot some filter matches (all, with none), to `each`.
    pub fn list(
        &self,
        filters: &[Filter],
        mut each: impl FnMut(Record) -> Result<(), SnapshotterError>,
    ) -> Result<(), SnapshotterError> {
        self.meta.for_each(|r| {
            if any_matches(filters, &r) {
                each(r)?;
            }
            Ok(())
        })
    }

    /// Disk usage of `key`'s own files: recorded at commit; measured for an active one,
    /// whose files change.
    pub fn usage(&self, key: &str) -> Result<Usage, SnapshotterError> {
        let r = self.record(key)?;
        match r.kind {
            Kind::Active => Ok(usage_of(&self.fs_dir(&r))),
            _ => Ok(r.usage),
        }
    }

    /// Remove what no record names: directories left by a crash, and pins in rdpull's
    /// store whose snapshot is gone (except those of `in_flight` layer names, which a
    /// remote pull pinned before containerd asked for them).
    pub fn cleanup(&self, in_flight: &HashSet<String>) -> Result<(), SnapshotterError> {
        let mut ids = HashSet::new();
        let mut names = HashSet::new();
        self.meta.for_each(|r| {
            if let Files::Own(id) = r.files {
                ids.insert(id);
            }
            names.insert(r.name);
            Ok(())
        })?;
        let below = self.next_id.load(Ordering::Relaxed);
        let base = self.dir.join("snapshots");
        for e in std::fs::read_dir(&base).map_err(SnapshotterError::io(base.display()))? {
            let e = e.map_err(SnapshotterError::io(base.display()))?;
            let id: Option<u64> = e.file_name().to_str().and_then(|n| n.parse().ok());
            // A directory above the counter's value when we looked is being created.
            if id.is_some_and(|id| !ids.contains(&id) && id < below) {
                remove_dir(&e.path());
            }
        }
        for (holder, layer) in self.store.pins()? {
            let Some(name) = holder.strip_prefix(PIN_PREFIX) else {
                continue;
            };
            if !names.contains(name) && !in_flight.contains(&layer) {
                self.store.unpin(&holder)?;
            }
        }
        Ok(())
    }

    /// Pin rdpull's committed layer `layer` for a snapshot of the same name: done ahead
    /// of containerd's Prepare by a remote pull, so that nothing removes the layer in
    /// between.
    pub fn pin_layer(&self, layer: &str) -> Result<(), SnapshotterError> {
        self.store.pin(&format!("{PIN_PREFIX}{layer}"), layer)?;
        Ok(())
    }

    /// Present rdpull's committed layer `layer` to containerd as the committed snapshot
    /// `layer` on `parent` with `labels`, as containerd's remote-snapshot protocol wants
    /// it: found by a List on its `containerd.io/snapshot.ref` label and parent. `parent`
    /// must present the layer's own parent. Ok(false) when the snapshot exists already.
    pub fn adopt_layer(
        &self,
        layer: &str,
        parent: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<bool, SnapshotterError> {
        check_labels(&labels)?;
        let parent_layer = self.store.stat(layer)?.parent.unwrap_or_default();
        if parent_layer != self.layer_of(parent)? {
            return Err(SnapshotterError::FailedPrecondition {
                key: layer.into(),
                why: format!("parent {parent:?} does not present layer {parent_layer:?}"),
            });
        }
        if let Some(r) = self.meta.get(layer)? {
            return if r.kind == Kind::Committed && r.parent == parent {
                Ok(false)
            } else {
                Err(SnapshotterError::FailedPrecondition {
                    key: layer.into(),
                    why: format!("exists on parent {:?}", r.parent),
                })
            };
        }
        let info = self.store.pin(&format!("{PIN_PREFIX}{layer}"), layer)?;
        let fs = self.store.fs_path(&info);
        let usage = usage_of(&fs);
        let now = now_ns();
        let mut labels = labels;
        labels.insert(SNAPSHOT_REF_LABEL.into(), layer.into());
        let record = Record {
            name: layer.into(),
            parent: parent.into(),
            kind: Kind::Committed,
            labels,
            created: now,
            updated: now,
            usage,
            files: Files::Layer {
                name: layer.into(),
                fs,
            },
        };
        let created = self.meta.write(|w| {
            if w.get(layer)?.is_some() {
                return Ok(false);
            }
            check_parent(w.get(parent)?, parent)?;
            w.put(&record)?;
            Ok(true)
        })?;
        Ok(created)
    }

    /// The layer (ChainID) the committed snapshot `key` presents: its
    /// `containerd.io/snapshot.ref` label, or the ChainID that ends containerd's backend
    /// name (`<namespace>/<n>/<chainID>`). "" for no snapshot.
    fn layer_of(&self, key: &str) -> Result<String, SnapshotterError> {
        if key.is_empty() {
            return Ok(String::new());
        }
        let r = self.record(key)?;
        if let Some(l) = r.labels.get(SNAPSHOT_REF_LABEL) {
            return Ok(l.clone());
        }
        Ok(key.rsplit('/').next().unwrap_or(key).to_string())
    }
}

/// A new snapshot's parent must exist and be committed.
fn check_parent(record: Option<Record>, parent: &str) -> Result<(), SnapshotterError> {
    if parent.is_empty() {
        return Ok(());
    }
    match record {
        None => Err(SnapshotterError::NotFound(parent.into())),
        Some(p) if p.kind != Kind::Committed => Err(SnapshotterError::InvalidArgument(format!(
            "parent {parent} is not a committed snapshot"
        ))),
        Some(_) => Ok(()),
    }
}

/// `dir/fs` and `dir/work`; `fs` owned as the parent's top directory is, so that the
/// overlay's root keeps the image's owner (containerd does the same).
fn make_dirs(dir: &Path, parent_fs: Option<&Path>) -> Result<(), SnapshotterError> {
    let fs = dir.join("fs");
    for d in [&fs, &dir.join("work")] {
        std::fs::create_dir_all(d).map_err(SnapshotterError::io(d.display()))?;
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755))
            .map_err(SnapshotterError::io(d.display()))?;
    }
    if let Some(p) = parent_fs {
        let md = std::fs::metadata(p).map_err(SnapshotterError::io(p.display()))?;
        std::os::unix::fs::lchown(&fs, Some(md.uid()), Some(md.gid()))
            .map_err(SnapshotterError::io(fs.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open() -> (tempfile::TempDir, Snapshotter) {
        let t = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(t.path()).unwrap());
        (t, Snapshotter::open(store).unwrap())
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// A committed snapshot `name` on `parent` with one file.
    fn layer(sn: &Snapshotter, name: &str, parent: &str) {
        let key = format!("ns/1/extract {name}");
        sn.create(Kind::Active, &key, parent, BTreeMap::new())
            .unwrap();
        let fs = sn.fs_dir(&sn.stat(&key).unwrap());
        std::fs::write(fs.join(name.replace('/', "_")), name).unwrap();
        sn.commit(name, &key, BTreeMap::new(), "").unwrap();
    }

    fn option<'a>(m: &'a Mount, prefix: &str) -> &'a str {
        m.options
            .iter()
            .find_map(|o| o.strip_prefix(prefix))
            .unwrap()
    }

    #[test]
    fn mounts_are_built_as_containerds_overlayfs_snapshotter_builds_them() {
        let (_t, sn) = open();
        let m = sn.create(Kind::Active, "a", "", BTreeMap::new()).unwrap();
        assert_eq!(
            (m[0].kind.as_str(), m[0].options.clone()),
            ("bind", vec!["rw".into(), "rbind".into()])
        );
        sn.commit("A", "a", BTreeMap::new(), "").unwrap();
        let v = sn.create(Kind::View, "v1", "A", BTreeMap::new()).unwrap();
        let a_fs = sn.fs_dir(&sn.stat("A").unwrap()).display().to_string();
        assert_eq!(
            (v[0].kind.as_str(), v[0].source.as_str()),
            ("bind", a_fs.as_str())
        );
        assert_eq!(v[0].options, vec!["ro".to_string(), "rbind".into()]);
        layer(&sn, "B", "A");
        let b_fs = sn.fs_dir(&sn.stat("B").unwrap()).display().to_string();
        let v = sn.create(Kind::View, "v2", "B", BTreeMap::new()).unwrap();
        assert_eq!(v[0].kind, "overlay");
        assert_eq!(option(&v[0], "lowerdir="), format!("{b_fs}:{a_fs}"));
        assert!(!v[0].options.iter().any(|o| o.starts_with("upperdir=")));
        let p = sn.create(Kind::Active, "c", "B", BTreeMap::new()).unwrap();
        let c = sn.stat("c").unwrap();
        assert_eq!(
            option(&p[0], "upperdir="),
            sn.fs_dir(&c).display().to_string()
        );
        assert!(option(&p[0], "workdir=").ends_with("/work"));
        assert_eq!(option(&p[0], "lowerdir="), format!("{b_fs}:{a_fs}"));
        assert_eq!(sn.mounts("c").unwrap(), p);
    }

    #[test]
    fn refusals_of_create_and_commit() {
        let (_t, sn) = open();
        let code = |e: SnapshotterError| (e.code(), e.to_string());
        sn.create(Kind::Active, "a", "", BTreeMap::new()).unwrap();
        assert_eq!(
            code(
                sn.create(Kind::Active, "a", "", BTreeMap::new())
                    .unwrap_err()
            ),
            (
                tonic::Code::AlreadyExists,
                "snapshot a: already exists".into()
            )
        );
        assert_eq!(
            code(
                sn.create(Kind::Active, "b", "a", BTreeMap::new())
                    .unwrap_err()
            ),
            (
                tonic::Code::InvalidArgument,
                "parent a is not a committed snapshot".into()
            )
        );
        assert_eq!(
            code(
                sn.create(Kind::View, "b", "nope", BTreeMap::new())
                    .unwrap_err()
            ),
            (tonic::Code::NotFound, "snapshot nope: not found".into())
        );
        sn.commit("A", "a", BTreeMap::new(), "").unwrap();
        assert_eq!(
            code(sn.commit("A2", "A", BTreeMap::new(), "").unwrap_err()),
            (
                tonic::Code::FailedPrecondition,
                "snapshot A: is a committed snapshot, not an active one".into()
            )
        );
    }

    #[test]
    fn refusals_of_remove_commit_and_update() {
        let (_t, sn) = open();
        let code = |e: SnapshotterError| (e.code(), e.to_string());
        layer(&sn, "A", "");
        sn.create(Kind::Active, "b", "A", BTreeMap::new()).unwrap();
        assert_eq!(
            code(sn.remove("A").unwrap_err()),
            (
                tonic::Code::FailedPrecondition,
                "snapshot A: cannot remove a snapshot with children".into()
            )
        );
        assert_eq!(
            code(sn.commit("B", "b", BTreeMap::new(), "X").unwrap_err()),
            (
                tonic::Code::InvalidArgument,
                "snapshot b: cannot change its parent A to X on commit".into()
            )
        );
        // The failed commit changed nothing.
        assert_eq!(sn.stat("b").unwrap().kind, Kind::Active);
        assert_eq!(
            code(
                sn.update("A", BTreeMap::new(), &["parent".into()])
                    .unwrap_err()
            ),
            (
                tonic::Code::InvalidArgument,
                "snapshot A: cannot update field \"parent\"".into()
            )
        );
        sn.remove("b").unwrap();
        sn.remove("A").unwrap();
        assert_eq!(code(sn.remove("A").unwrap_err()).0, tonic::Code::NotFound);
    }

    #[test]
    fn commit_records_usage_and_a_parent_for_a_snapshot_without_one() {
        let (_t, sn) = open();
        layer(&sn, "A", "");
        sn.create(Kind::Active, "b", "", BTreeMap::new()).unwrap();
        let fs = sn.fs_dir(&sn.stat("b").unwrap());
        std::fs::write(fs.join("f"), vec![1u8; 10_000]).unwrap();
        let live = sn.usage("b").unwrap();
        assert_eq!(live.inodes, 2);
        sn.commit("B", "b", labels(&[("l", "1")]), "A").unwrap();
        let b = sn.stat("B").unwrap();
        assert_eq!(
            (b.parent.as_str(), b.labels, b.usage),
            ("A", labels(&[("l", "1")]), live)
        );
        // Recorded: a change on disk after the commit does not show.
        std::fs::write(fs.join("g"), b"x").unwrap();
        assert_eq!(sn.usage("B").unwrap(), live);
        let u = sn
            .update("B", labels(&[("m", "2")]), &["labels.m".into()])
            .unwrap();
        assert_eq!(u.labels, labels(&[("l", "1"), ("m", "2")]));
        let u = sn.update("B", labels(&[("n", "3")]), &[]).unwrap();
        assert_eq!((u.labels, u.created), (labels(&[("n", "3")]), b.created));
        assert!(u.updated > b.updated);
    }

    #[test]
    fn layers_of_rdpulls_store_are_presented_on_the_parent_containerd_names() {
        let (_t, sn) = open();
        let store = sn.store().clone();
        for (key, name, parent) in [
            ("a", "sha256:aa", None),
            ("b", "sha256:bb", Some("sha256:aa")),
        ] {
            store.prepare(key, parent, BTreeMap::new()).unwrap();
            store.commit(name, key, BTreeMap::new()).unwrap();
        }
        let cri = labels(&[("containerd.io/snapshot/cri.layer-digest", "sha256:1")]);
        assert!(sn.adopt_layer("sha256:aa", "", cri.clone()).unwrap());
        assert!(!sn.adopt_layer("sha256:aa", "", cri.clone()).unwrap());
        let a = sn.stat("sha256:aa").unwrap();
        assert_eq!(a.labels[SNAPSHOT_REF_LABEL], "sha256:aa");
        assert_eq!(
            sn.fs_dir(&a),
            store.fs_path(&store.stat("sha256:aa").unwrap())
        );
        // The parent containerd names must present the layer's own parent.
        let e = sn
            .adopt_layer("sha256:bb", "", BTreeMap::new())
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "snapshot sha256:bb: parent \"\" does not present layer \"sha256:aa\""
        );
        // A parent containerd unpacked itself is known by its backend name's ChainID.
        sn.create(Kind::Active, "k8s.io/7/extract", "", BTreeMap::new())
            .unwrap();
        sn.commit(
            "k8s.io/8/sha256:aa",
            "k8s.io/7/extract",
            BTreeMap::new(),
            "",
        )
        .unwrap();
        assert!(sn
            .adopt_layer("sha256:bb", "k8s.io/8/sha256:aa", BTreeMap::new())
            .unwrap());
        assert_eq!(sn.stat("sha256:bb").unwrap().parent, "k8s.io/8/sha256:aa");
        // Pinned in rdpull's store; removing the snapshot releases the layer.
        assert!(store.prune().unwrap().snapshots.is_empty());
        sn.remove("sha256:bb").unwrap();
        assert!(store.stat("sha256:bb").is_err());
        assert!(store.stat("sha256:aa").is_ok());
    }

    #[test]
    fn cleanup_removes_unknown_directories_and_released_pins() {
        let (_t, sn) = open();
        layer(&sn, "A", "");
        let stray = sn.own_dir(sn.next_id.fetch_add(1, Ordering::Relaxed));
        std::fs::create_dir_all(stray.join("fs")).unwrap();
        let store = sn.store().clone();
        store.prepare("x", None, BTreeMap::new()).unwrap();
        store.commit("sha256:xx", "x", BTreeMap::new()).unwrap();
        sn.pin_layer("sha256:xx").unwrap();
        sn.cleanup(&HashSet::from(["sha256:xx".to_string()]))
            .unwrap();
        assert!(!stray.exists());
        assert_eq!(
            store.pins().unwrap().len(),
            1,
            "a pull in flight keeps its pins"
        );
        sn.cleanup(&HashSet::new()).unwrap();
        assert!(store.pins().unwrap().is_empty());
        assert!(store.stat("sha256:xx").is_err());
        assert!(sn.fs_dir(&sn.stat("A").unwrap()).join("A").exists());
    }
}
