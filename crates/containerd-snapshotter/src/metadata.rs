//! The snapshotter's metadata: one redb database, each call one transaction.
//!
//! Records are keyed by containerd's backend key (`<namespace>/<n>/<key>`, or a committed
//! name), kept opaque. A second table indexes children by parent, so that Remove's
//! "has children" check and a parent's lookup do not scan. Readers (Stat, Mounts, List,
//! Usage) run concurrently with each other and with the one writer; a write transaction
//! covers only the metadata change, never file work. redb commits durably (fsync) and a
//! crash leaves the last committed state. Why redb and not the JSON document rdpull's CLI
//! store rewrites per change: docs/design.md#containerd-snapshotter.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use redb::{
    Database, MultimapTableDefinition, ReadableDatabase, ReadableMultimapTable, ReadableTable,
    TableDefinition,
};

use crate::error::SnapshotterError;
use crate::filter::Fields;

const SNAPSHOTS: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshots");
const CHILDREN: MultimapTableDefinition<&str, &str> = MultimapTableDefinition::new("children");

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Active,
    View,
    Committed,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Active => "active",
            Kind::View => "view",
            Kind::Committed => "committed",
        }
    }
}

/// Disk usage of a snapshot's own files, as containerd's `snapshots.Usage`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Usage {
    pub size: i64,
    pub inodes: i64,
}

/// Where a snapshot's files are.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Files {
    /// `snapshots/<id>/{fs,work}` under the snapshotter's directory.
    Own(u64),
    /// A committed layer of rdpull's store, pinned for this snapshot (never unpacked twice).
    Layer { name: String, fs: PathBuf },
}

/// One snapshot as the database keeps it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Record {
    pub name: String,
    /// The parent's key; empty for none, as containerd's API has it.
    pub parent: String,
    pub kind: Kind,
    pub labels: BTreeMap<String, String>,
    /// Nanoseconds since the Unix epoch.
    pub created: u64,
    pub updated: u64,
    /// Recorded at commit; zero for views.
    pub usage: Usage,
    pub files: Files,
}

impl Fields for Record {
    fn field(&self, path: &[String]) -> Option<String> {
        match (path.first().map(String::as_str), path.len()) {
            (Some("name"), 1) => Some(self.name.clone()),
            (Some("parent"), 1) => Some(self.parent.clone()),
            (Some("kind"), 1) => Some(self.kind.as_str().into()),
            (Some("labels"), 2) => self.labels.get(&path[1]).cloned(),
            _ => None,
        }
    }
}

pub struct Metadata {
    db: Database,
}

fn encode(r: &Record) -> Vec<u8> {
    serde_json::to_vec(r).expect("a record serializes")
}

fn decode(key: &str, bytes: &[u8]) -> Result<Record, SnapshotterError> {
    serde_json::from_slice(bytes).map_err(|source| SnapshotterError::Record {
        key: key.to_string(),
        source,
    })
}

/// The write half of a transaction, as the checks of one call see it.
pub struct Writer<'a> {
    snapshots: redb::Table<'a, &'static str, &'static [u8]>,
    children: redb::MultimapTable<'a, &'static str, &'static str>,
}

impl Writer<'_> {
    pub fn get(&self, key: &str) -> Result<Option<Record>, SnapshotterError> {
        match self.snapshots.get(key).map_err(SnapshotterError::db)? {
            Some(v) => Ok(Some(decode(key, v.value())?)),
            None => Ok(None),
        }
    }

    pub fn has_children(&self, key: &str) -> Result<bool, SnapshotterError> {
        Ok(!self
            .children
            .get(key)
            .map_err(SnapshotterError::db)?
            .is_empty())
    }

    /// Write `record` under its name; its parent's child index follows.
    pub fn put(&mut self, record: &Record) -> Result<(), SnapshotterError> {
        self.snapshots
            .insert(record.name.as_str(), encode(record).as_slice())
            .map_err(SnapshotterError::db)?;
        if !record.parent.is_empty() {
            self.children
                .insert(record.parent.as_str(), record.name.as_str())
                .map_err(SnapshotterError::db)?;
        }
        Ok(())
    }

    pub fn delete(&mut self, record: &Record) -> Result<(), SnapshotterError> {
        self.snapshots
            .remove(record.name.as_str())
            .map_err(SnapshotterError::db)?;
        if !record.parent.is_empty() {
            self.children
                .remove(record.parent.as_str(), record.name.as_str())
                .map_err(SnapshotterError::db)?;
        }
        Ok(())
    }
}

impl Metadata {
    pub fn open(path: &Path) -> Result<Metadata, SnapshotterError> {
        let db = Database::create(path).map_err(|source| SnapshotterError::Open {
            path: path.display().to_string(),
            source: Box::new(source),
        })?;
        let meta = Metadata { db };
        meta.write(|_| Ok(()))?;
        Ok(meta)
    }

    /// Run `f` in one write transaction, committed durably if it returns Ok.
    pub fn write<T>(
        &self,
        f: impl FnOnce(&mut Writer<'_>) -> Result<T, SnapshotterError>,
    ) -> Result<T, SnapshotterError> {
        let tx = self.db.begin_write().map_err(SnapshotterError::db)?;
        let out = {
            let mut w = Writer {
                snapshots: tx.open_table(SNAPSHOTS).map_err(SnapshotterError::db)?,
                children: tx
                    .open_multimap_table(CHILDREN)
                    .map_err(SnapshotterError::db)?,
            };
            f(&mut w)?
        };
        tx.commit().map_err(SnapshotterError::db)?;
        Ok(out)
    }

    pub fn get(&self, key: &str) -> Result<Option<Record>, SnapshotterError> {
        let tx = self.db.begin_read().map_err(SnapshotterError::db)?;
        let t = tx.open_table(SNAPSHOTS).map_err(SnapshotterError::db)?;
        match t.get(key).map_err(SnapshotterError::db)? {
            Some(v) => Ok(Some(decode(key, v.value())?)),
            None => Ok(None),
        }
    }

    /// `key` and its ancestors, `key` first, from one consistent read.
    pub fn chain(&self, key: &str) -> Result<Vec<Record>, SnapshotterError> {
        let tx = self.db.begin_read().map_err(SnapshotterError::db)?;
        let t = tx.open_table(SNAPSHOTS).map_err(SnapshotterError::db)?;
        let mut out: Vec<Record> = Vec::new();
        let mut next = key.to_string();
        loop {
            let Some(v) = t.get(next.as_str()).map_err(SnapshotterError::db)? else {
                return Err(SnapshotterError::NotFound(next));
            };
            let r = decode(&next, v.value())?;
            next = r.parent.clone();
            out.push(r);
            if next.is_empty() {
                return Ok(out);
            }
        }
    }

    /// Every record, in key order, to `each` (from one consistent read).
    pub fn for_each(
        &self,
        mut each: impl FnMut(Record) -> Result<(), SnapshotterError>,
    ) -> Result<(), SnapshotterError> {
        let tx = self.db.begin_read().map_err(SnapshotterError::db)?;
        let t = tx.open_table(SNAPSHOTS).map_err(SnapshotterError::db)?;
        for entry in t.iter().map_err(SnapshotterError::db)? {
            let (k, v) = entry.map_err(SnapshotterError::db)?;
            each(decode(k.value(), v.value())?)?;
        }
        Ok(())
    }
}
