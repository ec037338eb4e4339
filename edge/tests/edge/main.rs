//! The edge crate's integration tests, one binary: real edges over real sockets.

#![allow(clippy::unwrap_used)]

mod control_client;
mod upstream_tls;
