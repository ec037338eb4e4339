//! The control crate's integration tests, one binary: a real control service over real sockets
//! (admin API, node streams, reload, geo steering by DNS, GeoIP and HTTP).

#![allow(clippy::unwrap_used)]

mod api;
mod geo_dns;
mod geo_geoip;
mod geo_http;
mod geo_support;
mod node_tls;
mod reload;
mod replicas;
mod status_page;
mod streams;
mod support;
