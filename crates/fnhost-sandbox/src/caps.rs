//! Capabilities and privilege drops: an invocation runs with an empty
//! capability bounding set, no ambient/effective/permitted/inheritable
//! capabilities, and `no_new_privs`, so neither exec nor setuid binaries can
//! give privileges back.

use std::io;

use crate::syscall::Syscall;

/// Error of one privilege-dropping step.
#[derive(Debug, thiserror::Error)]
pub enum CapsError {
    #[error("cannot drop capability {cap} from the bounding set: {source}")]
    BoundingSet { cap: u32, source: io::Error },
    #[error("cannot clear ambient capabilities: {source}")]
    Ambient { source: io::Error },
    #[error("cannot clear capability sets with capset: {source}")]
    Capset { source: io::Error },
    #[error("cannot switch to uid {uid} gid {gid}: {source}")]
    SetIds {
        uid: u32,
        gid: u32,
        source: io::Error,
    },
    #[error("cannot set no_new_privs: {source}")]
    NoNewPrivs { source: io::Error },
}

/// Drops every capability of the calling thread for good and sets
/// `no_new_privs`; with `run_as`, also switches to that uid and gid (inside
/// a user namespace: a non-root user). Must run single-threaded
/// (capabilities and ids are per thread).
///
/// Order: bounding set, ambient set, ids (while `CAP_SETUID`/`CAP_SETGID`
/// are still effective), then the capability sets, then `no_new_privs`.
pub fn drop_all_privileges(sys: &dyn Syscall, run_as: Option<(u32, u32)>) -> Result<(), CapsError> {
    // Capabilities above the kernel's last one report EINVAL (see below),
    // so no /proc read is needed (a clone's /proc hides /proc/sys anyway).
    let last = 63;
    for cap in 0..=last {
        match sys.drop_bounding_cap(cap) {
            Ok(()) => {}
            // Capabilities above what the kernel supports report EINVAL.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => break,
            Err(source) => return Err(CapsError::BoundingSet { cap, source }),
        }
    }
    sys.clear_ambient_caps()
        .map_err(|source| CapsError::Ambient { source })?;
    if let Some((uid, gid)) = run_as {
        sys.set_ids(uid, gid)
            .map_err(|source| CapsError::SetIds { uid, gid, source })?;
        // Changing uid clears "dumpable", which makes the process's own
        // /proc/self/* root-owned (environ, fd/ unreadable). It is alone in
        // its pid namespace, so nothing else could ptrace it.
        sys.set_dumpable()
            .map_err(|source| CapsError::SetIds { uid, gid, source })?;
    }
    sys.clear_capability_sets()
        .map_err(|source| CapsError::Capset { source })?;
    sys.set_no_new_privs()
        .map_err(|source| CapsError::NoNewPrivs { source })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recorder::{Recorder, LAST_CAP};

    #[test]
    fn drops_every_supported_capability_then_the_sets_then_no_new_privs() {
        let rec = Recorder::default();
        drop_all_privileges(&rec, None).unwrap();
        let calls = rec.into_calls();
        let caps: Vec<String> = (0..=LAST_CAP)
            .map(|c| format!("capbset_drop {c}"))
            .collect();
        assert_eq!(calls[..caps.len()], caps[..]);
        assert_eq!(
            calls[caps.len()..],
            ["ambient_clear", "capset 0", "no_new_privs"]
        );
    }

    #[test]
    fn ids_change_while_capabilities_still_allow_it() {
        let rec = Recorder::default();
        drop_all_privileges(&rec, Some((1000, 1001))).unwrap();
        let calls = rec.into_calls();
        let tail = &calls[calls.len() - 5..];
        assert_eq!(
            tail,
            [
                "ambient_clear",
                "set_ids 1000:1001",
                "dumpable",
                "capset 0",
                "no_new_privs"
            ]
        );
    }

    #[test]
    fn a_failed_step_stops_the_drop_and_is_named() {
        let rec = Recorder::failing_on("set_ids");
        let err = drop_all_privileges(&rec, Some((1000, 1000))).unwrap_err();
        assert!(
            matches!(
                err,
                CapsError::SetIds {
                    uid: 1000,
                    gid: 1000,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(rec.into_calls().last().unwrap(), "set_ids 1000:1000");

        let rec = Recorder::failing_on("capbset_drop 7");
        let err = drop_all_privileges(&rec, None).unwrap_err();
        assert!(
            matches!(err, CapsError::BoundingSet { cap: 7, .. }),
            "{err}"
        );
        assert_eq!(rec.into_calls().len(), 8);
    }
}
