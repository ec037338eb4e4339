//! What does HTTPS cost an edge compared with clear HTTP?
//!
//! - On the hit path, per request: `hit/http` and `hit/https` each send 64 GETs of a cached
//!   1 KiB object over 8 concurrent keep-alive HTTP/1.1 connections opened beforehand (the TLS
//!   handshakes are outside the timed loop). Their ratio is the cost of TLS record processing.
//! - Per new connection: `handshake/tcp` opens a clear connection and sends one GET (the
//!   baseline), `handshake/tls_full` does the same over TLS with a full handshake (no
//!   resumption), `handshake/tls_resumed` over TLS resuming the previous session (a TLS 1.3
//!   ticket). Handshakes per second = 1 / time.
//!
//! One edge node (clear and TLS listeners, an rcgen certificate) runs in this process in front
//! of an in-process origin, all on loopback; the edge and origin on one runtime thread, the
//! clients on another. Every benchmark runs in the same process, so compare ratios.
//!
//! Run with `cargo bench --bench tls -- --warm-up-time 1 --measurement-time 3`.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::client::Resumption;
use rustls::crypto::ring;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, HandshakeKind, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

#[path = "support/hits.rs"]
mod hits;

use hits::{connect, get, handshake, round, time_rounds, Edges, Sender, CONNECTIONS, REQUESTS};

/// The name the edge's certificate is for, and the site the GETs ask for.
const HOST: &str = "localhost";

/// The edge and its origin, running on their own runtime until dropped.
struct Edge {
    http: SocketAddr,
    https: SocketAddr,
    /// The CA certificate the edge's certificate is signed by (PEM).
    ca_file: std::path::PathBuf,
    _edges: Edges,
    _dir: tempfile::TempDir,
}

impl Edge {
    fn start() -> Edge {
        let dir = tempfile::tempdir().expect("temporary directory");
        let (ca_file, cert_file, key_file) = write_certificates(dir.path());
        let edges = Edges::start(|origin| {
            vec![format!(
                "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\
                 [upstream]\norigin = \"http://{origin}\"\n\
                 [tls]\nlisten = [\"127.0.0.1:0\"]\n\
                 [[tls.certificates]]\ncert = {:?}\nkey = {:?}\n",
                cert_file.display().to_string(),
                key_file.display().to_string(),
            )]
        });
        let node = &edges.nodes[0];
        Edge {
            http: node.data_addr,
            https: *node.tls_addrs.first().expect("a TLS listener"),
            ca_file,
            _edges: edges,
            _dir: dir,
        }
    }
}

/// A CA and a certificate it signs for `localhost`, as PEM files: (CA, certificate, key).
fn write_certificates(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let mut ca_params = CertificateParams::new(Vec::new()).expect("CA parameters");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().expect("CA key");
    let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");
    let issuer = Issuer::new(ca_params, ca_key);
    let params =
        CertificateParams::new(vec!["localhost".to_string()]).expect("certificate parameters");
    let key = KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, &issuer).expect("certificate");
    let files = (
        dir.join("ca.pem"),
        dir.join("edge.pem"),
        dir.join("edge.key"),
    );
    std::fs::write(&files.0, ca_cert.pem()).expect("write the CA");
    std::fs::write(&files.1, cert.pem()).expect("write the certificate");
    std::fs::write(&files.2, key.serialize_pem()).expect("write the key");
    files
}

/// A TLS client trusting the bench CA, offering HTTP/1.1; resuming sessions or not.
fn tls_connector(ca_file: &Path, resume: bool) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file).expect("read the CA") {
        roots
            .add(cert.expect("a CA certificate"))
            .expect("trust the CA");
    }
    let mut config = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_protocol_versions(rustls::DEFAULT_VERSIONS)
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    if !resume {
        config.resumption = Resumption::disabled();
    }
    TlsConnector::from(Arc::new(config))
}

/// A TCP connection to `addr`. Closed with a reset rather than a FIN, so that the tens of
/// thousands of connections the handshake benchmarks open leave no `TIME_WAIT` behind to slow
/// down the next `connect` (its search for a free port).
async fn open(addr: SocketAddr) -> TcpStream {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    tcp.set_zero_linger().expect("zero linger");
    tcp
}

/// A keep-alive HTTP/1.1 connection over TLS, and how its handshake went.
async fn connect_tls(addr: SocketAddr, connector: &TlsConnector) -> (Sender, HandshakeKind) {
    let tcp = open(addr).await;
    let name = ServerName::try_from("localhost").expect("server name");
    let tls = connector.connect(name, tcp).await.expect("TLS handshake");
    let kind = tls
        .get_ref()
        .1
        .handshake_kind()
        .expect("the handshake is complete");
    (handshake(tls).await, kind)
}

fn benches(c: &mut Criterion) {
    let edge = Edge::start();
    let client = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("client runtime");
    let full = tls_connector(&edge.ca_file, false);
    let resumed = tls_connector(&edge.ca_file, true);

    // Open the keep-alive connections and fill the cache: every GET below is a hit.
    let (mut clear, mut secure) = client.block_on(async {
        let mut clear = Vec::new();
        let mut secure = Vec::new();
        for _ in 0..CONNECTIONS {
            clear.push(connect(edge.http).await);
            secure.push(connect_tls(edge.https, &full).await.0);
        }
        get(&mut clear[0], HOST).await;
        (round(clear, HOST).await, round(secure, HOST).await)
    });
    // Resumption must be what `tls_resumed` measures: the second connection resumes.
    client.block_on(async {
        for expected in [HandshakeKind::Full, HandshakeKind::Resumed] {
            let (mut sender, kind) = connect_tls(edge.https, &resumed).await;
            get(&mut sender, HOST).await;
            assert_eq!(kind, expected, "session resumption");
        }
    });

    let mut hit = c.benchmark_group("hit");
    hit.throughput(Throughput::Elements(REQUESTS as u64));
    hit.bench_function("http", |b| {
        b.iter_custom(|iters| time_rounds(&client, &mut clear, HOST, iters))
    });
    hit.bench_function("https", |b| {
        b.iter_custom(|iters| time_rounds(&client, &mut secure, HOST, iters))
    });
    hit.finish();

    let mut handshake = c.benchmark_group("handshake");
    // A full TLS handshake takes about a millisecond: 50 samples fit in a short run.
    handshake.sample_size(50);
    handshake.bench_function("tcp", |b| {
        b.iter(|| {
            client.block_on(async {
                let mut sender = connect(edge.http).await;
                get(&mut sender, HOST).await;
            })
        })
    });
    handshake.bench_function("tls_full", |b| {
        b.iter(|| {
            client.block_on(async {
                let (mut sender, _) = connect_tls(edge.https, &full).await;
                get(&mut sender, HOST).await;
            })
        })
    });
    let (mut total, mut full_ones) = (0u64, 0u64);
    handshake.bench_function("tls_resumed", |b| {
        b.iter(|| {
            client.block_on(async {
                let (mut sender, kind) = connect_tls(edge.https, &resumed).await;
                get(&mut sender, HOST).await;
                total += 1;
                full_ones += u64::from(kind != HandshakeKind::Resumed);
            })
        })
    });
    handshake.finish();
    assert_eq!(
        full_ones, 0,
        "{full_ones} of the {total} handshakes of tls_resumed were not resumed"
    );
}

criterion_group!(tls, benches);
criterion_main!(tls);
