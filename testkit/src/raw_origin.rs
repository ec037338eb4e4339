//! [`RawOrigin`]: an origin that answers each request with the next response from a script,
//! written byte for byte — for responses a well-behaved server library would rewrite (hyper,
//! for one, drops `Content-Length` from a 304).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// Answers requests, in arrival order, with scripted responses; stops accepting when dropped.
pub struct RawOrigin {
    addr: SocketAddr,
    state: Arc<RawState>,
    accept: JoinHandle<()>,
}

/// What the origin does on a connection once a scripted response is written.
#[derive(Debug, Clone)]
enum After {
    /// Keeps the connection open for the next request.
    KeepOpen,
    /// Closes the connection (FIN), however much of the response was promised.
    Close,
    /// Sends nothing more and answers nothing more (what arrives is read and dropped) until the
    /// peer closes the connection.
    Stall,
    /// Sends these bytes once notified, then keeps the connection open.
    Hold(Arc<Notify>, Vec<u8>),
}

#[derive(Default)]
struct RawState {
    script: Mutex<VecDeque<(Vec<u8>, After)>>,
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
        self.enqueue(response.into(), After::KeepOpen);
    }

    /// Like [`RawOrigin::push`], then closes the connection: an origin that dies part way
    /// through a response, or answers garbage and hangs up.
    pub fn push_then_close(&self, response: impl Into<Vec<u8>>) {
        self.enqueue(response.into(), After::Close);
    }

    /// Like [`RawOrigin::push`], then stalls: the connection stays open and silent until the
    /// peer closes it.
    pub fn push_then_stall(&self, response: impl Into<Vec<u8>>) {
        self.enqueue(response.into(), After::Stall);
    }

    /// Like [`RawOrigin::push`] with `first`, then sends `rest` once the returned `Notify` is
    /// notified: an answer the test holds part way.
    pub fn push_held(&self, first: impl Into<Vec<u8>>, rest: impl Into<Vec<u8>>) -> Arc<Notify> {
        let release = Arc::new(Notify::new());
        self.enqueue(first.into(), After::Hold(Arc::clone(&release), rest.into()));
        release
    }

    fn enqueue(&self, response: Vec<u8>, after: After) {
        self.state
            .script
            .lock()
            .unwrap()
            .push_back((response, after));
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
/// keeping the connection open between them unless the script says to close or stall.
async fn serve(mut stream: TcpStream, state: Arc<RawState>) {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        while let Some(end) = find_head_end(&buffer) {
            let head = String::from_utf8_lossy(&buffer[..end]).into_owned();
            buffer.drain(..end + 4);
            state.heads.lock().unwrap().push(head);
            let response = state.script.lock().unwrap().pop_front();
            let (response, after) =
                response.unwrap_or_else(|| (SCRIPT_EXHAUSTED.to_vec(), After::KeepOpen));
            if stream.write_all(&response).await.is_err() {
                return;
            }
            match after {
                After::KeepOpen => {}
                After::Close => return,
                After::Hold(release, rest) => {
                    release.notified().await;
                    if stream.write_all(&rest).await.is_err() {
                        return;
                    }
                }
                After::Stall => {
                    // Ends when the peer closes (read returns 0) or resets the connection.
                    while let Ok(n) = stream.read(&mut chunk).await {
                        if n == 0 {
                            break;
                        }
                    }
                    return;
                }
            }
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    }
}

/// A cacheable head (`max-age=60`) promising `content_length` bytes, followed by the first
/// `sent` of them (see [`crate::patterned_body`]).
pub fn cacheable_head_with_body(content_length: usize, sent: usize) -> Vec<u8> {
    let mut response = format!(
        "HTTP/1.1 200 OK\r\ncache-control: max-age=60\r\ncontent-length: {content_length}\r\n\r\n"
    )
    .into_bytes();
    response.extend(crate::patterned_body(sent));
    response
}

/// Reads one request head (up to 8 KiB) from `stream`, for servers that answer without parsing:
/// its text, or `None` when the peer closed or failed first.
pub async fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut buffer = vec![0u8; 8192];
    let mut read = 0;
    while find_head_end(&buffer[..read]).is_none() {
        match stream.read(&mut buffer[read..]).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => read += n,
        }
    }
    Some(String::from_utf8_lossy(&buffer[..read]).into_owned())
}

fn find_head_end(buffer: &[u8]) -> Option<usize> {
    buffer.windows(4).position(|w| w == b"\r\n\r\n")
}
