//! The spec's resource limits (`linux.resources`: memory, swap, CPU shares and quota,
//! pids) written to the container's cgroup files: the v1 controllers' own files, or
//! their v2 forms (`memory.max`, `memory.swap.max` for the swap part alone,
//! `cpu.weight` from shares by runc's conversion, `cpu.max`, `pids.max`).

use oci_spec::runtime::LinuxResources;

/// One file to write, by the controller that owns it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct LimitFile {
    pub(crate) controller: &'static str,
    pub(crate) file: &'static str,
    pub(crate) value: String,
}

fn file(controller: &'static str, file: &'static str, value: impl ToString) -> LimitFile {
    LimitFile {
        controller,
        file,
        value: value.to_string(),
    }
}

/// CPU shares (2..=262144) as a v2 weight (1..=10000), runc's conversion.
fn weight(shares: u64) -> u64 {
    1 + (shares.clamp(2, 262_144) - 2) * 9999 / 262_142
}

/// The files for `resources`, in the order they must be written, for v1 (`v2` false)
/// or v2.
pub(crate) fn limit_files(resources: &LinuxResources, v2: bool) -> Vec<LimitFile> {
    let mut out = Vec::new();
    if let Some(m) = resources.memory() {
        let limit = m.limit();
        if let Some(limit) = limit {
            out.push(match v2 {
                false => file("memory", "memory.limit_in_bytes", limit),
                true => file("memory", "memory.max", limit),
            });
        }
        match (m.swap(), limit, v2) {
            (Some(swap), _, false) => out.push(file("memory", "memory.memsw.limit_in_bytes", swap)),
            (Some(-1), _, true) => out.push(file("memory", "memory.swap.max", "max")),
            (Some(swap), Some(limit), true) => {
                out.push(file("memory", "memory.swap.max", (swap - limit).max(0)));
            }
            _ => {}
        }
    }
    if let Some(cpu) = resources.cpu() {
        if let Some(shares) = cpu.shares() {
            out.push(match v2 {
                false => file("cpu", "cpu.shares", shares),
                true => file("cpu", "cpu.weight", weight(shares)),
            });
        }
        if let (Some(quota), Some(period)) = (cpu.quota(), cpu.period()) {
            if v2 {
                out.push(file("cpu", "cpu.max", format!("{quota} {period}")));
            } else {
                out.push(file("cpu", "cpu.cfs_period_us", period));
                out.push(file("cpu", "cpu.cfs_quota_us", quota));
            }
        }
    }
    if let Some(pids) = resources.pids() {
        out.push(file("pids", "pids.max", pids.limit()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resources(json: serde_json::Value) -> LinuxResources {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn limits_become_the_v1_and_v2_files() {
        let r = resources(serde_json::json!({
            "memory": {"limit": 33554432, "swap": 67108864},
            "cpu": {"shares": 512, "quota": 50000, "period": 100000},
            "pids": {"limit": 64},
        }));
        let names = |v2| -> Vec<(String, String)> {
            limit_files(&r, v2)
                .into_iter()
                .map(|f| (f.file.to_string(), f.value))
                .collect()
        };
        let pairs = |l: &[(&str, &str)]| -> Vec<(String, String)> {
            l.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        assert_eq!(
            names(false),
            pairs(&[
                ("memory.limit_in_bytes", "33554432"),
                ("memory.memsw.limit_in_bytes", "67108864"),
                ("cpu.shares", "512"),
                ("cpu.cfs_period_us", "100000"),
                ("cpu.cfs_quota_us", "50000"),
                ("pids.max", "64"),
            ])
        );
        assert_eq!(
            names(true),
            pairs(&[
                ("memory.max", "33554432"),
                ("memory.swap.max", "33554432"),
                ("cpu.weight", "20"),
                ("cpu.max", "50000 100000"),
                ("pids.max", "64"),
            ])
        );
        assert_eq!(weight(1024), 39);
        assert_eq!(weight(2), 1);
        assert_eq!(weight(262_144), 10_000);
        let unlimited_swap =
            resources(serde_json::json!({"memory": {"limit": 8388608, "swap": -1}}));
        assert_eq!(limit_files(&unlimited_swap, true)[1].value, "max");
    }
}
