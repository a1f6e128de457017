//! Errors of image import and lookup: one variant per step, each naming the
//! image, archive member or layer entry it was working on.

use std::io;
use std::path::PathBuf;

/// An image import or lookup that failed.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },
    #[error("cannot read image source {path}: {source}")]
    ReadSource { path: PathBuf, source: io::Error },
    #[error(
        "{path} is neither a directory nor a tar archive (plain, gzip or zstd); give an OCI image layout, a `docker save` archive, a rootfs tarball or a directory"
    )]
    UnknownFormat { path: PathBuf },
    #[error("{what} is compressed with {compression}, which is not supported; use gzip, zstd or no compression")]
    UnsupportedCompression {
        what: String,
        compression: &'static str,
    },
    #[error("image archive {path} is missing {member}")]
    MissingMember { path: PathBuf, member: String },
    #[error("cannot parse {what}: {source}")]
    Json {
        what: String,
        source: serde_json::Error,
    },
    #[error("{what} is larger than {limit} bytes")]
    MetadataTooLarge { what: String, limit: u64 },
    #[error("unsupported {what}: {detail}")]
    Unsupported { what: String, detail: String },
    #[error(
        "{what} has digest {actual} but the image says {expected}; the archive is corrupt or was tampered with"
    )]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("{what} is {actual} bytes but the image says {expected}")]
    SizeMismatch {
        what: String,
        expected: u64,
        actual: u64,
    },
    #[error(
        "the image source holds {count} images ({candidates}); keep one, or tag the wanted one with org.opencontainers.image.ref.name = the tag you import"
    )]
    AmbiguousImage { count: usize, candidates: String },
    #[error("the image source holds no image for linux/{arch}")]
    NoImage { arch: &'static str },
    #[error("layer {layer}: entry {entry:?} rejected: {reason}")]
    UnsafeEntry {
        layer: String,
        entry: String,
        reason: String,
    },
    #[error(
        "layer {layer} has more than {limit} entries; raise the import entry limit if this image is legitimate"
    )]
    TooManyEntries { layer: String, limit: u64 },
    #[error(
        "image is larger than {limit} bytes once extracted (at {layer}); raise the import size limit if this image is legitimate"
    )]
    TooLarge { layer: String, limit: u64 },
    #[error("cannot read layer {layer}: {source}")]
    ReadLayer { layer: String, source: io::Error },
    #[error("cannot write entry {entry:?} of layer {layer} into the store: {source}")]
    WriteEntry {
        layer: String,
        entry: String,
        source: io::Error,
    },
    #[error(
        "cannot write overlayfs {what} for {entry:?} of layer {layer}: {source}; applying whiteouts needs root (CAP_MKNOD and CAP_SYS_ADMIN)"
    )]
    Whiteout {
        layer: String,
        entry: String,
        what: &'static str,
        source: io::Error,
    },
    #[error("image {reference} is not in the store (imported: {imported}); import it with `fnhost image import PATH --name {reference}`")]
    NotFound { reference: String, imported: String },
    #[error(
        "layer {digest} of image {reference} is missing from the store; import the image again"
    )]
    MissingLayer { reference: String, digest: String },
    #[error("cannot {action} image record {path}: {source}")]
    Record {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}
