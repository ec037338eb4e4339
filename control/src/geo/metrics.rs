//! Geo steering's metrics, registered on control's registry (passed in, never global).

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

#[derive(Clone)]
pub struct GeoMetrics {
    /// Answers by the region answered from and the policy step that chose it.
    pub answers: IntCounterVec,
    /// Answers from another region than the client's, by the client's region.
    pub failovers: IntCounterVec,
    /// Clients by how their region was found (`cidr`, `geoip`, `default`).
    pub clients: IntCounterVec,
    /// Clients no rule placed, sent to the default region.
    pub default_region: IntCounter,
    /// DNS queries that carried an EDNS Client Subnet.
    pub ecs: IntCounter,
    /// DNS queries by type and result.
    pub dns_queries: IntCounterVec,
    /// UDP queries dropped unanswered because `geo.dns_max_concurrent_queries` were being
    /// answered.
    pub dns_dropped: IntCounter,
    /// HTTP steering requests by result.
    pub http_requests: IntCounterVec,
    /// GeoIP database loads by result.
    pub geoip_loads: IntCounterVec,
    /// Version of the routing table steering answers from.
    pub table_version: IntGauge,
}

impl GeoMetrics {
    pub fn new(registry: &Registry) -> Result<GeoMetrics, prometheus::Error> {
        let vec = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels)
        };
        let m = GeoMetrics {
            answers: vec(
                "verge_geo_answers_total",
                "Steering answers by the region answered from and the policy step that chose it",
                &["region", "step"],
            )?,
            failovers: vec(
                "verge_geo_failovers_total",
                "Steering answers from another region than the client's, by the client's region",
                &["region"],
            )?,
            clients: vec(
                "verge_geo_clients_total",
                "Clients located, by how their region was found",
                &["source"],
            )?,
            default_region: IntCounter::new(
                "verge_geo_default_region_total",
                "Clients that no address block or GeoIP rule placed, sent to the default region",
            )?,
            ecs: IntCounter::new(
                "verge_geo_ecs_queries_total",
                "DNS queries whose EDNS Client Subnet picked the region",
            )?,
            dns_queries: vec(
                "verge_geo_dns_queries_total",
                "DNS queries by type and result",
                &["type", "result"],
            )?,
            dns_dropped: IntCounter::new(
                "verge_geo_dns_dropped_total",
                "UDP DNS queries dropped unanswered because geo.dns_max_concurrent_queries \
                 were already being answered",
            )?,
            http_requests: vec(
                "verge_geo_http_requests_total",
                "HTTP steering requests by result",
                &["result"],
            )?,
            geoip_loads: vec(
                "verge_geo_geoip_loads_total",
                "GeoIP database loads by result (a failed load keeps the last good database)",
                &["result"],
            )?,
            table_version: IntGauge::new(
                "verge_geo_table_version",
                "Version of the routing table geo steering answers from",
            )?,
        };
        verge_serve::register_metrics!(
            registry; m.answers, m.failovers, m.clients, m.default_region, m.ecs, m.dns_queries,
            m.dns_dropped, m.http_requests, m.geoip_loads, m.table_version
        );
        Ok(m)
    }
}
