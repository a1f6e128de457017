//! Hibernation of idle zygotes: a zygote writes its private memory to a
//! snapshot file and drops it, handing the daemon a userfaultfd it created
//! (user-mode-only) so that any page it touches while asleep is served from
//! the file; on wake-up it maps the file back copy-on-write ([`remap()`]).
//!
//! Zygote side: [`prepare`], then [`hibernate()`] (see the [`hibernate`](mod@hibernate)
//! module for the protocol and its constraints), then [`remap()`]. Daemon
//! side: [`Snapshot`] and [`asleep`]. [`wake`] (with [`Sleeper`] and
//! [`WorkingSet`]) is the earlier restore that copies every page back
//! through the userfaultfd; the daemon no longer uses it (see `remap`). The raw syscalls (`userfaultfd(2)` and its
//! ioctls, the bare calls made while hibernated) live in
//! `fnhost_sandbox::sys`.

pub mod anonymize;
pub mod asleep;
pub mod hibernate;
mod maps_text;
pub mod regions;
pub mod remap;
mod resident;
pub mod restore;
pub mod shared;
pub mod snapshot;
pub mod working_set;

pub use hibernate::{hibernate, prepare, HibernateError, Prepared, Slept, WindowStats};
pub use regions::{
    layout, layout_offset, page_size, parse_maps, Region, RegionError, RegionTable, MAX_REGIONS,
};
pub use remap::{remap, remap_shared, FileId, GROWTH_TAIL};
pub use restore::{wake, RestoreError, Sleeper, WakeStats};
pub use shared::{SharedBase, SharedRun, Sharing, MAX_SHARED_RUNS};
pub use snapshot::{ClosedSnapshot, ReadBack, SealStats, Snapshot};
pub use working_set::WorkingSet;
