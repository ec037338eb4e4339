//! The certificates a node's HTTPS listeners present, and the server side of TLS:
//!
//! - here: [`load_certificate`] reads one PEM chain and key and checks them before they serve
//!   (key matches, valid now, names present), with [`TlsError`] naming the file at fault;
//! - [`CertSet`]: every configured certificate, chosen by SNI (exact name, then a wildcard);
//! - [`CertResolver`]: the set rustls asks during handshakes, swapped whole on reload;
//! - [`server_config`]: the rustls server configuration (versions, ALPN, resumption, client
//!   certificates);
//! - [`TlsMetrics`]: handshakes, certificate expiry and reloads, on a registry passed in;
//! - [`spawn_watcher`]: reloads the certificates when their files change.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use verge_config::CertificateFiles;

use super::der::{self, format_utc};

mod metrics;
mod resolver;
mod server_config;
mod set;
#[cfg(test)]
mod testing;
mod watch;

pub use metrics::{version_label, HandshakeResult, TlsMetrics};
pub use resolver::{CertReloadOutcome, CertResolver, CertificateSummary};
pub use server_config::{is_unknown_sni_refusal, server_config};
pub use set::CertSet;
pub use watch::spawn_watcher;

/// Why certificates or the server TLS configuration could not be put in place. Each message
/// names the file at fault and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {}: {reason}", path.display())]
    Unreadable { path: PathBuf, reason: String },
    #[error("{}: no certificate found (expected a PEM \"BEGIN CERTIFICATE\" section)", path.display())]
    NoCertificate { path: PathBuf },
    #[error("{}: malformed certificate: {reason}", path.display())]
    MalformedCertificate { path: PathBuf, reason: String },
    #[error("{}: no private key found (expected a PEM \"BEGIN ... PRIVATE KEY\" section)", path.display())]
    NoPrivateKey { path: PathBuf },
    #[error("{}: unusable private key: {reason}", path.display())]
    InvalidKey { path: PathBuf, reason: String },
    #[error("{} does not match the certificate in {}", key.display(), cert.display())]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("{}: certificate expired on {}", path.display(), format_utc(*not_after))]
    Expired {
        path: PathBuf,
        not_after: SystemTime,
    },
    #[error("{}: certificate is not valid before {}", path.display(), format_utc(*not_before))]
    NotYetValid {
        path: PathBuf,
        not_before: SystemTime,
    },
    #[error("{}: certificate names no host (subjectAltName has no DNS name or IP)", path.display())]
    NoNames { path: PathBuf },
    #[error("tls.certificates is empty: at least one certificate is needed")]
    NoCertificates,
    /// A problem with the certificate at `tls.certificates[index]`.
    #[error("tls.certificates[{index}]: {error}")]
    At { index: usize, error: Box<TlsError> },
    #[error("tls.default_certificate {name:?} is covered by no certificate")]
    DefaultNotCovered { name: String },
    #[error("client CA {}: {reason}", path.display())]
    ClientCa { path: PathBuf, reason: String },
    #[error("TLS configuration: {0}")]
    Config(String),
    /// Several problems, all reported at once.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Several(Vec<TlsError>),
}

impl TlsError {
    /// The file at fault, when there is one (the key file for a mismatch).
    pub fn path(&self) -> Option<&Path> {
        match self {
            TlsError::Unreadable { path, .. }
            | TlsError::NoCertificate { path }
            | TlsError::MalformedCertificate { path, .. }
            | TlsError::NoPrivateKey { path }
            | TlsError::InvalidKey { path, .. }
            | TlsError::Expired { path, .. }
            | TlsError::NotYetValid { path, .. }
            | TlsError::NoNames { path }
            | TlsError::ClientCa { path, .. } => Some(path),
            TlsError::KeyMismatch { key, .. } => Some(key),
            TlsError::At { error, .. } => error.path(),
            TlsError::NoCertificates
            | TlsError::DefaultNotCovered { .. }
            | TlsError::Config(_)
            | TlsError::Several(_) => None,
        }
    }

    /// One error as is, several as [`TlsError::Several`]; `None` when there is none.
    pub(crate) fn collect(mut errors: Vec<TlsError>) -> Option<TlsError> {
        match errors.len() {
            0 => None,
            1 => errors.pop(),
            _ => Some(TlsError::Several(errors)),
        }
    }
}

/// A certificate chain and its key, checked and ready to serve.
#[derive(Debug, Clone)]
pub struct LoadedCertificate {
    /// The host names it covers, lower-case, as written (`*.example.com` stays a wildcard),
    /// then its IP addresses as text.
    pub names: Vec<String>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    /// What rustls presents: the chain and the signing key.
    pub key: Arc<CertifiedKey>,
}

impl LoadedCertificate {
    /// The name it is known by in metrics and logs: its first name.
    pub fn label(&self) -> &str {
        self.names.first().map_or("", String::as_str)
    }

    /// True when this certificate is valid for `name` (exactly, or by a wildcard covering
    /// one left-most label). Case and a trailing dot do not matter.
    pub fn covers(&self, name: &str) -> bool {
        let name = normalize_name(name);
        self.names
            .iter()
            .any(|own| *own == name || covering_wildcard(&name).is_some_and(|w| *own == w))
    }
}

/// The wildcard that covers `name`: `www.example.com` → `*.example.com`.
pub(crate) fn covering_wildcard(name: &str) -> Option<String> {
    let (label, base) = name.split_once('.')?;
    if label.is_empty() || base.is_empty() || label == "*" {
        return None;
    }
    Some(format!("*.{base}"))
}

/// Lower-case, without one trailing dot.
pub(crate) fn normalize_name(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

/// Reads and checks one certificate chain (leaf first) and its private key.
///
/// Refused: unreadable files, no certificate or key, a key that is not the certificate's, a
/// leaf that is not valid at `now`, or one that names no host.
pub fn load_certificate(
    files: &CertificateFiles,
    now: SystemTime,
) -> Result<LoadedCertificate, TlsError> {
    let chain = read_chain(&files.cert)?;
    let Some(leaf_der) = chain.first() else {
        return Err(TlsError::NoCertificate {
            path: files.cert.clone(),
        });
    };
    let leaf = der::parse_leaf(leaf_der).map_err(|e| TlsError::MalformedCertificate {
        path: files.cert.clone(),
        reason: e.to_string(),
    })?;
    if now < leaf.not_before {
        return Err(TlsError::NotYetValid {
            path: files.cert.clone(),
            not_before: leaf.not_before,
        });
    }
    if now > leaf.not_after {
        return Err(TlsError::Expired {
            path: files.cert.clone(),
            not_after: leaf.not_after,
        });
    }
    let mut names = leaf.dns_names;
    names.extend(leaf.ip_addresses.iter().map(ToString::to_string));
    if names.is_empty() {
        return Err(TlsError::NoNames {
            path: files.cert.clone(),
        });
    }

    let key = read_key(&files.key)?;
    let signing_key =
        rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| TlsError::InvalidKey {
            path: files.key.clone(),
            reason: e.to_string(),
        })?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            return Err(TlsError::KeyMismatch {
                cert: files.cert.clone(),
                key: files.key.clone(),
            })
        }
        // The ring signing keys always know their public key; should one not, the
        // handshake's own signature check still catches a mismatch.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(e) => {
            return Err(TlsError::MalformedCertificate {
                path: files.cert.clone(),
                reason: e.to_string(),
            })
        }
    }
    Ok(LoadedCertificate {
        names,
        not_before: leaf.not_before,
        not_after: leaf.not_after,
        cert_path: files.cert.clone(),
        key_path: files.key.clone(),
        key: Arc::new(certified),
    })
}

fn read_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::Unreadable {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Every certificate in a PEM file, in order.
pub(crate) fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read_file(path)?;
    let chain = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::MalformedCertificate {
            path: path.to_path_buf(),
            reason: format!("bad PEM: {e}"),
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(chain)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read_file(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsError::NoPrivateKey {
            path: path.to_path_buf(),
        },
        other => TlsError::InvalidKey {
            path: path.to_path_buf(),
            reason: format!("bad PEM: {other}"),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::testing::Pki;
    use super::*;

    #[test]
    fn a_good_certificate_loads_with_its_names_and_dates() {
        let pki = Pki::new();
        let files = pki.leaf("a", &["A.test", "*.wild.test", "192.0.2.1"]);
        let cert = load_certificate(&files, SystemTime::now()).unwrap();
        assert_eq!(cert.names, vec!["a.test", "*.wild.test", "192.0.2.1"]);
        assert_eq!(cert.label(), "a.test");
        assert_eq!(cert.cert_path, files.cert);
        assert!(cert.not_after > SystemTime::now());
        assert!(cert.covers("A.TEST."));
        assert!(cert.covers("x.wild.test"));
        assert!(!cert.covers("wild.test"));
        assert!(!cert.covers("x.y.wild.test"));
    }

    /// Why the files `make` writes cannot be loaded now, and that said in words.
    fn refusal(make: impl FnOnce(&Pki) -> CertificateFiles) -> (TlsError, String) {
        let error = load_certificate(&make(&Pki::new()), SystemTime::now()).unwrap_err();
        let message = error.to_string();
        (error, message)
    }

    #[test]
    fn an_expired_certificate_is_refused_naming_the_date() {
        let (error, message) =
            refusal(|pki| pki.leaf_valid("old", &["old.test"], (2000, 1, 1), (2001, 2, 3)));
        assert!(matches!(error, TlsError::Expired { .. }), "{error:?}");
        assert!(message.contains("expired on 2001-02-03"), "{message}");
        assert!(message.contains("old.pem"), "{message}");
    }

    #[test]
    fn a_certificate_not_yet_valid_is_refused_naming_the_date() {
        let (error, message) =
            refusal(|pki| pki.leaf_valid("new", &["new.test"], (2090, 5, 6), (2099, 1, 1)));
        assert!(matches!(error, TlsError::NotYetValid { .. }), "{error:?}");
        assert!(message.contains("not valid before 2090-05-06"), "{message}");
    }

    #[test]
    fn a_key_that_is_not_the_certificates_is_refused() {
        let pki = Pki::new();
        let a = pki.leaf("a", &["a.test"]);
        let b = pki.leaf("b", &["b.test"]);
        let files = CertificateFiles {
            cert: a.cert.clone(),
            key: b.key.clone(),
        };
        let error = load_certificate(&files, SystemTime::now()).unwrap_err();
        assert_eq!(
            error,
            TlsError::KeyMismatch {
                cert: a.cert,
                key: b.key
            }
        );
        assert!(
            error.to_string().contains("b.key does not match"),
            "{error}"
        );
    }

    #[test]
    fn garbage_and_missing_files_are_refused_with_the_file_named() {
        let pki = Pki::new();
        let good = pki.leaf("good", &["good.test"]);
        let garbage = pki.write_file("garbage.pem", "this is not PEM at all\n\x00\x01");
        let broken = pki.write_file(
            "broken.pem",
            "-----BEGIN CERTIFICATE-----\n!!!notbase64!!!\n-----END CERTIFICATE-----\n",
        );
        let bad_der = pki.write_file(
            "bad-der.pem",
            "-----BEGIN CERTIFICATE-----\nMAMCAQE=\n-----END CERTIFICATE-----\n",
        );
        let missing = pki.path("missing.pem");
        let now = SystemTime::now();
        let load = |cert: &PathBuf, key: &PathBuf| {
            load_certificate(
                &CertificateFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                },
                now,
            )
            .unwrap_err()
        };
        let cases = [
            (&garbage, &good.key, "NoCertificate", &garbage),
            (&broken, &good.key, "MalformedCertificate", &broken),
            (&bad_der, &good.key, "MalformedCertificate", &bad_der),
            (&missing, &good.key, "Unreadable", &missing),
            (&good.cert, &garbage, "NoPrivateKey", &garbage),
            // A certificate where the key should be.
            (&good.cert, &good.cert, "NoPrivateKey", &good.cert),
            (&good.cert, &missing, "Unreadable", &missing),
        ];
        for (cert, key, kind, at_fault) in cases {
            let error = load(cert, key);
            assert!(format!("{error:?}").starts_with(kind), "{kind}: {error:?}");
            assert_eq!(error.path(), Some(at_fault.as_path()), "{error}");
        }
        let message = load(&missing, &good.key).to_string();
        assert!(
            message.starts_with("cannot read ") && message.contains("missing.pem"),
            "{message}"
        );
    }

    #[test]
    fn a_certificate_without_names_is_refused() {
        let pki = Pki::new();
        let files = pki.leaf("nameless", &[]);
        let error = load_certificate(&files, SystemTime::now()).unwrap_err();
        assert!(matches!(error, TlsError::NoNames { .. }), "{error:?}");
    }
}
