//! The shield role's configuration: the node tables every cache node has ([`crate::node`]),
//! with a pool of origin servers (`[origin]`) as the upstream, a `[resolver]` for their
//! host names, and `[parents]`: how a lower shield uses the upper shields of control's
//! two-level plan (the keys of an edge's `[shields]` that say so, [`UpperTierConfig`]).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::error::{Collector, ConfigErrors};
use crate::field::{bounded_duration, count, duration};
use crate::ids::{NodeId, RegionId};
use crate::node::{
    validate_node, AdminConfig, CacheConfig, NodeConfig, NodeView, RawNodeSection, ServerConfig,
};
use crate::node_control::NodeControlConfig;
use crate::raw::{RawOriginPool, RawResolver, RawShieldFile, RawUpstream};
use crate::shields::{validate_upper_tier, UpperTierConfig};
use crate::tls::TlsServerConfig;
use crate::upstream::{validate_upstream, OriginUrl, UpstreamConfig};

/// Servers accepted in one origin pool.
pub const MAX_ORIGIN_SERVERS: usize = 64;

/// Name servers accepted in `[resolver]`.
pub const MAX_NAMESERVERS: usize = 8;

/// A validated shield configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShieldConfig {
    pub id: NodeId,
    pub region: RegionId,
    pub server: ServerConfig,
    pub cache: CacheConfig,
    pub admin: AdminConfig,
    pub origin: OriginPoolConfig,
    /// How host names in `origin.servers` are resolved; unused when every server is an IP.
    pub resolver: ResolverConfig,
    /// How misses go to the upper shields when control's plan has two levels and makes this
    /// shield a lower one: ejection, failover budget, bounded load, TLS (`[parents]`).
    pub parents: UpperTierConfig,
    /// The control plane this shield registers with; `None`: static configuration only.
    pub control: Option<NodeControlConfig>,
    /// HTTPS listeners (e.g. mutual TLS from edges); `None`: plain HTTP only.
    pub tls: Option<TlsServerConfig>,
}

impl NodeConfig for ShieldConfig {
    fn node(&self) -> NodeView<'_> {
        NodeView {
            role: crate::wire::NodeRole::Shield,
            tls: self.tls.as_ref(),
            control: self.control.as_ref(),
            id: &self.id,
            region: &self.region,
            server: &self.server,
            cache: &self.cache,
            admin: &self.admin,
            upstream: &self.origin.upstream,
        }
    }
}

/// The origin servers a shield fetches from, and how it judges and retries them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginPoolConfig {
    /// Never empty.
    pub servers: Vec<OriginUrl>,
    /// Timeouts, keep-alive pool and per-server connection bound (`origin` is the first server).
    pub upstream: UpstreamConfig,
    /// Path probed on every server by active health checks; `None` disables them.
    pub health_path: Option<String>,
    pub health_interval: Duration,
    /// Consecutive successful probes that mark a server up...
    pub healthy_after: u32,
    /// ...and consecutive failures (probes or requests) that mark it down.
    pub unhealthy_after: u32,
    /// First passive ejection; doubled on each consecutive one up to `max_eject_for`.
    pub eject_for: Duration,
    pub max_eject_for: Duration,
    /// Extra attempts on other servers for idempotent requests.
    pub retries: u32,
    /// Retries allowed, as a percentage of requests.
    pub retry_budget_percent: u32,
}

/// How the host names of origin servers are resolved (`[resolver]`). Each name is looked up at
/// start and again when its answer's TTL, clamped to `[min_ttl, max_ttl]`, runs out; a failed
/// lookup keeps the last good addresses and is retried after `negative_retry`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolverConfig {
    /// Name servers asked over UDP (and TCP for truncated answers); `None` means the system's
    /// (`/etc/resolv.conf`).
    pub nameservers: Option<Vec<SocketAddr>>,
    /// Floor on the TTL in use, so a zero-TTL record does not make the shield ask in a loop.
    pub min_ttl: Duration,
    /// Cap on the TTL in use, so a moved origin is noticed even under a day-long TTL.
    pub max_ttl: Duration,
    /// How soon a failed lookup is tried again.
    pub negative_retry: Duration,
    /// Deadline of one lookup, every name server and retry included.
    pub timeout: Duration,
}

pub mod defaults {
    pub const HEALTH_INTERVAL: &str = "2s";
    pub const HEALTHY_AFTER: u64 = 2;
    pub const UNHEALTHY_AFTER: u64 = 3;
    pub const EJECT_FOR: &str = "1s";
    pub const MAX_EJECT_FOR: &str = "30s";
    pub const RETRIES: u64 = 1;
    pub const RETRY_BUDGET_PERCENT: u64 = 20;
    pub const MIN_TTL: &str = "1s";
    pub const MAX_TTL: &str = "5m";
    pub const NEGATIVE_RETRY: &str = "5s";
    pub const RESOLVER_TIMEOUT: &str = "2s";
    /// Port of a name server written without one.
    pub const NAMESERVER_PORT: u16 = 53;
}

impl ShieldConfig {
    /// Parses and validates a shield configuration, reporting every problem found.
    pub fn from_toml(text: &str) -> Result<ShieldConfig, ConfigErrors> {
        validate(crate::raw::parse(text)?)
    }
}

pub(crate) fn validate(raw: RawShieldFile) -> Result<ShieldConfig, ConfigErrors> {
    let mut c = Collector::default();
    let node = validate_node(
        &mut c,
        crate::wire::NodeRole::Shield,
        RawNodeSection {
            identity: raw.shield,
            server: raw.server,
            cache: raw.cache,
            admin: raw.admin,
            tls: raw.tls,
            control: raw.control,
        },
    );
    let origin = validate_pool(&mut c, raw.origin.unwrap_or_default());
    let resolver = validate_resolver(&mut c, raw.resolver.unwrap_or_default());
    let parents = validate_upper_tier(&mut c, "parents", raw.parents.unwrap_or_default());
    let value = match (node, origin, resolver, parents) {
        (Some(node), Some(origin), Some(resolver), Some(parents)) => Some(ShieldConfig {
            id: node.id,
            region: node.region,
            server: node.server,
            cache: node.cache,
            admin: node.admin,
            origin,
            resolver,
            parents,
            control: node.control,
            tls: node.tls,
        }),
        _ => None,
    };
    c.finish(value)
}

fn validate_pool(c: &mut Collector, raw: RawOriginPool) -> Option<OriginPoolConfig> {
    use defaults::*;
    if raw.servers.is_empty() {
        c.push(
            "origin.servers",
            "missing: at least one origin server URL, e.g. [\"http://10.0.0.7:8000\"]",
        );
    }
    if raw.servers.len() > MAX_ORIGIN_SERVERS {
        c.push(
            "origin.servers",
            format!(
                "{} servers given; at most {MAX_ORIGIN_SERVERS}",
                raw.servers.len()
            ),
        );
    }
    let servers: Vec<Option<OriginUrl>> = raw
        .servers
        .iter()
        .enumerate()
        .map(|(i, url)| c.take(&format!("origin.servers[{i}]"), OriginUrl::parse(url)))
        .collect();
    let upstream = validate_upstream(
        c,
        RawUpstream {
            origin: Some(
                raw.servers
                    .first()
                    .cloned()
                    .unwrap_or_else(|| "http://0.0.0.0".into()),
            ),
            connect_timeout: raw.connect_timeout,
            response_timeout: raw.response_timeout,
            max_idle_per_host: raw.max_idle_per_host,
            idle_timeout: raw.idle_timeout,
            max_connections: raw.max_connections,
            source_address: raw.source_address,
            tls: raw.tls,
        },
        "origin",
    );
    let health_path = match raw.health_path {
        Some(path)
            if !path.starts_with('/') || path.parse::<http::uri::PathAndQuery>().is_err() =>
        {
            c.push(
                "origin.health_path",
                format!("{path:?} is not an absolute path like \"/healthz\""),
            );
            None
        }
        other => Some(other),
    };
    let ms = Duration::from_millis(1);
    let interval = duration(
        c,
        "origin.health_interval",
        raw.health_interval.as_deref(),
        HEALTH_INTERVAL,
        ms,
    );
    let healthy_after = count(
        c,
        "origin.healthy_after",
        raw.healthy_after,
        HEALTHY_AFTER,
        (1, 100),
    );
    let unhealthy_after = count(
        c,
        "origin.unhealthy_after",
        raw.unhealthy_after,
        UNHEALTHY_AFTER,
        (1, 100),
    );
    let eject_for = duration(
        c,
        "origin.eject_for",
        raw.eject_for.as_deref(),
        EJECT_FOR,
        ms,
    );
    let max_eject_for = duration(
        c,
        "origin.max_eject_for",
        raw.max_eject_for.as_deref(),
        MAX_EJECT_FOR,
        ms,
    );
    if let (Some(e), Some(m)) = (eject_for, max_eject_for) {
        if m < e {
            c.push(
                "origin.max_eject_for",
                "must not be shorter than origin.eject_for",
            );
        }
    }
    let retries = count(c, "origin.retries", raw.retries, RETRIES, (0, 10));
    let budget = count(
        c,
        "origin.retry_budget_percent",
        raw.retry_budget_percent,
        RETRY_BUDGET_PERCENT,
        (0, 100),
    );
    let servers: Option<Vec<OriginUrl>> = servers.into_iter().collect();
    let servers = servers.filter(|s| !s.is_empty() && s.len() <= MAX_ORIGIN_SERVERS)?;
    let (eject_for, max_eject_for) = (eject_for?, max_eject_for?);
    if max_eject_for < eject_for {
        return None;
    }
    Some(OriginPoolConfig {
        servers,
        upstream: upstream?,
        health_path: health_path?,
        health_interval: interval?,
        healthy_after: u32::try_from(healthy_after?).ok()?,
        unhealthy_after: u32::try_from(unhealthy_after?).ok()?,
        eject_for,
        max_eject_for,
        retries: u32::try_from(retries?).ok()?,
        retry_budget_percent: u32::try_from(budget?).ok()?,
    })
}

fn validate_resolver(c: &mut Collector, raw: RawResolver) -> Option<ResolverConfig> {
    use defaults::*;
    let nameservers = match raw.nameservers {
        None => Some(None),
        Some(list) if list.is_empty() => {
            c.push(
                "resolver.nameservers",
                "empty: list at least one name server, or leave the key out to use /etc/resolv.conf",
            );
            None
        }
        Some(list) if list.len() > MAX_NAMESERVERS => {
            c.push(
                "resolver.nameservers",
                format!(
                    "{} name servers given; at most {MAX_NAMESERVERS}",
                    list.len()
                ),
            );
            None
        }
        Some(list) => {
            let parsed: Vec<Option<SocketAddr>> = list
                .iter()
                .enumerate()
                .map(|(i, text)| c.take(&format!("resolver.nameservers[{i}]"), nameserver(text)))
                .collect();
            parsed.into_iter().collect::<Option<Vec<_>>>().map(Some)
        }
    };
    let ms = Duration::from_millis(1);
    let min_ttl = bounded_duration(
        c,
        "resolver.min_ttl",
        raw.min_ttl.as_deref(),
        MIN_TTL,
        (100 * ms, Duration::from_secs(3600)),
    );
    let max_ttl = bounded_duration(
        c,
        "resolver.max_ttl",
        raw.max_ttl.as_deref(),
        MAX_TTL,
        (100 * ms, Duration::from_secs(86_400)),
    );
    if let (Some(min), Some(max)) = (min_ttl, max_ttl) {
        if max < min {
            c.push(
                "resolver.max_ttl",
                "must not be shorter than resolver.min_ttl",
            );
        }
    }
    let negative_retry = bounded_duration(
        c,
        "resolver.negative_retry",
        raw.negative_retry.as_deref(),
        NEGATIVE_RETRY,
        (100 * ms, Duration::from_secs(3600)),
    );
    let timeout = bounded_duration(
        c,
        "resolver.timeout",
        raw.timeout.as_deref(),
        RESOLVER_TIMEOUT,
        (10 * ms, Duration::from_secs(60)),
    );
    let (min_ttl, max_ttl) = (min_ttl?, max_ttl?);
    if max_ttl < min_ttl {
        return None;
    }
    Some(ResolverConfig {
        nameservers: nameservers?,
        min_ttl,
        max_ttl,
        negative_retry: negative_retry?,
        timeout: timeout?,
    })
}

/// A name server: `IP:PORT`, or a bare IP on port 53.
fn nameserver(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    text.parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, defaults::NAMESERVER_PORT))
        .map_err(|_| {
            format!(
                "invalid name server {text:?}: expected an IP or IP:PORT, e.g. \"127.0.0.1:53\""
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minimal_shield_gets_defaults() {
        let cfg =
            ShieldConfig::from_toml("[origin]\nservers = [\"http://127.0.0.1:8000\"]\n").unwrap();
        assert_eq!(cfg.id.as_str(), "shield-1");
        assert_eq!(cfg.origin.servers.len(), 1);
        assert_eq!(cfg.origin.retries, 1);
        assert!(cfg.origin.health_path.is_none());
        assert_eq!(
            cfg.origin.upstream.origin.to_string(),
            "http://127.0.0.1:8000"
        );
    }

    #[test]
    fn every_bad_pool_field_is_named() {
        let text = "[shield]\nid = \"bad id\"\n[origin]\nservers = [\"http://a:1\", \"ftp://b\"]\n\
                    health_path = \"healthz\"\nretries = 99\neject_for = \"10s\"\nmax_eject_for = \"1s\"\n\
                    connect_timeout = \"soon\"\n";
        let errs = ShieldConfig::from_toml(text).unwrap_err();
        for path in [
            "shield.id",
            "origin.servers[1]",
            "origin.health_path",
            "origin.retries",
            "origin.max_eject_for",
            "origin.connect_timeout",
        ] {
            assert!(errs.mentions(path), "{path} not reported in:\n{errs}");
        }
    }

    #[test]
    fn the_resolver_defaults_to_the_system_with_clamped_ttls() {
        let cfg = ShieldConfig::from_toml("[origin]\nservers = [\"http://origin.example:8000\"]\n")
            .unwrap();
        let r = &cfg.resolver;
        assert_eq!(r.nameservers, None);
        assert_eq!(r.min_ttl, Duration::from_secs(1));
        assert_eq!(r.max_ttl, Duration::from_secs(300));
        assert_eq!(r.negative_retry, Duration::from_secs(5));
        assert_eq!(r.timeout, Duration::from_secs(2));
    }

    #[test]
    fn the_example_shows_the_resolver_defaults() {
        let example = ShieldConfig::from_toml(include_str!("../examples/shield.toml")).unwrap();
        let minimal =
            ShieldConfig::from_toml("[origin]\nservers = [\"http://127.0.0.1:8000\"]\n").unwrap();
        assert_eq!(example.resolver, minimal.resolver);
    }

    #[test]
    fn nameservers_take_a_port_or_default_to_53() {
        let text = "[origin]\nservers = [\"http://origin.example\"]\n[resolver]\n\
                    nameservers = [\"127.0.0.1:5353\", \"10.0.0.2\", \"[::1]:53\", \"::2\"]\n\
                    min_ttl = \"2s\"\nmax_ttl = \"1h\"\nnegative_retry = \"500ms\"\ntimeout = \"1s\"\n";
        let r = ShieldConfig::from_toml(text).unwrap().resolver;
        let expected: Vec<SocketAddr> = ["127.0.0.1:5353", "10.0.0.2:53", "[::1]:53", "[::2]:53"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        assert_eq!(r.nameservers, Some(expected));
        assert_eq!(r.min_ttl, Duration::from_secs(2));
        assert_eq!(r.max_ttl, Duration::from_secs(3600));
        assert_eq!(r.negative_retry, Duration::from_millis(500));
        assert_eq!(r.timeout, Duration::from_secs(1));
    }

    #[test]
    fn every_bad_resolver_field_is_named() {
        let text = "[origin]\nservers = [\"http://origin.example\"]\n[resolver]\n\
                    nameservers = [\"127.0.0.1:5353\", \"dns.example:53\"]\nmin_ttl = \"10ms\"\n\
                    max_ttl = \"2d\"\nnegative_retry = \"never\"\ntimeout = \"0s\"\n";
        let errs = ShieldConfig::from_toml(text).unwrap_err();
        for path in [
            "resolver.nameservers[1]",
            "resolver.min_ttl",
            "resolver.max_ttl",
            "resolver.negative_retry",
            "resolver.timeout",
        ] {
            assert!(errs.mentions(path), "{path} not reported in:\n{errs}");
        }
        assert!(!errs.mentions("resolver.nameservers[0]"), "{errs}");
    }

    #[test]
    fn max_ttl_below_min_ttl_is_rejected() {
        let text = "[origin]\nservers = [\"http://origin.example\"]\n[resolver]\n\
                    min_ttl = \"10m\"\nmax_ttl = \"1m\"\n";
        let errs = ShieldConfig::from_toml(text).unwrap_err();
        assert!(errs.mentions("resolver.max_ttl"), "{errs}");
    }

    #[test]
    fn an_empty_or_oversized_nameserver_list_is_rejected() {
        let empty = "[origin]\nservers = [\"http://o.example\"]\n[resolver]\nnameservers = []\n";
        let errs = ShieldConfig::from_toml(empty).unwrap_err();
        assert!(errs.mentions("resolver.nameservers"), "{errs}");
        let many: Vec<String> = (1..=9).map(|i| format!("\"10.0.0.{i}\"")).collect();
        let text = format!(
            "[origin]\nservers = [\"http://o.example\"]\n[resolver]\nnameservers = [{}]\n",
            many.join(", ")
        );
        let errs = ShieldConfig::from_toml(&text).unwrap_err();
        assert!(errs.mentions("resolver.nameservers"), "{errs}");
    }

    #[test]
    fn an_unknown_resolver_key_is_named() {
        let text = "[origin]\nservers = [\"http://o.example\"]\n[resolver]\nttl = \"1s\"\n";
        let errs = ShieldConfig::from_toml(text).unwrap_err();
        assert!(errs.mentions("resolver.ttl"), "{errs}");
    }

    #[test]
    fn a_pool_needs_servers() {
        let errs = ShieldConfig::from_toml("[shield]\nid = \"s\"\n").unwrap_err();
        assert!(errs.mentions("origin.servers"), "{errs}");
    }
}
