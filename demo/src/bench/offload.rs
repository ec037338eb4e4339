//! How many requests reached the origin during a run: read from the sample origin's own
//! counter (`/_origin/stats`) when it has one, else summed from the nodes' Prometheus metrics
//! (what the shields sent upstream, or the edges when there are no shields).

use serde::Serialize;

use super::client::RegionClient;
use crate::state::DemoState;

/// Where an origin request count came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CountSource {
    /// The origin's `/_origin/stats`.
    OriginStats,
    /// `verge_upstream_requests_total` of the tier in front of the origin.
    NodeMetrics,
}

/// The sum of every sample of metric `name` in a Prometheus text exposition.
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The origin's request count now, or `None` when neither source answers.
pub async fn origin_requests(
    client: &RegionClient,
    state: &DemoState,
) -> Option<(u64, CountSource)> {
    let stats = format!("{}/_origin/stats", state.origin.trim_end_matches('/'));
    if let Ok((status, _, body)) = client.fetch(&stats, None).await {
        let count = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("requests")?.as_u64());
        if let (true, Some(count)) = (status.is_success(), count) {
            return Some((count, CountSource::OriginStats));
        }
    }
    let has_shields = state.nodes.iter().any(|n| n.role == "shield");
    let front = if has_shields { "shield" } else { "edge" };
    let mut total = 0.0;
    for node in state.nodes.iter().filter(|n| n.role == front) {
        let url = format!("{}/metrics", node.admin.trim_end_matches('/'));
        let (_, _, body) = client.fetch(&url, None).await.ok()?;
        total += metric_sum(
            &String::from_utf8_lossy(&body),
            "verge_upstream_requests_total",
        );
    }
    Some((total as u64, CountSource::NodeMetrics))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_samples_are_summed_by_exact_name() {
        let text = "# HELP verge_upstream_requests_total x\n\
                    verge_upstream_requests_total{result=\"ok\"} 12\n\
                    verge_upstream_requests_total{result=\"error\"} 3\n\
                    verge_upstream_requests_total_other 100\n\
                    verge_upstream_duration_seconds_count 7\n";
        assert_eq!(metric_sum(text, "verge_upstream_requests_total"), 15.0);
        assert_eq!(metric_sum(text, "verge_nothing"), 0.0);
    }
}
