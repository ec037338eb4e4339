//! Where a cache node's misses go and how long they may take: an edge's `[upstream]` table, and
//! the connection settings of a shield's `[origin]` pool. Origin URLs are shared by every table
//! that names another server (shields, control).

use std::net::IpAddr;
use std::time::Duration;

use http::uri::{Authority, Scheme, Uri};

use crate::error::Collector;
use crate::field::{count, duration};
use crate::raw::RawUpstream;
use crate::tls::{validate_client_tls, ClientTlsConfig};

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
    pub source_address: Option<IpAddr>,
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

/// Defaults of `[upstream]` (and of a shield's `[origin]` connection settings).
pub mod defaults {
    pub const CONNECT_TIMEOUT: &str = "2s";
    pub const RESPONSE_TIMEOUT: &str = "30s";
    pub const MAX_IDLE_PER_HOST: u64 = 256;
    pub const UPSTREAM_MAX_CONNECTIONS: u64 = 1024;
    pub const IDLE_TIMEOUT: &str = "50s";
}

/// Validates an upstream table found at `section` (`upstream`, or `origin` for a shield's pool).
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
                text.parse::<IpAddr>()
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
    use crate::edge::tests::MINIMAL;
    use crate::EdgeConfig;

    #[test]
    fn idle_upstream_connections_are_closed_before_a_verge_server_closes_them() {
        let config = EdgeConfig::from_toml(MINIMAL).unwrap();
        assert!(config.upstream.idle_timeout < config.server.idle_timeout);
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
    fn missing_origin_is_an_error() {
        let errs = EdgeConfig::from_toml("[edge]\nid = \"e\"\n").unwrap_err();
        assert!(errs.mentions("upstream.origin"), "{errs}");
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
}
