//! Pins: committed snapshots kept for a holder outside the store.
//!
//! The containerd snapshotter presents rdpull's committed layer directories to containerd
//! instead of unpacking them a second time. Each containerd snapshot that does so pins its
//! layer under its own holder name; `prune` keeps a pinned layer and its parents, and
//! dropping the last reason to keep a layer (its pins, its images) removes it.

use rustix::fs::FlockOperation;

use crate::error::StoreError;
use crate::fsutil::remove_dir;
use crate::gc::kept_snapshots;
use crate::store::{Info, Kind, Store};

impl Store {
    /// Keep the committed snapshot `name` (and its parents) for `holder`, until
    /// [`Store::unpin`]. Pinning again under the same holder replaces its pin.
    pub fn pin(&self, holder: &str, name: &str) -> Result<Info, StoreError> {
        let mut l = self.lock()?;
        let info = match l.meta.snapshots.get(name) {
            Some(i) if i.kind == Kind::Committed => i.clone(),
            Some(_) => {
                return Err(StoreError::InvalidState {
                    key: name.into(),
                    why: "only a committed snapshot can be pinned".into(),
                })
            }
            None => return Err(StoreError::NotFound(name.into())),
        };
        if l.meta.pins.get(holder).map(String::as_str) != Some(name) {
            l.meta.pins.insert(holder.into(), name.into());
            l.save()?;
        }
        Ok(info)
    }

    /// Holders and the snapshot each pins.
    pub fn pins(&self) -> Result<Vec<(String, String)>, StoreError> {
        Ok(self.lock()?.meta.pins.clone().into_iter().collect())
    }

    /// Drop `holder`'s pin, then remove the snapshots of its chain that nothing keeps any
    /// more (no image, no other pin, no active snapshot built on them). While a pull holds
    /// a lease it may be relying on such a layer, so they are left for `prune`. Returns
    /// the names removed.
    pub fn unpin(&self, holder: &str) -> Result<Vec<String>, StoreError> {
        let Ok(_exclusive) = self.lease_lock(FlockOperation::NonBlockingLockExclusive) else {
            let mut l = self.lock()?;
            if l.meta.pins.remove(holder).is_some() {
                l.save()?;
            }
            return Ok(Vec::new());
        };
        let mut l = self.lock()?;
        let Some(top) = l.meta.pins.remove(holder) else {
            return Ok(Vec::new());
        };
        let keep = kept_snapshots(&l.meta);
        let mut doomed = Vec::new();
        let mut next = Some(top);
        while let Some(name) = next.take() {
            let Some(info) = l.meta.snapshots.get(&name) else {
                break;
            };
            if keep.contains(&name) {
                break;
            }
            next = info.parent.clone();
            doomed.push(l.meta.snapshots.remove(&name).expect("present"));
        }
        l.save()?;
        drop(l);
        for info in &doomed {
            remove_dir(&self.dir(info.id))?;
        }
        Ok(doomed.into_iter().map(|i| i.key).collect())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use crate::store::tests::store;

    #[test]
    fn pins_keep_layers_from_prune_and_the_last_unpin_removes_them() {
        let (_t, s) = store();
        for (key, name, parent) in [("a", "A", None), ("b", "B", Some("A"))] {
            s.prepare(key, parent, BTreeMap::new()).unwrap();
            s.commit(name, key, BTreeMap::new()).unwrap();
        }
        let b_dir = s.fs_path(&s.stat("B").unwrap());
        assert_eq!(s.pin("containerd:x", "B").unwrap().key, "B");
        s.pin("containerd:y", "A").unwrap();
        assert!(s.prune().unwrap().snapshots.is_empty());
        // B is only x's; A is still y's.
        assert_eq!(s.unpin("containerd:x").unwrap(), vec!["B"]);
        assert!(!b_dir.exists());
        assert!(s.stat("A").is_ok());
        assert_eq!(s.unpin("containerd:y").unwrap(), vec!["A"]);
        assert!(s.list().unwrap().is_empty());
        assert_eq!(s.unpin("containerd:y").unwrap(), Vec::<String>::new());
        assert_eq!(
            s.pin("h", "A").unwrap_err().to_string(),
            "snapshot A: not found"
        );
    }

    #[test]
    fn an_unpin_during_a_pull_leaves_the_layer_for_prune() {
        let (_t, s) = store();
        s.prepare("a", None, BTreeMap::new()).unwrap();
        s.commit("A", "a", BTreeMap::new()).unwrap();
        s.pin("h", "A").unwrap();
        let lease = s.lease().unwrap();
        assert!(s.unpin("h").unwrap().is_empty());
        assert!(s.pins().unwrap().is_empty());
        assert!(s.stat("A").is_ok());
        drop(lease);
        assert_eq!(s.prune().unwrap().snapshots, vec!["A"]);
    }
}
