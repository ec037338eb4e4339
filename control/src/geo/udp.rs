//! The GeoDNS responder's UDP loop: one task reads the socket and hands each datagram to a
//! task of its own, at most [`UdpLimit::max_concurrent`] at once. A datagram that arrives when
//! that many are being answered is dropped unanswered (the client retries after its timeout)
//! and counted, so a flood costs a bounded amount of memory and tasks rather than a task per
//! packet.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus::IntCounter;
use tokio::net::UdpSocket;
use tokio::sync::{watch, Semaphore};

/// The largest datagram read: larger ones arrive cut short and do not parse.
const MAX_DATAGRAM: usize = 4096;

/// Pause after a receive error that is not about one peer, so the loop does not spin.
const RECV_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// Answers one DNS message received over UDP: the hop the UDP loop calls, so that tests can
/// hold answers.
#[async_trait::async_trait]
pub trait UdpAnswer: Send + Sync + 'static {
    /// The reply to send to `src`; `None` sends nothing.
    async fn answer_udp(&self, packet: &[u8], src: SocketAddr) -> Option<Vec<u8>>;

    /// The reply to a message received over TCP, which is not cut to a datagram's size; by
    /// default the UDP one.
    async fn answer_tcp(&self, message: &[u8], src: SocketAddr) -> Option<Vec<u8>> {
        self.answer_udp(message, src).await
    }
}

/// How many UDP queries are answered at once (and TCP connections served at once), and where
/// those dropped beyond it are counted.
#[derive(Clone)]
pub struct UdpLimit {
    /// At least 1 (`geo.dns_max_concurrent_queries`).
    pub max_concurrent: usize,
    /// `verge_geo_dns_dropped_total`.
    pub dropped: IntCounter,
}

/// Answers the datagrams arriving on `socket` with `handler` until `shutdown` changes.
pub async fn serve<H: UdpAnswer>(
    socket: UdpSocket,
    handler: Arc<H>,
    limit: UdpLimit,
    mut shutdown: watch::Receiver<bool>,
) {
    let socket = Arc::new(socket);
    let slots = Arc::new(Semaphore::new(limit.max_concurrent.max(1)));
    let mut answering = tokio::task::JoinSet::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let received = tokio::select! {
            received = socket.recv_from(&mut buf) => received,
            _ = shutdown.changed() => break,
        };
        let (len, src) = match received {
            Ok(received) => received,
            // An ICMP error about an earlier reply's peer: nothing wrong with the socket.
            Err(e) if is_about_a_peer(&e) => continue,
            Err(error) => {
                tracing::warn!(%error, "DNS: receiving over UDP failed");
                tokio::time::sleep(RECV_ERROR_PAUSE).await;
                continue;
            }
        };
        // No reply can reach port 0 or an unspecified address.
        if src.port() == 0 || src.ip().is_unspecified() {
            continue;
        }
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            limit.dropped.inc();
            continue;
        };
        let packet = buf[..len].to_vec();
        let handler = Arc::clone(&handler);
        let socket = Arc::clone(&socket);
        answering.spawn(async move {
            let _slot = slot;
            if let Some(reply) = handler.answer_udp(&packet, src).await {
                if let Err(error) = socket.send_to(&reply, src).await {
                    tracing::debug!(%error, %src, "DNS reply not sent");
                }
            }
        });
        while answering.try_join_next().is_some() {}
    }
    answering.shutdown().await;
}

fn is_about_a_peer(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Instant;

    /// Echoes each packet once `gate` opens; counts the answers begun.
    struct HeldEcho {
        begun: AtomicUsize,
        gate: Semaphore,
    }

    #[async_trait::async_trait]
    impl UdpAnswer for HeldEcho {
        async fn answer_udp(&self, packet: &[u8], _src: SocketAddr) -> Option<Vec<u8>> {
            self.begun.fetch_add(1, Ordering::SeqCst);
            let _pass = self.gate.acquire().await.ok()?;
            Some(packet.to_vec())
        }
    }

    async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    async fn recv_within(socket: &UdpSocket, wait: Duration) -> Option<Vec<u8>> {
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(wait, socket.recv(&mut buf))
            .await
            .ok()?
            .ok()?;
        Some(buf[..n].to_vec())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queries_beyond_the_limit_are_dropped_and_counted_while_answers_are_held() {
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = server.local_addr().unwrap();
        let handler = Arc::new(HeldEcho {
            begun: AtomicUsize::new(0),
            gate: Semaphore::new(0),
        });
        let dropped = IntCounter::new("dropped", "dropped").unwrap();
        let limit = UdpLimit {
            max_concurrent: 4,
            dropped: dropped.clone(),
        };
        let (stop, shutdown) = watch::channel(false);
        let loop_task = tokio::spawn(serve(server, Arc::clone(&handler), limit, shutdown));

        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client.connect(addr).await.unwrap();
        for i in 0..20u8 {
            client.send(&[i]).await.unwrap();
        }
        // Every datagram has been read once 16 are counted as dropped.
        wait_for("4 answers begun and 16 drops", || {
            handler.begun.load(Ordering::SeqCst) >= 4 && dropped.get() == 16
        })
        .await;
        assert_eq!(handler.begun.load(Ordering::SeqCst), 4);

        // Released, the four held queries are answered, and nothing else is.
        handler.gate.add_permits(1_000);
        let mut answered = Vec::new();
        while let Some(reply) = recv_within(&client, Duration::from_millis(300)).await {
            answered.push(reply[0]);
        }
        answered.sort_unstable();
        assert_eq!(answered, [0, 1, 2, 3]);

        // The slots are free again.
        client.send(&[99]).await.unwrap();
        let reply = recv_within(&client, Duration::from_secs(5)).await;
        assert_eq!(reply, Some(vec![99]));
        assert_eq!(dropped.get(), 16);

        stop.send(true).unwrap();
        loop_task.await.unwrap();
    }
}
