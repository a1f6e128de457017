//! fnhost pools: the daemon's side of zygotes and clones. A [`Host`] holds
//! one [`pool::FunctionPool`] per function; each keeps warm zygotes,
//! pre-forked ready clones and pooled cgroups, and runs invocations in fresh
//! clones with the function's limits.

pub mod budget;
pub mod error;
mod fd;
pub mod hibernation;
pub mod host;
pub mod pool;
pub mod process;
pub mod sandbox;
mod telemetry;
pub mod zygote;

pub use error::InvokeError;
pub use host::{Host, HostError, HostOptions, ReloadReport};
pub use pool::{Invocation, PoolStatus, StartKind, Timings};
