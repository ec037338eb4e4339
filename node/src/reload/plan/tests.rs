//! The reload plan from pairs of configurations: pure, no node needed.

use verge_config::{EdgeConfig, NodeConfig};

use super::*;

fn edge(extra: &str) -> EdgeConfig {
    let text = format!(
        "[edge]\nid = \"e1\"\nregion = \"us\"\n[upstream]\norigin = \"http://127.0.0.1:1\"\n{extra}"
    );
    EdgeConfig::from_toml(&text).unwrap_or_else(|e| panic!("{text}\n{e}"))
}

fn settings(config: &EdgeConfig) -> NodeSettings<'_> {
    NodeSettings::new(config.node())
}

fn plan(before: &EdgeConfig, after: &EdgeConfig, upstream: &[&str]) -> ReloadPlan {
    let listening = wanted_listeners(&settings(before));
    let upstream = upstream.iter().map(|s| s.to_string()).collect();
    ReloadPlan::new(
        "edge",
        &settings(before),
        &settings(after),
        &listening,
        upstream,
    )
}

#[test]
fn the_same_configuration_plans_nothing() {
    let config = edge("[cache]\nmax_bytes = \"64MiB\"\n");
    let plan = plan(&config, &config.clone(), &[]);
    assert!(plan.needs_restart.is_empty());
    assert!(plan.changed().is_empty());
    assert!(!plan.new_pipeline());
}

#[test]
fn live_settings_are_planned_by_what_applying_them_takes() {
    let before = edge("[server]\nmax_connections = 100\n[cache]\nmax_bytes = \"64MiB\"\n");
    let after = edge(
        "[server]\nmax_connections = 200\nheader_read_timeout = \"3s\"\n\
         [cache]\nmax_bytes = \"32MiB\"\n[admin]\ntoken = \"a-new-admin-token-0123\"\n",
    );
    let plan = plan(&before, &after, &[]);
    assert!(plan.needs_restart.is_empty());
    assert_eq!(plan.max_connections, Some(200));
    assert_eq!(plan.cache.map(|(bytes, _)| bytes), Some(32 << 20));
    assert!(plan.limits.is_some());
    assert!(plan.admin.is_some());
    assert!(!plan.new_pipeline(), "no upstream setting changed");
    assert_eq!(
        plan.changed(),
        [
            "server limits",
            "server.max_connections",
            "cache size",
            "admin"
        ]
    );
}

#[test]
fn settings_only_a_restart_can_change_refuse_the_whole_plan() {
    let before = edge("");
    let mut after = edge("[server]\nworker_threads = 3\n[cache]\nmax_bytes = \"16MiB\"\n");
    after.id = verge_config::NodeId::new("e2").unwrap();
    after.region = verge_config::RegionId::new("eu").unwrap();
    let plan = plan(&before, &after, &["upstream"]);
    assert_eq!(
        plan.needs_restart,
        ["edge.region", "edge.id", "server.worker_threads"]
    );
    assert!(plan.changed().is_empty(), "nothing else is applied");
    assert!(!plan.new_pipeline());
}

#[test]
fn a_moved_listener_is_bound_anew_and_the_old_one_stopped() {
    let before = edge("[server]\nlisten = \"127.0.0.1:18080\"\n");
    let after = edge("[server]\nlisten = \"127.0.0.1:18081\"\n");
    let plan = plan(&before, &after, &[]);
    let at = |port: u16| (ListenerKind::Data, SocketAddr::from(([127, 0, 0, 1], port)));
    assert_eq!(plan.bind, [at(18081)]);
    assert_eq!(plan.unbind, [at(18080)]);
    assert_eq!(plan.changed(), ["listeners"]);
}

#[test]
fn the_pipeline_is_rebuilt_for_upstream_settings_or_range_limits() {
    let before = edge("");
    let plan_upstream = plan(&before, &before.clone(), &["upstream", "shields"]);
    assert!(plan_upstream.new_pipeline());
    assert_eq!(plan_upstream.changed(), ["upstream", "shields"]);

    let after = edge("[cache]\nmax_ranges = 3\n");
    let plan_ranges = plan(&before, &after, &[]);
    assert!(plan_ranges.new_pipeline());
    assert_eq!(plan_ranges.changed(), ["request limits"]);
}

#[test]
fn an_access_log_change_is_planned_with_its_new_table() {
    let none = edge("");
    let json = edge("[access_log]\npath = \"/var/log/verge/access.log\"\n");
    let plan_on = plan(&none, &json, &[]);
    let on = plan_on.access_log.clone().expect("changed").expect("on");
    assert_eq!(on.target.to_string(), "/var/log/verge/access.log");
    assert_eq!(plan_on.changed(), ["access_log"]);
    assert!(!plan_on.new_pipeline(), "the pipeline keeps serving");
    let off = plan(&json, &none, &[]);
    assert_eq!(off.access_log, Some(None));
    let sampled = edge("[access_log]\npath = \"/var/log/verge/access.log\"\nsample = 0.5\n");
    assert!(plan(&json, &sampled, &[]).access_log.is_some());
    assert!(plan(&json, &json.clone(), &[]).access_log.is_none());
    let trusting = edge("[server]\ntrust_request_id = true\n");
    let trust = plan(&none, &trusting, &[]);
    assert_eq!(trust.trust_request_id, Some(true));
    assert_eq!(trust.changed(), ["server.trust_request_id"]);
}
