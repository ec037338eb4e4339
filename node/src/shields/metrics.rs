//! The edge's metrics of its shields: requests by result, up or ejected, time to a response
//! head, ejections, ring size, spills, failovers and the retry budget.

use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

/// Per-shield metrics, labelled by shield id.
#[derive(Clone)]
pub struct ShieldMetrics {
    pub(super) requests: IntCounterVec,
    pub(super) up: IntGaugeVec,
    pub(super) duration: HistogramVec,
    pub(super) ejections: IntCounterVec,
    pub(super) members: IntGauge,
    pub(super) spills: IntCounter,
    pub(super) retries: IntCounter,
    pub(super) budget_exhausted: IntCounter,
    pub(super) resends: IntCounter,
}

impl ShieldMetrics {
    pub fn register(registry: &Registry) -> Result<ShieldMetrics, prometheus::Error> {
        let m = ShieldMetrics {
            duration: HistogramVec::new(
                HistogramOpts::new(
                    "verge_shield_duration_seconds",
                    "Time from sending a request to a shield to its response head",
                )
                .buckets(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0, 30.0,
                ]),
                &["shield"],
            )?,
            ejections: IntCounterVec::new(
                Opts::new(
                    "verge_shield_ejections_total",
                    "Times each shield was taken out of the ring",
                ),
                &["shield"],
            )?,
            members: IntGauge::new(
                "verge_shield_ring_members",
                "Shields configured in the ring",
            )?,
            spills: IntCounter::new(
                "verge_shield_spills_total",
                "Requests passed on from an overloaded shield to the next (bounded-load mode)",
            )?,
            retries: IntCounter::new(
                "verge_shield_retries_total",
                "Requests sent on to another shield (or the origin) after a shield failed",
            )?,
            budget_exhausted: IntCounter::new(
                "verge_shield_retry_budget_exhausted_total",
                "Failovers not made because the retry budget was spent",
            )?,
            resends: IntCounter::new(
                "verge_shield_resends_total",
                "Bodiless GET, HEAD and OPTIONS requests sent once more to a shield that closed \
                 its kept-alive connection before answering",
            )?,
            requests: IntCounterVec::new(
                Opts::new(
                    "verge_shield_requests_total",
                    "Requests sent to each origin shield, by result",
                ),
                &["shield", "result"],
            )?,
            up: IntGaugeVec::new(
                Opts::new(
                    "verge_shield_up",
                    "Whether a shield is in the ring (1) or ejected (0)",
                ),
                &["shield"],
            )?,
        };
        verge_serve::register_metrics!(
            registry; m.requests, m.up, m.duration, m.ejections, m.members, m.spills, m.retries,
            m.budget_exhausted, m.resends
        );
        Ok(m)
    }
}
