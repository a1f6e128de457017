//! fnhost pools: the daemon's side of zygotes and clones. A [`Host`] holds
//! one [`pool::FunctionPool`] per function; each keeps warm zygotes,
//! pre-forked ready clones and pooled cgroups, and runs invocations in fresh
//! clones with the function's limits.

pub mod budget;
pub mod error;
pub mod host;
pub mod pool;
mod telemetry;

// Transition re-exports: the daemon's handles on zygotes and clones live in
// `fnhost_zygote::daemon` now (`Zygote` is `ZygoteHandle`, `Sandbox` is
// `CloneHandle`). New code should name those directly.

/// Re-exports of `fnhost_zygote::daemon` (zygote handle).
pub mod zygote {
    pub use fnhost_zygote::daemon::{
        CloneError, Cloned, Hibernation, Placement, StartError, Woken, ZygoteHandle as Zygote,
    };
}
/// Re-exports of `fnhost_zygote::daemon` (clone handle).
pub mod sandbox {
    pub use fnhost_zygote::daemon::{CloneHandle as Sandbox, RunOutcome, Slot};
}
/// Re-exports of `fnhost_zygote::daemon` (zygote process).
pub mod process {
    pub use fnhost_zygote::daemon::{
        spawn_zygote, IdMap, SpawnError, ZygoteProcess, INIT_SUBCOMMAND,
    };
}
/// Re-exports of `fnhost_zygote::daemon` (snapshot store).
pub mod hibernation {
    pub use fnhost_zygote::daemon::SnapshotStore;
}

pub use error::InvokeError;
pub use host::{Host, HostError, HostOptions, ReloadReport};
pub use pool::{Invocation, PoolStatus, StartKind, Timings};
