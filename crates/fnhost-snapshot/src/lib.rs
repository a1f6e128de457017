//! Hibernation of idle zygotes: a zygote writes its private memory to a
//! snapshot file and drops it; the daemon later copies it back through a
//! userfaultfd the zygote created (user-mode-only) and handed over, serving
//! page faults on demand meanwhile.
//!
//! Zygote side: [`prepare`], then [`hibernate()`] (see the [`hibernate`](mod@hibernate)
//! module for the protocol and its constraints). Daemon side: [`Snapshot`],
//! [`Sleeper`] and [`wake`]. The raw syscalls (`userfaultfd(2)` and its
//! ioctls, the bare calls made while hibernated) live in
//! `fnhost_sandbox::sys`.

pub mod anonymize;
pub mod asleep;
pub mod hibernate;
pub mod regions;
pub mod remap;
mod resident;
pub mod restore;
pub mod snapshot;
pub mod working_set;

pub use hibernate::{hibernate, prepare, HibernateError, Prepared, WindowStats};
pub use regions::{
    layout, layout_offset, page_size, parse_maps, Region, RegionError, RegionTable, MAX_REGIONS,
};
pub use remap::{remap, FileId, GROWTH_TAIL};
pub use restore::{wake, RestoreError, Sleeper, WakeStats};
pub use snapshot::{SealStats, Snapshot};
pub use working_set::WorkingSet;
