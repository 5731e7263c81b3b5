//! Settling hard links to files of the layers below: the first link becomes a copy of
//! the lower file, and the other links and the file's other visible names link to it.

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, Stat};
use rustix::io::Errno;

use super::{errno, fs_err, is_dir, join, refused, Settler};
use crate::error::UnpackError;
use crate::files::{copy_data, copy_meta, stat_times};
use crate::merged::Found;
use crate::overlay::is_whiteout;
use crate::path::{display, os, split};
use crate::record::DeferredLink;

impl Settler {
    /// The hard links of the layer to `target`, which was not in the layer when the tar
    /// made them.
    pub(super) fn settle_links(
        &mut self,
        target: &[u8],
        links: Vec<DeferredLink>,
    ) -> Result<(), UnpackError> {
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
    pub(super) fn visible_names(
        &self,
        l: usize,
        path: &[u8],
        st: &Stat,
    ) -> io::Result<Vec<Vec<u8>>> {
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
    pub(super) fn other_names(
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
    pub(super) fn fill(
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
    pub(super) fn link_all(
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
