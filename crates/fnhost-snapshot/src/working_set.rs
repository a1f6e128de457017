//! The pages a zygote faulted on demand during earlier wakes. The next wake
//! copies them first (record-and-prefetch, as in REAP), so the zygote rarely
//! waits for a page the bulk copy has not reached yet.

use crate::snapshot::Extent;

/// At most this many pages are remembered (1 GiB of 4 KiB pages); beyond it
/// new faults are not recorded.
const MAX_PAGES: usize = 1 << 18;

#[derive(Debug, Default, Clone)]
pub struct WorkingSet {
    /// Sorted, deduplicated page addresses.
    pages: Vec<u64>,
}

impl WorkingSet {
    pub fn len(&self) -> usize {
        self.pages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pages.is_empty()
    }

    pub fn pages(&self) -> &[u64] {
        &self.pages
    }

    /// Merge `faulted` page addresses (any order, duplicates allowed).
    pub fn record(&mut self, faulted: &[u64]) {
        self.pages.extend_from_slice(faulted);
        self.pages.sort_unstable();
        self.pages.dedup();
        self.pages.truncate(MAX_PAGES);
    }

    /// Consecutive pages merged into `(start, len)` runs, in address order.
    pub fn runs(&self, page: u64) -> Vec<(u64, u64)> {
        let mut runs: Vec<(u64, u64)> = Vec::new();
        for &addr in &self.pages {
            match runs.last_mut() {
                Some((start, len)) if *start + *len == addr => *len += page,
                _ => runs.push((addr, page)),
            }
        }
        runs
    }

    /// The parts of the data extents that the working set covers: what a
    /// prefetch copies. Zero pages are never prefetched.
    pub(crate) fn prefetch_plan(&self, extents: &[Extent], page: u64) -> Vec<Extent> {
        let mut plan = Vec::new();
        let mut i = 0;
        for (start, len) in self.runs(page) {
            let end = start + len;
            while i < extents.len() && extents[i].end() <= start {
                i += 1;
            }
            for e in extents[i..].iter().take_while(|e| e.addr < end) {
                let (lo, hi) = (start.max(e.addr), end.min(e.end()));
                if lo < hi {
                    plan.push(Extent {
                        addr: lo,
                        offset: e.offset + (lo - e.addr),
                        len: hi - lo,
                    });
                }
            }
        }
        plan
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: u64 = 0x1000;

    #[test]
    fn record_sorts_and_merges() {
        let mut ws = WorkingSet::default();
        assert!(ws.is_empty());
        ws.record(&[0x5000, 0x1000, 0x5000, 0x2000]);
        ws.record(&[0x3000, 0x1000]);
        assert_eq!(ws.pages(), &[0x1000, 0x2000, 0x3000, 0x5000]);
        assert_eq!(ws.len(), 4);
        assert_eq!(ws.runs(P), vec![(0x1000, 3 * P), (0x5000, P)]);
    }

    #[test]
    fn prefetch_plan_intersects_runs_with_data() {
        let mut ws = WorkingSet::default();
        // Runs: 0x10000..0x13000, 0x20000..0x21000, 0x40000..0x41000.
        ws.record(&[0x10000, 0x11000, 0x12000, 0x20000, 0x40000]);
        let extents = [
            Extent {
                addr: 0x11000,
                offset: 0x100000,
                len: 4 * P,
            },
            Extent {
                addr: 0x18000,
                offset: 0x200000,
                len: 0x9000,
            },
            Extent {
                addr: 0x30000,
                offset: 0x300000,
                len: P,
            },
        ];
        assert_eq!(
            ws.prefetch_plan(&extents, P),
            vec![
                Extent {
                    addr: 0x11000,
                    offset: 0x100000,
                    len: 2 * P
                },
                Extent {
                    addr: 0x20000,
                    offset: 0x208000,
                    len: P
                },
            ]
        );
        assert!(WorkingSet::default().prefetch_plan(&extents, P).is_empty());
    }
}
