//! Zero-downtime upgrade: an old `verge` process hands its listening sockets to a new one.
//!
//! The listening sockets themselves move to the new process (as descriptors passed with
//! `SCM_RIGHTS` over a Unix socket), the way nginx, HAProxy and Envoy upgrade, rather than the
//! new process binding a second socket with `SO_REUSEPORT`: a connection waiting in the kernel's
//! accept queue belongs to the socket, not to a process, so none is lost or refused.
//!
//! The sequence, with `server.upgrade_socket = PATH` in both configurations:
//!
//! 1. The old process serves, and a [`HandoffServer`] bound on PATH holds duplicates of its
//!    listening sockets, each known by a name (`"data"`, `"admin"`, `"tls"`) and its address.
//! 2. The new process calls [`take_over`]`(PATH)`. If nothing listens there (no file, or a stale
//!    file left by a process that is gone) it gets `Ok(None)` and binds normally.
//! 3. Otherwise it greets with `VERGE-HANDOFF 1\n`; the old process answers with one frame (a
//!    big-endian `u32` length, then JSON `{"version":1,"listeners":[{"name":..,"addr":..}]}`)
//!    carrying the descriptors, at most [`MAX_LISTENERS`].
//! 4. The new process takes the listeners its configuration still names ([`Inherited::take`],
//!    [`bind_or_inherit`]), binds any others fresh, starts serving on them all, then calls
//!    [`Inherited::ready`], which sends `READY\n` and waits for `ACK\n`. Listeners it did not take
//!    are closed in the new process (the old one closes its own when it stops).
//! 5. The old process's [`HandoffServer::run`] completes with [`HandoffEvent::SuccessorReady`]:
//!    its caller stops accepting and drains. Until then both processes accept from the same
//!    queue, and afterwards the socket stays open in the new one, so no connection is refused in
//!    between. The old process leaves the file at PATH alone from then on.
//! 6. The new process binds its own [`HandoffServer`] for the next upgrade with
//!    [`HandoffServer::bind`], which binds a temporary name in PATH's directory and renames it
//!    over PATH (atomic): PATH never goes missing, and a stale file is simply replaced. Doing this
//!    only after step 4 means a successor that fails before it is ready leaves PATH pointing at
//!    the old process, which keeps serving and waits for the next successor.
//!
//! If a successor disconnects, misbehaves or stays silent for longer than the timeout (10 s by
//! default) before it is ready, the old process logs it and goes on waiting; one hand-off runs
//! at a time. Both processes must run as the same user: the socket file is created with mode
//! 0600 and the old process also checks its peer's uid (root is let in too).
//!
//! Descriptors passed this way share their open file description: `O_NONBLOCK`, which
//! [`bind_or_inherit`] sets, applies to the old process's listener as well (it is a tokio
//! listener, already non-blocking).
#![cfg(unix)]

use std::future::Future;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{UnixListener, UnixStream};

mod wire;

use wire::{
    encode_offer, expect_line, read_line, recv_frame, send_frame, Offer, OfferedListener, ACK,
    HELLO, READY, VERSION,
};

/// Most listeners one hand-off carries; more are refused on both sides.
pub const MAX_LISTENERS: usize = 64;
/// Default bound on every wait of a hand-off (each read, write, and the wait for `READY`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest listener name; with [`MAX_LISTENERS`] this keeps the frame small.
const MAX_NAME: usize = 64;
/// Same backlog as `tokio::net::TcpListener::bind`.
const LISTEN_BACKLOG: i32 = 1024;
/// Pause after a failed `accept` on the upgrade socket (e.g. out of descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Why a hand-off, or setting one up, failed.
#[derive(Debug, thiserror::Error)]
pub enum HandoffError {
    #[error("{step}: {source}")]
    Io {
        step: &'static str,
        source: io::Error,
    },
    #[error("timed out after {after:?} while {step}")]
    Timeout { step: &'static str, after: Duration },
    #[error("at most {MAX_LISTENERS} listeners can be handed over, {count} offered")]
    TooManyListeners { count: usize },
    /// A listener registered with [`HandoffServer::add_listener`] cannot be handed over.
    #[error("listener {name:?} cannot be handed over: {reason}")]
    InvalidListener { name: String, reason: String },
    /// The other process sent something this protocol does not allow.
    #[error("hand-off protocol violation: {0}")]
    Protocol(String),
}

fn io_error(step: &'static str) -> impl FnOnce(io::Error) -> HandoffError {
    move |source| HandoffError::Io { step, source }
}

/// Runs `fut`, bounded by `after`.
async fn bounded<T>(
    step: &'static str,
    after: Duration,
    fut: impl Future<Output = Result<T, HandoffError>>,
) -> Result<T, HandoffError> {
    tokio::time::timeout(after, fut)
        .await
        .map_err(|_| HandoffError::Timeout { step, after })?
}

/// What ended [`HandoffServer::run`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandoffEvent {
    /// A successor holds the listeners and serves on them: stop accepting and drain.
    SuccessorReady,
    /// The shutdown future completed first; the socket file was removed if it was still ours.
    Shutdown,
}

/// A listening socket held for a successor.
#[derive(Debug)]
struct HeldListener {
    name: String,
    addr: SocketAddr,
    socket: TcpListener,
}

/// The old process's side: listens on the upgrade socket and hands its listeners to the first
/// successor that takes them and says it is ready.
#[derive(Debug)]
pub struct HandoffServer {
    path: PathBuf,
    listener: UnixListener,
    /// Owner of the socket file, i.e. this process's user; peers must be the same user.
    owner_uid: u32,
    /// Device and inode of the socket file, to remove it on shutdown only if it is still ours.
    file_id: (u64, u64),
    listeners: Vec<HeldListener>,
    timeout: Duration,
}

impl HandoffServer {
    /// Binds the upgrade socket at `path` (mode 0600), atomically replacing any file there: a
    /// stale socket, or the one of the process this one took over from.
    ///
    /// Must be called within a tokio runtime, which the socket is registered with.
    pub fn bind(path: impl AsRef<Path>) -> Result<HandoffServer, HandoffError> {
        let path = path.as_ref().to_path_buf();
        let temp = temp_path(&path).map_err(io_error("naming the temporary upgrade socket"))?;
        match std::fs::remove_file(&temp) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error("removing a leftover temporary upgrade socket")(e)),
        }
        let listener = std::os::unix::net::UnixListener::bind(&temp)
            .map_err(io_error("binding the upgrade socket"))?;
        let placed = std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o600))
            .map_err(io_error("restricting the upgrade socket to its owner"))
            .and_then(|()| {
                std::fs::metadata(&temp).map_err(io_error("reading the upgrade socket's owner"))
            })
            .and_then(|meta| {
                std::fs::rename(&temp, &path)
                    .map(|()| meta)
                    .map_err(io_error("moving the upgrade socket into place"))
            });
        let meta = match placed {
            Ok(meta) => meta,
            Err(e) => {
                // Best effort: the error above is the one worth reporting.
                let _ = std::fs::remove_file(&temp);
                return Err(e);
            }
        };
        listener
            .set_nonblocking(true)
            .map_err(io_error("making the upgrade socket non-blocking"))?;
        let listener =
            UnixListener::from_std(listener).map_err(io_error("registering the upgrade socket"))?;
        Ok(HandoffServer {
            path,
            listener,
            owner_uid: meta.uid(),
            file_id: (meta.dev(), meta.ino()),
            listeners: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// Bounds every wait of a hand-off, the successor's `READY` included.
    pub fn with_timeout(mut self, timeout: Duration) -> HandoffServer {
        self.timeout = timeout;
        self
    }

    /// Where the upgrade socket is bound.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Holds a duplicate of `listener` (a std or tokio TCP listener) for a successor, under
    /// `name`; returns its local address, the one a successor matches its configuration on.
    pub fn add_listener(
        &mut self,
        name: &str,
        listener: impl AsFd,
    ) -> Result<SocketAddr, HandoffError> {
        let invalid = |reason: String| HandoffError::InvalidListener {
            name: name.to_string(),
            reason,
        };
        if self.listeners.len() >= MAX_LISTENERS {
            return Err(HandoffError::TooManyListeners {
                count: self.listeners.len() + 1,
            });
        }
        if name.is_empty() || name.len() > MAX_NAME {
            return Err(invalid(format!("names are 1 to {MAX_NAME} bytes")));
        }
        let socket = rustix::io::fcntl_dupfd_cloexec(listener, 0)
            .map(TcpListener::from)
            .map_err(|e| invalid(format!("cannot duplicate it: {e}")))?;
        let addr = checked_listener(&socket).map_err(invalid)?;
        if self.listeners.iter().any(|held| held.addr == addr) {
            return Err(invalid(format!("{addr} is already held")));
        }
        self.listeners.push(HeldListener {
            name: name.to_string(),
            addr,
            socket,
        });
        Ok(addr)
    }

    /// Waits for successors, one at a time, until one has taken the listeners and said it is
    /// ready ([`HandoffEvent::SuccessorReady`]) or `shutdown` completes
    /// ([`HandoffEvent::Shutdown`]). A successor that fails is logged and the wait goes on.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> HandoffEvent {
        tokio::select! {
            biased;
            () = shutdown => {
                self.remove_socket_file();
                HandoffEvent::Shutdown
            }
            () = self.serve_successors() => HandoffEvent::SuccessorReady,
        }
    }

    async fn serve_successors(&self) {
        let path = self.path.display();
        loop {
            let stream = match self.listener.accept().await {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%path, %error, "upgrade socket: accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            match self.hand_over(stream).await {
                Ok(()) => {
                    tracing::info!(%path, "upgrade: the successor is serving on our listeners");
                    return;
                }
                Err(error) => tracing::warn!(
                    %path, %error,
                    "upgrade hand-off failed; still serving, waiting for the next successor"
                ),
            }
        }
    }

    /// One successor: greeting, listeners out, `READY` in, `ACK` out.
    async fn hand_over(&self, mut stream: UnixStream) -> Result<(), HandoffError> {
        let peer = stream
            .peer_cred()
            .map_err(io_error("reading the successor's credentials"))?;
        if peer.uid() != self.owner_uid && peer.uid() != 0 {
            return Err(HandoffError::Protocol(format!(
                "peer runs as uid {}, not {}",
                peer.uid(),
                self.owner_uid
            )));
        }
        let hello = bounded("reading the greeting", self.timeout, read_line(&mut stream)).await?;
        expect_line(&hello, HELLO)?;
        let offer = Offer {
            version: VERSION,
            listeners: self
                .listeners
                .iter()
                .map(|held| OfferedListener {
                    name: held.name.clone(),
                    addr: held.addr,
                })
                .collect(),
        };
        let fds: Vec<BorrowedFd<'_>> = self.listeners.iter().map(|h| h.socket.as_fd()).collect();
        let frame = encode_offer(&offer)?;
        bounded(
            "sending the listeners",
            self.timeout,
            send_frame(&mut stream, &frame, &fds),
        )
        .await?;
        tracing::info!(
            path = %self.path.display(),
            listeners = self.listeners.len(),
            "upgrade: listeners sent; waiting for the successor to be ready"
        );
        let ready = bounded(
            "waiting for the successor to be ready",
            self.timeout,
            read_line(&mut stream),
        )
        .await?;
        expect_line(&ready, READY)?;
        // The successor serves already; a lost ACK only costs it a warning.
        if let Err(error) = bounded("acknowledging", self.timeout, async {
            stream
                .write_all(ACK)
                .await
                .map_err(io_error("acknowledging"))
        })
        .await
        {
            tracing::debug!(%error, "upgrade: ACK not delivered");
        }
        Ok(())
    }

    fn remove_socket_file(&self) {
        let ours = std::fs::metadata(&self.path)
            .map(|meta| (meta.dev(), meta.ino()) == self.file_id)
            .unwrap_or(false);
        if ours {
            if let Err(error) = std::fs::remove_file(&self.path) {
                let path = self.path.display();
                tracing::warn!(%path, %error, "cannot remove the upgrade socket");
            }
        }
    }
}

/// `PATH`'s directory, `.NAME.PID.tmp`: ours alone, short enough for a socket address when
/// PATH is.
fn temp_path(path: &Path) -> io::Result<PathBuf> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the path has no file name"))?;
    let mut temp = std::ffi::OsString::from(".");
    temp.push(name);
    temp.push(format!(".{}.tmp", std::process::id()));
    Ok(path.with_file_name(temp))
}

/// A listening TCP socket's local address, or why it is not one.
fn checked_listener(socket: &TcpListener) -> Result<SocketAddr, String> {
    match rustix::net::sockopt::socket_type(socket) {
        Ok(rustix::net::SocketType::STREAM) => {}
        Ok(other) => return Err(format!("not a stream socket ({other:?})")),
        Err(e) => return Err(format!("not a socket: {e}")),
    }
    socket
        .local_addr()
        .map_err(|e| format!("not a bound TCP socket: {e}"))
}

/// A listener received from the old process.
#[derive(Debug)]
struct InheritedListener {
    name: String,
    addr: SocketAddr,
    /// `None` once taken.
    socket: Option<TcpListener>,
}

/// The new process's side: the listeners received from the old process, until it is
/// [`ready`](Inherited::ready).
#[derive(Debug)]
pub struct Inherited {
    stream: UnixStream,
    listeners: Vec<InheritedListener>,
    timeout: Duration,
}

/// Asks the process serving the upgrade socket at `path` for its listeners. `Ok(None)`:
/// nobody listens there (no file, or a stale one), so bind normally.
///
/// An error means a process is there but the hand-off failed; binding its addresses would fail
/// too while it holds them.
pub async fn take_over(path: impl AsRef<Path>) -> Result<Option<Inherited>, HandoffError> {
    take_over_with_timeout(path, DEFAULT_TIMEOUT).await
}

/// [`take_over`], with every wait (connecting, receiving, the old process's `ACK`) bounded by
/// `timeout`.
pub async fn take_over_with_timeout(
    path: impl AsRef<Path>,
    timeout: Duration,
) -> Result<Option<Inherited>, HandoffError> {
    let connect = async {
        match UnixStream::connect(path.as_ref()).await {
            Ok(stream) => Ok(Some(stream)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Ok(None),
            Err(e) => Err(io_error("connecting to the upgrade socket")(e)),
        }
    };
    let Some(mut stream) = bounded("connecting to the upgrade socket", timeout, connect).await?
    else {
        return Ok(None);
    };
    bounded("greeting the old process", timeout, async {
        stream
            .write_all(HELLO)
            .await
            .map_err(io_error("greeting the old process"))
    })
    .await?;
    let (json, fds) = bounded("receiving the listeners", timeout, recv_frame(&stream)).await?;
    let offer: Offer = serde_json::from_slice(&json)
        .map_err(|e| HandoffError::Protocol(format!("unreadable offer: {e}")))?;
    let listeners = inherit(offer, fds)?;
    Ok(Some(Inherited {
        stream,
        listeners,
        timeout,
    }))
}

/// Pairs the offer's entries with the descriptors, checking each is the listener announced.
fn inherit(offer: Offer, fds: Vec<OwnedFd>) -> Result<Vec<InheritedListener>, HandoffError> {
    if offer.version != VERSION {
        return Err(HandoffError::Protocol(format!(
            "offer version {}, expected {VERSION}",
            offer.version
        )));
    }
    if offer.listeners.len() > MAX_LISTENERS {
        return Err(HandoffError::TooManyListeners {
            count: offer.listeners.len(),
        });
    }
    if offer.listeners.len() != fds.len() {
        return Err(HandoffError::Protocol(format!(
            "{} listeners announced, {} descriptors received",
            offer.listeners.len(),
            fds.len()
        )));
    }
    offer
        .listeners
        .into_iter()
        .zip(fds)
        .map(|(offered, fd)| {
            let socket = TcpListener::from(fd);
            let reason = match checked_listener(&socket) {
                Ok(addr) if addr == offered.addr => {
                    return Ok(InheritedListener {
                        name: offered.name,
                        addr,
                        socket: Some(socket),
                    })
                }
                Ok(addr) => format!("bound to {addr}, announced as {}", offered.addr),
                Err(reason) => reason,
            };
            Err(HandoffError::Protocol(format!(
                "listener {:?}: {reason}",
                offered.name
            )))
        })
        .collect()
}

impl Inherited {
    /// The inherited listener bound to exactly `addr`, once. A port-0 address never matches:
    /// it asks for a fresh port.
    pub fn take(&mut self, addr: SocketAddr) -> Option<TcpListener> {
        if addr.port() == 0 {
            return None;
        }
        self.listeners
            .iter_mut()
            .find(|inherited| inherited.addr == addr)
            .and_then(|inherited| inherited.socket.take())
    }

    /// The listeners not taken yet, by name and address.
    pub fn offered(&self) -> impl Iterator<Item = (&str, SocketAddr)> + '_ {
        self.listeners
            .iter()
            .filter(|inherited| inherited.socket.is_some())
            .map(|inherited| (inherited.name.as_str(), inherited.addr))
    }

    /// Tells the old process this one serves on the listeners it took, so it can stop accepting
    /// and drain; closes the listeners not taken. An error (the old process did not
    /// acknowledge) leaves this process serving: worth a warning, not a stop.
    pub async fn ready(mut self) -> Result<(), HandoffError> {
        for (name, addr) in self.offered() {
            tracing::info!(name, %addr, "upgrade: inherited listener not configured; closing it");
        }
        self.listeners.clear();
        bounded(
            "telling the old process we are ready",
            self.timeout,
            async {
                self.stream
                    .write_all(READY)
                    .await
                    .map_err(io_error("telling the old process we are ready"))
            },
        )
        .await?;
        let ack = bounded(
            "waiting for the old process's acknowledgement",
            self.timeout,
            read_line(&mut self.stream),
        )
        .await?;
        expect_line(&ack, ACK)
    }
}

/// The listener for `addr`: the inherited one bound there if any, else a fresh one (with
/// `SO_REUSEADDR` and a backlog of 1024, as tokio binds). Non-blocking either way, ready for
/// `tokio::net::TcpListener::from_std`.
pub fn bind_or_inherit(
    addr: SocketAddr,
    inherited: Option<&mut Inherited>,
) -> io::Result<TcpListener> {
    let listener = match inherited.and_then(|inherited| inherited.take(addr)) {
        Some(listener) => listener,
        None => {
            let listener = TcpListener::bind(addr)?;
            // Listening again only changes the backlog.
            rustix::net::listen(&listener, LISTEN_BACKLOG)?;
            listener
        }
    };
    listener.set_nonblocking(true)?;
    Ok(listener)
}

#[cfg(test)]
mod tests;
