//! Snapshot pages shared between zygotes of identical code, daemon side.
//!
//! Each snapshot is its own file, and the page cache is per file: 100
//! hibernated copies of one function hold 100 copies of every page, even
//! where the pages are byte-identical. A *shared base* is one file per
//! group of zygotes started from identical code with the same address
//! layout (`hibernate_share_pages`): the first snapshot of the group to be
//! sealed is copied into it, at the same layout offsets, and never changes
//! afterwards. Every snapshot of the group (the first one included) is then
//! compared with it page by page at the same *address*; each run of
//! identical pages becomes a [`SharedRun`], which the zygote maps from the
//! base instead of from its own snapshot when it wakes
//! (`remap::remap_shared`). Identical pages are then one page cache page
//! for the whole group; the read-back of a snapshot reads only its own
//! pages.
//!
//! Correctness never depends on the comparison being complete: a page not
//! shared is mapped from the zygote's own snapshot, which keeps every page
//! (the fault server of a sleeping zygote reads it). The base is written
//! only by the daemon, before any zygote maps it, and handed to zygotes
//! read-only.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use fnhost_sandbox::sys::fd as sys;

use crate::regions::{self, Region};
use crate::snapshot::{self, Extent, Snapshot};

/// Most runs one zygote maps from its base: each is one `mmap` at wake-up
/// and one more mapping in the zygote and every clone. Pages past the cap
/// stay the snapshot's own.
pub const MAX_SHARED_RUNS: usize = 2048;

/// Bytes of one run in the wake-up message: address, base offset, length.
pub const RUN_BYTES: usize = 24;

/// Pages at `addr` of a zygote that are byte-identical to the base's pages
/// at `base_offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedRun {
    pub addr: u64,
    pub base_offset: u64,
    pub len: u64,
}

impl SharedRun {
    /// Little-endian address, base offset, length.
    pub fn encode(&self) -> [u8; RUN_BYTES] {
        let mut out = [0u8; RUN_BYTES];
        out[..8].copy_from_slice(&self.addr.to_le_bytes());
        out[8..16].copy_from_slice(&self.base_offset.to_le_bytes());
        out[16..].copy_from_slice(&self.len.to_le_bytes());
        out
    }

    /// The inverse of [`SharedRun::encode`]; allocates nothing (a woken
    /// zygote decodes on its stack).
    pub fn decode(bytes: &[u8; RUN_BYTES]) -> SharedRun {
        let word = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&bytes[i * 8..i * 8 + 8]);
            u64::from_le_bytes(w)
        };
        SharedRun {
            addr: word(0),
            base_offset: word(1),
            len: word(2),
        }
    }
}

/// What the base holds once filled: the first snapshot's regions and data.
#[derive(Debug)]
struct Filled {
    extents: Vec<Extent>,
    file_bytes: u64,
}

/// One group's base file. Removed when the last holder drops it; zygotes
/// that mapped it keep its data through their mappings.
#[derive(Debug)]
pub struct SharedBase {
    path: PathBuf,
    file: File,
    /// Set once, by the first snapshot shared; read without a lock (a
    /// wake-up checks it while other zygotes of the group hibernate).
    filled: OnceLock<Filled>,
    /// Held while the base is being filled, so that one snapshot fills it.
    filling: Mutex<()>,
}

/// What sharing one snapshot with its base found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sharing {
    pub runs: Vec<SharedRun>,
    /// Bytes in those runs.
    pub shared_bytes: u64,
    /// Whether this snapshot filled the base.
    pub filled_base: bool,
}

impl SharedBase {
    /// Creates the (empty, `0600`) base file; the name must be new.
    pub fn create(path: PathBuf) -> io::Result<SharedBase> {
        let file = snapshot::create_private(&path, "shared snapshot base")?;
        Ok(SharedBase {
            path,
            file,
            filled: OnceLock::new(),
            filling: Mutex::new(()),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A read-only descriptor for a zygote: it maps runs of it on wake-up
    /// and can never write it.
    pub fn read_only(&self) -> io::Result<OwnedFd> {
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(&self.path)?;
        Ok(OwnedFd::from(file))
    }

    /// Compares a sealed `snapshot` with the base, filling the base from it
    /// first if it is still empty; returns the runs of identical pages (at
    /// most [`MAX_SHARED_RUNS`]). Afterwards only the snapshot's own pages
    /// are in its page cache (see [`Snapshot::keep_own`]). Blocking.
    pub fn share(&self, snapshot: &mut Snapshot) -> io::Result<Sharing> {
        let mut filled_base = false;
        let base = match self.filled.get() {
            Some(base) => base,
            None => {
                let _one = self.filling.lock().unwrap_or_else(|e| e.into_inner());
                match self.filled.get() {
                    Some(base) => base,
                    None => {
                        let base = self.fill(snapshot)?;
                        filled_base = true;
                        self.filled.get_or_init(|| base)
                    }
                }
            }
        };
        // The base never changes once filled: compared without a lock.
        let runs = identical_runs(snapshot, &self.file, &base.extents)?;
        let shared_bytes = runs.iter().map(|r| r.len).sum();
        snapshot.keep_own(&runs);
        Ok(Sharing {
            runs,
            shared_bytes,
            filled_base,
        })
    }

    /// Copies the snapshot's data into the empty base, at the same
    /// offsets, and syncs it. The page cache of the copy stays (charged to
    /// the daemon): every zygote of the group maps it.
    fn fill(&self, snapshot: &Snapshot) -> io::Result<Filled> {
        let sealed = snapshot
            .sealed()
            .ok_or_else(|| io::Error::other("the snapshot is not sealed"))?;
        snapshot::each_chunk(snapshot.file_ref(), snapshot.extents(), |data, at| {
            self.file.write_all_at(data, at)
        })?;
        self.file.set_len(sealed.file_bytes)?;
        self.file.sync_data()?;
        Ok(Filled {
            extents: snapshot.extents().to_vec(),
            file_bytes: sealed.file_bytes,
        })
    }

    /// Before a wake-up maps runs of the base: it must have the size it
    /// was filled with (a truncated file would raise `SIGBUS` in the zygote
    /// at first touch).
    pub fn check_intact(&self) -> io::Result<()> {
        let Some(filled) = self.filled.get() else {
            return Err(io::Error::other(format!(
                "shared snapshot base {} was never filled",
                self.path.display()
            )));
        };
        let len = self.file.metadata()?.len();
        if len != filled.file_bytes {
            return Err(io::Error::other(format!(
                "shared snapshot base {} was truncated: {len} bytes, sealed at {}",
                self.path.display(),
                filled.file_bytes
            )));
        }
        Ok(())
    }

    /// Readahead of `runs` (`POSIX_FADV_WILLNEED`), for a wake-up after the
    /// kernel reclaimed the base's page cache; returns the bytes asked for.
    pub fn prefetch(&self, runs: &[SharedRun]) -> u64 {
        runs.iter()
            .filter(|r| sys::fadvise_willneed(self.file.as_fd(), r.base_offset, r.len).is_ok())
            .map(|r| r.len)
            .sum()
    }
}

impl Drop for SharedBase {
    fn drop(&mut self) {
        if let Err(err) = std::fs::remove_file(&self.path) {
            if err.kind() != io::ErrorKind::NotFound {
                tracing::warn!(path = %self.path.display(), error = %err, "remove shared snapshot base");
            }
        }
    }
}

/// Runs of the snapshot's data pages whose bytes equal the base's page at
/// the same address, merged where both address and base offset continue.
fn identical_runs(
    snapshot: &Snapshot,
    base: &File,
    base_extents: &[Extent],
) -> io::Result<Vec<SharedRun>> {
    let page = regions::page_size();
    let own = snapshot.file_ref();
    let (mut mine, mut theirs) = (vec![0u8; page as usize], vec![0u8; page as usize]);
    let mut runs: Vec<SharedRun> = Vec::new();
    'extents: for e in snapshot.extents() {
        let mut addr = e.addr;
        while addr < e.end() {
            let Some(base_offset) = snapshot::data_offset(base_extents, addr) else {
                addr += page;
                continue;
            };
            own.read_exact_at(&mut mine, e.offset + (addr - e.addr))?;
            base.read_exact_at(&mut theirs, base_offset)?;
            if mine == theirs {
                let continues = runs.last().is_some_and(|last| {
                    last.addr + last.len == addr && last.base_offset + last.len == base_offset
                });
                if continues {
                    runs.last_mut().expect("checked").len += page;
                } else if runs.len() == MAX_SHARED_RUNS {
                    break 'extents;
                } else {
                    runs.push(SharedRun {
                        addr,
                        base_offset,
                        len: page,
                    });
                }
            }
            addr += page;
        }
    }
    Ok(runs)
}

/// Whether every run lies inside one of `regions` and is page aligned: a
/// woken zygote checks the daemon's runs with it before mapping any.
/// Allocates nothing.
pub fn runs_within(mut runs: impl Iterator<Item = SharedRun>, regions: &[Region]) -> bool {
    let page = regions::page_size();
    runs.all(|run| {
        let aligned = run.addr % page == 0 && run.len % page == 0 && run.base_offset % page == 0;
        let inside = run.addr.checked_add(run.len).is_some_and(|end| {
            run.len > 0
                && regions
                    .iter()
                    .any(|r| r.start <= run.addr && end <= r.end())
        });
        aligned && inside
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::regions::RegionTable;
    use crate::remap::GROWTH_TAIL;
    use crate::remap::{remap, remap_shared};
    use fnhost_sandbox::sys::bare;
    use std::os::fd::AsFd;

    /// A sealed snapshot of two regions (4 pages at `a`, 2 at `b`) whose
    /// page `i` (in layout order) holds byte `pages[i]` (0: a hole).
    fn sealed(dir: &Path, name: &str, a: u64, b: u64, pages: [u8; 6]) -> Snapshot {
        let p = regions::page_size();
        let mut snap = Snapshot::create(dir.join(name)).expect("create");
        for (i, byte) in pages.iter().enumerate().filter(|(_, b)| **b != 0) {
            snap.file_ref()
                .write_all_at(&vec![*byte; p as usize], i as u64 * p)
                .expect("write");
        }
        snap.file_ref().set_len(6 * p + GROWTH_TAIL).expect("size");
        let regions = vec![
            Region {
                start: a,
                len: 4 * p,
            },
            Region {
                start: b,
                len: 2 * p,
            },
        ];
        snap.seal(regions, false).expect("seal");
        snap
    }

    #[test]
    fn identical_pages_at_the_same_address_are_mapped_from_the_base() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = regions::page_size();
        // The zygotes' memory: 6 pages of a test mapping, as two regions.
        let mem = bare::mmap_anonymous(7 * p).expect("mmap");
        let (a, b) = (mem, mem + 5 * p);
        let base = SharedBase::create(dir.path().join("group.base")).expect("base");
        // The first snapshot fills the base and shares all of its data.
        let mut first = sealed(dir.path(), "1.snap", a, b, [1, 2, 0, 3, 4, 5]);
        let sharing = base.share(&mut first).expect("share");
        assert!(sharing.filled_base);
        assert_eq!(sharing.shared_bytes, 5 * p);
        // The second differs in page 1, and page 2 is data where the base
        // has a hole: neither is shared.
        let mut second = sealed(dir.path(), "2.snap", a, b, [1, 9, 7, 3, 4, 5]);
        let sharing = base.share(&mut second).expect("share");
        assert!(!sharing.filled_base);
        let run = |addr, base_offset, len| SharedRun {
            addr,
            base_offset,
            len,
        };
        assert_eq!(
            sharing.runs,
            vec![run(a, 0, p), run(a + 3 * p, 3 * p, p), run(b, 4 * p, 2 * p)]
        );
        // Only the own pages are left to read back.
        let own: u64 = second.own_extents().iter().map(|e| e.len).sum();
        assert_eq!(own, 2 * p);
        base.check_intact().expect("intact");

        // Wake the second zygote: its own snapshot, then the base's runs.
        let table = RegionTable::from_slice(second.regions()).expect("table");
        assert!(runs_within(sharing.runs.iter().copied(), table.as_slice()));
        remap(&table, second.file()).expect("remap");
        let ro = base.read_only().expect("read-only base");
        assert_eq!(
            remap_shared(sharing.runs.iter().copied(), ro.as_fd()).expect("remap shared"),
            4 * p
        );
        let byte_at = |addr: u64| {
            // SAFETY: inside the test's own mapping, mapped from the files.
            unsafe { (addr as *const u8).read() }
        };
        let seen: Vec<u8> = [a, a + p, a + 2 * p, a + 3 * p, b, b + p]
            .into_iter()
            .map(byte_at)
            .collect();
        assert_eq!(
            seen,
            vec![1, 9, 7, 3, 4, 5],
            "every page as the zygote saved it"
        );
        // Writes stay private: neither file changes.
        // SAFETY: `a` is the first page of the test's own mapping, mapped
        // read-write (private) from the snapshot just above.
        unsafe { (a as *mut u8).write(42) };
        let mut first_byte = [0u8; 1];
        base.file
            .read_exact_at(&mut first_byte, 0)
            .expect("read base");
        assert_eq!(first_byte[0], 1);
        assert!(ro.as_fd().try_clone_to_owned().is_ok());
        // The zygote's descriptor cannot write the base.
        let write = File::from(ro).write_at(b"x", 0);
        assert!(write.is_err(), "a zygote's base descriptor is read-only");
        // SAFETY: the test's own mapping, not used afterwards.
        unsafe { bare::munmap(mem, 7 * p) }.expect("munmap");
        let path = base.path().to_path_buf();
        drop(base);
        assert!(!path.exists(), "the base is removed with its last holder");
    }

    #[test]
    fn a_truncated_base_fails_the_check() {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = SharedBase::create(dir.path().join("g.base")).expect("base");
        assert!(base.check_intact().is_err(), "not filled yet");
        let mut snap = sealed(
            dir.path(),
            "1.snap",
            0x10_0000,
            0x20_0000,
            [1, 0, 0, 0, 0, 2],
        );
        base.share(&mut snap).expect("share");
        base.check_intact().expect("intact");
        base.file.set_len(regions::page_size()).expect("truncate");
        let err = base.check_intact().expect_err("truncated");
        assert!(err.to_string().contains("truncated"), "{err}");
    }

    #[test]
    fn runs_round_trip_through_their_encoding() {
        let run = SharedRun {
            addr: 0x7fff_f000_0000,
            base_offset: 0x3000,
            len: 0x5000,
        };
        assert_eq!(SharedRun::decode(&run.encode()), run);
    }

    #[test]
    fn runs_must_be_aligned_and_inside_a_region() {
        let p = regions::page_size();
        let regions = [Region {
            start: 0x10 * p,
            len: 4 * p,
        }];
        let run = |addr, len| SharedRun {
            addr,
            base_offset: 0,
            len,
        };
        assert!(runs_within([run(0x10 * p, 4 * p)].into_iter(), &regions));
        assert!(runs_within(std::iter::empty(), &regions));
        assert!(!runs_within([run(0x10 * p, 5 * p)].into_iter(), &regions));
        assert!(!runs_within([run(0x0f * p, p)].into_iter(), &regions));
        assert!(!runs_within([run(0x10 * p + 1, p)].into_iter(), &regions));
        assert!(!runs_within([run(0x10 * p, 0)].into_iter(), &regions));
        assert!(!runs_within(
            [run(u64::MAX - p + 1, 2 * p)].into_iter(),
            &regions
        ));
    }
}
