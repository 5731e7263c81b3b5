//! The spec's seccomp filter (`linux.seccomp`), compiled with libseccomp by the launcher
//! before it forks and loaded by the command process: before its credentials change
//! when loading needs `CAP_SYS_ADMIN`, or last, just before `execve`, under
//! `no_new_privileges` (runc's order). Calls this libseccomp does not know are left out,
//! as runc leaves them; a rule whose action is the default is redundant and skipped.
//!
//! libseccomp rather than seccompiler: a seccompiler filter has one action for all its
//! rules, and Docker's profile alone needs two (allow, and ENOSYS for `clone3`), a
//! profile file any mix; libseccomp also names calls per architecture for the x86 and
//! x32 sub-architectures the profile covers. Its cost per start is measured in
//! `docs/performance.md` (well under a millisecond).

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use nix::errno::Errno;
use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompArg};

use super::report::{Failure, Step};

/// A compiled filter, ready to load.
pub(crate) struct Filter(ScmpFilterContext);

fn name_of(value: &impl serde::Serialize) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}

fn invalid(what: impl Into<String>) -> Failure {
    Failure::new(Step::Seccomp, what, Errno::EINVAL)
}

fn action(name: &str, errno_ret: Option<u32>) -> Result<ScmpAction, Failure> {
    let value = errno_ret.map_or(Errno::EPERM as i32, |e| e as i32);
    ScmpAction::from_str(name, Some(value)).map_err(|_| invalid(format!("action {name}")))
}

fn compare(arg: &LinuxSeccompArg) -> Result<ScmpArgCompare, Failure> {
    let op = match name_of(&arg.op()).as_str() {
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

/// Compile `seccomp` for this machine.
pub(crate) fn compile(seccomp: &LinuxSeccomp) -> Result<Filter, Failure> {
    let default = action(
        &name_of(&seccomp.default_action()),
        seccomp.default_errno_ret(),
    )?;
    let mut ctx = ScmpFilterContext::new(default).map_err(|_| invalid("filter"))?;
    // The spec says whether to set no_new_privileges; loading must not set it.
    ctx.set_ctl_nnp(false)
        .map_err(|_| invalid("filter attribute"))?;
    for arch in seccomp.architectures().iter().flatten() {
        let name = name_of(arch);
        let arch: ScmpArch = name
            .parse()
            .map_err(|_| invalid(format!("architecture {name}")))?;
        if !ctx.is_arch_present(arch).unwrap_or(false) {
            ctx.add_arch(arch)
                .map_err(|_| invalid(format!("architecture {name}")))?;
        }
    }
    for rule in seccomp.syscalls().iter().flatten() {
        let act = action(&name_of(&rule.action()), rule.errno_ret())?;
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
    Ok(Filter(ctx))
}

impl Filter {
    /// Load the filter into this process (and what it executes).
    pub(crate) fn load(&self) -> Result<(), Failure> {
        self.0
            .load()
            .map_err(|_| Failure::new(Step::Seccomp, "load", Errno::last()))
    }
}
