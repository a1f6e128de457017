//! fnhost pools: which zygotes and clones each function keeps, and when. A
//! [`Host`] holds one [`pool::FunctionPool`] per function; each admits
//! requests, keeps warm zygotes, pre-forked ready clones and pooled cgroups,
//! scales, hibernates and evicts, and runs invocations in fresh clones. The
//! processes themselves are `fnhost_zygote::daemon`'s, behind `pool::backend`.
#![forbid(unsafe_code)]

pub mod budget;
pub mod error;
pub mod host;
pub mod ledger;
pub mod pool;
mod telemetry;

pub use error::InvokeError;
pub use host::{Host, HostError, HostOptions, ReloadReport};
pub use pool::{Invocation, PoolStatus, StartKind, Timings};
pub use telemetry::Labels;
