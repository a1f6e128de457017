//! The daemon's descriptor limit: every zygote holds a control socket and
//! a pidfd, every connection a socket, so `fnhost serve` raises its soft
//! `RLIMIT_NOFILE` to the hard limit at start and says what it got.

use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// Descriptors the daemon holds per running zygote (control socket, pidfd,
/// cgroup and log pipes): 10.5 measured with 20 zygotes running.
pub const PER_ZYGOTE: u64 = 12;

/// Raises the soft limit to the hard one; returns the limit in force.
pub fn raise_nofile() -> nix::Result<u64> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
        tracing::info!(
            from = soft,
            to = hard,
            "raised the open-file limit (RLIMIT_NOFILE) to its hard limit"
        );
    }
    Ok(hard)
}

/// Descriptors a host with `zygotes` zygotes running (warm or
/// hibernated) and `connections` open connections may need.
pub fn needed(zygotes: u64, connections: u64) -> u64 {
    zygotes * PER_ZYGOTE + connections + 256
}

/// Raises the limit and warns when it is below what the config may need.
pub fn prepare(zygotes: u64, connections: u64) {
    match raise_nofile() {
        Ok(limit) => {
            let need = needed(zygotes, connections);
            if limit < need {
                tracing::warn!(
                    limit,
                    need,
                    zygotes,
                    "the open-file limit may be too low for this many warm zygotes and connections: \
                     raise LimitNOFILE (systemd) or `ulimit -Hn`, or lower server.max_connections"
                );
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit (RLIMIT_NOFILE)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn need_grows_with_zygotes_and_connections() {
        assert_eq!(needed(0, 0), 256);
        assert_eq!(needed(10_000, 4096), 10_000 * PER_ZYGOTE + 4096 + 256);
    }

    #[test]
    fn raising_leaves_soft_equal_to_hard() {
        let hard = raise_nofile().expect("raise");
        let (soft, after) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
        assert_eq!((soft, after), (hard, hard));
    }
}
