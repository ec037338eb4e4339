use std::io::Write;
use std::net::TcpStream;

use tokio::io::AsyncReadExt;
use tokio::task::JoinHandle;

use super::*;

const DEADLINE: Duration = Duration::from_secs(10);

async fn within<T>(fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, fut)
        .await
        .expect("deadline passed")
}

fn loopback_listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").unwrap()
}

fn socket_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("upgrade.sock")
}

/// An old process with one data listener on loopback, serving hand-offs at a fresh path: the
/// directory holding the path (kept for the test's life), the listener, the path, the
/// listener's address and the hand-off server's run.
fn old_process() -> (
    tempfile::TempDir,
    TcpListener,
    PathBuf,
    SocketAddr,
    JoinHandle<HandoffEvent>,
) {
    let dir = tempfile::tempdir().unwrap();
    let path = socket_path(&dir);
    let old = loopback_listener();
    let addr = old.local_addr().unwrap();
    let run = serve(&path, &[("data", &old)]);
    (dir, old, path, addr, run)
}

/// Takes over from the server at `path`; panics when none answers.
async fn successor(path: &Path) -> Inherited {
    within(take_over(path))
        .await
        .unwrap()
        .expect("a server answers on the path")
}

/// Ends a hand-off: the successor is ready, and the old side's run ends saying so.
async fn complete(inherited: Inherited, run: JoinHandle<HandoffEvent>) {
    within(inherited.ready()).await.unwrap();
    assert_eq!(within(run).await.unwrap(), HandoffEvent::SuccessorReady);
}

/// A successor takes the listener bound to `addr` and completes the hand-off `run` serves.
async fn hand_off(path: &Path, addr: SocketAddr, run: JoinHandle<HandoffEvent>) -> TcpListener {
    let mut inherited = successor(path).await;
    let listener = inherited.take(addr).expect("the listener bound to addr");
    complete(inherited, run).await;
    listener
}

/// An old process's hand-off server holding `listeners`, running until a successor is ready.
fn serve(path: &Path, listeners: &[(&str, &TcpListener)]) -> JoinHandle<HandoffEvent> {
    let mut server = HandoffServer::bind(path).unwrap();
    for (name, listener) in listeners {
        server.add_listener(name, listener).unwrap();
    }
    tokio::spawn(server.run(std::future::pending()))
}

fn tokio_listener(listener: TcpListener) -> tokio::net::TcpListener {
    listener.set_nonblocking(true).unwrap();
    tokio::net::TcpListener::from_std(listener).unwrap()
}

/// A client that connected to `addr` and sent `byte`.
fn client_sending(addr: SocketAddr, byte: u8) -> TcpStream {
    let mut client = TcpStream::connect(addr).unwrap();
    client.write_all(&[byte]).unwrap();
    client
}

/// Accepts one connection and returns the byte its client sent.
async fn accept_byte(listener: &tokio::net::TcpListener) -> u8 {
    let (mut stream, _) = within(listener.accept()).await.unwrap();
    let mut byte = [0u8];
    within(stream.read_exact(&mut byte)).await.unwrap();
    byte[0]
}

/// A fake old process: answers one greeting with `frame` and `fds`, then waits for the
/// successor to hang up.
async fn fake_old_process(path: &Path, frame: Vec<u8>, fds: Vec<OwnedFd>) -> JoinHandle<()> {
    let listener = UnixListener::bind(path).unwrap();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        expect_line(&read_line(&mut stream).await.unwrap(), HELLO).unwrap();
        let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(|fd| fd.as_fd()).collect();
        send_frame(&mut stream, &frame, &borrowed).await.unwrap();
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest).await;
    })
}

fn offer_frame(listeners: &[(&str, SocketAddr)]) -> Vec<u8> {
    encode_offer(&Offer {
        version: VERSION,
        listeners: listeners
            .iter()
            .map(|&(name, addr)| OfferedListener {
                name: name.to_string(),
                addr,
            })
            .collect(),
    })
    .unwrap()
}

fn dups(listener: &TcpListener, count: usize) -> Vec<OwnedFd> {
    (0..count)
        .map(|_| OwnedFd::from(listener.try_clone().unwrap()))
        .collect()
}

#[tokio::test]
async fn successor_inherits_the_listener_bound_to_the_same_address_and_accepts_on_it() {
    let (_dir, _old, path, addr, run) = old_process();

    let mut inherited = successor(&path).await;
    assert_eq!(
        inherited.offered().collect::<Vec<_>>(),
        vec![("data", addr)]
    );
    let new = inherited.take(addr).expect("the listener bound to addr");
    assert_eq!(new.local_addr().unwrap(), addr);
    assert!(inherited.take(addr).is_none(), "a listener is taken once");
    assert_eq!(inherited.offered().count(), 0);

    let new = tokio_listener(new);
    let _client = client_sending(addr, 7);
    assert_eq!(accept_byte(&new).await, 7);
    run.abort();
}

#[tokio::test]
async fn ready_completes_the_old_side_with_successor_ready() {
    let (_dir, old, path, addr, run) = old_process();

    let new = tokio_listener(hand_off(&path, addr, run).await);

    // The old process stops; the socket lives on in the new one.
    drop(old);
    let _client = client_sending(addr, 1);
    assert_eq!(accept_byte(&new).await, 1);
}

#[tokio::test]
async fn successor_disconnecting_before_ready_leaves_the_server_waiting_for_the_next() {
    let (_dir, old, path, addr, run) = old_process();

    let mut first = successor(&path).await;
    drop(first.take(addr));
    drop(first);

    // The old process still serves on its listener...
    let _client = client_sending(addr, 3);
    let (mut accepted, _) = old.accept().unwrap();
    let mut byte = [0u8];
    std::io::Read::read_exact(&mut accepted, &mut byte).unwrap();
    assert_eq!(byte, [3]);

    // ...and a second successor gets the listeners.
    hand_off(&path, addr, run).await;
}

#[tokio::test]
async fn take_over_without_a_server_returns_none() {
    let dir = tempfile::tempdir().unwrap();
    assert!(within(take_over(socket_path(&dir)))
        .await
        .unwrap()
        .is_none());
    let missing_dir = dir.path().join("missing").join("upgrade.sock");
    assert!(within(take_over(missing_dir)).await.unwrap().is_none());
}

#[tokio::test]
async fn stale_socket_file_returns_none_and_a_new_server_replaces_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = socket_path(&dir);
    drop(HandoffServer::bind(&path).unwrap());
    assert!(path.exists(), "a dropped server leaves its file");
    assert!(within(take_over(&path)).await.unwrap().is_none());

    let old = loopback_listener();
    let run = serve(&path, &[("data", &old)]);
    let inherited = within(take_over(&path)).await.unwrap();
    assert!(inherited.is_some(), "the new server answers on the path");
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert_eq!(names, vec!["upgrade.sock"], "no temporary file is left");
    run.abort();
}

#[tokio::test]
async fn garbage_from_a_client_is_logged_and_the_server_keeps_working() {
    let dir = tempfile::tempdir().unwrap();
    let path = socket_path(&dir);
    let old = loopback_listener();
    let addr = old.local_addr().unwrap();
    let mut server = HandoffServer::bind(&path)
        .unwrap()
        .with_timeout(Duration::from_millis(500));
    server.add_listener("data", &old).unwrap();
    let run = tokio::spawn(server.run(std::future::pending()));

    let garbage: [&[u8]; 6] = [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\n",
        b"VERGE-HANDOFF 2\n",
        &[0xff; 4096],
        b"VERGE", // then silence: the server times out
        b"",      // connect and hang up
    ];
    for bytes in garbage {
        let mut client = UnixStream::connect(&path).await.unwrap();
        let _ = client.write_all(bytes).await;
        if bytes.is_empty() {
            client.shutdown().await.unwrap();
        }
        let mut rest = Vec::new();
        // The server hangs up (a reset is fine too).
        let _ = within(client.read_to_end(&mut rest)).await;
        assert!(rest.is_empty(), "nothing is handed to {bytes:?}");
    }

    // A successor that answers its listeners with garbage instead of READY.
    let mut client = UnixStream::connect(&path).await.unwrap();
    client.write_all(HELLO).await.unwrap();
    let (_, fds) = within(recv_frame(&client)).await.unwrap();
    assert_eq!(fds.len(), 1);
    client.write_all(b"NOPE\n").await.unwrap();
    let mut rest = Vec::new();
    let _ = within(client.read_to_end(&mut rest)).await;
    assert!(rest.is_empty(), "no ACK for garbage");

    hand_off(&path, addr, run).await;
}

#[tokio::test]
async fn more_than_64_listeners_are_refused_by_the_old_side() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = HandoffServer::bind(socket_path(&dir)).unwrap();
    let listeners: Vec<TcpListener> = (0..=MAX_LISTENERS).map(|_| loopback_listener()).collect();
    for listener in &listeners[..MAX_LISTENERS] {
        server.add_listener("data", listener).unwrap();
    }
    let refused = server.add_listener("data", &listeners[MAX_LISTENERS]);
    assert!(
        matches!(refused, Err(HandoffError::TooManyListeners { count: 65 })),
        "{refused:?}"
    );
}

#[tokio::test]
async fn invalid_listeners_are_refused_by_the_old_side() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = HandoffServer::bind(socket_path(&dir)).unwrap();
    let listener = loopback_listener();
    server.add_listener("data", &listener).unwrap();
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let long_name = "n".repeat(MAX_NAME + 1);
    for refused in [
        server.add_listener("again", &listener),
        server.add_listener("", loopback_listener()),
        server.add_listener(&long_name, loopback_listener()),
        server.add_listener("udp", &udp),
    ] {
        assert!(
            matches!(refused, Err(HandoffError::InvalidListener { .. })),
            "{refused:?}"
        );
    }
}

#[tokio::test]
async fn more_than_64_descriptors_are_refused_by_the_successor() {
    let dir = tempfile::tempdir().unwrap();
    let listener = loopback_listener();
    let addr = listener.local_addr().unwrap();
    let many = vec![("data", addr); MAX_LISTENERS + 1];
    // 65 descriptors, or 65 announced with one descriptor.
    for fds in [dups(&listener, MAX_LISTENERS + 1), dups(&listener, 1)] {
        let path = dir.path().join(format!("{}.sock", fds.len()));
        let old = fake_old_process(&path, offer_frame(&many), fds).await;
        let refused = within(take_over(&path)).await;
        assert!(
            matches!(refused, Err(HandoffError::TooManyListeners { .. })),
            "{refused:?}"
        );
        within(old).await.unwrap();
    }
}

#[tokio::test]
async fn successor_refuses_an_offer_that_does_not_describe_its_descriptors() {
    let dir = tempfile::tempdir().unwrap();
    let listener = loopback_listener();
    let addr = listener.local_addr().unwrap();
    let other = loopback_listener().local_addr().unwrap();
    let mut wrong_version = b"{\"version\":2,\"listeners\":[]}".to_vec();
    wrong_version.splice(0..0, (wrong_version.len() as u32).to_be_bytes());
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let udp_addr = udp.local_addr().unwrap();
    let cases: Vec<(&str, Vec<u8>, Vec<OwnedFd>)> = vec![
        (
            "wrong address",
            offer_frame(&[("data", other)]),
            dups(&listener, 1),
        ),
        ("missing descriptor", offer_frame(&[("data", addr)]), vec![]),
        ("extra descriptor", offer_frame(&[]), dups(&listener, 1)),
        ("not json", b"\0\0\0\x05hello".to_vec(), vec![]),
        ("empty frame", vec![0; 4], vec![]),
        ("huge frame", u32::MAX.to_be_bytes().to_vec(), vec![]),
        ("wrong version", wrong_version, vec![]),
        (
            "udp socket",
            offer_frame(&[("udp", udp_addr)]),
            vec![udp.into()],
        ),
    ];
    for (i, (case, frame, fds)) in cases.into_iter().enumerate() {
        let path = dir.path().join(format!("{i}.sock"));
        let old = fake_old_process(&path, frame, fds).await;
        let refused = within(take_over(&path)).await;
        assert!(
            matches!(refused, Err(HandoffError::Protocol(_))),
            "{case}: {refused:?}"
        );
        within(old).await.unwrap();
    }
}

#[tokio::test]
async fn connections_queued_before_the_hand_off_are_accepted_by_the_successor() {
    let (_dir, old, path, addr, run) = old_process();

    // Nobody accepts: these wait in the kernel's accept queue.
    let clients: Vec<TcpStream> = (0..8).map(|i| client_sending(addr, i)).collect();

    let new = tokio_listener(hand_off(&path, addr, run).await);
    drop(old);

    let mut received = Vec::new();
    for _ in &clients {
        received.push(accept_byte(&new).await);
    }
    received.sort_unstable();
    assert_eq!(received, (0..8).collect::<Vec<u8>>());
}

#[tokio::test]
async fn successor_serves_the_next_upgrade_on_the_same_path() {
    let (_dir, old, path, addr, first_run) = old_process();

    let mut inherited = successor(&path).await;
    let new = bind_or_inherit(addr, Some(&mut inherited)).unwrap();
    complete(inherited, first_run).await;
    drop(old);

    // The new process replaces the old one's socket file and hands over in turn.
    let second_run = serve(&path, &[("data", &new)]);
    let third = hand_off(&path, addr, second_run).await;
    assert_eq!(third.local_addr().unwrap(), addr);
}

#[tokio::test]
async fn socket_file_is_private_to_its_owner() {
    let dir = tempfile::tempdir().unwrap();
    let path = socket_path(&dir);
    let _server = HandoffServer::bind(&path).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[tokio::test]
async fn shutdown_removes_the_socket_file_only_while_it_is_ours() {
    let dir = tempfile::tempdir().unwrap();
    let path = socket_path(&dir);
    let server = HandoffServer::bind(&path).unwrap();
    assert_eq!(
        within(server.run(std::future::ready(()))).await,
        HandoffEvent::Shutdown
    );
    assert!(!path.exists());

    // A successor's socket file replaced ours: shutting down leaves it alone.
    let old = HandoffServer::bind(&path).unwrap();
    let old_listener = loopback_listener();
    let successor_run = serve(&path, &[("data", &old_listener)]);
    assert_eq!(
        within(old.run(std::future::ready(()))).await,
        HandoffEvent::Shutdown
    );
    assert!(within(take_over(&path)).await.unwrap().is_some());
    successor_run.abort();
}

#[tokio::test]
async fn bind_or_inherit_takes_the_inherited_listener_else_binds_fresh() {
    let fresh = bind_or_inherit("127.0.0.1:0".parse().unwrap(), None).unwrap();
    assert_ne!(fresh.local_addr().unwrap().port(), 0);
    let would_block = fresh.accept().map(|_| ()).unwrap_err();
    assert_eq!(
        would_block.kind(),
        io::ErrorKind::WouldBlock,
        "non-blocking"
    );

    let (_dir, _old, path, addr, run) = old_process();
    let mut inherited = successor(&path).await;

    let port_zero = bind_or_inherit("127.0.0.1:0".parse().unwrap(), Some(&mut inherited)).unwrap();
    assert_ne!(
        port_zero.local_addr().unwrap(),
        addr,
        "port 0 never matches"
    );
    let taken = bind_or_inherit(addr, Some(&mut inherited)).unwrap();
    assert_eq!(taken.local_addr().unwrap(), addr);
    assert_eq!(inherited.offered().count(), 0);
    let would_block = taken.accept().map(|_| ()).unwrap_err();
    assert_eq!(
        would_block.kind(),
        io::ErrorKind::WouldBlock,
        "non-blocking"
    );
    run.abort();
}
