//! The GeoDNS responder's TCP loop (RFC 7766): messages framed by a two-byte length, answered
//! one after another on each connection, at most [`UdpLimit::max_concurrent`] connections at
//! once. A connection beyond that is closed at once and counted with the dropped queries, and
//! a connection that sends nothing for [`IDLE`] is closed, so idle or slow connections cost a
//! bounded number of tasks and sockets.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

use super::udp::{UdpAnswer, UdpLimit};
use crate::accept::next_connection;

/// How long a connection may wait for its next message (or take to take a reply).
pub const IDLE: Duration = Duration::from_secs(10);

/// Answers the connections arriving on `listener` with `handler` until `shutdown` changes.
pub async fn serve<H: UdpAnswer>(
    listener: TcpListener,
    handler: Arc<H>,
    limit: UdpLimit,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(limit.max_concurrent.max(1)));
    let mut connections = tokio::task::JoinSet::new();
    let log_error =
        |error: std::io::Error| tracing::warn!(%error, "DNS: accepting over TCP failed");
    while let Some((stream, src)) = next_connection(&listener, &mut shutdown, log_error).await {
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            limit.dropped.inc();
            drop(stream);
            continue;
        };
        let handler = Arc::clone(&handler);
        connections.spawn(async move {
            let _slot = slot;
            if let Err(error) = answer_connection(stream, src, &*handler).await {
                tracing::debug!(%error, %src, "DNS over TCP: connection ended");
            }
        });
        while connections.try_join_next().is_some() {}
    }
    connections.shutdown().await;
}

/// Answers the messages of one connection in turn until it ends, goes idle or breaks framing.
async fn answer_connection<H: UdpAnswer>(
    mut stream: TcpStream,
    src: SocketAddr,
    handler: &H,
) -> std::io::Result<()> {
    loop {
        let mut length = [0u8; 2];
        match tokio::time::timeout(IDLE, stream.read_exact(&mut length)).await {
            Ok(Ok(_)) => {}
            // The client closed, or sent nothing in time: either way, the end.
            _ => return Ok(()),
        }
        let length = usize::from(u16::from_be_bytes(length));
        if length == 0 {
            return Ok(());
        }
        let mut message = vec![0u8; length];
        match tokio::time::timeout(IDLE, stream.read_exact(&mut message)).await {
            Ok(Ok(_)) => {}
            _ => return Ok(()),
        }
        let Some(reply) = handler.answer_tcp(&message, src).await else {
            continue;
        };
        let Ok(length) = u16::try_from(reply.len()) else {
            continue;
        };
        let mut framed = Vec::with_capacity(reply.len() + 2);
        framed.extend_from_slice(&length.to_be_bytes());
        framed.extend_from_slice(&reply);
        match tokio::time::timeout(IDLE, stream.write_all(&framed)).await {
            Ok(result) => result?,
            Err(_) => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::IntCounter;

    /// Echoes each message.
    struct Echo;

    #[async_trait::async_trait]
    impl UdpAnswer for Echo {
        async fn answer_udp(&self, packet: &[u8], _src: SocketAddr) -> Option<Vec<u8>> {
            Some(packet.to_vec())
        }
    }

    async fn ask(stream: &mut TcpStream, message: &[u8]) -> Vec<u8> {
        let mut framed = (message.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(message);
        stream.write_all(&framed).await.unwrap();
        let mut length = [0u8; 2];
        stream.read_exact(&mut length).await.unwrap();
        let mut reply = vec![0u8; usize::from(u16::from_be_bytes(length))];
        stream.read_exact(&mut reply).await.unwrap();
        reply
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connections_beyond_the_limit_are_closed_and_counted() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let dropped = IntCounter::new("dropped", "dropped").unwrap();
        let limit = UdpLimit {
            max_concurrent: 2,
            dropped: dropped.clone(),
        };
        let (stop, shutdown) = watch::channel(false);
        let loop_task = tokio::spawn(serve(listener, Arc::new(Echo), limit, shutdown));

        // Two connections, idle after a first answer, hold both places.
        let mut first = TcpStream::connect(addr).await.unwrap();
        let mut second = TcpStream::connect(addr).await.unwrap();
        assert_eq!(ask(&mut first, b"one").await, b"one");
        assert_eq!(ask(&mut second, b"two").await, b"two");
        let mut third = TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 8];
        let read = tokio::time::timeout(Duration::from_secs(5), third.read(&mut buf))
            .await
            .expect("the third connection is closed at once");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        assert_eq!(dropped.get(), 1);

        // A place freed, a new connection is answered, and messages follow one another.
        drop(first);
        let mut fourth = loop {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            let mut framed = 4u16.to_be_bytes().to_vec();
            framed.extend_from_slice(b"four");
            if stream.write_all(&framed).await.is_ok() {
                let mut length = [0u8; 2];
                if stream.read_exact(&mut length).await.is_ok() {
                    let mut reply = [0u8; 4];
                    stream.read_exact(&mut reply).await.unwrap();
                    assert_eq!(&reply, b"four");
                    break stream;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(ask(&mut fourth, b"again").await, b"again");
        assert_eq!(ask(&mut second, b"still").await, b"still");

        stop.send(true).unwrap();
        loop_task.await.unwrap();
    }
}
