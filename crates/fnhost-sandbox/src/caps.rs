//! Capabilities and privilege drops: an invocation runs with an empty
//! capability bounding set, no ambient/effective/permitted/inheritable
//! capabilities, and `no_new_privs`, so neither exec nor setuid binaries can
//! give privileges back.

use std::io;

use crate::sys;

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
pub fn drop_all_privileges(run_as: Option<(u32, u32)>) -> Result<(), CapsError> {
    // Capabilities above the kernel's last one report EINVAL (see below),
    // so no /proc read is needed (a clone's /proc hides /proc/sys anyway).
    let last = 63;
    for cap in 0..=last {
        match sys::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong) {
            Ok(_) => {}
            // Capabilities above what the kernel supports report EINVAL.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => break,
            Err(source) => return Err(CapsError::BoundingSet { cap, source }),
        }
    }
    sys::prctl(
        libc::PR_CAP_AMBIENT,
        libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
    )
    .map_err(|source| CapsError::Ambient { source })?;
    if let Some((uid, gid)) = run_as {
        sys::set_ids_raw(uid, gid).map_err(|source| CapsError::SetIds { uid, gid, source })?;
        // Changing uid clears "dumpable", which makes the process's own
        // /proc/self/* root-owned (environ, fd/ unreadable). It is alone in
        // its pid namespace, so nothing else could ptrace it.
        sys::prctl(libc::PR_SET_DUMPABLE, 1).map_err(|source| CapsError::SetIds {
            uid,
            gid,
            source,
        })?;
    }
    sys::capset_all(0).map_err(|source| CapsError::Capset { source })?;
    sys::prctl(libc::PR_SET_NO_NEW_PRIVS, 1).map_err(|source| CapsError::NoNewPrivs { source })?;
    Ok(())
}
