//! Test certificates: a CA made with rcgen and leaves it signs, written as PEM files into a
//! temporary directory.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tempfile::TempDir;
use verge_config::{CertificateFiles, TlsServerConfig, TlsVersion, UnknownSni};

pub(crate) struct Pki {
    pub(crate) dir: TempDir,
    ca_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

/// A client certificate and key in memory.
pub(crate) struct ClientIdentity {
    pub(crate) chain: Vec<CertificateDer<'static>>,
    pub(crate) key: PrivateKeyDer<'static>,
}

impl Pki {
    pub(crate) fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "verge test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::CrlSign,
        ];
        let key = KeyPair::generate().unwrap();
        let ca = params.self_signed(&key).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        Pki {
            dir,
            ca_der: ca.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub(crate) fn ca_path(&self) -> PathBuf {
        self.path("ca.pem")
    }

    pub(crate) fn ca_der(&self) -> CertificateDer<'static> {
        self.ca_der.clone()
    }

    pub(crate) fn write_file(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    /// `<stem>.pem` and `<stem>.key`, valid from yesterday for a year.
    pub(crate) fn leaf(&self, stem: &str, names: &[&str]) -> CertificateFiles {
        self.write_leaf(stem, names, Validity::AroundNow)
    }

    /// `<stem>.pem` and `<stem>.key`, valid between two dates (year, month, day).
    pub(crate) fn leaf_valid(
        &self,
        stem: &str,
        names: &[&str],
        not_before: (i32, u8, u8),
        not_after: (i32, u8, u8),
    ) -> CertificateFiles {
        self.write_leaf(stem, names, Validity::Dates(not_before, not_after))
    }

    fn write_leaf(&self, stem: &str, names: &[&str], validity: Validity) -> CertificateFiles {
        let (cert, key) = self.sign(names, validity, false);
        CertificateFiles {
            cert: self.write_file(&format!("{stem}.pem"), &cert),
            key: self.write_file(&format!("{stem}.key"), &key),
        }
    }

    /// A client certificate the CA signed.
    pub(crate) fn client(&self, name: &str) -> ClientIdentity {
        let (cert, key) = self.sign(&[name], Validity::AroundNow, true);
        ClientIdentity {
            chain: vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
                KeyPair::from_pem(&key).unwrap().serialize_der(),
            )),
        }
    }

    fn sign(&self, names: &[&str], validity: Validity, client: bool) -> (String, String) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        match validity {
            Validity::AroundNow => {
                let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
                let now = rcgen::date_time_ymd(1970, 1, 1) + since_epoch;
                params.not_before = now - Duration::from_secs(86_400);
                params.not_after = now + Duration::from_secs(365 * 86_400);
            }
            Validity::Dates((y0, m0, d0), (y1, m1, d1)) => {
                params.not_before = rcgen::date_time_ymd(y0, m0, d0);
                params.not_after = rcgen::date_time_ymd(y1, m1, d1);
            }
        }
        params.extended_key_usages = vec![if client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

enum Validity {
    AroundNow,
    Dates((i32, u8, u8), (i32, u8, u8)),
}

/// A `[tls]` table with the defaults and these certificates.
pub(crate) fn tls_config(certificates: Vec<CertificateFiles>) -> TlsServerConfig {
    TlsServerConfig {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        certificates,
        default_certificate: None,
        unknown_sni: UnknownSni::Default,
        min_version: TlsVersion::V1_2,
        handshake_timeout: Duration::from_secs(10),
        session_cache_entries: 64,
        session_tickets: true,
        watch_interval: Duration::ZERO,
        client_ca: None,
    }
}

/// The rustls client side of the tests: trusts the test CA, offers h2 and http/1.1.
pub(crate) fn client_config(
    pki: &Pki,
    identity: Option<ClientIdentity>,
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca_der()).unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let mut config = match identity {
        Some(id) => builder.with_client_auth_cert(id.chain, id.key).unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

/// The series of `metric` that have a label with value `label_value`.
fn series(
    registry: &prometheus::Registry,
    metric: &str,
    label_value: &str,
) -> Vec<prometheus::proto::Metric> {
    registry
        .gather()
        .iter()
        .filter(|family| family.name() == metric)
        .flat_map(|family| family.get_metric().iter())
        .filter(|m| m.get_label().iter().any(|l| l.value() == label_value))
        .cloned()
        .collect()
}

/// The sum of the counters of `metric` that have a label with value `label_value`.
pub(crate) fn counter(registry: &prometheus::Registry, metric: &str, label_value: &str) -> f64 {
    series(registry, metric, label_value)
        .iter()
        .map(|m| m.get_counter().get_value())
        .sum()
}

/// True when `metric` has a series with a label of value `label_value`.
pub(crate) fn has_series(registry: &prometheus::Registry, metric: &str, label_value: &str) -> bool {
    !series(registry, metric, label_value).is_empty()
}
