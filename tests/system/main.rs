//! Verge's system tests, one binary: real edges, shields and control over real sockets on
//! loopback, and the `verge` binary itself (the `cli_*` modules).

#![allow(clippy::unwrap_used)]

mod access_log;
mod cache_rules;
mod cli_config;
mod cli_control;
mod cli_demo;
mod cli_reload;
mod cli_upgrade;
mod compression;
mod control_plane;
mod demo_replicas;
mod edge_admin;
mod edge_bad_input;
mod edge_cache_bounds;
mod edge_caching;
mod edge_coalescing;
mod edge_protocol;
mod edge_shields;
mod edge_shutdown;
mod edge_upstream_errors;
mod hardening_connections;
mod hardening_poisoning;
mod hardening_uploads;
mod monitoring;
mod node_reload;
mod process;
mod rfc9111_cache_status;
mod rfc9111_directives;
mod rfc9111_fill;
mod rfc9111_freshness;
mod rfc9111_invalidation;
mod rfc9111_purge;
mod rfc9111_stale;
mod rfc9111_validation;
mod rfc9111_vary_head_range;
mod shield_failover_stream;
mod shield_tier;
mod streamed_fill;
mod tiers;
mod tls_edge;
mod upstream_garbage;
