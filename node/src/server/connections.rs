//! The open connections of a kind of listener (the data plane's clear and TLS listeners share
//! one table; the admin listener has its own), under a bound that is never a reason to leave a
//! new client hanging: at the bound, the connection idle the longest is closed to make room;
//! only when none is idle is the new one refused. Each address may hold only so many.
//!
//! A connection is idle from its accept until its first request, and whenever it has no
//! request in flight (a response streaming counts as in flight).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tokio::time::Instant;

/// Why a new connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// At the bound, and every open connection busy.
    Full,
    /// The client's address already holds its most.
    PerAddress,
}

/// The connections of one kind of listener.
#[derive(Debug)]
pub struct ConnectionLimit {
    max: AtomicUsize,
    per_address: AtomicUsize,
    /// Time zero of the connections' idle clocks.
    epoch: Instant,
    table: Mutex<Table>,
}

#[derive(Debug, Default)]
struct Table {
    next_id: u64,
    open: HashMap<u64, Arc<ConnectionState>>,
    per_address: HashMap<IpAddr, usize>,
    /// Connections asked to close that have not yet: they do not hold room for new ones.
    closing: usize,
}

/// What the table knows of one connection, shared with the task serving it.
#[derive(Debug)]
pub struct ConnectionState {
    address: IpAddr,
    in_flight: AtomicUsize,
    /// Milliseconds since the table's epoch when the connection last became idle.
    idle_since: AtomicU64,
    /// Whether a request has ever arrived.
    requested: AtomicBool,
    /// Set when the table asks the connection to close (eviction).
    evicted: AtomicBool,
    close: Notify,
    /// Told each time a request begins.
    request_began: Notify,
}

impl ConnectionState {
    /// Whether the table asked this connection to close.
    pub fn evicted(&self) -> bool {
        self.evicted.load(Ordering::Acquire)
    }

    /// Completes once the table asks the connection to close.
    pub async fn close_requested(&self) {
        let notified = self.close.notified();
        if self.evicted() {
            return;
        }
        notified.await;
    }

    pub fn has_requested(&self) -> bool {
        self.requested.load(Ordering::Acquire)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Completes once a request begins (or has begun and is still in flight).
    pub async fn request_begins(&self) {
        let began = self.request_began.notified();
        if self.in_flight() > 0 {
            return;
        }
        began.await;
    }
}

impl ConnectionLimit {
    pub fn new(max: usize, per_address: usize) -> Arc<ConnectionLimit> {
        Arc::new(ConnectionLimit {
            max: AtomicUsize::new(max),
            per_address: AtomicUsize::new(per_address),
            epoch: Instant::now(),
            table: Mutex::new(Table::default()),
        })
    }

    /// Changes the bound. Lowering it closes nothing by itself: idle connections make room
    /// for new ones as they arrive.
    pub fn set_max(&self, max: usize) {
        self.max.store(max, Ordering::Release);
    }

    pub fn set_per_address(&self, max: usize) {
        self.per_address.store(max, Ordering::Release);
    }

    pub fn max(&self) -> usize {
        self.max.load(Ordering::Acquire)
    }

    pub fn open(&self) -> usize {
        self.lock().open.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// When `state` last became idle.
    pub fn idle_since(&self, state: &ConnectionState) -> Instant {
        self.epoch + std::time::Duration::from_millis(state.idle_since.load(Ordering::Acquire))
    }

    /// Admits a connection from `address`, closing the connection idle the longest when at
    /// the bound. `Ok`: the connection's slot, and whether one was evicted for it.
    pub fn admit(self: &Arc<Self>, address: IpAddr) -> Result<(ConnectionSlot, bool), Refused> {
        let mut table = self.lock();
        let from_address = table.per_address.get(&address).copied().unwrap_or(0);
        if from_address >= self.per_address.load(Ordering::Acquire) {
            return Err(Refused::PerAddress);
        }
        let mut evicted = false;
        if table.open.len().saturating_sub(table.closing) >= self.max() {
            let oldest = table
                .open
                .values()
                .filter(|c| c.in_flight() == 0 && !c.evicted())
                .min_by_key(|c| c.idle_since.load(Ordering::Acquire))
                .cloned();
            let Some(oldest) = oldest else {
                return Err(Refused::Full);
            };
            oldest.evicted.store(true, Ordering::Release);
            oldest.close.notify_one();
            table.closing += 1;
            evicted = true;
        }
        let id = table.next_id;
        table.next_id += 1;
        let state = Arc::new(ConnectionState {
            address,
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(self.now_ms()),
            requested: AtomicBool::new(false),
            evicted: AtomicBool::new(false),
            close: Notify::new(),
            request_began: Notify::new(),
        });
        table.open.insert(id, Arc::clone(&state));
        *table.per_address.entry(address).or_insert(0) += 1;
        let slot = ConnectionSlot {
            limit: Arc::clone(self),
            id,
            state,
        };
        Ok((slot, evicted))
    }
}

/// One admitted connection's place in the table, given up when dropped.
#[derive(Debug)]
pub struct ConnectionSlot {
    limit: Arc<ConnectionLimit>,
    id: u64,
    state: Arc<ConnectionState>,
}

impl ConnectionSlot {
    pub fn state(&self) -> &Arc<ConnectionState> {
        &self.state
    }

    pub fn limit(&self) -> &Arc<ConnectionLimit> {
        &self.limit
    }

    /// A request begins on this connection; it is busy until the returned guard drops.
    pub fn begin_request(&self) -> RequestInFlight {
        self.state.requested.store(true, Ordering::Release);
        self.state.in_flight.fetch_add(1, Ordering::AcqRel);
        self.state.request_began.notify_waiters();
        RequestInFlight {
            limit: Arc::clone(&self.limit),
            state: Arc::clone(&self.state),
        }
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut table = self.limit.lock();
        if table.open.remove(&self.id).is_some() && self.state.evicted() {
            table.closing = table.closing.saturating_sub(1);
        }
        let address = self.state.address;
        if let Some(count) = table.per_address.get_mut(&address) {
            *count -= 1;
            if *count == 0 {
                table.per_address.remove(&address);
            }
        }
    }
}

/// A request in flight on a connection.
#[derive(Debug)]
pub struct RequestInFlight {
    limit: Arc<ConnectionLimit>,
    state: Arc<ConnectionState>,
}

impl Drop for RequestInFlight {
    fn drop(&mut self) {
        if self.state.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.state
                .idle_since
                .store(self.limit.now_ms(), Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[tokio::test(start_paused = true)]
    async fn at_the_bound_the_longest_idle_connection_makes_room() {
        let limit = ConnectionLimit::new(2, 100);
        let (first, _) = limit.admit(ip(1)).unwrap();
        tokio::time::advance(std::time::Duration::from_secs(1)).await;
        let (second, _) = limit.admit(ip(2)).unwrap();
        tokio::time::advance(std::time::Duration::from_secs(1)).await;
        let (third, evicted) = limit.admit(ip(3)).unwrap();
        assert!(evicted);
        assert!(first.state().evicted(), "the oldest idle one goes");
        assert!(!second.state().evicted());
        // The evicted one has not closed yet, but holds no room: the next evicts again.
        let (_fourth, evicted) = limit.admit(ip(4)).unwrap();
        assert!(evicted && second.state().evicted());
        assert!(!third.state().evicted());
        drop((first, second, third));
    }

    #[test]
    fn busy_connections_are_never_evicted_and_a_full_table_refuses() {
        let limit = ConnectionLimit::new(1, 100);
        let (busy, _) = limit.admit(ip(1)).unwrap();
        let request = busy.begin_request();
        assert_eq!(limit.admit(ip(2)).unwrap_err(), Refused::Full);
        drop(request);
        let (_next, evicted) = limit.admit(ip(2)).unwrap();
        assert!(evicted && busy.state().evicted());
    }

    #[test]
    fn one_address_holds_at_most_its_share() {
        let limit = ConnectionLimit::new(100, 2);
        let a = limit.admit(ip(1)).unwrap();
        let _b = limit.admit(ip(1)).unwrap();
        assert_eq!(limit.admit(ip(1)).unwrap_err(), Refused::PerAddress);
        let _other = limit.admit(ip(2)).unwrap();
        drop(a);
        let _again = limit.admit(ip(1)).unwrap();
        assert_eq!(limit.open(), 3);
    }
}
