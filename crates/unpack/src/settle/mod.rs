//! Settling a layer on the layers below it, once they are committed.
//!
//! Layers unpack at the same time, each into its own directory with no view of the
//! layers below, so three things a sequential apply takes from the lower layers are
//! settled here, at commit time, against the committed lower chain; the merged tree then
//! equals a sequential apply's (umoci's, GNU tar's, the OCI image spec's model):
//! - a parent directory the layer created implicitly where the layers below have a
//!   symlink: its contents move to where the symlink leads (`bin/x` over
//!   `bin -> usr/bin` is `usr/bin/x`), and the symlink shows again;
//! - one where they have a directory takes that directory's mode, owner, xattrs and
//!   mtime, instead of hiding them behind 0755 root;
//! - a hard link to a file of a lower layer links to a copy of that file in this layer,
//!   together with the file's own name and its other names that the merged tree still
//!   shows, so all of them stay one inode.
//!
//! Entries of the layer that meet (a name written both through a lower symlink and
//! directly) are decided by the order in which the tar made them: the later one wins,
//! as in a sequential apply. Only the layer's own directory is written.
//!
//! `dirs` settles the implicit directories, `links` the deferred hard links; this module
//! holds what both track (pending directories, touched mtimes).

mod dirs;
mod links;

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use rustix::fs::{self as rfs, FileType, Stat, Timestamps};
use rustix::io::Errno;

use crate::error::UnpackError;
use crate::files::{open_dir, stat_times};
use crate::merged::MergedView;
use crate::options::ApplyOptions;
use crate::path::display;
use crate::record::{DeferredLink, LowerRefs, Order};

/// Settle the layer in `upper` on `lowers` (the committed layer directories below it,
/// nearest first). Afterwards `upper` over `lowers` is the tree a sequential apply of
/// the same layers gives. A hard link to a path that no layer has is refused.
pub fn settle_on_lowers(
    upper: &Path,
    lowers: &[&Path],
    refs: LowerRefs,
    options: &ApplyOptions,
) -> Result<(), UnpackError> {
    if refs.is_empty() {
        return Ok(());
    }
    let mut dirs = vec![upper];
    dirs.extend_from_slice(lowers);
    let view = MergedView::open(&dirs).map_err(|source| UnpackError::Root {
        path: upper.display().to_string(),
        source,
    })?;
    let mut s = Settler {
        view,
        pending: BTreeSet::new(),
        order: refs.order,
        same_owner: options.same_owner,
        touched: HashMap::new(),
    };
    for p in refs.implicit {
        s.pend(p);
    }
    s.settle_dirs()?;
    let mut groups: Vec<(Vec<u8>, Vec<DeferredLink>)> = Vec::new();
    for link in refs.links {
        match groups.iter_mut().find(|(t, _)| *t == link.target) {
            Some((_, g)) => g.push(link),
            None => groups.push((link.target.clone(), vec![link])),
        }
    }
    for (target, links) in groups {
        s.settle_links(&target, links)?;
    }
    s.restore_mtimes();
    Ok(())
}

struct Settler {
    view: MergedView,
    /// Implicit directories not settled yet, by depth then path (physical paths).
    pending: BTreeSet<(usize, Vec<u8>)>,
    order: Order,
    same_owner: bool,
    /// Directories of the layer whose entries changed here: their mtimes are put back.
    touched: HashMap<u64, (OwnedFd, Timestamps)>,
}

fn depth(p: &[u8]) -> usize {
    p.iter().filter(|&&b| b == b'/').count()
}

fn join(a: &[u8], b: &[u8]) -> Vec<u8> {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_vec(),
        (_, true) => a.to_vec(),
        _ => [a, b"/", b].concat(),
    }
}

fn is_under(p: &[u8], dir: &[u8]) -> bool {
    dir.is_empty() || p == dir || (p.starts_with(dir) && p.get(dir.len()) == Some(&b'/'))
}

fn is_dir(st: &Stat) -> bool {
    FileType::from_raw_mode(st.st_mode) == FileType::Directory
}

fn fs_err<'a>(path: &'a [u8], op: &'static str) -> impl FnOnce(io::Error) -> UnpackError + 'a {
    move |source| UnpackError::Entry {
        path: display(path),
        op,
        source,
    }
}

fn errno<'a>(path: &'a [u8], op: &'static str) -> impl FnOnce(Errno) -> UnpackError + 'a {
    move |e| fs_err(path, op)(e.into())
}

fn refused(path: &[u8], why: String) -> UnpackError {
    UnpackError::Refused {
        path: display(path),
        why,
    }
}

/// A directory of the layer taking part in a merge: its fd, physical path and inode.
struct Side<'a> {
    fd: &'a OwnedFd,
    path: &'a [u8],
    ino: u64,
}

impl<'a> Side<'a> {
    fn new(fd: &'a OwnedFd, path: &'a [u8]) -> Result<Side<'a>, UnpackError> {
        let ino = rfs::fstat(fd).map_err(errno(path, "stat"))?.st_ino;
        Ok(Side { fd, path, ino })
    }
}

impl Settler {
    fn pend(&mut self, p: Vec<u8>) {
        self.view.transparent.insert(p.clone());
        self.pending.insert((depth(&p), p));
    }

    /// Forget the pending directories at and below `dir`.
    fn unpend_under(&mut self, dir: &[u8]) {
        let gone: Vec<_> = self
            .pending
            .iter()
            .filter(|(_, p)| is_under(p, dir))
            .cloned()
            .collect();
        for entry in gone {
            self.view.transparent.remove(&entry.1);
            self.pending.remove(&entry);
        }
    }

    fn unpend(&mut self, p: &[u8]) {
        self.view.transparent.remove(p);
        self.pending.remove(&(depth(p), p.to_vec()));
    }

    /// The pending directories at and below `from` are now at and below `to`.
    fn repend(&mut self, from: &[u8], to: &[u8]) {
        let moved: Vec<_> = self
            .pending
            .iter()
            .filter(|(_, p)| is_under(p, from))
            .cloned()
            .collect();
        for entry in moved {
            self.unpend(&entry.1);
            self.pend(join(
                to,
                entry.1[from.len()..].strip_prefix(b"/").unwrap_or(&[]),
            ));
        }
    }

    /// Record `dir`'s times before its entries change, to put them back at the end.
    fn touch(&mut self, dir: &impl AsFd) -> io::Result<()> {
        let st = rfs::fstat(dir)?;
        if let std::collections::hash_map::Entry::Vacant(v) = self.touched.entry(st.st_ino) {
            v.insert((open_dir(dir, b"")?, stat_times(&st)));
        }
        Ok(())
    }

    fn restore_mtimes(&mut self) {
        for (fd, times) in self.touched.values() {
            if let Err(e) = rfs::futimens(fd, times) {
                tracing::debug!("restoring a directory's mtime: {e}");
            }
        }
    }
}
