//! The replayed trace: per-function request rates shaped like the Azure
//! Functions 2019 trace (heavy-tailed: a few hot functions take most of the
//! traffic, most functions are invoked less than once a minute) and the
//! seeded arrival times drawn from them.
//!
//! Rates follow Zipf's law over the functions' popularity ranks: function
//! `k` (0-based) gets a share `1/(k+1)^s` of the total rate, normalised.
//! With `s = 1` and 10,000 functions the hottest takes ~10% of the
//! requests, the top 1% about half, and at 20 requests/s over 10 minutes
//! about 8,800 functions get fewer than one request a minute; the 2019
//! trace's per-app rates span the same eight decades with 81% of apps at
//! most once a minute (Shahrad et al., "Serverless in the Wild", ATC'20).
//! Arrivals are a Poisson process of the total rate, each request going
//! to function `k` with its share: the same as independent Poisson
//! processes per function.

/// Zipf exponent of the popularity distribution.
pub const ZIPF_S: f64 = 1.0;

/// A small seeded generator (SplitMix64): the same seed gives the same
/// trace on every machine, without a dependency.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The cumulative popularity shares of `n` functions (last = 1).
pub fn cumulative_shares(n: usize) -> Vec<f64> {
    let weights: Vec<f64> = (0..n)
        .map(|k| 1.0 / ((k + 1) as f64).powf(ZIPF_S))
        .collect();
    let total: f64 = weights.iter().sum();
    let mut acc = 0.0;
    weights
        .iter()
        .map(|w| {
            acc += w / total;
            acc
        })
        .collect()
}

/// One request of the trace: when (seconds from the replay's start) and
/// which function (popularity rank).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Arrival {
    pub at_s: f64,
    pub function: usize,
}

/// The arrivals of `seconds` of trace at `rps` requests per second in
/// total over `n` functions, from `seed`.
pub fn arrivals(n: usize, rps: f64, seconds: f64, seed: u64) -> Vec<Arrival> {
    let cumulative = cumulative_shares(n);
    let mut rng = Rng::new(seed);
    let mut out = Vec::new();
    let mut t = 0.0;
    if n == 0 || rps <= 0.0 {
        return out;
    }
    loop {
        // Exponential inter-arrival times: a Poisson process.
        t += -(1.0 - rng.unit()).ln() / rps;
        if t >= seconds {
            return out;
        }
        let u = rng.unit();
        let function = cumulative.partition_point(|&c| c < u).min(n - 1);
        out.push(Arrival { at_s: t, function });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_trace() {
        assert_eq!(arrivals(100, 5.0, 10.0, 7), arrivals(100, 5.0, 10.0, 7));
        assert_ne!(arrivals(100, 5.0, 10.0, 7), arrivals(100, 5.0, 10.0, 8));
    }

    #[test]
    fn rate_and_tail_are_as_documented() {
        let n = 10_000;
        let trace = arrivals(n, 20.0, 600.0, 2019);
        let per_sec = trace.len() as f64 / 600.0;
        assert!((18.0..22.0).contains(&per_sec), "{per_sec} requests/s");
        let mut counts = vec![0u32; n];
        for a in &trace {
            counts[a.function] += 1;
        }
        let hottest = f64::from(counts[0]) / trace.len() as f64;
        assert!((0.08..0.12).contains(&hottest), "hottest share {hottest}");
        // Fewer than 10 requests in 10 minutes: less than once a minute.
        let rare = counts.iter().filter(|&&c| c < 10).count();
        assert!(rare > n * 8 / 10, "{rare} functions below once a minute");
        assert!(trace.windows(2).all(|w| w[0].at_s <= w[1].at_s));
    }

    #[test]
    fn shares_sum_to_one_and_fall() {
        let c = cumulative_shares(1000);
        assert!((c[999] - 1.0).abs() < 1e-9);
        assert!(c[0] > c[1] - c[0]);
    }
}
