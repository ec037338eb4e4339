//! The edge role's configuration: validation from [`crate::raw`] into typed values.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use http::uri::{Authority, Scheme, Uri};

use crate::error::{Collector, ConfigErrors};
use crate::ids::{NodeId, RegionId};
use crate::node_control::{validate_node_control, NodeControlConfig, RawNodeControl};
use crate::raw::{
    RawAdmin, RawCache, RawCertificate, RawEdgeFile, RawNode, RawServer, RawShieldMember,
    RawShields, RawSize, RawTls, RawUpstream,
};
use crate::shields::{validate_shields, ShieldsConfig};
use crate::tls::{validate_client_tls, validate_tls, ClientTlsConfig, TlsServerConfig};
use crate::units::{parse_duration, ByteSize};

/// A validated edge configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeConfig {
    pub id: NodeId,
    pub region: RegionId,
    pub server: ServerConfig,
    pub cache: CacheConfig,
    pub upstream: UpstreamConfig,
    pub admin: AdminConfig,
    /// Origin shields that misses go to; empty means straight to the origin.
    pub shields: ShieldsConfig,
    /// The control plane this edge registers with; `None`: static configuration only.
    pub control: Option<NodeControlConfig>,
    /// HTTPS listeners and their certificates; `None`: plain HTTP only.
    pub tls: Option<TlsServerConfig>,
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
    pub upgrade_socket: Option<std::path::PathBuf>,
    /// Threads serving requests; 0 means one per core. With one, a single-threaded scheduler
    /// is used, which costs less per request than the work-stealing one.
    pub worker_threads: usize,
}

/// The cache engine's bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConfig {
    /// Bound on the cache's memory: response heads plus bodies.
    pub max_bytes: ByteSize,
    /// Larger responses stream through without being stored.
    pub max_object_bytes: ByteSize,
    /// How long a key whose response was not storable skips request coalescing.
    pub hit_for_miss_ttl: Duration,
    /// Bound on the number of keys remembered as not storable.
    pub hit_for_miss_max_keys: u64,
    /// Ranges served per request; more are answered with the whole representation.
    pub max_ranges: usize,
}

/// Where misses go and how long they may take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamConfig {
    pub origin: OriginUrl,
    pub connect_timeout: Duration,
    /// Time from sending the request to receiving the response head.
    pub response_timeout: Duration,
    pub max_idle_per_host: usize,
    pub idle_timeout: Duration,
    /// Requests (and so connections) open to the origin at once; more wait up to
    /// `connect_timeout` for a slot, then get 503.
    pub max_connections: usize,
    /// Local address upstream connections are made from (`None`: the system picks).
    pub source_address: Option<std::net::IpAddr>,
    /// How `https://` upstreams are verified, and the client certificate shown to them.
    pub tls: ClientTlsConfig,
}

/// An origin's base URL: scheme and authority, no path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginUrl {
    pub scheme: Scheme,
    pub authority: Authority,
}

impl OriginUrl {
    pub fn parse(text: &str) -> Result<OriginUrl, String> {
        let uri: Uri = text
            .parse()
            .map_err(|e| format!("invalid URL {text:?}: {e}"))?;
        let scheme = uri
            .scheme()
            .cloned()
            .ok_or_else(|| format!("invalid URL {text:?}: missing scheme (http://)"))?;
        if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
            return Err(format!(
                "unsupported scheme in {text:?}: expected http:// or https://"
            ));
        }
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| format!("invalid URL {text:?}: missing host"))?;
        if authority.as_str().contains('@') {
            return Err(format!("invalid URL {text:?}: user info is not allowed"));
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(format!(
                "invalid URL {text:?}: an origin is scheme and host only, without a path"
            ));
        }
        Ok(OriginUrl { scheme, authority })
    }
}

impl std::fmt::Display for OriginUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}", self.scheme, self.authority)
    }
}

/// Defaults, in one place so the README and examples can name them.
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
    pub const MAX_BYTES: &str = "256MiB";
    pub const MAX_OBJECT_BYTES: &str = "8MiB";
    pub const HIT_FOR_MISS_TTL: &str = "30s";
    pub const HIT_FOR_MISS_MAX_KEYS: u64 = 100_000;
    pub const CONNECT_TIMEOUT: &str = "2s";
    pub const RESPONSE_TIMEOUT: &str = "30s";
    pub const MAX_IDLE_PER_HOST: u64 = 256;
    pub const UPSTREAM_MAX_CONNECTIONS: u64 = 1024;
    pub const IDLE_TIMEOUT: &str = "90s";
    pub const MAX_RANGES: u64 = 16;
    pub const ADMIN_MAX_BODY_BYTES: &str = "1MiB";
}

impl EdgeConfig {
    /// Parses and validates an edge configuration, reporting every problem found.
    pub fn from_toml(text: &str) -> Result<EdgeConfig, ConfigErrors> {
        let raw: RawEdgeFile =
            toml::from_str(text).map_err(|e| ConfigErrors::single(error_path(&e), e.message()))?;
        validate(raw)
    }

    /// Reads a file and validates it; the file's path is named in a read error.
    pub fn from_file(path: &Path) -> Result<EdgeConfig, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors::single("", format!("cannot read {}: {e}", path.display()))
        })?;
        EdgeConfig::from_toml(&text)
    }

    /// The configuration for a quick start without a file: defaults plus these values. Each
    /// shield URL becomes a ring member whose id is its `host_port`, so edges started with the
    /// same URLs agree on placement whatever their order.
    pub fn quick_start(start: &EdgeQuickStart<'_>) -> Result<EdgeConfig, ConfigErrors> {
        let raw = RawEdgeFile {
            edge: Some(RawNode {
                id: start.node_id.map(str::to_string),
                region: start.region.map(str::to_string),
            }),
            server: Some(RawServer {
                listen: Some(start.listen.to_string()),
                admin_listen: Some(start.admin_listen.to_string()),
                upgrade_socket: start.upgrade_socket.map(str::to_string),
                ..RawServer::default()
            }),
            tls: (!start.tls_listen.is_empty() || !start.tls_certificates.is_empty()).then(|| {
                RawTls {
                    listen: start.tls_listen.to_vec(),
                    certificates: start
                        .tls_certificates
                        .iter()
                        .map(|(cert, key)| RawCertificate {
                            cert: Some(cert.clone()),
                            key: Some(key.clone()),
                        })
                        .collect(),
                    ..RawTls::default()
                }
            }),
            upstream: Some(RawUpstream {
                origin: Some(start.origin.to_string()),
                ..RawUpstream::default()
            }),
            admin: Some(RawAdmin {
                token: start.admin_token.map(str::to_string),
                ..RawAdmin::default()
            }),
            shields: Some(RawShields {
                members: start
                    .shields
                    .iter()
                    .map(|url| RawShieldMember {
                        id: Some(quick_start_id(url)),
                        url: Some(url.clone()),
                        weight: None,
                    })
                    .collect(),
                ..RawShields::default()
            }),
            control: start.control.map(|url| RawNodeControl {
                url: Some(url.to_string()),
                ..RawNodeControl::default()
            }),
            ..RawEdgeFile::default()
        };
        validate(raw)
    }
}

/// The values `verge edge` takes on its command line instead of a file.
#[derive(Debug, Clone, Default)]
pub struct EdgeQuickStart<'a> {
    pub listen: &'a str,
    pub admin_listen: &'a str,
    pub origin: &'a str,
    pub admin_token: Option<&'a str>,
    pub shields: &'a [String],
    /// This node's id (`edge.id`); `None`: the default.
    pub node_id: Option<&'a str>,
    /// This node's region (`edge.region`); `None`: the default.
    pub region: Option<&'a str>,
    /// Base URL of control's node listener; `None`: no control plane.
    pub control: Option<&'a str>,
    /// HTTPS listeners; with any, `tls_certificates` must name at least one pair.
    pub tls_listen: &'a [String],
    /// (certificate PEM, key PEM) file pairs; SNI picks among them, the first is the default.
    pub tls_certificates: &'a [(String, String)],
    /// Where listening sockets are handed to a successor process.
    pub upgrade_socket: Option<&'a str>,
}

/// A ring id for a shield given only by URL: its authority with `:` as `_`.
pub(crate) fn quick_start_id(url: &str) -> String {
    let authority = url
        .split_once("://")
        .map_or(url, |(_, rest)| rest)
        .trim_end_matches('/');
    authority.replace(':', "_")
}

/// Best-effort key path for a serde error: toml reports the offending key's span, not its path,
/// so the path is recovered from the message when it names a field.
pub(crate) fn error_path(e: &toml::de::Error) -> String {
    let msg = e.message();
    if let Some(rest) = msg.strip_prefix("unknown field `") {
        if let Some(end) = rest.find('`') {
            return rest[..end].to_string();
        }
    }
    String::new()
}

fn validate(raw: RawEdgeFile) -> Result<EdgeConfig, ConfigErrors> {
    let mut c = Collector::default();
    let node = raw.edge.unwrap_or_default();
    let id = c.take(
        "edge.id",
        NodeId::new(node.id.as_deref().unwrap_or("edge-1")),
    );
    let region = c.take(
        "edge.region",
        RegionId::new(node.region.as_deref().unwrap_or("local")),
    );
    let server = validate_server(&mut c, raw.server.unwrap_or_default());
    let cache = validate_cache(&mut c, raw.cache.unwrap_or_default());
    let upstream = validate_upstream(&mut c, raw.upstream.unwrap_or_default(), "upstream");
    let admin = validate_admin(&mut c, raw.admin.unwrap_or_default());
    let shields = validate_shields(&mut c, raw.shields.unwrap_or_default());
    let control = validate_node_control(&mut c, raw.control);
    let tls = validate_tls(&mut c, raw.tls);
    if let (Some(server), Some(_)) = (&server, &upstream) {
        if server.listen == server.admin_listen && server.listen.port() != 0 {
            c.push(
                "server.admin_listen",
                format!(
                    "{} is also server.listen; the admin listener needs its own address",
                    server.admin_listen
                ),
            );
        }
    }
    let value = match (
        id, region, server, cache, upstream, admin, shields, control, tls,
    ) {
        (
            Some(id),
            Some(region),
            Some(server),
            Some(cache),
            Some(upstream),
            Some(admin),
            Some(shields),
            Some(control),
            Some(tls),
        ) => Some(EdgeConfig {
            tls,
            id,
            region,
            server,
            cache,
            upstream,
            admin,
            shields,
            control,
        }),
        _ => None,
    };
    c.finish(value)
}

fn addr(c: &mut Collector, path: &str, value: Option<&str>, default: &str) -> Option<SocketAddr> {
    let text = value.unwrap_or(default);
    c.take(
        path,
        text.parse::<SocketAddr>().map_err(|_| {
            format!("invalid socket address {text:?}: expected IP:PORT, e.g. 127.0.0.1:8080")
        }),
    )
}

fn size(c: &mut Collector, path: &str, value: Option<&RawSize>, default: &str) -> Option<ByteSize> {
    let result = match value {
        Some(RawSize::Bytes(n)) => Ok(ByteSize(*n)),
        Some(RawSize::Text(t)) => ByteSize::parse(t),
        None => ByteSize::parse(default),
    };
    c.take(path, result)
}

pub(crate) fn duration(
    c: &mut Collector,
    path: &str,
    value: Option<&str>,
    default: &str,
    min: Duration,
) -> Option<Duration> {
    let d = c.take(path, parse_duration(value.unwrap_or(default)))?;
    if d < min {
        c.push(path, format!("must be at least {}ms", min.as_millis()));
        return None;
    }
    Some(d)
}

pub(crate) fn count(
    c: &mut Collector,
    path: &str,
    value: Option<u64>,
    default: u64,
    range: (u64, u64),
) -> Option<u64> {
    let n = value.unwrap_or(default);
    if n < range.0 || n > range.1 {
        c.push(
            path,
            format!("{n} is out of range {}..={}", range.0, range.1),
        );
        return None;
    }
    Some(n)
}

pub(crate) fn validate_server(c: &mut Collector, raw: RawServer) -> Option<ServerConfig> {
    use defaults::*;
    let ms = Duration::from_millis(1);
    let listen = addr(c, "server.listen", raw.listen.as_deref(), LISTEN);
    let admin_listen = addr(
        c,
        "server.admin_listen",
        raw.admin_listen.as_deref(),
        ADMIN_LISTEN,
    );
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
        other => Some(other.map(std::path::PathBuf::from)),
    };
    let workers = count(c, "server.worker_threads", raw.worker_threads, 0, (0, 1024));
    Some(ServerConfig {
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

pub(crate) fn validate_cache(c: &mut Collector, raw: RawCache) -> Option<CacheConfig> {
    use defaults::*;
    let max_bytes = size(c, "cache.max_bytes", raw.max_bytes.as_ref(), MAX_BYTES);
    let max_object_bytes = size(
        c,
        "cache.max_object_bytes",
        raw.max_object_bytes.as_ref(),
        MAX_OBJECT_BYTES,
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
    let (max_bytes, max_object_bytes) = (max_bytes?, max_object_bytes?);
    if max_bytes.0 == 0 || max_object_bytes > max_bytes || max_object_bytes.0 >= u64::from(u32::MAX)
    {
        return None;
    }
    Some(CacheConfig {
        max_bytes,
        max_object_bytes,
        hit_for_miss_ttl: hfm_ttl?,
        hit_for_miss_max_keys: hfm_keys?,
        max_ranges: usize::try_from(max_ranges?).ok()?,
    })
}

pub(crate) fn validate_admin(c: &mut Collector, raw: RawAdmin) -> Option<AdminConfig> {
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

pub(crate) fn validate_upstream(
    c: &mut Collector,
    raw: RawUpstream,
    section: &str,
) -> Option<UpstreamConfig> {
    let key = |name: &str| format!("{section}.{name}");
    use defaults::*;
    let ms = Duration::from_millis(1);
    let origin = match raw.origin.as_deref() {
        Some(text) => c.take(&key("origin"), OriginUrl::parse(text)),
        None => {
            c.push(
                &key("origin"),
                "missing: the origin URL, e.g. \"http://127.0.0.1:8000\"",
            );
            None
        }
    };
    let connect_timeout = duration(
        c,
        &key("connect_timeout"),
        raw.connect_timeout.as_deref(),
        CONNECT_TIMEOUT,
        ms,
    );
    let response_timeout = duration(
        c,
        &key("response_timeout"),
        raw.response_timeout.as_deref(),
        RESPONSE_TIMEOUT,
        ms,
    );
    let max_idle = count(
        c,
        &key("max_idle_per_host"),
        raw.max_idle_per_host,
        MAX_IDLE_PER_HOST,
        (0, 100_000),
    );
    let idle_timeout = duration(
        c,
        &key("idle_timeout"),
        raw.idle_timeout.as_deref(),
        IDLE_TIMEOUT,
        ms,
    );
    let max_connections = count(
        c,
        &key("max_connections"),
        raw.max_connections,
        UPSTREAM_MAX_CONNECTIONS,
        (1, 100_000),
    );
    let source_address = match raw.source_address.as_deref() {
        None => Some(None),
        Some(text) => c
            .take(
                &key("source_address"),
                text.parse::<std::net::IpAddr>()
                    .map_err(|_| format!("{text:?} is not an IP address (e.g. \"127.1.0.1\")")),
            )
            .map(Some),
    };
    let tls = validate_client_tls(c, raw.tls, &key("tls"));
    Some(UpstreamConfig {
        tls: tls?,
        source_address: source_address?,
        max_connections: usize::try_from(max_connections?).ok()?,
        origin: origin?,
        connect_timeout: connect_timeout?,
        response_timeout: response_timeout?,
        max_idle_per_host: usize::try_from(max_idle?).ok()?,
        idle_timeout: idle_timeout?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [edge]
        id = "edge-1"
        [upstream]
        origin = "http://127.0.0.1:8000"
    "#;

    #[test]
    fn minimal_file_gets_defaults() {
        let cfg = EdgeConfig::from_toml(MINIMAL).unwrap();
        assert_eq!(cfg.cache.max_bytes, ByteSize(256 << 20));
        assert_eq!(cfg.server.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(cfg.upstream.origin.to_string(), "http://127.0.0.1:8000");
    }

    #[test]
    fn every_error_is_reported_with_its_key_path() {
        let text = r#"
            [edge]
            id = "bad id"
            [server]
            listen = "nowhere"
            header_read_timeout = "10"
            [cache]
            max_bytes = "1MiB"
            max_object_bytes = "2MiB"
            [upstream]
            origin = "ftp://x"
            connect_timeout = "fast"
        "#;
        let errs = EdgeConfig::from_toml(text).unwrap_err();
        for path in [
            "edge.id",
            "server.listen",
            "server.header_read_timeout",
            "cache.max_object_bytes",
            "upstream.origin",
            "upstream.connect_timeout",
        ] {
            assert!(errs.mentions(path), "{path} not reported in:\n{errs}");
        }
        assert_eq!(errs.errors.len(), 6, "{errs}");
    }

    #[test]
    fn the_upstream_source_address_must_be_an_ip() {
        let text = MINIMAL.replace(
            "origin = ",
            "source_address = \"127.1.0.9\"\n        origin = ",
        );
        let cfg = EdgeConfig::from_toml(&text).unwrap();
        assert_eq!(
            cfg.upstream.source_address,
            Some("127.1.0.9".parse().unwrap())
        );
        let bad = MINIMAL.replace("origin = ", "source_address = \"here\"\n        origin = ");
        let errs = EdgeConfig::from_toml(&bad).unwrap_err();
        assert!(errs.mentions("upstream.source_address"), "{errs}");
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let text = format!("{MINIMAL}\n[cache]\nmax_byte = \"1MiB\"\n");
        let errs = EdgeConfig::from_toml(&text).unwrap_err();
        assert!(errs.to_string().contains("max_byte"), "{errs}");
    }

    #[test]
    fn missing_origin_is_an_error() {
        let errs = EdgeConfig::from_toml("[edge]\nid = \"e\"\n").unwrap_err();
        assert!(errs.mentions("upstream.origin"), "{errs}");
    }

    #[test]
    fn wrong_types_are_reported() {
        let errs = EdgeConfig::from_toml(&format!(
            "{MINIMAL}\n[server]\nmax_connections = \"many\"\n"
        ))
        .unwrap_err();
        assert!(
            errs.to_string().contains("max_connections")
                || errs.to_string().contains("invalid type"),
            "{errs}"
        );
    }

    #[test]
    fn admin_tokens_must_be_long_and_plain() {
        let with = |token: &str| {
            EdgeConfig::from_toml(&format!("{MINIMAL}\n[admin]\ntoken = \"{token}\"\n"))
        };
        assert!(with("short").unwrap_err().mentions("admin.token"));
        assert!(with("has a space in it, long enough")
            .unwrap_err()
            .mentions("admin.token"));
        let cfg = with("0123456789abcdef").unwrap();
        assert_eq!(cfg.admin.token.as_deref(), Some("0123456789abcdef"));
        assert!(
            !format!("{cfg:?}").contains("0123456789abcdef"),
            "tokens are redacted in Debug"
        );
        assert!(EdgeConfig::from_toml(MINIMAL)
            .unwrap()
            .admin
            .token
            .is_none());
    }

    #[test]
    fn origin_urls_are_scheme_and_host_only() {
        assert!(OriginUrl::parse("http://origin.example:8000").is_ok());
        assert!(OriginUrl::parse("http://origin.example/").is_ok());
        assert!(OriginUrl::parse("http://origin.example/path").is_err());
        assert!(OriginUrl::parse("origin.example").is_err());
        assert!(OriginUrl::parse("https://origin.example").is_ok());
        assert!(OriginUrl::parse("ftp://origin.example").is_err());
        assert!(OriginUrl::parse("http://user@origin.example").is_err());
    }

    #[test]
    fn quick_start_uses_the_given_values() {
        let start = EdgeQuickStart {
            listen: "127.0.0.1:0",
            admin_listen: "127.0.0.1:0",
            origin: "http://127.0.0.1:9",
            ..EdgeQuickStart::default()
        };
        let cfg = EdgeConfig::quick_start(&start).unwrap();
        assert_eq!(cfg.upstream.origin.authority.as_str(), "127.0.0.1:9");
        assert!(cfg.shields.members.is_empty());
        let bad = EdgeQuickStart {
            listen: "x",
            ..start.clone()
        };
        assert!(EdgeConfig::quick_start(&bad)
            .unwrap_err()
            .mentions("server.listen"));
        let shields = [
            "http://127.0.0.1:9001".to_string(),
            "http://10.0.0.2:80/".to_string(),
        ];
        let with = EdgeQuickStart {
            shields: &shields,
            ..start
        };
        let cfg = EdgeConfig::quick_start(&with).unwrap();
        let ids: Vec<&str> = cfg.shields.members.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, ["127.0.0.1_9001", "10.0.0.2_80"]);
        assert_eq!(cfg.control, None);
    }

    #[test]
    fn quick_start_names_the_node_and_its_control_plane() {
        let start = EdgeQuickStart {
            listen: "127.0.0.1:0",
            admin_listen: "127.0.0.1:0",
            origin: "http://127.0.0.1:9",
            node_id: Some("edge-us-1"),
            region: Some("us"),
            control: Some("http://127.0.0.1:7000"),
            ..EdgeQuickStart::default()
        };
        let cfg = EdgeConfig::quick_start(&start).unwrap();
        assert_eq!(cfg.id.as_str(), "edge-us-1");
        assert_eq!(cfg.region.as_str(), "us");
        let control = cfg.control.unwrap();
        assert_eq!(control.url.to_string(), "http://127.0.0.1:7000");
        assert_eq!(control.weight, 1);
        let bad = EdgeQuickStart {
            node_id: Some("a b"),
            control: Some("ftp://x"),
            ..start
        };
        let errs = EdgeConfig::quick_start(&bad).unwrap_err();
        assert!(
            errs.mentions("edge.id") && errs.mentions("control.url"),
            "{errs}"
        );
    }
}
