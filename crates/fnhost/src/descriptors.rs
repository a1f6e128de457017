//! The daemon's descriptor limit: every kept zygote and clone holds some
//! (see `fnhost_pool::budget`), every connection a socket, so `fnhost
//! serve` raises its soft `RLIMIT_NOFILE` to the hard limit at start, says
//! what it got, and gives the pools what connections and a reserve leave:
//! past that, idle zygotes stop rather than a request failing with
//! `EMFILE`.

use fnhost_pool::budget::{CLONE_DESCRIPTORS, HIBERNATED_ZYGOTE_DESCRIPTORS, ZYGOTE_DESCRIPTORS};
use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// Descriptors a zygote holds in the daemon with one clone, at most
/// (measured: 5 for a warm zygote with one ready clone, 1 for one
/// hibernated with a snapshot).
pub const PER_ZYGOTE: u64 = (ZYGOTE_DESCRIPTORS + CLONE_DESCRIPTORS) as u64;

/// Descriptors kept for everything but sandboxes and connections:
/// listeners, logs, the layer store, cgroup files opened for a moment.
pub const RESERVE: u64 = 256;

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
    zygotes * PER_ZYGOTE + connections + RESERVE
}

/// What a limit of `limit` descriptors leaves zygotes and clones once
/// `connections` and the reserve are set aside.
pub fn for_sandboxes(limit: u64, connections: u64) -> u64 {
    limit.saturating_sub(connections + RESERVE)
}

/// Raises the limit and warns when it is below what the config may need.
/// Returns the limit in force, if it could be read.
pub fn prepare(zygotes: u64, connections: u64) -> Option<u64> {
    match raise_nofile() {
        Ok(limit) => {
            let need = needed(zygotes, connections);
            if limit < need {
                let keeps =
                    for_sandboxes(limit, connections) / HIBERNATED_ZYGOTE_DESCRIPTORS as u64;
                tracing::warn!(
                    limit,
                    need,
                    zygotes,
                    keeps,
                    "the open-file limit is too low to keep a zygote of every function: past about \
                     `keeps` hibernated zygotes the least recently used stop and their functions \
                     start cold; raise LimitNOFILE (systemd) or `ulimit -Hn`, or lower \
                     server.max_connections"
                );
            }
            Some(limit)
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot raise the open-file limit (RLIMIT_NOFILE)");
            None
        }
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
    fn sandboxes_get_what_connections_and_the_reserve_leave() {
        assert_eq!(for_sandboxes(20_000, 4096), 20_000 - 4096 - 256);
        assert_eq!(for_sandboxes(1024, 4096), 0);
    }

    #[test]
    fn raising_leaves_soft_equal_to_hard() {
        let hard = raise_nofile().expect("raise");
        let (soft, after) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
        assert_eq!((soft, after), (hard, hard));
    }
}
