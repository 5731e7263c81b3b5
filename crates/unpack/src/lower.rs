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

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, Stat, Timestamps, XattrFlags};
use rustix::io::Errno;

use crate::apply::{copy_with_holes, skip_xattr, times, ApplyOptions};
use crate::error::UnpackError;
use crate::merged::{Found, MergedView};
use crate::overlay::{is_opaque, is_whiteout, set_opaque};
use crate::path::{display, split};
use crate::root::{os, remove_all};

/// The order in which a layer made its entries, keyed by (parent directory inode, name)
/// so that it survives the moves of settling. Recorded from the first implicit directory
/// or deferred hard link on; an entry made before that came before every recorded one.
#[derive(Debug, Default)]
pub(crate) struct Order {
    on: bool,
    seqs: HashMap<(u64, Vec<u8>), u64>,
}

impl Order {
    pub(crate) fn start(&mut self) {
        self.on = true;
    }

    pub(crate) fn is_on(&self) -> bool {
        self.on
    }

    /// Entry number `seq` was just made at `name` in the directory with inode `parent`.
    pub(crate) fn note(&mut self, parent: u64, name: &[u8], seq: u64) {
        if self.on {
            self.seqs.insert((parent, name.to_vec()), seq);
        }
    }

    fn of(&self, parent_ino: u64, name: &[u8]) -> u64 {
        self.seqs
            .get(&(parent_ino, name.to_vec()))
            .copied()
            .unwrap_or(0)
    }

    fn moved(&mut self, from_ino: u64, to_ino: u64, name: &[u8]) {
        if let Some(seq) = self.seqs.remove(&(from_ino, name.to_vec())) {
            self.seqs.insert((to_ino, name.to_vec()), seq);
        }
    }
}

/// A hard link whose target was not in the layer: a placeholder file stands at its name
/// until the link is settled.
#[derive(Debug)]
pub(crate) struct DeferredLink {
    pub(crate) parent: Arc<OwnedFd>,
    pub(crate) name: Vec<u8>,
    /// The placeholder's inode: a later entry of the layer that replaced it wins.
    pub(crate) ino: u64,
    /// The target as the tar names it, cleaned.
    pub(crate) target: Vec<u8>,
    /// The link's entry, for messages.
    pub(crate) entry: Vec<u8>,
    pub(crate) seq: u64,
}

/// What a layer left to settle against its lower layers ([`settle_on_lowers`]).
#[derive(Debug, Default)]
pub struct LowerRefs {
    pub(crate) implicit: Vec<Vec<u8>>,
    pub(crate) links: Vec<DeferredLink>,
    pub(crate) order: Order,
}

impl LowerRefs {
    /// Nothing to settle: the layer stands on its own.
    pub fn is_empty(&self) -> bool {
        self.implicit.is_empty() && self.links.is_empty()
    }

    /// The directories the layer created only as parents of its entries, `/`-prefixed.
    pub fn implicit_dirs(&self) -> Vec<String> {
        self.implicit.iter().map(|p| display(p)).collect()
    }

    /// The hard links waiting for a lower layer's file, `/`-prefixed.
    pub fn deferred_links(&self) -> Vec<String> {
        self.links.iter().map(|l| display(&l.entry)).collect()
    }
}

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

fn open_dir(parent: &impl AsFd, name: &[u8]) -> rustix::io::Result<OwnedFd> {
    rfs::openat(
        parent,
        os(if name.is_empty() { b"." } else { name }),
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
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

    fn settle_dirs(&mut self) -> Result<(), UnpackError> {
        // Implicit directories with nothing below them: nor have their descendants.
        let mut new: HashSet<Vec<u8>> = HashSet::new();
        while let Some((_, p)) = self.pending.pop_first() {
            self.view.transparent.remove(&p);
            let mut up = &p[..];
            let under_new = loop {
                match up.iter().rposition(|&b| b == b'/') {
                    Some(i) => up = &up[..i],
                    None => break false,
                }
                if new.contains(up) {
                    break true;
                }
            };
            if under_new {
                continue;
            }
            // Not a directory any more: a later entry of the layer replaced it.
            let still_dir = self
                .view
                .stat_in(0, &p)
                .map_err(fs_err(&p, "settle"))?
                .is_some_and(|st| is_dir(&st));
            if still_dir && !self.settle_dir(&p)? {
                new.insert(p);
            }
        }
        Ok(())
    }

    /// The implicit directory `p`, its parents settled already. False when the layers
    /// below have no directory there.
    fn settle_dir(&mut self, p: &[u8]) -> Result<bool, UnpackError> {
        match self.view.entry(p, true).map_err(fs_err(p, "look below"))? {
            Found::Dir(layers) => {
                let src = self
                    .view
                    .open_in(layers[0], p, OFlags::RDONLY | OFlags::DIRECTORY)
                    .map_err(fs_err(p, "open below"))?
                    .ok_or_else(|| fs_err(p, "open below")(Errno::NOENT.into()))?;
                let dst = self
                    .view
                    .open_in(0, p, OFlags::RDONLY | OFlags::DIRECTORY)
                    .map_err(fs_err(p, "open"))?
                    .ok_or_else(|| fs_err(p, "open")(Errno::NOENT.into()))?;
                copy_meta(&src, &dst, self.same_owner).map_err(fs_err(p, "copy metadata"))?;
                Ok(true)
            }
            Found::Other(l, st) if FileType::from_raw_mode(st.st_mode) == FileType::Symlink => {
                self.dissolve(p, l)?;
                Ok(true)
            }
            // Nothing below (a new directory, 0755 as a sequential apply makes it), or
            // a lower non-directory that the directory replaces.
            _ => Ok(false),
        }
    }

    /// Move the implicit directory `p` of the layer to where the lower layer `l`'s
    /// symlink at `p` leads, so that the symlink shows again.
    fn dissolve(&mut self, p: &[u8], l: usize) -> Result<(), UnpackError> {
        let target = self.view.read_link(l, p).map_err(fs_err(p, "read link"))?;
        let (parent, name) = split(p);
        let from = if target.first() == Some(&b'/') {
            target.clone()
        } else {
            join(parent, &target)
        };
        let (to, found) = self
            .view
            .resolve(&from, true)
            .map_err(fs_err(p, "resolve lower symlink"))?;
        let leads = || {
            format!(
                "written through a lower layer's symlink to {}, which",
                String::from_utf8_lossy(&target)
            )
        };
        if let Found::Other(..) = found {
            return Err(refused(p, format!("{} is not a directory", leads())));
        }
        if is_under(&to, p) && !to.is_empty() {
            return Err(refused(p, format!("{} leads into itself", leads())));
        }
        let t = self.upper_dir(&to)?;
        let upper_parent = self
            .view
            .open_in(0, parent, OFlags::RDONLY | OFlags::DIRECTORY)
            .map_err(fs_err(parent, "open"))?
            .ok_or_else(|| fs_err(parent, "open")(Errno::NOENT.into()))?;
        let s = open_dir(&upper_parent, name).map_err(errno(p, "open"))?;
        self.merge(&s, p, &t, &to)?;
        if is_opaque(&s) && !to.is_empty() {
            set_opaque(&t).map_err(fs_err(&to, "set opaque"))?;
        }
        drop(s);
        self.touch(&upper_parent).map_err(fs_err(parent, "stat"))?;
        rfs::unlinkat(&upper_parent, os(name), AtFlags::REMOVEDIR).map_err(errno(p, "remove"))?;
        self.repend(p, &to);
        Ok(())
    }

    /// Move the entries of the layer's directory `s` (at `sp`) into its directory `t`
    /// (at `tp`). Where both have a name, the entry the tar made later wins; two
    /// directories merge.
    fn merge(&mut self, s: &OwnedFd, sp: &[u8], t: &OwnedFd, tp: &[u8]) -> Result<(), UnpackError> {
        let s = Side::new(s, sp)?;
        let t = Side::new(t, tp)?;
        let mut names = Vec::new();
        for e in rfs::Dir::read_from(s.fd).map_err(errno(sp, "read directory"))? {
            let e = e.map_err(errno(sp, "read directory"))?;
            let n = e.file_name().to_bytes();
            if n != b"." && n != b".." {
                names.push(n.to_vec());
            }
        }
        self.touch(t.fd).map_err(fs_err(tp, "stat"))?;
        for name in names {
            self.merge_name(&s, &t, &name)?;
        }
        Ok(())
    }

    fn merge_name(&mut self, s: &Side<'_>, t: &Side<'_>, name: &[u8]) -> Result<(), UnpackError> {
        let (sc, tc) = (join(s.path, name), join(t.path, name));
        let s_st =
            rfs::statat(s.fd, os(name), AtFlags::SYMLINK_NOFOLLOW).map_err(errno(&sc, "stat"))?;
        let t_st = match rfs::statat(t.fd, os(name), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::NOENT) => return self.rename(s, t, name),
            Err(e) => return Err(errno(&tc, "stat")(e)),
        };
        let opaque = |d: &OwnedFd, at: &[u8]| -> Result<(), UnpackError> {
            let d = open_dir(d, name).map_err(errno(at, "open"))?;
            set_opaque(&d).map_err(fs_err(at, "set opaque"))
        };
        // A whiteout hides only the layers below, wherever it stands in the tar.
        if is_whiteout(&s_st) {
            if is_dir(&t_st) {
                opaque(t.fd, &tc)?;
            }
            return rfs::unlinkat(s.fd, os(name), AtFlags::empty()).map_err(errno(&sc, "remove"));
        }
        if is_whiteout(&t_st) {
            rfs::unlinkat(t.fd, os(name), AtFlags::empty()).map_err(errno(&tc, "remove"))?;
            self.rename(s, t, name)?;
            return if is_dir(&s_st) {
                opaque(t.fd, &tc)
            } else {
                Ok(())
            };
        }
        let (s_seq, t_seq) = (self.order.of(s.ino, name), self.order.of(t.ino, name));
        if is_dir(&s_st) && is_dir(&t_st) {
            let sd = open_dir(s.fd, name).map_err(errno(&sc, "open"))?;
            let td = open_dir(t.fd, name).map_err(errno(&tc, "open"))?;
            self.merge(&sd, &sc, &td, &tc)?;
            let s_explicit = !self.view.transparent.contains(&sc);
            let t_implicit = self.view.transparent.contains(&tc);
            if s_explicit && (t_implicit || s_seq > t_seq) {
                copy_meta(&sd, &td, self.same_owner).map_err(fs_err(&tc, "copy metadata"))?;
                self.unpend(&tc);
            }
            if is_opaque(&sd) {
                set_opaque(&td).map_err(fs_err(&tc, "set opaque"))?;
            }
            self.unpend(&sc);
            drop(sd);
            rfs::unlinkat(s.fd, os(name), AtFlags::REMOVEDIR).map_err(errno(&sc, "remove"))
        } else if s_seq >= t_seq {
            self.unpend_under(&tc);
            remove_all(t.fd, name).map_err(fs_err(&tc, "replace"))?;
            self.rename(s, t, name)
        } else {
            self.unpend_under(&sc);
            remove_all(s.fd, name).map_err(fs_err(&sc, "remove"))
        }
    }

    fn rename(&mut self, s: &Side<'_>, t: &Side<'_>, name: &[u8]) -> Result<(), UnpackError> {
        rfs::renameat(s.fd, os(name), t.fd, os(name))
            .map_err(errno(&join(t.path, name), "move"))?;
        self.order.moved(s.ino, t.ino, name);
        Ok(())
    }

    /// The layer's directory at the physical path `p`, made where missing: with the
    /// metadata of the directory below it, or 0755 root where no layer has one.
    fn upper_dir(&mut self, p: &[u8]) -> Result<OwnedFd, UnpackError> {
        let mut cur = self
            .view
            .open_in(0, b"", OFlags::RDONLY | OFlags::DIRECTORY)
            .map_err(fs_err(p, "open"))?
            .ok_or_else(|| fs_err(p, "open")(Errno::NOENT.into()))?;
        if p.is_empty() {
            return Ok(cur);
        }
        let mut end = 0;
        for (i, part) in p.split(|&b| b == b'/').enumerate() {
            end += part.len() + usize::from(i > 0);
            let here = &p[..end];
            match rfs::statat(&cur, os(part), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) if is_dir(&st) => {}
                Ok(st) if is_whiteout(&st) => {
                    // The layer deleted it: what it writes there now hides the lower one.
                    self.touch(&cur).map_err(fs_err(here, "stat"))?;
                    rfs::unlinkat(&cur, os(part), AtFlags::empty())
                        .map_err(errno(here, "remove"))?;
                    rfs::mkdirat(&cur, os(part), Mode::from_raw_mode(0o755))
                        .map_err(errno(here, "mkdir"))?;
                    let d = open_dir(&cur, part).map_err(errno(here, "open"))?;
                    set_opaque(&d).map_err(fs_err(here, "set opaque"))?;
                }
                Ok(_) => return Err(errno(here, "mkdir")(Errno::NOTDIR)),
                Err(Errno::NOENT) => {
                    self.touch(&cur).map_err(fs_err(here, "stat"))?;
                    rfs::mkdirat(&cur, os(part), Mode::from_raw_mode(0o755))
                        .map_err(errno(here, "mkdir"))?;
                    if let Found::Dir(layers) = self
                        .view
                        .entry(here, true)
                        .map_err(fs_err(here, "look below"))?
                    {
                        let src = self
                            .view
                            .open_in(layers[0], here, OFlags::RDONLY | OFlags::DIRECTORY)
                            .map_err(fs_err(here, "open below"))?;
                        let dst = open_dir(&cur, part).map_err(errno(here, "open"))?;
                        if let Some(src) = src {
                            copy_meta(&src, &dst, self.same_owner)
                                .map_err(fs_err(here, "copy metadata"))?;
                        }
                    }
                }
                Err(e) => return Err(errno(here, "stat")(e)),
            }
            cur = open_dir(&cur, part).map_err(errno(here, "open"))?;
        }
        Ok(cur)
    }

    /// The hard links of the layer to `target`, which was not in the layer when the tar
    /// made them.
    fn settle_links(&mut self, target: &[u8], links: Vec<DeferredLink>) -> Result<(), UnpackError> {
        let live: Vec<DeferredLink> = links
            .into_iter()
            .filter(|l| {
                rfs::statat(&*l.parent, os(&l.name), AtFlags::SYMLINK_NOFOLLOW)
                    .is_ok_and(|st| st.st_ino == l.ino)
            })
            .collect();
        let Some(first) = live.first() else {
            return Ok(()); // every one of them was replaced by a later entry
        };
        let entry = first.entry.clone();
        let no_target = |why: &str| {
            refused(
                &entry,
                format!("hard link target {} {why}", display(target)),
            )
        };
        let (tparent, tname) = split(target);
        let (dir, found) = self
            .view
            .resolve(tparent, true)
            .map_err(|e| no_target(&format!("cannot be reached: {e}")))?;
        if !matches!(found, Found::Dir(_)) {
            return Err(no_target("is in no layer below"));
        }
        let path = join(&dir, tname);
        // What the layer itself has there, if it was made before the link.
        if let Some(st) = self.view.stat_in(0, &path).map_err(fs_err(&path, "stat"))? {
            let (p, n) = split(&path);
            let parent = self.view.stat_in(0, p).map_err(fs_err(p, "stat"))?;
            let earlier = parent.is_some_and(|ps| self.order.of(ps.st_ino, n) < first.seq);
            let placeholder = live.iter().any(|l| l.ino == st.st_ino);
            if earlier && !placeholder {
                if is_whiteout(&st) {
                    return Err(no_target("is deleted by this layer"));
                }
                if is_dir(&st) {
                    return Err(no_target("is a directory"));
                }
                let dir = self.upper_dir(p)?;
                return self.link_all(&live, (&dir, n), &[]);
            }
        }
        let (l, st) = match self
            .view
            .entry(&path, true)
            .map_err(fs_err(&path, "look below"))?
        {
            Found::Other(l, st) => (l, st),
            Found::Dir(_) => return Err(no_target("is a directory")),
            Found::Missing => return Err(no_target("is in no layer below")),
        };
        let names = self
            .visible_names(l, &path, &st)
            .map_err(fs_err(&path, "find other names"))?;
        let anchor = &live[0];
        self.fill(anchor, l, &path, &st)?;
        self.link_all(&live[1..], (&anchor.parent, &anchor.name), &names)
    }

    /// `path` of layer `l` and its other names there (same inode) that the merged tree
    /// still shows as that file: they join the group of links. Physical paths.
    fn visible_names(&self, l: usize, path: &[u8], st: &Stat) -> io::Result<Vec<Vec<u8>>> {
        let mut out = vec![path.to_vec()];
        if st.st_nlink >= 2 && !is_dir(st) {
            self.other_names(l, path, st, &mut out)?;
        }
        let mut visible = Vec::new();
        for q in out {
            match self.view.entry(&q, false)? {
                Found::Other(ql, qst) if ql == l && qst.st_ino == st.st_ino => visible.push(q),
                _ => {}
            }
        }
        Ok(visible)
    }

    /// The other names of `path`'s file in layer `l`: a walk of that layer, one open
    /// directory at a time.
    fn other_names(
        &self,
        l: usize,
        path: &[u8],
        st: &Stat,
        out: &mut Vec<Vec<u8>>,
    ) -> io::Result<()> {
        let mut todo = vec![Vec::new()];
        while let Some(p) = todo.pop() {
            let Some(dir) = self
                .view
                .open_in(l, &p, OFlags::RDONLY | OFlags::DIRECTORY)?
            else {
                continue;
            };
            for e in rfs::Dir::read_from(&dir)? {
                let e = e?;
                let n = e.file_name().to_bytes();
                if n == b"." || n == b".." {
                    continue;
                }
                let q = join(&p, n);
                if e.file_type() == FileType::Directory {
                    todo.push(q);
                } else if e.ino() == st.st_ino && q != path {
                    out.push(q);
                }
            }
        }
        Ok(())
    }

    /// Make the placeholder of `link` a copy of `path` of layer `l` (content, owner,
    /// mode, xattrs, mtime).
    fn fill(
        &mut self,
        link: &DeferredLink,
        l: usize,
        path: &[u8],
        st: &Stat,
    ) -> Result<(), UnpackError> {
        let at = &link.entry;
        let ft = FileType::from_raw_mode(st.st_mode);
        if ft == FileType::RegularFile {
            let src = self
                .view
                .open_in(l, path, OFlags::RDONLY)
                .map_err(fs_err(path, "open below"))?
                .ok_or_else(|| fs_err(path, "open below")(Errno::NOENT.into()))?;
            let dst = rfs::openat(
                &*link.parent,
                os(&link.name),
                OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(errno(at, "open"))?;
            let (src, dst) = (File::from(src), File::from(dst));
            copy_data(&src, &dst).map_err(fs_err(at, "copy"))?;
            return copy_meta(&src, &dst, self.same_owner).map_err(fs_err(at, "copy metadata"));
        }
        // A symlink, device or fifo: made anew in the placeholder's place.
        self.touch(&*link.parent).map_err(fs_err(at, "stat"))?;
        rfs::unlinkat(&*link.parent, os(&link.name), AtFlags::empty())
            .map_err(errno(at, "replace"))?;
        let (p, n) = (&*link.parent, os(&link.name));
        match ft {
            FileType::Symlink => {
                let t = self
                    .view
                    .read_link(l, path)
                    .map_err(fs_err(path, "read link"))?;
                rfs::symlinkat(os(&t), p, n).map_err(errno(at, "symlink"))?;
            }
            _ => rfs::mknodat(p, n, ft, Mode::from_raw_mode(0o600), st.st_rdev)
                .map_err(errno(at, "mknod"))?,
        }
        if self.same_owner {
            rfs::chownat(
                p,
                n,
                Some(rfs::Uid::from_raw(st.st_uid)),
                Some(rfs::Gid::from_raw(st.st_gid)),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(errno(at, "chown"))?;
        }
        if ft != FileType::Symlink {
            rfs::chmodat(
                p,
                n,
                Mode::from_raw_mode(st.st_mode & 0o7777),
                AtFlags::empty(),
            )
            .map_err(errno(at, "chmod"))?;
        }
        let times = stat_times(st);
        rfs::utimensat(p, n, &times, AtFlags::SYMLINK_NOFOLLOW).map_err(errno(at, "set mtime"))
    }

    /// Replace each of `links`' placeholders, and make each of `names` (physical paths,
    /// their directories made as needed), a hard link to `anchor`.
    fn link_all(
        &mut self,
        links: &[DeferredLink],
        anchor: (&OwnedFd, &[u8]),
        names: &[Vec<u8>],
    ) -> Result<(), UnpackError> {
        for link in links {
            self.touch(&*link.parent)
                .map_err(fs_err(&link.entry, "stat"))?;
            rfs::unlinkat(&*link.parent, os(&link.name), AtFlags::empty())
                .map_err(errno(&link.entry, "replace"))?;
            rfs::linkat(
                anchor.0,
                os(anchor.1),
                &*link.parent,
                os(&link.name),
                AtFlags::empty(),
            )
            .map_err(errno(&link.entry, "hard link"))?;
        }
        for q in names {
            let (p, n) = split(q);
            let dir = self.upper_dir(p)?;
            self.touch(&dir).map_err(fs_err(p, "stat"))?;
            rfs::linkat(anchor.0, os(anchor.1), &dir, os(n), AtFlags::empty())
                .map_err(errno(q, "hard link"))?;
        }
        Ok(())
    }
}

/// `st`'s mtime, for both times, as the applier sets them.
fn stat_times(st: &Stat) -> Timestamps {
    times((st.st_mtime, st.st_mtime_nsec as u32))
}

/// Copy a file's bytes, leaving holes where whole blocks are zero.
fn copy_data(src: &File, dst: &File) -> io::Result<()> {
    let mut buf = vec![0u8; 256 << 10];
    let (end, _) = copy_with_holes(&mut buf, dst, &mut &*src, 0, None)?;
    dst.set_len(end)
}

/// Give `dst` the owner (when `same_owner`), mode, xattrs and times of `src`; both are
/// open files or directories.
fn copy_meta(src: &impl AsFd, dst: &impl AsFd, same_owner: bool) -> io::Result<()> {
    let st = rfs::fstat(src)?;
    if same_owner {
        rfs::fchown(
            dst,
            Some(rfs::Uid::from_raw(st.st_uid)),
            Some(rfs::Gid::from_raw(st.st_gid)),
        )?;
    }
    // After chown, which clears setuid/setgid.
    rfs::fchmod(dst, Mode::from_raw_mode(st.st_mode & 0o7777))?;
    let mut names = vec![0u8; 64 << 10];
    let n = rfs::flistxattr(src, &mut names)?;
    for name in names[..n].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        if skip_xattr(name) {
            continue;
        }
        let mut value = vec![0u8; 64 << 10];
        let len = rfs::fgetxattr(src, os(name), &mut value)?;
        rfs::fsetxattr(dst, os(name), &value[..len], XattrFlags::empty())?;
    }
    Ok(rfs::futimens(dst, &stat_times(&st))?)
}
