//! The retry budget: retries capped at a share of requests over a sliding window.

use std::sync::Mutex;
use tokio::time::Instant;

use super::lock;

/// Length of the sliding window the retry budget counts requests and retries over.
pub(super) const BUDGET_WINDOW_SECS: u64 = 10;

/// Caps retries at a share of requests over a sliding window, plus a small floor per second.
///
/// Without it, retries multiply the load on an origin exactly when it is struggling: with the
/// budget, a failing pool sends at most `percent`% more requests than it is given.
pub(super) struct RetryBudget {
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
    pub(super) fn new(percent: u32, min_per_second: u32, start: Instant) -> RetryBudget {
        RetryBudget {
            percent,
            min_per_second,
            start,
            buckets: Mutex::new([BudgetBucket::default(); BUDGET_WINDOW_SECS as usize]),
        }
    }

    pub(super) fn record_request(&self, now: Instant) {
        let mut buckets = lock(&self.buckets);
        self.bucket(&mut buckets, now).requests += 1;
    }

    /// Takes one retry from the budget if the window allows it.
    pub(super) fn try_retry(&self, now: Instant) -> bool {
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
