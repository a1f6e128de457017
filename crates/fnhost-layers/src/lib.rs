//! fnhost-layers: the content-addressed store of read-only layer directories
//! that sandbox roots are overlaid from (code, runtime and host skeleton
//! layers), and the host directories to bind beside them.
#![forbid(unsafe_code)]

mod error;
mod host;
mod plan;
mod source;
mod store;
mod write;

pub use error::LayerError;
pub use host::{HostBind, HostLayer};
pub use store::{Layer, LayerFile, LayerStore};
