//! fnhost-layers: the content-addressed store of read-only layer directories
//! that sandbox roots are overlaid from (code, runtime, host skeleton and
//! imported image layers), and the host directories to bind beside them.
#![forbid(unsafe_code)]

mod error;
mod host;
mod image;
mod plan;
mod seal;
mod source;
mod store;
mod write;

pub use error::LayerError;
pub use host::{Bind, HostLayer};
pub use image::{Image, ImageConfig, ImageError, ImageFormat, ImageRef, ImportLimits};
pub use store::{ImportBatch, Layer, LayerFile, LayerStore};
