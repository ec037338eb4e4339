//! The shield crate's integration tests, one binary: real shields in front of origins found by
//! DNS and reached over TLS, and lower shields in front of upper ones (`[parents]`).

#![allow(clippy::unwrap_used)]

mod dns_origin;
mod origin_tls;
mod parents;
