//! Control's status page in a real browser: headless Chromium (Debian package `chromium`)
//! opens it against a running demo with the token link, as an operator would, and the rendered
//! page must show every node with its health and a purge with each node's completion, and a
//! routing table held back after a control start for what it is. A
//! screenshot is left in the target directory. Without Chromium the test says it did not run.

use std::path::Path;
use std::process::Command;

use verge_config::wire::PurgeSpec;
use verge_control::client::AdminClient;
use verge_testkit::control::{purge_everywhere, start_control, TOKEN};

/// Headless Chromium as a sandboxed root process on a closed network can run it.
fn chromium(binary: &Path, profile: &Path) -> Command {
    let mut command = Command::new(binary);
    command.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        // Lets the page's requests and timers run before the DOM is read.
        "--virtual-time-budget=10000",
    ]);
    command.arg(format!("--user-data-dir={}", profile.display()));
    command
}

/// The page at `url` as Chromium rendered it (its DOM once its scripts ran); fails unless it
/// rendered the status page.
async fn rendered(binary: &Path, profile: &Path, url: &str) -> String {
    let mut command = chromium(binary, profile);
    command.arg("--dump-dom").arg(url);
    let dump = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .expect("chromium runs");
    let dom = String::from_utf8_lossy(&dump.stdout).into_owned();
    assert!(
        dump.status.success() && dom.contains("Verge status"),
        "chromium did not render the page: {}\n{dom}",
        String::from_utf8_lossy(&dump.stderr)
    );
    dom
}

/// The `<tr>` of the rendered page that names `id` in a node cell.
fn node_row<'a>(dom: &'a str, id: &str) -> Option<&'a str> {
    let cell = format!("<span class=\"node-id\">{id}</span>");
    let at = dom.find(&cell)?;
    let start = dom[..at].rfind("<tr>")?;
    let end = at + dom[at..].find("</tr>")?;
    Some(&dom[start..end])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_renders_every_node_and_a_purges_completion_in_chromium() {
    let test =
        "status_page::the_status_page_renders_every_node_and_a_purges_completion_in_chromium";
    let Some(binary) = verge_testkit::installed("chromium", "chromium", test) else {
        return;
    };
    let demo = crate::small_demo().await;
    let state = demo.state.clone();
    let admin = AdminClient::new(&state.control.admin, &state.control.token).unwrap();
    let spec = PurgeSpec {
        tags: vec!["img".into()],
        ..PurgeSpec::default()
    };
    let purged = purge_everywhere(&admin, &spec).await;

    let profile = tempfile::tempdir().unwrap();
    // The token link opens a session and redirects to the page, as for an operator.
    let url = format!("{}/?token={}", state.control.admin, state.control.token);
    let dom = rendered(&binary, profile.path(), &url).await;
    assert!(
        dom.contains("<div id=\"error\"></div>"),
        "the page could not refresh:\n{dom}"
    );
    for node in &state.nodes {
        let row = node_row(&dom, &node.id)
            .unwrap_or_else(|| panic!("node {} is not on the page:\n{dom}", node.id));
        assert!(
            row.contains("<span class=\"up\">up</span>"),
            "{} is not shown up: {row}",
            node.id
        );
    }
    let purge_row = format!("<td>{}</td>", purged.id);
    assert!(
        dom.contains(&purge_row),
        "purge {} is not listed:\n{dom}",
        purged.id
    );
    assert!(dom.contains("class=\"complete\">complete in "), "{dom}");
    // The tier plan: ap's edges send their misses to the shield near the origin.
    assert!(dom.contains("Tiers (auto)"), "{dom}");
    assert!(
        dom.contains("<td>ap</td><td>shield-us-1</td>"),
        "ap's tier is not shown:\n{dom}"
    );
    for node in &state.nodes {
        let applied = format!("{}: applied", node.id);
        assert!(dom.contains(&applied), "{applied} is not shown:\n{dom}");
    }

    let screenshot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    let shot = {
        let mut command = chromium(&binary, profile.path());
        command
            .arg(format!("--screenshot={}", screenshot.display()))
            .arg("--window-size=1400,1800")
            .arg(&url);
        tokio::task::spawn_blocking(move || command.output())
            .await
            .unwrap()
            .expect("chromium runs")
    };
    assert!(
        shot.status.success() && screenshot.is_file(),
        "no screenshot: {}",
        String::from_utf8_lossy(&shot.stderr)
    );
    println!("status page screenshot: {}", screenshot.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_says_when_routing_is_held_back_for_shields_in_chromium() {
    let test =
        "status_page::the_status_page_says_when_routing_is_held_back_for_shields_in_chromium";
    let Some(binary) = verge_testkit::installed("chromium", "chromium", test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let control = start_control(
        dir.path(),
        "127.0.0.1:0".parse().unwrap(),
        &[
            "health.settle = \"60s\"",
            "health.heartbeat_timeout = \"60s\"",
        ],
    )
    .await;
    // As after a control restart: an edge comes back still routing through a shield that has
    // not registered again.
    let registration = serde_json::json!({
        "id": "us-1",
        "role": "edge",
        "region": "us",
        "data_url": "http://127.0.0.1:9",
        "admin_url": "http://127.0.0.1:9",
        "weight": 1,
        "shields": ["shield-away"],
    });
    let registered = verge_testkit::client::HttpClient::http1()
        .request(
            "POST",
            &format!("{}/v1/register", control.url()),
            &[("content-type", "application/json")],
            registration.to_string(),
        )
        .await;
    assert_eq!(registered.status, 200, "{}", registered.text());

    let profile = tempfile::tempdir().unwrap();
    let url = format!("http://{}/?token={TOKEN}", control.admin_addr);
    let dom = rendered(&binary, profile.path(), &url).await;
    assert!(
        dom.contains("Held back until shield-away register again"),
        "the held table is not shown:\n{dom}"
    );
    // (The page's own script holds both sentences: what counts is what it rendered.)
    assert!(
        !dom.contains(">No shields: edges go to the origin.<")
            && dom.contains(">None yet: the nodes route with the tables they have.<"),
        "while held, the page must not say the edges go to the origin:\n{dom}"
    );
    control.stop().await;
}
