//! What `verge demo` prints once everything is up: a status table, a Prometheus scrape
//! configuration for every node and control, and commands to try. Pure text from a
//! [`DemoState`], so it is the same for every caller and testable without a demo.

use std::fmt::Write;
use std::path::Path;

use crate::state::{DemoState, OriginTime};

/// Everything, in the order a user reads it.
pub fn summary(state: &DemoState, state_file: Option<&Path>, verge: &str) -> String {
    let mut out = String::new();
    out += &status_table(state);
    out += "\n";
    out += &latency_line(state);
    out += &origin_time_line(state);
    out += &status_page_line(state);
    if let Some(path) = state_file {
        let _ = writeln!(out, "State (JSON, every endpoint): {}", path.display());
    }
    out += "\nPrometheus scrape configuration (labels: role, region, node):\n\n";
    out += &scrape_config(state);
    out += "\nTry:\n\n";
    out += &commands(state, verge);
    out += "\nCtrl-C stops everything.\n";
    out
}

/// One line per role: role, id, region, data-plane URL, admin URL.
pub fn status_table(state: &DemoState) -> String {
    let mut rows: Vec<[String; 5]> = vec![
        ["role", "id", "region", "http", "admin"].map(String::from),
        [
            "control".into(),
            "control".into(),
            "-".into(),
            state.control.api.clone(),
            state.control.admin.clone(),
        ],
        [
            "dns".into(),
            state.hostname.clone(),
            "-".into(),
            format!("{} (udp, tcp)", state.dns),
            "-".into(),
        ],
        [
            "steering".into(),
            state.hostname.clone(),
            "-".into(),
            state.steering.clone(),
            "-".into(),
        ],
        [
            "origin".into(),
            "origin".into(),
            origin_region(state),
            state.origin.clone(),
            "-".into(),
        ],
    ];
    for node in &state.nodes {
        rows.push([
            node.role.clone(),
            node.id.clone(),
            node.region.clone(),
            node.http.clone(),
            node.admin.clone(),
        ]);
    }
    let mut widths = [0usize; 5];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out += line.join("  ").trim_end();
        out += "\n";
    }
    out
}

/// The region whose block holds the origin's address.
fn origin_region(state: &DemoState) -> String {
    let host = state
        .origin
        .trim_start_matches("http://")
        .split(':')
        .next()
        .unwrap_or_default();
    let octet = host.split('.').nth(1).unwrap_or_default();
    state
        .regions
        .iter()
        .find(|r| r.block.split('.').nth(1) == Some(octet))
        .map_or_else(|| "-".to_string(), |r| r.id.clone())
}

/// `Origin: each fetch takes 2 ms median, 20 ms p99`, when the origin takes time.
fn origin_time_line(state: &DemoState) -> String {
    match state.origin_time.as_ref().map(OriginTime::service_time) {
        Some(time) if !time.is_instant() => {
            format!("Origin: each fetch takes {time} (--origin-time)\n")
        }
        _ => String::new(),
    }
}

/// `Latency (one way): us–eu 40 ms, …; within a region 1 ms`, regions in their order.
fn latency_line(state: &DemoState) -> String {
    let ms = |a: &str, b: &str| {
        state
            .latency
            .iter()
            .find(|p| p.from == a && p.to == b)
            .map(|p| p.one_way_ms)
    };
    let mut pairs = Vec::new();
    for (i, a) in state.regions.iter().enumerate() {
        for b in &state.regions[i + 1..] {
            if let Some(d) = ms(&a.id, &b.id) {
                pairs.push(format!("{}–{} {d} ms", a.id, b.id));
            }
        }
    }
    let local = state.regions.first().and_then(|r| ms(&r.id, &r.id));
    if pairs.is_empty() && local.is_none() {
        return String::new();
    }
    let mut line = format!("Latency (one way): {}", pairs.join(", "));
    if let Some(local) = local {
        let _ = write!(line, "; within a region {local} ms");
    }
    if let Some(site) = &state.origin_site {
        let _ = write!(
            line,
            "; within the origin's site ({}) {} ms",
            site.members.join(", "),
            site.one_way_ms
        );
    }
    line + "\n"
}

/// `host:port` of a URL.
fn authority(url: &str) -> &str {
    url.split("://").nth(1).unwrap_or(url).trim_end_matches('/')
}

/// A `scrape_configs` section with static targets: control, and each node labelled with its
/// role, region and id.
pub fn scrape_config(state: &DemoState) -> String {
    let mut out = String::from("scrape_configs:\n");
    let _ = write!(
        out,
        "  - job_name: verge-control\n    static_configs:\n      - targets: [\"{}\"]\n",
        authority(&state.control.admin)
    );
    out += "  - job_name: verge-nodes\n    static_configs:\n";
    for node in &state.nodes {
        let _ = write!(
            out,
            "      - targets: [\"{}\"]\n        labels: {{role: {}, region: {}, node: {}}}\n",
            authority(&node.admin),
            node.role,
            node.region,
            node.id
        );
    }
    out
}

/// Shell commands: a request through an edge of each region from a client there, geo
/// steering over HTTP and DNS, a purge through control, the metrics.
/// Where the status page is, and the token that opens it (the link opens a session).
pub fn status_page_line(state: &DemoState) -> String {
    format!(
        "Status page: {}/?token={} (admin token: {})\n",
        state.control.admin, state.control.token, state.control.token
    )
}

pub fn commands(state: &DemoState, verge: &str) -> String {
    let sample = state
        .samples
        .first()
        .map_or("/static/img/000.jpg", String::as_str);
    let host = &state.hostname;
    let mut out = String::from(
        "# A request through an edge of each region, from a client address in that region\n\
         # (run it twice: the second answer is a cache hit):\n",
    );
    for region in &state.regions {
        if let Some(edge) = state.edges().find(|e| e.region == region.id) {
            let _ = writeln!(
                out,
                "curl -s -o /dev/null -D - --interface {} -H 'Host: {host}' {}{sample} | grep -i cache-status",
                region.client_addr, edge.http
            );
        }
    }
    if let Some(far) = state.regions.last() {
        out += "\n# Where geo steering sends a client, over HTTP and DNS:\n";
        let _ = writeln!(
            out,
            "curl -s '{}/v1/route?ip={}'",
            state.steering, far.client_addr
        );
        let _ = writeln!(
            out,
            "curl -si --interface {} -H 'Host: {host}' {}{sample}",
            far.client_addr, state.steering
        );
        if let Some((ip, port)) = state.dns.rsplit_once(':') {
            let _ = writeln!(
                out,
                "dig @{ip} -p {port} -b {} {host} +short",
                far.client_addr
            );
        }
    }
    let _ = write!(
        out,
        "\n# Purge the object everywhere (or every image: --tag img), then request it again:\n\
         {verge} purge --control {} --token {} --url http://{host}{sample}\n",
        state.control.admin, state.control.token
    );
    let _ = write!(
        out,
        "\n# The fleet at a glance (as the status page shows it):\n\
         {verge} status --control {} --token {}\n",
        state.control.admin, state.control.token
    );
    out += "\n# Metrics:\n";
    if let Some(edge) = state.edges().next() {
        let _ = writeln!(
            out,
            "curl -s {}/metrics | grep -e verge_requests_total -e verge_shield_requests_total",
            edge.admin
        );
    }
    let _ = writeln!(
        out,
        "curl -s {}/metrics | grep verge_purge_completion_seconds",
        state.control.admin
    );
    out
}

/// How to run `exe` from `cwd`: a relative path when it is below it.
pub fn command_name(exe: &Path, cwd: &Path) -> String {
    match exe.strip_prefix(cwd) {
        Ok(relative) => format!("./{}", relative.display()),
        Err(_) => exe.display().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{ControlEndpoints, NodeEndpoints, PathLatency, RegionInfo, SiteLatency};

    fn state() -> DemoState {
        DemoState {
            hostname: "cdn.verge.test".into(),
            dns: "127.0.0.1:5300".into(),
            steering: "http://127.0.0.1:7072".into(),
            control: ControlEndpoints {
                api: "http://127.0.0.1:7070".into(),
                admin: "http://127.0.0.1:7071".into(),
                token: "demo-token-0123456789".into(),
            },
            origin: "http://127.1.0.200:8000".into(),
            nodes: vec![NodeEndpoints {
                role: "edge".into(),
                id: "eu-1".into(),
                region: "eu".into(),
                http: "http://127.2.0.1:8080".into(),
                https: None,
                admin: "http://127.0.0.1:9080".into(),
            }],
            regions: vec![
                RegionInfo {
                    id: "us".into(),
                    block: "127.1.0.0/16".into(),
                    client_addr: "127.1.200.1".into(),
                },
                RegionInfo {
                    id: "eu".into(),
                    block: "127.2.0.0/16".into(),
                    client_addr: "127.2.200.1".into(),
                },
            ],
            samples: vec!["/static/img/000.jpg".into()],
            latency: vec![
                PathLatency {
                    from: "us".into(),
                    to: "eu".into(),
                    one_way_ms: 40.0,
                },
                PathLatency {
                    from: "us".into(),
                    to: "us".into(),
                    one_way_ms: 1.0,
                },
            ],
            origin_site: None,
            origin_time: None,
            ha: None,
        }
    }

    #[test]
    fn the_scrape_config_lists_control_and_every_node_with_labels() {
        let yaml = scrape_config(&state());
        assert!(yaml.starts_with("scrape_configs:\n"));
        assert!(yaml.contains("targets: [\"127.0.0.1:7071\"]"));
        assert!(yaml.contains(
            "targets: [\"127.0.0.1:9080\"]\n        labels: {role: edge, region: eu, node: eu-1}"
        ));
    }

    #[test]
    fn the_table_shows_every_role_and_the_origin_region() {
        let table = status_table(&state());
        let origin = table.lines().find(|l| l.starts_with("origin")).unwrap();
        assert!(origin.contains(" us "), "{origin}");
        assert!(table
            .lines()
            .any(|l| l.starts_with("edge") && l.contains("eu-1")));
    }

    #[test]
    fn commands_use_each_region_client_address_and_the_purge_token() {
        let text = commands(&state(), "verge");
        assert!(text.contains("--interface 127.2.200.1 -H 'Host: cdn.verge.test' http://127.2.0.1:8080/static/img/000.jpg"));
        assert!(text
            .contains("verge purge --control http://127.0.0.1:7071 --token demo-token-0123456789"));
        assert!(text.contains(
            "verge status --control http://127.0.0.1:7071 --token demo-token-0123456789"
        ));
        assert_eq!(
            status_page_line(&state()),
            "Status page: http://127.0.0.1:7071/?token=demo-token-0123456789 \
             (admin token: demo-token-0123456789)\n"
        );
        assert!(text.contains("dig @127.0.0.1 -p 5300 -b 127.2.200.1 cdn.verge.test"));
        assert!(latency_line(&state()).contains("us–eu 40 ms; within a region 1 ms"));
        let with_site = DemoState {
            origin_site: Some(SiteLatency {
                members: vec!["origin".into(), "shield-us-1".into()],
                one_way_ms: 0.0,
            }),
            ..state()
        };
        assert!(latency_line(&with_site)
            .ends_with("; within the origin's site (origin, shield-us-1) 0 ms\n"));
        assert_eq!(origin_time_line(&state()), "");
        let slow_origin = DemoState {
            origin_time: Some(OriginTime::of(crate::origin::ServiceTime::DEFAULT)),
            ..state()
        };
        assert_eq!(
            origin_time_line(&slow_origin),
            "Origin: each fetch takes 2 ms median, 20 ms p99 (--origin-time)\n"
        );
    }

    #[test]
    fn commands_are_shown_relative_to_the_working_directory() {
        assert_eq!(
            command_name(Path::new("/w/target/release/verge"), Path::new("/w")),
            "./target/release/verge"
        );
        assert_eq!(
            command_name(Path::new("/usr/bin/verge"), Path::new("/w")),
            "/usr/bin/verge"
        );
    }
}
