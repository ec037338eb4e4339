//! The shield crate's integration tests, one binary: real shields in front of origins found by
//! DNS and reached over TLS.

#![allow(clippy::unwrap_used)]

mod dns_origin;
mod origin_tls;
