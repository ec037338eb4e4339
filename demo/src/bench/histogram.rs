//! Latency distribution in bounded memory: a log-linear histogram of microseconds (256
//! sub-buckets per power of two, so any percentile is within 0.4% of the true value), with the
//! exact count, sum and maximum beside it. A power of two's counts are allocated when a value
//! first falls in it: latencies span a few of them, so a histogram takes a few KiB.

use serde::Serialize;

/// Sub-buckets per power of two; values below this are exact.
const SUB: u64 = 256;
const SUB_BITS: u32 = 8;
/// Values are clamped to 2^40 µs (about 12 days).
const MAX_EXP: u32 = 40;
const BUCKETS: usize = (SUB + (MAX_EXP - SUB_BITS + 1) as u64 * SUB) as usize;
/// Buckets come in blocks of [`SUB`], one per power of two (the first: the exact values).
const BLOCKS: usize = BUCKETS / SUB as usize;
/// Most values a resample draws one by one; larger histograms resample the quantile's rank.
pub const EXACT_RESAMPLE_MAX: usize = 5_000;

#[derive(Debug, Clone, PartialEq)]
pub struct LatencyHistogram {
    /// Per block, its counts once a value has fallen in it.
    blocks: Vec<Option<Box<[u64]>>>,
    count: u64,
    sum_us: u64,
    max_us: u64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            blocks: vec![None; BLOCKS],
            count: 0,
            sum_us: 0,
            max_us: 0,
        }
    }
}

fn index(us: u64) -> usize {
    let us = us.min((1u64 << MAX_EXP) - 1);
    if us < SUB {
        return us as usize;
    }
    let exp = 63 - us.leading_zeros(); // ≥ SUB_BITS
    let mantissa = (us >> (exp - SUB_BITS)) & (SUB - 1);
    (SUB + u64::from(exp - SUB_BITS) * SUB + mantissa) as usize
}

/// The smallest and largest value of bucket `i`.
fn bounds(i: usize) -> (u64, u64) {
    let i = i as u64;
    if i < SUB {
        return (i, i);
    }
    let exp = (i - SUB) / SUB + u64::from(SUB_BITS);
    let mantissa = (i - SUB) % SUB;
    let width = 1u64 << (exp - u64::from(SUB_BITS));
    let low = (1u64 << exp) + mantissa * width;
    (low, low + width - 1)
}

/// Percentiles of a distribution, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LatencySummary {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

impl LatencyHistogram {
    pub fn record(&mut self, us: u64) {
        self.add(index(us), 1);
        self.count += 1;
        self.sum_us = self.sum_us.saturating_add(us);
        self.max_us = self.max_us.max(us);
    }

    pub fn merge(&mut self, other: &LatencyHistogram) {
        for (i, c) in other.buckets() {
            self.add(i, c);
        }
        self.count += other.count;
        self.sum_us = self.sum_us.saturating_add(other.sum_us);
        self.max_us = self.max_us.max(other.max_us);
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    fn add(&mut self, i: usize, n: u64) {
        let sub = SUB as usize;
        let block = self.blocks[i / sub].get_or_insert_with(|| vec![0; sub].into_boxed_slice());
        block[i % sub] += n;
    }

    /// The count in bucket `i`.
    fn at(&self, i: usize) -> u64 {
        let sub = SUB as usize;
        self.blocks[i / sub].as_ref().map_or(0, |b| b[i % sub])
    }

    /// The non-empty buckets, in order, with their counts.
    fn buckets(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        let sub = SUB as usize;
        self.blocks
            .iter()
            .enumerate()
            .filter_map(|(b, block)| Some((b, block.as_ref()?)))
            .flat_map(move |(b, block)| {
                block
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| **c > 0)
                    .map(move |(j, c)| (b * sub + j, *c))
            })
    }

    /// The value at quantile `q` (0..=1) in µs: the midpoint of the bucket holding the
    /// `ceil(q · count)`-th value, never above the exact maximum (which the last rank is). `None` when empty.
    pub fn quantile_us(&self, q: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        if rank >= self.count {
            return Some(self.max_us);
        }
        let mut seen = 0;
        for (i, c) in self.buckets() {
            seen += c;
            if seen >= rank {
                let (low, high) = bounds(i);
                return Some((low + (high - low) / 2).min(self.max_us));
            }
        }
        Some(self.max_us)
    }

    pub fn summary(&self) -> Option<LatencySummary> {
        let ms = |q: f64| self.quantile_us(q).map(|us| us as f64 / 1000.0);
        Some(LatencySummary {
            p50: ms(0.50)?,
            p90: ms(0.90)?,
            p99: ms(0.99)?,
            max: self.max_us as f64 / 1000.0,
            mean: self.sum_us as f64 / self.count as f64 / 1000.0,
        })
    }

    /// `rounds` bootstrap replicates of [`quantile_us`](Self::quantile_us) at `q`: each reads
    /// the quantile off as many values as the histogram holds, drawn from it with replacement.
    /// Their spread is how far the quantile could have landed from this one run's sampling
    /// alone. Empty when the histogram is.
    ///
    /// Up to [`EXACT_RESAMPLE_MAX`] values, each replicate draws them all; past it, the rank
    /// the quantile lands on is drawn instead, from its normal approximation (the share of
    /// drawn values at or below the quantile varies by `√(q(1−q)/n)`), so the work stays
    /// bounded whatever the run's length.
    pub fn resampled_quantiles(&self, q: f64, rounds: usize, seed: u64) -> Vec<u64> {
        let n = usize::try_from(self.count).unwrap_or(usize::MAX);
        if n == 0 {
            return Vec::new();
        }
        // Per non-empty bucket: values up to and including it, and the value quantile_us reads.
        let mut below = Vec::new();
        let mut value = Vec::new();
        let mut seen = 0;
        for (i, c) in self.buckets() {
            seen += c;
            let (low, high) = bounds(i);
            below.push(seen);
            value.push((low + (high - low) / 2).min(self.max_us));
        }
        if let Some(last) = value.last_mut() {
            *last = self.max_us;
        }
        let q = q.clamp(0.0, 1.0);
        let rank_of = |share: f64| ((share * n as f64).ceil() as usize).clamp(1, n);
        // The bucket holding the value of rank `rank` (1-based) among `below`'s counts.
        let at_rank = |rank: u64| value[below.partition_point(|&b| b < rank).min(value.len() - 1)];
        let mut rng = fastrand::Rng::with_seed(seed);
        if n > EXACT_RESAMPLE_MAX {
            let spread = (q * (1.0 - q) / n as f64).sqrt();
            return (0..rounds)
                .map(|_| {
                    // Box–Muller: one standard normal draw from two uniform ones.
                    let z = (-2.0 * (1.0 - rng.f64()).ln()).sqrt()
                        * (std::f64::consts::TAU * rng.f64()).cos();
                    at_rank(rank_of((q + z * spread).clamp(0.0, 1.0)) as u64)
                })
                .collect();
        }
        let rank = rank_of(q);
        let mut drawn = vec![0usize; n];
        (0..rounds)
            .map(|_| {
                for d in drawn.iter_mut() {
                    let r = rng.u64(0..self.count);
                    *d = below.partition_point(|&b| b <= r);
                }
                // Buckets are in value order: the rank-th smallest bucket holds the quantile.
                let (_, nth, _) = drawn.select_nth_unstable(rank - 1);
                value[*nth]
            })
            .collect()
    }

    /// The cumulative distribution as `(latency ms, share of values ≤ it)` at each non-empty
    /// bucket's upper bound: what the latency chart draws.
    pub fn cdf(&self) -> Vec<(f64, f64)> {
        let mut points = Vec::new();
        let mut seen = 0;
        for (i, c) in self.buckets() {
            seen += c;
            let high = bounds(i).1.min(self.max_us).max(1);
            points.push((high as f64 / 1000.0, seen as f64 / self.count as f64));
        }
        points
    }
}

/// Percentiles of the mixture in which every histogram weighs the same whatever its count:
/// latency as users see it when each region has as many users, though a region with slow
/// answers sends fewer requests in the same time. `None` when all are empty.
pub fn equal_weight_summary(histograms: &[&LatencyHistogram]) -> Option<LatencySummary> {
    let parts: Vec<&LatencyHistogram> =
        histograms.iter().copied().filter(|h| h.count > 0).collect();
    if parts.is_empty() {
        return None;
    }
    let weight = 1.0 / parts.len() as f64;
    let max_us = parts.iter().map(|h| h.max_us).max().unwrap_or(0);
    let quantile = |q: f64| {
        let mut share = 0.0;
        for i in 0..BUCKETS {
            share += parts
                .iter()
                .map(|h| h.at(i) as f64 / h.count as f64 * weight)
                .sum::<f64>();
            // A hair of slack for rounding, so q = 0.5 of two halves lands in the first.
            if share >= q - 1e-9 && q < 1.0 {
                let (low, high) = bounds(i);
                return (low + (high - low) / 2).min(max_us) as f64 / 1000.0;
            }
        }
        max_us as f64 / 1000.0
    };
    Some(LatencySummary {
        p50: quantile(0.50),
        p90: quantile(0.90),
        p99: quantile(0.99),
        max: max_us as f64 / 1000.0,
        mean: parts
            .iter()
            .map(|h| h.sum_us as f64 / h.count as f64 * weight)
            .sum::<f64>()
            / 1000.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_every_value_once_in_order() {
        for us in [
            0, 1, 63, 64, 65, 255, 256, 257, 511, 512, 1_000, 123_456, 9_999_999,
        ] {
            let (low, high) = bounds(index(us));
            assert!(low <= us && us <= high, "{us}: {low}..={high}");
        }
        for i in 0..BUCKETS - 1 {
            assert_eq!(bounds(i).1 + 1, bounds(i + 1).0, "bucket {i}");
        }
    }

    #[test]
    fn resampled_quantiles_spread_around_the_quantile_and_repeat_with_the_seed() {
        let mut h = LatencyHistogram::default();
        for us in 1..=400u64 {
            h.record(us * 100);
        }
        let p99 = h.quantile_us(0.99).unwrap();
        let replicates = h.resampled_quantiles(0.99, 500, 7);
        assert_eq!(replicates.len(), 500);
        assert_eq!(replicates, h.resampled_quantiles(0.99, 500, 7));
        assert_ne!(replicates, h.resampled_quantiles(0.99, 500, 8));
        // Every replicate lies within the recorded values, and they spread on both sides of
        // the quantile (the 4th largest of 400 moves by several ranks between resamples).
        assert!(replicates.iter().all(|v| (100..=40_000).contains(v)));
        let under = replicates.iter().filter(|v| **v < p99).count();
        let over = replicates.iter().filter(|v| **v > p99).count();
        assert!(under > 50 && over > 50, "{under} under, {over} over {p99}");
        // At the p99 rank sits the last of `fast` values of 100 µs, then come 200 µs ones:
        // each resample lands on 200 about half the time (fewer 100s drawn than `fast`). With
        // the border 3.2 standard deviations of the count above the rank, almost never. Both
        // for a run short enough to draw every value and for one whose rank is drawn instead.
        for (n, sigmas_3) in [(4_000u64, 20u64), (100_000, 100)] {
            let share_of_200 = |fast: u64| {
                let mut h = LatencyHistogram::default();
                for i in 0..n {
                    h.record(if i < fast { 100 } else { 200 });
                }
                let replicates = h.resampled_quantiles(0.99, 1000, 5);
                replicates.iter().filter(|v| **v == 200).count() as f64 / 1000.0
            };
            let at_border = share_of_200(n * 99 / 100);
            assert!((0.4..0.6).contains(&at_border), "n {n}: {at_border}");
            let above = share_of_200(n * 99 / 100 + sigmas_3);
            assert!(above < 0.02, "n {n}: {above}");
        }
        // One value only: no spread at all.
        let mut one = LatencyHistogram::default();
        for _ in 0..100 {
            one.record(5_000);
        }
        assert!(one
            .resampled_quantiles(0.99, 50, 1)
            .iter()
            .all(|v| *v == 5_000));
        assert!(LatencyHistogram::default()
            .resampled_quantiles(0.99, 50, 1)
            .is_empty());
    }

    #[test]
    fn percentiles_are_within_half_a_percent() {
        let mut h = LatencyHistogram::default();
        for us in 1..=10_000u64 {
            h.record(us * 10);
        }
        let close = |got: u64, want: f64| ((got as f64 - want) / want).abs() < 0.005;
        assert!(close(h.quantile_us(0.5).unwrap(), 50_000.0));
        assert!(close(h.quantile_us(0.9).unwrap(), 90_000.0));
        assert!(close(h.quantile_us(0.99).unwrap(), 99_000.0));
        assert_eq!(h.quantile_us(1.0), Some(100_000));
        let s = h.summary().unwrap();
        assert_eq!(s.max, 100.0);
        assert!((s.mean - 50.005).abs() < 1e-9);
        let cdf = h.cdf();
        assert_eq!(cdf.last().map(|p| p.1), Some(1.0));
        assert!(cdf.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1));
        assert!(LatencyHistogram::default().summary().is_none());
    }

    #[test]
    fn equal_weights_ignore_how_many_values_each_part_has() {
        let mut fast = LatencyHistogram::default();
        let mut slow = LatencyHistogram::default();
        for _ in 0..900 {
            fast.record(5_000);
        }
        for _ in 0..100 {
            slow.record(200_000);
        }
        let mut pooled = fast.clone();
        pooled.merge(&slow);
        // Pooled, 90% of values are fast; weighted equally, half are.
        assert!(pooled.quantile_us(0.8).unwrap() < 5_100);
        let equal = equal_weight_summary(&[&fast, &slow, &LatencyHistogram::default()]).unwrap();
        assert!((equal.p50 - 5.0).abs() < 0.1, "{equal:?}");
        assert!((equal.p90 - 200.0).abs() < 4.0, "{equal:?}");
        assert_eq!(equal.max, 200.0);
        assert!((equal.mean - 102.5).abs() < 1e-9, "{equal:?}");
        assert!(equal_weight_summary(&[]).is_none());
    }

    #[test]
    fn merged_histograms_count_both() {
        let mut a = LatencyHistogram::default();
        let mut b = LatencyHistogram::default();
        a.record(1_000);
        b.record(3_000);
        b.record(3_000);
        a.merge(&b);
        assert_eq!(a.count(), 3);
        let median = a.quantile_us(0.5).unwrap();
        assert!((2_950..=3_000).contains(&median), "{median}");
        assert_eq!(a.summary().unwrap().max, 3.0);
    }
}
