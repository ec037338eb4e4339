//! Control's metrics, on its own registry.

use prometheus::{
    GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry,
};

#[derive(Clone)]
pub struct ControlMetrics {
    pub registry: Registry,
    /// Accepted → applied on one node, from the nodes' acks.
    pub propagation: Histogram,
    /// Accepted → applied on every live node.
    pub completion: Histogram,
    pub nodes: IntGaugeVec,
    pub table_version: IntGauge,
    /// Shields that nodes route through and control waits for, after its start, before it
    /// publishes a table without them (`health.settle`); 0 when nothing is held.
    pub awaited_shields: IntGauge,
    pub events_pushed: IntCounterVec,
    pub stream_connects: IntCounter,
    pub stream_drops: IntCounterVec,
    pub purges: IntCounterVec,
    pub log_head: IntGauge,
    pub resyncs: IntCounter,
    /// Reloads of the configuration, by result (`ok`, `unchanged`, `invalid`, `needs_restart`,
    /// `failed`).
    pub config_reloads: IntCounterVec,
    /// The configuration version in force: 1 at start, one more per applied change.
    pub config_version: IntGauge,
    /// The latency matrix: `from` an edge region or a shield, `to` a shield or `origin`.
    pub latency: GaugeVec,
    pub latency_ignored: IntCounterVec,
    pub replans: IntCounter,
    /// Requests on the node listener refused for a missing or wrong node token.
    pub node_auth_refused: IntCounterVec,
    /// With etcd: 1 while this replica is the leader (writes the routing tables).
    pub replica_leader: IntGauge,
    /// Leaderships won and lost, by outcome (`won`, `lost`).
    pub elections: IntCounterVec,
    /// With etcd: 1 while the last request to etcd succeeded.
    pub store_up: IntGauge,
    /// Time of each etcd request, by operation.
    pub store_seconds: HistogramVec,
    /// etcd requests that failed, by operation.
    pub store_errors: IntCounterVec,
    /// Accepted (at any replica) → seen by this replica's watch, per purge.
    pub watch_delay: Histogram,
    /// Watches started again, by reason (`error`, `compacted`, `gap`).
    pub watch_restarts: IntCounterVec,
    /// Lease renewals by outcome (`ok`, `failed`, `expired`).
    pub lease_renewals: IntCounterVec,
}

/// Every `result` of `verge_config_reloads_total`, so each series exists from the start.
pub const RELOAD_RESULTS: [&str; 5] = ["ok", "unchanged", "invalid", "needs_restart", "failed"];

const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

impl ControlMetrics {
    pub fn new() -> Result<ControlMetrics, prometheus::Error> {
        let registry = Registry::new();
        let m = ControlMetrics {
            propagation: Histogram::with_opts(
                HistogramOpts::new(
                    "verge_purge_propagation_seconds",
                    "Time from accepting a purge to one node acknowledging it",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
            )?,
            completion: Histogram::with_opts(
                HistogramOpts::new(
                    "verge_purge_completion_seconds",
                    "Time from accepting a purge to the last live node acknowledging it",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
            )?,
            nodes: IntGaugeVec::new(
                Opts::new("verge_control_nodes", "Registered nodes by role and state"),
                &["role", "state"],
            )?,
            table_version: IntGauge::new(
                "verge_routing_table_version",
                "Version of the routing table in force",
            )?,
            awaited_shields: IntGauge::new(
                "verge_routing_awaited_shields",
                "Shields that registered nodes route through and that have not registered since control started: routing tables are held back for them until health.settle has passed",
            )?,
            events_pushed: IntCounterVec::new(
                Opts::new(
                    "verge_control_events_pushed_total",
                    "Events queued onto node streams, by type",
                ),
                &["type"],
            )?,
            stream_connects: IntCounter::new(
                "verge_control_stream_connects_total",
                "Event streams opened by nodes (first connections and reconnects)",
            )?,
            stream_drops: IntCounterVec::new(
                Opts::new(
                    "verge_control_stream_drops_total",
                    "Event streams closed by control, by reason",
                ),
                &["reason"],
            )?,
            purges: IntCounterVec::new(
                Opts::new("verge_purges_total", "Purge requests by result"),
                &["result"],
            )?,
            log_head: IntGauge::new(
                "verge_purge_log_head",
                "Sequence number of the newest purge in the log",
            )?,
            resyncs: IntCounter::new(
                "verge_control_resyncs_total",
                "Nodes told to flush because the log no longer held what they missed",
            )?,
            config_reloads: IntCounterVec::new(
                Opts::new(
                    "verge_config_reloads_total",
                    "Configuration reloads by result",
                ),
                &["result"],
            )?,
            config_version: IntGauge::new(
                "verge_config_version",
                "Version of the configuration in force (1 at start, one more per applied change)",
            )?,
            latency: GaugeVec::new(
                Opts::new(
                    "verge_control_latency_seconds",
                    "Smoothed round trip from an edge region to a shield or straight to the origin, or from a shield to the origin",
                ),
                &["from", "to"],
            )?,
            latency_ignored: IntCounterVec::new(
                Opts::new(
                    "verge_control_latency_reports_ignored_total",
                    "Round trips reported by nodes and not used, by reason",
                ),
                &["reason"],
            )?,
            replans: IntCounter::new(
                "verge_control_tier_replans_total",
                "Tier plans recomputed because the measured latency moved",
            )?,
            node_auth_refused: IntCounterVec::new(
                Opts::new(
                    "verge_control_node_auth_refused_total",
                    "Node listener requests refused: a missing or wrong node token, or a client certificate that does not name the node",
                ),
                &["reason"],
            )?,
            replica_leader: IntGauge::new(
                "verge_control_replica_leader",
                "1 while this replica is the leader that writes routing tables (etcd store)",
            )?,
            elections: IntCounterVec::new(
                Opts::new(
                    "verge_control_elections_total",
                    "Leaderships this replica won or lost, by outcome",
                ),
                &["outcome"],
            )?,
            store_up: IntGauge::new(
                "verge_control_store_up",
                "1 while the last request to the store (etcd) succeeded; always 1 embedded",
            )?,
            store_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "verge_control_store_request_seconds",
                    "Time of each request to etcd, by operation",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
                &["op"],
            )?,
            store_errors: IntCounterVec::new(
                Opts::new(
                    "verge_control_store_errors_total",
                    "Requests to etcd that failed, by operation",
                ),
                &["op"],
            )?,
            watch_delay: Histogram::with_opts(
                HistogramOpts::new(
                    "verge_control_watch_delay_seconds",
                    "Time from a purge's acceptance at any replica to this replica's watch seeing it",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
            )?,
            watch_restarts: IntCounterVec::new(
                Opts::new(
                    "verge_control_watch_restarts_total",
                    "Watches on etcd started again, by reason",
                ),
                &["reason"],
            )?,
            lease_renewals: IntCounterVec::new(
                Opts::new(
                    "verge_control_lease_renewals_total",
                    "Renewals of this replica's etcd lease, by outcome",
                ),
                &["outcome"],
            )?,
            registry,
        };
        for outcome in ["won", "lost"] {
            m.elections.with_label_values(&[outcome]);
        }
        for outcome in ["ok", "failed", "expired"] {
            m.lease_renewals.with_label_values(&[outcome]);
        }
        for reason in ["error", "compacted", "gap"] {
            m.watch_restarts.with_label_values(&[reason]);
        }
        m.store_up.set(1);
        for reason in ["missing", "wrong", "certificate"] {
            m.node_auth_refused.with_label_values(&[reason]);
        }
        for ignored in crate::latency::Ignored::ALL {
            m.latency_ignored.with_label_values(&[ignored.as_str()]);
        }
        for result in RELOAD_RESULTS {
            m.config_reloads.with_label_values(&[result]);
        }
        m.config_version.set(1);
        let r = &m.registry;
        verge_serve::register_metrics!(
            r; m.propagation, m.completion, m.nodes, m.table_version, m.awaited_shields, m.events_pushed,
            m.stream_connects, m.stream_drops, m.purges, m.log_head, m.resyncs, m.config_reloads,
            m.config_version, m.latency, m.latency_ignored, m.replans,
            m.node_auth_refused, m.replica_leader, m.elections, m.store_up, m.store_seconds,
            m.store_errors, m.watch_delay, m.watch_restarts, m.lease_renewals
        );
        Ok(m)
    }
}

impl ControlMetrics {
    /// Shows `matrix` as the latency gauges, dropping pairs no longer in it.
    pub fn show_latency(&self, matrix: &verge_config::tiers::LatencyMatrix) {
        self.latency.reset();
        for (region, row) in &matrix.edge_to_shield {
            for (shield, ms) in row {
                self.latency
                    .with_label_values(&[region.as_str(), shield.as_str()])
                    .set(ms / 1000.0);
            }
        }
        // A shield to the origin, and an edge region straight to it: both `to="origin"`.
        let to_origin = matrix
            .shield_to_origin
            .iter()
            .map(|(shield, ms)| (shield.as_str(), ms))
            .chain(
                matrix
                    .edge_to_origin
                    .iter()
                    .map(|(region, ms)| (region.as_str(), ms)),
            );
        for (from, ms) in to_origin {
            self.latency
                .with_label_values(&[from, "origin"])
                .set(ms / 1000.0);
        }
    }
}
