//! OCI whiteout names. An OCI layer deletes a path of the layers below it
//! with an empty `.wh.<name>` beside it, and hides all of a directory's
//! lower contents with `.wh..wh..opq` inside it. overlayfs, which stacks the
//! layers as separate lower dirs, wants a character device 0/0 and a
//! directory with `trusted.overlay.opaque=y` instead; the extractor writes
//! those.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

/// Prefix of whiteout file names.
const WHITEOUT: &[u8] = b".wh.";
/// Name of the opaque-directory marker.
const OPAQUE: &[u8] = b".wh..wh..opq";
/// Prefix of aufs bookkeeping entries (`.wh..wh.plnk`, `.wh..wh.aufs`), which
/// carry no meaning for overlayfs.
const META: &[u8] = b".wh..wh.";

/// What a layer entry's file name means.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum WhiteoutName<'a> {
    /// An ordinary entry.
    Plain,
    /// `.wh..wh..opq`: the directory holding it is opaque.
    Opaque,
    /// `.wh..wh.*` other than the opaque marker: skipped.
    Meta,
    /// `.wh.<name>`: `<name>` in the same directory is deleted.
    Whiteout(&'a OsStr),
    /// `.wh.`, `.wh..` or `.wh...`: names nothing that can be deleted.
    Invalid,
}

pub(crate) fn classify(name: &OsStr) -> WhiteoutName<'_> {
    let bytes = name.as_bytes();
    if bytes == OPAQUE {
        return WhiteoutName::Opaque;
    }
    if bytes.starts_with(META) {
        return WhiteoutName::Meta;
    }
    match bytes.strip_prefix(WHITEOUT) {
        None => WhiteoutName::Plain,
        Some(b"" | b"." | b"..") => WhiteoutName::Invalid,
        Some(hidden) => WhiteoutName::Whiteout(OsStr::from_bytes(hidden)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_whiteout_names() {
        fn c(s: &str) -> WhiteoutName<'_> {
            classify(OsStr::new(s))
        }
        assert_eq!(c("passwd"), WhiteoutName::Plain);
        assert_eq!(c(".whx"), WhiteoutName::Plain);
        assert_eq!(
            c(".wh.passwd"),
            WhiteoutName::Whiteout(OsStr::new("passwd"))
        );
        assert_eq!(
            c(".wh..bashrc"),
            WhiteoutName::Whiteout(OsStr::new(".bashrc"))
        );
        assert_eq!(c(".wh..wh..opq"), WhiteoutName::Opaque);
        assert_eq!(c(".wh..wh.plnk"), WhiteoutName::Meta);
        assert_eq!(c(".wh."), WhiteoutName::Invalid);
        assert_eq!(c(".wh.."), WhiteoutName::Invalid);
    }
}
