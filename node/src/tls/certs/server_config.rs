//! The rustls server configuration of the HTTPS listeners.

use std::path::Path;
use std::sync::Arc;

use rustls::server::{NoServerSessionStorage, ServerSessionMemoryCache, WebPkiClientVerifier};
use rustls::version::{TLS12, TLS13};
use rustls::{RootCertStore, ServerConfig, SupportedProtocolVersion};
use verge_config::{TlsServerConfig, TlsVersion};

use super::{read_chain, CertResolver, TlsError};

/// The ALPN protocols offered, in the server's order of preference.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Builds the server configuration: the ring provider; TLS 1.3 only when `min_version` is
/// 1.3, else 1.2 and 1.3; ALPN h2 then http/1.1; a session cache of
/// `session_cache_entries` (none when 0); stateless tickets when `session_tickets`; and, with
/// `client_ca`, client certificates signed by that CA required. Certificates come from
/// `resolver`, so reloading them needs no new configuration.
pub fn server_config(
    tls: &TlsServerConfig,
    resolver: Arc<CertResolver>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&'static SupportedProtocolVersion] = match tls.min_version {
        TlsVersion::V1_3 => &[&TLS13],
        TlsVersion::V1_2 => &[&TLS12, &TLS13],
    };
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(versions)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match &tls.client_ca {
        Some(ca) => {
            let roots = client_roots(ca)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError::ClientCa {
                    path: ca.clone(),
                    reason: e.to_string(),
                })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(resolver);
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    // The server's cipher suite order, not the client's.
    config.ignore_client_order = true;
    config.session_storage = if tls.session_cache_entries > 0 {
        ServerSessionMemoryCache::new(tls.session_cache_entries)
    } else {
        Arc::new(NoServerSessionStorage {})
    };
    if tls.session_tickets {
        config.ticketer = rustls::crypto::ring::Ticketer::new()
            .map_err(|e| TlsError::Config(format!("session ticket keys: {e}")))?;
    } else if tls.session_cache_entries == 0 {
        // Nothing to resume from: do not send TLS 1.3 tickets at all.
        config.send_tls13_tickets = 0;
    }
    Ok(Arc::new(config))
}

/// The CA certificates client certificates must chain to.
fn client_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let chain = read_chain(path).map_err(|e| TlsError::ClientCa {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let mut roots = RootCertStore::empty();
    for cert in chain {
        roots.add(cert).map_err(|e| TlsError::ClientCa {
            path: path.to_path_buf(),
            reason: format!("not a usable CA certificate: {e}"),
        })?;
    }
    Ok(roots)
}

/// True when a failed handshake (as `tokio_rustls` reports it) was refused by the resolver
/// because the SNI names no certificate: the resolver has counted it already.
pub fn is_unknown_sni_refusal(error: &std::io::Error) -> bool {
    // rustls reports a resolver's refusal as this general error (0.23).
    error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|e| {
            matches!(e, rustls::Error::General(m) if m == "no server certificate chain resolved")
        })
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::super::testing::{client_config, counter, tls_config, Pki};
    use super::super::TlsMetrics;
    use super::*;
    use prometheus::Registry;
    use rustls::pki_types::ServerName;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio_rustls::client::TlsStream;
    use tokio_rustls::{TlsAcceptor, TlsConnector};
    use verge_config::UnknownSni;

    const BOUND: Duration = Duration::from_secs(10);

    /// A listener on 127.0.0.1:0 that completes one handshake per connection and reports
    /// its result, with the client certificates it saw.
    async fn serve(
        config: Arc<ServerConfig>,
    ) -> (
        std::net::SocketAddr,
        tokio::sync::mpsc::UnboundedReceiver<std::io::Result<usize>>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let acceptor = TlsAcceptor::from(config);
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let result = match acceptor.accept(socket).await {
                        Ok(mut stream) => {
                            let peers = stream
                                .get_ref()
                                .1
                                .peer_certificates()
                                .map_or(0, |c| c.len());
                            // Prove the connection works both ways.
                            let mut byte = [0u8; 1];
                            match stream.read_exact(&mut byte).await {
                                Ok(_) => {
                                    let _ = stream.write_all(&byte).await;
                                    let _ = stream.flush().await;
                                    Ok(peers)
                                }
                                Err(e) => Err(e),
                            }
                        }
                        Err(e) => Err(e),
                    };
                    let _ = tx.send(result);
                });
            }
        });
        (addr, rx)
    }

    /// A handshake with the server at `addr` as `client`, naming `name` by SNI; `Err` when it
    /// takes longer than [`BOUND`].
    async fn handshake(
        client: Arc<rustls::ClientConfig>,
        addr: std::net::SocketAddr,
        name: &str,
    ) -> Result<std::io::Result<TlsStream<TcpStream>>, tokio::time::error::Elapsed> {
        let socket = TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from(name.to_string()).unwrap();
        tokio::time::timeout(BOUND, TlsConnector::from(client).connect(name, socket)).await
    }

    /// Sends `x` over `stream` and reads what the server echoes, within [`BOUND`].
    async fn echo(stream: &mut TlsStream<TcpStream>) -> [u8; 1] {
        stream.write_all(b"x").await.unwrap();
        let mut echo = [0u8; 1];
        tokio::time::timeout(BOUND, stream.read_exact(&mut echo))
            .await
            .unwrap()
            .unwrap();
        echo
    }

    /// What the server reported for its next handshake.
    async fn next_served(
        results: &mut tokio::sync::mpsc::UnboundedReceiver<std::io::Result<usize>>,
    ) -> std::io::Result<usize> {
        tokio::time::timeout(BOUND, results.recv())
            .await
            .unwrap()
            .unwrap()
    }

    /// [`serve`] with the server configuration made of `tls`; the registry it counts on.
    async fn serving(
        tls: &TlsServerConfig,
    ) -> (
        std::net::SocketAddr,
        tokio::sync::mpsc::UnboundedReceiver<std::io::Result<usize>>,
        Registry,
    ) {
        let registry = Registry::new();
        let metrics = TlsMetrics::register(&registry).unwrap();
        let resolver = Arc::new(CertResolver::new(tls, metrics, SystemTime::now()).unwrap());
        let (addr, results) = serve(server_config(tls, resolver).unwrap()).await;
        (addr, results, registry)
    }

    /// One site, `a.test`, with a certificate from `pki`.
    fn site_a(pki: &Pki) -> TlsServerConfig {
        tls_config(vec![pki.leaf("a", &["a.test"])])
    }

    #[tokio::test]
    async fn a_handshake_gets_the_certificate_named_by_sni_and_h2() {
        let pki = Pki::new();
        let a = pki.leaf("a", &["a.test"]);
        let b = pki.leaf("b", &["b.test"]);
        let c = pki.leaf("c", &["*.c.test"]);
        let tls = tls_config(vec![a, b.clone(), c]);
        let (addr, mut results, _registry) = serving(&tls).await;
        let expected = read_chain(&b.cert).unwrap();

        let client = client_config(&pki, None);
        let mut stream = handshake(client, addr, "b.test").await.unwrap().unwrap();
        let (_, connection) = stream.get_ref();
        assert_eq!(connection.peer_certificates().unwrap()[0], expected[0]);
        assert_eq!(connection.alpn_protocol(), Some(&b"h2"[..]));
        assert_eq!(
            connection.protocol_version(),
            Some(rustls::ProtocolVersion::TLSv1_3)
        );
        assert_eq!(&echo(&mut stream).await, b"x");
        let served = next_served(&mut results).await;
        assert_eq!(served.unwrap(), 0, "no client certificate");
    }

    #[tokio::test]
    async fn http1_is_negotiated_for_a_client_that_offers_only_http1() {
        let pki = Pki::new();
        let tls = site_a(&pki);
        let (addr, _results, _registry) = serving(&tls).await;
        let mut client = (*client_config(&pki, None)).clone();
        client.alpn_protocols = vec![b"http/1.1".to_vec()];
        let stream = handshake(Arc::new(client), addr, "a.test")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    }

    #[tokio::test]
    async fn an_unknown_sni_is_refused_and_counted_when_so_configured() {
        let pki = Pki::new();
        let mut tls = site_a(&pki);
        tls.unknown_sni = UnknownSni::Refuse;
        let (addr, mut results, registry) = serving(&tls).await;
        let client = client_config(&pki, None);
        let outcome = handshake(client, addr, "other.test").await.unwrap();
        assert!(outcome.is_err());
        let served = next_served(&mut results).await;
        let error = served.unwrap_err();
        assert!(is_unknown_sni_refusal(&error), "{error:?}");
        let refused = counter(&registry, "verge_tls_handshakes_total", "unknown_sni");
        assert_eq!(refused, 1.0);
    }

    #[tokio::test]
    async fn with_a_client_ca_only_clients_with_a_certificate_it_signed_get_through() {
        let pki = Pki::new();
        let mut tls = site_a(&pki);
        tls.client_ca = Some(pki.ca_path());
        let (addr, mut results, _registry) = serving(&tls).await;

        // Without a certificate: the server refuses the handshake. (In TLS 1.3 the client may
        // believe it finished before the refusal arrives; the server's side decides.)
        if let Ok(Ok(mut stream)) = handshake(client_config(&pki, None), addr, "a.test").await {
            let _ = stream.write_all(b"x").await;
            let mut echo = [0u8; 1];
            let read = tokio::time::timeout(BOUND, stream.read_exact(&mut echo))
                .await
                .unwrap();
            assert!(read.is_err(), "no echo without a client certificate");
        }
        let served = next_served(&mut results).await;
        assert!(served.is_err());

        // With one the CA signed: through, and the server sees it.
        let client = client_config(&pki, Some(pki.client("client.test")));
        let mut stream = handshake(client, addr, "a.test").await.unwrap().unwrap();
        assert_eq!(&echo(&mut stream).await, b"x");
        let served = next_served(&mut results).await;
        assert_eq!(served.unwrap(), 1, "the client certificate");

        // A certificate from another CA is refused too.
        let stranger = Pki::new();
        let client = client_config(&pki, Some(stranger.client("client.test")));
        let _ = handshake(client, addr, "a.test").await;
        let served = next_served(&mut results).await;
        assert!(served.is_err());
    }

    #[tokio::test]
    async fn min_version_1_3_refuses_a_tls_1_2_client() {
        let pki = Pki::new();
        let mut tls = site_a(&pki);
        tls.min_version = TlsVersion::V1_3;
        let (addr, mut results, _registry) = serving(&tls).await;
        let mut roots = RootCertStore::empty();
        roots.add(pki.ca_der()).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&TLS12])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let outcome = handshake(Arc::new(client), addr, "a.test").await.unwrap();
        assert!(outcome.is_err());
        let served = next_served(&mut results).await;
        assert!(served.is_err());
    }

    #[test]
    fn a_bad_client_ca_file_is_named_in_the_error() {
        let pki = Pki::new();
        let mut tls = site_a(&pki);
        tls.client_ca = Some(pki.write_file("ca-garbage.pem", "nothing here"));
        let registry = Registry::new();
        let metrics = TlsMetrics::register(&registry).unwrap();
        let resolver = Arc::new(CertResolver::new(&tls, metrics, SystemTime::now()).unwrap());
        let error = server_config(&tls, resolver).unwrap_err();
        assert!(matches!(error, TlsError::ClientCa { .. }), "{error:?}");
        assert!(error.to_string().contains("ca-garbage.pem"), "{error}");
    }
}
