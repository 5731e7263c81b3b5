//! Image references, parsed and normalised the way Docker and containerd do
//! (`github.com/distribution/reference`): `centos` is `docker.io/library/centos:latest`.

use std::fmt;
use std::str::FromStr;

use rdpull_verify::Digest;

use crate::error::FetchError;

/// The registry that short names resolve to.
pub(crate) const DEFAULT_REGISTRY: &str = "docker.io";
/// The host that actually serves `docker.io`.
pub(crate) const DOCKER_HUB_HOST: &str = "registry-1.docker.io";
const MAX_NAME_LEN: usize = 255;

/// A fully qualified image reference: registry, repository and a tag, a digest or both.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl Reference {
    /// The registry as named (`docker.io`, `127.0.0.1:5000`).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The host (and port) to talk to: `docker.io` is served by `registry-1.docker.io`.
    pub fn registry_host(&self) -> &str {
        if self.registry == DEFAULT_REGISTRY {
            DOCKER_HUB_HOST
        } else {
            &self.registry
        }
    }

    pub fn repository(&self) -> &str {
        &self.repository
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// What to put after `/manifests/`: the digest if there is one, else the tag.
    pub fn manifest_reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_string(),
        }
    }

    /// The same repository at another digest (for an index's child manifest).
    pub fn with_digest(&self, digest: Digest) -> Reference {
        Reference {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            tag: None,
            digest: Some(digest),
        }
    }

    /// `registry/repository`, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl FromStr for Reference {
    type Err = FetchError;

    fn from_str(s: &str) -> Result<Self, FetchError> {
        let bad = |why: &str| FetchError::InvalidReference {
            reference: s.chars().take(300).collect(),
            why: why.to_string(),
        };
        if s.is_empty() {
            return Err(bad("empty"));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((rest, d)) => (
                rest,
                Some(d.parse::<Digest>().map_err(|e| bad(&e.to_string()))?),
            ),
            None => (s, None),
        };
        // A tag follows the last ':' unless that ':' belongs to a host:port.
        let (name, tag) = match rest.rfind(':') {
            Some(i) if !rest[i + 1..].contains('/') => (&rest[..i], Some(&rest[i + 1..])),
            _ => (rest, None),
        };
        if let Some(t) = tag {
            if !valid_tag(t) {
                return Err(bad("invalid tag"));
            }
        }
        let (registry, path) = split_registry(name);
        if !valid_domain(&registry) {
            return Err(bad("invalid registry host"));
        }
        if path.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(bad("repository name must be lowercase"));
        }
        if !path.split('/').all(valid_path_component) {
            return Err(bad("invalid repository name"));
        }
        let repository = if registry == DEFAULT_REGISTRY && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        if registry.len() + 1 + repository.len() > MAX_NAME_LEN {
            return Err(bad("name longer than 255 characters"));
        }
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, Some(_)) => None,
            (None, None) => Some("latest".to_string()),
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }
}

/// `host[:port]/path` → (registry, path): the first component is a registry only if it
/// looks like a host (a dot, a port, or `localhost`), as the docker CLI decides.
fn split_registry(name: &str) -> (String, String) {
    let (registry, path) = match name.split_once('/') {
        Some((first, path))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            (first, path)
        }
        _ => (DEFAULT_REGISTRY, name),
    };
    let registry = if registry == "index.docker.io" {
        DEFAULT_REGISTRY
    } else {
        registry
    };
    (registry.to_string(), path.to_string())
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn valid_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !is_alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-')) {
            return false;
        }
    }
    true
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// `[\w][\w.-]{0,127}`
fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|&x| x.is_ascii_alphanumeric() || matches!(x, b'_' | b'.' | b'-'))
}

/// A host name, IPv4 address or bracketed IPv6 address, with an optional port.
fn valid_domain(d: &str) -> bool {
    let (host, port) = if let Some(rest) = d.strip_prefix('[') {
        match rest.split_once(']') {
            Some((v6, after)) => {
                if v6.parse::<std::net::Ipv6Addr>().is_err() {
                    return false;
                }
                match after {
                    "" => return true,
                    p => match p.strip_prefix(':') {
                        Some(p) => ("x", Some(p)),
                        None => return false,
                    },
                }
            }
            None => return false,
        }
    } else {
        match d.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (d, None),
        }
    };
    if let Some(p) = port {
        if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
    }
    !host.is_empty()
        && host.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|&x| x.is_ascii_alphanumeric() || x == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> String {
        s.parse::<Reference>().unwrap().to_string()
    }

    #[test]
    fn normalises_like_docker() {
        assert_eq!(norm("centos"), "docker.io/library/centos:latest");
        assert_eq!(norm("centos:7"), "docker.io/library/centos:7");
        assert_eq!(norm("user/app"), "docker.io/user/app:latest");
        assert_eq!(
            norm("index.docker.io/user/app"),
            "docker.io/user/app:latest"
        );
        assert_eq!(norm("docker.io/centos"), "docker.io/library/centos:latest");
        assert_eq!(norm("localhost/app:1"), "localhost/app:1");
        assert_eq!(norm("localhost:5000/a/b/c"), "localhost:5000/a/b/c:latest");
        assert_eq!(
            norm("127.0.0.1:5000/debian:bookworm"),
            "127.0.0.1:5000/debian:bookworm"
        );
        assert_eq!(norm("[::1]:5000/x:y"), "[::1]:5000/x:y");
        assert_eq!(norm("a.b-c/x__y/z-w.v:t.1-2_3"), "a.b-c/x__y/z-w.v:t.1-2_3");
    }

    #[test]
    fn digests() {
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let r: Reference = format!("127.0.0.1:5000/debian@{d}").parse().unwrap();
        assert_eq!(r.tag(), None);
        assert_eq!(r.manifest_reference(), d);
        assert_eq!(r.to_string(), format!("127.0.0.1:5000/debian@{d}"));
        let r: Reference = format!("debian:12@{d}").parse().unwrap();
        assert_eq!(r.tag(), Some("12"));
        assert_eq!(r.manifest_reference(), d);
    }

    #[test]
    fn hosts() {
        let r: Reference = "centos".parse().unwrap();
        assert_eq!(r.registry(), "docker.io");
        assert_eq!(r.registry_host(), "registry-1.docker.io");
        let r: Reference = "127.0.0.1:5000/multi:latest".parse().unwrap();
        assert_eq!(r.registry_host(), "127.0.0.1:5000");
        assert_eq!(r.repository(), "multi");
    }

    #[test]
    fn invalid() {
        for (s, why) in [
            ("", "empty"),
            ("Centos", "repository name must be lowercase"),
            ("docker.io/UPPER/x", "repository name must be lowercase"),
            ("a//b", "invalid repository name"),
            ("a/-b", "invalid repository name"),
            ("a..b/c", "invalid registry host"),
            ("x:", "invalid tag"),
            ("x:-tag", "invalid tag"),
            (
                "x@sha256:123",
                "invalid digest \"sha256:123\": wrong length",
            ),
            ("host:99999999/x", "invalid registry host"),
            ("a/b c", "invalid repository name"),
        ] {
            match s.parse::<Reference>() {
                Err(FetchError::InvalidReference { why: w, .. }) => assert_eq!(w, why, "{s}"),
                other => panic!("{s}: {other:?}"),
            }
        }
        let long = format!("x/{}", "a".repeat(260));
        assert!(long.parse::<Reference>().is_err());
    }
}
