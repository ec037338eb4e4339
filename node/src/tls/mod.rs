//! TLS for cache nodes, with rustls on the `ring` provider:
//!
//! - [`acceptor`]: TLS termination on a listener (handshake timeout, plain HTTP answered in
//!   kind, handshake metrics);
//! - [`certs`]: certificates from PEM files, chosen by SNI, reloaded without a restart, and the
//!   server-side rustls configuration (versions, ALPN, resumption, client certificates);
//! - [`client`]: TLS towards `https://` upstreams (shields, origins), with a CA bundle or the
//!   system store, SNI and optional client certificates.
pub mod acceptor;
pub mod certs;
/// TLS towards `https://` upstreams; shared with control (its etcd client).
pub use verge_serve::tls_client as client;
mod der;
