//! A static probe run inside test containers (built by the tests with `rustc -C
//! target-feature=+crt-static`, no crates): it makes the calls Docker's seccomp
//! profile denies and prints how each ended, then the process's seccomp mode and
//! effective capabilities.
//! `name=ok` when the call succeeded, `name=EPERM` (or another errno) when it failed.

use std::ffi::CString;

extern "C" {
    fn syscall(number: i64, ...) -> i64;
}

#[cfg(target_arch = "x86_64")]
mod nr {
    pub const UNSHARE: i64 = 272;
    pub const KEYCTL: i64 = 250;
    pub const ADD_KEY: i64 = 248;
    pub const MOUNT: i64 = 165;
    pub const BPF: i64 = 321;
    pub const USERFAULTFD: i64 = 323;
    pub const CLONE3: i64 = 435;
    pub const GETPID: i64 = 39;
}

#[cfg(target_arch = "aarch64")]
mod nr {
    pub const UNSHARE: i64 = 97;
    pub const KEYCTL: i64 = 219;
    pub const ADD_KEY: i64 = 217;
    pub const MOUNT: i64 = 40;
    pub const BPF: i64 = 280;
    pub const USERFAULTFD: i64 = 282;
    pub const CLONE3: i64 = 435;
    pub const GETPID: i64 = 172;
}

fn errno_name(e: i32) -> String {
    match e {
        1 => "EPERM".into(),
        13 => "EACCES".into(),
        22 => "EINVAL".into(),
        38 => "ENOSYS".into(),
        126 => "ENOKEY".into(),
        other => format!("errno{other}"),
    }
}

fn report(name: &str, ret: i64) -> String {
    if ret >= 0 {
        format!("{name}=ok")
    } else {
        let e = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
        format!("{name}={}", errno_name(e))
    }
}

fn main() {
    // Read first: a user namespace made below would show its own capabilities.
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or("?")
            .trim()
            .to_string()
    };
    let (seccomp, capeff) = (field("Seccomp:"), field("CapEff:"));
    let c = |s: &str| CString::new(s).unwrap();
    let (user, key, value, none, mnt, tmpfs) = (c("user"), c("k"), c("v"), c("none"), c("/mnt"), c("tmpfs"));
    let mut out = Vec::new();
    // SAFETY: each call gets arguments of the types the kernel expects; pointers are to
    // live C strings or null.
    unsafe {
        // KEYCTL_GET_KEYRING_ID of the session keyring, not creating it.
        out.push(report("keyctl", syscall(nr::KEYCTL, 0i64, -3i64, 0i64)));
        out.push(report(
            "add_key",
            syscall(nr::ADD_KEY, user.as_ptr(), key.as_ptr(), value.as_ptr(), 1i64, -2i64),
        ));
        out.push(report(
            "mount",
            syscall(nr::MOUNT, none.as_ptr(), mnt.as_ptr(), tmpfs.as_ptr(), 0i64, 0i64),
        ));
        // BPF_MAP_CREATE with a zeroed attribute: EINVAL when allowed, EPERM when not.
        let attr = [0u8; 64];
        out.push(report("bpf", syscall(nr::BPF, 0i64, attr.as_ptr(), 64i64)));
        out.push(report("userfaultfd", syscall(nr::USERFAULTFD, 0i64)));
        // clone3 with a size too small: EINVAL when allowed, ENOSYS under the profile.
        out.push(report("clone3", syscall(nr::CLONE3, attr.as_ptr(), 0i64)));
        out.push(report("getpid", syscall(nr::GETPID)));
        // Last: when allowed, it leaves this process in a user namespace of its own.
        out.push(report("unshare-user", syscall(nr::UNSHARE, 0x1000_0000i64)));
    }
    println!(
        "{} seccomp={} capeff={}",
        out.join(" "),
        seccomp,
        capeff
    );
}
