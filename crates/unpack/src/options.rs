//! How a layer is applied and settled ([`ApplyOptions`]): read by both, owned by neither.

/// How to apply a layer.
#[derive(Clone, Debug)]
pub struct ApplyOptions {
    /// Set owners from the tar headers (needs root; without it files belong to the caller).
    pub same_owner: bool,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            same_owner: rustix::process::geteuid().is_root(),
        }
    }
}
