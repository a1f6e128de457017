//! Written private file mappings — the `.data` of the interpreter and of
//! each library, about 1.2 MiB for CPython, almost all of it dirtied at
//! start — cannot be registered for missing faults, so they would stay
//! resident in a sleeping zygote. Before hibernating, the zygote replaces
//! each one with an anonymous mapping holding the same bytes (copied into
//! a fresh anonymous mapping, then moved over the original with one
//! `mremap`), after which it hibernates with the rest. Clones inherit the
//! anonymous mapping exactly as they inherited the private one; a page
//! that was never written becomes a private copy (a few KiB per zygote).
//!
//! The copy and the move must not race a write to the mapping: the caller
//! is single-threaded with signals blocked, and between them only this
//! module's own loop and bare system calls run (no allocation, no libc
//! wrapper beyond `syscall`, no call through another object's PLT, so no
//! lazy symbol resolution writes a GOT meanwhile).

use std::io;

use fnhost_sandbox::sys::bare;

use crate::regions::Region;

/// Private, writable, file-backed mappings worth converting: `rw-p`, a
/// real path (not `[...]`), and wholly inside the file (reading a page
/// past the end of a file mapping would SIGBUS). `file_len` gives the size
/// of the file named by a line's path, device and inode fields; `None`
/// (unknown) leaves the mapping alone.
pub fn file_data_mappings(
    maps: &str,
    mut file_len: impl FnMut(&str, &str, &str) -> Option<u64>,
) -> Vec<Region> {
    let page = crate::regions::page_size();
    let mut found = Vec::new();
    for line in maps.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 6 || f[1] != "rw-p" || f[4] == "0" || !f[5].starts_with('/') {
            continue;
        }
        let Some((start, end)) = f[0].split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end), Ok(offset)) = (
            u64::from_str_radix(start, 16),
            u64::from_str_radix(end, 16),
            u64::from_str_radix(f[2], 16),
        ) else {
            continue;
        };
        let within_file = file_len(f[5], f[3], f[4]).is_some_and(|len| {
            offset.saturating_add(end.saturating_sub(start))
                <= len.div_ceil(page).saturating_mul(page)
        });
        if start < end && within_file {
            found.push(Region {
                start,
                len: end - start,
            });
        }
    }
    found
}

/// Replaces each of `regions` (from [`file_data_mappings`]) with an
/// anonymous copy; returns the bytes converted. A mapping that cannot be
/// converted stays as it was (it only stays resident while asleep).
pub fn anonymize(regions: &[Region]) -> u64 {
    let page = crate::regions::page_size() as usize;
    regions
        .iter()
        .filter(|r| anonymize_one(**r, page).is_ok())
        .map(|r| r.len)
        .sum()
}

fn anonymize_one(region: Region, page: usize) -> io::Result<()> {
    let len = region.len as usize;
    let copy = bare::mmap_anonymous(region.len)?;
    // Only non-zero pages are copied: the rest of a fresh mapping reads as
    // zero and costs nothing.
    let words = page / 8;
    for at in (0..len).step_by(page) {
        let src = (region.start as usize + at) as *const u64;
        let dst = (copy as usize + at) as *mut u64;
        // SAFETY: `src` is in a readable file-backed mapping (checked by
        // file_data_mappings), `dst` in the fresh copy; both page aligned.
        unsafe {
            if (0..words).any(|i| src.add(i).read_volatile() != 0) {
                std::ptr::copy_nonoverlapping(src, dst, words);
            }
        }
    }
    // Replaces the file mapping in one step with the same contents.
    // SAFETY: the copy has the same length and alignment as the range it
    // moves over; nothing else refers to the copy's old address.
    let moved = unsafe { bare::mremap_fixed(copy, region.len, region.start) };
    if let Err(e) = moved {
        // SAFETY: unmapping the unused copy this function created.
        let _ = unsafe { bare::munmap(copy, region.len) };
        return Err(e);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_written_private_file_mappings_inside_their_file() {
        let maps = "\
00400000-00420000 r--p 00000000 fe:00 10 /usr/bin/python3.11
00946000-00a85000 rw-p 00545000 fe:00 10 /usr/bin/python3.11
00a85000-00aca000 rw-p 00000000 00:00 0
7f00000000-7f00001000 rw-s 00000000 00:05 11 /dev/zero
7f00002000-7f00004000 rw-p 00000000 fe:00 12 /data/big.bin
7f00010000-7f00012000 rw-p 00001000 fe:00 13 /usr/lib/libc.so.6
7ffc0000-7ffc1000 rw-p 00000000 00:00 0 [stack]
";
        let sizes = |path: &str, _: &str, _: &str| match path {
            "/usr/bin/python3.11" => Some(0x545000 + 0x13f000),
            // One page short of the mapping: its last page would SIGBUS.
            "/data/big.bin" => Some(0x1000),
            _ => None,
        };
        assert_eq!(
            file_data_mappings(maps, sizes),
            vec![Region {
                start: 0x946000,
                len: 0x13f000
            }]
        );
    }

    #[test]
    fn an_anonymized_mapping_keeps_its_bytes() {
        let page = crate::regions::page_size() as usize;
        let mut file = tempfile::tempfile().expect("tempfile");
        std::io::Write::write_all(&mut file, &vec![7u8; 3 * page]).expect("write");
        // SAFETY: a fresh private mapping of the file's three pages.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                3 * page,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE,
                std::os::fd::AsRawFd::as_raw_fd(&file),
                0,
            )
        };
        assert_ne!(addr, libc::MAP_FAILED);
        let bytes = addr.cast::<u8>();
        // SAFETY: inside the mapping: one byte written, the middle page zeroed.
        unsafe {
            bytes.write(1);
            std::ptr::write_bytes(bytes.add(page), 0, page);
        }
        let region = Region {
            start: addr as u64,
            len: 3 * page as u64,
        };
        assert_eq!(anonymize(&[region]), region.len);
        let maps = std::fs::read_to_string("/proc/self/maps").expect("maps");
        let still_file_backed = file_data_mappings(&maps, |_, _, _| Some(u64::MAX))
            .iter()
            .any(|r| r.contains(addr as u64));
        assert!(!still_file_backed, "{maps}");
        // SAFETY: the same range, now anonymous.
        let view = unsafe { std::slice::from_raw_parts(bytes, 3 * page) };
        assert_eq!(view[0], 1);
        assert!(view[1..page].iter().all(|&b| b == 7));
        assert!(view[page..2 * page].iter().all(|&b| b == 0));
        assert!(view[2 * page..].iter().all(|&b| b == 7));
        // SAFETY: unmapping the test's own mapping.
        unsafe { libc::munmap(addr, 3 * page) };
    }
}
