//! The retry budget: retries capped at a share of requests over a sliding window.

use std::sync::{Mutex, MutexGuard};
use tokio::time::Instant;

/// Retries allowed per second whatever the traffic, so a quiet upstream can still retry.
pub const MIN_RETRIES_PER_SECOND: u32 = 3;

/// Length of the sliding window the retry budget counts requests and retries over.
pub const BUDGET_WINDOW_SECS: u64 = 10;

/// Caps retries at a share of requests over a sliding window, plus a small floor per second.
///
/// Without it, retries multiply the load on an origin exactly when it is struggling: with the
/// budget, a failing upstream is sent at most `percent`% more requests than it is given.
pub struct RetryBudget {
    percent: u32,
    min_per_second: u32,
    start: Instant,
    /// One bucket per second of the window, indexed by second modulo the window.
    buckets: Mutex<[BudgetBucket; BUDGET_WINDOW_SECS as usize]>,
}

#[derive(Debug, Clone, Copy, Default)]
struct BudgetBucket {
    /// Seconds since `start` this bucket counts.
    second: u64,
    requests: u64,
    retries: u64,
}

impl RetryBudget {
    pub fn new(percent: u32, min_per_second: u32, start: Instant) -> RetryBudget {
        RetryBudget {
            percent,
            min_per_second,
            start,
            buckets: Mutex::new([BudgetBucket::default(); BUDGET_WINDOW_SECS as usize]),
        }
    }

    pub fn record_request(&self, now: Instant) {
        let mut buckets = lock(&self.buckets);
        self.bucket(&mut buckets, now).requests += 1;
    }

    /// Takes one retry from the budget if the window allows it.
    pub fn try_retry(&self, now: Instant) -> bool {
        let mut buckets = lock(&self.buckets);
        let second = self.second(now);
        let (requests, retries) = buckets
            .iter()
            .filter(|b| b.second <= second && second - b.second < BUDGET_WINDOW_SECS)
            .fold((0u64, 0u64), |(q, r), b| (q + b.requests, r + b.retries));
        let allowed = requests * u64::from(self.percent)
            + u64::from(self.min_per_second) * BUDGET_WINDOW_SECS * 100;
        if (retries + 1) * 100 > allowed {
            return false;
        }
        self.bucket(&mut buckets, now).retries += 1;
        true
    }

    fn second(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.start).as_secs()
    }

    /// The bucket for `now`, emptied first if it still counts an older second.
    fn bucket<'a>(
        &self,
        buckets: &'a mut [BudgetBucket; BUDGET_WINDOW_SECS as usize],
        now: Instant,
    ) -> &'a mut BudgetBucket {
        let second = self.second(now);
        // The modulo is below the window length, so it fits in usize.
        let bucket = &mut buckets[(second % BUDGET_WINDOW_SECS) as usize];
        if bucket.second != second {
            *bucket = BudgetBucket {
                second,
                ..BudgetBucket::default()
            };
        }
        bucket
    }
}

/// The buckets stay consistent even if a holder panicked (plain counters).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn retry_budget_allows_a_floor_then_a_share_of_requests() {
        let t0 = Instant::now();
        // Floor: 1 per second over the 10 s window.
        let budget = RetryBudget::new(0, 1, t0);
        for _ in 0..10 {
            assert!(budget.try_retry(t0));
        }
        assert!(!budget.try_retry(t0));

        let budget = RetryBudget::new(20, 0, t0);
        assert!(!budget.try_retry(t0));
        for _ in 0..10 {
            budget.record_request(t0);
        }
        assert!(budget.try_retry(t0));
        assert!(budget.try_retry(t0));
        assert!(!budget.try_retry(t0), "20% of 10 requests is 2 retries");
    }

    #[test]
    fn retry_budget_forgets_what_left_the_window() {
        let t0 = Instant::now();
        let budget = RetryBudget::new(50, 0, t0);
        for _ in 0..4 {
            budget.record_request(t0);
        }
        assert!(budget.try_retry(t0));
        assert!(budget.try_retry(t0));
        assert!(!budget.try_retry(t0));
        let later = t0 + Duration::from_secs(9);
        assert!(!budget.try_retry(later), "still within the window");
        let gone = t0 + Duration::from_secs(BUDGET_WINDOW_SECS);
        assert!(
            !budget.try_retry(gone),
            "requests left the window with the retries"
        );
        budget.record_request(gone);
        budget.record_request(gone);
        assert!(budget.try_retry(gone));
    }
}
