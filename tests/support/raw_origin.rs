//! [`RawOrigin`]: an origin that answers each request with the next response from a script,
//! written byte for byte — for responses a well-behaved server library would rewrite (hyper,
//! for one, drops `Content-Length` from a 304).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Answers requests, in arrival order, with scripted responses; stops accepting when dropped.
pub struct RawOrigin {
    addr: SocketAddr,
    state: Arc<RawState>,
    accept: JoinHandle<()>,
}

#[derive(Default)]
struct RawState {
    script: Mutex<VecDeque<Vec<u8>>>,
    /// Request heads received, as text.
    heads: Mutex<Vec<String>>,
}

/// Sent when the script has run out, so a test that asks too often fails visibly.
const SCRIPT_EXHAUSTED: &[u8] =
    b"HTTP/1.1 599 Script Exhausted\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

impl RawOrigin {
    pub async fn start() -> RawOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(RawState::default());
        let accept = tokio::spawn(accept_loop(listener, Arc::clone(&state)));
        RawOrigin {
            addr,
            state,
            accept,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Queues `response` (a whole HTTP/1.1 response: head, blank line, body) as the answer to
    /// the next request not yet answered.
    pub fn push(&self, response: impl Into<Vec<u8>>) {
        self.state.script.lock().unwrap().push_back(response.into());
    }

    /// The request heads received so far, in arrival order.
    pub fn requests(&self) -> Vec<String> {
        self.state.heads.lock().unwrap().clone()
    }
}

impl Drop for RawOrigin {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<RawState>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(serve(stream, Arc::clone(&state)));
    }
}

/// Reads request heads (bodiless requests only) and writes one scripted response for each,
/// keeping the connection open between them.
async fn serve(mut stream: TcpStream, state: Arc<RawState>) {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        while let Some(end) = find_head_end(&buffer) {
            let head = String::from_utf8_lossy(&buffer[..end]).into_owned();
            buffer.drain(..end + 4);
            state.heads.lock().unwrap().push(head);
            let response = state.script.lock().unwrap().pop_front();
            let response = response.unwrap_or_else(|| SCRIPT_EXHAUSTED.to_vec());
            if stream.write_all(&response).await.is_err() {
                return;
            }
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    }
}

fn find_head_end(buffer: &[u8]) -> Option<usize> {
    buffer.windows(4).position(|w| w == b"\r\n\r\n")
}
