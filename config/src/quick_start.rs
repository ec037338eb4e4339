//! Quick starts: a role started from its command line alone (`verge edge --origin ...`), without
//! a file. The flags become the raw tables a file would hold, so they are validated, defaulted
//! and reported by the same key paths as a file.

use crate::control::{ControlConfig, RawControlFile, RawController};
use crate::edge::EdgeConfig;
use crate::error::ConfigErrors;
use crate::raw::{
    RawAccessLog, RawAdmin, RawEdgeFile, RawNode, RawNodeControl, RawOriginPool, RawServer,
    RawShieldFile, RawShieldMember, RawShields, RawUpstream,
};
use crate::shield::ShieldConfig;
use crate::tls::{RawCertificate, RawTls};

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
    /// The file holding the token control's node listener asks for (`control.token_file`).
    pub control_token_file: Option<&'a str>,
    /// HTTPS listeners; with any, `tls_certificates` must name at least one pair.
    pub tls_listen: &'a [String],
    /// (certificate PEM, key PEM) file pairs; SNI picks among them, the first is the default.
    pub tls_certificates: &'a [(String, String)],
    /// Where listening sockets are handed to a successor process.
    pub upgrade_socket: Option<&'a str>,
    /// `--access-log PATH` (`-`: stdout); `None`: no access log.
    pub access_log: Option<&'a str>,
}

/// The values `verge shield` takes on its command line instead of a file.
#[derive(Debug, Clone, Default)]
pub struct ShieldQuickStart<'a> {
    pub listen: &'a str,
    pub admin_listen: &'a str,
    /// The origin pool's servers.
    pub origins: &'a [String],
    /// This node's id (`shield.id`); `None`: the default.
    pub node_id: Option<&'a str>,
    /// This node's region (`shield.region`); `None`: the default.
    pub region: Option<&'a str>,
    /// Base URL of control's node listener; `None`: no control plane.
    pub control: Option<&'a str>,
    /// The file holding the token control's node listener asks for (`control.token_file`).
    pub control_token_file: Option<&'a str>,
    /// `--access-log PATH` (`-`: stdout); `None`: no access log.
    pub access_log: Option<&'a str>,
}

/// What a quick start (`verge control --listen ... --token-file ... --data-dir ...`) gives.
pub struct ControlQuickStart<'a> {
    pub listen: &'a str,
    pub admin_listen: &'a str,
    pub token_file: &'a str,
    pub data_dir: &'a str,
    /// The file holding the token nodes must present (`controller.node_token_file`).
    pub node_token_file: Option<&'a str>,
    /// `--etcd URL,URL…`: replicas sharing this etcd cluster instead of the embedded log.
    pub etcd: Option<&'a [String]>,
}

impl EdgeConfig {
    /// The configuration for a quick start without a file: defaults plus these values. Each
    /// shield URL becomes a ring member whose id is its `host_port`, so edges started with the
    /// same URLs agree on placement whatever their order.
    pub fn quick_start(start: &EdgeQuickStart<'_>) -> Result<EdgeConfig, ConfigErrors> {
        let raw = RawEdgeFile {
            edge: identity(start.node_id, start.region),
            server: Some(RawServer {
                listen: Some(start.listen.to_string()),
                admin_listen: Some(start.admin_listen.to_string()),
                upgrade_socket: start.upgrade_socket.map(str::to_string),
                access_log: access_log(start.access_log),
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
                        id: Some(shield_id(url)),
                        url: Some(url.clone()),
                        weight: None,
                        region: None,
                    })
                    .collect(),
                ..RawShields::default()
            }),
            control: control(start.control, start.control_token_file),
            ..RawEdgeFile::default()
        };
        crate::edge::validate(raw)
    }
}

impl ShieldConfig {
    /// The configuration for a quick start without a file: defaults plus these values.
    pub fn quick_start(start: &ShieldQuickStart<'_>) -> Result<ShieldConfig, ConfigErrors> {
        crate::shield::validate(RawShieldFile {
            shield: identity(start.node_id, start.region),
            server: Some(RawServer {
                listen: Some(start.listen.to_string()),
                admin_listen: Some(start.admin_listen.to_string()),
                access_log: access_log(start.access_log),
                ..RawServer::default()
            }),
            origin: Some(RawOriginPool {
                servers: start.origins.to_vec(),
                ..RawOriginPool::default()
            }),
            control: control(start.control, start.control_token_file),
            ..RawShieldFile::default()
        })
    }
}

impl ControlConfig {
    /// The configuration for a quick start without a file: defaults plus these values. The
    /// token file is read here.
    pub fn quick_start(start: &ControlQuickStart<'_>) -> Result<ControlConfig, ConfigErrors> {
        crate::control::validate(RawControlFile {
            controller: Some(RawController {
                listen: Some(start.listen.to_string()),
                admin_listen: Some(start.admin_listen.to_string()),
                data_dir: Some(start.data_dir.to_string()),
                token: None,
                token_file: Some(start.token_file.to_string()),
                node_token: None,
                node_token_file: start.node_token_file.map(str::to_string),
                node_tls: None,
            }),
            store: start.etcd.map(|urls| crate::store::RawStore {
                etcd: Some(urls.to_vec()),
                ..crate::store::RawStore::default()
            }),
            ..RawControlFile::default()
        })
    }
}

/// A node's role table (`[edge]`, `[shield]`) from its `--node-id` and `--region`.
fn identity(node_id: Option<&str>, region: Option<&str>) -> Option<RawNode> {
    Some(RawNode {
        id: node_id.map(str::to_string),
        region: region.map(str::to_string),
    })
}

/// A node's `[control]` table from its `--control` URL.
/// The `[control]` table of `--control URL[,URL…]` (several: control's replicas).
fn control(url: Option<&str>, token_file: Option<&str>) -> Option<RawNodeControl> {
    url.map(|url| {
        let urls: Vec<String> = url.split(',').map(|u| u.trim().to_string()).collect();
        let (url, urls) = match urls.len() {
            1 => (urls.into_iter().next(), None),
            _ => (None, Some(urls)),
        };
        RawNodeControl {
            url,
            urls,
            token_file: token_file.map(str::to_string),
            ..RawNodeControl::default()
        }
    })
}

/// The `[access_log]` table of `--access-log PATH`: every other key at its default.
fn access_log(path: Option<&str>) -> Option<RawAccessLog> {
    path.map(|path| RawAccessLog {
        path: Some(path.to_string()),
        ..RawAccessLog::default()
    })
}

/// A ring id for a shield given only by URL: its authority with `:` as `_`.
fn shield_id(url: &str) -> String {
    let authority = url
        .split_once("://")
        .map_or(url, |(_, rest)| rest)
        .trim_end_matches('/');
    authority.replace(':', "_")
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(cfg.server.access_log, None);
    }

    #[test]
    fn quick_start_writes_an_access_log_where_asked() {
        use crate::{AccessLogFormat, AccessLogTarget};
        let edge = EdgeQuickStart {
            listen: "127.0.0.1:0",
            admin_listen: "127.0.0.1:0",
            origin: "http://127.0.0.1:9",
            access_log: Some("-"),
            ..EdgeQuickStart::default()
        };
        let log = EdgeConfig::quick_start(&edge).unwrap().server.access_log;
        let log = log.unwrap();
        assert_eq!(log.target, AccessLogTarget::Stdout);
        assert_eq!(log.format, AccessLogFormat::Json);
        let origins = ["http://127.0.0.1:8000".to_string()];
        let shield = ShieldQuickStart {
            listen: "127.0.0.1:0",
            admin_listen: "127.0.0.1:0",
            origins: &origins,
            access_log: Some("/tmp/shield-access.log"),
            ..ShieldQuickStart::default()
        };
        let log = ShieldConfig::quick_start(&shield)
            .unwrap()
            .server
            .access_log;
        assert_eq!(
            log.unwrap().target,
            AccessLogTarget::File("/tmp/shield-access.log".into())
        );
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

    #[test]
    fn quick_start_takes_every_origin() {
        let origins = [
            "http://127.0.0.1:8000".to_string(),
            "http://127.0.0.1:8001".to_string(),
        ];
        let start = ShieldQuickStart {
            listen: "127.0.0.1:0",
            admin_listen: "127.0.0.1:0",
            origins: &origins,
            ..ShieldQuickStart::default()
        };
        let cfg = ShieldConfig::quick_start(&start).unwrap();
        assert_eq!(cfg.origin.servers.len(), 2);
        assert_eq!(cfg.control, None);
        let none = ShieldQuickStart {
            origins: &[],
            ..start.clone()
        };
        assert!(ShieldConfig::quick_start(&none)
            .unwrap_err()
            .mentions("origin.servers"));
        let named = ShieldQuickStart {
            node_id: Some("shield-eu-1"),
            region: Some("eu"),
            control: Some("http://127.0.0.1:7000"),
            ..start
        };
        let cfg = ShieldConfig::quick_start(&named).unwrap();
        assert_eq!(cfg.id.as_str(), "shield-eu-1");
        assert_eq!(cfg.region.as_str(), "eu");
        assert_eq!(
            cfg.control.unwrap().url.to_string(),
            "http://127.0.0.1:7000"
        );
    }
}
