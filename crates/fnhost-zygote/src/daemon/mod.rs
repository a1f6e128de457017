//! The daemon's side of zygotes and clones (feature `daemon`): starting a
//! zygote process, its handle and control channel, hibernation, the handle
//! on one clone, and the snapshot store. The pools use only these types.

mod channel;
mod clone;
mod faults;
mod fd;
mod kept;
mod output;
mod sleep;
mod snapshots;
mod spawn;
mod zygote;

pub use clone::{CloneHandle, ReadError, RunOutcome, SetupError, Slot};
pub use faults::FaultError;
pub use sleep::{HibernateError, Hibernation, WakeError, Woken};
pub use snapshots::SnapshotStore;
pub use spawn::{spawn_zygote, IdMap, SpawnError, ZygoteProcess, INIT_SUBCOMMAND};
pub use zygote::{CloneError, Cloned, Placement, StartError, ZygoteHandle, CLONE_REPLY_TIMEOUT};
