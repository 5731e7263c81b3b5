//! Seccomp profiles as `docker run` takes them: Docker's default, `unconfined`, or a
//! profile file in Docker's JSON format. A profile is resolved for one container as
//! Docker resolves it (rules kept or dropped by the container's capabilities, this
//! machine's architecture and kernel; the native architecture with its
//! sub-architectures) into the runtime spec's `linux.seccomp`, which runc, crun and the
//! built-in launcher ([`crate::launch`]) all load. This module does not load filters.

mod default;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::SpecError;

/// `--security-opt seccomp=...`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum SeccompProfile {
    /// Docker's default profile.
    #[default]
    Default,
    /// No filter.
    Unconfined,
    /// A profile in Docker's JSON format.
    File(PathBuf),
}

/// A profile in Docker's JSON format.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Profile {
    pub(crate) default_action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) default_errno_ret: Option<u32>,
    /// The older form: the architectures, as they are.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) architectures: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) arch_map: Vec<ArchMap>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) flags: Vec<String>,
    #[serde(default)]
    pub(crate) syscalls: Vec<Rule>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ArchMap {
    pub(crate) architecture: String,
    #[serde(default)]
    pub(crate) sub_architectures: Vec<String>,
}

/// One rule: calls, an action, argument conditions, and when it applies.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Rule {
    #[serde(default)]
    pub(crate) names: Vec<String>,
    /// The oldest form names one call.
    #[serde(default, skip_serializing)]
    pub(crate) name: Option<String>,
    pub(crate) action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) errno_ret: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) args: Vec<Arg>,
    #[serde(default)]
    pub(crate) includes: Filter,
    #[serde(default)]
    pub(crate) excludes: Filter,
}

/// A condition on one argument, as the runtime spec has it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Arg {
    pub(crate) index: u32,
    pub(crate) value: u64,
    #[serde(default)]
    pub(crate) value_two: u64,
    pub(crate) op: String,
}

impl Arg {
    pub(crate) fn new(index: u32, value: u64, value_two: u64, op: &str) -> Arg {
        Arg {
            index,
            value,
            value_two,
            op: op.to_string(),
        }
    }
}

/// When a rule applies: capabilities (all of them), architectures (Go's names, one of
/// them), the least kernel version.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Filter {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) caps: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) arches: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) min_kernel: Option<String>,
}

/// The architectures a filter covers, by native one (Docker's table).
pub(crate) fn arch_map() -> Vec<ArchMap> {
    let m = |a: &str, subs: &[&str]| ArchMap {
        architecture: a.to_string(),
        sub_architectures: subs.iter().map(|s| s.to_string()).collect(),
    };
    vec![
        m("SCMP_ARCH_X86_64", &["SCMP_ARCH_X86", "SCMP_ARCH_X32"]),
        m("SCMP_ARCH_AARCH64", &["SCMP_ARCH_ARM"]),
        m("SCMP_ARCH_S390X", &["SCMP_ARCH_S390"]),
        m("SCMP_ARCH_RISCV64", &[]),
    ]
}

/// This machine's architecture: libseccomp's name and Go's (which profiles use).
fn native_arch() -> (&'static str, &'static str) {
    match std::env::consts::ARCH {
        "x86_64" => ("SCMP_ARCH_X86_64", "amd64"),
        "aarch64" => ("SCMP_ARCH_AARCH64", "arm64"),
        "s390x" => ("SCMP_ARCH_S390X", "s390x"),
        "riscv64" => ("SCMP_ARCH_RISCV64", "riscv64"),
        other => ("", other),
    }
}

/// The running kernel's version, `(major, minor)`.
fn kernel_version() -> (u32, u32) {
    let release = rustix::system::uname()
        .release()
        .to_string_lossy()
        .into_owned();
    parse_version(&release).unwrap_or((0, 0))
}

fn parse_version(v: &str) -> Option<(u32, u32)> {
    let mut parts = v.split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

impl Filter {
    fn matches(&self, caps: &[String], arch: &str, kernel: (u32, u32)) -> bool {
        self.caps.iter().all(|c| caps.contains(c))
            && (self.arches.is_empty() || self.arches.iter().any(|a| a == arch))
            && self
                .min_kernel
                .as_deref()
                .and_then(parse_version)
                .is_none_or(|min| kernel >= min)
    }

    fn excludes(&self, caps: &[String], arch: &str) -> bool {
        self.caps.iter().any(|c| caps.contains(c)) || self.arches.iter().any(|a| a == arch)
    }
}

impl Profile {
    /// Read a profile file (Docker's JSON format).
    pub(crate) fn load(path: &Path) -> Result<Profile, SpecError> {
        let shown = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| SpecError::SeccompProfileRead {
            path: shown.clone(),
            source,
        })?;
        let profile: Profile =
            serde_json::from_slice(&bytes).map_err(|source| SpecError::SeccompProfileFormat {
                path: shown.clone(),
                source,
            })?;
        if !profile.architectures.is_empty() && !profile.arch_map.is_empty() {
            return Err(SpecError::SeccompProfileArchitectures(shown));
        }
        Ok(profile)
    }

    /// The runtime spec's `linux.seccomp` for a container whose bounding set is `caps`.
    pub(crate) fn resolve(&self, caps: &[String]) -> serde_json::Value {
        let (native, go_arch) = native_arch();
        let kernel = kernel_version();
        let mut architectures = self.architectures.clone();
        for m in self.arch_map.iter().filter(|m| m.architecture == native) {
            architectures.push(m.architecture.clone());
            architectures.extend(m.sub_architectures.iter().cloned());
        }
        let mut syscalls = Vec::new();
        for r in &self.syscalls {
            if !r.includes.matches(caps, go_arch, kernel) || r.excludes.excludes(caps, go_arch) {
                continue;
            }
            let mut names = r.names.clone();
            names.extend(r.name.iter().cloned());
            let mut call = serde_json::json!({"names": names, "action": r.action});
            if let Some(e) = r.errno_ret {
                call["errnoRet"] = e.into();
            }
            if !r.args.is_empty() {
                call["args"] = serde_json::to_value(&r.args).expect("args serialize");
            }
            syscalls.push(call);
        }
        let mut seccomp = serde_json::json!({
            "defaultAction": self.default_action,
            "architectures": architectures,
            "syscalls": syscalls,
        });
        if let Some(e) = self.default_errno_ret {
            seccomp["defaultErrnoRet"] = e.into();
        }
        if !self.flags.is_empty() {
            seccomp["flags"] = self.flags.clone().into();
        }
        seccomp
    }
}

/// The spec's `linux.seccomp` for `profile` and a container whose bounding set is
/// `caps`; `None` for unconfined.
pub(crate) fn for_container(
    profile: &SeccompProfile,
    caps: &[String],
) -> Result<Option<serde_json::Value>, SpecError> {
    Ok(match profile {
        SeccompProfile::Unconfined => None,
        SeccompProfile::Default => Some(default::profile().resolve(caps)),
        SeccompProfile::File(path) => Some(Profile::load(path)?.resolve(caps)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names_with(spec: &serde_json::Value, action: &str) -> Vec<String> {
        let mut out: Vec<String> = spec["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["action"] == action && c.get("args").is_none())
            .flat_map(|c| c["names"].as_array().unwrap().iter())
            .map(|n| n.as_str().unwrap().to_string())
            .collect();
        out.sort();
        out
    }

    #[test]
    fn the_default_profile_follows_the_capabilities() {
        let default_caps: Vec<String> = crate::DEFAULT_CAPABILITIES
            .iter()
            .map(|c| c.to_string())
            .collect();
        let plain = default::profile().resolve(&default_caps);
        assert_eq!(plain["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(plain["defaultErrnoRet"], 1);
        let allowed = names_with(&plain, "SCMP_ACT_ALLOW");
        for denied in [
            "keyctl",
            "add_key",
            "bpf",
            "userfaultfd",
            "unshare",
            "mount",
            "open_by_handle_at",
        ] {
            assert!(!allowed.contains(&denied.to_string()), "{denied}");
        }
        // ptrace is allowed from kernel 4.8 on (its seccomp bypass was closed then).
        for ok in ["read", "execve", "chroot", "ptrace"] {
            assert!(allowed.contains(&ok.to_string()), "{ok}");
        }
        // clone3 answers ENOSYS (libc then uses clone, whose flags are checked).
        assert!(plain["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["names"][0] == "clone3"
                && c["action"] == "SCMP_ACT_ERRNO"
                && c["errnoRet"] == 38));
        let mut admin = default_caps.clone();
        admin.push("CAP_SYS_ADMIN".into());
        let admin = default::profile().resolve(&admin);
        let allowed = names_with(&admin, "SCMP_ACT_ALLOW");
        for ok in ["mount", "unshare", "clone", "clone3", "setns"] {
            assert!(allowed.contains(&ok.to_string()), "{ok}");
        }
        assert!(!admin["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["action"] == "SCMP_ACT_ERRNO"));
        if std::env::consts::ARCH == "x86_64" {
            assert_eq!(
                plain["architectures"],
                serde_json::json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"])
            );
            assert!(names_with(&plain, "SCMP_ACT_ALLOW").contains(&"arch_prctl".to_string()));
        }
    }

    #[test]
    fn a_profile_file_in_dockers_format_is_read_and_its_errors_named() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("p.json");
        std::fs::write(
            &path,
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
                {"name": "mkdir", "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
                {"names": ["chmod"], "action": "SCMP_ACT_ERRNO", "includes": {"caps": ["CAP_NOPE"]}}]}"#,
        )
        .unwrap();
        let spec = for_container(&SeccompProfile::File(path.clone()), &[])
            .unwrap()
            .unwrap();
        assert_eq!(
            spec["syscalls"],
            serde_json::json!([{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}])
        );
        std::fs::write(&path, "{").unwrap();
        let err = for_container(&SeccompProfile::File(path.clone()), &[]).unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("seccomp profile {}: EOF", path.display())),
            "{err}"
        );
        assert_eq!(
            for_container(&SeccompProfile::Unconfined, &[]).unwrap(),
            None
        );
    }
}
