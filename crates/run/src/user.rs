//! The container's user, as Docker resolves `--user` and the config's `User`: from the
//! image's own `/etc/passwd` and `/etc/group`, read inside the rootfs (symlinks resolve
//! as if the rootfs were `/`, so an image cannot make rdpull read a host file).

use std::io::Read;
use std::path::Path;

use rustix::fs::OFlags;

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

/// Read `rel` (e.g. `etc/passwd`) inside `rootfs`; a missing file is empty.
fn read_in_root(rootfs: &Path, rel: &str) -> Result<String, SpecError> {
    let err = |source: std::io::Error| SpecError::Rootfs {
        path: format!("/{rel}"),
        source,
    };
    let root = RootDir::open(rootfs).map_err(err)?;
    let fd = match root.open_in(rel, OFlags::RDONLY) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(String::new()),
        Err(e) => return Err(err(e.into())),
    };
    let mut text = String::new();
    std::fs::File::from(fd)
        .take(16 << 20)
        .read_to_string(&mut text)
        .map_err(err)?;
    Ok(text)
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

/// Resolve `spec` (`name`, `uid`, `uid:gid`, `name:group`, …; empty is root) against
/// the image's files in `rootfs`, as Docker does.
pub fn resolve_user(rootfs: &Path, spec: &str) -> Result<ExecUser, SpecError> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let users = passwd(&read_in_root(rootfs, "etc/passwd")?);
    let found = match user.parse::<u32>() {
        _ if user.is_empty() => users.iter().find(|p| p.uid == 0),
        Ok(uid) => users.iter().find(|p| p.uid == uid),
        Err(_) => Some(
            users
                .iter()
                .find(|p| p.name == user)
                .ok_or_else(|| SpecError::UnknownUser(user.to_string()))?,
        ),
    };
    let uid = match (found, user.parse::<u32>()) {
        (Some(p), _) => p.uid,
        (None, Ok(uid)) => uid,
        (None, Err(_)) => 0,
    };
    let all_groups = groups(&read_in_root(rootfs, "etc/group")?);
    let gid = match group {
        None | Some("") => found.map_or(0, |p| p.gid),
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => {
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
