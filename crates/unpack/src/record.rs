//! The record that applying a layer hands to settling it ([`LowerRefs`]): what the
//! layer named of the layers below it, and the order in which it made its entries.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use crate::path::display;

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

    pub(crate) fn of(&self, parent_ino: u64, name: &[u8]) -> u64 {
        self.seqs
            .get(&(parent_ino, name.to_vec()))
            .copied()
            .unwrap_or(0)
    }

    pub(crate) fn moved(&mut self, from_ino: u64, to_ino: u64, name: &[u8]) {
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
