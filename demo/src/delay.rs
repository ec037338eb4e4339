//! The delay link: a TCP relay in front of a node that makes loopback behave like a wide-area
//! network. For each accepted connection it places the peer by its source address
//! ([`region_of`]) and holds every chunk, in both directions, for the one-way latency between
//! the peer's region and the link's own (plus optional jitter) before forwarding it.
//!
//! Each direction is a queue of `(release_at, bytes)`: reading goes on while earlier chunks wait,
//! so the delay adds latency without throttling throughput, and order is kept. A direction stops
//! reading once `max_buffered` bytes are held (the slow side pushes back, memory stays bounded).
//! A peer outside every region block (`127.0.0.1`: control, tools) gets no delay.
//!
//! Release times are kept by a [`PreciseTimer`] (a thread per link sleeping on the OS clock)
//! rather than tokio's timer alone: tokio rounds every deadline up to its next millisecond tick
//! and its driver sleeps in whole milliseconds, so a 1 ms delay took 1 to 3 ms and a local hit
//! (two crossings) measured about 5 ms instead of 2.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use crate::regions::{region_of, LatencyMatrix, Region};

/// Largest read, and so the largest chunk held at once.
const CHUNK_BYTES: usize = 64 * 1024;
/// Time to connect to the node behind the link; past it the peer's connection is closed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The largest TCP segment on both sides of the link, as on an Ethernet path. Loopback's own
/// (about 64 KiB) against a connection's small starting receive window made bodies of a few
/// hundred KiB stall for a delayed acknowledgement (40 ms and more) now and then: a tail no
/// real network has.
const SEGMENT_BYTES: u32 = 1460;

/// Where a link is and how it delays.
#[derive(Debug, Clone)]
pub struct LinkSettings {
    /// The region the link (and the node behind it) is in.
    pub region: String,
    /// The simulated regions, to place peers by their source address.
    pub regions: Vec<Region>,
    pub matrix: LatencyMatrix,
    /// The addresses at the link's own site, the link's included (empty: a site of its own):
    /// peers from them are `matrix.site` away.
    pub site: Vec<IpAddr>,
    /// Up to this much extra delay per chunk, drawn uniformly (never reordering bytes).
    pub jitter: Duration,
    /// Connections relayed at once; more wait in the listener's backlog.
    pub max_connections: usize,
    /// Bytes held per direction of one connection before the link stops reading it.
    pub max_buffered: usize,
}

impl LinkSettings {
    /// A link in `region` with no jitter, 4096 connections and 4 MiB held per direction: more
    /// than the largest sample object, so that the bound never holds back part of an answer
    /// for one more crossing.
    pub fn new(region: &str, regions: &[Region], matrix: &LatencyMatrix) -> LinkSettings {
        LinkSettings {
            region: region.to_string(),
            regions: regions.to_vec(),
            matrix: matrix.clone(),
            site: Vec::new(),
            jitter: Duration::ZERO,
            max_connections: 4096,
            max_buffered: 4 * 1024 * 1024,
        }
    }

    /// The one-way delay for a connection from `peer`: the site's latency for a peer at the
    /// link's site, else the latency between the peer's region and the link's; none for a peer
    /// outside every region.
    pub fn delay_for(&self, peer: IpAddr) -> Duration {
        if self.site.contains(&peer) {
            return self.matrix.site;
        }
        region_of(&self.regions, peer)
            .map_or(Duration::ZERO, |r| self.matrix.one_way(&r.id, &self.region))
    }
}

/// A link's listener, bound but not relaying yet: its address can be handed out (say, as a
/// node's advertised URL) before the node behind it exists.
pub struct BoundLink {
    listener: TcpListener,
    addr: SocketAddr,
    settings: LinkSettings,
}

impl BoundLink {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Starts relaying every connection to `target`.
    pub fn relay_to(self, target: SocketAddr) -> DelayLink {
        let (stop, stop_rx) = watch::channel(false);
        let (target, target_rx) = watch::channel(target);
        let accept = tokio::spawn(accept_loop(
            self.listener,
            target_rx,
            Arc::new(self.settings),
            stop_rx,
        ));
        DelayLink {
            addr: self.addr,
            target,
            stop,
            accept: Some(accept),
        }
    }
}

/// A running delay link; stops (closing every relayed connection) when stopped or dropped.
pub struct DelayLink {
    addr: SocketAddr,
    /// The node behind the link, read for each accepted connection: a node restarted on
    /// another port is put behind the same link (peers keep the link's address).
    target: watch::Sender<SocketAddr>,
    stop: watch::Sender<bool>,
    accept: Option<JoinHandle<()>>,
}

impl DelayLink {
    /// Binds `listen` (port 0 picks a free port) without relaying yet.
    pub async fn bind(listen: SocketAddr, settings: LinkSettings) -> io::Result<BoundLink> {
        let socket = link_socket(listen)?;
        socket.set_reuse_address(true)?;
        socket.bind(&listen.into())?;
        socket.listen(1024)?;
        let listener = TcpListener::from_std(socket.into())?;
        let addr = listener.local_addr()?;
        Ok(BoundLink {
            listener,
            addr,
            settings,
        })
    }

    /// Binds `listen` and relays to `target`.
    pub async fn start(
        listen: SocketAddr,
        target: SocketAddr,
        settings: LinkSettings,
    ) -> io::Result<DelayLink> {
        Ok(DelayLink::bind(listen, settings).await?.relay_to(target))
    }

    /// Where peers connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`, for a link in front of an HTTP node.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The node behind the link.
    pub fn target(&self) -> SocketAddr {
        *self.target.borrow()
    }

    /// Relays connections accepted from now on to `target`; those already relayed keep
    /// theirs.
    pub fn retarget(&self, target: SocketAddr) {
        self.target.send_replace(target);
    }

    /// Stops accepting, closes every relayed connection and waits until that is done.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(accept) = self.accept.take() {
            let _ = accept.await;
        }
    }
}

impl Drop for DelayLink {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Completes once `stop` turns true or its sender is gone.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

async fn accept_loop(
    listener: TcpListener,
    target: watch::Receiver<SocketAddr>,
    settings: Arc<LinkSettings>,
    mut stop: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(settings.max_connections.max(1)));
    let timer = PreciseTimer::start("delay-link-timer");
    let mut connections = JoinSet::new();
    loop {
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            () = stopped(&mut stop) => break,
        };
        let (inbound, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    // Usually out of file descriptors: back off rather than spin.
                    let link = *target.borrow();
                    tracing::warn!(%error, %link, "delay link: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stopped(&mut stop) => break,
        };
        while connections.try_join_next().is_some() {}
        let delay = settings.delay_for(peer.ip());
        let target = *target.borrow();
        let settings = Arc::clone(&settings);
        let timer = timer.clone();
        connections.spawn(async move {
            let _slot = slot;
            if let Err(error) = relay(inbound, peer, target, delay, &settings, &timer).await {
                tracing::debug!(%error, %peer, %target, "delay link: connection ended");
            }
        });
    }
    connections.shutdown().await;
}

/// A non-blocking TCP socket for `addr`'s family whose segments are at most [`SEGMENT_BYTES`];
/// a listener's accepted connections inherit it.
fn link_socket(addr: SocketAddr) -> io::Result<socket2::Socket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_nonblocking(true)?;
    socket.set_tcp_mss(SEGMENT_BYTES)?;
    Ok(socket)
}

/// Relays one connection until both directions have ended; an error in either ends both.
async fn relay(
    inbound: TcpStream,
    peer: SocketAddr,
    target: SocketAddr,
    delay: Duration,
    settings: &LinkSettings,
    timer: &PreciseTimer,
) -> io::Result<()> {
    let socket = TcpSocket::from_std_stream(link_socket(target)?.into());
    let outbound = tokio::time::timeout(CONNECT_TIMEOUT, socket.connect(target))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connecting to the node"))??;
    inbound.set_nodelay(true)?;
    outbound.set_nodelay(true)?;
    let (from_peer, to_peer) = inbound.into_split();
    let (from_node, to_node) = outbound.into_split();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let seed = u64::from(peer.port()) ^ u64::from(now.subsec_nanos()) ^ now.as_secs();
    tokio::try_join!(
        pump(from_peer, to_node, delay, settings, timer, seed),
        pump(
            from_node,
            to_peer,
            delay,
            settings,
            timer,
            seed.rotate_left(32)
        ),
    )?;
    Ok(())
}

/// What one direction holds: bytes, or the end of the stream, each with its release time.
enum Held {
    Data {
        release: Instant,
        bytes: Bytes,
        /// Counts the bytes against the direction's buffer until they are written.
        _budget: OwnedSemaphorePermit,
    },
    End {
        release: Instant,
    },
}

/// Copies `from` to `to`, each chunk released `delay` (+ jitter) after it was read; the end of
/// the stream is passed on (as a write shutdown) after the same delay.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    delay: Duration,
    settings: &LinkSettings,
    timer: &PreciseTimer,
    seed: u64,
) -> io::Result<()> {
    let max_buffered = settings.max_buffered.clamp(1, u32::MAX as usize);
    let chunk = CHUNK_BYTES.min(max_buffered);
    let budget = Arc::new(Semaphore::new(max_buffered));
    // Unbounded in messages, bounded in bytes by `budget`.
    let (tx, mut rx) = mpsc::unbounded_channel::<Held>();
    let mut jitter = Jitter::new(seed, settings.jitter);
    let read = async move {
        let mut buf = BytesMut::new();
        let mut last = Instant::now();
        loop {
            let mut permit = Arc::clone(&budget)
                .acquire_many_owned(chunk as u32)
                .await
                .map_err(|_| io::Error::other("delay link budget closed"))?;
            if buf.capacity() < chunk {
                buf.reserve(CHUNK_BYTES.max(chunk));
            }
            let n = (&mut from).take(chunk as u64).read_buf(&mut buf).await?;
            // Never release before an earlier chunk: jitter must not reorder bytes.
            last = last.max(Instant::now() + delay + jitter.next());
            if n == 0 {
                let _ = tx.send(Held::End { release: last });
                return Ok::<(), io::Error>(());
            }
            // Keep n bytes' worth of budget with the chunk; the rest goes back at once.
            let held = permit.split(n).unwrap_or(permit);
            let bytes = buf.split().freeze();
            if tx
                .send(Held::Data {
                    release: last,
                    bytes,
                    _budget: held,
                })
                .is_err()
            {
                return Ok(());
            }
        }
    };
    let write = async move {
        while let Some(held) = rx.recv().await {
            match held {
                Held::Data { release, bytes, .. } => {
                    timer.sleep_until(release).await;
                    to.write_all(&bytes).await?;
                }
                Held::End { release } => {
                    timer.sleep_until(release).await;
                    to.shutdown().await?;
                    return Ok(());
                }
            }
        }
        Ok::<(), io::Error>(())
    };
    tokio::try_join!(read, write)?;
    Ok(())
}

/// Wakes tasks at their deadlines within tens of microseconds: one thread sleeping on a
/// condition variable until the earliest deadline. Memory is one entry per pending sleep (a
/// link's writers hold at most one each).
#[derive(Clone)]
pub(crate) struct PreciseTimer {
    shared: Arc<TimerShared>,
    /// Ends the thread once the link's last handle is gone.
    _owner: Arc<TimerOwner>,
}

struct TimerShared {
    queue: Mutex<TimerQueue>,
    changed: Condvar,
}

#[derive(Default)]
struct TimerQueue {
    due: BinaryHeap<Reverse<(std::time::Instant, u64)>>,
    wakers: std::collections::HashMap<u64, Waker>,
    next: u64,
    closed: bool,
}

struct TimerOwner(Arc<TimerShared>);

impl Drop for TimerOwner {
    fn drop(&mut self) {
        self.0.lock().closed = true;
        self.0.changed.notify_one();
    }
}

impl TimerShared {
    fn lock(&self) -> std::sync::MutexGuard<'_, TimerQueue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The thread: wakes what is due, then sleeps until the next deadline or a new entry.
    fn run(&self) {
        let mut queue = self.lock();
        loop {
            if queue.closed {
                return;
            }
            let now = std::time::Instant::now();
            let mut woken = Vec::new();
            while let Some(Reverse((at, id))) = queue.due.peek().copied() {
                if at > now {
                    break;
                }
                queue.due.pop();
                woken.extend(queue.wakers.remove(&id));
            }
            if !woken.is_empty() {
                drop(queue);
                woken.into_iter().for_each(Waker::wake);
                queue = self.lock();
                continue;
            }
            queue = match queue.due.peek() {
                Some(Reverse((at, _))) => {
                    let wait = at.saturating_duration_since(now);
                    self.changed
                        .wait_timeout(queue, wait)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
                None => self
                    .changed
                    .wait(queue)
                    .unwrap_or_else(PoisonError::into_inner),
            };
        }
    }
}

impl PreciseTimer {
    /// A timer whose thread is called `name`.
    pub(crate) fn start(name: &str) -> PreciseTimer {
        let shared = Arc::new(TimerShared {
            queue: Mutex::new(TimerQueue::default()),
            changed: Condvar::new(),
        });
        let thread = Arc::clone(&shared);
        let spawned = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || thread.run());
        if let Err(error) = spawned {
            // Sleeps still end: `sleep_until` races tokio's timer.
            tracing::warn!(%error, timer = name, "no precise timer thread; delays are rounded up to whole milliseconds");
        }
        PreciseTimer {
            _owner: Arc::new(TimerOwner(Arc::clone(&shared))),
            shared,
        }
    }

    /// Completes at `release`: on the precise timer, or on tokio's (which is the one that ends
    /// it when tokio's clock is paused, as in tests).
    pub(crate) async fn sleep_until(&self, release: Instant) {
        let now = Instant::now();
        if release <= now {
            return;
        }
        let sleep = PreciseSleep {
            shared: &self.shared,
            at: std::time::Instant::now() + (release - now),
            id: None,
        };
        tokio::select! {
            biased;
            () = sleep => {}
            () = tokio::time::sleep_until(release) => {}
        }
    }
}

/// One pending sleep on a [`PreciseTimer`]; its entry goes when it completes or is dropped.
struct PreciseSleep<'a> {
    shared: &'a TimerShared,
    at: std::time::Instant,
    id: Option<u64>,
}

impl Future for PreciseSleep<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if std::time::Instant::now() >= self.at {
            return Poll::Ready(());
        }
        let mut queue = self.shared.lock();
        match self.id {
            Some(id) => {
                queue.wakers.insert(id, cx.waker().clone());
            }
            None => {
                let id = queue.next;
                queue.next += 1;
                let earliest = queue
                    .due
                    .peek()
                    .is_none_or(|Reverse((at, _))| self.at < *at);
                queue.due.push(Reverse((self.at, id)));
                queue.wakers.insert(id, cx.waker().clone());
                drop(queue);
                self.id = Some(id);
                if earliest {
                    self.shared.changed.notify_one();
                }
            }
        }
        Poll::Pending
    }
}

impl Drop for PreciseSleep<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            // The heap entry stays until its time (then finds no waker): bounded by the sleeps
            // started within one delay.
            self.shared.lock().wakers.remove(&id);
        }
    }
}

/// Uniform jitter in `[0, max]` from a xorshift generator: cheap, and random enough to spread
/// release times.
struct Jitter {
    state: u64,
    max_micros: u64,
}

impl Jitter {
    fn new(seed: u64, max: Duration) -> Jitter {
        Jitter {
            state: seed | 1,
            max_micros: u64::try_from(max.as_micros()).unwrap_or(u64::MAX),
        }
    }

    fn next(&mut self) -> Duration {
        if self.max_micros == 0 {
            return Duration::ZERO;
        }
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        Duration::from_micros(self.state % (self.max_micros + 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::regions::default_regions;

    #[test]
    fn peers_are_delayed_by_their_region_and_outsiders_not_at_all() {
        let regions = default_regions();
        let link = LinkSettings::new("us", &regions, &LatencyMatrix::default_demo());
        let ms = Duration::from_millis;
        assert_eq!(link.delay_for("127.2.200.1".parse().unwrap()), ms(40));
        assert_eq!(link.delay_for("127.3.0.1".parse().unwrap()), ms(80));
        assert_eq!(link.delay_for("127.1.0.5".parse().unwrap()), ms(1));
        assert_eq!(link.delay_for("127.0.0.1".parse().unwrap()), ms(0));
        assert_eq!(link.delay_for("::1".parse().unwrap()), ms(0));
    }

    #[test]
    fn peers_at_the_links_site_are_the_sites_latency_away() {
        let regions = default_regions();
        let matrix = LatencyMatrix::default_demo();
        let link = LinkSettings {
            site: vec![
                "127.1.0.200".parse().unwrap(),
                "127.1.0.101".parse().unwrap(),
            ],
            ..LinkSettings::new("us", &regions, &matrix)
        };
        assert_eq!(link.delay_for("127.1.0.101".parse().unwrap()), matrix.site);
        assert_eq!(
            link.delay_for("127.1.0.1".parse().unwrap()),
            Duration::from_millis(1)
        );
    }

    #[test]
    fn jitter_stays_within_its_bound() {
        let mut jitter = Jitter::new(42, Duration::from_millis(5));
        for _ in 0..1000 {
            assert!(jitter.next() <= Duration::from_millis(5));
        }
        assert_eq!(Jitter::new(7, Duration::ZERO).next(), Duration::ZERO);
    }
}
