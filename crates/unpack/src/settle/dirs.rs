//! Settling the directories a layer made only as parents of its entries: they take the
//! metadata of the directory below, or move to where a lower symlink leads and merge
//! there, the entry the tar made later winning where both sides have a name.

use std::collections::HashSet;
use std::os::fd::OwnedFd;

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use super::{errno, fs_err, is_dir, is_under, join, refused, Settler, Side};
use crate::error::UnpackError;
use crate::files::{copy_meta, open_dir, remove_all};
use crate::merged::Found;
use crate::overlay::{is_opaque, is_whiteout, set_opaque};
use crate::path::{os, split};

impl Settler {
    pub(super) fn settle_dirs(&mut self) -> Result<(), UnpackError> {
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
    pub(super) fn settle_dir(&mut self, p: &[u8]) -> Result<bool, UnpackError> {
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
    pub(super) fn dissolve(&mut self, p: &[u8], l: usize) -> Result<(), UnpackError> {
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
    pub(super) fn merge(
        &mut self,
        s: &OwnedFd,
        sp: &[u8],
        t: &OwnedFd,
        tp: &[u8],
    ) -> Result<(), UnpackError> {
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

    pub(super) fn merge_name(
        &mut self,
        s: &Side<'_>,
        t: &Side<'_>,
        name: &[u8],
    ) -> Result<(), UnpackError> {
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

    pub(super) fn rename(
        &mut self,
        s: &Side<'_>,
        t: &Side<'_>,
        name: &[u8],
    ) -> Result<(), UnpackError> {
        rfs::renameat(s.fd, os(name), t.fd, os(name))
            .map_err(errno(&join(t.path, name), "move"))?;
        self.order.moved(s.ino, t.ino, name);
        Ok(())
    }

    /// The layer's directory at the physical path `p`, made where missing: with the
    /// metadata of the directory below it, or 0755 root where no layer has one.
    pub(super) fn upper_dir(&mut self, p: &[u8]) -> Result<OwnedFd, UnpackError> {
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
}
