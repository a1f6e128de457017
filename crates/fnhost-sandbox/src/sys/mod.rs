//! Raw syscalls, each wrapped exactly once in a safe function returning
//! `io::Result` (or an `unsafe fn` with its contract, where the call moves
//! or frees memory), grouped by what they act on. The common ones are
//! re-exported here (`sys::clone3`, `sys::exit_immediately`, ...).

pub mod bare;
pub mod fd;
pub mod ids;
pub mod process;
pub mod spawn;
pub mod uffd;

pub use fd::{
    close_from, dup_onto_cloexec, dup_to, pipe_cloexec, poll_readable, read_byte_raw,
    readable_bytes, write_all_raw,
};
pub use ids::{capset_all, map_own_ids, prctl, set_ids_raw};
pub use process::{
    children_of, clone3, current_tid, disable_aslr, execve, exit_immediately, pidfd_getfd,
    pidfd_nspids, pidfd_open, pidfd_send_signal, process_state, task_states, thread_count_of,
    undo_dontfork, waitid_pidfd, CStringArray, CloneSpec, ExitStatus, Forked, CLONE_INTO_CGROUP,
    CLONE_PIDFD,
};
pub use spawn::{clone3_exec, ExecWait};
