//! Typed configuration for Verge.
//!
//! Configuration is a pipeline, as in every role:
//!
//! - [`raw`]: serde structs that mirror the TOML file (`deny_unknown_fields`), with sizes and
//!   durations still as text so that one bad value does not hide the others; parsing a text into
//!   them, where syntax, type and unknown-key errors are located by key path and line;
//! - validation that turns the raw structs into typed config and collects *every* problem with
//!   its key path ([`ConfigErrors`]), one module per role and per shared table:
//!   - [`edge`], [`shield`], [`control`]: each role's file;
//!   - [`node`]: the tables every cache node has (identity, `[server]`, `[cache]`, `[admin]`,
//!     `[tls]`, `[control]`), validated once for edges and shields;
//!   - [`upstream`]: where misses go (`[upstream]`, a shield's pool), and origin URLs;
//!   - [`shields`]: the origin shields an edge sends misses to, and how a node uses the
//!     shields above it (an edge's `[shields]`, a shield's `[parents]`);
//!   - [`node_control`]: the optional `[control]` table of an edge or shield;
//!   - [`access_log`]: the `[access_log]` table of an edge or shield;
//!   - [`compression`]: an edge's `[compression]` table (encodings, types, levels);
//!   - [`rules`]: the `[[rules]]` of an edge or shield (per host and path TTLs, key, cookies);
//!   - [`geo`]: control's `[geo]` table (GeoDNS and HTTP steering);
//!   - [`tls`]: HTTPS listeners and certificates (`[tls]`), and TLS towards upstreams;
//!   - `field`: one field's value or default, parsed and range-checked under its key path;
//! - [`quick_start`]: each role's configuration from its command line, without a file;
//! - [`reload`]: where a running role's configuration comes from and what a reload answers;
//! - [`units`]: the typed values themselves ([`ByteSize`], durations) and their parsers;
//! - [`ids`]: identifier newtypes ([`NodeId`], [`RegionId`]);
//! - [`wire`]: what control and the nodes exchange (routing tables, purges, events).
//!
//! Loading from a string is pure ([`EdgeConfig::from_toml`]); reading a file is a thin wrapper
//! ([`ConfigFile::from_file`]).

pub mod access_log;
pub mod compression;
pub mod control;
pub mod edge;
mod error;
mod field;
pub mod geo;
pub mod ids;
pub mod node;
pub mod node_control;
#[cfg(test)]
mod properties;
pub mod quick_start;
pub mod raw;
pub mod reload;
pub mod rules;
pub mod shield;
pub mod shields;
pub mod store;
pub mod tiers;
pub mod tls;
pub mod units;
pub mod upstream;
pub mod wire;

pub use access_log::{AccessLogConfig, AccessLogFormat, AccessLogTarget};
pub use control::ControlConfig;
pub use edge::EdgeConfig;
pub use error::{ConfigError, ConfigErrors};
pub use geo::GeoConfig;
pub use ids::{NodeId, RegionId};
pub use node::{AdminConfig, CacheConfig, NodeConfig, NodeView, OverrideHeaders, ServerConfig};
pub use node_control::NodeControlConfig;
pub use quick_start::{ControlQuickStart, EdgeQuickStart, ShieldQuickStart};
pub use reload::{ConfigFile, ConfigSource, FileWatch, ReloadError, ReloadReport};
pub use rules::{Rule, RuleSet};
pub use shield::{OriginPoolConfig, ShieldConfig};
pub use shields::{ShieldSpec, ShieldsConfig};
pub use tls::{CertificateFiles, ClientTlsConfig, TlsServerConfig, TlsVersion, UnknownSni};
pub use units::{parse_duration, ByteSize};
pub use upstream::{OriginUrl, UpstreamConfig};

/// The role a configuration file is written for, told by its top-level table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Edge,
    Shield,
    Control,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Edge => "edge",
            Role::Shield => "shield",
            Role::Control => "control",
        }
    }
}

/// Tells which role a configuration text is for, from its top-level `[edge]` table.
pub fn detect_role(text: &str) -> Result<Role, ConfigErrors> {
    let table: toml::Table = raw::parse(text)?;
    let roles: Vec<Role> = [
        ("edge", Role::Edge),
        ("shield", Role::Shield),
        ("controller", Role::Control),
    ]
    .into_iter()
    .filter(|(table_name, _)| table.contains_key(*table_name))
    .map(|(_, role)| role)
    .collect();
    match roles.as_slice() {
        [role] => Ok(*role),
        [] => Err(ConfigErrors::single(
            "",
            "cannot tell the role of this file: expected a top-level [edge], [shield] or \
             [controller] table",
        )),
        _ => Err(ConfigErrors::single(
            "",
            "more than one of [edge], [shield] and [controller]: a file configures one role",
        )),
    }
}
