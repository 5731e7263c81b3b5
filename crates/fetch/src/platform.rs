//! Platforms (`os/arch[/variant]`) and the choice of one manifest from an index, with the
//! same normalisation containerd applies (`aarch64` is `arm64`, `arm64` means `arm64/v8`).

use std::fmt;
use std::str::FromStr;

use crate::error::FetchError;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    /// The platform of this process, as Go's `GOOS/GOARCH` names it.
    pub fn host() -> Platform {
        let arch = normalize_arch(std::env::consts::ARCH);
        Platform {
            os: std::env::consts::OS.to_string(),
            variant: default_variant(&arch).map(str::to_string),
            architecture: arch,
        }
    }

    /// Does a manifest's platform (from an index) satisfy this wanted platform?
    /// A wanted platform without a variant accepts any variant of its architecture.
    pub fn matches(&self, os: &str, architecture: &str, variant: Option<&str>) -> bool {
        let arch = normalize_arch(architecture);
        if !os.eq_ignore_ascii_case(&self.os) || arch != self.architecture {
            return false;
        }
        let have = variant
            .filter(|v| !v.is_empty())
            .or_else(|| default_variant(&arch));
        match (&self.variant, have) {
            (None, _) => true,
            (Some(want), Some(have)) => want == have,
            (Some(want), None) => Some(want.as_str()) == default_variant(&arch),
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl FromStr for Platform {
    type Err = FetchError;

    fn from_str(s: &str) -> Result<Self, FetchError> {
        let parts: Vec<&str> = s.split('/').collect();
        let ok = |p: &str| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        };
        if !(2..=3).contains(&parts.len()) || !parts.iter().all(|p| ok(p)) {
            return Err(FetchError::InvalidPlatform(s.to_string()));
        }
        let architecture = normalize_arch(&parts[1].to_ascii_lowercase());
        let variant = parts
            .get(2)
            .map(|v| v.to_ascii_lowercase())
            .or_else(|| default_variant(&architecture).map(str::to_string));
        Ok(Platform {
            os: parts[0].to_ascii_lowercase(),
            architecture,
            variant,
        })
    }
}

fn normalize_arch(a: &str) -> String {
    match a {
        "x86_64" | "x86-64" => "amd64",
        "aarch64" => "arm64",
        "i386" | "i686" | "x86" => "386",
        "armhf" | "armel" | "arm" => "arm",
        "powerpc64" => "ppc64",
        "powerpc64le" => "ppc64le",
        "loongarch64" => "loong64",
        other => other,
    }
    .to_string()
}

/// The variant an architecture implies when none is written (containerd's rules).
fn default_variant(arch: &str) -> Option<&'static str> {
    match arch {
        "arm64" => Some("v8"),
        "arm" => Some("v7"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_match() {
        let p: Platform = "linux/amd64".parse().unwrap();
        assert_eq!(p.to_string(), "linux/amd64");
        assert!(p.matches("linux", "amd64", None));
        assert!(p.matches("linux", "x86_64", None));
        assert!(!p.matches("linux", "arm64", Some("v8")));
        assert!(!p.matches("windows", "amd64", None));

        let a: Platform = "linux/arm64".parse().unwrap();
        assert_eq!(a.to_string(), "linux/arm64/v8");
        assert!(a.matches("linux", "arm64", Some("v8")));
        assert!(a.matches("linux", "arm64", None));
        assert!(a.matches("linux", "aarch64", None));
        let a7: Platform = "linux/arm/v6".parse().unwrap();
        assert!(!a7.matches("linux", "arm", None));
        assert!(a7.matches("linux", "arm", Some("v6")));
    }

    #[test]
    fn invalid_platforms() {
        for s in ["linux", "linux/", "/amd64", "a/b/c/d", "linux/am d64"] {
            assert!(s.parse::<Platform>().is_err(), "{s}");
        }
    }

    #[test]
    fn host_is_sane() {
        let h = Platform::host();
        assert_eq!(h.os, "linux");
        assert!(h.matches("linux", std::env::consts::ARCH, None));
    }
}
