//! The configuration file as written: serde structs with `deny_unknown_fields`, every field
//! optional (defaults are applied during validation), sizes and durations still as text.

use serde::Deserialize;

pub use crate::node_control::RawNodeControl;
pub use crate::tls::{RawCertificate, RawClientTls, RawTls};

/// A size as written: a string with a unit (`"256MiB"`) or a bare number of bytes.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawSize {
    Bytes(u64),
    Text(String),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEdgeFile {
    pub edge: Option<RawNode>,
    pub server: Option<RawServer>,
    pub cache: Option<RawCache>,
    pub upstream: Option<RawUpstream>,
    pub admin: Option<RawAdmin>,
    pub shields: Option<RawShields>,
    pub control: Option<RawNodeControl>,
    pub tls: Option<RawTls>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawShields {
    pub origin_fallback: Option<bool>,
    pub failures_to_eject: Option<u64>,
    pub eject_for: Option<String>,
    pub bounded_load_percent: Option<u64>,
    #[serde(default)]
    pub members: Vec<RawShieldMember>,
    pub tls: Option<RawClientTls>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawShieldMember {
    pub id: Option<String>,
    pub url: Option<String>,
    pub weight: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub token: Option<String>,
    pub max_body_bytes: Option<RawSize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNode {
    pub id: Option<String>,
    pub region: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub listen: Option<String>,
    pub admin_listen: Option<String>,
    pub max_connections: Option<u64>,
    pub max_header_bytes: Option<RawSize>,
    pub header_read_timeout: Option<String>,
    pub shutdown_grace: Option<String>,
    pub h2_max_concurrent_streams: Option<u64>,
    pub h2_max_pending_accept_reset_streams: Option<u64>,
    pub h2_max_local_error_reset_streams: Option<u64>,
    pub worker_threads: Option<u64>,
    pub upgrade_socket: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCache {
    pub max_bytes: Option<RawSize>,
    pub max_object_bytes: Option<RawSize>,
    pub hit_for_miss_ttl: Option<String>,
    pub hit_for_miss_max_keys: Option<u64>,
    pub max_ranges: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub origin: Option<String>,
    pub connect_timeout: Option<String>,
    pub response_timeout: Option<String>,
    pub max_idle_per_host: Option<u64>,
    pub max_connections: Option<u64>,
    pub idle_timeout: Option<String>,
    pub source_address: Option<String>,
    pub tls: Option<RawClientTls>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawShieldFile {
    pub shield: Option<RawNode>,
    pub server: Option<RawServer>,
    pub cache: Option<RawCache>,
    pub admin: Option<RawAdmin>,
    pub origin: Option<RawOriginPool>,
    pub resolver: Option<RawResolver>,
    pub control: Option<RawNodeControl>,
    pub tls: Option<RawTls>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOriginPool {
    #[serde(default)]
    pub servers: Vec<String>,
    pub source_address: Option<String>,
    pub connect_timeout: Option<String>,
    pub response_timeout: Option<String>,
    pub max_idle_per_host: Option<u64>,
    pub idle_timeout: Option<String>,
    pub max_connections: Option<u64>,
    pub health_path: Option<String>,
    pub health_interval: Option<String>,
    pub healthy_after: Option<u64>,
    pub unhealthy_after: Option<u64>,
    pub eject_for: Option<String>,
    pub max_eject_for: Option<String>,
    pub retries: Option<u64>,
    pub retry_budget_percent: Option<u64>,
    pub tls: Option<RawClientTls>,
}

/// How the shield resolves the host names of its origin servers.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawResolver {
    pub nameservers: Option<Vec<String>>,
    pub min_ttl: Option<String>,
    pub max_ttl: Option<String>,
    pub negative_retry: Option<String>,
    pub timeout: Option<String>,
}
