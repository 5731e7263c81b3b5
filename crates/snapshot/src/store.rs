//! The snapshot store: containerd's snapshotter model on one directory.
//!
//! A snapshot has a key (for committed ones, the name: rdpull uses ChainIDs), a parent, a
//! kind (active, view, committed), labels and timestamps. Its files live in
//! `snapshots/<id>/fs` (overlayfs upper dir; `work` beside it). All metadata is one JSON
//! document replaced atomically (write, fsync, rename, fsync dir) under an exclusive
//! `flock`, so concurrent rdpull processes never see a half-written state, and a crash
//! leaves either the old or the new metadata. A snapshot is committed only by that
//! metadata write: a crash before it leaves an active snapshot, never a committed one.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use rustix::fs::FlockOperation;

use crate::error::{io_err, StoreError};
use crate::fsutil::{lock_file, now_ns, remove_dir, sync_dir};

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Kind {
    Active,
    View,
    Committed,
}

/// What the store knows of one snapshot.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Info {
    pub key: String,
    /// Directory name under `snapshots/`.
    pub id: u64,
    pub parent: Option<String>,
    pub kind: Kind,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Nanoseconds since the Unix epoch.
    pub created: u128,
    pub updated: u128,
}

/// An overlay (or bind) mount that presents a snapshot, as containerd's `Mount`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    pub kind: String,
    pub source: String,
    pub options: Vec<String>,
}

#[derive(Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct Metadata {
    pub next_id: u64,
    pub snapshots: BTreeMap<String, Info>,
    #[serde(default)]
    pub images: BTreeMap<String, crate::record::ImageRecord>,
    /// Committed snapshots kept for a holder outside the store (e.g. a containerd
    /// snapshot that presents the layer): holder -> snapshot name.
    #[serde(default)]
    pub pins: BTreeMap<String, String>,
}

pub struct Store {
    root: PathBuf,
}

/// An exclusive hold on the metadata, released on drop.
pub(crate) struct Locked<'a> {
    store: &'a Store,
    _lock: File,
    pub meta: Metadata,
}

impl Locked<'_> {
    /// Replace the metadata file durably.
    pub(crate) fn save(&self) -> Result<(), StoreError> {
        let path = self.store.root.join("metadata.json");
        let tmp = self.store.root.join("metadata.json.tmp");
        let data = serde_json::to_vec_pretty(&self.meta).expect("metadata serializes");
        let mut f = File::create(&tmp).map_err(io_err(tmp.display()))?;
        f.write_all(&data).map_err(io_err(tmp.display()))?;
        f.sync_all().map_err(io_err(tmp.display()))?;
        std::fs::rename(&tmp, &path).map_err(io_err(path.display()))?;
        sync_dir(&self.store.root)
    }
}

impl Store {
    /// Open (creating if needed) the store at `root`.
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        for d in ["snapshots", "content", "tmp"] {
            std::fs::create_dir_all(root.join(d)).map_err(io_err(root.join(d).display()))?;
        }
        Ok(Store {
            root: root.to_path_buf(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn lock(&self) -> Result<Locked<'_>, StoreError> {
        let lock = lock_file(&self.root.join("lock"), FlockOperation::LockExclusive)?;
        let mp = self.root.join("metadata.json");
        let meta = match std::fs::read(&mp) {
            Ok(b) => serde_json::from_slice(&b).map_err(|source| StoreError::Corrupt {
                path: mp.display().to_string(),
                source,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Metadata {
                next_id: 1,
                ..Default::default()
            },
            Err(e) => return Err(io_err(mp.display())(e)),
        };
        Ok(Locked {
            store: self,
            _lock: lock,
            meta,
        })
    }

    pub(crate) fn dir(&self, id: u64) -> PathBuf {
        self.root.join("snapshots").join(id.to_string())
    }

    /// The directory holding a snapshot's files (overlayfs upper dir).
    pub fn fs_path(&self, info: &Info) -> PathBuf {
        self.dir(info.id).join("fs")
    }

    /// Create an active snapshot `key` on top of `parent`. The parent need not be
    /// committed yet (layers unpack concurrently, each into its own directory), but it
    /// must be by the time this one is committed.
    pub fn prepare(
        &self,
        key: &str,
        parent: Option<&str>,
        labels: BTreeMap<String, String>,
    ) -> Result<Info, StoreError> {
        self.create(key, parent, labels, Kind::Active)
    }

    /// A read-only view of `parent` (containerd's View): no files of its own.
    pub fn view(
        &self,
        key: &str,
        parent: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<Info, StoreError> {
        let l = self.lock()?;
        match l.meta.snapshots.get(parent) {
            Some(p) if p.kind == Kind::Committed => {}
            Some(_) => {
                return Err(StoreError::InvalidState {
                    key: parent.into(),
                    why: "a view's parent must be committed".into(),
                })
            }
            None => return Err(StoreError::NotFound(parent.into())),
        }
        drop(l);
        self.create(key, Some(parent), labels, Kind::View)
    }

    fn create(
        &self,
        key: &str,
        parent: Option<&str>,
        labels: BTreeMap<String, String>,
        kind: Kind,
    ) -> Result<Info, StoreError> {
        let mut l = self.lock()?;
        if l.meta.snapshots.contains_key(key) {
            return Err(StoreError::AlreadyExists(key.into()));
        }
        let id = l.meta.next_id.max(1);
        l.meta.next_id = id + 1;
        let dir = self.dir(id);
        // A directory left by a crash between mkdir and the metadata write is reused.
        remove_dir(&dir)?;
        for sub in ["fs", "work"] {
            std::fs::create_dir_all(dir.join(sub)).map_err(io_err(dir.join(sub).display()))?;
        }
        let t = now_ns();
        let info = Info {
            key: key.into(),
            id,
            parent: parent.map(str::to_string),
            kind,
            labels,
            created: t,
            updated: t,
        };
        l.meta.snapshots.insert(key.into(), info.clone());
        l.save()?;
        Ok(info)
    }

    /// Commit the active snapshot `key` as `name`. Its parent must be committed. Its files
    /// are made durable first with one `syncfs` (no fsync per file while unpacking).
    pub fn commit(
        &self,
        name: &str,
        key: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<Info, StoreError> {
        if let Ok(info) = self.stat(key) {
            let dir = self.fs_path(&info);
            let fd = File::open(&dir).map_err(io_err(dir.display()))?;
            rustix::fs::syncfs(&fd).map_err(|e| io_err(dir.display())(e.into()))?;
        }
        let mut l = self.lock()?;
        if l.meta.snapshots.contains_key(name) {
            return Err(StoreError::AlreadyExists(name.into()));
        }
        let mut info = l
            .meta
            .snapshots
            .get(key)
            .cloned()
            .ok_or_else(|| StoreError::NotFound(key.into()))?;
        if info.kind != Kind::Active {
            return Err(StoreError::InvalidState {
                key: key.into(),
                why: "only an active snapshot can be committed".into(),
            });
        }
        if let Some(p) = &info.parent {
            match l.meta.snapshots.get(p) {
                Some(pi) if pi.kind == Kind::Committed => {}
                _ => {
                    return Err(StoreError::InvalidState {
                        key: key.into(),
                        why: format!("parent {p} is not committed"),
                    })
                }
            }
        }
        l.meta.snapshots.remove(key);
        info.key = name.into();
        info.kind = Kind::Committed;
        info.labels.extend(labels);
        info.updated = now_ns();
        l.meta.snapshots.insert(name.into(), info.clone());
        l.save()?;
        Ok(info)
    }

    /// Remove a snapshot that nothing builds on.
    ///
    /// A committed snapshot's files go after the metadata, so a crash in between leaves
    /// only an orphan directory, never a record without its files. An active or view
    /// snapshot's files go first: on a full disk they are what frees the space that the
    /// metadata write needs, and a record of an active snapshot without files is
    /// harmless (it is never committed, and its removal is retried).
    pub fn remove(&self, key: &str) -> Result<(), StoreError> {
        let mut l = self.lock()?;
        let info = l
            .meta
            .snapshots
            .get(key)
            .cloned()
            .ok_or_else(|| StoreError::NotFound(key.into()))?;
        if let Some(child) = l
            .meta
            .snapshots
            .values()
            .find(|s| s.parent.as_deref() == Some(key))
        {
            return Err(StoreError::InvalidState {
                key: key.into(),
                why: format!("snapshot {} is built on it", child.key),
            });
        }
        if info.kind != Kind::Committed {
            remove_dir(&self.dir(info.id))?;
        }
        l.meta.snapshots.remove(key);
        l.save()?;
        drop(l);
        remove_dir(&self.dir(info.id))
    }

    pub fn stat(&self, key: &str) -> Result<Info, StoreError> {
        self.lock()?
            .meta
            .snapshots
            .get(key)
            .cloned()
            .ok_or_else(|| StoreError::NotFound(key.into()))
    }

    /// Is `name` a committed snapshot?
    pub fn is_committed(&self, name: &str) -> Result<bool, StoreError> {
        Ok(self
            .lock()?
            .meta
            .snapshots
            .get(name)
            .is_some_and(|i| i.kind == Kind::Committed))
    }

    pub fn list(&self) -> Result<Vec<Info>, StoreError> {
        Ok(self.lock()?.meta.snapshots.values().cloned().collect())
    }

    /// `key` and its ancestors, top first.
    pub fn chain(&self, key: &str) -> Result<Vec<Info>, StoreError> {
        let l = self.lock()?;
        let mut out = Vec::new();
        let mut next = Some(key.to_string());
        while let Some(k) = next {
            let info = l
                .meta
                .snapshots
                .get(&k)
                .cloned()
                .ok_or(StoreError::NotFound(k))?;
            next = info.parent.clone();
            out.push(info);
        }
        Ok(out)
    }

    /// How to mount `key`: an overlay of its chain (writable for an active snapshot), or a
    /// bind mount when there is a single directory.
    pub fn mounts(&self, key: &str) -> Result<Vec<Mount>, StoreError> {
        let chain = self.chain(key)?;
        let top = &chain[0];
        let lowers: Vec<String> = chain
            .iter()
            .filter(|i| i.kind == Kind::Committed)
            .map(|i| self.fs_path(i).display().to_string())
            .collect();
        if top.kind == Kind::Active {
            let upper = self.fs_path(top).display().to_string();
            if chain.len() == 1 {
                return Ok(vec![bind(upper, false)]);
            }
            let work = self.dir(top.id).join("work").display().to_string();
            return Ok(vec![Mount {
                kind: "overlay".into(),
                source: "overlay".into(),
                options: vec![
                    "index=off".into(),
                    format!("workdir={work}"),
                    format!("upperdir={upper}"),
                    format!("lowerdir={}", lowers.join(":")),
                ],
            }]);
        }
        if lowers.len() == 1 {
            return Ok(vec![bind(lowers[0].clone(), true)]);
        }
        Ok(vec![Mount {
            kind: "overlay".into(),
            source: "overlay".into(),
            options: vec!["index=off".into(), format!("lowerdir={}", lowers.join(":"))],
        }])
    }

    /// Remove the active snapshots for which `is_stale` says their owner is gone
    /// (an interrupted pull). Returns their keys.
    pub fn remove_stale(
        &self,
        is_stale: impl Fn(&Info) -> bool,
    ) -> Result<Vec<String>, StoreError> {
        let stale: Vec<String> = self
            .list()?
            .into_iter()
            .filter(|i| i.kind == Kind::Active && is_stale(i))
            .map(|i| i.key)
            .collect();
        for k in &stale {
            match self.remove(k) {
                Ok(()) | Err(StoreError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(stale)
    }
}

fn bind(source: String, ro: bool) -> Mount {
    Mount {
        kind: "bind".into(),
        source,
        options: vec![if ro { "ro" } else { "rw" }.into(), "rbind".into()],
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A store in a fresh temporary directory.
    pub(crate) fn store() -> (tempfile::TempDir, Store) {
        let t = tempfile::tempdir().unwrap();
        let s = Store::open(t.path()).unwrap();
        (t, s)
    }

    #[test]
    fn prepare_commit_and_chain() {
        let (_t, s) = store();
        let a = s.prepare("extract-a", None, BTreeMap::new()).unwrap();
        assert_eq!(a.kind, Kind::Active);
        assert!(s.fs_path(&a).is_dir());
        // b is prepared before its parent is committed, but cannot commit before it.
        let b = s.prepare("extract-b", Some("A"), BTreeMap::new()).unwrap();
        let e = s.commit("B", "extract-b", BTreeMap::new()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "snapshot extract-b: parent A is not committed"
        );
        s.commit("A", "extract-a", BTreeMap::new()).unwrap();
        let mut labels = BTreeMap::new();
        labels.insert("l".to_string(), "v".to_string());
        let bc = s.commit("B", "extract-b", labels).unwrap();
        assert_eq!(
            (bc.id, bc.kind, bc.labels["l"].as_str()),
            (b.id, Kind::Committed, "v")
        );
        assert!(matches!(s.stat("extract-b"), Err(StoreError::NotFound(_))));
        let chain: Vec<String> = s.chain("B").unwrap().into_iter().map(|i| i.key).collect();
        assert_eq!(chain, vec!["B", "A"]);
        assert!(s.is_committed("A").unwrap());
        // Survives reopening: metadata is on disk.
        let s2 = Store::open(s.root()).unwrap();
        assert_eq!(s2.stat("B").unwrap(), bc);
    }

    #[test]
    fn refusals() {
        let (_t, s) = store();
        s.prepare("k", None, BTreeMap::new()).unwrap();
        assert_eq!(
            s.prepare("k", None, BTreeMap::new())
                .unwrap_err()
                .to_string(),
            "snapshot k: already exists"
        );
        s.commit("C", "k", BTreeMap::new()).unwrap();
        s.prepare("k2", None, BTreeMap::new()).unwrap();
        assert!(matches!(
            s.commit("C", "k2", BTreeMap::new()),
            Err(StoreError::AlreadyExists(_))
        ));
        s.prepare("child", Some("C"), BTreeMap::new()).unwrap();
        assert_eq!(
            s.remove("C").unwrap_err().to_string(),
            "snapshot C: snapshot child is built on it"
        );
        s.remove("child").unwrap();
        let c = s.stat("C").unwrap();
        s.remove("C").unwrap();
        assert!(!s.fs_path(&c).exists());
        assert!(matches!(
            s.commit("X", "C", BTreeMap::new()),
            Err(StoreError::NotFound(_))
        ));
    }

    #[test]
    fn mounts_and_views() {
        let (_t, s) = store();
        let a = s.prepare("a", None, BTreeMap::new()).unwrap();
        assert_eq!(s.mounts("a").unwrap()[0].kind, "bind");
        s.commit("A", "a", BTreeMap::new()).unwrap();
        s.prepare("b", Some("A"), BTreeMap::new()).unwrap();
        s.commit("B", "b", BTreeMap::new()).unwrap();
        s.view("v", "B", BTreeMap::new()).unwrap();
        let m = s.mounts("v").unwrap();
        assert_eq!(m[0].kind, "overlay");
        let lower = m[0]
            .options
            .iter()
            .find(|o| o.starts_with("lowerdir="))
            .unwrap();
        let b = s.stat("B").unwrap();
        assert_eq!(
            lower,
            &format!(
                "lowerdir={}:{}",
                s.fs_path(&b).display(),
                s.fs_path(&a).display()
            )
        );
        s.prepare("rw", Some("B"), BTreeMap::new()).unwrap();
        let m = s.mounts("rw").unwrap();
        assert!(m[0].options.iter().any(|o| o.starts_with("upperdir=")));
    }

    #[test]
    fn stale_active_snapshots_are_removed() {
        let (_t, s) = store();
        let mut l = BTreeMap::new();
        l.insert("owner".to_string(), "dead".to_string());
        s.prepare("gone", None, l).unwrap();
        s.prepare("live", None, BTreeMap::new()).unwrap();
        let removed = s
            .remove_stale(|i| i.labels.get("owner").map(String::as_str) == Some("dead"))
            .unwrap();
        assert_eq!(removed, vec!["gone"]);
        assert!(s.stat("live").is_ok());
    }
}
