//! Per-function host id ranges: each function's zygotes get a user
//! namespace whose ids map to a range of host ids no other function uses,
//! so that no two functions' processes ever share a host uid.

use std::collections::HashMap;

/// Hands out range numbers by function name, each name keeping its range
/// for the daemon's lifetime (a reload that keeps a function keeps its
/// range, so its zygote spec is unchanged; a removed function's range is
/// not given to another, since its zygotes may still be draining).
#[derive(Debug)]
pub(crate) struct IdRanges {
    by_name: HashMap<String, u32>,
    limit: u32,
}

/// Every range is taken.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "every one of the {limit} per-function id ranges is taken (one per function name since the \
     daemon started): raise server.userns_ranges, or restart the daemon to reclaim the ranges of \
     removed functions"
)]
pub struct RangesExhausted {
    pub limit: u32,
}

impl IdRanges {
    pub(crate) fn new(limit: u32) -> IdRanges {
        IdRanges {
            by_name: HashMap::new(),
            limit,
        }
    }

    /// The range number of `function` (0-based), assigned on first use.
    pub(crate) fn range_of(&mut self, function: &str) -> Result<u32, RangesExhausted> {
        if let Some(&n) = self.by_name.get(function) {
            return Ok(n);
        }
        let n = self.by_name.len() as u32;
        if n >= self.limit {
            return Err(RangesExhausted { limit: self.limit });
        }
        self.by_name.insert(function.to_owned(), n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_name_keeps_its_own_range() {
        let mut ranges = IdRanges::new(3);
        assert_eq!(ranges.range_of("a"), Ok(0));
        assert_eq!(ranges.range_of("b"), Ok(1));
        assert_eq!(ranges.range_of("a"), Ok(0));
        assert_eq!(ranges.range_of("c"), Ok(2));
        let err = ranges.range_of("d").unwrap_err();
        assert_eq!(err, RangesExhausted { limit: 3 });
        assert!(err.to_string().contains("server.userns_ranges"), "{err}");
        // Known names still resolve once the ranges are exhausted.
        assert_eq!(ranges.range_of("b"), Ok(1));
    }
}
