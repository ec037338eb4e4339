//! Which object a client asks for next: a Zipf popularity law over ranked objects, drawn from a
//! small seeded generator so a run's sequence of requests is reproducible.

/// xorshift64* (Vigna): fast, seedable, good enough to pick objects; not for secrets.
#[derive(Debug, Clone)]
pub struct XorShift {
    state: u64,
}

impl XorShift {
    /// A generator for `seed`; seeds are spread by splitmix64 so neighbouring seeds (one per
    /// client) give unrelated sequences, and the state is never zero.
    pub fn new(seed: u64) -> XorShift {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        XorShift { state: z.max(1) }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `[0, 1)`, from the top 53 bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Ranks `0..n` with `P(rank k) ∝ 1 / (k + 1)^s`; `s = 0` is uniform.
#[derive(Debug, Clone)]
pub struct Zipf {
    /// Cumulative probabilities; the last is 1.
    cdf: Vec<f64>,
}

impl Zipf {
    /// `n ≥ 1` objects, exponent `s ≥ 0` (checked by the workload's validation).
    pub fn new(n: usize, s: f64) -> Zipf {
        let mut cdf = Vec::with_capacity(n.max(1));
        let mut sum = 0.0;
        for k in 1..=n.max(1) {
            sum += (k as f64).powf(-s);
            cdf.push(sum);
        }
        for c in &mut cdf {
            *c /= sum;
        }
        Zipf { cdf }
    }

    /// The probability of `rank` (0 is the most popular).
    pub fn probability(&self, rank: usize) -> f64 {
        let below = if rank == 0 { 0.0 } else { self.cdf[rank - 1] };
        self.cdf.get(rank).map_or(0.0, |c| c - below)
    }

    pub fn sample(&self, rng: &mut XorShift) -> usize {
        let u = rng.next_f64();
        self.cdf
            .partition_point(|&c| c <= u)
            .min(self.cdf.len() - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rank_one_is_drawn_as_often_as_zipf_says() {
        let zipf = Zipf::new(100, 1.0);
        // 1 / H(100) with H(100) = 5.187...
        let expected = 1.0 / (1..=100).map(|k| 1.0 / k as f64).sum::<f64>();
        assert!((zipf.probability(0) - expected).abs() < 1e-12);
        let mut rng = XorShift::new(7);
        let draws = 200_000;
        let mut counts = vec![0u32; 100];
        for _ in 0..draws {
            counts[zipf.sample(&mut rng)] += 1;
        }
        let share = f64::from(counts[0]) / f64::from(draws);
        assert!((share - expected).abs() < 0.01, "{share} vs {expected}");
        // Rank 2 about half as often as rank 1 when s = 1.
        let ratio = f64::from(counts[1]) / f64::from(counts[0]);
        assert!((ratio - 0.5).abs() < 0.03, "{ratio}");
    }

    #[test]
    fn exponent_zero_is_uniform_and_every_rank_is_reachable() {
        let zipf = Zipf::new(4, 0.0);
        let mut rng = XorShift::new(1);
        let mut counts = [0u32; 4];
        for _ in 0..40_000 {
            counts[zipf.sample(&mut rng)] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "{counts:?}");
        }
        assert_eq!(Zipf::new(1, 1.2).sample(&mut rng), 0);
    }

    #[test]
    fn seeds_give_reproducible_and_distinct_sequences() {
        let a: Vec<u64> = (0..4)
            .map({
                let mut r = XorShift::new(3);
                move |_| r.next_u64()
            })
            .collect();
        let b: Vec<u64> = (0..4)
            .map({
                let mut r = XorShift::new(3);
                move |_| r.next_u64()
            })
            .collect();
        assert_eq!(a, b);
        assert_ne!(XorShift::new(0).next_u64(), XorShift::new(1).next_u64());
    }
}
