//! A small deterministic PRNG (SplitMix64) and the distributions the load
//! tester draws from. Deterministic so that the same seed gives the same
//! schedule for every pool configuration compared in one run.

/// SplitMix64 (Steele, Lea, Flood 2014): one 64-bit state word, passes
/// BigCrush, more than enough for arrival times and function choice.
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng { state: seed }
    }

    /// An independent stream derived from this seed and a stream id.
    pub fn derive(seed: u64, stream: u64) -> Rng {
        let mut r = Rng::new(seed ^ stream.wrapping_mul(0xA076_1D64_78BD_642F));
        r.next_u64();
        r
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1), 53 bits of precision.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in (0, 1]: safe to take the logarithm of.
    fn next_open_f64(&mut self) -> f64 {
        1.0 - self.next_f64()
    }

    /// Exponentially distributed with the given mean (inter-arrival time of
    /// a Poisson process).
    pub fn exp(&mut self, mean: f64) -> f64 {
        -mean * self.next_open_f64().ln()
    }

    /// Standard normal (Box-Muller; the second value is discarded).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.next_open_f64();
        let u2 = self.next_f64();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    /// Poisson-distributed count with mean `lambda`: Knuth's product method
    /// for small means, a rounded normal approximation for large ones.
    pub fn poisson(&mut self, lambda: f64) -> u64 {
        if lambda <= 0.0 {
            return 0;
        }
        if lambda < 30.0 {
            let limit = (-lambda).exp();
            let mut k = 0;
            let mut p = self.next_f64();
            while p > limit {
                k += 1;
                p *= self.next_f64();
            }
            return k;
        }
        (lambda + lambda.sqrt() * self.normal()).round().max(0.0) as u64
    }

    /// Lowercase hex of `bytes` random bytes (the trace's anonymised hashes).
    pub fn hex(&mut self, bytes: usize) -> String {
        let mut s = String::with_capacity(bytes * 2);
        while s.len() < bytes * 2 {
            s.push_str(&format!("{:016x}", self.next_u64()));
        }
        s.truncate(bytes * 2);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mean_var(xs: &[f64]) -> (f64, f64) {
        let n = xs.len() as f64;
        let mean = xs.iter().sum::<f64>() / n;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
        (mean, var)
    }

    #[test]
    fn deterministic_per_seed() {
        let a: Vec<u64> = {
            let mut r = Rng::new(7);
            (0..5).map(|_| r.next_u64()).collect()
        };
        let b: Vec<u64> = {
            let mut r = Rng::new(7);
            (0..5).map(|_| r.next_u64()).collect()
        };
        let c: Vec<u64> = {
            let mut r = Rng::new(8);
            (0..5).map(|_| r.next_u64()).collect()
        };
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(Rng::derive(7, 1).next_u64(), Rng::derive(7, 2).next_u64());
    }

    #[test]
    fn uniform_in_range_with_right_mean() {
        let mut r = Rng::new(1);
        let xs: Vec<f64> = (0..100_000).map(|_| r.next_f64()).collect();
        assert!(xs.iter().all(|x| (0.0..1.0).contains(x)));
        let (mean, var) = mean_var(&xs);
        assert!((mean - 0.5).abs() < 0.005, "{mean}");
        assert!((var - 1.0 / 12.0).abs() < 0.002, "{var}");
    }

    #[test]
    fn poisson_mean_equals_variance() {
        let mut r = Rng::new(2);
        for lambda in [0.3, 4.0, 25.0, 200.0] {
            let xs: Vec<f64> = (0..50_000).map(|_| r.poisson(lambda) as f64).collect();
            let (mean, var) = mean_var(&xs);
            assert!(
                (mean - lambda).abs() < 0.03 * lambda + 0.02,
                "lambda {lambda}: mean {mean}"
            );
            assert!(
                (var - lambda).abs() < 0.08 * lambda + 0.05,
                "lambda {lambda}: var {var}"
            );
        }
        assert_eq!(r.poisson(0.0), 0);
    }

    #[test]
    fn hex_length() {
        let h = Rng::new(3).hex(32);
        assert_eq!(h.len(), 64);
        assert!(h.chars().all(|c| c.is_ascii_hexdigit()));
    }
}
