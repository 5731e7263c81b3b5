//! Containers: a writable snapshot over an image's top layer, mounted as the rootfs of a
//! bundle under `<root>/containers/<id>`, run by an OCI runtime (runc, crun), and
//! recorded there until `rm`.
//!
//! The image's layers are never written: the container's snapshot is an active one
//! whose parent is the image's top ChainID, mounted as overlayfs (lower dirs the image's
//! committed layers, upper and work dirs the container's). The mount lives only while
//! the runtime runs; it is undone on every path out ([`RootfsMount`]'s drop).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;

use oci_spec::image::ImageConfiguration;
use oci_spec::runtime::Spec;
use rdpull_snapshot::{ImageRecord, Store};
use rustix::fs::OFlags;

use crate::bundle::{write_bundle, ContainerId};
use crate::error::{RunError, SpecError};
use crate::rootfs::RootDir;
use crate::spec::{command_candidates, runtime_spec, RunOptions};

/// Label of a container's snapshot: the container's id.
const CONTAINER_LABEL: &str = "rdpull.io/container";

/// What `ps` shows of a container.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    pub image: String,
    pub command: Vec<String>,
    /// Seconds since the Unix epoch.
    pub created: u64,
    /// `created`, `running` or `exited`.
    pub status: String,
    pub exit_code: Option<i32>,
    /// The snapshot holding the container's writes.
    pub snapshot: String,
    /// While it runs, the OCI runtime's pid.
    #[serde(default)]
    pub runtime_pid: Option<u32>,
}

/// A container whose rootfs is mounted and whose bundle is written.
pub struct Container {
    pub record: ContainerRecord,
    pub dir: PathBuf,
    mount: Option<RootfsMount>,
}

/// The overlay mount of a container's rootfs, unmounted on drop.
struct RootfsMount(PathBuf);

impl Drop for RootfsMount {
    fn drop(&mut self) {
        if rustix::mount::unmount(&self.0, rustix::mount::UnmountFlags::empty()).is_err() {
            // Busy (a process of the container lingers): detach, never leak it.
            let _ = rustix::mount::unmount(&self.0, rustix::mount::UnmountFlags::DETACH);
        }
    }
}

fn containers_dir(store: &Store) -> PathBuf {
    store.root().join("containers")
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> RunError + '_ {
    move |source| {
        RunError::Setup(SpecError::Bundle {
            path: path.display().to_string(),
            source,
        })
    }
}

impl Container {
    /// Prepare a container of `image` (config `config`) for `opts`: its snapshot, its
    /// mounted rootfs and its bundle. The command is checked inside the rootfs before
    /// any runtime starts: not found is [`RunError::NotFound`], not runnable
    /// [`RunError::CannotInvoke`]. On failure nothing is left behind.
    pub fn create(
        store: &Store,
        image: &ImageRecord,
        opts: &RunOptions,
    ) -> Result<Container, RunError> {
        let config = store.image_config(image)?;
        let id = ContainerId::random().map_err(io_err(store.root()))?;
        let dir = containers_dir(store).join(id.as_str());
        std::fs::create_dir_all(dir.join("rootfs")).map_err(io_err(&dir))?;
        let key = format!("container-{}", id.as_str());
        // Recorded before anything is mounted: a run killed from here on leaves a
        // container that `ps -a` lists and `rm` removes (unmounting it).
        let mut c = Container {
            record: ContainerRecord {
                id: id.as_str().to_string(),
                image: image.name.clone(),
                command: Vec::new(),
                created: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
                status: "created".into(),
                exit_code: None,
                snapshot: key.clone(),
                runtime_pid: None,
            },
            dir,
            mount: None,
        };
        let made = c
            .save()
            .and_then(|()| c.prepare(store, image, &config, opts, &id));
        if let Err(e) = made {
            c.remove(store);
            return Err(e);
        }
        Ok(c)
    }

    fn prepare(
        &mut self,
        store: &Store,
        image: &ImageRecord,
        config: &ImageConfiguration,
        opts: &RunOptions,
        id: &ContainerId,
    ) -> Result<(), RunError> {
        let top = image
            .top()
            .ok_or_else(|| RunError::NoLayers(image.name.clone()))?;
        let labels = BTreeMap::from([(CONTAINER_LABEL.to_string(), id.as_str().to_string())]);
        store.prepare(&self.record.snapshot, Some(&top.to_string()), labels)?;
        let rootfs = self.dir.join("rootfs");
        for m in store.mounts(&self.record.snapshot)? {
            let data =
                std::ffi::CString::new(m.options.join(",")).map_err(|e| RunError::Mount {
                    path: rootfs.display().to_string(),
                    source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e),
                })?;
            rustix::mount::mount(
                m.source.as_str(),
                &rootfs,
                m.kind.as_str(),
                rustix::mount::MountFlags::empty(),
                Some(data.as_c_str()),
            )
            .map_err(|e| RunError::Mount {
                path: rootfs.display().to_string(),
                source: e.into(),
            })?;
            self.mount = Some(RootfsMount(rootfs.clone()));
        }
        let hostname = opts
            .hostname
            .clone()
            .unwrap_or_else(|| id.short().to_string());
        let spec = runtime_spec(config, &rootfs, opts, &hostname)?;
        check_command(&rootfs, &spec)?;
        self.record.command = spec
            .process()
            .as_ref()
            .map(|p| p.args().clone().unwrap_or_default())
            .unwrap_or_default();
        write_bundle(&self.dir, &spec)?;
        self.save()
    }

    fn save(&self) -> Result<(), RunError> {
        let path = self.dir.join("container.json");
        let json = serde_json::to_vec_pretty(&self.record).expect("a record serializes");
        std::fs::write(&path, json).map_err(io_err(&path))
    }

    /// Run the container with `runtime`, stdio passed through, until it exits; `started`
    /// gets the runtime's pid, to forward signals to. Returns the exit code as `docker
    /// run` reports it.
    pub fn run(&mut self, runtime: &Runtime, started: impl FnOnce(u32)) -> Result<i32, RunError> {
        let mut command = runtime.command().map_err(|source| RunError::Runtime {
            runtime: runtime.to_string(),
            source,
        })?;
        if *runtime == Runtime::Builtin {
            // The launcher keeps the seccomp programs it generates beside the store.
            if let Some(root) = self.dir.parent().and_then(Path::parent) {
                command.env(crate::launch::SECCOMP_CACHE_ENV, root.join("cache/seccomp"));
            }
        }
        let mut child = command
            .arg(&self.dir)
            .arg(&self.record.id)
            .current_dir(&self.dir)
            .spawn()
            .map_err(|source| RunError::Runtime {
                runtime: runtime.to_string(),
                source,
            })?;
        self.record.status = "running".into();
        self.record.runtime_pid = Some(child.id());
        self.save()?;
        started(child.id());
        let status = child.wait().map_err(|source| RunError::Runtime {
            runtime: runtime.to_string(),
            source,
        })?;
        let code = exit_code(status);
        self.record.status = "exited".into();
        self.record.exit_code = Some(code);
        self.record.runtime_pid = None;
        self.mount = None;
        self.save()?;
        Ok(code)
    }

    /// Unmount the rootfs, remove the container's snapshot and its directory.
    pub fn remove(mut self, store: &Store) {
        self.mount = None;
        remove_container(store, &self.record.snapshot, &self.dir);
    }
}

/// What runs a container's bundle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Runtime {
    /// The built-in launcher ([`crate::launch`]), in this program re-executed.
    Builtin,
    /// An OCI runtime program: `runc`, `crun`, or a path to one, run as `RUNTIME run
    /// --bundle DIR ID`.
    Oci(String),
}

impl Runtime {
    /// `None` and `builtin` name the built-in launcher; anything else a program.
    pub fn named(name: Option<&str>) -> Runtime {
        match name {
            None | Some("builtin") => Runtime::Builtin,
            Some(p) => Runtime::Oci(p.to_string()),
        }
    }

    /// The command, missing only the bundle directory and the container id.
    fn command(&self) -> std::io::Result<std::process::Command> {
        Ok(match self {
            Runtime::Builtin => {
                let mut c = std::process::Command::new(std::env::current_exe()?);
                c.arg(crate::launch::LAUNCH_COMMAND);
                c
            }
            Runtime::Oci(program) => {
                let mut c = std::process::Command::new(program);
                c.args(["run", "--bundle"]);
                c
            }
        })
    }
}

impl std::fmt::Display for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Runtime::Builtin => f.write_str("builtin"),
            Runtime::Oci(p) => f.write_str(p),
        }
    }
}

fn remove_container(store: &Store, snapshot: &str, dir: &Path) {
    // A run killed before it could unmount left its rootfs mounted; the snapshot's
    // directories go only once nothing is mounted from them.
    if is_mount_point(&dir.join("rootfs")) {
        drop(RootfsMount(dir.join("rootfs")));
    }
    if let Some(id) = dir.file_name() {
        crate::launch::remove_leftovers(&id.to_string_lossy());
    }
    match store.remove(snapshot) {
        Ok(()) | Err(rdpull_snapshot::StoreError::NotFound(_)) => {}
        Err(e) => tracing_warn(&format!("removing snapshot {snapshot}: {e}")),
    }
    if let Err(e) = std::fs::remove_dir_all(dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing_warn(&format!("removing {}: {e}", dir.display()));
        }
    }
}

/// Is `path` the top of a mount (its device differs from its parent's)?
fn is_mount_point(path: &Path) -> bool {
    let (Ok(here), Some(Ok(up))) = (
        rustix::fs::lstat(path),
        path.parent().map(rustix::fs::lstat),
    ) else {
        return false;
    };
    here.st_dev != up.st_dev
}

fn tracing_warn(msg: &str) {
    eprintln!("rdpull: warning: {msg}");
}

/// `docker run`'s exit code: the process's status, or 128 + N when signal N killed it.
fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// A container recorded as running whose runtime is gone (the rdpull that ran it was
/// killed): its rootfs is unmounted and it is recorded as exited, code unknown.
fn settle_orphan(dir: &Path, r: &mut ContainerRecord) {
    let alive = r.runtime_pid.is_some_and(|pid| {
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|c| c.windows(r.id.len()).any(|w| w == r.id.as_bytes()))
    });
    if r.status != "running" || alive {
        return;
    }
    drop(RootfsMount(dir.join("rootfs")));
    r.status = "exited".into();
    r.runtime_pid = None;
    let json = serde_json::to_vec_pretty(&r).expect("a record serializes");
    let _ = std::fs::write(dir.join("container.json"), json);
}

/// Every container recorded in `store`, oldest first. Containers whose rdpull was
/// killed while they ran are settled first (unmounted, recorded as exited).
pub fn list_containers(store: &Store) -> Result<Vec<ContainerRecord>, RunError> {
    let dir = containers_dir(store);
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io_err(&dir)(e)),
    };
    for e in entries {
        let cdir = e.map_err(io_err(&dir))?.path();
        if let Ok(bytes) = std::fs::read(cdir.join("container.json")) {
            if let Ok(mut r) = serde_json::from_slice::<ContainerRecord>(&bytes) {
                settle_orphan(&cdir, &mut r);
                out.push(r);
            }
        }
    }
    out.sort_by_key(|r| (r.created, r.id.clone()));
    Ok(out)
}

/// Remove the container `id` names (its full id or a unique prefix); returns its id. A
/// running one is refused.
pub fn remove_container_by_id(store: &Store, id: &str) -> Result<String, RunError> {
    let all = list_containers(store)?;
    let found: Vec<&ContainerRecord> = all.iter().filter(|r| r.id.starts_with(id)).collect();
    let r = match found[..] {
        _ if id.is_empty() => return Err(RunError::NoSuchContainer(id.to_string())),
        [r] => r,
        [] => return Err(RunError::NoSuchContainer(id.to_string())),
        _ => return Err(RunError::Ambiguous(id.to_string())),
    };
    if r.status == "running" {
        return Err(RunError::Running(r.id.clone()));
    }
    remove_container(store, &r.snapshot, &containers_dir(store).join(&r.id));
    Ok(r.id.clone())
}

/// Find the command inside the rootfs as `execve` will: a path as it is, a bare name
/// through the spec's `PATH`. Not found: 127; a directory or not executable: 126.
fn check_command(rootfs: &Path, spec: &Spec) -> Result<(), RunError> {
    let process = spec.process().clone().unwrap_or_default();
    let args = process.args().clone().unwrap_or_default();
    let Some(cmd) = args.first() else {
        return Err(RunError::Setup(SpecError::NoCommand));
    };
    let candidates = command_candidates(cmd, &process);
    let root = RootDir::open(rootfs).map_err(|source| RunError::Mount {
        path: rootfs.display().to_string(),
        source,
    })?;
    let mut refused = None;
    for c in &candidates {
        let Ok(fd) = root.open_in(c, OFlags::PATH) else {
            continue;
        };
        let Ok(st) = rustix::fs::fstat(&fd) else {
            continue;
        };
        let ft = rustix::fs::FileType::from_raw_mode(st.st_mode);
        if ft == rustix::fs::FileType::Directory {
            refused.get_or_insert_with(|| format!("{c}: is a directory"));
        } else if st.st_mode & 0o111 == 0 || ft != rustix::fs::FileType::RegularFile {
            refused.get_or_insert_with(|| format!("{c}: permission denied"));
        } else {
            return Ok(());
        }
    }
    Err(match refused {
        Some(why) => RunError::CannotInvoke(why),
        None if cmd.contains('/') => {
            RunError::NotFound(format!("{cmd}: no such file or directory"))
        }
        None => RunError::NotFound(format!("{cmd:?}: executable file not found in $PATH")),
    })
}
