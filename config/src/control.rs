//! The control plane's configuration (`verge control --config control.toml`), identified by its
//! top-level `[controller]` table.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::{Collector, ConfigErrors};
use crate::field::{bounded_duration, count, duration, socket_addr};
use crate::ids::RegionId;
use crate::units::ByteSize;

/// Everything `verge control` runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlConfig {
    /// Nodes' listener: register, heartbeat, ack and the event stream.
    pub listen: SocketAddr,
    /// Operators' listener: purges, nodes, routing, metrics (bearer token).
    pub admin_listen: SocketAddr,
    /// Where the durable purge log lives.
    pub data_dir: PathBuf,
    /// Bearer token for the admin API (16+ characters).
    pub token: String,
    /// Where `token` was read from, if from a file: read again on every reload.
    pub token_file: Option<PathBuf>,
    /// Bearer token every node must present on the node listener (register, heartbeat, ack,
    /// events); `None`: the listener is open to anyone who reaches it.
    pub node_token: Option<String>,
    /// Where `node_token` was read from, if from a file: read again on every reload.
    pub node_token_file: Option<PathBuf>,
    /// TLS on the node listener (`[controller.node_tls]`), with client certificates required
    /// when it names a `client_ca`; `None`: plain HTTP.
    pub node_tls: Option<NodeListenerTls>,
    pub health: HealthConfig,
    pub purge: PurgeConfig,
    pub streams: StreamsConfig,
    /// Per region, the other regions nearest first. Regions named only by nodes fall back to
    /// every other region in name order.
    pub regions: BTreeMap<RegionId, Vec<RegionId>>,
    /// Geo load balancing (GeoDNS and HTTP steering), when configured.
    pub geo: Option<crate::geo::GeoConfig>,
    /// Cache rules (`[[rules]]`, checked like a node's) sent to every node in the routing
    /// tables; nodes try them before their own.
    pub rules: Vec<crate::rules::RawRule>,
    /// Which shields each region's edges use (`[tiers]`).
    pub tiers: crate::tiers::TiersConfig,
    /// Where purges, registrations and tables are kept (`[store]`): the embedded log in
    /// `data_dir`, or etcd shared by several replicas.
    pub store: crate::store::StoreConfig,
}

/// The node listener's certificate, and the CA its nodes' certificates must chain to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeListenerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Nodes must present a certificate signed by this CA (mutual TLS); `None`: any client.
    pub client_ca: Option<PathBuf>,
    /// With `client_ca`: a node may speak only for the node id its certificate names (as a
    /// DNS subject alternative name), so one node's certificate cannot register, heartbeat,
    /// ack or stream as another. On by default.
    pub bind_node_id: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNodeListenerTls {
    pub cert: Option<String>,
    pub key: Option<String>,
    pub client_ca: Option<String>,
    pub bind_node_id: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthConfig {
    /// How often nodes send a heartbeat (told to them at registration).
    pub heartbeat_interval: Duration,
    /// A node without a heartbeat for this long has missed its heartbeats.
    pub heartbeat_timeout: Duration,
    /// How often control probes each node's `/healthz`, and the probe's time limit.
    pub probe_interval: Duration,
    pub probe_timeout: Duration,
    /// Consecutive good observations before a down node is up again, and bad ones before an
    /// up node is down (flap damping).
    pub rise: u32,
    pub fall: u32,
    /// A node unseen (no heartbeat, failed probes) for this long is forgotten.
    pub forget_after: Duration,
    /// For this long after control starts, a routing table that leaves out a shield its
    /// registered nodes route through is held back while that shield registers again
    /// (zero: never held).
    pub settle: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurgeConfig {
    /// Purges kept in the log; a node that missed more must flush its cache.
    pub log_retain: usize,
    pub max_body_bytes: usize,
    /// Token bucket for `POST /v1/purge`: sustained rate and burst.
    pub rate_per_second: u32,
    pub burst: u32,
    /// How long edges wait for the shields to apply a purge before they get it anyway.
    pub shield_ack_timeout: Duration,
    /// Purge statuses kept for `GET /v1/purge/{id}`.
    pub status_retain: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamsConfig {
    /// Events queued for one node; a node further behind is disconnected and resumes from the log.
    pub node_buffer: usize,
    /// Most registered nodes.
    pub max_nodes: usize,
    /// A keepalive event is sent on a stream quiet for this long.
    pub keepalive: Duration,
}

pub mod defaults {
    pub const LISTEN: &str = "127.0.0.1:7070";
    pub const ADMIN_LISTEN: &str = "127.0.0.1:7071";
    pub const HEARTBEAT_INTERVAL: &str = "1s";
    pub const HEARTBEAT_TIMEOUT: &str = "3s";
    pub const PROBE_INTERVAL: &str = "1s";
    pub const PROBE_TIMEOUT: &str = "500ms";
    pub const RISE: u64 = 2;
    pub const FALL: u64 = 2;
    pub const FORGET_AFTER: &str = "1h";
    pub const SETTLE: &str = "10s";
    pub const LOG_RETAIN: u64 = 100_000;
    pub const MAX_BODY_BYTES: &str = "1MiB";
    pub const RATE_PER_SECOND: u64 = 100;
    pub const BURST: u64 = 200;
    pub const SHIELD_ACK_TIMEOUT: &str = "2s";
    pub const STATUS_RETAIN: u64 = 10_000;
    pub const NODE_BUFFER: u64 = 4096;
    pub const MAX_NODES: u64 = 1024;
    pub const KEEPALIVE: &str = "5s";
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawControlFile {
    pub controller: Option<RawController>,
    pub health: Option<RawHealth>,
    pub purge: Option<RawPurge>,
    pub streams: Option<RawStreams>,
    #[serde(default)]
    pub regions: BTreeMap<String, RawRegion>,
    pub geo: Option<crate::geo::RawGeo>,
    pub rules: Option<Vec<crate::rules::RawRule>>,
    pub tiers: Option<crate::tiers::RawTiers>,
    pub store: Option<crate::store::RawStore>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawController {
    pub listen: Option<String>,
    pub admin_listen: Option<String>,
    pub data_dir: Option<String>,
    pub token: Option<String>,
    pub token_file: Option<String>,
    pub node_token: Option<String>,
    pub node_token_file: Option<String>,
    pub node_tls: Option<RawNodeListenerTls>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    pub heartbeat_interval: Option<String>,
    pub heartbeat_timeout: Option<String>,
    pub probe_interval: Option<String>,
    pub probe_timeout: Option<String>,
    pub rise: Option<u64>,
    pub fall: Option<u64>,
    pub forget_after: Option<String>,
    pub settle: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPurge {
    pub log_retain: Option<u64>,
    pub max_body_bytes: Option<String>,
    pub rate_per_second: Option<u64>,
    pub burst: Option<u64>,
    pub shield_ack_timeout: Option<String>,
    pub status_retain: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStreams {
    pub node_buffer: Option<u64>,
    pub max_nodes: Option<u64>,
    pub keepalive: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRegion {
    #[serde(default)]
    pub fallback: Vec<String>,
}

impl ControlConfig {
    /// Parses and validates a control configuration, reporting every problem found. A
    /// `token_file` is read here.
    pub fn from_toml(text: &str) -> Result<ControlConfig, ConfigErrors> {
        validate(crate::raw::parse(text)?)
    }

    /// This configuration with its tokens read again from `token_file` and `node_token_file`
    /// (each unchanged without one).
    pub fn reread_token_file(&self) -> Result<ControlConfig, ConfigErrors> {
        let mut c = Collector::default();
        let token = match &self.token_file {
            Some(file) => token_from_file(&mut c, "controller.token_file", file),
            None => Some(self.token.clone()),
        };
        let node_token = match &self.node_token_file {
            Some(file) => token_from_file(&mut c, "controller.node_token_file", file).map(Some),
            None => Some(self.node_token.clone()),
        };
        let value = (|| {
            Some(ControlConfig {
                token: token?,
                node_token: node_token?,
                ..self.clone()
            })
        })();
        c.finish(value)
    }
}

pub(crate) fn validate(raw: RawControlFile) -> Result<ControlConfig, ConfigErrors> {
    use defaults::*;
    let mut c = Collector::default();
    let ctl = raw.controller.unwrap_or_default();
    let addr = |c: &mut Collector, path: &str, value: Option<&str>, default: &str| {
        socket_addr(c, path, value.unwrap_or(default), "127.0.0.1:7070")
    };
    let listen = addr(&mut c, "controller.listen", ctl.listen.as_deref(), LISTEN);
    let admin_listen = addr(
        &mut c,
        "controller.admin_listen",
        ctl.admin_listen.as_deref(),
        ADMIN_LISTEN,
    );
    // Given, even if invalid: its own errors say what is wrong with it.
    let with_etcd = raw.store.as_ref().is_some_and(|s| s.etcd.is_some());
    let store = crate::store::validate_store(&mut c, raw.store);
    let data_dir = match ctl.data_dir.as_deref() {
        // With etcd the purge log is in etcd: the directory is not needed.
        Some("") | None if with_etcd => Some(PathBuf::new()),
        Some("") | None => {
            c.push(
                "controller.data_dir",
                "missing: a directory for the durable purge log, e.g. \"/var/lib/verge/control\" (or keep it in etcd: store.etcd, --etcd)",
            );
            None
        }
        Some(dir) => Some(PathBuf::from(dir)),
    };
    let token = match (ctl.token, ctl.token_file.as_deref()) {
        (Some(_), Some(_)) => {
            c.push("controller.token", "give token or token_file, not both");
            None
        }
        (None, None) => {
            c.push(
                "controller.token",
                "missing: the admin API's bearer token (token or token_file)",
            );
            None
        }
        (Some(token), None) => check_token(&mut c, "controller.token", token),
        (None, Some(file)) => token_from_file(&mut c, "controller.token_file", Path::new(file)),
    };
    let node_token = match (ctl.node_token, ctl.node_token_file.as_deref()) {
        (Some(_), Some(_)) => {
            c.push(
                "controller.node_token",
                "give node_token or node_token_file, not both",
            );
            None
        }
        (None, None) => Some(None),
        (Some(token), None) => check_token(&mut c, "controller.node_token", token).map(Some),
        (None, Some(file)) => {
            token_from_file(&mut c, "controller.node_token_file", Path::new(file)).map(Some)
        }
    };
    if let (Some(Some(node)), Some(admin)) = (&node_token, &token) {
        if node == admin {
            c.push(
                "controller.node_token",
                "must differ from the admin token: a node's token must not purge",
            );
        }
    }

    let node_tls = match ctl.node_tls {
        None => Some(None),
        Some(t) => {
            let mut file = |key: &str, value: Option<String>| match value {
                Some(v) if !v.is_empty() => Some(PathBuf::from(v)),
                _ => {
                    c.push(
                        &format!("controller.node_tls.{key}"),
                        "missing: a path to a PEM file",
                    );
                    None
                }
            };
            let (cert, key) = (file("cert", t.cert), file("key", t.key));
            let client_ca = t.client_ca.filter(|v| !v.is_empty()).map(PathBuf::from);
            if t.bind_node_id.is_some() && client_ca.is_none() {
                c.push(
                    "controller.node_tls.bind_node_id",
                    "needs controller.node_tls.client_ca: without client certificates there is no name to bind",
                );
            }
            let bind_node_id = t.bind_node_id.unwrap_or(true);
            cert.zip(key).map(|(cert, key)| {
                Some(NodeListenerTls {
                    cert,
                    key,
                    client_ca,
                    bind_node_id,
                })
            })
        }
    };

    let h = raw.health.unwrap_or_default();
    let ms = Duration::from_millis;
    let heartbeat_interval = duration(
        &mut c,
        "health.heartbeat_interval",
        h.heartbeat_interval.as_deref(),
        HEARTBEAT_INTERVAL,
        ms(10),
    );
    let heartbeat_timeout = duration(
        &mut c,
        "health.heartbeat_timeout",
        h.heartbeat_timeout.as_deref(),
        HEARTBEAT_TIMEOUT,
        ms(10),
    );
    if let (Some(i), Some(t)) = (heartbeat_interval, heartbeat_timeout) {
        if t <= i {
            c.push(
                "health.heartbeat_timeout",
                "must be longer than health.heartbeat_interval",
            );
        }
    }
    let probe_interval = duration(
        &mut c,
        "health.probe_interval",
        h.probe_interval.as_deref(),
        PROBE_INTERVAL,
        ms(10),
    );
    let probe_timeout = duration(
        &mut c,
        "health.probe_timeout",
        h.probe_timeout.as_deref(),
        PROBE_TIMEOUT,
        ms(1),
    );
    let rise = count(&mut c, "health.rise", h.rise, RISE, (1, 100));
    let fall = count(&mut c, "health.fall", h.fall, FALL, (1, 100));
    let forget_after = duration(
        &mut c,
        "health.forget_after",
        h.forget_after.as_deref(),
        FORGET_AFTER,
        ms(100),
    );
    let settle = bounded_duration(
        &mut c,
        "health.settle",
        h.settle.as_deref(),
        SETTLE,
        (Duration::ZERO, Duration::from_secs(600)),
    );

    let p = raw.purge.unwrap_or_default();
    let log_retain = count(
        &mut c,
        "purge.log_retain",
        p.log_retain,
        LOG_RETAIN,
        (1, 10_000_000),
    );
    let max_body_text = p.max_body_bytes.as_deref().unwrap_or(MAX_BODY_BYTES);
    let max_body_bytes = c
        .take("purge.max_body_bytes", ByteSize::parse(max_body_text))
        .and_then(|b| {
            if b.bytes() == 0 || b.bytes() > 64 << 20 {
                c.push("purge.max_body_bytes", "must be between 1 byte and 64MiB");
                None
            } else {
                usize::try_from(b.bytes()).ok()
            }
        });
    let rate = count(
        &mut c,
        "purge.rate_per_second",
        p.rate_per_second,
        RATE_PER_SECOND,
        (1, 1_000_000),
    );
    let burst = count(&mut c, "purge.burst", p.burst, BURST, (1, 1_000_000));
    let shield_ack_timeout = duration(
        &mut c,
        "purge.shield_ack_timeout",
        p.shield_ack_timeout.as_deref(),
        SHIELD_ACK_TIMEOUT,
        ms(0),
    );
    let status_retain = count(
        &mut c,
        "purge.status_retain",
        p.status_retain,
        STATUS_RETAIN,
        (1, 1_000_000),
    );

    let s = raw.streams.unwrap_or_default();
    let node_buffer = count(
        &mut c,
        "streams.node_buffer",
        s.node_buffer,
        NODE_BUFFER,
        (1, 1_000_000),
    );
    let max_nodes = count(
        &mut c,
        "streams.max_nodes",
        s.max_nodes,
        MAX_NODES,
        (1, 100_000),
    );
    let keepalive = duration(
        &mut c,
        "streams.keepalive",
        s.keepalive.as_deref(),
        KEEPALIVE,
        ms(10),
    );

    let mut regions = BTreeMap::new();
    for (name, region) in raw.regions {
        let path = format!("regions.{name}");
        let Some(id) = c.take(&path, RegionId::new(&name)) else {
            continue;
        };
        let mut fallback = Vec::new();
        for (i, other) in region.fallback.iter().enumerate() {
            let at = format!("{path}.fallback[{i}]");
            if let Some(other) = c.take(&at, RegionId::new(other)) {
                if other == id {
                    c.push(&at, format!("{other} is the region itself"));
                } else if fallback.contains(&other) {
                    c.push(&at, format!("{other} is listed twice"));
                } else {
                    fallback.push(other);
                }
            }
        }
        regions.insert(id, fallback);
    }

    let geo = raw.geo.map(|g| crate::geo::validate(&mut c, g));
    // Checked as a node would check them; sent as written.
    let rules = raw.rules.unwrap_or_default();
    let rules_valid = crate::rules::validate_rules(&mut c, Some(rules.clone())).is_some();
    let tiers = crate::tiers::validate_tiers(&mut c, raw.tiers);

    let health = (|| {
        Some(HealthConfig {
            heartbeat_interval: heartbeat_interval?,
            heartbeat_timeout: heartbeat_timeout?,
            probe_interval: probe_interval?,
            probe_timeout: probe_timeout?,
            rise: u32::try_from(rise?).ok()?,
            fall: u32::try_from(fall?).ok()?,
            forget_after: forget_after?,
            settle: settle?,
        })
    })();
    let purge = (|| {
        Some(PurgeConfig {
            log_retain: usize::try_from(log_retain?).ok()?,
            max_body_bytes: max_body_bytes?,
            rate_per_second: u32::try_from(rate?).ok()?,
            burst: u32::try_from(burst?).ok()?,
            shield_ack_timeout: shield_ack_timeout?,
            status_retain: usize::try_from(status_retain?).ok()?,
        })
    })();
    let streams = (|| {
        Some(StreamsConfig {
            node_buffer: usize::try_from(node_buffer?).ok()?,
            max_nodes: usize::try_from(max_nodes?).ok()?,
            keepalive: keepalive?,
        })
    })();
    let value = (|| {
        Some(ControlConfig {
            listen: listen?,
            admin_listen: admin_listen?,
            data_dir: data_dir?,
            token: token?,
            token_file: ctl.token_file.as_deref().map(PathBuf::from),
            node_token: node_token?,
            node_token_file: ctl.node_token_file.as_deref().map(PathBuf::from),
            node_tls: node_tls?,
            health: health?,
            purge: purge?,
            streams: streams?,
            regions,
            geo: match geo {
                Some(g) => Some(g?),
                None => None,
            },
            rules: rules_valid.then_some(rules)?,
            tiers: tiers?,
            store: store?,
        })
    })();
    c.finish(value)
}

/// A token read from `file` (surrounding whitespace dropped) and checked.
fn token_from_file(c: &mut Collector, path: &str, file: &Path) -> Option<String> {
    match std::fs::read_to_string(file) {
        Ok(text) => check_token(c, path, text.trim().to_string()),
        Err(e) => {
            c.push(path, format!("cannot read {}: {e}", file.display()));
            None
        }
    }
}

fn check_token(c: &mut Collector, path: &str, token: String) -> Option<String> {
    if token.len() < 16 {
        c.push(path, "the token must be at least 16 characters long");
        None
    } else if token
        .chars()
        .any(|ch| ch.is_whitespace() || ch.is_control())
    {
        c.push(
            path,
            "the token must not contain whitespace or control characters",
        );
        None
    } else {
        Some(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ControlQuickStart;

    const MINIMAL: &str = r#"
        [controller]
        data_dir = "/tmp/verge-control"
        token = "0123456789abcdef"
    "#;

    #[test]
    fn a_minimal_file_takes_the_defaults() {
        let config = ControlConfig::from_toml(MINIMAL).unwrap();
        assert_eq!(config.listen, "127.0.0.1:7070".parse().unwrap());
        assert_eq!(config.health.rise, 2);
        assert_eq!(config.purge.log_retain, 100_000);
        assert_eq!(config.streams.keepalive, Duration::from_secs(5));
        assert!(config.regions.is_empty());
    }

    #[test]
    fn every_bad_value_is_reported_with_its_key() {
        let text = r#"
            [controller]
            listen = "nowhere"
            token = "short"
            [health]
            heartbeat_interval = "2s"
            heartbeat_timeout = "1s"
            rise = 0
            [purge]
            log_retain = 0
            max_body_bytes = "1TiB"
            [streams]
            keepalive = "soon"
            [regions.us]
            fallback = ["us", "eu", "eu"]
        "#;
        let errors = ControlConfig::from_toml(text).unwrap_err();
        for key in [
            "controller.listen",
            "controller.data_dir",
            "controller.token",
            "health.heartbeat_timeout",
            "health.rise",
            "purge.log_retain",
            "purge.max_body_bytes",
            "streams.keepalive",
            "regions.us.fallback[0]",
            "regions.us.fallback[2]",
        ] {
            assert!(errors.mentions(key), "{key} not in {errors}");
        }
    }

    #[test]
    fn a_node_certificate_is_bound_to_its_node_id_unless_turned_off() {
        let with =
            |tls: &str| ControlConfig::from_toml(&format!("{MINIMAL}[controller.node_tls]\n{tls}"));
        let files = "cert = \"c.pem\"\nkey = \"k.pem\"\n";
        let bound = with(&format!("{files}client_ca = \"ca.pem\"\n")).unwrap();
        assert!(bound.node_tls.unwrap().bind_node_id);
        let open = with(&format!(
            "{files}client_ca = \"ca.pem\"\nbind_node_id = false\n"
        ))
        .unwrap();
        assert!(!open.node_tls.unwrap().bind_node_id);
        // Without client certificates there is nothing to bind to.
        let errors = with(&format!("{files}bind_node_id = true\n")).unwrap_err();
        assert!(
            errors.mentions("controller.node_tls.bind_node_id"),
            "{errors}"
        );
    }

    #[test]
    fn the_token_comes_from_a_file_when_asked() {
        let dir = std::env::temp_dir().join(format!("verge-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("token");
        std::fs::write(&file, "abcdefghijklmnopqrstuvwxyz\n").unwrap();
        let node_file = dir.join("node-token");
        std::fs::write(&node_file, "node-token-0123456789\n").unwrap();
        let start = |token_file: &str, node_token_file: Option<&str>| {
            ControlConfig::quick_start(&ControlQuickStart {
                listen: "127.0.0.1:0",
                admin_listen: "127.0.0.1:0",
                token_file,
                data_dir: dir.to_str().unwrap(),
                node_token_file,
                etcd: None,
            })
        };
        let (file, node_file) = (file.to_str().unwrap(), node_file.to_str().unwrap());
        let config = start(file, Some(node_file)).unwrap();
        assert_eq!(config.token, "abcdefghijklmnopqrstuvwxyz");
        assert_eq!(config.node_token.as_deref(), Some("node-token-0123456789"));
        // A changed file is read again on reload.
        std::fs::write(node_file, "node-token-abcdefghij\n").unwrap();
        let reread = config.reread_token_file().unwrap();
        assert_eq!(reread.node_token.as_deref(), Some("node-token-abcdefghij"));
        // The node token cannot be the admin token.
        std::fs::write(node_file, "abcdefghijklmnopqrstuvwxyz\n").unwrap();
        let same = start(file, Some(node_file)).unwrap_err();
        assert!(same.mentions("controller.node_token"), "{same}");
        let missing = start("/nonexistent/token", None).unwrap_err();
        assert!(missing.mentions("controller.token_file"), "{missing}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_unknown_key_is_refused_by_path() {
        let errors = ControlConfig::from_toml("[controller]\nlisten_on = \"x\"\n").unwrap_err();
        assert!(errors.to_string().contains("listen_on"), "{errors}");
    }
}
