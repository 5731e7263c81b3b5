//! The container's user, as Docker resolves `--user` and the config's `User`: from the
//! image's own `/etc/passwd` and `/etc/group`, read inside the rootfs (symlinks resolve
//! as if the rootfs were `/`, so an image cannot make rdpull read a host file).

use std::path::Path;

use crate::error::SpecError;
use crate::rootfs::RootDir;

/// Who the container's process runs as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecUser {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups: the groups of `/etc/group` that list the user by name.
    pub additional_gids: Vec<u32>,
    /// From the passwd entry; `/` when there is none.
    pub home: String,
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

/// The largest uid or gid a container may get: runc's bound (2^31 - 1). Above it lies
/// 4294967295, which `setuid` takes as "leave unchanged", i.e. root.
pub(crate) const MAX_ID: u32 = i32::MAX as u32;

/// How much of `/etc/passwd` or `/etc/group` rdpull reads; a larger file is refused.
const MAX_ACCOUNT_FILE: u64 = 16 << 20;

/// Read `rel` (e.g. `etc/passwd`) inside `rootfs`: missing is empty, anything but a
/// regular file of at most [`MAX_ACCOUNT_FILE`] is refused; bytes that are not UTF-8
/// are read as U+FFFD (names compare as they are otherwise).
fn read_in_root(rootfs: &Path, rel: &str) -> Result<String, SpecError> {
    let root = RootDir::open(rootfs).map_err(|source| SpecError::Rootfs {
        path: rootfs.display().to_string(),
        source,
    })?;
    let bytes = root
        .read_regular(rel, MAX_ACCOUNT_FILE)?
        .unwrap_or_default();
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

fn passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some(PasswdEntry {
                name: f.first()?.to_string(),
                uid: f.get(2)?.parse().ok()?,
                gid: f.get(3)?.parse().ok()?,
                home: f.get(5).unwrap_or(&"/").to_string(),
            })
        })
        .collect()
}

fn groups(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some(GroupEntry {
                name: f.first()?.to_string(),
                gid: f.get(2)?.parse().ok()?,
                members: f
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .filter(|s| !s.is_empty())
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// A part of `--user` that is a number (`-1` and `99999999999` included): its value if
/// it is a valid id, the range error if it is not; `None` for a name.
fn numeric_id(part: &str, spec: &str) -> Result<Option<u32>, SpecError> {
    let digits = part.strip_prefix('-').unwrap_or(part);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(None);
    }
    match part.parse::<u32>() {
        Ok(id) if id <= MAX_ID => Ok(Some(id)),
        _ => Err(SpecError::IdOutOfRange {
            user: spec.to_string(),
            max: MAX_ID,
        }),
    }
}

/// Resolve `spec` (`name`, `uid`, `uid:gid`, `name:group`, …; empty is root) against
/// the image's files in `rootfs`, as Docker does. Every id must be within
/// [`MAX_ID`], whether given or read from the image's files.
pub fn resolve_user(rootfs: &Path, spec: &str) -> Result<ExecUser, SpecError> {
    let resolved = resolve(rootfs, spec)?;
    let ids = [resolved.uid, resolved.gid];
    if ids
        .iter()
        .chain(&resolved.additional_gids)
        .any(|id| *id > MAX_ID)
    {
        return Err(SpecError::IdOutOfRange {
            user: spec.to_string(),
            max: MAX_ID,
        });
    }
    Ok(resolved)
}

fn resolve(rootfs: &Path, spec: &str) -> Result<ExecUser, SpecError> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let numeric_uid = numeric_id(user, spec)?;
    if let Some(g) = group {
        numeric_id(g, spec)?;
    }
    let users = passwd(&read_in_root(rootfs, "etc/passwd")?);
    let found = match numeric_uid {
        _ if user.is_empty() => users.iter().find(|p| p.uid == 0),
        Some(uid) => users.iter().find(|p| p.uid == uid),
        None => Some(
            users
                .iter()
                .find(|p| p.name == user)
                .ok_or_else(|| SpecError::UnknownUser(user.to_string()))?,
        ),
    };
    let uid = match (found, numeric_uid) {
        (Some(p), _) => p.uid,
        (None, Some(uid)) => uid,
        (None, None) => 0,
    };
    let all_groups = groups(&read_in_root(rootfs, "etc/group")?);
    let gid = match group {
        None | Some("") => found.map_or(0, |p| p.gid),
        Some(g) => match numeric_id(g, spec)? {
            Some(gid) => gid,
            None => {
                all_groups
                    .iter()
                    .find(|e| e.name == g)
                    .ok_or_else(|| SpecError::UnknownGroup(g.to_string()))?
                    .gid
            }
        },
    };
    let mut additional_gids = vec![gid];
    if let (Some(p), None) = (found, group) {
        for g in &all_groups {
            if g.members.contains(&p.name) && !additional_gids.contains(&g.gid) {
                additional_gids.push(g.gid);
            }
        }
    }
    Ok(ExecUser {
        uid,
        gid,
        additional_gids,
        home: found.map_or_else(|| "/".to_string(), |p| p.home.clone()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rootfs() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("etc")).unwrap();
        std::fs::write(
            t.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/bash\nwww-data:x:33:33:www:/var/www:/usr/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
        )
        .unwrap();
        std::fs::write(
            t.path().join("etc/group"),
            "root:x:0:\nwww-data:x:33:\nsudo:x:27:www-data,other\nnogroup:x:65534:\n",
        )
        .unwrap();
        t
    }

    #[test]
    fn every_form_of_user_resolves_as_docker_does() {
        let t = rootfs();
        let r = |s: &str| resolve_user(t.path(), s);
        let u = |uid, gid, add: &[u32], home: &str| ExecUser {
            uid,
            gid,
            additional_gids: add.to_vec(),
            home: home.into(),
        };
        assert_eq!(r("").unwrap(), u(0, 0, &[0], "/root"));
        assert_eq!(r("www-data").unwrap(), u(33, 33, &[33, 27], "/var/www"));
        assert_eq!(r("33").unwrap(), u(33, 33, &[33, 27], "/var/www"));
        assert_eq!(r("1234").unwrap(), u(1234, 0, &[0], "/"));
        assert_eq!(r("1234:5678").unwrap(), u(1234, 5678, &[5678], "/"));
        assert_eq!(
            r("nobody:sudo").unwrap(),
            u(65534, 27, &[27], "/nonexistent")
        );
        assert_eq!(
            r("ghost").unwrap_err().to_string(),
            "unable to find user ghost: no matching entries in passwd file"
        );
        assert_eq!(
            r("root:ghosts").unwrap_err().to_string(),
            "unable to find group ghosts: no matching entries in group file"
        );
    }

    #[test]
    fn ids_outside_runcs_range_are_refused_wherever_they_come_from() {
        let t = rootfs();
        let r = |s: &str| resolve_user(t.path(), s).map(|u| u.uid);
        let refused = |s: &str| format!("user {s}: uids and gids must be in range 0-2147483647");
        for bad in [
            "4294967295",
            "-1",
            "2147483648",
            "99999999999999999999",
            "0:4294967295",
            "0:-5",
        ] {
            assert_eq!(r(bad).unwrap_err().to_string(), refused(bad), "{bad}");
        }
        assert_eq!(r("2147483647").unwrap(), 2147483647);
        assert_eq!(r("65536").unwrap(), 65536);
        std::fs::write(
            t.path().join("etc/passwd"),
            "evil:x:4294967295:0::/:/bin/sh\nroot:x:0:0::/root:/bin/sh\n",
        )
        .unwrap();
        assert_eq!(r("evil").unwrap_err().to_string(), refused("evil"));
        assert_eq!(r("").unwrap(), 0);
    }

    #[test]
    fn account_files_must_be_small_regular_files_and_may_hold_any_bytes() {
        let t = rootfs();
        let passwd = t.path().join("etc/passwd");
        std::fs::write(
            &passwd,
            b"r\xffoot:x:0:0::/root:/bin/sh\nu:x:7:7::/h\xfe:/bin/sh\n",
        )
        .unwrap();
        assert_eq!(resolve_user(t.path(), "u").unwrap().home, "/h\u{fffd}");
        std::fs::remove_file(&passwd).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &passwd,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        // A FIFO with no writer would block a reader forever; it is never opened.
        assert_eq!(
            resolve_user(t.path(), "").unwrap_err().to_string(),
            "rootfs /etc/passwd: not a regular file (a FIFO)"
        );
        std::fs::remove_file(&passwd).unwrap();
        let big = std::fs::File::create(&passwd).unwrap();
        big.set_len(MAX_ACCOUNT_FILE + 1).unwrap();
        assert_eq!(
            resolve_user(t.path(), "").unwrap_err().to_string(),
            "rootfs /etc/passwd: 16777217 bytes, more than the 16777216 rdpull reads"
        );
    }

    #[test]
    fn passwd_is_read_inside_the_rootfs() {
        let t = tempfile::tempdir().unwrap();
        let rootfs = t.path().join("rootfs");
        std::fs::create_dir_all(rootfs.join("etc")).unwrap();
        // Beside the rootfs, where a symlink climbing out of it would lead.
        std::fs::write(t.path().join("passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
        std::os::unix::fs::symlink("../../passwd", rootfs.join("etc/passwd")).unwrap();
        assert_eq!(
            resolve_user(&rootfs, "root").unwrap_err().to_string(),
            "unable to find user root: no matching entries in passwd file"
        );
    }
}
