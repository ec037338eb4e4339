//! TLS on a listener of control's (its node listener): one certificate, and — with a client
//! CA — mutual TLS, where a client without a certificate signed by that CA is refused in the
//! handshake. TLS 1.3 and 1.2 on the `ring` provider, HTTP/1.1 by ALPN.

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::ring;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::PrivateKeyDer;
use rustls::server::WebPkiClientVerifier;

use crate::tls_client::{client_chain, pem_reason, roots_from_file};

pub use rustls::ServerConfig;

/// The server configuration for `cert` and `key`, asking clients for a certificate signed by
/// `client_ca` when given. Reads the files now; errors name the file at fault.
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<Arc<ServerConfig>, String> {
    let provider = Arc::new(ring::default_provider());
    let chain = client_chain(cert).map_err(|e| e.to_string())?;
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        format!(
            "cannot read the key from {}: {}",
            key.display(),
            pem_reason(&e, "no PEM private key found")
        )
    })?;
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let roots = roots_from_file(ca).map_err(|e| e.to_string())?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| format!("client CA {}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, key_der).map_err(|e| {
        format!(
            "the certificate {} cannot be used with the key {}: {e}",
            cert.display(),
            key.display()
        )
    })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The certificate a client presented in the TLS handshake (its leaf), put into each of the
/// connection's requests by servers that ask for one.
#[derive(Debug, Clone)]
pub struct PeerCertificate(pub rustls::pki_types::CertificateDer<'static>);

impl PeerCertificate {
    /// The leaf of a finished handshake's client chain, if the client sent one.
    pub fn of(connection: &rustls::ServerConnection) -> Option<PeerCertificate> {
        connection
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|leaf| PeerCertificate(leaf.clone().into_owned()))
    }

    /// Whether the certificate names `name` as a DNS subject alternative name (the subject's
    /// common name does not count). A certificate that cannot be parsed names nothing.
    pub fn names(&self, name: &str) -> bool {
        let Ok(dns) = rustls::pki_types::ServerName::try_from(name) else {
            return false;
        };
        webpki::EndEntityCert::try_from(&self.0)
            .is_ok_and(|cert| cert.verify_is_valid_for_subject_name(&dns).is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate for `names`, with `common_name` as its subject.
    fn cert(names: &[&str], common_name: &str) -> PeerCertificate {
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        let key = rcgen::KeyPair::generate().expect("key");
        PeerCertificate(params.self_signed(&key).expect("cert").der().clone())
    }

    #[test]
    fn a_certificate_names_only_its_dns_alternative_names() {
        let s1 = cert(&["s1", "node_7"], "s1");
        assert!(s1.names("s1"));
        assert!(s1.names("node_7"));
        assert!(!s1.names("s2"));
        assert!(!s1.names("s1.example"));
        assert!(!s1.names(""));
        // The common name alone names nothing.
        assert!(!cert(&[], "s1").names("s1"));
        // A wildcard does not cover a one-label node id.
        let wildcard = cert(&["*.nodes.example"], "w");
        assert!(!wildcard.names("s1"));
        assert!(wildcard.names("s1.nodes.example"));
        // Bytes that are no certificate name nothing (and do not panic).
        let garbage = PeerCertificate(rustls::pki_types::CertificateDer::from(vec![0x30, 0x03, 1]));
        assert!(!garbage.names("s1"));
    }
}
