//! An origin pool's configuration as the shield's pool tests use it: short timeouts and
//! ejections, one retry, no health checks; the upstream of one origin with those timeouts; and
//! the resolver's settings at their defaults.

use std::time::Duration;

use verge_config::shield::ResolverConfig;
use verge_config::{ClientTlsConfig, OriginPoolConfig, OriginUrl, UpstreamConfig};

/// A pool over `servers` (at least one) with test timings; `health_interval` is the only one
/// the tests set differently.
pub fn pool_config(servers: &[OriginUrl], health_interval: Duration) -> OriginPoolConfig {
    OriginPoolConfig {
        servers: servers.to_vec(),
        upstream: UpstreamConfig {
            response_timeout: Duration::from_secs(2),
            ..upstream_config(servers[0].clone(), ClientTlsConfig::default())
        },
        health_path: None,
        health_interval,
        healthy_after: 1,
        unhealthy_after: 2,
        eject_for: Duration::from_millis(300),
        max_eject_for: Duration::from_secs(2),
        retries: 1,
        retry_budget_percent: 20,
    }
}

/// An upstream to `origin` with test timings (1s to connect, 5s to answer) and `tls`.
pub fn upstream_config(origin: OriginUrl, tls: ClientTlsConfig) -> UpstreamConfig {
    UpstreamConfig {
        origin,
        connect_timeout: Duration::from_secs(1),
        response_timeout: Duration::from_secs(5),
        max_idle_per_host: 4,
        idle_timeout: Duration::from_secs(30),
        max_connections: 8,
        source_address: None,
        tls,
    }
}

/// The resolver settings a shield gets when its configuration leaves `[resolver]` out.
pub fn resolver_config() -> ResolverConfig {
    ResolverConfig {
        nameservers: None,
        min_ttl: Duration::from_secs(1),
        max_ttl: Duration::from_secs(300),
        negative_retry: Duration::from_secs(5),
        timeout: Duration::from_secs(2),
    }
}
