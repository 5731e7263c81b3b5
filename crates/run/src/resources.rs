//! Resource limits as `docker run` spells them (`--memory`, `--memory-swap`, `--cpus`,
//! `--cpu-shares`, `--pids-limit`), checked as Docker checks them and written as the
//! runtime spec's `linux.resources`, which runc, crun and the built-in launcher apply to
//! the container's cgroups (v1 or v2).

use crate::error::SpecError;

/// Docker's least memory limit.
const MIN_MEMORY: i64 = 6 << 20;
/// The CFS period `--cpus` is a share of (Docker's).
const CPU_PERIOD: u64 = 100_000;

/// The limits a container runs under; `None` is no limit.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Resources {
    /// Bytes of memory.
    pub memory: Option<i64>,
    /// Bytes of memory plus swap; -1 is unlimited swap.
    pub memory_swap: Option<i64>,
    /// `(quota, period)` in microseconds.
    pub cpu_quota: Option<(i64, u64)>,
    pub cpu_shares: Option<u64>,
    pub pids: Option<i64>,
}

/// `32m`, `1g`, `512k`, `100` (bytes), `2mb` as bytes (Docker's units: powers of 1024).
pub fn parse_bytes(text: &str) -> Option<i64> {
    let lower = text.trim().to_ascii_lowercase();
    let unit_start = lower
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(lower.len());
    let (number, unit) = lower.split_at(unit_start);
    let value: f64 = number.parse().ok()?;
    let shift = match unit.trim_end_matches('b') {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        "p" => 50,
        _ => return None,
    };
    let bytes = value * (1u64 << shift) as f64;
    (bytes.is_finite() && bytes < i64::MAX as f64).then_some(bytes as i64)
}

fn invalid(flag: &str, value: impl std::fmt::Display, why: &str) -> SpecError {
    SpecError::InvalidLimit(format!("{flag} {value}: {why}"))
}

impl Resources {
    /// The limits from the flags' text, refused as Docker refuses them.
    pub fn parse(
        memory: Option<&str>,
        memory_swap: Option<&str>,
        cpus: Option<f64>,
        cpu_shares: Option<u64>,
        pids_limit: Option<i64>,
    ) -> Result<Resources, SpecError> {
        let bytes = |flag: &str, text: &str| {
            parse_bytes(text).ok_or_else(|| invalid(flag, text, "not a size (e.g. 32m, 1g)"))
        };
        let memory = memory.map(|m| bytes("--memory", m)).transpose()?;
        if let Some(m) = memory.filter(|m| *m < MIN_MEMORY) {
            return Err(invalid("--memory", m, "the least memory limit is 6MB"));
        }
        let memory_swap = match memory_swap {
            Some("-1") => Some(-1),
            Some(s) => Some(bytes("--memory-swap", s)?),
            None => memory.map(|m| m * 2),
        };
        match (memory, memory_swap) {
            (None, Some(_)) => {
                return Err(invalid(
                    "--memory-swap",
                    memory_swap.unwrap_or_default(),
                    "needs --memory",
                ))
            }
            (Some(m), Some(s)) if s != -1 && s < m => {
                return Err(invalid("--memory-swap", s, "must be at least --memory"));
            }
            _ => {}
        }
        let online = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let cpu_quota = match cpus {
            Some(c) if !(c > 0.0 && c <= online) => {
                return Err(invalid(
                    "--cpus",
                    c,
                    &format!("the range is 0.01 to {online:.2}"),
                ));
            }
            Some(c) => Some(((c * CPU_PERIOD as f64).round() as i64, CPU_PERIOD)),
            None => None,
        };
        if cpu_shares == Some(1) {
            return Err(invalid("--cpu-shares", 1, "the least share is 2"));
        }
        Ok(Resources {
            memory,
            memory_swap,
            cpu_quota,
            cpu_shares: cpu_shares.filter(|s| *s > 0),
            pids: pids_limit.filter(|p| *p > 0),
        })
    }

    /// The spec's `linux.resources` entries (besides `devices`).
    pub(crate) fn to_spec(&self, resources: &mut serde_json::Value) {
        if let Some(m) = self.memory {
            resources["memory"] = serde_json::json!({"limit": m});
            if let Some(s) = self.memory_swap {
                resources["memory"]["swap"] = s.into();
            }
        }
        let mut cpu = serde_json::Map::new();
        if let Some(s) = self.cpu_shares {
            cpu.insert("shares".into(), s.into());
        }
        if let Some((quota, period)) = self.cpu_quota {
            cpu.insert("quota".into(), quota.into());
            cpu.insert("period".into(), period.into());
        }
        if !cpu.is_empty() {
            resources["cpu"] = cpu.into();
        }
        if let Some(p) = self.pids {
            resources["pids"] = serde_json::json!({"limit": p});
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_docker_reads_them() {
        assert_eq!(parse_bytes("32m"), Some(32 << 20));
        assert_eq!(parse_bytes("1G"), Some(1 << 30));
        assert_eq!(parse_bytes("512kb"), Some(512 << 10));
        assert_eq!(parse_bytes("100"), Some(100));
        assert_eq!(parse_bytes("1.5g"), Some(3 << 29));
        assert_eq!(parse_bytes("12q"), None);
        assert_eq!(parse_bytes("m"), None);
    }

    #[test]
    fn limits_are_checked_and_defaulted_as_docker_does() {
        let r = Resources::parse(Some("32m"), None, Some(0.5), Some(512), Some(64)).unwrap();
        assert_eq!(r.memory, Some(32 << 20));
        assert_eq!(r.memory_swap, Some(64 << 20));
        assert_eq!(r.cpu_quota, Some((50_000, 100_000)));
        let mut spec = serde_json::json!({});
        r.to_spec(&mut spec);
        assert_eq!(
            spec,
            serde_json::json!({
                "memory": {"limit": 33554432, "swap": 67108864},
                "cpu": {"shares": 512, "quota": 50000, "period": 100000},
                "pids": {"limit": 64},
            })
        );
        let err = |m: Option<&str>, s: Option<&str>| {
            Resources::parse(m, s, None, None, None)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            err(Some("1m"), None),
            "--memory 1048576: the least memory limit is 6MB"
        );
        assert_eq!(
            err(None, Some("1g")),
            "--memory-swap 1073741824: needs --memory"
        );
        assert_eq!(
            err(Some("64m"), Some("32m")),
            "--memory-swap 33554432: must be at least --memory"
        );
        assert_eq!(
            err(Some("lots"), None),
            "--memory lots: not a size (e.g. 32m, 1g)"
        );
        assert_eq!(
            Resources::parse(Some("64m"), Some("-1"), None, None, Some(-1))
                .unwrap()
                .pids,
            None
        );
        assert!(Resources::parse(None, None, Some(0.0), None, None).is_err());
    }
}
