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
