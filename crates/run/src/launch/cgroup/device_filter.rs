//! The device allow-list on cgroup v2: a `BPF_PROG_TYPE_CGROUP_DEVICE` program, emitted
//! here as eBPF instructions (no C, no compiler) and attached to the container's cgroup
//! with `bpf(2)`. The kernel runs it on every device access (open, mknod) from the
//! cgroup; it allows what one of the rules allows and denies everything else, as the v1
//! `devices` controller does with `devices.deny = a` and the same `devices.allow` lines.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use nix::errno::Errno;

/// One allow rule: `c 1:3 rwm`, `b *:* m`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct DeviceRule {
    /// `Some('c')`, `Some('b')`, or `None` for both.
    pub(crate) kind: Option<char>,
    pub(crate) major: Option<u32>,
    pub(crate) minor: Option<u32>,
    /// `BPF_DEVCG_ACC_*` bits: mknod 1, read 2, write 4.
    pub(crate) access: u32,
}

impl DeviceRule {
    /// Parse a `devices.allow` line (`c 1:3 rwm`, `a`).
    pub(crate) fn parse(line: &str) -> Option<DeviceRule> {
        let mut parts = line.split_whitespace();
        let kind = match parts.next()? {
            "a" => {
                return Some(DeviceRule {
                    kind: None,
                    major: None,
                    minor: None,
                    access: 7,
                })
            }
            "c" => Some('c'),
            "b" => Some('b'),
            _ => return None,
        };
        let (major, minor) = parts.next()?.split_once(':')?;
        let number = |s: &str| {
            if s == "*" {
                Some(None)
            } else {
                s.parse().ok().map(Some)
            }
        };
        let mut access = 0;
        for c in parts.next()?.chars() {
            access |= match c {
                'm' => 1,
                'r' => 2,
                'w' => 4,
                _ => return None,
            };
        }
        Some(DeviceRule {
            kind,
            major: number(major)?,
            minor: number(minor)?,
            access,
        })
    }
}

// eBPF opcodes (include/uapi/linux/bpf.h, bpf_common.h).
const LDX_MEM_W: u8 = 0x61;
const ALU64_AND_K: u8 = 0x57;
const ALU64_RSH_K: u8 = 0x77;
const ALU64_MOV_K: u8 = 0xb7;
const ALU64_MOV_X: u8 = 0xbf;
const JMP_JNE_K: u8 = 0x55;
const JMP_EXIT: u8 = 0x95;

/// `struct bpf_insn`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | dst,
        off,
        imm,
    }
}

/// The program for `rules`: registers hold the device type (r2: 1 block, 2 char), the
/// access asked (r3), major (r4) and minor (r5) from `struct bpf_cgroup_dev_ctx` (r1);
/// each rule is a block that returns 1 when everything it names matches, and jumps
/// to the next block at the first mismatch; the end returns 0.
pub(crate) fn program(rules: &[DeviceRule]) -> Vec<Insn> {
    let mut p = vec![
        insn(LDX_MEM_W, 2, 1, 0, 0),
        insn(ALU64_AND_K, 2, 0, 0, 0xffff),
        insn(LDX_MEM_W, 3, 1, 0, 0),
        insn(ALU64_RSH_K, 3, 0, 0, 16),
        insn(LDX_MEM_W, 4, 1, 4, 0),
        insn(LDX_MEM_W, 5, 1, 8, 0),
    ];
    for rule in rules {
        // Each check is a jump past the rest of this block when it fails.
        let mut checks: Vec<Vec<Insn>> = Vec::new();
        if let Some(kind) = rule.kind {
            checks.push(vec![insn(
                JMP_JNE_K,
                2,
                0,
                0,
                if kind == 'b' { 1 } else { 2 },
            )]);
        }
        if rule.access != 7 {
            checks.push(vec![
                insn(ALU64_MOV_X, 0, 3, 0, 0),
                insn(ALU64_AND_K, 0, 0, 0, !(rule.access as i32)),
                insn(JMP_JNE_K, 0, 0, 0, 0),
            ]);
        }
        if let Some(major) = rule.major {
            checks.push(vec![insn(JMP_JNE_K, 4, 0, 0, major as i32)]);
        }
        if let Some(minor) = rule.minor {
            checks.push(vec![insn(JMP_JNE_K, 5, 0, 0, minor as i32)]);
        }
        let allow = [insn(ALU64_MOV_K, 0, 0, 0, 1), insn(JMP_EXIT, 0, 0, 0, 0)];
        if checks.is_empty() {
            // Allows everything: what would follow is unreachable, which the kernel's
            // verifier refuses.
            p.extend(allow);
            return p;
        }
        let block_len: usize = checks.iter().map(Vec::len).sum::<usize>() + allow.len();
        let mut at = 0;
        for check in checks {
            at += check.len();
            let mut check = check;
            let last = check.last_mut().expect("a check ends in its jump");
            last.off = (block_len - at) as i16;
            p.extend(check);
        }
        p.extend(allow);
    }
    p.push(insn(ALU64_MOV_K, 0, 0, 0, 0));
    p.push(insn(JMP_EXIT, 0, 0, 0, 0));
    p
}

const BPF_PROG_LOAD: i64 = 5;
const BPF_PROG_ATTACH: i64 = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

/// The start of `union bpf_attr` for `BPF_PROG_LOAD`; the kernel takes a shorter
/// attribute and treats the rest as zero.
#[repr(C)]
#[derive(Default)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// `union bpf_attr` for `BPF_PROG_ATTACH`.
#[repr(C)]
#[derive(Default)]
struct ProgAttach {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

fn bpf<T>(cmd: i64, attr: &mut T) -> Result<i64, Errno> {
    // SAFETY: `attr` is a live, initialised `#[repr(C)]` prefix of `union bpf_attr` for
    // `cmd`, and its size is passed with it; the kernel reads (and for some commands
    // writes) only those bytes. Pointers inside it outlive the call.
    #[allow(unsafe_code)]
    let ret = unsafe {
        nix::libc::syscall(
            nix::libc::SYS_bpf,
            cmd,
            attr as *mut T,
            std::mem::size_of::<T>(),
        )
    };
    Errno::result(ret)
}

/// Load the program for `rules` and attach it to the cgroup open at `cgroup`. The
/// attachment keeps the program alive as long as the cgroup lives.
pub(crate) fn attach(cgroup: BorrowedFd<'_>, rules: &[DeviceRule]) -> Result<(), Errno> {
    let insns = program(rules);
    let license = b"Apache-2.0\0";
    let mut name = [0u8; 16];
    name[..13].copy_from_slice(b"rdpull_device");
    let mut load = ProgLoad {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        prog_name: name,
        expected_attach_type: BPF_CGROUP_DEVICE,
        ..ProgLoad::default()
    };
    let fd = bpf(BPF_PROG_LOAD, &mut load)?;
    // SAFETY: BPF_PROG_LOAD returned a new file descriptor that nothing else owns.
    #[allow(unsafe_code)]
    let prog = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let mut attach = ProgAttach {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        ..ProgAttach::default()
    };
    bpf(BPF_PROG_ATTACH, &mut attach).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Run `program` as the kernel would on one access: a tiny interpreter of the few
    /// instructions it emits.
    fn run(p: &[Insn], kind: u32, access: u32, major: u32, minor: u32) -> i64 {
        let ctx = [(access << 16) | kind, major, minor];
        let mut r = [0i64; 11];
        let mut pc = 0usize;
        loop {
            let i = p[pc];
            let (dst, src) = ((i.regs & 0xf) as usize, (i.regs >> 4) as usize);
            pc += 1;
            match i.code {
                LDX_MEM_W => r[dst] = i64::from(ctx[i.off as usize / 4]),
                ALU64_AND_K => r[dst] &= i64::from(i.imm),
                ALU64_RSH_K => r[dst] = ((r[dst] as u64) >> i.imm) as i64,
                ALU64_MOV_K => r[dst] = i64::from(i.imm),
                ALU64_MOV_X => r[dst] = r[src],
                JMP_JNE_K if r[dst] != i64::from(i.imm) => pc += i.off as usize,
                JMP_JNE_K => {}
                JMP_EXIT => return r[0],
                other => panic!("opcode {other:#x}"),
            }
        }
    }

    #[test]
    fn the_program_allows_exactly_what_the_rules_allow() {
        let rules: Vec<DeviceRule> = ["c *:* m", "b *:* m", "c 1:3 rwm", "c 136:* rwm", "c 5:1 rw"]
            .iter()
            .map(|l| DeviceRule::parse(l).unwrap())
            .collect();
        let p = program(&rules);
        let (block, chr) = (1, 2);
        let (mknod, read, write) = (1, 2, 4);
        assert_eq!(run(&p, chr, read | write, 1, 3), 1, "/dev/null");
        assert_eq!(run(&p, chr, read, 1, 1), 0, "/dev/mem");
        assert_eq!(run(&p, block, read, 254, 0), 0, "a host disk");
        assert_eq!(run(&p, block, mknod, 254, 0), 1, "mknod of it");
        assert_eq!(run(&p, chr, write, 136, 7), 1, "a pty");
        assert_eq!(run(&p, chr, mknod, 5, 1), 1);
        assert_eq!(run(&p, chr, read | mknod, 5, 1), 0, "m is not in rw");
        assert_eq!(run(&p, chr, read, 5, 2), 0);
        let all = program(&[DeviceRule::parse("a").unwrap()]);
        assert_eq!(run(&all, block, read | write, 8, 0), 1);
        assert_eq!(all.len(), 8, "nothing unreachable after an allow-all");
        assert_eq!(run(&program(&[]), chr, read, 1, 3), 0);
        assert_eq!(DeviceRule::parse("x 1:2 r"), None);
        assert_eq!(DeviceRule::parse("c 1:2 q"), None);
    }
}
