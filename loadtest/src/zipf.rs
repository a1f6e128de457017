//! Zipf popularity: rank k (1-based) of n items is drawn with probability
//! proportional to 1 / k^s. s = 0 is uniform; s ≈ 1 is the classic skew of
//! web and serverless traffic (a few hot functions, a long cold tail).

use crate::rng::Rng;

/// Inverse-CDF sampler over a precomputed table: O(n) memory, O(log n) per
/// draw, exact for any s ≥ 0.
#[derive(Debug, Clone)]
pub struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    pub fn new(n: usize, s: f64) -> anyhow::Result<Zipf> {
        anyhow::ensure!(n >= 1, "zipf needs at least one item");
        anyhow::ensure!(
            s.is_finite() && s >= 0.0,
            "zipf exponent s must be finite and >= 0, got {s}"
        );
        let mut cdf = Vec::with_capacity(n);
        let mut total = 0.0;
        for k in 1..=n {
            total += 1.0 / (k as f64).powf(s);
            cdf.push(total);
        }
        for c in &mut cdf {
            *c /= total;
        }
        Ok(Zipf { cdf })
    }

    pub fn len(&self) -> usize {
        self.cdf.len()
    }

    /// Probability of the item at 0-based index `i` (rank i + 1).
    pub fn probability(&self, i: usize) -> f64 {
        let below = if i == 0 { 0.0 } else { self.cdf[i - 1] };
        self.cdf[i] - below
    }

    /// A 0-based index: 0 is the most popular item.
    pub fn sample(&self, rng: &mut Rng) -> usize {
        let u = rng.next_f64();
        self.cdf
            .partition_point(|&c| c <= u)
            .min(self.cdf.len() - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn histogram(z: &Zipf, draws: usize, seed: u64) -> Vec<usize> {
        let mut rng = Rng::new(seed);
        let mut counts = vec![0; z.len()];
        for _ in 0..draws {
            counts[z.sample(&mut rng)] += 1;
        }
        counts
    }

    #[test]
    fn probabilities_sum_to_one_and_follow_the_power_law() {
        let z = Zipf::new(50, 1.2).unwrap();
        let sum: f64 = (0..50).map(|i| z.probability(i)).sum();
        assert!((sum - 1.0).abs() < 1e-9);
        let ratio = z.probability(0) / z.probability(1);
        assert!((ratio - 2f64.powf(1.2)).abs() < 1e-9);
    }

    #[test]
    fn sampled_frequencies_match_probabilities() {
        let z = Zipf::new(20, 1.0).unwrap();
        let draws = 200_000;
        let counts = histogram(&z, draws, 11);
        for (i, &c) in counts.iter().enumerate() {
            let expected = z.probability(i) * draws as f64;
            // 5 standard deviations of a binomial count.
            let sd = (expected * (1.0 - z.probability(i))).sqrt();
            assert!(
                (c as f64 - expected).abs() < 5.0 * sd + 1.0,
                "rank {}: {c} vs {expected:.0}",
                i + 1
            );
        }
        // Monotone popularity at the head.
        assert!(counts[0] > counts[1] && counts[1] > counts[2]);
    }

    #[test]
    fn zero_exponent_is_uniform() {
        let z = Zipf::new(4, 0.0).unwrap();
        let counts = histogram(&z, 40_000, 5);
        for c in counts {
            assert!((c as i64 - 10_000).abs() < 500, "{c}");
        }
    }

    #[test]
    fn single_item_and_bad_input() {
        let z = Zipf::new(1, 2.0).unwrap();
        let mut rng = Rng::new(1);
        assert!((0..100).all(|_| z.sample(&mut rng) == 0));
        assert!(Zipf::new(0, 1.0).is_err());
        assert!(Zipf::new(3, -1.0).is_err());
        assert!(Zipf::new(3, f64::NAN).is_err());
    }
}
