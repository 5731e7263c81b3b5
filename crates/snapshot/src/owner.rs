//! Which process owns an active snapshot, so that a later pull, or `prune`, can remove
//! the snapshots of one that died.

use crate::store::{Info, Kind};

/// Label naming the process that owns an active snapshot (`pid:starttime`).
pub const OWNER_LABEL: &str = "rdpull.io/owner";

/// `pid:starttime` of this process: a pid alone can be reused after a crash.
pub fn owner_label() -> String {
    let pid = std::process::id();
    format!("{pid}:{}", start_time(pid).unwrap_or_default())
}

/// Is `info` an active or view snapshot whose owner process is gone?
pub fn owner_gone(info: &Info) -> bool {
    info.kind != Kind::Committed
        && info
            .labels
            .get(OWNER_LABEL)
            .is_some_and(|o| !owner_alive(o))
}

/// Is the process an owner label names still running (the same process, not a reuse of
/// its pid, and not a zombie: a killed pull whose parent has not reaped it is gone)?
pub fn owner_alive(owner: &str) -> bool {
    let Some((pid, start)) = owner.split_once(':') else {
        return false;
    };
    pid.parse::<u32>().ok().and_then(start_time).as_deref() == Some(start)
}

fn start_time(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 22, counted after the parenthesised command name (which may hold spaces).
    let after = &stat[stat.rfind(')')? + 2..];
    let mut fields = after.split(' ');
    if matches!(fields.next(), Some("Z" | "X")) {
        return None;
    }
    fields.nth(18).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_reused_pid_is_not() {
        let me = owner_label();
        assert!(owner_alive(&me), "{me}");
        let pid = me.split_once(':').unwrap().0;
        assert!(!owner_alive(&format!("{pid}:1")));
        assert!(!owner_alive("not-a-label"));
    }

    #[test]
    fn a_zombie_is_gone() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let start = start_time_of_zombie(pid);
        assert!(!owner_alive(&format!("{pid}:{start}")));
        child.wait().unwrap();
    }

    /// The start time of `pid` once it has exited and is not reaped yet.
    fn start_time_of_zombie(pid: u32) -> String {
        loop {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
            let after = &stat[stat.rfind(')').unwrap() + 2..];
            let fields: Vec<&str> = after.split(' ').collect();
            if fields[0] == "Z" {
                return fields[19].to_string();
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}
