//! Retry delays towards control: exponential from `reconnect_min` to `reconnect_max`, with
//! jitter so that nodes cut off together do not come back together.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use verge_config::NodeId;

/// The delay before retry number `attempt` (0-based): `min × 2^attempt` capped at `max`, of
/// which the upper half is scaled by `jitter` (0..1) so that nodes cut off together do not
/// come back together. Always within `[min, max]`.
pub(crate) fn backoff_delay(attempt: u32, min: Duration, max: Duration, jitter: f64) -> Duration {
    let max = max.max(min);
    let ceiling = min
        .saturating_mul(2u32.saturating_pow(attempt.min(31)))
        .min(max);
    let half = ceiling / 2;
    (half + half.mul_f64(jitter.clamp(0.0, 1.0)))
        .max(min)
        .min(max)
}

/// Successive retry delays; [`Backoff::reset`] once control answers properly again.
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    attempt: u32,
    /// xorshift state for the jitter: no shared or global random source needed.
    state: u64,
}

impl Backoff {
    pub(crate) fn new(min: Duration, max: Duration, seed: u64) -> Backoff {
        Backoff {
            min,
            max,
            attempt: 0,
            state: seed | 1,
        }
    }

    pub(crate) fn next(&mut self) -> Duration {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        let jitter = (self.state >> 11) as f64 / (1u64 << 53) as f64;
        let delay = backoff_delay(self.attempt, self.min, self.max, jitter);
        self.attempt = self.attempt.saturating_add(1);
        delay
    }

    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// A seed that differs between nodes and between runs.
pub(crate) fn jitter_seed(id: &NodeId) -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write(id.as_str().as_bytes());
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    hasher.write_u128(nanos);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_stays_between_its_bounds_and_doubles_until_the_cap() {
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(5));
        for attempt in [0, 1, 2, 5, 6, 7, 31, 32, 1000, u32::MAX] {
            for jitter in [0.0, 0.25, 0.5, 0.999, 1.0, -3.0, 7.0] {
                let d = backoff_delay(attempt, min, max, jitter);
                assert!(
                    min <= d && d <= max,
                    "attempt {attempt}, jitter {jitter}: {d:?}"
                );
            }
        }
        assert_eq!(backoff_delay(0, min, max, 0.7), min);
        // Attempt 3: a ceiling of 800ms, of which the upper half is jittered.
        assert_eq!(backoff_delay(3, min, max, 0.0), Duration::from_millis(400));
        assert_eq!(backoff_delay(3, min, max, 1.0), Duration::from_millis(800));
        assert_eq!(backoff_delay(10, min, max, 1.0), max);
        assert_eq!(backoff_delay(10, min, max, 0.0), max / 2);
        // A misordered pair cannot panic or escape the minimum.
        assert_eq!(backoff_delay(4, max, min, 0.5), max);
    }

    #[test]
    fn a_backoff_grows_with_jitter_and_resets() {
        let (min, max) = (Duration::from_millis(10), Duration::from_millis(1000));
        let mut backoff = Backoff::new(min, max, 12345);
        let delays: Vec<Duration> = (0..12).map(|_| backoff.next()).collect();
        assert_eq!(delays[0], min);
        assert!(delays.iter().all(|d| min <= *d && *d <= max), "{delays:?}");
        assert!(delays[11] >= max / 2, "{delays:?}");
        let late: std::collections::HashSet<Duration> = delays[8..].iter().copied().collect();
        assert!(late.len() > 1, "capped delays are jittered: {delays:?}");
        backoff.reset();
        assert_eq!(backoff.next(), min);
    }
}
