//! Single-flight fills and hit-for-miss.
//!
//! The first miss for a key becomes the *leader* and fetches; concurrent misses become
//! *followers* and wait for the leader's outcome instead of going upstream themselves. When the
//! outcome is a stored object the followers serve it. When the response turned out not storable
//! the followers go upstream in parallel, and the key is remembered for a while (hit-for-miss) so
//! later requests for it skip coalescing rather than queueing behind each other.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use crate::key::CacheKey;
use crate::object::CachedObject;

/// What a fill ended with, as seen by its followers. `F` is the caller's error type.
#[derive(Debug, Clone)]
pub enum FillOutcome<F> {
    /// The response was stored; serve this object.
    Stored(Arc<CachedObject>),
    /// The response cannot be shared; each follower fetches for itself.
    NotStorable,
    /// The fill failed with this error; followers answer with it.
    Failed(F),
    /// The leader went away (client disconnected, task cancelled) without an outcome.
    Abandoned,
}

type Slot<F> = Option<FillOutcome<F>>;

/// The fills in progress and the keys currently known not to be storable.
pub struct Flights<F> {
    in_flight: Mutex<HashMap<CacheKey, watch::Receiver<Slot<F>>>>,
    hit_for_miss: Option<moka::sync::Cache<CacheKey, ()>>,
}

/// How a miss proceeds.
pub enum Join<F: Clone + Send + Sync + 'static> {
    /// Fetch, then call [`FlightLeader::finish`].
    Leader(FlightLeader<F>),
    /// Wait for the leader's outcome.
    Follower(Follower<F>),
    /// The key is hit-for-miss: fetch without coalescing.
    Uncoalesced,
}

impl<F: Clone + Send + Sync + 'static> Flights<F> {
    /// `hit_for_miss_ttl` of zero disables hit-for-miss memory.
    pub fn new(hit_for_miss_ttl: Duration, hit_for_miss_max_keys: u64) -> Arc<Flights<F>> {
        let hit_for_miss = (!hit_for_miss_ttl.is_zero()).then(|| {
            moka::sync::Cache::builder()
                .max_capacity(hit_for_miss_max_keys)
                .time_to_live(hit_for_miss_ttl)
                .build()
        });
        Arc::new(Flights {
            in_flight: Mutex::new(HashMap::new()),
            hit_for_miss,
        })
    }

    /// Joins the fill for `key`, starting one if none is running.
    pub fn join(self: &Arc<Self>, key: &CacheKey) -> Join<F> {
        if self
            .hit_for_miss
            .as_ref()
            .is_some_and(|h| h.contains_key(key))
        {
            return Join::Uncoalesced;
        }
        let mut map = self.lock();
        if let Some(rx) = map.get(key) {
            return Join::Follower(Follower { rx: rx.clone() });
        }
        let (tx, rx) = watch::channel(None);
        map.insert(key.clone(), rx);
        Join::Leader(FlightLeader {
            flights: Arc::clone(self),
            key: key.clone(),
            tx: Some(tx),
        })
    }

    /// Fills running now.
    pub fn in_flight(&self) -> usize {
        self.lock().len()
    }

    /// Keys remembered as not storable.
    pub fn hit_for_miss_keys(&self) -> u64 {
        self.hit_for_miss.as_ref().map_or(0, |h| {
            h.run_pending_tasks();
            h.entry_count()
        })
    }

    /// Forgets that `key` was not storable (e.g. after a purge).
    pub fn forget(&self, key: &CacheKey) {
        if let Some(h) = &self.hit_for_miss {
            h.invalidate(key);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<CacheKey, watch::Receiver<Slot<F>>>> {
        // A panic while holding this lock cannot leave the map inconsistent (single
        // insert/remove calls), so a poisoned lock is still usable.
        self.in_flight
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn complete(&self, key: &CacheKey, tx: &watch::Sender<Slot<F>>, outcome: FillOutcome<F>) {
        if matches!(outcome, FillOutcome::NotStorable) {
            if let Some(h) = &self.hit_for_miss {
                h.insert(key.clone(), ());
            }
        }
        {
            let mut map = self.lock();
            if map
                .get(key)
                .is_some_and(|rx| rx.same_channel(&tx.subscribe()))
            {
                map.remove(key);
            }
        }
        tx.send_replace(Some(outcome));
    }
}

/// The one request that fetches for a key. Dropping it without [`FlightLeader::finish`] tells
/// the followers the fill was abandoned, so they retry rather than wait forever.
pub struct FlightLeader<F: Clone + Send + Sync + 'static> {
    flights: Arc<Flights<F>>,
    key: CacheKey,
    tx: Option<watch::Sender<Slot<F>>>,
}

impl<F: Clone + Send + Sync + 'static> FlightLeader<F> {
    /// Publishes the outcome. Store the object *before* finishing, so a request arriving after
    /// the flight ends finds it in the cache.
    pub fn finish(mut self, outcome: FillOutcome<F>) {
        if let Some(tx) = self.tx.take() {
            self.flights.complete(&self.key, &tx, outcome);
        }
    }

    pub fn key(&self) -> &CacheKey {
        &self.key
    }

    /// Requests waiting on this fill.
    pub fn followers(&self) -> usize {
        self.tx
            .as_ref()
            .map_or(0, |tx| tx.receiver_count().saturating_sub(2))
    }
}

impl<F: Clone + Send + Sync + 'static> Drop for FlightLeader<F> {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            self.flights
                .complete(&self.key, &tx, FillOutcome::Abandoned);
        }
    }
}

/// A request waiting for another's fill.
pub struct Follower<F> {
    rx: watch::Receiver<Slot<F>>,
}

impl<F: Clone> Follower<F> {
    pub async fn wait(mut self) -> FillOutcome<F> {
        match self.rx.wait_for(Option::is_some).await {
            Ok(slot) => slot.clone().unwrap_or(FillOutcome::Abandoned),
            Err(_) => FillOutcome::Abandoned,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(p: &str) -> CacheKey {
        CacheKey::from_parts("http", "h", p)
    }

    #[tokio::test]
    async fn second_join_follows_and_gets_the_outcome() {
        let flights = Flights::<String>::new(Duration::from_secs(30), 100);
        let Join::Leader(leader) = flights.join(&key("/a")) else {
            panic!("first join must lead")
        };
        let Join::Follower(follower) = flights.join(&key("/a")) else {
            panic!("second join must follow")
        };
        assert!(matches!(flights.join(&key("/b")), Join::Leader(_)));
        let waiter = tokio::spawn(follower.wait());
        leader.finish(FillOutcome::Failed("boom".to_string()));
        assert!(matches!(waiter.await.unwrap(), FillOutcome::Failed(e) if e == "boom"));
        assert_eq!(flights.in_flight(), 0);
    }

    #[tokio::test]
    async fn not_storable_makes_the_key_uncoalesced() {
        let flights = Flights::<()>::new(Duration::from_secs(30), 100);
        let Join::Leader(leader) = flights.join(&key("/a")) else {
            panic!()
        };
        leader.finish(FillOutcome::NotStorable);
        assert!(matches!(flights.join(&key("/a")), Join::Uncoalesced));
        assert_eq!(flights.hit_for_miss_keys(), 1);
        flights.forget(&key("/a"));
        assert!(matches!(flights.join(&key("/a")), Join::Leader(_)));
    }

    #[tokio::test]
    async fn dropped_leader_abandons_and_frees_the_key() {
        let flights = Flights::<()>::new(Duration::ZERO, 1);
        let Join::Leader(leader) = flights.join(&key("/a")) else {
            panic!()
        };
        let Join::Follower(follower) = flights.join(&key("/a")) else {
            panic!()
        };
        drop(leader);
        assert!(matches!(follower.wait().await, FillOutcome::Abandoned));
        assert!(matches!(flights.join(&key("/a")), Join::Leader(_)));
    }
}
