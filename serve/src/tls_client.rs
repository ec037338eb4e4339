//! TLS towards `https://` upstreams: the edge to its shields or origin, a shield to its origin
//! servers, a control replica to etcd.
//!
//! One rustls [`ClientConfig`] is built per upstream table (`[upstream.tls]`, `[shields.tls]`,
//! `[origin.tls]`) when the node starts, and shared by every client of that table: its roots
//! are parsed once and its session cache lets reconnections resume. It offers TLS 1.3 and 1.2
//! on the `ring` provider, verifies the upstream against `ca_file` (or the system store), shows
//! the client certificate when one is configured (mutual TLS between tiers), and offers `h2`
//! then `http/1.1` by ALPN: the HTTP client speaks HTTP/2 on connections where the upstream
//! picks `h2`.
//!
//! [`connector`] wraps the plain TCP connector, so one client type reaches `http://` upstreams
//! in the clear and `https://` ones over TLS, with the SNI name (and the name the certificate
//! must carry) taken from `server_name` or else the upstream URL's host.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::uri::{Scheme, Uri};
use http_body_util::Full;
use hyper_rustls::{FixedServerNameResolver, HttpsConnector};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Client, ResponseFuture};
use rustls::crypto::ring;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::RootCertStore;
use tower_service::Service;
use verge_config::{ClientTlsConfig, OriginUrl};

/// The rustls client configuration, re-exported for roles that hold one without using rustls.
pub use rustls::ClientConfig;

/// Protocols offered by ALPN, most preferred first.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Why a client TLS table cannot be used. [`ClientTlsError::key`] names the offending key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientTlsError {
    #[error("cannot read CA certificates from {}: {reason}", path.display())]
    CaUnreadable { path: PathBuf, reason: String },
    #[error("{} holds no PEM certificate", path.display())]
    CaEmpty { path: PathBuf },
    #[error("certificate {index} in {} is not a usable CA: {reason}", path.display())]
    CaRejected {
        path: PathBuf,
        index: usize,
        reason: String,
    },
    #[error(
        "the system certificate store holds no CA certificates{detail}; set ca_file to a PEM \
         bundle of the CAs that sign the upstream's certificate"
    )]
    NoSystemRoots { detail: String },
    #[error("cannot read the client certificate from {}: {reason}", path.display())]
    ClientCertUnreadable { path: PathBuf, reason: String },
    #[error("{} holds no PEM certificate", path.display())]
    ClientCertEmpty { path: PathBuf },
    #[error("cannot read the client key from {}: {reason}", path.display())]
    ClientKeyUnreadable { path: PathBuf, reason: String },
    #[error(
        "the client certificate {} cannot be used with the key {}: {reason}",
        cert.display(),
        key.display()
    )]
    ClientKeyRejected {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
    #[error("{name:?} is not a DNS name or an IP address")]
    ServerName { name: String },
    #[error("the TLS library refused the settings: {0}")]
    Library(String),
}

impl ClientTlsError {
    /// The key of the client TLS table whose value is at fault.
    pub fn key(&self) -> &'static str {
        match self {
            ClientTlsError::CaUnreadable { .. }
            | ClientTlsError::CaEmpty { .. }
            | ClientTlsError::CaRejected { .. }
            | ClientTlsError::NoSystemRoots { .. }
            | ClientTlsError::Library(_) => "ca_file",
            ClientTlsError::ClientCertUnreadable { .. }
            | ClientTlsError::ClientCertEmpty { .. } => "client_cert",
            ClientTlsError::ClientKeyUnreadable { .. }
            | ClientTlsError::ClientKeyRejected { .. } => "client_key",
            ClientTlsError::ServerName { .. } => "server_name",
        }
    }
}

/// Builds the client configuration for one upstream table. Reads the files it names (and the
/// system store when `ca_file` is unset), so call it once at start and share the result.
pub fn client_config(tls: &ClientTlsConfig) -> Result<Arc<ClientConfig>, ClientTlsError> {
    if let Some(name) = &tls.server_name {
        server_name(name)?;
    }
    let roots = match &tls.ca_file {
        Some(path) => roots_from_file(path)?,
        None => system_roots()?,
    };
    let builder = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| ClientTlsError::Library(e.to_string()))?
        .with_root_certificates(roots);
    let mut config = match &tls.client_cert {
        None => builder.with_no_client_auth(),
        Some(files) => {
            let chain = client_chain(&files.cert)?;
            let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| {
                ClientTlsError::ClientKeyUnreadable {
                    path: files.key.clone(),
                    reason: pem_reason(&e, "no PEM private key found"),
                }
            })?;
            builder.with_client_auth_cert(chain, key).map_err(|e| {
                ClientTlsError::ClientKeyRejected {
                    cert: files.cert.clone(),
                    key: files.key.clone(),
                    reason: e.to_string(),
                }
            })?
        }
    };
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// The client configuration for a table whose upstreams are `urls`, or `None` when none of
/// them is `https://` and the table sets nothing (so a plain-HTTP node never reads the system
/// store). Errors name the key, under `section` (e.g. `shields.tls.ca_file: ...`).
pub fn upstream_client_config<'a>(
    tls: &ClientTlsConfig,
    urls: impl IntoIterator<Item = &'a OriginUrl>,
    section: &str,
) -> Result<Option<Arc<ClientConfig>>, String> {
    let wanted =
        *tls != ClientTlsConfig::default() || urls.into_iter().any(|u| u.scheme == Scheme::HTTPS);
    if !wanted {
        return Ok(None);
    }
    client_config(tls)
        .map(Some)
        .map_err(|e| format!("{section}.{}: {e}", e.key()))
}

/// The connector of a TLS-capable upstream client: see [`connector`].
pub type UpstreamConnector = FixedTarget<HttpsConnector<HttpConnector>>;

/// A connector to `target`: TCP with `http`'s settings (timeout, nodelay, local address) and,
/// when `target` is `https`, a TLS handshake with `tls` whose SNI (and the name the
/// certificate must carry) is `server_name`, else `target`'s host. When the upstream picks `h2`
/// by ALPN, the connection says so and the client speaks HTTP/2 on it.
///
/// Every connection goes to `target`, whatever the request URI's authority: requests can then
/// carry the client's host as their authority, which HTTP/2 sends as `:authority` (a shield
/// keys its cache by it, an origin picks its virtual host by it), while the pool keeps one set
/// of connections per such authority.
pub fn connector(
    mut http: HttpConnector,
    tls: Arc<ClientConfig>,
    target: &OriginUrl,
    server_name: Option<&str>,
) -> UpstreamConnector {
    // The TLS layer hands `https` URIs to the TCP connector, which must accept them.
    http.enforce_http(false);
    let resolver = resolver(server_name);
    // A scheme and an authority that parsed as a URL make a URI; were it not so, the empty URI
    // would fail each connection ("missing scheme") instead of the node.
    let target = Uri::builder()
        .scheme(target.scheme.clone())
        .authority(target.authority.clone())
        .path_and_query("/")
        .build()
        .unwrap_or_default();
    FixedTarget {
        inner: HttpsConnector::new(http, tls, false, resolver),
        target,
    }
}

/// A connector to whatever each request URI names: TCP with `http`'s settings for `http://`,
/// and a TLS handshake with `tls` for `https://`, whose SNI (and the name the certificate must
/// carry) is `server_name`, else the URI's host. For clients of several servers, such as
/// control's of the members of an etcd cluster.
pub fn connector_by_uri(
    mut http: HttpConnector,
    tls: Arc<ClientConfig>,
    server_name: Option<&str>,
) -> HttpsConnector<HttpConnector> {
    http.enforce_http(false);
    HttpsConnector::new(http, tls, false, resolver(server_name))
}

/// An HTTP/1.1 client of several servers, some of which may be `https://`: in the clear when
/// there is no TLS configuration, else able to speak TLS (offering only `http/1.1` by ALPN) to
/// the `https://` ones. Control's etcd client and a node's control client.
#[derive(Clone)]
pub enum Http1Client {
    Plain(Client<HttpConnector, Full<Bytes>>),
    Tls(Client<HttpsConnector<HttpConnector>, Full<Bytes>>),
}

impl Http1Client {
    /// A client from `builder` over `http`, with `tls` for `https://` URIs when given.
    pub fn new(
        builder: &hyper_util::client::legacy::Builder,
        http: HttpConnector,
        tls: Option<Arc<ClientConfig>>,
    ) -> Http1Client {
        match tls {
            None => Http1Client::Plain(builder.build(http)),
            Some(tls) => {
                let mut tls = (*tls).clone();
                tls.alpn_protocols = vec![b"http/1.1".to_vec()];
                Http1Client::Tls(builder.build(connector_by_uri(http, Arc::new(tls), None)))
            }
        }
    }

    pub fn request(&self, request: http::Request<Full<Bytes>>) -> ResponseFuture {
        match self {
            Http1Client::Plain(client) => client.request(request),
            Http1Client::Tls(client) => client.request(request),
        }
    }
}

/// The SNI name of each connection: `server_name`, else the URI's host.
fn resolver(server_name: Option<&str>) -> Arc<dyn hyper_rustls::ResolveServerName + Send + Sync> {
    match server_name {
        None => Arc::new(hyper_rustls::DefaultServerNameResolver::default()),
        Some(name) => match self::server_name(name) {
            Ok(name) => Arc::new(FixedServerNameResolver::new(name)),
            Err(error) => {
                // Only a name that escaped validation gets here; each connection then fails
                // with the reason rather than the node refusing to start.
                let reason = error.to_string();
                Arc::new(move |_: &Uri| Err::<ServerName<'static>, _>(reason.clone()))
            }
        },
    }
}

/// A connector that connects every pool key to one upstream, `target`.
#[derive(Clone)]
pub struct FixedTarget<C> {
    inner: C,
    target: Uri,
}

impl<C: Service<Uri>> Service<Uri> for FixedTarget<C> {
    type Response = C::Response;
    type Error = C::Error;
    type Future = C::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), C::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, _pool_key: Uri) -> C::Future {
        self.inner.call(self.target.clone())
    }
}

/// What went wrong in TLS, when `error`'s chain holds a TLS failure (handshake alert, refused
/// certificate, ...): e.g. `invalid peer certificate: UnknownIssuer`.
pub fn tls_failure(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(found) = rustls_error(e) {
            return Some(found.to_string());
        }
        current = e.source();
    }
    None
}

/// `error` itself, or what an `io::Error` (possibly nested) wraps, as a rustls error. An
/// `io::Error`'s `source()` skips the error it wraps, so the chain alone would miss it.
fn rustls_error<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    if let Some(found) = error.downcast_ref::<rustls::Error>() {
        return Some(found);
    }
    let inner = error.downcast_ref::<std::io::Error>()?.get_ref()?;
    rustls_error(inner)
}

fn server_name(name: &str) -> Result<ServerName<'static>, ClientTlsError> {
    let bare = name
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(name);
    ServerName::try_from(bare.to_string()).map_err(|_| ClientTlsError::ServerName {
        name: name.to_string(),
    })
}

pub(crate) fn roots_from_file(path: &Path) -> Result<RootCertStore, ClientTlsError> {
    let unreadable = |e: &rustls::pki_types::pem::Error| ClientTlsError::CaUnreadable {
        path: path.to_path_buf(),
        reason: pem_reason(e, "no PEM certificate found"),
    };
    let mut roots = RootCertStore::empty();
    for (index, cert) in CertificateDer::pem_file_iter(path)
        .map_err(|e| unreadable(&e))?
        .enumerate()
    {
        let cert = cert.map_err(|e| unreadable(&e))?;
        roots.add(cert).map_err(|e| ClientTlsError::CaRejected {
            path: path.to_path_buf(),
            index,
            reason: e.to_string(),
        })?;
    }
    if roots.is_empty() {
        return Err(ClientTlsError::CaEmpty {
            path: path.to_path_buf(),
        });
    }
    Ok(roots)
}

/// The platform's trusted CAs. Certificates it cannot parse are skipped (and logged) as long
/// as some remain.
fn system_roots() -> Result<RootCertStore, ClientTlsError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(found.certs);
    if roots.is_empty() {
        let detail = match found.errors.first() {
            Some(error) => format!(" ({error})"),
            None => String::new(),
        };
        return Err(ClientTlsError::NoSystemRoots { detail });
    }
    if ignored > 0 || !found.errors.is_empty() {
        tracing::warn!(
            added,
            ignored,
            errors = ?found.errors,
            "some system CA certificates could not be loaded"
        );
    }
    Ok(roots)
}

pub(crate) fn client_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, ClientTlsError> {
    let unreadable = |e: &rustls::pki_types::pem::Error| ClientTlsError::ClientCertUnreadable {
        path: path.to_path_buf(),
        reason: pem_reason(e, "no PEM certificate found"),
    };
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(|e| unreadable(&e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| unreadable(&e))?;
    if chain.is_empty() {
        return Err(ClientTlsError::ClientCertEmpty {
            path: path.to_path_buf(),
        });
    }
    Ok(chain)
}

/// A PEM reading error in words; `none_found` replaces the library's "no items found".
pub(crate) fn pem_reason(error: &rustls::pki_types::pem::Error, none_found: &str) -> String {
    match error {
        rustls::pki_types::pem::Error::Io(io) => io.to_string(),
        rustls::pki_types::pem::Error::NoItemsFound => none_found.to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use verge_config::CertificateFiles;

    struct Files {
        dir: PathBuf,
    }

    impl Files {
        fn new(name: &str) -> Files {
            let dir = std::env::temp_dir()
                .join(format!("verge-client-tls-{name}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("temp dir");
            Files { dir }
        }

        fn write(&self, name: &str, text: &str) -> PathBuf {
            let path = self.dir.join(name);
            std::fs::write(&path, text).expect("write test file");
            path
        }
    }

    impl Drop for Files {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn ca() -> (String, rcgen::Issuer<'static, rcgen::KeyPair>) {
        let mut params = rcgen::CertificateParams::new(Vec::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("self-signed");
        (cert.pem(), rcgen::Issuer::new(params, key))
    }

    fn leaf(issuer: &rcgen::Issuer<'static, rcgen::KeyPair>) -> (String, String) {
        let params = rcgen::CertificateParams::new(vec!["edge.test".to_string()]).expect("params");
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, issuer).expect("signed");
        (cert.pem(), key.serialize_pem())
    }

    fn with_ca(path: PathBuf) -> ClientTlsConfig {
        ClientTlsConfig {
            ca_file: Some(path),
            ..ClientTlsConfig::default()
        }
    }

    #[test]
    fn a_ca_file_gives_a_config_offering_h2_then_http1() {
        let files = Files::new("ok");
        let (ca_pem, _) = ca();
        let config = client_config(&with_ca(files.write("ca.pem", &ca_pem))).expect("valid");
        assert_eq!(
            config.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        assert!(!config.client_auth_cert_resolver.has_certs());
    }

    #[test]
    fn a_missing_ca_file_is_named_under_ca_file() {
        let error = client_config(&with_ca(PathBuf::from("/nonexistent/verge-ca.pem")))
            .expect_err("missing file");
        assert_eq!(error.key(), "ca_file");
        assert!(
            error.to_string().contains("/nonexistent/verge-ca.pem"),
            "{error}"
        );
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let files = Files::new("empty");
        for (name, text) in [("empty.pem", ""), ("prose.pem", "not a certificate\n")] {
            let path = files.write(name, text);
            let error = client_config(&with_ca(path.clone())).expect_err("no certificate");
            assert_eq!(error, ClientTlsError::CaEmpty { path });
        }
        let broken = files.write(
            "broken.pem",
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
        );
        let error = client_config(&with_ca(broken)).expect_err("bad base64");
        assert!(error.to_string().contains("broken.pem"), "{error}");
        let garbage = files.write(
            "garbage.pem",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        );
        let error = client_config(&with_ca(garbage)).expect_err("not DER");
        assert!(
            matches!(error, ClientTlsError::CaRejected { index: 0, .. }),
            "{error}"
        );
    }

    #[test]
    fn a_client_certificate_is_loaded_with_its_key() {
        let files = Files::new("client");
        let (ca_pem, issuer) = ca();
        let (cert, key) = leaf(&issuer);
        let mut tls = with_ca(files.write("ca.pem", &ca_pem));
        tls.client_cert = Some(CertificateFiles {
            cert: files.write("client.pem", &cert),
            key: files.write("client.key", &key),
        });
        let config = client_config(&tls).expect("valid");
        assert!(config.client_auth_cert_resolver.has_certs());
    }

    #[test]
    fn client_certificate_mistakes_name_their_file_and_key() {
        let files = Files::new("client-bad");
        let (ca_pem, issuer) = ca();
        let (cert, _) = leaf(&issuer);
        let (_, other_key) = leaf(&issuer);
        let ca_file = files.write("ca.pem", &ca_pem);
        let cert_file = files.write("client.pem", &cert);
        let attempt = |cert: PathBuf, key: PathBuf| {
            client_config(&ClientTlsConfig {
                ca_file: Some(ca_file.clone()),
                client_cert: Some(CertificateFiles { cert, key }),
                server_name: None,
            })
            .expect_err("unusable client certificate")
        };

        let error = attempt(
            files.write("none.pem", ""),
            files.write("k1.key", &other_key),
        );
        assert_eq!(error.key(), "client_cert");
        assert!(error.to_string().contains("none.pem"), "{error}");

        let error = attempt(cert_file.clone(), files.write("nokey.key", &cert));
        assert_eq!(error.key(), "client_key");
        assert!(error.to_string().contains("nokey.key"), "{error}");

        let error = attempt(cert_file, files.write("other.key", &other_key));
        assert_eq!(error.key(), "client_key");
        assert!(error.to_string().contains("other.key"), "{error}");
    }

    #[test]
    fn a_server_name_must_be_a_dns_name_or_an_ip() {
        let files = Files::new("sni");
        let (ca_pem, _) = ca();
        let mut tls = with_ca(files.write("ca.pem", &ca_pem));
        for good in ["origin.test", "10.0.0.1", "[::1]"] {
            tls.server_name = Some(good.to_string());
            client_config(&tls).expect(good);
        }
        tls.server_name = Some("bad_name!".to_string());
        let error = client_config(&tls).expect_err("invalid name");
        assert_eq!(error.key(), "server_name");
    }

    #[test]
    fn plain_http_upstreams_with_default_settings_need_no_tls() {
        let url = OriginUrl::parse("http://10.0.0.1:8080").expect("url");
        let built = upstream_client_config(&ClientTlsConfig::default(), [&url], "upstream.tls");
        assert_eq!(built.map(|c| c.is_some()), Ok(false));

        let https = OriginUrl::parse("https://10.0.0.1").expect("url");
        let tls = with_ca(PathBuf::from("/nonexistent/ca.pem"));
        let error = upstream_client_config(&tls, [&url], "shields.tls").expect_err("configured");
        assert!(error.starts_with("shields.tls.ca_file: "), "{error}");
        let error = upstream_client_config(&tls, [&https], "origin.tls").expect_err("needed");
        assert!(error.starts_with("origin.tls.ca_file: "), "{error}");
    }

    #[test]
    fn a_tls_failure_is_found_inside_io_errors() {
        let failure = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let inner = std::io::Error::new(std::io::ErrorKind::InvalidData, failure);
        let outer = std::io::Error::other(inner);
        assert_eq!(
            tls_failure(&outer).as_deref(),
            Some("invalid peer certificate: UnknownIssuer")
        );
        assert_eq!(tls_failure(&std::io::Error::other("refused")), None);
    }
}
