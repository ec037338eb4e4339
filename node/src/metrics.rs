//! A node's Prometheus metrics, registered on a registry the caller passes in.

use std::time::Duration;

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};

use crate::failover::Attempt;

/// How a request was answered; the `cache_status` label of request metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestOutcome {
    Hit,
    Miss,
    /// Served from another request's fill.
    Coalesced,
    /// Not cacheable by method; forwarded as is.
    Pass,
    /// Answered with an error generated here.
    Error,
    /// A stale object served (max-stale, stale-while-revalidate, stale-if-error).
    Stale,
    /// A stored object confirmed by upstream (304) and served.
    Revalidated,
    /// Answered by the node itself, as the final recipient (`OPTIONS` with `Max-Forwards: 0`).
    Local,
}

impl RequestOutcome {
    const ALL: [RequestOutcome; 8] = [
        RequestOutcome::Hit,
        RequestOutcome::Miss,
        RequestOutcome::Coalesced,
        RequestOutcome::Pass,
        RequestOutcome::Error,
        RequestOutcome::Stale,
        RequestOutcome::Revalidated,
        RequestOutcome::Local,
    ];

    fn index(self) -> usize {
        self as usize
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RequestOutcome::Hit => "hit",
            RequestOutcome::Miss => "miss",
            RequestOutcome::Coalesced => "coalesced",
            RequestOutcome::Pass => "pass",
            RequestOutcome::Error => "error",
            RequestOutcome::Stale => "stale",
            RequestOutcome::Revalidated => "revalidated",
            RequestOutcome::Local => "local",
        }
    }
}

/// How a revalidation of a stored object ended; the `result` label of revalidation metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevalidationResult {
    NotModified,
    Modified,
    Error,
}

impl RevalidationResult {
    pub fn as_str(self) -> &'static str {
        match self {
            RevalidationResult::NotModified => "not_modified",
            RevalidationResult::Modified => "modified",
            RevalidationResult::Error => "error",
        }
    }
}

const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

#[derive(Clone)]
pub struct NodeMetrics {
    requests: IntCounterVec,
    request_duration: HistogramVec,
    /// `requests{cache_status, code="200"}` and `request_duration{cache_status}` resolved once,
    /// so the hit path does not hash label values per request.
    requests_ok: Vec<IntCounter>,
    durations: Vec<Histogram>,
    pub cache_objects: IntGauge,
    pub cache_bytes: IntGauge,
    pub cache_max_bytes: IntGauge,
    upstream_requests: IntCounterVec,
    upstream_duration: Histogram,
    pub coalesced: IntCounter,
    not_stored: IntCounterVec,
    pub hit_for_miss_keys: IntGauge,
    pub fills_in_flight: IntGauge,
    pub fills_cut_short: IntCounter,
    pub connections_open: IntGauge,
    pub connections_total: IntCounter,
    pub connections_max: IntGauge,
    /// `verge_connections_shed_total{reason}`: connections the node closed or refused to
    /// protect the others.
    pub connections_shed: IntCounterVec,
    revalidations: IntCounterVec,
    purge_requests: IntCounterVec,
    pub purged_urls: IntCounter,
    pub purge_index_keys: IntGauge,
    pub purge_index_tags: IntGauge,
    pub upstream_connections_in_use: IntGauge,
    pub upstream_connections_max: IntGauge,
    /// `verge_upstream_resends_total`: requests sent once more to the origin (an edge's) that
    /// closed its kept-alive connection before answering.
    pub upstream_resends: IntCounter,
    /// `verge_rule_requests_total{rule, cache_status}`.
    rule_requests: IntCounterVec,
    /// `verge_compressions_total{encoding, result}`.
    compressions: IntCounterVec,
    /// `verge_request_body_over_budget_total`.
    pub request_body_over_budget: IntCounter,
    /// `verge_request_body_buffered_bytes`.
    pub request_body_buffered: IntGauge,
}

impl NodeMetrics {
    pub fn register(registry: &Registry) -> Result<NodeMetrics, prometheus::Error> {
        let m = NodeMetrics {
            requests: IntCounterVec::new(
                Opts::new(
                    "verge_requests_total",
                    "Client requests answered, by cache status and HTTP status code",
                ),
                &["cache_status", "code"],
            )?,
            request_duration: HistogramVec::new(
                HistogramOpts::new(
                    "verge_request_duration_seconds",
                    "Time to answer a client request (until the response head is ready)",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
                &["cache_status"],
            )?,
            cache_objects: IntGauge::new("verge_cache_objects", "Objects held in the cache")?,
            cache_bytes: IntGauge::new(
                "verge_cache_bytes",
                "Bytes held in the cache (heads, bodies and keys)",
            )?,
            cache_max_bytes: IntGauge::new(
                "verge_cache_max_bytes",
                "Configured bound on cache bytes",
            )?,
            upstream_requests: IntCounterVec::new(
                Opts::new(
                    "verge_upstream_requests_total",
                    "Requests sent upstream, by result",
                ),
                &["result"],
            )?,
            upstream_duration: Histogram::with_opts(
                HistogramOpts::new(
                    "verge_upstream_duration_seconds",
                    "Time from sending an upstream request to its response head",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
            )?,
            coalesced: IntCounter::new(
                "verge_coalesced_requests_total",
                "Misses that waited for another request's fill instead of going upstream",
            )?,
            not_stored: IntCounterVec::new(
                Opts::new(
                    "verge_cache_not_stored_total",
                    "Upstream responses not stored, by reason",
                ),
                &["reason"],
            )?,
            hit_for_miss_keys: IntGauge::new(
                "verge_hit_for_miss_keys",
                "Keys remembered as not storable",
            )?,
            fills_in_flight: IntGauge::new("verge_fills_in_flight", "Cache fills in progress")?,
            fills_cut_short: IntCounter::new(
                "verge_fills_cut_short_total",
                "Fills whose upstream body failed after their answer had begun to stream: the client's answer ended short and nothing was stored",
            )?,
            connections_open: IntGauge::new(
                "verge_connections_open",
                "Client connections open on the data plane",
            )?,
            connections_total: IntCounter::new(
                "verge_connections_total",
                "Client connections accepted on the data plane",
            )?,
            connections_max: IntGauge::new(
                "verge_connections_max",
                "Configured bound on open client connections",
            )?,
            connections_shed: IntCounterVec::new(
                Opts::new(
                    "verge_connections_shed_total",
                    "Client connections closed or refused by the node, by reason: \
                     idle_timeout, request_timeout (no request in time after the accept), \
                     evicted (idle, closed to make room at the limit), full (the limit reached \
                     with none idle), per_address (the address has its most)",
                ),
                &["reason"],
            )?,
            revalidations: IntCounterVec::new(
                Opts::new(
                    "verge_revalidations_total",
                    "Revalidations of stored objects with upstream, by result",
                ),
                &["result"],
            )?,
            purge_requests: IntCounterVec::new(
                Opts::new(
                    "verge_purge_requests_total",
                    "Purge API calls, by HTTP status code",
                ),
                &["code"],
            )?,
            purged_urls: IntCounter::new(
                "verge_purged_urls_total",
                "URLs purged (all their variants)",
            )?,
            purge_index_keys: IntGauge::new("verge_purge_index_keys", "URLs in the purge index")?,
            purge_index_tags: IntGauge::new(
                "verge_purge_index_tags",
                "Surrogate keys in the purge index",
            )?,
            upstream_connections_in_use: IntGauge::new(
                "verge_upstream_connections_in_use",
                "Upstream connection slots taken (requests in flight and responses streaming)",
            )?,
            upstream_connections_max: IntGauge::new(
                "verge_upstream_connections_max",
                "Configured bound on upstream connection slots",
            )?,
            upstream_resends: IntCounter::new(
                "verge_upstream_resends_total",
                "Bodiless GET, HEAD and OPTIONS requests sent once more to the origin that \
                 closed its kept-alive connection before answering",
            )?,
            rule_requests: IntCounterVec::new(
                Opts::new(
                    "verge_rule_requests_total",
                    "Client requests that matched a cache rule, by rule and cache status",
                ),
                &["rule", "cache_status"],
            )?,
            compressions: IntCounterVec::new(
                Opts::new(
                    "verge_compressions_total",
                    "Compressed variants made of stored objects, by encoding and result: \
                     stored, not_smaller (kept as identity), error (identity served)",
                ),
                &["encoding", "result"],
            )?,
            request_body_over_budget: IntCounter::new(
                "verge_request_body_over_budget_total",
                "Request bodies that found server.request_body_buffer_total spent by the \
                 bodies being buffered: they stream on from what they read",
            )?,
            request_body_buffered: IntGauge::new(
                "verge_request_body_buffered_bytes",
                "Bytes of request bodies held in buffers before going upstream",
            )?,
            requests_ok: Vec::new(),
            durations: Vec::new(),
        };
        let mut m = m;
        for outcome in RequestOutcome::ALL {
            m.requests_ok.push(
                m.requests
                    .get_metric_with_label_values(&[outcome.as_str(), "200"])?,
            );
            m.durations.push(
                m.request_duration
                    .get_metric_with_label_values(&[outcome.as_str()])?,
            );
        }
        verge_serve::register_metrics!(
            registry; m.requests, m.request_duration, m.cache_objects, m.cache_bytes,
            m.cache_max_bytes, m.upstream_requests, m.upstream_duration, m.coalesced, m.not_stored,
            m.hit_for_miss_keys, m.fills_in_flight, m.fills_cut_short, m.connections_open, m.connections_total,
            m.connections_max, m.connections_shed, m.revalidations, m.purge_requests, m.purged_urls,
            m.purge_index_keys, m.purge_index_tags, m.upstream_connections_in_use,
            m.upstream_connections_max, m.upstream_resends, m.rule_requests, m.compressions,
            m.request_body_over_budget, m.request_body_buffered
        );
        Ok(m)
    }

    pub fn observe_request(&self, outcome: RequestOutcome, code: http::StatusCode, took: Duration) {
        match self.requests_ok.get(outcome.index()) {
            Some(counter) if code == http::StatusCode::OK => counter.inc(),
            _ => self
                .requests
                .with_label_values(&[outcome.as_str(), code.as_str()])
                .inc(),
        }
        if let Some(histogram) = self.durations.get(outcome.index()) {
            histogram.observe(took.as_secs_f64());
        }
    }

    /// Counts one upstream request by how it ended ([`Attempt`]: an answer of any status is
    /// `ok` here; the roles count failing statuses per target).
    pub fn observe_upstream(&self, result: Attempt, took: Duration) {
        self.upstream_requests
            .with_label_values(&[result.as_str()])
            .inc();
        self.upstream_duration.observe(took.as_secs_f64());
    }

    pub fn revalidation(&self, result: RevalidationResult) {
        self.revalidations
            .with_label_values(&[result.as_str()])
            .inc();
    }

    pub fn purge_request(&self, code: http::StatusCode) {
        self.purge_requests
            .with_label_values(&[code.as_str()])
            .inc();
    }

    pub fn observe_rule(&self, rule: &str, outcome: RequestOutcome) {
        self.rule_requests
            .with_label_values(&[rule, outcome.as_str()])
            .inc();
    }

    pub fn compression(&self, encoding: &str, result: &str) {
        self.compressions
            .with_label_values(&[encoding, result])
            .inc();
    }

    pub fn not_stored(&self, reason: &str) {
        self.not_stored.with_label_values(&[reason]).inc();
    }
}

/// A count as a gauge value, saturating.
pub(crate) fn gauge(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}
