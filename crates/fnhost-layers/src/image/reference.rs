//! Image references, `name[:tag]`: what `--name` and a function's `image`
//! key accept, and where an image's record lives in the store.

use std::fmt;
use std::path::PathBuf;

use super::error::ImageError;

/// Longest name and tag we accept (Docker's limits).
const MAX_NAME: usize = 255;
const MAX_TAG: usize = 128;

/// A validated `name:tag`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ImageRef {
    /// Slash-separated lowercase components, e.g. `library/python`.
    pub name: String,
    /// `latest` when the reference names none.
    pub tag: String,
}

impl ImageRef {
    /// Parses `name[:tag]`. Name components are lowercase letters, digits and
    /// single `.`, `_`, `-` separators (as Docker's); the tag is up to 128 of
    /// letters, digits, `_`, `.`, `-`, not starting with `.` or `-`.
    pub fn parse(reference: &str) -> Result<ImageRef, ImageError> {
        let invalid = |reason: &str| ImageError::InvalidReference {
            reference: reference.to_owned(),
            reason: reason.to_owned(),
        };
        let (name, tag) = match reference.rsplit_once(':') {
            Some((name, tag)) => (name, tag),
            None => (reference, "latest"),
        };
        if name.is_empty() || name.len() > MAX_NAME {
            return Err(invalid("the name must be 1 to 255 characters"));
        }
        for component in name.split('/') {
            if !valid_component(component) {
                return Err(invalid(
                    "name components must be lowercase letters and digits, separated by '.', '_' or '-' (e.g. \"python\", \"team/app\")",
                ));
            }
        }
        let tag_ok = !tag.is_empty()
            && tag.len() <= MAX_TAG
            && !tag.starts_with(['.', '-'])
            && tag
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if !tag_ok {
            return Err(invalid(
                "the tag must be 1 to 128 letters, digits, '_', '.' or '-', not starting with '.' or '-'",
            ));
        }
        Ok(ImageRef {
            name: name.to_owned(),
            tag: tag.to_owned(),
        })
    }

    /// Path of the record below `<store>/images`.
    pub(crate) fn record_path(&self) -> PathBuf {
        PathBuf::from(&self.name).join(format!("{}.json", self.tag))
    }
}

fn valid_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.is_empty() || !alnum(&bytes[0]) || !alnum(&bytes[bytes.len() - 1]) {
        return false;
    }
    bytes
        .iter()
        .all(|b| alnum(b) || matches!(b, b'.' | b'_' | b'-'))
        && !bytes
            .windows(2)
            .any(|w| !alnum(&w[0]) && !alnum(&w[1]) && w != b"__")
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.name, self.tag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_tags() {
        let r = ImageRef::parse("pyimg:1").expect("valid");
        assert_eq!((r.name.as_str(), r.tag.as_str()), ("pyimg", "1"));
        assert_eq!(ImageRef::parse("team/app").expect("valid").tag, "latest");
        assert_eq!(
            ImageRef::parse("a.b_c-d/e__f:V1.2-rc_3")
                .expect("valid")
                .to_string(),
            "a.b_c-d/e__f:V1.2-rc_3"
        );
        assert_eq!(
            ImageRef::parse("a/b:1").expect("valid").record_path(),
            PathBuf::from("a/b/1.json")
        );
    }

    #[test]
    fn rejects_bad_references() {
        for bad in [
            "", ":1", "Py:1", "../x:1", "a//b:1", "/a:1", "a/:1", "a..b:1", "-a:1", "a:", "a:.x",
            "a:-x", "a:x/y", "a b:1", "a:1:2",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad:?} should be rejected");
        }
        let long_tag = format!("a:{}", "t".repeat(129));
        assert!(ImageRef::parse(&long_tag).is_err());
    }
}
