//! TLS settings: the `[tls]` table of a cache node (HTTPS listeners and their certificates) and
//! the client side used towards `https://` upstreams (`[upstream.tls]`, `[shields.tls]`,
//! `[origin.tls]`). Validation is pure: files are named here and read by the node, which
//! reports what is wrong with their contents (unreadable, malformed, expired).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::error::Collector;
use crate::field::{count, duration};

/// How a node answers a client whose SNI names no configured certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownSni {
    /// Present the default certificate (the client's name check decides).
    Default,
    /// Abort the handshake with an `unrecognized_name` alert.
    Refuse,
}

impl UnknownSni {
    pub fn as_str(self) -> &'static str {
        match self {
            UnknownSni::Default => "default",
            UnknownSni::Refuse => "refuse",
        }
    }
}

/// The lowest TLS version accepted. Only 1.2 and 1.3 exist here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    V1_2,
    V1_3,
}

impl TlsVersion {
    pub fn as_str(self) -> &'static str {
        match self {
            TlsVersion::V1_2 => "1.2",
            TlsVersion::V1_3 => "1.3",
        }
    }
}

/// One certificate chain and its private key, as PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateFiles {
    /// The leaf certificate first, then its intermediates.
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The `[tls]` table: HTTPS listeners and the certificates they present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsServerConfig {
    /// HTTPS listeners (HTTP/1.1 and HTTP/2 by ALPN).
    pub listen: Vec<SocketAddr>,
    /// Certificates, chosen by SNI from the names each one covers.
    pub certificates: Vec<CertificateFiles>,
    /// A host name the default certificate covers; `None`: the first certificate.
    pub default_certificate: Option<String>,
    pub unknown_sni: UnknownSni,
    pub min_version: TlsVersion,
    /// A client that has not finished its handshake by then is disconnected.
    pub handshake_timeout: Duration,
    /// Sessions remembered for resumption by session id (TLS 1.2) and stateful tickets; 0: off.
    pub session_cache_entries: usize,
    /// Stateless session tickets (encrypted with a key rotated in memory).
    pub session_tickets: bool,
    /// How often the certificate files are checked for changes; zero: only on reload.
    pub watch_interval: Duration,
    /// When set, clients must present a certificate signed by this CA (mutual TLS).
    pub client_ca: Option<PathBuf>,
}

/// How a node connects to an `https://` upstream.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClientTlsConfig {
    /// CA certificates (PEM) to verify the upstream against; `None`: the system store.
    pub ca_file: Option<PathBuf>,
    /// A client certificate chain and key presented to the upstream (mutual TLS).
    pub client_cert: Option<CertificateFiles>,
    /// The name sent as SNI and verified in the certificate; `None`: the URL's host.
    pub server_name: Option<String>,
}

pub mod defaults {
    pub const HANDSHAKE_TIMEOUT: &str = "10s";
    pub const MIN_VERSION: &str = "1.2";
    pub const UNKNOWN_SNI: &str = "default";
    pub const SESSION_CACHE_ENTRIES: u64 = 4096;
    pub const WATCH_INTERVAL: &str = "5s";
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    #[serde(default)]
    pub listen: Vec<String>,
    #[serde(default)]
    pub certificates: Vec<RawCertificate>,
    pub default_certificate: Option<String>,
    pub unknown_sni: Option<String>,
    pub min_version: Option<String>,
    pub handshake_timeout: Option<String>,
    pub session_cache_entries: Option<u64>,
    pub session_tickets: Option<bool>,
    pub watch_interval: Option<String>,
    pub client_ca: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCertificate {
    pub cert: Option<String>,
    pub key: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClientTls {
    pub ca_file: Option<String>,
    pub client_cert: Option<String>,
    pub client_key: Option<String>,
    pub server_name: Option<String>,
}

fn path(c: &mut Collector, at: &str, value: Option<&str>) -> Option<PathBuf> {
    match value {
        None => {
            c.push(at, "missing: a path to a PEM file");
            None
        }
        Some("") => {
            c.push(at, "must not be empty");
            None
        }
        Some(text) => Some(PathBuf::from(text)),
    }
}

fn optional_path(c: &mut Collector, at: &str, value: Option<&str>) -> Option<Option<PathBuf>> {
    match value {
        None => Some(None),
        Some(_) => path(c, at, value).map(Some),
    }
}

/// Validates `[tls]`; `None` in, `Some(None)` out: no HTTPS listener.
pub(crate) fn validate_tls(
    c: &mut Collector,
    raw: Option<RawTls>,
) -> Option<Option<TlsServerConfig>> {
    let Some(raw) = raw else {
        return Some(None);
    };
    let mut complete = true;
    if raw.listen.is_empty() {
        c.push(
            "tls.listen",
            "missing: at least one address for HTTPS, e.g. [\"127.0.0.1:8443\"]",
        );
        complete = false;
    }
    let mut listen = Vec::with_capacity(raw.listen.len());
    for (i, text) in raw.listen.iter().enumerate() {
        match text.parse::<SocketAddr>() {
            Ok(addr) if listen.contains(&addr) && addr.port() != 0 => {
                c.push(
                    &format!("tls.listen[{i}]"),
                    format!("{addr} is listed twice"),
                );
                complete = false;
            }
            Ok(addr) => listen.push(addr),
            Err(_) => {
                c.push(
                    &format!("tls.listen[{i}]"),
                    format!("invalid socket address {text:?}: expected IP:PORT"),
                );
                complete = false;
            }
        }
    }
    if raw.certificates.is_empty() {
        c.push(
            "tls.certificates",
            "missing: at least one [[tls.certificates]] with cert and key",
        );
        complete = false;
    }
    if raw.certificates.len() > 1024 {
        c.push(
            "tls.certificates",
            format!(
                "{} certificates given; at most 1024",
                raw.certificates.len()
            ),
        );
        complete = false;
    }
    let mut certificates = Vec::with_capacity(raw.certificates.len());
    for (i, cert) in raw.certificates.iter().enumerate() {
        let at = |key: &str| format!("tls.certificates[{i}].{key}");
        let pair = (
            path(c, &at("cert"), cert.cert.as_deref()),
            path(c, &at("key"), cert.key.as_deref()),
        );
        match pair {
            (Some(cert), Some(key)) => certificates.push(CertificateFiles { cert, key }),
            _ => complete = false,
        }
    }
    let default_certificate = match raw.default_certificate {
        Some(name) if name.is_empty() || name.contains(char::is_whitespace) => {
            c.push(
                "tls.default_certificate",
                format!("{name:?} is not a host name"),
            );
            complete = false;
            None
        }
        other => other.map(|n| n.to_ascii_lowercase()),
    };
    let unknown_sni = match raw.unknown_sni.as_deref().unwrap_or(defaults::UNKNOWN_SNI) {
        "default" => Some(UnknownSni::Default),
        "refuse" => Some(UnknownSni::Refuse),
        other => {
            c.push(
                "tls.unknown_sni",
                format!("{other:?}: expected \"default\" or \"refuse\""),
            );
            None
        }
    };
    let min_version = match raw.min_version.as_deref().unwrap_or(defaults::MIN_VERSION) {
        "1.2" => Some(TlsVersion::V1_2),
        "1.3" => Some(TlsVersion::V1_3),
        other => {
            c.push(
                "tls.min_version",
                format!("{other:?}: expected \"1.2\" or \"1.3\" (older versions are not offered)"),
            );
            None
        }
    };
    let handshake_timeout = duration(
        c,
        "tls.handshake_timeout",
        raw.handshake_timeout.as_deref(),
        defaults::HANDSHAKE_TIMEOUT,
        Duration::from_millis(10),
    );
    let session_cache = count(
        c,
        "tls.session_cache_entries",
        raw.session_cache_entries,
        defaults::SESSION_CACHE_ENTRIES,
        (0, 10_000_000),
    );
    let watch_interval = duration(
        c,
        "tls.watch_interval",
        raw.watch_interval.as_deref(),
        defaults::WATCH_INTERVAL,
        Duration::ZERO,
    );
    let client_ca = optional_path(c, "tls.client_ca", raw.client_ca.as_deref());
    if !complete {
        return None;
    }
    Some(Some(TlsServerConfig {
        listen,
        certificates,
        default_certificate,
        unknown_sni: unknown_sni?,
        min_version: min_version?,
        handshake_timeout: handshake_timeout?,
        session_cache_entries: usize::try_from(session_cache?).ok()?,
        session_tickets: raw.session_tickets.unwrap_or(true),
        watch_interval: watch_interval?,
        client_ca: client_ca?,
    }))
}

/// Validates a client TLS table found at `section` (e.g. `upstream.tls`).
pub(crate) fn validate_client_tls(
    c: &mut Collector,
    raw: Option<RawClientTls>,
    section: &str,
) -> Option<ClientTlsConfig> {
    let Some(raw) = raw else {
        return Some(ClientTlsConfig::default());
    };
    let at = |key: &str| format!("{section}.{key}");
    let ca_file = optional_path(c, &at("ca_file"), raw.ca_file.as_deref());
    let client_cert = match (raw.client_cert.as_deref(), raw.client_key.as_deref()) {
        (None, None) => Some(None),
        (Some(_), None) => {
            c.push(&at("client_key"), "missing: client_cert needs its key");
            None
        }
        (None, Some(_)) => {
            c.push(
                &at("client_cert"),
                "missing: client_key needs its certificate",
            );
            None
        }
        (cert, key) => match (
            path(c, &at("client_cert"), cert),
            path(c, &at("client_key"), key),
        ) {
            (Some(cert), Some(key)) => Some(Some(CertificateFiles { cert, key })),
            _ => None,
        },
    };
    let server_name = match raw.server_name {
        Some(name)
            if name.is_empty() || name.contains(|ch: char| ch.is_whitespace() || ch == '/') =>
        {
            c.push(&at("server_name"), format!("{name:?} is not a host name"));
            None
        }
        other => Some(other),
    };
    Some(ClientTlsConfig {
        ca_file: ca_file?,
        client_cert: client_cert?,
        server_name: server_name?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls(text: &str) -> Result<Option<TlsServerConfig>, crate::ConfigErrors> {
        let raw: RawTls = toml::from_str(text).expect("test TOML parses");
        let mut c = Collector::default();
        let value = validate_tls(&mut c, Some(raw));
        c.finish(value)
    }

    #[test]
    fn a_full_tls_table_is_read_with_defaults_filled_in() {
        let cfg = tls(r#"
            listen = ["127.0.0.1:8443", "[::1]:8443"]
            [[certificates]]
            cert = "a.pem"
            key = "a.key"
            [[certificates]]
            cert = "b.pem"
            key = "b.key"
        "#)
        .expect("valid")
        .expect("present");
        assert_eq!(cfg.listen.len(), 2);
        assert_eq!(cfg.certificates[1].key, PathBuf::from("b.key"));
        assert_eq!(cfg.unknown_sni, UnknownSni::Default);
        assert_eq!(cfg.min_version, TlsVersion::V1_2);
        assert_eq!(cfg.handshake_timeout, Duration::from_secs(10));
        assert!(cfg.session_tickets);
        assert_eq!(cfg.client_ca, None);
    }

    #[test]
    fn every_tls_mistake_is_reported_with_its_key_path() {
        let errors = tls(r#"
            listen = ["nowhere"]
            unknown_sni = "guess"
            min_version = "1.0"
            handshake_timeout = "soon"
            [[certificates]]
            cert = "a.pem"
        "#)
        .expect_err("invalid");
        for path in [
            "tls.listen[0]",
            "tls.unknown_sni",
            "tls.min_version",
            "tls.handshake_timeout",
            "tls.certificates[0].key",
        ] {
            assert!(errors.mentions(path), "{path} not in {errors}");
        }
    }

    #[test]
    fn a_tls_table_needs_a_listener_and_a_certificate() {
        let errors = tls("").expect_err("empty");
        assert!(errors.mentions("tls.listen"), "{errors}");
        assert!(errors.mentions("tls.certificates"), "{errors}");
    }

    #[test]
    fn client_tls_wants_certificate_and_key_together() {
        let raw: RawClientTls = toml::from_str("client_cert = \"c.pem\"").expect("parses");
        let mut c = Collector::default();
        let value = validate_client_tls(&mut c, Some(raw), "shields.tls");
        let errors = c.finish(value).expect_err("half a pair");
        assert!(errors.mentions("shields.tls.client_key"), "{errors}");

        let raw: RawClientTls = toml::from_str(
            "ca_file = \"ca.pem\"\nclient_cert = \"c.pem\"\nclient_key = \"c.key\"\nserver_name = \"shield.internal\"",
        )
        .expect("parses");
        let mut c = Collector::default();
        let value = validate_client_tls(&mut c, Some(raw), "shields.tls");
        let cfg = c.finish(value).expect("valid");
        assert_eq!(cfg.ca_file, Some(PathBuf::from("ca.pem")));
        assert_eq!(cfg.server_name.as_deref(), Some("shield.internal"));
        assert!(cfg.client_cert.is_some());
    }
}
