//! [`TlsOrigin`]: an HTTPS fake upstream on `127.0.0.1:0` (tokio-rustls + hyper-util's
//! HTTP/1.1-or-2 server) that answers every request with a cacheable 200 and records what it
//! saw: requests (version, authority), the protocol each connection chose by ALPN, whether the
//! client showed a certificate, and failed handshakes. Its certificates come from
//! [`crate::pki::TestPki`].

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rustls::crypto::ring;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::pki::CertFiles;

/// The body every [`TlsOrigin`] answers with.
pub const BODY: &str = "hello over tls";

/// How a [`TlsOrigin`] serves.
pub struct OriginSettings {
    pub cert: CertFiles,
    /// Protocols the server accepts by ALPN, in its order of preference.
    pub alpn: Vec<Vec<u8>>,
    /// When set, clients must show a certificate signed by this CA.
    pub client_ca: Option<PathBuf>,
}

impl OriginSettings {
    /// HTTP/2 and HTTP/1.1, no client certificate asked.
    pub fn new(cert: CertFiles) -> OriginSettings {
        OriginSettings {
            cert,
            alpn: vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            client_ca: None,
        }
    }
}

/// What a [`TlsOrigin`] saw.
#[derive(Debug, Default)]
struct Seen {
    /// The protocol each completed handshake chose by ALPN (`"none"` without ALPN).
    alpn: Vec<String>,
    /// Whether the client showed a certificate, per completed handshake.
    client_certs: Vec<bool>,
    /// Why each failed handshake failed.
    handshake_errors: Vec<String>,
    /// Each request's HTTP version.
    versions: Vec<http::Version>,
    /// Each request's authority: `:authority` in HTTP/2, `Host` in HTTP/1.1.
    authorities: Vec<String>,
}

/// An HTTPS upstream on `127.0.0.1:0`; stops when dropped.
pub struct TlsOrigin {
    pub addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    seen: Arc<Mutex<Seen>>,
    task: JoinHandle<()>,
}

impl TlsOrigin {
    /// Serves with `cert` and the other settings at [`OriginSettings::new`]'s.
    pub async fn with_cert(cert: CertFiles) -> TlsOrigin {
        TlsOrigin::start(OriginSettings::new(cert)).await
    }

    /// Serves with `cert`, asking every client for a certificate `client_ca` signed.
    pub async fn with_client_ca(cert: CertFiles, client_ca: &Path) -> TlsOrigin {
        let mut settings = OriginSettings::new(cert);
        settings.client_ca = Some(client_ca.to_path_buf());
        TlsOrigin::start(settings).await
    }

    pub async fn start(settings: OriginSettings) -> TlsOrigin {
        let acceptor = TlsAcceptor::from(server_config(&settings));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (count, record) = (requests.clone(), seen.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, count, record) = (acceptor.clone(), count.clone(), record.clone());
                tokio::spawn(async move {
                    let tls = match acceptor.accept(tcp).await {
                        Ok(tls) => tls,
                        Err(error) => {
                            record
                                .lock()
                                .unwrap()
                                .handshake_errors
                                .push(error.to_string());
                            return;
                        }
                    };
                    {
                        let (_, session) = tls.get_ref();
                        let alpn = session.alpn_protocol().map_or("none".to_string(), |p| {
                            String::from_utf8_lossy(p).into_owned()
                        });
                        let mut seen = record.lock().unwrap();
                        seen.alpn.push(alpn);
                        seen.client_certs
                            .push(session.peer_certificates().is_some());
                    }
                    let service = service_fn(move |request: Request<Incoming>| {
                        count.fetch_add(1, Ordering::SeqCst);
                        let authority = match request.uri().authority() {
                            Some(authority) => authority.to_string(),
                            None => request
                                .headers()
                                .get(http::header::HOST)
                                .and_then(|h| h.to_str().ok())
                                .unwrap_or("")
                                .to_string(),
                        };
                        let mut seen = record.lock().unwrap();
                        seen.versions.push(request.version());
                        seen.authorities.push(authority);
                        drop(seen);
                        async move {
                            let response = Response::builder()
                                .header("cache-control", "max-age=60")
                                .header("content-type", "text/plain")
                                .body(Full::new(Bytes::from_static(BODY.as_bytes())))
                                .unwrap();
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        TlsOrigin {
            addr,
            requests,
            seen,
            task,
        }
    }

    /// Requests answered so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// The ALPN protocol of each completed handshake.
    pub fn alpn(&self) -> Vec<String> {
        self.seen.lock().unwrap().alpn.clone()
    }

    /// Whether each completed handshake came with a client certificate.
    pub fn client_certs(&self) -> Vec<bool> {
        self.seen.lock().unwrap().client_certs.clone()
    }

    /// Why handshakes failed, as the server saw it.
    pub fn handshake_errors(&self) -> Vec<String> {
        self.seen.lock().unwrap().handshake_errors.clone()
    }

    /// The HTTP version of each request.
    pub fn versions(&self) -> Vec<http::Version> {
        self.seen.lock().unwrap().versions.clone()
    }

    /// The authority each request named (`:authority` in HTTP/2, `Host` in HTTP/1.1).
    pub fn authorities(&self) -> Vec<String> {
        self.seen.lock().unwrap().authorities.clone()
    }
}

impl Drop for TlsOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn server_config(settings: &OriginSettings) -> Arc<ServerConfig> {
    let provider = Arc::new(ring::default_provider());
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&settings.cert.cert)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(&settings.cert.key).unwrap();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .unwrap();
    let builder = match &settings.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(ca).unwrap() {
                roots.add(cert.unwrap()).unwrap();
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, key).unwrap();
    config.alpn_protocols = settings.alpn.clone();
    Arc::new(config)
}
