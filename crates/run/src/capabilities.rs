//! The container's capabilities as `docker run` computes them: Docker's default set,
//! then `--cap-add` and `--cap-drop` (names with or without `CAP_`, any case, `ALL`),
//! or every capability with `--privileged`.

use crate::error::SpecError;

/// Docker's default capabilities.
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Every capability name this build knows (the kernel's, through 6.x).
fn known_capabilities() -> Vec<String> {
    let mut all: Vec<caps::Capability> = caps::all().into_iter().collect();
    all.sort_by_key(|c| c.index());
    all.iter().map(ToString::to_string).collect()
}

/// What `ALL` and `--privileged` grant: every capability the running kernel has and this
/// process may still pass on (its bounding set; a host or sandbox may have dropped some).
fn all_capabilities() -> Vec<String> {
    let bounding = caps::read(None, caps::CapSet::Bounding).unwrap_or_default();
    let supported = caps::runtime::thread_all_supported();
    let mut all: Vec<caps::Capability> = bounding.intersection(&supported).copied().collect();
    all.sort_by_key(|c| c.index());
    all.iter().map(ToString::to_string).collect()
}

/// `chown`, `CAP_CHOWN`, `cap_chown` as `CAP_CHOWN`; `all` as `ALL`.
fn canonical(name: &str) -> Result<String, SpecError> {
    let upper = name.to_ascii_uppercase();
    if upper == "ALL" {
        return Ok(upper);
    }
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    if known_capabilities().contains(&full) {
        Ok(full)
    } else {
        Err(SpecError::UnknownCapability(name.to_string()))
    }
}

/// The capability set for `--cap-add` `add`, `--cap-drop` `drop` and `--privileged`,
/// in a stable order (the default set's first).
pub(crate) fn capabilities(
    add: &[String],
    drop: &[String],
    privileged: bool,
) -> Result<Vec<String>, SpecError> {
    let add = add
        .iter()
        .map(|c| canonical(c))
        .collect::<Result<Vec<_>, _>>()?;
    let drop = drop
        .iter()
        .map(|c| canonical(c))
        .collect::<Result<Vec<_>, _>>()?;
    let all = known_capabilities();
    let mut set: Vec<String> = if privileged || add.iter().any(|c| c == "ALL") {
        all_capabilities()
    } else if drop.iter().any(|c| c == "ALL") {
        Vec::new()
    } else {
        DEFAULT_CAPABILITIES.iter().map(|c| c.to_string()).collect()
    };
    if !privileged {
        set.retain(|c| !drop.contains(c));
        for c in add.iter().filter(|c| *c != "ALL") {
            if !set.contains(c) {
                set.push(c.clone());
            }
        }
    }
    let rank = |c: &String| all.iter().position(|a| a == c).unwrap_or(usize::MAX);
    let default_rank = |c: &String| DEFAULT_CAPABILITIES.iter().position(|d| d == c);
    set.sort_by_key(|c| (default_rank(c).is_none(), default_rank(c), rank(c)));
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(list: &[&str]) -> Vec<String> {
        list.iter().map(|c| c.to_string()).collect()
    }

    #[test]
    fn add_and_drop_work_as_in_docker_run() {
        let defaults = s(DEFAULT_CAPABILITIES);
        assert_eq!(capabilities(&[], &[], false).unwrap(), defaults);
        let got = capabilities(&s(&["sys_admin"]), &s(&["CAP_CHOWN", "net_raw"]), false).unwrap();
        assert!(got.contains(&"CAP_SYS_ADMIN".to_string()));
        assert!(
            !got.contains(&"CAP_CHOWN".to_string()) && !got.contains(&"CAP_NET_RAW".to_string())
        );
        assert_eq!(got.len(), defaults.len() - 1);
        assert_eq!(
            capabilities(&s(&["kill"]), &s(&["ALL"]), false).unwrap(),
            s(&["CAP_KILL"])
        );
        assert_eq!(
            capabilities(&[], &s(&["all"]), false).unwrap(),
            Vec::<String>::new()
        );
        let all = capabilities(&s(&["ALL"]), &s(&["CAP_SYS_ADMIN"]), false).unwrap();
        assert_eq!(all.len(), all_capabilities().len() - 1);
        assert_eq!(
            capabilities(&[], &s(&["ALL"]), true).unwrap().len(),
            all_capabilities().len()
        );
        assert_eq!(
            capabilities(&s(&["CAP_NOPE"]), &[], false)
                .unwrap_err()
                .to_string(),
            "unknown capability: \"CAP_NOPE\""
        );
    }
}
