//! `/proc/self/smaps`, read into a mapping of its own.
//!
//! Hibernation lists the zygote's private anonymous mappings from
//! `/proc/self/smaps`. Read into a `String`, the text of a zygote with many
//! mappings (a woken zygote of a sharing group interleaves two files) grows
//! past glibc's mmap threshold: the buffer is then an anonymous mapping of
//! its own, listed in the very text it holds, and gone once the text is
//! dropped, so registering it with the userfaultfd fails (EINVAL). Here the
//! text lives in a mapping this module makes, whose range the caller leaves
//! out of hibernation ([`MapsText::range`]).

use std::io::{self, Read};

use fnhost_sandbox::sys::bare;

use crate::regions::{self, Region};

/// First size tried; doubled until the text fits.
const FIRST_LEN: u64 = 1 << 20;
/// Past this the zygote has far more mappings than it may hibernate.
const MAX_LEN: u64 = 1 << 28;

/// The text of `/proc/self/smaps` in a private anonymous mapping, unmapped
/// on drop.
pub struct MapsText {
    addr: u64,
    cap: u64,
    len: usize,
}

impl MapsText {
    /// Reads `/proc/self/smaps` whole.
    pub fn read() -> io::Result<MapsText> {
        let mut cap = FIRST_LEN;
        loop {
            let mut text = MapsText {
                addr: bare::mmap_anonymous(cap)?,
                cap,
                len: 0,
            };
            // The mapping exists before the kernel writes the text, so the
            // text lists it.
            let mut file = std::fs::File::open("/proc/self/smaps")?;
            // SAFETY: `addr` is a fresh read-write mapping of `cap` bytes
            // owned by `text`.
            let buf = unsafe { std::slice::from_raw_parts_mut(text.addr as *mut u8, cap as usize) };
            loop {
                match file.read(&mut buf[text.len..]) {
                    Ok(0) => return Ok(text),
                    Ok(n) => text.len += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
                if text.len == buf.len() {
                    break;
                }
            }
            if cap >= MAX_LEN {
                return Err(io::Error::other(format!(
                    "/proc/self/smaps is larger than {} MiB",
                    MAX_LEN >> 20
                )));
            }
            cap *= 2;
        }
    }

    /// The text (smaps is ASCII; anything else reads as empty).
    pub fn as_str(&self) -> &str {
        // SAFETY: the first `len` bytes of the mapping were written by read.
        let bytes = unsafe { std::slice::from_raw_parts(self.addr as *const u8, self.len) };
        std::str::from_utf8(bytes).unwrap_or("")
    }

    /// The mapping holding the text: not to be hibernated.
    pub fn range(&self) -> Region {
        Region {
            start: self.addr,
            len: regions::page_ceil(self.cap, regions::page_size()),
        }
    }
}

impl Drop for MapsText {
    fn drop(&mut self) {
        // SAFETY: the mapping was made by `read` and nothing borrows it
        // past `self`.
        let _ = unsafe { bare::munmap(self.addr, self.cap) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_lists_its_own_mapping() {
        let text = MapsText::read().expect("read smaps");
        let own = text.range();
        let listed = regions::parse_maps(text.as_str());
        assert!(
            listed
                .iter()
                .any(|r| r.start <= own.start && own.end() <= r.end()),
            "{own:?} not in {listed:?}"
        );
        assert!(text.as_str().contains("[stack]"));
    }
}
