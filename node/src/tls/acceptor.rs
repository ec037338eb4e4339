//! TLS termination on a listener: what happens between `accept()` and the first HTTP byte.
//!
//! Each connection gets `handshake_timeout` to finish its handshake. A client that speaks plain
//! HTTP to the TLS port is told so in plain HTTP (400) rather than with a TLS alert it cannot
//! read. The server configuration is swapped as a whole on reload; a handshake uses the one it
//! started with.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use super::certs::{is_unknown_sni_refusal, HandshakeResult, TlsMetrics};

/// The first byte of every TLS record that opens a handshake.
const HANDSHAKE_RECORD: u8 = 0x16;

/// What a client that sent plain HTTP to the TLS port reads.
const PLAINTEXT_ANSWER: &[u8] = b"HTTP/1.1 400 Bad Request\r\n\
content-type: text/plain; charset=utf-8\r\n\
connection: close\r\n\
content-length: 74\r\n\r\n\
This port speaks HTTPS: a plain HTTP request was sent to it. Use https://\n";

/// Terminates TLS for the listeners of one node.
pub struct TlsTerminator {
    config: ArcSwap<ServerConfig>,
    handshake_timeout_ms: AtomicU64,
    metrics: TlsMetrics,
}

impl TlsTerminator {
    pub fn new(
        config: Arc<ServerConfig>,
        handshake_timeout: Duration,
        metrics: TlsMetrics,
    ) -> TlsTerminator {
        TlsTerminator {
            config: ArcSwap::new(config),
            handshake_timeout_ms: AtomicU64::new(millis(handshake_timeout)),
            metrics,
        }
    }

    /// New handshakes use `config`; established connections keep theirs.
    pub fn set_config(&self, config: Arc<ServerConfig>) {
        self.config.store(config);
    }

    pub fn set_handshake_timeout(&self, timeout: Duration) {
        self.handshake_timeout_ms
            .store(millis(timeout), Ordering::Relaxed);
    }

    pub fn metrics(&self) -> &TlsMetrics {
        &self.metrics
    }

    /// Completes the handshake of a freshly accepted connection, or ends the connection and
    /// counts why. Never panics on what the client sends.
    pub async fn accept(
        &self,
        stream: TcpStream,
        client: SocketAddr,
    ) -> Option<TlsStream<TcpStream>> {
        let started = Instant::now();
        let timeout = Duration::from_millis(self.handshake_timeout_ms.load(Ordering::Relaxed));
        let deadline = tokio::time::Instant::now() + timeout;
        let mut first = [0u8; 1];
        // `Err(None)`: already counted (an unknown SNI, by the certificate resolver).
        let outcome = match tokio::time::timeout_at(deadline, stream.peek(&mut first)).await {
            Err(_) => Err(Some(HandshakeResult::Timeout)),
            Ok(Ok(0) | Err(_)) => Err(Some(HandshakeResult::Error)),
            Ok(Ok(_)) if first[0] != HANDSHAKE_RECORD => {
                answer_plaintext(stream).await;
                Err(Some(HandshakeResult::Plaintext))
            }
            Ok(Ok(_)) => {
                let acceptor = TlsAcceptor::from(self.config.load_full());
                match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
                    Err(_) => Err(Some(HandshakeResult::Timeout)),
                    Ok(Err(error)) if is_unknown_sni_refusal(&error) => {
                        tracing::debug!(%client, "TLS handshake refused: unknown server name");
                        Err(None)
                    }
                    Ok(Err(error)) => {
                        tracing::debug!(%client, %error, "TLS handshake failed");
                        Err(Some(HandshakeResult::Error))
                    }
                    Ok(Ok(tls)) => Ok(tls),
                }
            }
        };
        let elapsed = started.elapsed();
        match outcome {
            Ok(tls) => {
                let version = tls.get_ref().1.protocol_version();
                self.metrics
                    .record_handshake(HandshakeResult::Ok, version, elapsed);
                Some(tls)
            }
            Err(None) => None,
            Err(Some(result)) => {
                self.metrics.record_handshake(result, None, elapsed);
                None
            }
        }
    }
}

/// Tells a plain-HTTP client what it did, then closes; bounded so a client that does not read
/// cannot hold the task.
async fn answer_plaintext(mut stream: TcpStream) {
    let write = async {
        stream.write_all(PLAINTEXT_ANSWER).await?;
        stream.shutdown().await
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plaintext_answer_declares_its_length() {
        let text = std::str::from_utf8(PLAINTEXT_ANSWER).expect("ascii");
        let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
        let declared: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .and_then(|n| n.parse().ok())
            .expect("content-length");
        assert_eq!(declared, body.len());
    }
}
