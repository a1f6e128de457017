//! Errors of the layer store: one variant per step, each naming the path it
//! was working on.

use std::io;
use std::path::PathBuf;

/// A layer store operation that failed, with the path it was working on.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("cannot create layer store directory {path}: {source}")]
    CreateStore { path: PathBuf, source: io::Error },
    #[error("cannot remove stale build {path} from the layer store: {source}")]
    CleanTmp { path: PathBuf, source: io::Error },
    #[error(
        "layer prefix {prefix:?} must be a relative path made of plain names (no leading '/', no '.' or '..')"
    )]
    InvalidPrefix { prefix: PathBuf },
    #[error(
        "layer file path {path:?} must be a non-empty relative path made of plain names (no leading '/', no '.' or '..')"
    )]
    InvalidFilePath { path: PathBuf },
    #[error(
        "layer path {path:?} is given twice, or is both a file and the directory of another entry; give each path once"
    )]
    ConflictingPath { path: PathBuf },
    #[error("cannot read {path} to import it into a layer: {source}")]
    ReadSource { path: PathBuf, source: io::Error },
    #[error(
        "cannot import {path}: it is a {kind}, and a layer holds only regular files, directories and symlinks; remove it from the source tree"
    )]
    UnsupportedFileType { path: PathBuf, kind: &'static str },
    #[error(
        "{path} changed while it was being imported into a layer; import again once nothing modifies the source tree"
    )]
    SourceChanged { path: PathBuf },
    #[error("cannot write {path} in the layer store: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot move finished layer {from} into place at {to}: {source}")]
    Commit {
        from: PathBuf,
        to: PathBuf,
        source: io::Error,
    },
    #[error("cannot take the build lock {path} of the layer store: {source}")]
    Lock { path: PathBuf, source: io::Error },
    #[error("cannot list layers in {path}: {source}")]
    List { path: PathBuf, source: io::Error },
    #[error("cannot inspect host path {path} for the host layer: {source}")]
    HostPath { path: PathBuf, source: io::Error },
    /// Boxed: image errors carry several strings, and every caller of the
    /// store passes `LayerError` around.
    #[error(transparent)]
    Image(Box<crate::image::ImageError>),
}

impl From<crate::image::ImageError> for LayerError {
    fn from(e: crate::image::ImageError) -> Self {
        LayerError::Image(Box::new(e))
    }
}
