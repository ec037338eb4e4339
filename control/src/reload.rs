//! Reloading control's configuration without a restart: read the source again, compare the new
//! configuration with the one in force ([`changes`]), refuse settings only a restart can change,
//! and apply the rest as one step — or nothing.
//!
//! What a reload changes, and when it shows:
//!
//! - `controller.token`: the admin API's next request;
//! - `purge`: the rate limit (a fresh token bucket), the body limit, the shields' ack timeout
//!   and the statuses kept, from the next purge;
//! - `health`: the health loop's next round; the heartbeat interval told to nodes at their next
//!   registration;
//! - `streams`: streams opened and nodes registered from now on (open streams keep theirs);
//! - `regions`: a new routing table version, pushed to every node, if the routes change;
//! - `rules`: a new routing table version carrying them, pushed to every node;
//! - `geo`: a new steering plan and zone, swapped atomically (answers in flight finish on the
//!   old one).
//!
//! Listeners, the bound on DNS queries answered at once, the data directory and the purge log's
//! retention are fixed when control starts.

use std::sync::{Arc, Mutex, MutexGuard};

use verge_config::reload::{ConfigSource, ReloadError, ReloadReport};
use verge_config::{ConfigFile, ControlConfig};

use crate::geo::LiveGeo;
use crate::service::Control;

/// Reloads a running control's configuration; a cheap handle to clone and share.
///
/// Reloads are serialised: one waits for another to finish. [`ControlReloader::reload`] and
/// [`ControlReloader::reload_with`] read files (the source, the token file, a GeoIP database),
/// so async code calls [`ControlReloader::reload_async`] instead.
#[derive(Clone)]
pub struct ControlReloader {
    inner: Arc<Inner>,
}

struct Inner {
    control: Arc<Control>,
    /// Geo steering's state in force, when `[geo]` was configured at start.
    geo: Option<Arc<LiveGeo>>,
    source: ConfigSource,
    /// The configuration version in force. Held for the whole of a reload, which serialises
    /// reloads.
    version: Mutex<u64>,
}

/// What differs between two configurations, by setting group.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    /// Groups a reload puts in force (`controller.token`, `controller.node_token`, `health`,
    /// `purge`, `streams`, `regions`, `rules`, `tiers`, `geo`), in that order.
    pub applied: Vec<&'static str>,
    /// Settings only a restart can change, with their key paths.
    pub restart: Vec<&'static str>,
}

/// Compares the configuration in force with a new one.
pub fn changes(old: &ControlConfig, new: &ControlConfig) -> Changes {
    let mut c = Changes::default();
    let mut restart = |differ: bool, key: &'static str| {
        if differ {
            c.restart.push(key);
        }
    };
    restart(old.listen != new.listen, "controller.listen");
    restart(
        old.admin_listen != new.admin_listen,
        "controller.admin_listen",
    );
    restart(old.data_dir != new.data_dir, "controller.data_dir");
    restart(old.node_tls != new.node_tls, "controller.node_tls");
    // The replica's connection to etcd and its name in the replica set.
    restart(old.store != new.store, "store");
    // The purge log keeps what it was opened with.
    restart(
        old.purge.log_retain != new.purge.log_retain,
        "purge.log_retain",
    );
    match (&old.geo, &new.geo) {
        (Some(old), Some(new)) => {
            restart(old.dns_listen != new.dns_listen, "geo.dns_listen");
            restart(
                old.dns_max_concurrent_queries != new.dns_max_concurrent_queries,
                "geo.dns_max_concurrent_queries",
            );
            restart(old.http_listen != new.http_listen, "geo.http_listen");
        }
        // Geo steering's listeners are bound when control starts.
        (None, Some(_)) | (Some(_), None) => restart(true, "geo"),
        (None, None) => {}
    }

    let mut applied = |differ: bool, group: &'static str| {
        if differ {
            c.applied.push(group);
        }
    };
    applied(
        (&old.token, &old.token_file) != (&new.token, &new.token_file),
        "controller.token",
    );
    applied(
        (&old.node_token, &old.node_token_file) != (&new.node_token, &new.node_token_file),
        "controller.node_token",
    );
    applied(old.health != new.health, "health");
    let runtime_purge = |c: &ControlConfig| verge_config::control::PurgeConfig {
        log_retain: 0,
        ..c.purge.clone()
    };
    applied(runtime_purge(old) != runtime_purge(new), "purge");
    applied(old.streams != new.streams, "streams");
    applied(old.regions != new.regions, "regions");
    applied(old.rules != new.rules, "rules");
    applied(old.tiers != new.tiers, "tiers");
    if let (Some(old), Some(new)) = (&old.geo, &new.geo) {
        let steering = |g: &verge_config::geo::GeoConfig| verge_config::geo::GeoConfig {
            dns_listen: None,
            dns_max_concurrent_queries: 0,
            http_listen: None,
            ..g.clone()
        };
        applied(steering(old) != steering(new), "geo");
    }
    c
}

impl ControlReloader {
    pub(crate) fn new(
        control: Arc<Control>,
        geo: Option<Arc<LiveGeo>>,
        source: ConfigSource,
    ) -> ControlReloader {
        control.metrics.config_version.set(1);
        ControlReloader {
            inner: Arc::new(Inner {
                control,
                geo,
                source,
                version: Mutex::new(1),
            }),
        }
    }

    pub(crate) fn control(&self) -> &Arc<Control> {
        &self.inner.control
    }

    /// Where [`ControlReloader::reload`] reads the configuration.
    pub fn source(&self) -> &ConfigSource {
        &self.inner.source
    }

    /// The configuration version in force: 1 at start, one more per applied change.
    pub fn version(&self) -> u64 {
        *self.lock()
    }

    /// Reads the source again and applies what changed. A file is parsed and validated whole;
    /// from the command line, only the token file (if any) is read again.
    pub fn reload(&self) -> Result<ReloadReport, ReloadError> {
        let mut version = self.lock();
        let outcome = self
            .read_source()
            .and_then(|new| self.apply(&mut version, new));
        self.record(&outcome);
        outcome
    }

    /// Applies `new` in place of the configuration in force.
    pub fn reload_with(&self, new: ControlConfig) -> Result<ReloadReport, ReloadError> {
        let mut version = self.lock();
        let outcome = self.apply(&mut version, new);
        self.record(&outcome);
        outcome
    }

    /// [`ControlReloader::reload`] on a blocking thread, for async callers.
    pub async fn reload_async(&self) -> Result<ReloadReport, ReloadError> {
        let reloader = self.clone();
        tokio::task::spawn_blocking(move || reloader.reload())
            .await
            .unwrap_or_else(|e| Err(ReloadError::Apply(format!("the reload stopped: {e}"))))
    }

    fn lock(&self) -> MutexGuard<'_, u64> {
        self.inner
            .version
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn read_source(&self) -> Result<ControlConfig, ReloadError> {
        let read = match &self.inner.source {
            ConfigSource::File(path) => ControlConfig::from_file(path),
            ConfigSource::CommandLine => self.inner.control.config().reread_token_file(),
        };
        read.map_err(|errors| ReloadError::Invalid {
            source_name: self.inner.source.describe(),
            errors,
        })
    }

    /// Refuses, or applies every change at once; `version` is the lock's guard.
    fn apply(&self, version: &mut u64, new: ControlConfig) -> Result<ReloadReport, ReloadError> {
        let control = &self.inner.control;
        let changes = changes(&control.config(), &new);
        if !changes.restart.is_empty() {
            return Err(ReloadError::NeedsRestart {
                settings: changes.restart.iter().map(|s| s.to_string()).collect(),
            });
        }
        if changes.applied.is_empty() {
            return Ok(ReloadReport {
                version: *version,
                changed: Vec::new(),
            });
        }
        // Everything that can fail is prepared before anything is put in force.
        let geo = match (&self.inner.geo, &new.geo) {
            (Some(live), Some(config)) if changes.applied.contains(&"geo") => {
                Some((live, live.prepare(config).map_err(ReloadError::Apply)?))
            }
            _ => None,
        };
        control.apply(new);
        if let Some((live, state)) = geo {
            live.swap(state);
        }
        *version += 1;
        control
            .metrics
            .config_version
            .set(i64::try_from(*version).unwrap_or(i64::MAX));
        Ok(ReloadReport {
            version: *version,
            changed: changes.applied.iter().map(|s| s.to_string()).collect(),
        })
    }

    /// Counts and logs a reload's outcome, once.
    fn record(&self, outcome: &Result<ReloadReport, ReloadError>) {
        let source = self.inner.source.describe();
        let result = match outcome {
            Ok(report) if report.changed.is_empty() => {
                tracing::info!(version = report.version, %source, "configuration reloaded: nothing changed");
                "unchanged"
            }
            Ok(report) => {
                tracing::info!(
                    version = report.version,
                    changed = %report.changed.join(", "),
                    %source,
                    "configuration reloaded"
                );
                "ok"
            }
            Err(e) => {
                tracing::warn!(result = e.result(), %source, error = %e, "configuration reload refused; the running configuration stays");
                e.result()
            }
        };
        self.inner
            .control
            .metrics
            .config_reloads
            .with_label_values(&[result])
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
        [controller]
        listen = "127.0.0.1:7070"
        data_dir = "/tmp/verge-control"
        token = "0123456789abcdef"
        [regions.us]
        fallback = ["eu"]
        [geo]
        zone = "verge.test"
        dns_listen = "127.0.0.1:0"
        default_region = "us"
        [geo.names."cdn.verge.test"]
    "#;

    fn config(edit: impl FnOnce(&str) -> String) -> ControlConfig {
        ControlConfig::from_toml(&edit(BASE)).unwrap_or_else(|e| panic!("{e}"))
    }

    /// What changes from [`BASE`] to `BASE` edited by `edit`.
    fn changes_from_base(edit: impl FnOnce(&str) -> String) -> Changes {
        changes(&config(str::to_string), &config(edit))
    }

    #[test]
    fn the_same_configuration_has_no_changes() {
        let base = config(str::to_string);
        assert_eq!(changes(&base, &base.clone()), Changes::default());
    }

    #[test]
    fn runtime_settings_are_grouped_by_table() {
        let found = changes_from_base(|t| {
            t.replace("0123456789abcdef", "fedcba9876543210")
                .replace("fallback = [\"eu\"]", "fallback = [\"ap\"]")
                .replace(
                    "[geo.names.\"cdn.verge.test\"]",
                    "[geo.names.\"cdn.verge.test\"]\nmax_answers = 1",
                )
                + "[health]\nrise = 5\n[purge]\nburst = 7\n[streams]\nmax_nodes = 3\n"
        });
        assert_eq!(
            found.applied,
            [
                "controller.token",
                "health",
                "purge",
                "streams",
                "regions",
                "geo"
            ]
        );
        assert!(found.restart.is_empty(), "{found:?}");
    }

    #[test]
    fn a_new_node_token_and_tier_settings_are_applied() {
        let found = changes_from_base(|t| {
            t.replace(
                "token = \"0123456789abcdef\"",
                "token = \"0123456789abcdef\"\nnode_token = \"nodes-0123456789abcdef\"",
            ) + "[tiers]\ntopology = \"regional\"\n"
        });
        assert_eq!(found.applied, ["controller.node_token", "tiers"]);
        assert!(found.restart.is_empty(), "{found:?}");
    }

    #[test]
    fn new_cache_rules_are_applied_and_bad_ones_refused_by_rule_and_key() {
        let rule = "[[rules]]\nname = \"api\"\npath = \"/api/\"\nbypass = true\n";
        let found = changes_from_base(|t| format!("{t}\n{rule}"));
        assert_eq!(found.applied, ["rules"]);
        assert!(found.restart.is_empty(), "{found:?}");
        let bad =
            ControlConfig::from_toml(&format!("{BASE}\n[[rules]]\npath = \"api\"\n")).unwrap_err();
        assert!(bad.mentions("rules[0].path"), "{bad}");
    }

    #[test]
    fn listeners_the_data_directory_and_the_log_retention_need_a_restart() {
        let found = changes_from_base(|t| {
            t.replace("127.0.0.1:7070", "127.0.0.1:7170")
                .replace("/tmp/verge-control", "/tmp/elsewhere")
                .replace(
                    "dns_listen = \"127.0.0.1:0\"",
                    "dns_listen = \"127.0.0.1:53\"\ndns_max_concurrent_queries = 8",
                )
                + "[purge]\nlog_retain = 5\n"
        });
        assert_eq!(
            found.restart,
            [
                "controller.listen",
                "controller.data_dir",
                "purge.log_retain",
                "geo.dns_listen",
                "geo.dns_max_concurrent_queries"
            ]
        );
        // The log's retention alone is no runtime purge change.
        assert!(found.applied.is_empty(), "{found:?}");
    }

    #[test]
    fn adding_or_removing_geo_needs_a_restart() {
        let with = config(str::to_string);
        let without = config(|t| t[..t.find("[geo]").unwrap_or(t.len())].to_string());
        assert_eq!(changes(&with, &without).restart, ["geo"]);
        assert_eq!(changes(&without, &with).restart, ["geo"]);
    }
}
