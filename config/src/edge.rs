//! The edge role's configuration: the node tables every cache node has ([`crate::node`]), an
//! `[upstream]` origin and the `[shields]` that misses may go to instead.

use crate::error::{Collector, ConfigErrors};
use crate::ids::{NodeId, RegionId};
use crate::node::{validate_node, NodeConfig, NodeView, RawNodeSection};
use crate::node_control::NodeControlConfig;
use crate::raw::RawEdgeFile;
use crate::shields::{validate_shields, ShieldsConfig};
use crate::tls::TlsServerConfig;
use crate::upstream::validate_upstream;

pub use crate::node::{AdminConfig, CacheConfig, ServerConfig};
pub use crate::upstream::{OriginUrl, UpstreamConfig};

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

impl NodeConfig for EdgeConfig {
    fn node(&self) -> NodeView<'_> {
        NodeView {
            role: crate::wire::NodeRole::Edge,
            tls: self.tls.as_ref(),
            control: self.control.as_ref(),
            id: &self.id,
            region: &self.region,
            server: &self.server,
            cache: &self.cache,
            admin: &self.admin,
            upstream: &self.upstream,
        }
    }
}

/// Defaults of an edge's tables, in one place so the README and examples can name them.
pub mod defaults {
    pub use crate::node::defaults::*;
    pub use crate::upstream::defaults::*;
}

impl EdgeConfig {
    /// Parses and validates an edge configuration, reporting every problem found.
    pub fn from_toml(text: &str) -> Result<EdgeConfig, ConfigErrors> {
        validate(crate::raw::parse(text)?)
    }
}

pub(crate) fn validate(raw: RawEdgeFile) -> Result<EdgeConfig, ConfigErrors> {
    let mut c = Collector::default();
    let node = validate_node(
        &mut c,
        crate::wire::NodeRole::Edge,
        RawNodeSection {
            identity: raw.edge,
            server: raw.server,
            cache: raw.cache,
            admin: raw.admin,
            tls: raw.tls,
            control: raw.control,
        },
    );
    let upstream = validate_upstream(&mut c, raw.upstream.unwrap_or_default(), "upstream");
    let shields = validate_shields(&mut c, raw.shields.unwrap_or_default());
    let value = match (node, upstream, shields) {
        (Some(node), Some(upstream), Some(shields)) => Some(EdgeConfig {
            id: node.id,
            region: node.region,
            server: node.server,
            cache: node.cache,
            upstream,
            admin: node.admin,
            shields,
            control: node.control,
            tls: node.tls,
        }),
        _ => None,
    };
    c.finish(value)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::ByteSize;

    /// An edge file with only what has no default; other tables' tests start from it too.
    pub(crate) const MINIMAL: &str = r#"
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
    fn unknown_keys_are_refused_by_name() {
        let text = format!("{MINIMAL}\n[cache]\nmax_byte = \"1MiB\"\n");
        let errs = EdgeConfig::from_toml(&text).unwrap_err();
        assert!(errs.to_string().contains("max_byte"), "{errs}");
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
}
