//! The tables every cache node has, whatever its role: its identity (`[edge]` or `[shield]`),
//! `[server]`, `[cache]`, `[admin]`, `[tls]` and `[control]`. Edges and shields validate them
//! here, with one validator, and add their own upstream tables.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::access_log::{validate_access_log, AccessLogConfig};
use crate::compression::{validate_compression, CompressionConfig};
use crate::error::Collector;
use crate::field::{count, duration, size, socket_addr};
use crate::ids::{NodeId, RegionId};
use crate::node_control::{validate_node_control, NodeControlConfig, RawNodeControl};
use crate::raw::{RawAdmin, RawCache, RawNode, RawServer};
use crate::rules::{validate_rules, RuleSet};
use crate::tls::RawTls;
use crate::tls::{validate_tls, TlsServerConfig};
use crate::units::ByteSize;
use crate::upstream::UpstreamConfig;
use crate::wire::NodeRole;

/// Listeners and per-connection limits shared by every cache node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Data-plane listener (HTTP/1.1 and cleartext HTTP/2).
    pub listen: SocketAddr,
    /// Admin listener (`/metrics`, `/healthz`), kept apart from client traffic.
    pub admin_listen: SocketAddr,
    /// Accepted connections beyond this wait in the kernel backlog.
    pub max_connections: usize,
    /// Largest request head accepted; larger heads are answered 431.
    pub max_header_bytes: ByteSize,
    /// How long a client may take to send a request head.
    pub header_read_timeout: Duration,
    /// How long in-flight requests may take to finish after a shutdown signal.
    pub shutdown_grace: Duration,
    pub h2_max_concurrent_streams: u32,
    /// HTTP/2 streams a client may open and reset before the server has accepted them; past
    /// this the connection is closed (the rapid-reset defence).
    pub h2_max_pending_accept_reset_streams: usize,
    /// HTTP/2 streams the server may reset because of client protocol errors before it closes
    /// the connection.
    pub h2_max_local_error_reset_streams: usize,
    /// A Unix socket where this process hands its listening sockets to a successor (and where a
    /// new process asks for them); `None`: no zero-downtime upgrade.
    pub upgrade_socket: Option<PathBuf>,
    /// Threads serving requests; 0 means one per core. With one, a single-threaded scheduler
    /// is used, which costs less per request than the work-stealing one.
    pub worker_threads: usize,
    /// Whether a well-formed `X-Request-Id` from the client is kept rather than replaced: off
    /// on edges (clients could pick ids), on for shields (their clients are edges).
    pub trust_request_id: bool,
    /// How long a connection may stay open with no request in flight (an HTTP/1.1 keep-alive
    /// connection between requests, an HTTP/2 connection without streams); it is then closed,
    /// HTTP/2 with a GOAWAY. A connection's first request must also arrive within
    /// `header_read_timeout` of the accept (after the TLS handshake, if any).
    pub idle_timeout: Duration,
    /// Connections one client address may hold open at once; more are closed at accept.
    pub max_connections_per_address: usize,
    /// Requests one client address may have waiting on the upstream at once (misses and
    /// passes); more are answered 429.
    pub max_upstream_requests_per_address: usize,
    /// What happens to request fields that ask a server to use another host, URL, scheme or
    /// method than the request's own (`X-Forwarded-Host`, `X-Original-URL`, ...).
    pub override_headers: OverrideHeaders,
    /// Request bodies up to this size are read whole before an upstream connection is taken;
    /// larger ones stream once this much has arrived.
    pub request_body_buffer: ByteSize,
    /// What every request body being buffered may hold together; past it, bodies stream on
    /// from what they have read.
    pub request_body_buffer_total: ByteSize,
    /// Largest request body accepted; larger ones are answered 413.
    pub max_request_body: ByteSize,
    /// How long a request body may go without a byte arriving before it is given up (408).
    pub request_body_timeout: Duration,
    /// Slowest average rate, in bytes per second, a request body may arrive at beyond
    /// `request_body_timeout`'s allowance (408 when slower).
    pub request_body_min_rate: ByteSize,
    /// How long a client may take to accept the next part of a response streamed from the
    /// upstream; past it the response is abandoned and its upstream connection freed.
    pub send_timeout: Duration,
    /// `[access_log]`; `None`: no access log. Kept with the server's settings because every
    /// role has it and it is reloaded with them.
    pub access_log: Option<AccessLogConfig>,
}

/// What a node does with request fields that override the request's host, URL, scheme or
/// method: the cache keys on the request itself, so an origin that honoured one of them
/// would answer a different request than the one stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverrideHeaders {
    /// Removed before the request goes upstream (the default).
    Strip,
    /// The request is answered 400.
    Refuse,
    /// Sent upstream as they came (only for origins known to ignore them).
    Forward,
}

impl OverrideHeaders {
    /// The request fields this applies to, lowercase.
    pub const NAMES: [&'static str; 9] = [
        "x-forwarded-host",
        "x-host",
        "x-forwarded-server",
        "x-forwarded-scheme",
        "x-original-url",
        "x-rewrite-url",
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
    ];

    fn parse(text: &str) -> Result<OverrideHeaders, String> {
        match text {
            "strip" => Ok(OverrideHeaders::Strip),
            "refuse" => Ok(OverrideHeaders::Refuse),
            "forward" => Ok(OverrideHeaders::Forward),
            other => Err(format!(
                "unknown value {other:?}: expected \"strip\", \"refuse\" or \"forward\""
            )),
        }
    }
}

/// The cache engine's bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConfig {
    /// Bound on the cache's memory: response heads plus bodies.
    pub max_bytes: ByteSize,
    /// Larger responses stream through without being stored.
    pub max_object_bytes: ByteSize,
    /// A fill of a longer body answers as it reads; a shorter one is read whole first.
    pub stream_above_bytes: ByteSize,
    /// How long a key whose response was not storable skips request coalescing.
    pub hit_for_miss_ttl: Duration,
    /// Bound on the number of keys remembered as not storable.
    pub hit_for_miss_max_keys: u64,
    /// Ranges served per request; more are answered with the whole representation.
    pub max_ranges: usize,
    /// The file's `[[rules]]`, tried in order.
    pub rules: Arc<RuleSet>,
    /// `[compression]` (edges; a shield never compresses).
    pub compression: Arc<CompressionConfig>,
}

/// The admin API's protection and bounds.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminConfig {
    /// Bearer token for state-changing admin calls (purge). `None` disables them.
    pub token: Option<String>,
    /// Largest admin request body accepted; larger ones get 413.
    pub max_body_bytes: ByteSize,
}

impl std::fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminConfig")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("max_body_bytes", &self.max_body_bytes)
            .finish()
    }
}

/// Defaults of `[server]`, `[cache]` and `[admin]`, the same for every role.
pub mod defaults {
    pub const LISTEN: &str = "127.0.0.1:8080";
    pub const ADMIN_LISTEN: &str = "127.0.0.1:9080";
    pub const MAX_CONNECTIONS: u64 = 10_000;
    pub const MAX_HEADER_BYTES: &str = "16KiB";
    pub const HEADER_READ_TIMEOUT: &str = "10s";
    pub const SHUTDOWN_GRACE: &str = "10s";
    pub const H2_MAX_CONCURRENT_STREAMS: u64 = 256;
    pub const H2_MAX_PENDING_ACCEPT_RESET_STREAMS: u64 = 20;
    pub const H2_MAX_LOCAL_ERROR_RESET_STREAMS: u64 = 1024;
    pub const CLIENT_IDLE_TIMEOUT: &str = "60s";
    pub const MAX_CONNECTIONS_PER_ADDRESS: u64 = 1_000;
    pub const MAX_UPSTREAM_REQUESTS_PER_ADDRESS: u64 = 128;
    /// A per-address share that bounds nothing (the shields' default).
    pub const PER_ADDRESS_UNBOUNDED: u64 = 1_000_000;
    pub const OVERRIDE_HEADERS: &str = "strip";
    pub const REQUEST_BODY_BUFFER: &str = "64KiB";
    pub const REQUEST_BODY_BUFFER_TOTAL: &str = "64MiB";
    pub const MAX_REQUEST_BODY: &str = "100MiB";
    pub const REQUEST_BODY_TIMEOUT: &str = "10s";
    pub const REQUEST_BODY_MIN_RATE: &str = "1KiB";
    pub const SEND_TIMEOUT: &str = "60s";
    pub const MAX_BYTES: &str = "256MiB";
    pub const MAX_OBJECT_BYTES: &str = "8MiB";
    pub const STREAM_ABOVE_BYTES: &str = "64KiB";
    pub const HIT_FOR_MISS_TTL: &str = "30s";
    pub const HIT_FOR_MISS_MAX_KEYS: u64 = 100_000;
    pub const MAX_RANGES: u64 = 16;
    pub const ADMIN_MAX_BODY_BYTES: &str = "1MiB";
    /// The region of a node that names none.
    pub const REGION: &str = "local";
}

/// A cache node's configuration as the node runtime reads it, whatever the role: what it is,
/// its node tables, and the upstream whose connections it bounds.
#[derive(Debug, Clone, Copy)]
pub struct NodeView<'a> {
    pub role: NodeRole,
    pub tls: Option<&'a TlsServerConfig>,
    pub control: Option<&'a NodeControlConfig>,
    pub id: &'a NodeId,
    pub region: &'a RegionId,
    pub server: &'a ServerConfig,
    pub cache: &'a CacheConfig,
    pub admin: &'a AdminConfig,
    pub upstream: &'a UpstreamConfig,
}

/// The configuration of a cache role (edge, shield): it has the tables every node has.
pub trait NodeConfig {
    fn node(&self) -> NodeView<'_>;
}

/// The node tables of a role's file, as written.
#[derive(Debug, Default)]
pub(crate) struct RawNodeSection {
    /// The role's own table (`[edge]` or `[shield]`): id and region.
    pub(crate) identity: Option<RawNode>,
    pub(crate) server: Option<RawServer>,
    pub(crate) cache: Option<RawCache>,
    pub(crate) admin: Option<RawAdmin>,
    pub(crate) tls: Option<RawTls>,
    pub(crate) control: Option<RawNodeControl>,
}

/// The node tables, validated; a role's config takes them apart into its own fields.
#[derive(Debug)]
pub(crate) struct NodeSection {
    pub(crate) id: NodeId,
    pub(crate) region: RegionId,
    pub(crate) server: ServerConfig,
    pub(crate) cache: CacheConfig,
    pub(crate) admin: AdminConfig,
    pub(crate) tls: Option<TlsServerConfig>,
    pub(crate) control: Option<NodeControlConfig>,
}

/// Validates the node tables of `role`'s file. Its identity table is named after the role
/// (`edge.id`, `shield.id`), and a node without an id is `<role>-1`.
pub(crate) fn validate_node(
    c: &mut Collector,
    role: NodeRole,
    raw: RawNodeSection,
) -> Option<NodeSection> {
    let identity = raw.identity.unwrap_or_default();
    let default_id = format!("{role}-1");
    let id = c.take(
        &format!("{role}.id"),
        NodeId::new(identity.id.as_deref().unwrap_or(&default_id)),
    );
    let region = c.take(
        &format!("{role}.region"),
        RegionId::new(identity.region.as_deref().unwrap_or(defaults::REGION)),
    );
    let server = validate_server(c, role, raw.server.unwrap_or_default());
    let cache = validate_cache(c, role, raw.cache.unwrap_or_default());
    let admin = validate_admin(c, raw.admin.unwrap_or_default());
    let control = validate_node_control(c, raw.control);
    let tls = validate_tls(c, raw.tls);
    Some(NodeSection {
        id: id?,
        region: region?,
        server: server?,
        cache: cache?,
        admin: admin?,
        tls: tls?,
        control: control?,
    })
}

fn validate_server(c: &mut Collector, role: NodeRole, raw: RawServer) -> Option<ServerConfig> {
    use defaults::*;
    let ms = Duration::from_millis(1);
    let example = "127.0.0.1:8080";
    let listen = socket_addr(
        c,
        "server.listen",
        raw.listen.as_deref().unwrap_or(LISTEN),
        example,
    );
    let admin_listen = socket_addr(
        c,
        "server.admin_listen",
        raw.admin_listen.as_deref().unwrap_or(ADMIN_LISTEN),
        example,
    );
    if let (Some(listen), Some(admin_listen)) = (listen, admin_listen) {
        if listen == admin_listen && listen.port() != 0 {
            c.push(
                "server.admin_listen",
                format!(
                    "{admin_listen} is also server.listen; the admin listener needs its own address"
                ),
            );
        }
    }
    let max_connections = count(
        c,
        "server.max_connections",
        raw.max_connections,
        MAX_CONNECTIONS,
        (1, 1_000_000),
    );
    let max_header_bytes = size(
        c,
        "server.max_header_bytes",
        raw.max_header_bytes.as_ref(),
        MAX_HEADER_BYTES,
    );
    let max_header_bytes = max_header_bytes.and_then(|s| {
        // hyper's read buffer cannot be smaller than 8 KiB.
        if !(8192..=1 << 20).contains(&s.0) {
            c.push(
                "server.max_header_bytes",
                format!("{s} is out of range 8KiB..=1MiB"),
            );
            return None;
        }
        Some(s)
    });
    let header_read_timeout = duration(
        c,
        "server.header_read_timeout",
        raw.header_read_timeout.as_deref(),
        HEADER_READ_TIMEOUT,
        ms,
    );
    let shutdown_grace = duration(
        c,
        "server.shutdown_grace",
        raw.shutdown_grace.as_deref(),
        SHUTDOWN_GRACE,
        Duration::ZERO,
    );
    let streams = count(
        c,
        "server.h2_max_concurrent_streams",
        raw.h2_max_concurrent_streams,
        H2_MAX_CONCURRENT_STREAMS,
        (1, 10_000),
    );
    let pending_resets = count(
        c,
        "server.h2_max_pending_accept_reset_streams",
        raw.h2_max_pending_accept_reset_streams,
        H2_MAX_PENDING_ACCEPT_RESET_STREAMS,
        (1, 100_000),
    );
    let error_resets = count(
        c,
        "server.h2_max_local_error_reset_streams",
        raw.h2_max_local_error_reset_streams,
        H2_MAX_LOCAL_ERROR_RESET_STREAMS,
        (1, 1_000_000),
    );
    let upgrade_socket = match raw.upgrade_socket {
        Some(path) if path.is_empty() => {
            c.push("server.upgrade_socket", "must not be empty");
            None
        }
        other => Some(other.map(PathBuf::from)),
    };
    let workers = count(c, "server.worker_threads", raw.worker_threads, 0, (0, 1024));
    let idle_timeout = duration(
        c,
        "server.idle_timeout",
        raw.idle_timeout.as_deref(),
        CLIENT_IDLE_TIMEOUT,
        ms,
    );
    // A shield's clients are edges, each of which sends many requests over many connections
    // from one address: per-address shares are for edges, facing clients.
    let (per_address_default, upstream_per_address_default) = match role {
        NodeRole::Shield => (PER_ADDRESS_UNBOUNDED, PER_ADDRESS_UNBOUNDED),
        _ => (
            MAX_CONNECTIONS_PER_ADDRESS,
            MAX_UPSTREAM_REQUESTS_PER_ADDRESS,
        ),
    };
    let per_address = count(
        c,
        "server.max_connections_per_address",
        raw.max_connections_per_address,
        per_address_default,
        (1, PER_ADDRESS_UNBOUNDED),
    );
    let upstream_per_address = count(
        c,
        "server.max_upstream_requests_per_address",
        raw.max_upstream_requests_per_address,
        upstream_per_address_default,
        (1, PER_ADDRESS_UNBOUNDED),
    );
    let override_headers = c.take(
        "server.override_headers",
        OverrideHeaders::parse(raw.override_headers.as_deref().unwrap_or(OVERRIDE_HEADERS)),
    );
    let body_buffer = size(
        c,
        "server.request_body_buffer",
        raw.request_body_buffer.as_ref(),
        REQUEST_BODY_BUFFER,
    );
    let body_total = size(
        c,
        "server.request_body_buffer_total",
        raw.request_body_buffer_total.as_ref(),
        REQUEST_BODY_BUFFER_TOTAL,
    );
    if let (Some(buffer), Some(total)) = (body_buffer, body_total) {
        if total < buffer || total.0 > 4 << 30 {
            c.push(
                "server.request_body_buffer_total",
                format!("{total} must be at least server.request_body_buffer ({buffer}) and at most 4GiB"),
            );
        }
    }
    let max_body = size(
        c,
        "server.max_request_body",
        raw.max_request_body.as_ref(),
        MAX_REQUEST_BODY,
    );
    if let Some(buffer) = body_buffer {
        if buffer.0 > 64 << 20 {
            c.push(
                "server.request_body_buffer",
                format!("{buffer} is over 64MiB"),
            );
        }
    }
    let body_timeout = duration(
        c,
        "server.request_body_timeout",
        raw.request_body_timeout.as_deref(),
        REQUEST_BODY_TIMEOUT,
        ms,
    );
    let min_rate = size(
        c,
        "server.request_body_min_rate",
        raw.request_body_min_rate.as_ref(),
        REQUEST_BODY_MIN_RATE,
    );
    let send_timeout = duration(
        c,
        "server.send_timeout",
        raw.send_timeout.as_deref(),
        SEND_TIMEOUT,
        ms,
    );
    // A shield's clients are edges, whose ids it keeps so one request reads alike at both.
    let trust_request_id = raw.trust_request_id.unwrap_or(role == NodeRole::Shield);
    let access_log = validate_access_log(c, raw.access_log);
    Some(ServerConfig {
        idle_timeout: idle_timeout?,
        send_timeout: send_timeout?,
        max_connections_per_address: usize::try_from(per_address?).ok()?,
        max_upstream_requests_per_address: usize::try_from(upstream_per_address?).ok()?,
        override_headers: override_headers?,
        request_body_buffer: body_buffer?,
        request_body_buffer_total: body_total?,
        max_request_body: max_body?,
        request_body_timeout: body_timeout?,
        request_body_min_rate: min_rate?,
        trust_request_id,
        access_log: access_log?,
        worker_threads: usize::try_from(workers?).ok()?,
        listen: listen?,
        admin_listen: admin_listen?,
        max_connections: usize::try_from(max_connections?).ok()?,
        max_header_bytes: max_header_bytes?,
        header_read_timeout: header_read_timeout?,
        shutdown_grace: shutdown_grace?,
        h2_max_concurrent_streams: u32::try_from(streams?).ok()?,
        h2_max_pending_accept_reset_streams: usize::try_from(pending_resets?).ok()?,
        h2_max_local_error_reset_streams: usize::try_from(error_resets?).ok()?,
        upgrade_socket: upgrade_socket?,
    })
}

fn validate_cache(c: &mut Collector, role: NodeRole, raw: RawCache) -> Option<CacheConfig> {
    use defaults::*;
    let max_bytes = size(c, "cache.max_bytes", raw.max_bytes.as_ref(), MAX_BYTES);
    let max_object_bytes = size(
        c,
        "cache.max_object_bytes",
        raw.max_object_bytes.as_ref(),
        MAX_OBJECT_BYTES,
    );
    let stream_above_bytes = size(
        c,
        "cache.stream_above_bytes",
        raw.stream_above_bytes.as_ref(),
        STREAM_ABOVE_BYTES,
    );
    if let Some(m) = max_bytes {
        if m.0 == 0 {
            c.push("cache.max_bytes", "must be greater than 0");
        }
    }
    if let Some(o) = max_object_bytes {
        // The cache weighs entries in u32, so one object is below 4 GiB.
        if o.0 >= u64::from(u32::MAX) {
            c.push("cache.max_object_bytes", format!("{o} must be below 4GiB"));
        }
    }
    if let (Some(m), Some(o)) = (max_bytes, max_object_bytes) {
        if o > m {
            c.push(
                "cache.max_object_bytes",
                format!("{o} is larger than cache.max_bytes ({m})"),
            );
        }
    }
    let hfm_ttl = duration(
        c,
        "cache.hit_for_miss_ttl",
        raw.hit_for_miss_ttl.as_deref(),
        HIT_FOR_MISS_TTL,
        Duration::ZERO,
    );
    let hfm_keys = count(
        c,
        "cache.hit_for_miss_max_keys",
        raw.hit_for_miss_max_keys,
        HIT_FOR_MISS_MAX_KEYS,
        (1, 100_000_000),
    );
    let max_ranges = count(c, "cache.max_ranges", raw.max_ranges, MAX_RANGES, (1, 1000));
    let rules = validate_rules(c, raw.rules);
    // Only edges compress: a shield's file has no `[compression]` table.
    let compression = match role {
        NodeRole::Edge => validate_compression(c, raw.compression),
        NodeRole::Shield => Some(CompressionConfig::off()),
    };
    let (max_bytes, max_object_bytes) = (max_bytes?, max_object_bytes?);
    if max_bytes.0 == 0 || max_object_bytes > max_bytes || max_object_bytes.0 >= u64::from(u32::MAX)
    {
        return None;
    }
    Some(CacheConfig {
        max_bytes,
        max_object_bytes,
        stream_above_bytes: stream_above_bytes?,
        hit_for_miss_ttl: hfm_ttl?,
        hit_for_miss_max_keys: hfm_keys?,
        max_ranges: usize::try_from(max_ranges?).ok()?,
        rules: Arc::new(rules?),
        compression: Arc::new(compression?),
    })
}

fn validate_admin(c: &mut Collector, raw: RawAdmin) -> Option<AdminConfig> {
    let token = match raw.token {
        Some(t) if t.len() < 16 => {
            c.push("admin.token", "must be at least 16 characters long");
            None
        }
        Some(t) if t.chars().any(|ch| ch.is_whitespace() || ch.is_control()) => {
            c.push(
                "admin.token",
                "must not contain whitespace or control characters",
            );
            None
        }
        other => Some(other),
    };
    let max_body = size(
        c,
        "admin.max_body_bytes",
        raw.max_body_bytes.as_ref(),
        defaults::ADMIN_MAX_BODY_BYTES,
    );
    Some(AdminConfig {
        token: token?,
        max_body_bytes: max_body?,
    })
}

#[cfg(test)]
mod tests;
