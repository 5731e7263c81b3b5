//! The spec's seccomp filter (`linux.seccomp`) as a BPF program, made by the launcher
//! before it forks and loaded by the command process with `seccomp(2)`: before its
//! credentials change when loading needs `CAP_SYS_ADMIN`, or last, just before
//! `execve`, under `no_new_privileges` (runc's order). Calls this libseccomp does not
//! know are left out, as runc leaves them; a rule whose action is the default is
//! redundant and skipped.
//!
//! libseccomp rather than seccompiler: a seccompiler filter has one action for all its
//! rules, and Docker's profile alone needs two (allow, and ENOSYS for `clone3`), a
//! profile file any mix; libseccomp also covers the x86 and x32 sub-architectures the
//! profile names. Generating the program for Docker's profile takes libseccomp some
//! 8 ms, so the program is kept in a cache keyed by the profile (and libseccomp's
//! version and the architecture): a start with a profile seen before reads it and
//! loads it, well under a millisecond (`docs/performance.md`).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
    ScmpVersion,
};
use nix::errno::Errno;
use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompArg};
use sha2::{Digest, Sha256};

use super::report::{Context, Failure, Step};
use super::spec_name;

/// Where the launcher keeps generated programs (set by `rdpull run`: the store's
/// `cache/seccomp`); without it each start generates its program.
pub const CACHE_ENV: &str = "RDPULL_SECCOMP_CACHE";

/// A BPF program (`struct sock_filter`s, 8 bytes each) and the `seccomp(2)` flags to
/// load it with.
pub(crate) struct Filter {
    program: Vec<u8>,
    flags: u32,
}

/// The largest program the kernel takes (`BPF_MAXINSNS`).
const MAX_INSNS: usize = 4096;

fn invalid(what: impl Into<String>) -> Failure {
    Failure::new(Step::Seccomp, what, Errno::EINVAL)
}

fn action(name: &str, errno_ret: Option<u32>) -> Result<ScmpAction, Failure> {
    let value = errno_ret.map_or(Errno::EPERM as i32, |e| e as i32);
    ScmpAction::from_str(name, Some(value)).map_err(|_| invalid(format!("action {name}")))
}

fn compare(arg: &LinuxSeccompArg) -> Result<ScmpArgCompare, Failure> {
    let op = match spec_name(&arg.op()).as_str() {
        "SCMP_CMP_NE" => ScmpCompareOp::NotEqual,
        "SCMP_CMP_LT" => ScmpCompareOp::Less,
        "SCMP_CMP_LE" => ScmpCompareOp::LessOrEqual,
        "SCMP_CMP_EQ" => ScmpCompareOp::Equal,
        "SCMP_CMP_GE" => ScmpCompareOp::GreaterEqual,
        "SCMP_CMP_GT" => ScmpCompareOp::Greater,
        "SCMP_CMP_MASKED_EQ" => ScmpCompareOp::MaskedEqual(arg.value()),
        other => return Err(invalid(format!("operator {other}"))),
    };
    let datum = match op {
        ScmpCompareOp::MaskedEqual(_) => arg.value_two().unwrap_or(0),
        _ => arg.value(),
    };
    Ok(ScmpArgCompare::new(arg.index() as u32, op, datum))
}

/// The filter for `seccomp`: from the cache named by [`CACHE_ENV`] when it holds this
/// profile's program, else generated (and then kept there).
pub(crate) fn filter(seccomp: &LinuxSeccomp) -> Result<Filter, Failure> {
    let flags = load_flags(seccomp)?;
    let cache = std::env::var_os(CACHE_ENV).map(PathBuf::from);
    let cached = cache.as_deref().map(|dir| dir.join(cache_key(seccomp)));
    if let Some(program) = cached.as_deref().and_then(read_program) {
        return Ok(Filter { program, flags });
    }
    let program = generate(seccomp)?;
    if let Some(path) = cached {
        keep(&path, &program);
    }
    Ok(Filter { program, flags })
}

/// The cache's name for `seccomp`'s program on this machine and libseccomp.
fn cache_key(seccomp: &LinuxSeccomp) -> String {
    let version = ScmpVersion::current().map_or((0, 0, 0), |v| (v.major, v.minor, v.micro));
    let mut h = Sha256::new();
    h.update(serde_json::to_vec(seccomp).unwrap_or_default());
    h.update(format!("{version:?} {}", std::env::consts::ARCH));
    format!("{:x}.bpf", h.finalize())
}

/// A cached program, if it is whole (a count of instructions the kernel takes).
fn read_program(path: &Path) -> Option<Vec<u8>> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .ok()?
        .take((MAX_INSNS * 8 + 1) as u64)
        .read_to_end(&mut bytes)
        .ok()?;
    (!bytes.is_empty() && bytes.len() % 8 == 0 && bytes.len() <= MAX_INSNS * 8).then_some(bytes)
}

/// Keep `program` at `path`, whole or not at all (written aside, then renamed); a cache
/// that cannot be written only costs the next start the generation.
fn keep(path: &Path, program: &[u8]) {
    let Some(dir) = path.parent() else { return };
    let tmp = dir.join(format!(".{}.tmp", std::process::id()));
    let written = std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::File::create(&tmp))
        .and_then(|mut f| f.write_all(program))
        .and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
}

/// The spec's `flags` as `seccomp(2)`'s.
fn load_flags(seccomp: &LinuxSeccomp) -> Result<u32, Failure> {
    let mut flags = 0;
    for f in seccomp.flags().iter().flatten() {
        flags |= match spec_name(f).as_str() {
            "SECCOMP_FILTER_FLAG_TSYNC" => 1,
            "SECCOMP_FILTER_FLAG_LOG" => 2,
            "SECCOMP_FILTER_FLAG_SPEC_ALLOW" => 4,
            other => return Err(invalid(format!("flag {other}"))),
        };
    }
    Ok(flags)
}

/// Generate `seccomp`'s program with libseccomp.
fn generate(seccomp: &LinuxSeccomp) -> Result<Vec<u8>, Failure> {
    let default = action(
        &spec_name(&seccomp.default_action()),
        seccomp.default_errno_ret(),
    )?;
    let mut ctx = ScmpFilterContext::new(default).map_err(|_| invalid("filter"))?;
    // The spec says whether to set no_new_privileges; loading must not set it.
    ctx.set_ctl_nnp(false)
        .map_err(|_| invalid("filter attribute"))?;
    // A binary search over the call numbers, not a chain of tests: shorter to run.
    ctx.set_filter_attr(libseccomp::ScmpFilterAttr::CtlOptimize, 2)
        .map_err(|_| invalid("filter attribute"))?;
    for arch in seccomp.architectures().iter().flatten() {
        let name = spec_name(arch);
        let arch: ScmpArch = name
            .parse()
            .map_err(|_| invalid(format!("architecture {name}")))?;
        if !ctx.is_arch_present(arch).unwrap_or(false) {
            ctx.add_arch(arch)
                .map_err(|_| invalid(format!("architecture {name}")))?;
        }
    }
    for rule in seccomp.syscalls().iter().flatten() {
        let act = action(&spec_name(&rule.action()), rule.errno_ret())?;
        if act == default {
            continue;
        }
        let args = rule.args().clone().unwrap_or_default();
        let conditions = args.iter().map(compare).collect::<Result<Vec<_>, _>>()?;
        // Conditions on one argument each are ANDed; several on the same argument are
        // alternatives (runc's reading of the spec), one rule each.
        let mut indexes: Vec<usize> = args.iter().map(LinuxSeccompArg::index).collect();
        indexes.sort_unstable();
        indexes.dedup();
        let groups: Vec<Vec<ScmpArgCompare>> = if indexes.len() == args.len() {
            vec![conditions]
        } else {
            conditions.into_iter().map(|c| vec![c]).collect()
        };
        for name in rule.names() {
            let Ok(call) = ScmpSyscall::from_name(name) else {
                continue;
            };
            for group in &groups {
                ctx.add_rule_conditional(act, call, group)
                    .map_err(|_| invalid(format!("rule for {name}")))?;
            }
        }
    }
    let out = rustix::fs::memfd_create("seccomp", rustix::fs::MemfdFlags::CLOEXEC)
        .step(Step::Seccomp, "program")?;
    ctx.export_bpf(&out).map_err(|_| invalid("program"))?;
    let mut program = Vec::new();
    let mut file = std::fs::File::from(out);
    std::io::Seek::rewind(&mut file)
        .and_then(|_| file.read_to_end(&mut program))
        .step(Step::Seccomp, "program")?;
    if program.is_empty() || program.len() % 8 != 0 || program.len() > MAX_INSNS * 8 {
        return Err(invalid(format!("program of {} bytes", program.len())));
    }
    Ok(program)
}

/// `struct sock_fprog`.
#[repr(C)]
struct SockFprog {
    len: u16,
    filter: *const u8,
}

impl Filter {
    /// Load the filter into this process (and what it executes).
    pub(crate) fn load(&self) -> Result<(), Failure> {
        const SECCOMP_SET_MODE_FILTER: i64 = 1;
        let prog = SockFprog {
            len: (self.program.len() / 8) as u16,
            filter: self.program.as_ptr(),
        };
        // SAFETY: `prog` points at `len` whole `struct sock_filter`s (checked when the
        // program was made or read), alive for the call; the kernel copies them.
        #[allow(unsafe_code)]
        let ret = unsafe {
            nix::libc::syscall(
                nix::libc::SYS_seccomp,
                SECCOMP_SET_MODE_FILTER,
                i64::from(self.flags),
                &prog as *const SockFprog,
            )
        };
        Errno::result(ret)
            .map(drop)
            .map_err(|e| Failure::new(Step::Seccomp, "load", e))
    }
}
