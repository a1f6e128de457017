//! The descriptors the daemon holds for zygotes and clones, summed as each
//! pool reports its own. The descriptor cap is checked before every zygote
//! start; adding up every pool there instead made each start cost
//! O(functions): at 3,000 functions about a third of the daemon's async
//! workers' time went to that walk and to the page faults its writes to
//! every pool took after each fork (measured with `perf`). Reading the
//! ledger is one atomic load, however many functions the host has.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The host-wide sum of what every pool last reported.
#[derive(Debug, Default)]
pub struct DescriptorLedger {
    held: AtomicUsize,
}

impl DescriptorLedger {
    /// Descriptors the pools reported, all together.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::SeqCst)
    }
}

/// One pool's entry in the ledger: what it reported last. Dropping it
/// takes the pool's descriptors out of the sum (a dropped pool's zygotes
/// and clones are gone with it).
#[derive(Debug)]
pub struct LedgerShare {
    ledger: Arc<DescriptorLedger>,
    reported: AtomicUsize,
}

impl LedgerShare {
    pub fn new(ledger: Arc<DescriptorLedger>) -> Self {
        LedgerShare {
            ledger,
            reported: AtomicUsize::new(0),
        }
    }

    /// Replaces this pool's part of the sum by `now`. Concurrent reports
    /// may land in either order; the sum always equals the shares' last
    /// values, and the pool's next report corrects a stale one.
    pub fn report(&self, now: usize) {
        let before = self.reported.swap(now, Ordering::SeqCst);
        // Added first, so the sum never wraps below zero in between.
        self.ledger.held.fetch_add(now, Ordering::SeqCst);
        self.ledger.held.fetch_sub(before, Ordering::SeqCst);
    }

    /// What this pool reported last.
    pub fn reported(&self) -> usize {
        self.reported.load(Ordering::SeqCst)
    }
}

impl Drop for LedgerShare {
    fn drop(&mut self) {
        self.report(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sum_follows_each_shares_last_report() {
        let ledger = Arc::new(DescriptorLedger::default());
        let a = LedgerShare::new(ledger.clone());
        let b = LedgerShare::new(ledger.clone());
        a.report(3);
        b.report(5);
        assert_eq!(ledger.held(), 8);
        a.report(1);
        assert_eq!((ledger.held(), a.reported()), (6, 1));
        b.report(0);
        assert_eq!(ledger.held(), 1);
    }

    #[test]
    fn a_dropped_share_leaves_the_sum() {
        let ledger = Arc::new(DescriptorLedger::default());
        let kept = LedgerShare::new(ledger.clone());
        kept.report(2);
        {
            let gone = LedgerShare::new(ledger.clone());
            gone.report(7);
            assert_eq!(ledger.held(), 9);
        }
        assert_eq!(ledger.held(), 2);
    }

    #[test]
    fn concurrent_reports_keep_the_sum_equal_to_the_last_values() {
        let ledger = Arc::new(DescriptorLedger::default());
        let shares: Vec<Arc<LedgerShare>> = (0..2)
            .map(|_| Arc::new(LedgerShare::new(ledger.clone())))
            .collect();
        // Two threads per share: a pool may report from two tasks at once.
        let threads: Vec<_> = (0..4)
            .map(|i| {
                let share = shares[i % 2].clone();
                std::thread::spawn(move || {
                    for n in 0..10_000 {
                        share.report((n * (i + 1)) % 17);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("reporting thread");
        }
        let sum: usize = shares.iter().map(|s| s.reported()).sum();
        assert_eq!(ledger.held(), sum);
    }
}
