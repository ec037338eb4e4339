//! The `[control]` table of an edge or shield: where the control plane's node listener is, and
//! how the node keeps in touch with it. Without the table a node runs on its static
//! configuration alone.

use std::time::Duration;

use crate::error::Collector;
use crate::field::{count, duration};
use crate::upstream::OriginUrl;

/// How a node registers with control, heartbeats, and holds the push stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeControlConfig {
    /// Base URL of control's node listener (`/v1/register`, `/v1/heartbeat`, `/v1/events`):
    /// the first of `urls`.
    pub url: OriginUrl,
    /// Every control replica the node may follow (`url`, or `urls`), in the order given; the
    /// node starts at one picked by its id (so a fleet spreads) and moves to the next when
    /// it loses the one it follows.
    pub urls: Vec<OriginUrl>,
    /// This node's share of traffic relative to its peers (1..=10), announced at registration.
    pub weight: u32,
    /// How often the node reports its applied purge sequence, table version and health; the
    /// push stream counts as dead after 3 × this + 5 s without a byte.
    pub heartbeat_interval: Duration,
    /// First delay before registering or reconnecting again after a failure...
    pub reconnect_min: Duration,
    /// ...doubling (with jitter) up to this.
    pub reconnect_max: Duration,
    /// How often the node measures the round trip to an upstream it sends no traffic to: a
    /// shield outside its ring (the others are measured by real requests, or probed after a
    /// second without them).
    pub probe_spare_every: Duration,
    /// How often an edge measures the origin it falls back to, when no real request went
    /// there: every edge of a fleet does, so the origin sees one probe per edge per this.
    pub probe_origin_every: Duration,
    /// The data-plane URL announced to control (what clients and edges should use), when it is
    /// not the listener's own address: behind a load balancer, NAT or a relay.
    pub advertise_url: Option<OriginUrl>,
    /// The local address the node's connections to control leave from (default: the
    /// system's choice), for a host with several addresses or a firewall that allows one.
    pub source_address: Option<std::net::IpAddr>,
    /// The bearer token control's node listener asks for (`token`, or read from
    /// `token_file`); `None`: none sent.
    pub token: Option<String>,
    /// TLS towards `https://` control URLs (`[control.tls]`): the CA control's certificate
    /// chains to (else the system store), and the node's client certificate when control's
    /// node listener asks for one (`controller.node_tls.client_ca`).
    pub tls: crate::tls::ClientTlsConfig,
}

pub use crate::raw::RawNodeControl;

pub mod defaults {
    pub const WEIGHT: u64 = 1;
    pub const HEARTBEAT_INTERVAL: &str = "1s";
    pub const RECONNECT_MIN: &str = "100ms";
    pub const RECONNECT_MAX: &str = "5s";
    pub const PROBE_SPARE_EVERY: &str = "10s";
    pub const PROBE_ORIGIN_EVERY: &str = "60s";
}

/// Longest heartbeat interval or reconnect delay accepted: beyond it control would take the
/// node for dead, or a node would sit out of touch for too long.
const MAX_INTERVAL: Duration = Duration::from_secs(600);
/// Most control replicas a node knows.
const MAX_URLS: usize = 16;

pub(crate) fn validate_node_control(
    c: &mut Collector,
    raw: Option<RawNodeControl>,
) -> Option<Option<NodeControlConfig>> {
    let Some(raw) = raw else {
        return Some(None);
    };
    use defaults::*;
    let parse = |c: &mut Collector, path: &str, text: &str| {
        c.take(
            path,
            OriginUrl::parse(text).and_then(|url| {
                if url.scheme == http::uri::Scheme::HTTP || url.scheme == http::uri::Scheme::HTTPS {
                    Ok(url)
                } else {
                    Err(format!("{text:?} must be an http:// or https:// URL"))
                }
            }),
        )
    };
    let urls: Option<Vec<OriginUrl>> = match (raw.url.as_deref(), raw.urls) {
        (Some(_), Some(_)) => {
            c.push("control.urls", "give url or urls, not both");
            None
        }
        (Some(text), None) => parse(c, "control.url", text).map(|url| vec![url]),
        (None, Some(list)) if list.is_empty() || list.len() > MAX_URLS => {
            c.push(
                "control.urls",
                format!("give 1 to {MAX_URLS} URLs, not {}", list.len()),
            );
            None
        }
        (None, Some(list)) => {
            let mut urls = Vec::new();
            for (i, text) in list.iter().enumerate() {
                let path = format!("control.urls[{i}]");
                if let Some(url) = parse(c, &path, text) {
                    if urls.contains(&url) {
                        c.push(&path, format!("{text:?} is listed twice"));
                    }
                    urls.push(url);
                }
            }
            (urls.len() == list.len()).then_some(urls)
        }
        (None, None) => {
            c.push(
                "control.url",
                "missing: the base URL of control's node listener, e.g. \"http://127.0.0.1:7000\"",
            );
            None
        }
    };
    let weight = count(c, "control.weight", raw.weight, WEIGHT, (1, 10));
    let ms = Duration::from_millis(1);
    let mut timing = |path: &str, value: Option<String>, default: &str, min: Duration| {
        let d = duration(c, path, value.as_deref(), default, min)?;
        if d > MAX_INTERVAL {
            c.push(path, format!("must be at most {}s", MAX_INTERVAL.as_secs()));
            return None;
        }
        Some(d)
    };
    let heartbeat_interval = timing(
        "control.heartbeat_interval",
        raw.heartbeat_interval,
        HEARTBEAT_INTERVAL,
        10 * ms,
    );
    let reconnect_min = timing(
        "control.reconnect_min",
        raw.reconnect_min,
        RECONNECT_MIN,
        ms,
    );
    let reconnect_max = timing(
        "control.reconnect_max",
        raw.reconnect_max,
        RECONNECT_MAX,
        ms,
    );
    let probe_spare_every = timing(
        "control.probe_spare_every",
        raw.probe_spare_every,
        PROBE_SPARE_EVERY,
        Duration::from_secs(1),
    );
    let probe_origin_every = timing(
        "control.probe_origin_every",
        raw.probe_origin_every,
        PROBE_ORIGIN_EVERY,
        Duration::from_secs(1),
    );
    let advertise_url = match raw.advertise_url.as_deref() {
        None => Some(None),
        Some(text) => c
            .take("control.advertise_url", OriginUrl::parse(text))
            .map(Some),
    };
    let source_address = match raw.source_address.as_deref() {
        None => Some(None),
        Some(text) => c
            .take(
                "control.source_address",
                text.parse::<std::net::IpAddr>()
                    .map_err(|_| format!("{text:?} is not an IP address (e.g. \"127.1.0.1\")")),
            )
            .map(Some),
    };
    let token = match (raw.token, raw.token_file.as_deref()) {
        (Some(_), Some(_)) => {
            c.push("control.token", "give token or token_file, not both");
            None
        }
        (None, None) => Some(None),
        (Some(token), None) => node_token(c, "control.token", token).map(Some),
        (None, Some(file)) => match std::fs::read_to_string(file) {
            Ok(text) => node_token(c, "control.token_file", text.trim().to_string()).map(Some),
            Err(e) => {
                c.push("control.token_file", format!("cannot read {file}: {e}"));
                None
            }
        },
    };
    let (reconnect_min, reconnect_max) = (reconnect_min?, reconnect_max?);
    if reconnect_max < reconnect_min {
        c.push(
            "control.reconnect_max",
            "must not be shorter than control.reconnect_min",
        );
        return None;
    }
    let tls_set = raw.tls.is_some();
    let tls = crate::tls::validate_client_tls(c, raw.tls, "control.tls");
    let urls = urls?;
    if tls_set && !urls.iter().any(|u| u.scheme == http::uri::Scheme::HTTPS) {
        c.push("control.tls", "only used with https:// control URLs");
        return None;
    }
    Some(Some(NodeControlConfig {
        url: urls.first()?.clone(),
        urls,
        weight: u32::try_from(weight?).ok()?,
        heartbeat_interval: heartbeat_interval?,
        reconnect_min,
        reconnect_max,
        probe_spare_every: probe_spare_every?,
        probe_origin_every: probe_origin_every?,
        advertise_url: advertise_url?,
        source_address: source_address?,
        token: token?,
        tls: tls?,
    }))
}

/// A token that can go in an `Authorization` header as it is.
fn node_token(c: &mut Collector, path: &str, token: String) -> Option<String> {
    if token.is_empty()
        || token
            .chars()
            .any(|ch| ch.is_whitespace() || ch.is_control())
    {
        c.push(
            path,
            "the token must be non-empty, without whitespace or control characters",
        );
        return None;
    }
    Some(token)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::{EdgeConfig, ShieldConfig};

    const EDGE: &str = "[upstream]\norigin = \"http://127.0.0.1:8000\"\n";
    const SHIELD: &str = "[origin]\nservers = [\"http://127.0.0.1:8000\"]\n";

    #[test]
    fn no_control_by_default() {
        assert_eq!(EdgeConfig::from_toml(EDGE).unwrap().control, None);
        assert_eq!(ShieldConfig::from_toml(SHIELD).unwrap().control, None);
    }

    #[test]
    fn control_gets_defaults_beside_its_url() {
        let text = format!("{EDGE}[control]\nurl = \"http://127.0.0.1:7000\"\n");
        let control = EdgeConfig::from_toml(&text).unwrap().control.unwrap();
        assert_eq!(control.url.to_string(), "http://127.0.0.1:7000");
        assert_eq!(control.weight, 1);
        assert_eq!(control.heartbeat_interval, Duration::from_secs(1));
        assert_eq!(control.reconnect_min, Duration::from_millis(100));
        assert_eq!(control.reconnect_max, Duration::from_secs(5));
        assert_eq!(control.probe_spare_every, Duration::from_secs(10));
        assert_eq!(control.probe_origin_every, Duration::from_secs(60));
        assert_eq!(control.advertise_url, None);
    }

    #[test]
    fn the_advertised_url_is_checked() {
        let text = format!(
            "{EDGE}[control]\nurl = \"http://127.0.0.1:7000\"\nadvertise_url = \"http://127.1.0.1:8080\"\n"
        );
        let control = EdgeConfig::from_toml(&text).unwrap().control.unwrap();
        assert_eq!(
            control.advertise_url.unwrap().to_string(),
            "http://127.1.0.1:8080"
        );
        let bad = format!(
            "{EDGE}[control]\nurl = \"http://127.0.0.1:7000\"\nadvertise_url = \"here\"\n\
             source_address = \"nowhere\"\n"
        );
        let errs = EdgeConfig::from_toml(&bad).unwrap_err();
        assert!(errs.mentions("control.advertise_url"), "{errs}");
        assert!(errs.mentions("control.source_address"), "{errs}");
        let sourced = format!(
            "{EDGE}[control]\nurl = \"http://127.0.0.1:7000\"\nsource_address = \"127.3.0.1\"\n"
        );
        let control = EdgeConfig::from_toml(&sourced).unwrap().control.unwrap();
        assert_eq!(control.source_address, Some([127, 3, 0, 1].into()));
    }

    #[test]
    fn several_control_replicas_are_listed_once_each() {
        let text = format!(
            "{EDGE}[control]\nurls = [\"http://10.0.0.1:7000\", \"http://10.0.0.2:7000\"]\n"
        );
        let control = EdgeConfig::from_toml(&text).unwrap().control.unwrap();
        assert_eq!(control.urls.len(), 2);
        assert_eq!(control.url.to_string(), "http://10.0.0.1:7000");
        let errs =
            |body: &str| EdgeConfig::from_toml(&format!("{EDGE}[control]\n{body}\n")).unwrap_err();
        assert!(errs("url = \"http://a:1\"\nurls = [\"http://b:1\"]").mentions("control.urls"));
        assert!(errs("urls = []").mentions("control.urls"));
        assert!(errs("urls = [\"http://a:1\", \"http://a:1\"]").mentions("control.urls[1]"));
        assert!(errs("urls = [\"http://a:1\", \"ftp://b:1\"]").mentions("control.urls[1]"));
    }

    #[test]
    fn a_shield_takes_the_same_control_table() {
        let text = format!(
            "{SHIELD}[control]\nurl = \"http://10.0.0.1:7000\"\nweight = 3\n\
             heartbeat_interval = \"500ms\"\nreconnect_min = \"50ms\"\nreconnect_max = \"2s\"\n\
             probe_spare_every = \"30s\"\nprobe_origin_every = \"5m\"\n"
        );
        let control = ShieldConfig::from_toml(&text).unwrap().control.unwrap();
        assert_eq!(control.probe_spare_every, Duration::from_secs(30));
        assert_eq!(control.probe_origin_every, Duration::from_secs(300));
        assert_eq!(control.weight, 3);
        assert_eq!(control.heartbeat_interval, Duration::from_millis(500));
        assert_eq!(control.reconnect_min, Duration::from_millis(50));
        assert_eq!(control.reconnect_max, Duration::from_secs(2));
    }

    #[test]
    fn every_bad_control_field_is_named() {
        let text = format!(
            "{EDGE}[control]\nurl = \"http://127.0.0.1:7000/v1\"\nweight = 11\n\
             heartbeat_interval = \"1ms\"\nreconnect_min = \"soon\"\nreconnect_max = \"1h\"\n\
             probe_spare_every = \"100ms\"\nprobe_origin_every = \"2h\"\n"
        );
        let errs = EdgeConfig::from_toml(&text).unwrap_err();
        for path in [
            "control.url",
            "control.weight",
            "control.heartbeat_interval",
            "control.reconnect_min",
            "control.reconnect_max",
            "control.probe_spare_every",
            "control.probe_origin_every",
        ] {
            assert!(errs.mentions(path), "{path} not reported in:\n{errs}");
        }
    }

    #[test]
    fn a_control_table_needs_a_url_and_ordered_delays() {
        let errs = EdgeConfig::from_toml(&format!("{EDGE}[control]\nweight = 2\n")).unwrap_err();
        assert!(errs.mentions("control.url"), "{errs}");
        let text = format!(
            "{SHIELD}[control]\nurl = \"http://127.0.0.1:7000\"\n\
             reconnect_min = \"2s\"\nreconnect_max = \"1s\"\n"
        );
        let errs = ShieldConfig::from_toml(&text).unwrap_err();
        assert!(errs.mentions("control.reconnect_max"), "{errs}");
        let unknown = format!("{EDGE}[control]\nurl = \"http://127.0.0.1:7000\"\nsecret = \"x\"\n");
        assert!(EdgeConfig::from_toml(&unknown)
            .unwrap_err()
            .to_string()
            .contains("secret"));
        let spaced = format!("{EDGE}[control]\nurl = \"http://127.0.0.1:7000\"\ntoken = \"a b\"\n");
        assert!(EdgeConfig::from_toml(&spaced)
            .unwrap_err()
            .mentions("control.token"));
    }
}
