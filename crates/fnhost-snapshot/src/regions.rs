//! The memory a zygote hibernates: private anonymous read-write mappings
//! taken from `/proc/self/maps`, and where each one lives in the snapshot
//! file (regions concatenated in address order).

use std::sync::OnceLock;

/// A page-aligned range of the zygote's address space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Region {
    pub start: u64,
    pub len: u64,
}

impl Region {
    pub fn end(&self) -> u64 {
        self.start + self.len
    }

    pub fn contains(&self, addr: u64) -> bool {
        self.start <= addr && addr < self.end()
    }
}

/// How many regions a [`RegionTable`] holds; a zygote with more private
/// anonymous mappings than this cannot hibernate.
pub const MAX_REGIONS: usize = 512;

/// Highest user-space address on any supported architecture (57-bit
/// virtual addresses); entries above it are kernel pseudo-mappings.
const USER_ADDR_LIMIT: u64 = 1 << 57;

#[derive(Debug, thiserror::Error)]
pub enum RegionError {
    #[error("too many private anonymous mappings to hibernate: {count} (at most {MAX_REGIONS})")]
    TooMany { count: usize },
}

/// The regions to hibernate, parsed from the text of `/proc/<pid>/maps`.
///
/// Keeps entries that are private, readable and writable (not executable), and anonymous
/// (inode 0 with no pathname, `[heap]` or `[anon:...]`); everything else is
/// left alone: the stack (the hibernating code runs on it), kernel
/// pseudo-mappings (`[vvar]`, `[vdso]`, ...), shared mappings and anything
/// file-backed (a private file mapping cannot be registered for missing
/// faults). Adjacent entries are merged. Unparsable, empty and out-of-range
/// entries are skipped.
pub fn parse_maps(text: &str) -> Vec<Region> {
    let mut regions: Vec<Region> = Vec::new();
    for region in text.lines().filter_map(parse_line) {
        match regions.last_mut() {
            Some(last) if last.end() == region.start => last.len += region.len,
            _ => regions.push(region),
        }
    }
    regions
}

/// One maps line: `start-end perms offset dev inode [pathname]`.
fn parse_line(line: &str) -> Option<Region> {
    let mut fields = line.splitn(6, ' ');
    let (start, end) = fields.next()?.split_once('-')?;
    let perms = fields.next()?.as_bytes();
    let _offset = fields.next()?;
    let _dev = fields.next()?;
    let inode = fields.next()?;
    let path = fields.next().unwrap_or("").trim();

    let start = u64::from_str_radix(start, 16).ok()?;
    let end = u64::from_str_radix(end, 16).ok()?;
    if start >= end || end > USER_ADDR_LIMIT {
        return None;
    }
    // Not executable: a woken zygote maps its snapshot back, and a state
    // directory mounted `noexec` would refuse `PROT_EXEC` (such mappings,
    // libffi trampolines say, are small and stay resident).
    let private_rw = perms.len() == 4
        && perms[0] == b'r'
        && perms[1] == b'w'
        && perms[2] == b'-'
        && perms[3] == b'p';
    let anonymous =
        inode == "0" && (path.is_empty() || path == "[heap]" || path.starts_with("[anon:"));
    (private_rw && anonymous).then_some(Region {
        start,
        len: end - start,
    })
}

/// Mappings whose fork-time semantics a woken zygote must keep, from the
/// text of `/proc/<pid>/smaps`: `MADV_WIPEONFORK` (`wf`: a clone must see
/// zeros, e.g. random-number state) and `MADV_DONTFORK` (`dc`). Mapping
/// the snapshot over them would drop those flags, so they stay resident.
pub fn special_ranges(smaps: &str) -> Vec<Region> {
    let mut out = Vec::new();
    let mut current: Option<Region> = None;
    for line in smaps.lines() {
        if let Some(flags) = line.strip_prefix("VmFlags:") {
            let special = flags.split_whitespace().any(|f| f == "wf" || f == "dc");
            if let (true, Some(region)) = (special, current.take()) {
                out.push(region);
            }
        } else if let Some((start, end)) = line
            .split_once(' ')
            .and_then(|(range, _)| range.split_once('-'))
        {
            current = match (u64::from_str_radix(start, 16), u64::from_str_radix(end, 16)) {
                (Ok(start), Ok(end)) if start < end => Some(Region {
                    start,
                    len: end - start,
                }),
                _ => current,
            };
        }
    }
    out
}

/// `regions` with every page of `holes` taken out (both sorted by address;
/// holes may overlap each other). Used to keep a few pages resident.
pub fn subtract(regions: &[Region], holes: &[Region]) -> Vec<Region> {
    let mut out = Vec::with_capacity(regions.len() + holes.len());
    for region in regions {
        let mut cursor = region.start;
        for hole in holes {
            if hole.end() <= cursor || hole.start >= region.end() {
                continue;
            }
            if hole.start > cursor {
                out.push(Region {
                    start: cursor,
                    len: hole.start - cursor,
                });
            }
            cursor = cursor.max(hole.end());
        }
        if cursor < region.end() {
            out.push(Region {
                start: cursor,
                len: region.end() - cursor,
            });
        }
    }
    out
}

/// A fixed-capacity region list that lives wherever its owner lives (the
/// hibernating caller's stack) and never touches the heap.
#[derive(Clone)]
pub struct RegionTable {
    entries: [Region; MAX_REGIONS],
    len: usize,
}

impl RegionTable {
    pub fn from_slice(regions: &[Region]) -> Result<Self, RegionError> {
        if regions.len() > MAX_REGIONS {
            return Err(RegionError::TooMany {
                count: regions.len(),
            });
        }
        let mut entries = [Region { start: 0, len: 0 }; MAX_REGIONS];
        entries[..regions.len()].copy_from_slice(regions);
        Ok(Self {
            entries,
            len: regions.len(),
        })
    }

    pub fn as_slice(&self) -> &[Region] {
        &self.entries[..self.len]
    }
}

impl std::fmt::Debug for RegionTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

/// File offset of region `index`: the sum of the lengths before it.
pub fn layout_offset(regions: &[Region], index: usize) -> u64 {
    regions[..index].iter().map(|r| r.len).sum()
}

/// Every region with its file offset, in order.
pub fn layout(regions: &[Region]) -> impl Iterator<Item = (Region, u64)> + '_ {
    regions.iter().scan(0u64, |offset, region| {
        let at = *offset;
        *offset += region.len;
        Some((*region, at))
    })
}

/// The system page size, asked of `sysconf(_SC_PAGESIZE)` once.
pub fn page_size() -> u64 {
    static PAGE_SIZE: OnceLock<u64> = OnceLock::new();
    *PAGE_SIZE.get_or_init(|| {
        // SAFETY: sysconf has no memory-safety preconditions.
        let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        u64::try_from(size).unwrap_or(4096)
    })
}

pub(crate) fn page_floor(addr: u64, page: u64) -> u64 {
    addr & !(page - 1)
}

pub(crate) fn page_ceil(addr: u64, page: u64) -> u64 {
    page_floor(addr + page - 1, page)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAPS: &str = "\
55d5b091d000-55d5b0932000 r--p 00000000 fe:00 10437159                   /usr/bin/python3
55d5b0977000-55d5b0979000 rw-p 00057000 fe:00 10437159                   /usr/bin/python3
55d5b0979000-55d5b097b000 rw-p 00000000 00:00 0 
55d5b3abc000-55d5b3add000 rw-p 00000000 00:00 0                          [heap]
7f7b2decc000-7f7b2fed0000 rw-p 00000000 00:00 0 
7f7b2fed0000-7f7b2fef6000 r--p 00000000 fe:00 326279                     /usr/lib/x86_64-linux-gnu/libc.so.6
7f7b300a3000-7f7b300a5000 rw-p 001d3000 fe:00 326279                     /usr/lib/x86_64-linux-gnu/libc.so.6
7f7b300a5000-7f7b300b2000 rw-p 00000000 00:00 0 
7f7b300b2000-7f7b300c0000 rw-p 00000000 00:00 0                          [anon:glibc: malloc]
7f7b300c8000-7f7b300d0000 rw-s 00000000 00:01 2048                       /memfd:shared (deleted)
7f7b300d0000-7f7b300d1000 rw-s 00000000 00:00 0 
7f7b300d1000-7f7b300d2000 r--p 00000000 00:00 0 
7f7b300d8000-7f7b300d9000 ---p 00000000 00:00 0 
7f7b300d9000-7f7b300db000 rwxp 00000000 00:00 0 
7f7b300dd000-7f7b300e1000 r--p 00000000 00:00 0                          [vvar]
7f7b300e1000-7f7b300e3000 r--p 00000000 00:00 0                          [vvar_vclock]
7f7b300e3000-7f7b300e5000 r-xp 00000000 00:00 0                          [vdso]
7f7b30118000-7f7b3011a000 rw-p 00033000 fe:00 325843                     /usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2
7f7b3011a000-7f7b3011a000 rw-p 00000000 00:00 0 
7f7b3011b000-7f7b3011a000 rw-p 00000000 00:00 0 
garbage line
7fff88195000-7fff881b6000 rw-p 00000000 00:00 0                          [stack]
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]
";

    fn r(start: u64, end: u64) -> Region {
        Region {
            start,
            len: end - start,
        }
    }

    #[test]
    fn parse_maps_keeps_private_anonymous_rw() {
        assert_eq!(
            parse_maps(MAPS),
            vec![
                r(0x55d5b0979000, 0x55d5b097b000),
                r(0x55d5b3abc000, 0x55d5b3add000),
                r(0x7f7b2decc000, 0x7f7b2fed0000),
                // libc's .bss and the named malloc arena are adjacent: merged.
                r(0x7f7b300a5000, 0x7f7b300c0000),
            ]
        );
    }

    #[test]
    fn parse_maps_of_this_process_finds_the_heap() {
        let text = std::fs::read_to_string("/proc/self/maps").expect("read own maps");
        let boxed = Box::new([7u8; 4096]);
        let regions = parse_maps(&text);
        let addr = boxed.as_ptr() as u64;
        assert!(regions.iter().any(|r| r.contains(addr)));
        assert!(regions.windows(2).all(|w| w[0].end() < w[1].start));
    }

    #[test]
    fn special_ranges_are_wipe_or_dont_fork() {
        let smaps = "\
7f0000000000-7f0000002000 rw-p 00000000 00:00 0 
Size:                  8 kB
VmFlags: rd wr mr mw me ac sd 
7f0000004000-7f0000005000 rw-p 00000000 00:00 0 
Size:                  4 kB
VmFlags: rd wr mr mw me ac sd wf 
7f0000008000-7f000000a000 rw-p 00000000 00:00 0 
Rss:                   0 kB
VmFlags: rd wr mr mw me dc ac sd 
";
        assert_eq!(
            special_ranges(smaps),
            vec![
                r(0x7f0000004000, 0x7f0000005000),
                r(0x7f0000008000, 0x7f000000a000)
            ]
        );
        let own = std::fs::read_to_string("/proc/self/smaps").expect("smaps");
        assert!(special_ranges(&own).len() <= parse_maps(&own).len() + 8);
    }

    #[test]
    fn subtract_splits_and_trims() {
        let regions = [r(0x1000, 0x9000), r(0x10000, 0x12000)];
        let holes = [
            r(0x0, 0x2000),
            r(0x4000, 0x5000),
            r(0x4000, 0x6000),
            r(0x11000, 0x13000),
        ];
        assert_eq!(
            subtract(&regions, &holes),
            vec![r(0x2000, 0x4000), r(0x6000, 0x9000), r(0x10000, 0x11000)]
        );
        assert_eq!(subtract(&regions, &[]), regions.to_vec());
        assert_eq!(subtract(&regions, &[r(0, 0x20000)]), vec![]);
    }

    #[test]
    fn region_table_capacity() {
        let many = vec![r(0x1000, 0x2000); MAX_REGIONS];
        let table = RegionTable::from_slice(&many).expect("fits");
        assert_eq!(table.as_slice().len(), MAX_REGIONS);
        let too_many = vec![r(0x1000, 0x2000); MAX_REGIONS + 1];
        let err = RegionTable::from_slice(&too_many).expect_err("too many");
        assert!(err.to_string().contains("513"));
        assert!(RegionTable::from_slice(&[])
            .expect("empty")
            .as_slice()
            .is_empty());
    }

    #[test]
    fn layout_offsets_are_prefix_sums() {
        let regions = [r(0x10000, 0x12000), r(0x20000, 0x21000), r(0x5000, 0x8000)];
        assert_eq!(layout_offset(&regions, 0), 0);
        assert_eq!(layout_offset(&regions, 1), 0x2000);
        assert_eq!(layout_offset(&regions, 2), 0x3000);
        assert_eq!(layout_offset(&regions, 3), 0x6000);
        let offsets: Vec<u64> = layout(&regions).map(|(_, off)| off).collect();
        assert_eq!(offsets, vec![0, 0x2000, 0x3000]);
    }

    #[test]
    fn page_size_is_a_power_of_two() {
        assert!(page_size().is_power_of_two());
        assert_eq!(page_floor(0x1fff, 0x1000), 0x1000);
        assert_eq!(page_ceil(0x1001, 0x1000), 0x2000);
        assert_eq!(page_ceil(0x1000, 0x1000), 0x1000);
    }
}
