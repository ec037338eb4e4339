//! A test PKI and an HTTPS client that trusts it.
//!
//! - [`TestPki`]: a CA made with rcgen and the certificates it signs (server certificates for
//!   DNS names and IP addresses, client certificates), with a chosen [`Validity`], written as
//!   PEM files into a temporary directory removed on drop;
//! - [`TlsClient`]: tokio-rustls + hyper's connection API on one TLS connection, with chosen
//!   SNI and ALPN, reporting the certificate the server presented, the protocol agreed, and
//!   answering whole [`TestResponse`]s.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Version};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SerialNumber,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{ring, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::client::TestResponse;
use crate::{within, IO_TIMEOUT};

/// When a certificate is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validity {
    /// From 1975 to 4096 (rcgen's defaults): valid for as long as these tests run.
    Current,
    /// Valid only during the year 2000: expired now.
    Expired,
    /// From `from` to `until`, as (year, month, day), midnight UTC.
    Between((i32, u8, u8), (i32, u8, u8)),
}

/// A certificate chain and key as PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl CertFiles {
    /// The leaf certificate these files hold now (DER), to compare with what a server presents.
    pub fn leaf(&self) -> CertificateDer<'static> {
        CertificateDer::pem_file_iter(&self.cert)
            .unwrap_or_else(|e| panic!("reading {}: {e:?}", self.cert.display()))
            .next()
            .unwrap_or_else(|| panic!("{} holds no certificate", self.cert.display()))
            .unwrap()
    }

    /// Overwrites both files with `issued`, each by an atomic rename (as a certificate manager
    /// does): a reader sees the old or the new file, never half of one.
    pub fn replace_with(&self, issued: &Issued) {
        write_atomically(&self.cert, issued.cert_pem.as_bytes());
        write_atomically(&self.key, issued.key_pem.as_bytes());
    }

    /// The TOML of one `[[tls.certificates]]` entry naming these files.
    pub fn toml_entry(&self) -> String {
        format!(
            "[[tls.certificates]]\ncert = {}\nkey = {}\n",
            toml_path(&self.cert),
            toml_path(&self.key)
        )
    }
}

/// A certificate and its key, issued but not yet written anywhere.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: CertificateDer<'static>,
}

/// A test CA and the files of the certificates it signed, in a directory removed on drop.
pub struct TestPki {
    dir: tempfile::TempDir,
    issuer: Issuer<'static, KeyPair>,
    /// The CA's certificate (PEM): what clients and servers that trust it are given.
    pub ca_file: PathBuf,
    next_serial: AtomicU64,
}

impl TestPki {
    /// A new CA; `name` tells CAs apart in their subject and file names.
    pub fn new(name: &str) -> TestPki {
        let dir = tempfile::tempdir().unwrap();
        let mut params = CertificateParams::new(Vec::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("verge test CA {name}"));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.serial_number = Some(SerialNumber::from(1u64));
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let ca_file = dir.path().join(format!("ca-{name}.pem"));
        std::fs::write(&ca_file, cert.pem()).unwrap();
        TestPki {
            dir,
            issuer: Issuer::new(params, key),
            ca_file,
            next_serial: AtomicU64::new(2),
        }
    }

    /// The directory the files are written to.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A path in this PKI's directory (the file need not exist).
    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    /// Writes `text` to `file` in this PKI's directory, for tests that need a broken file.
    pub fn write(&self, file: &str, text: &str) -> PathBuf {
        let path = self.path(file);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// A currently valid server certificate for `names` (DNS names, wildcards or IP
    /// addresses), written as `<file>.pem` and `<file>.key`.
    pub fn server_cert(&self, file: &str, names: &[&str]) -> CertFiles {
        self.server_cert_valid(file, names, Validity::Current)
    }

    /// A server certificate for `names` with the given validity, written to files.
    pub fn server_cert_valid(&self, file: &str, names: &[&str], validity: Validity) -> CertFiles {
        let issued = self.issue_server(names, validity);
        self.write_issued(file, &issued)
    }

    /// A client certificate for `name`, written as `<file>.pem` and `<file>.key`.
    pub fn client_cert(&self, file: &str, name: &str) -> CertFiles {
        let issued = self.issue(
            &[name],
            Validity::Current,
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        self.write_issued(file, &issued)
    }

    /// A certificate for an etcd member at `names`: etcd's JSON gateway presents its server
    /// certificate as a client one to etcd itself, so it is for both uses.
    pub fn etcd_member_cert(&self, file: &str, names: &[&str]) -> CertFiles {
        let issued = self.issue_with(
            names,
            Validity::Current,
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
            names.first().copied(),
        );
        self.write_issued(file, &issued)
    }

    /// A client certificate without a subject name: what etcd's JSON gateway accepts from its
    /// clients when it checks client certificates (a common name there means a user name, which
    /// the gateway refuses).
    pub fn anonymous_client_cert(&self, file: &str) -> CertFiles {
        let issued = self.issue_with(
            &[],
            Validity::Current,
            vec![ExtendedKeyUsagePurpose::ClientAuth],
            None,
        );
        self.write_issued(file, &issued)
    }

    /// A server certificate for `names`, in memory (a fresh key and serial each time).
    pub fn issue_server(&self, names: &[&str], validity: Validity) -> Issued {
        self.issue(names, validity, ExtendedKeyUsagePurpose::ServerAuth)
    }

    fn write_issued(&self, file: &str, issued: &Issued) -> CertFiles {
        let files = CertFiles {
            cert: self.path(&format!("{file}.pem")),
            key: self.path(&format!("{file}.key")),
        };
        files.replace_with(issued);
        files
    }

    fn issue(&self, names: &[&str], validity: Validity, usage: ExtendedKeyUsagePurpose) -> Issued {
        let common_name = Some(names.first().copied().unwrap_or("leaf"));
        self.issue_with(names, validity, vec![usage], common_name)
    }

    fn issue_with(
        &self,
        names: &[&str],
        validity: Validity,
        usages: Vec<ExtendedKeyUsagePurpose>,
        common_name: Option<&str>,
    ) -> Issued {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        if let Some(name) = common_name {
            params.distinguished_name.push(DnType::CommonName, name);
        }
        params.extended_key_usages = usages;
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(SerialNumber::from(
            self.next_serial.fetch_add(1, Ordering::SeqCst),
        ));
        match validity {
            Validity::Current => {}
            Validity::Expired => {
                params.not_before = date_time_ymd(2000, 1, 1);
                params.not_after = date_time_ymd(2001, 1, 1);
            }
            Validity::Between((y1, m1, d1), (y2, m2, d2)) => {
                params.not_before = date_time_ymd(y1, m1, d1);
                params.not_after = date_time_ymd(y2, m2, d2);
            }
        }
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }
}

/// `path` as a TOML basic string.
pub fn toml_path(path: &Path) -> String {
    format!("{:?}", path.display().to_string())
}

/// Writes `bytes` to a sibling temporary file, then renames it over `path`.
fn write_atomically(path: &Path, bytes: &[u8]) {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}

/// Checks the server's chain against the test CA like any client, but accepts a certificate
/// that does not cover the name asked for: tests that ask for an unknown name still see
/// which certificate the server chose.
#[derive(Debug)]
struct IgnoreName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for IgnoreName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// An HTTPS client trusting one CA; each [`TlsClient::connect`] opens one connection.
#[derive(Clone)]
pub struct TlsClient {
    config: Arc<ClientConfig>,
}

/// How a [`TlsClient`] is built.
pub struct TlsClientBuilder {
    ca_file: PathBuf,
    alpn: Vec<Vec<u8>>,
    client_cert: Option<CertFiles>,
    check_name: bool,
}

impl TlsClientBuilder {
    /// Protocols offered by ALPN, in order (default: `h2`, `http/1.1`).
    pub fn alpn(mut self, protocols: &[&str]) -> TlsClientBuilder {
        self.alpn = protocols.iter().map(|p| p.as_bytes().to_vec()).collect();
        self
    }

    /// Presents this client certificate when asked.
    pub fn client_cert(mut self, files: &CertFiles) -> TlsClientBuilder {
        self.client_cert = Some(files.clone());
        self
    }

    /// Accepts a server certificate (still signed by the CA, still valid) that does not cover
    /// the name asked for.
    pub fn ignore_name(mut self) -> TlsClientBuilder {
        self.check_name = false;
        self
    }

    pub fn build(self) -> TlsClient {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(&self.ca_file).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .unwrap();
        let verifier: Arc<dyn ServerCertVerifier> = if self.check_name {
            webpki
        } else {
            Arc::new(IgnoreName(webpki))
        };
        let builder = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(rustls::DEFAULT_VERSIONS)
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut config = match &self.client_cert {
            None => builder.with_no_client_auth(),
            Some(files) => {
                let chain = CertificateDer::pem_file_iter(&files.cert)
                    .unwrap()
                    .collect::<Result<Vec<_>, _>>()
                    .unwrap();
                let key = PrivateKeyDer::from_pem_file(&files.key).unwrap();
                builder.with_client_auth_cert(chain, key).unwrap()
            }
        };
        config.alpn_protocols = self.alpn;
        TlsClient {
            config: Arc::new(config),
        }
    }
}

impl TlsClient {
    /// A client trusting the CA in `ca_file`, offering `h2` and `http/1.1`, checking names.
    pub fn builder(ca_file: &Path) -> TlsClientBuilder {
        TlsClientBuilder {
            ca_file: ca_file.to_path_buf(),
            alpn: vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            client_cert: None,
            check_name: true,
        }
    }

    /// The default client for `pki`: h2 and http/1.1 offered, names checked.
    pub fn new(pki: &TestPki) -> TlsClient {
        TlsClient::builder(&pki.ca_file).build()
    }

    /// Connects to `addr` and completes a handshake for `name` (sent as SNI when it is a DNS
    /// name; an IP address sends no SNI). The error is the handshake's, within [`IO_TIMEOUT`].
    pub async fn handshake(
        &self,
        addr: SocketAddr,
        name: &str,
    ) -> io::Result<TlsStream<TcpStream>> {
        let server_name = ServerName::try_from(name.to_string()).unwrap();
        let connector = TlsConnector::from(Arc::clone(&self.config));
        within("TLS handshake", IO_TIMEOUT, async {
            let tcp = TcpStream::connect(addr).await?;
            connector.connect(server_name, tcp).await
        })
        .await
    }

    /// A connection to `addr` for `name`, ready for requests; panics if the handshake fails.
    pub async fn connect(&self, addr: SocketAddr, name: &str) -> TlsConnection {
        let stream = self
            .handshake(addr, name)
            .await
            .unwrap_or_else(|e| panic!("TLS handshake with {addr} for {name}: {e}"));
        TlsConnection::over(stream, name).await
    }

    /// The certificate `addr` presents for `name`; panics if the handshake fails.
    pub async fn presented(&self, addr: SocketAddr, name: &str) -> CertificateDer<'static> {
        let stream = self
            .handshake(addr, name)
            .await
            .unwrap_or_else(|e| panic!("TLS handshake with {addr} for {name}: {e}"));
        peer_leaf(&stream)
    }

    /// The bytes of the ClientHello this client would send for `name`, for tests that send a
    /// part of one.
    pub fn client_hello(&self, name: &str) -> Vec<u8> {
        let server_name = ServerName::try_from(name.to_string()).unwrap();
        let mut connection =
            rustls::ClientConnection::new(Arc::clone(&self.config), server_name).unwrap();
        let mut bytes = Vec::new();
        while connection.wants_write() {
            connection.write_tls(&mut bytes).unwrap();
        }
        bytes
    }

    /// One GET of `path` for `name` on a new connection.
    pub async fn get(&self, addr: SocketAddr, name: &str, path: &str) -> TestResponse {
        self.connect(addr, name).await.get(path).await
    }
}

fn peer_leaf(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .expect("the server presented a certificate")
        .clone()
        .into_owned()
}

enum Sender {
    Http1(http1::SendRequest<Full<Bytes>>),
    Http2(http2::SendRequest<Full<Bytes>>),
}

/// One TLS connection carrying HTTP/1.1 or HTTP/2, as ALPN chose.
pub struct TlsConnection {
    /// The server's leaf certificate.
    pub peer_cert: CertificateDer<'static>,
    /// The protocol agreed by ALPN (`None`: none was).
    pub alpn: Option<String>,
    /// The host requests are for (`Host` / `:authority`).
    pub host: String,
    sender: Sender,
}

impl TlsConnection {
    async fn over(stream: TlsStream<TcpStream>, host: &str) -> TlsConnection {
        let peer_cert = peer_leaf(&stream);
        let alpn = stream
            .get_ref()
            .1
            .alpn_protocol()
            .map(|p| String::from_utf8_lossy(p).into_owned());
        let io = TokioIo::new(stream);
        let sender = if alpn.as_deref() == Some("h2") {
            let (sender, connection) = http2::handshake(TokioExecutor::new(), io).await.unwrap();
            tokio::spawn(connection);
            Sender::Http2(sender)
        } else {
            let (sender, connection) = http1::handshake(io).await.unwrap();
            tokio::spawn(connection);
            Sender::Http1(sender)
        };
        TlsConnection {
            peer_cert,
            alpn,
            host: host.to_string(),
            sender,
        }
    }

    /// GET `path` on this connection, read whole; panics on a failure to get an answer.
    pub async fn get(&mut self, path: &str) -> TestResponse {
        let what = format!("GET https://{}{path}", self.host);
        self.try_get(path)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"))
    }

    /// GET `path` on this connection; `Err` describes why no whole answer came.
    pub async fn try_get(&mut self, path: &str) -> Result<TestResponse, String> {
        let uri = format!("https://{}{path}", self.host);
        let host = self.host.clone();
        within(&format!("GET {uri}"), IO_TIMEOUT, async {
            let response = match &mut self.sender {
                Sender::Http1(sender) => {
                    sender.ready().await.map_err(|e| e.to_string())?;
                    let request = Request::get(path)
                        .header(http::header::HOST, host)
                        .body(Full::default())
                        .unwrap();
                    sender
                        .send_request(request)
                        .await
                        .map_err(|e| e.to_string())?
                }
                Sender::Http2(sender) => {
                    sender.ready().await.map_err(|e| e.to_string())?;
                    let request = Request::get(uri.as_str())
                        .version(Version::HTTP_2)
                        .body(Full::default())
                        .unwrap();
                    sender
                        .send_request(request)
                        .await
                        .map_err(|e| e.to_string())?
                }
            };
            let (head, body) = response.into_parts();
            let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
            Ok(TestResponse {
                status: head.status,
                version: head.version,
                headers: head.headers,
                body,
            })
        })
        .await
    }
}
