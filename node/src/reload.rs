//! Reloading a running cache node's configuration without a restart.
//!
//! A reload reads the configuration again, validates it whole, and compares it with the one
//! serving. Settings only a restart can change (the node's id, its worker threads...) refuse
//! the reload. Everything else is prepared aside first — certificates loaded, new listeners
//! bound, a new upstream built — and only when every part is ready is it put in service:
//!
//! - the pipeline (upstream, range limits) is swapped; requests in flight finish on the old one;
//! - listener limits apply to connections accepted from then on;
//! - cache limits resize the store in place, keeping what fits;
//! - admin token and body bound apply to the next admin call;
//! - certificates and TLS settings apply to the next handshake;
//! - listeners that appeared start accepting, those that disappeared stop accepting and drain.
//!
//! If any preparation fails, nothing changes and the error says what.

use prometheus::{IntCounterVec, IntGauge, Opts, Registry};
use verge_config::{ConfigFile, NodeConfig, ReloadError, ReloadReport};

use crate::metrics::NodeMetrics;
use crate::settings::NodeSettings;
use crate::upstream::Upstream;
use crate::StartError;

pub(crate) mod plan;

/// Reloads a node's configuration; what SIGHUP, the config file watch and
/// `POST /v1/reload` call.
pub trait Reload: Send + Sync {
    /// Reads the configuration again and applies what changed, all or nothing.
    fn reload(&self) -> Result<ReloadReport, ReloadError>;

    /// The configuration version serving now.
    fn version(&self) -> u64;

    /// The file the configuration comes from, to watch; `None` for the command line.
    fn watched_file(&self) -> Option<std::path::PathBuf>;
}

/// A cache role (edge, shield) as the node runtime sees it: its configuration, its upstream,
/// how both are built, and what of them a reload may change. Everything else a node does is
/// the runtime's, the same for every role.
pub trait Role: Sized + Send + Sync + 'static {
    type Config: ConfigFile + NodeConfig + Clone + PartialEq + Send + Sync + 'static;
    type Upstream: Upstream;

    /// The role's table in configuration files (`edge`, `shield`), for key paths.
    const TABLE: &'static str;

    /// The settings every cache node has.
    fn settings(config: &Self::Config) -> NodeSettings<'_> {
        NodeSettings::new(config.node())
    }

    /// Builds the role and its first upstream, with the node's registry and metrics.
    fn start(
        config: &Self::Config,
        registry: &Registry,
        metrics: &NodeMetrics,
    ) -> Result<(Self, Self::Upstream), StartError>;

    /// Completes once the first upstream may serve (a shield's first name lookups).
    fn ready(&self, _upstream: &Self::Upstream) -> impl std::future::Future<Output = ()> + Send {
        async {}
    }

    /// The role's settings that differ and need a new upstream (`upstream`, `shields`...).
    fn upstream_changes(&self, old: &Self::Config, new: &Self::Config) -> Vec<String>;

    /// Builds the upstream `config` describes (not yet serving).
    fn build_upstream(&self, config: &Self::Config) -> Result<Self::Upstream, String>;
}

/// The names, in the order given, of the settings whose old and new values differ: each is
/// given with whether they do (for [`Role::upstream_changes`]).
pub fn differing(settings: &[(&str, bool)]) -> Vec<String> {
    settings
        .iter()
        .filter(|(_, differs)| *differs)
        .map(|(name, _)| name.to_string())
        .collect()
}

/// `verge_config_reloads_total{result}` and `verge_config_version`.
#[derive(Clone)]
pub struct ReloadMetrics {
    pub reloads: IntCounterVec,
    pub version: IntGauge,
}

impl ReloadMetrics {
    pub fn register(registry: &Registry) -> Result<ReloadMetrics, prometheus::Error> {
        let reloads = IntCounterVec::new(
            Opts::new(
                "verge_config_reloads_total",
                "Configuration reloads by result (ok, unchanged, invalid, needs_restart, failed).",
            ),
            &["result"],
        )?;
        let version = IntGauge::new(
            "verge_config_version",
            "Version of the configuration serving: 1 at start, one more per applied reload.",
        )?;
        verge_serve::register_metrics!(registry; reloads, version);
        for result in ["ok", "unchanged", "invalid", "needs_restart", "failed"] {
            reloads.with_label_values(&[result]);
        }
        version.set(1);
        Ok(ReloadMetrics { reloads, version })
    }
}
