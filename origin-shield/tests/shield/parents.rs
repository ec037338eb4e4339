//! A lower shield's `[parents]`: with control's plan at two levels, a shield in eu sends its
//! misses to the upper shield in us, and uses it as its `[parents]` table says — ejected after
//! `failures_to_eject` failures, reached over TLS with `[parents.tls]` — and a reload that
//! changes the table applies it to a new tier that keeps its parents.
//!
//! Each shield fetches from an origin of its own: the upper one from a near origin, the lower
//! one from a far one (every answer late), so that control, measuring both, keeps the us shield
//! as the only upper one. Who fetched an object is the last `Via` entry the origin received.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use verge_config::{ConfigFile, ShieldConfig};
use verge_origin_shield::ShieldRole;
use verge_testkit::control::{node_control_tweaks, start_control, Relay, TestControl};
use verge_testkit::node::tls_start_error;
use verge_testkit::pki::{toml_path, TestPki};
use verge_testkit::tier::{cacheable_origin, last_fetcher, SHIELD_REQUESTS, SHIELD_UP, SITE};
use verge_testkit::{wait_until, FakeOrigin, HttpClient, Metrics, Reply, RunningNode};

const UPPER: &str = "shield-us";
const LOWER: &str = "shield-eu";

/// Control planning two levels over regions us (the origin's) and eu. Heartbeats count for a
/// minute, so a stopped shield stays in the table while a test watches how it fails.
const TWO_LEVELS: &[&str] = &[
    "tiers.topology = \"regional\"",
    "tiers.origin_region = \"us\"",
    "tiers.levels = 2",
    "regions.us = { fallback = [\"eu\"] }",
    "regions.eu = { fallback = [\"us\"] }",
    "health.heartbeat_timeout = \"60s\"",
];

/// Control, the two origins, and the upper shield; the lower one is each test's own.
struct TwoLevels {
    control: TestControl,
    near: FakeOrigin,
    far: FakeOrigin,
    _dir: tempfile::TempDir,
}

impl TwoLevels {
    async fn start() -> TwoLevels {
        let dir = tempfile::TempDir::new().unwrap();
        let control = start_control(dir.path(), "127.0.0.1:0".parse().unwrap(), TWO_LEVELS).await;
        let near = cacheable_origin().await;
        let far = FakeOrigin::start().await;
        far.on_prefix(
            "/",
            Reply::ok("object")
                .cache_control("max-age=300")
                .delay(Duration::from_millis(30)),
        );
        TwoLevels {
            control,
            near,
            far,
            _dir: dir,
        }
    }

    /// The file of shield `id`: the upper one in us in front of the near origin, the lower one
    /// in eu in front of the far one; `control` lines go in its `[control]` table, `tables`
    /// after it.
    fn shield_toml(&self, id: &str, control: &str, tables: &str) -> String {
        let (region, origin) = match id {
            UPPER => ("us", &self.near),
            _ => ("eu", &self.far),
        };
        let control_lines: String = node_control_tweaks(&self.control.url())
            .iter()
            .map(|t| t.trim_start_matches("control.").to_string() + "\n")
            .collect();
        format!(
            "[shield]\nid = \"{id}\"\nregion = \"{region}\"\n\
             [server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nshutdown_grace = \"1s\"\n\
             [origin]\nservers = [\"http://{}\"]\n\
             [control]\n{control_lines}{control}{tables}",
            origin.addr()
        )
    }

    /// The upper shield, reached at the data URL control gives it.
    async fn start_upper(&self) -> RunningNode {
        start(&self.shield_toml(UPPER, "", "")).await
    }

    /// The lower shield with these tables (`[parents]`...).
    async fn start_lower(&self, tables: &str) -> RunningNode {
        let lower = start(&self.shield_toml(LOWER, "", tables)).await;
        has_parent(&lower).await;
        lower
    }
}

async fn start(toml: &str) -> RunningNode {
    RunningNode::start::<ShieldRole>(&verge_testkit::node::test_config(toml)).await
}

/// Waits until `lower` has the upper shield as its parent.
async fn has_parent(lower: &RunningNode) {
    wait_until(
        "the lower shield to have the upper one as its parent",
        Duration::from_secs(15),
        || async { lower.metrics().await.value(SHIELD_UP, &[("shield", UPPER)]) == Some(1.0) },
    )
    .await;
}

/// GET `path` for [`SITE`] on `node`: the status.
async fn get(node: &RunningNode, path: &str) -> u16 {
    let response = HttpClient::http1()
        .request("GET", &node.url(path), &[("host", SITE)], "")
        .await;
    response.status.as_u16()
}

/// Requests the lower shield sent to its parent that got no answer of the parent's own.
fn failures(metrics: &Metrics) -> f64 {
    ["connect_error", "timeout", "error", "generated_error"]
        .iter()
        .map(|result| {
            metrics.value_or_zero(SHIELD_REQUESTS, &[("shield", UPPER), ("result", result)])
        })
        .sum()
}

/// Stops `upper`, then asks `lower` for three new objects: each is answered, from the far
/// origin by the lower shield itself; the lower shield's metrics after.
async fn misses_with_the_upper_stopped(
    tiers: &TwoLevels,
    upper: RunningNode,
    lower: &RunningNode,
) -> Metrics {
    upper.stop().await;
    for path in ["/stopped-1", "/stopped-2", "/stopped-3"] {
        assert_eq!(get(lower, path).await, 200, "{path}");
        assert_eq!(last_fetcher(&tiers.far, path), LOWER, "{path}");
        assert_eq!(tiers.near.hits(path), 0, "{path}");
    }
    lower.metrics().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lower_shield_ejects_a_stopped_parent_after_the_failures_its_parents_table_allows() {
    let tiers = TwoLevels::start().await;
    let upper = tiers.start_upper().await;
    let lower = tiers
        .start_lower("[parents]\nfailures_to_eject = 1\neject_for = \"1m\"\n")
        .await;
    assert_eq!(get(&lower, "/before").await, 200);
    assert_eq!(last_fetcher(&tiers.near, "/before"), UPPER);
    assert_eq!(tiers.far.hits("/before"), 0);

    let metrics = misses_with_the_upper_stopped(&tiers, upper, &lower).await;
    assert_eq!(
        failures(&metrics),
        1.0,
        "one failure ejects the parent; the next misses go straight to the origin"
    );
    assert_eq!(
        metrics.value("verge_shield_ejections_total", &[("shield", UPPER)]),
        Some(1.0)
    );
    assert_eq!(metrics.value(SHIELD_UP, &[("shield", UPPER)]), Some(0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lower_shield_reaches_an_https_only_parent_with_its_parents_tls() {
    let tiers = TwoLevels::start().await;
    let pki = TestPki::new("parents");
    // The upper shield is known to control only by its HTTPS address, and asks for a client
    // certificate from the test CA.
    let relay = Relay::bind().await;
    let upper_tls = format!(
        "[tls]\nlisten = [\"127.0.0.1:0\"]\nclient_ca = {}\n{}",
        toml_path(&pki.ca_file),
        pki.server_cert("upper", &["127.0.0.1"]).toml_entry()
    );
    let advertised = format!("advertise_url = \"https://{}\"\n", relay.addr);
    let upper = start(&tiers.shield_toml(UPPER, &advertised, &upper_tls)).await;
    relay.relay_to(upper.tls());

    let client = pki.client_cert("lower", LOWER);
    let lower = tiers
        .start_lower(&format!(
            "[parents.tls]\nca_file = {}\nclient_cert = {}\nclient_key = {}\n",
            toml_path(&pki.ca_file),
            toml_path(&client.cert),
            toml_path(&client.key)
        ))
        .await;
    for path in ["/one", "/two"] {
        assert_eq!(get(&lower, path).await, 200, "{path}");
        assert_eq!(last_fetcher(&tiers.near, path), UPPER, "{path}");
        assert_eq!(tiers.far.hits(path), 0, "{path}: not from the lower shield");
    }
    let metrics = lower.metrics().await;
    assert_eq!(
        metrics.value(SHIELD_REQUESTS, &[("shield", UPPER), ("result", "ok")]),
        Some(2.0)
    );
    assert_eq!(failures(&metrics), 0.0);
}

#[tokio::test]
async fn an_unusable_parents_tls_file_stops_the_start_naming_its_key() {
    let dir = tempfile::TempDir::new().unwrap();
    let missing = dir.path().join("nowhere.pem");
    let text = format!(
        "[shield]\nid = \"{LOWER}\"\n[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\
         [origin]\nservers = [\"http://127.0.0.1:9\"]\n[parents.tls]\nca_file = {}\n",
        toml_path(&missing)
    );
    let config = verge_testkit::node::test_config::<ShieldConfig>(&text);
    let message = tls_start_error(
        verge_testkit::bind::<ShieldRole>(&config).await,
        "a missing CA file for the parents stops the start",
    );
    assert!(message.starts_with("parents.tls.ca_file: "), "{message}");
    assert!(message.contains("nowhere.pem"), "{message}");
}

/// Writes `text` to `path` by a rename, so a reload never reads half a file.
fn write_file(path: &Path, text: &str) {
    let part = path.with_extension("part");
    std::fs::write(&part, text).unwrap();
    std::fs::rename(&part, path).unwrap();
}

/// The lower shield started from a file (so that it can reload), with its parent; the file's
/// directory and path.
async fn reloadable_lower(tiers: &TwoLevels) -> (RunningNode, tempfile::TempDir, PathBuf) {
    let dir = tempfile::TempDir::new().unwrap();
    let path = dir.path().join("lower.toml");
    write_file(&path, &tiers.shield_toml(LOWER, "", ""));
    let config = ShieldConfig::from_file(&path).unwrap();
    let lower = RunningNode::start_from::<ShieldRole>(&config, &path).await;
    has_parent(&lower).await;
    (lower, dir, path)
}

/// Rewrites the lower shield's file with a `[parents]` table that ejects at the first failure
/// and reloads it: only `parents` changed.
async fn reload_with_strict_parents(tiers: &TwoLevels, lower: &RunningNode, path: &Path) {
    write_file(
        path,
        &tiers.shield_toml(
            LOWER,
            "",
            "[parents]\nfailures_to_eject = 1\neject_for = \"1m\"\n",
        ),
    );
    let reloader = Arc::clone(&lower.reloader);
    let report = tokio::task::spawn_blocking(move || reloader.reload())
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("the reload was refused: {e}"));
    assert_eq!(report.changed, ["parents"]);
    assert_eq!(report.version, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_changes_parents_applies_them_live_and_keeps_the_parents_in_the_table() {
    let tiers = TwoLevels::start().await;
    let upper = tiers.start_upper().await;
    let (lower, _dir, path) = reloadable_lower(&tiers).await;
    reload_with_strict_parents(&tiers, &lower, &path).await;

    // The new tier has the table's parent at once, and its settings.
    assert_eq!(get(&lower, "/after-reload").await, 200);
    assert_eq!(last_fetcher(&tiers.near, "/after-reload"), UPPER);
    let metrics = misses_with_the_upper_stopped(&tiers, upper, &lower).await;
    assert_eq!(failures(&metrics), 1.0, "ejected at its first failure");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_changes_only_parents_keeps_the_origin_pool_as_it_is() {
    let tiers = TwoLevels::start().await;
    let upper = tiers.start_upper().await;
    let (lower, _dir, path) = reloadable_lower(&tiers).await;
    // The lower shield's own pool fetches three objects while the upper one is stopped.
    let fetched = |metrics: &Metrics| {
        metrics.value_or_zero("verge_origin_requests_total", &[("result", "ok")])
    };
    let before = misses_with_the_upper_stopped(&tiers, upper, &lower).await;
    assert_eq!(fetched(&before), 3.0);

    reload_with_strict_parents(&tiers, &lower, &path).await;
    // The same pool serves on: its servers' state and counts were not started over.
    assert_eq!(fetched(&lower.metrics().await), 3.0, "a new pool");
    assert_eq!(get(&lower, "/after-reload").await, 200);
    assert_eq!(fetched(&lower.metrics().await), 4.0);
}
