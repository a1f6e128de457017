//! Attempts to regain privileges: `capset`, `setuid(0)`, and what the
//! process's capability sets, `no_new_privs` and seccomp mode are.

use std::os::raw::c_long;

use crate::outcome::{verdict, Outcome};

/// Capability sets of this process, from /proc/self/status.
fn cap_line(field: &str) -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field).map(|v| v.trim().to_string()))
        })
        .unwrap_or_default()
}

pub(crate) fn privileges() -> Vec<(&'static str, Outcome)> {
    // struct __user_cap_header_struct { version, pid } (v3) and two data
    // words { effective, permitted, inheritable } with every bit set.
    let header = [0x2008_0522u32, 0];
    let data = [u32::MAX; 6];
    let capset =
        // SAFETY: valid v3 header and two data structs.
        verdict(unsafe { libc::syscall(libc::SYS_capset, header.as_ptr(), data.as_ptr()) });
    // SAFETY: plain syscall; uid 0 setting uid 0 changes nothing.
    let setuid = verdict(unsafe { libc::setuid(0) } as c_long);
    let eff = cap_line("CapEff:");
    let bnd = cap_line("CapBnd:");
    let prm = cap_line("CapPrm:");
    let empty = |s: &str| !s.is_empty() && s.chars().all(|c| c == '0');
    let still_empty = empty(&eff) && empty(&bnd) && empty(&prm);
    let nnp = cap_line("NoNewPrivs:");
    let seccomp = cap_line("Seccomp:");
    vec![(
        "regain_capabilities",
        Outcome {
            denied: capset.denied && still_empty,
            detail: format!(
                "capset: {}; setuid(0): {}; CapEff {eff} CapPrm {prm} CapBnd {bnd}; NoNewPrivs {nnp}; Seccomp {seccomp}",
                capset.detail, setuid.detail
            ),
        },
    )]
}
