//! A stack of layer directories read as overlayfs merges them, without mounting them.
//!
//! Lookups follow overlayfs's rules: the topmost layer with an entry at a path decides
//! it; a whiteout deletes the path from the layers below; a directory merges with the
//! directories of that name below it until one is opaque. Every open is `openat2` with
//! `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS` on a layer's root, so nothing outside the
//! layer directories is read; symlinks are followed only by [`MergedView::resolve`],
//! component by component in the merged tree and clamped at its root.

use std::collections::{HashSet, VecDeque};
use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;

use rustix::fs::{self as rfs, FileType, Mode, OFlags, ResolveFlags, Stat};
use rustix::io::Errno;

use crate::overlay::{is_opaque, is_whiteout};
use crate::path::os;

/// Linux's own limit for symlinks followed in one lookup.
const MAX_SYMLINKS: usize = 40;

/// What the merged tree has at a path.
#[derive(Debug)]
pub(crate) enum Found {
    /// Nothing, or a whiteout deleted it.
    Missing,
    /// A directory, merged from these layers (top first).
    Dir(Vec<usize>),
    /// A non-directory of this layer.
    Other(usize, Box<Stat>),
}

pub(crate) struct MergedView {
    /// Layer roots, top first.
    layers: Vec<OwnedFd>,
    /// Directories of the top layer that do not hide what the layers below have at their
    /// path (they are settled later); physical paths.
    pub(crate) transparent: HashSet<Vec<u8>>,
}

impl MergedView {
    pub(crate) fn open(layers: &[&Path]) -> io::Result<MergedView> {
        let layers = layers
            .iter()
            .map(|p| {
                rfs::open(
                    *p,
                    OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", p.display())))
            })
            .collect::<io::Result<_>>()?;
        Ok(MergedView {
            layers,
            transparent: HashSet::new(),
        })
    }

    /// Open `path` of layer `layer` (no symlink followed, the last one opened as itself
    /// with `O_PATH | O_NOFOLLOW`); `None` when the layer has nothing there.
    pub(crate) fn open_in(
        &self,
        layer: usize,
        path: &[u8],
        flags: OFlags,
    ) -> io::Result<Option<OwnedFd>> {
        let p: &[u8] = if path.is_empty() { b"." } else { path };
        match rfs::openat2(
            &self.layers[layer],
            os(p),
            flags | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
        ) {
            Ok(fd) => Ok(Some(fd)),
            Err(Errno::NOENT) | Err(Errno::NOTDIR) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// `path`'s entry in layer `layer` itself, not followed.
    pub(crate) fn stat_in(&self, layer: usize, path: &[u8]) -> io::Result<Option<Stat>> {
        match self.open_in(layer, path, OFlags::PATH | OFlags::NOFOLLOW)? {
            Some(fd) => Ok(Some(rfs::fstat(&fd)?)),
            None => Ok(None),
        }
    }

    /// What the merged tree has at the physical `path` (no symlink followed). With
    /// `below_top`, the last component is looked up in the layers below the top one.
    pub(crate) fn entry(&self, path: &[u8], below_top: bool) -> io::Result<Found> {
        let mut layers: Vec<usize> = (0..self.layers.len()).collect();
        if path.is_empty() {
            return Ok(Found::Dir(layers));
        }
        let parts: Vec<&[u8]> = path.split(|&b| b == b'/').collect();
        let mut end = 0;
        for (i, part) in parts.iter().enumerate() {
            end += part.len() + usize::from(i > 0);
            let last = i + 1 == parts.len();
            let skip_top = last && below_top;
            match self.lookup(&layers, &path[..end], skip_top)? {
                Found::Dir(below) if !last => layers = below,
                found if last => return Ok(found),
                _ => return Ok(Found::Missing),
            }
        }
        unreachable!("a non-empty path has a last component")
    }

    /// One component: `path` in the `layers` whose parent directory merges there.
    fn lookup(&self, layers: &[usize], path: &[u8], skip_top: bool) -> io::Result<Found> {
        let mut dirs = Vec::new();
        let mut transparent_top = false;
        for &l in layers {
            if l == 0 && skip_top {
                continue;
            }
            let Some(st) = self.stat_in(l, path)? else {
                continue;
            };
            if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                if l == 0 && self.transparent.contains(path) {
                    transparent_top = true;
                    continue;
                }
                dirs.push(l);
                if self.dir_is_opaque(l, path)? {
                    break;
                }
            } else if dirs.is_empty() && !is_whiteout(&st) {
                return Ok(Found::Other(l, Box::new(st)));
            } else {
                break;
            }
        }
        if transparent_top {
            dirs.insert(0, 0);
        }
        Ok(if dirs.is_empty() {
            Found::Missing
        } else {
            Found::Dir(dirs)
        })
    }

    fn dir_is_opaque(&self, layer: usize, path: &[u8]) -> io::Result<bool> {
        let dir = self.open_in(layer, path, OFlags::RDONLY | OFlags::DIRECTORY)?;
        Ok(dir.is_some_and(|d| is_opaque(&d)))
    }

    /// The target of the symlink at `path` of layer `layer`.
    pub(crate) fn read_link(&self, layer: usize, path: &[u8]) -> io::Result<Vec<u8>> {
        let fd = self
            .open_in(layer, path, OFlags::PATH | OFlags::NOFOLLOW)?
            .ok_or(Errno::NOENT)?;
        Ok(rfs::readlinkat(&fd, "", Vec::new())?.into_bytes())
    }

    /// Resolve `path` in the merged tree, following symlinks as the kernel would if the
    /// merged tree were `/` (the last component's too, with `follow_last`). Returns the
    /// physical path and what is there. Components below a missing directory are taken
    /// as they are named; a non-directory on the way is `ENOTDIR`.
    pub(crate) fn resolve(&self, path: &[u8], follow_last: bool) -> io::Result<(Vec<u8>, Found)> {
        let mut todo: VecDeque<Vec<u8>> = path.split(|&b| b == b'/').map(<[u8]>::to_vec).collect();
        let mut out: Vec<Vec<u8>> = Vec::new();
        let mut missing_from: Option<usize> = None;
        let mut links = 0;
        while let Some(part) = todo.pop_front() {
            match &part[..] {
                b"" | b"." => continue,
                b".." => {
                    out.pop();
                    if missing_from.is_some_and(|m| out.len() < m) {
                        missing_from = None;
                    }
                    continue;
                }
                _ => {}
            }
            out.push(part);
            if missing_from.is_some() {
                continue;
            }
            let last = todo.iter().all(|p| p.is_empty() || p == b".");
            let here = out.join(&b'/');
            match self.entry(&here, false)? {
                Found::Other(l, st) if FileType::from_raw_mode(st.st_mode) == FileType::Symlink => {
                    if last && !follow_last {
                        continue;
                    }
                    links += 1;
                    if links > MAX_SYMLINKS {
                        return Err(Errno::LOOP.into());
                    }
                    let target = self.read_link(l, &here)?;
                    out.pop();
                    if target.first() == Some(&b'/') {
                        out.clear();
                    }
                    for part in target.split(|&b| b == b'/').rev() {
                        todo.push_front(part.to_vec());
                    }
                }
                Found::Other(..) if !last => return Err(Errno::NOTDIR.into()),
                Found::Missing => missing_from = Some(out.len()),
                _ => {}
            }
        }
        let path = out.join(&b'/');
        let found = match missing_from {
            Some(_) => Found::Missing,
            None => self.entry(&path, false)?,
        };
        Ok((path, found))
    }
}
