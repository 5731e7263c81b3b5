//! ChainIDs: the identity of a stack of layers, as the OCI image spec defines it.

use std::fmt;

use rdpull_verify::Digest;

/// `ChainID(L0) = DiffID(L0)`, `ChainID(L0..Ln) = sha256(ChainID(L0..Ln-1) + " " + DiffID(Ln))`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct ChainId(Digest);

impl ChainId {
    /// The ChainIDs of every prefix of `diff_ids`, bottom layer first.
    pub fn chain(diff_ids: &[Digest]) -> Vec<ChainId> {
        let mut out: Vec<ChainId> = Vec::with_capacity(diff_ids.len());
        for d in diff_ids {
            let next = match out.last() {
                None => d.clone(),
                Some(ChainId(parent)) => Digest::sha256_of(format!("{parent} {d}").as_bytes()),
            };
            out.push(ChainId(next));
        }
        out
    }

    pub fn digest(&self) -> &Digest {
        &self.0
    }
}

impl fmt::Display for ChainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Debug for ChainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_image_spec_definition() {
        let a: Digest = "sha256:a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4"
            .parse()
            .unwrap();
        let b: Digest = "sha256:0b1bca1d1f8e1c0e6d55ff9d6a5d0ff5c06cdc3d0fe9e2e4d4bbcc1a22e2e8d8"
            .parse()
            .unwrap();
        let c = ChainId::chain(&[a.clone(), b.clone()]);
        assert_eq!(c[0].digest(), &a);
        // Computed independently: python3 hashlib.sha256(f"{a} {b}".encode()).
        assert_eq!(
            c[1].to_string(),
            "sha256:8b08d13e34c865cda0238ab711290b5c2a19cc0b1a925f838ebb911710b2920c"
        );
        assert!(ChainId::chain(&[]).is_empty());
    }
}
