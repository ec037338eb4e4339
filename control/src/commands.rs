//! The operator commands that talk to a running deployment's admin API — `verge purge`,
//! `verge reload` and `verge status` — with what they print and the exit code they end with: 0 done, 1 refused or
//! incomplete, 2 the request could not be made (bad arguments, unreachable).

use std::process::ExitCode;
use std::time::Duration;

use verge_config::wire::PurgeSpec;

use crate::client::AdminClient;

/// Exit code when the command could not be made or sent.
const EXIT_UNUSABLE: u8 = 2;

/// The admin API client of `base`; when there can be none, says why after `what` (the command,
/// and the flag at fault) and gives the exit code.
fn admin_client(base: &str, token: &str, what: &str) -> Result<AdminClient, ExitCode> {
    AdminClient::new(base, token).map_err(|e| {
        eprintln!("{what}: {e}");
        ExitCode::from(EXIT_UNUSABLE)
    })
}

/// `verge reload`: asks the node (edge, shield or control) behind `admin` to reload its
/// configuration; prints what was applied, or every problem of a refused file.
pub async fn reload(admin: &str, token: &str) -> ExitCode {
    let client = match admin_client(admin, token, "verge reload") {
        Ok(client) => client,
        Err(code) => return code,
    };
    match client.reload().await {
        Ok(Ok(report)) if report.changed.is_empty() => {
            println!("configuration version {}: nothing changed", report.version);
            ExitCode::SUCCESS
        }
        Ok(Ok(report)) => {
            println!(
                "configuration version {}: applied {}",
                report.version,
                report.changed.join(", ")
            );
            ExitCode::SUCCESS
        }
        Ok(Err(refusal)) => {
            eprintln!(
                "verge reload: refused ({}); the running configuration stays:",
                refusal.error
            );
            for error in &refusal.errors {
                eprintln!("  - {error}");
            }
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("verge reload: {e}");
            ExitCode::from(EXIT_UNUSABLE)
        }
    }
}

/// `verge status`: control's view of the fleet, printed for a terminal — the same JSON the
/// status page reads. Exits 0 when every node is up, 1 when some are down.
pub async fn status(control: &str, token: &str) -> ExitCode {
    let client = match admin_client(control, token, "verge status: --control") {
        Ok(client) => client,
        Err(code) => return code,
    };
    let fetched = async {
        Ok::<_, crate::client::ClientError>((
            client.get_json("/v1/nodes").await?,
            client.get_json("/v1/routing").await?,
            client.get_json("/v1/purges?limit=5").await?,
        ))
    };
    match fetched.await {
        Ok((nodes, routing, purges)) => {
            let (text, all_up) = render_status(&nodes, &routing, &purges);
            // Only a replica on etcd has one (404 otherwise).
            if let Ok(replica) = client.get_json("/v1/replica").await {
                print!("{}", render_replica(&replica));
            }
            print!("{text}");
            if all_up {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("verge status: {e}");
            ExitCode::from(EXIT_UNUSABLE)
        }
    }
}

/// The line `verge status` prints about the replica asked, when control runs on etcd.
pub fn render_replica(replica: &serde_json::Value) -> String {
    let name = replica["name"].as_str().unwrap_or("-");
    let leader = replica["leader"].as_str().unwrap_or("none");
    let role = if replica["is_leader"] == true {
        "the leader"
    } else {
        "a follower"
    };
    let store = if replica["store_up"] == true {
        "etcd up"
    } else {
        "etcd unreachable"
    };
    let peers: Vec<String> = replica["peers"]
        .as_array()
        .map(|peers| {
            peers
                .iter()
                .map(|p| {
                    let nodes = p["nodes"].as_u64().unwrap_or(0);
                    let noun = if nodes == 1 { "node" } else { "nodes" };
                    format!("{} ({nodes} {noun})", p["name"].as_str().unwrap_or("-"))
                })
                .collect()
        })
        .unwrap_or_default();
    let peers = if peers.is_empty() {
        "none".to_string()
    } else {
        peers.join(", ")
    };
    format!("replica {name}, {role} (leader: {leader}), {store}; other replicas: {peers}\n")
}

/// The text `verge status` prints for control's nodes, routing table and recent purges, and
/// whether every node is up. Fields missing from the JSON show as `-`.
pub fn render_status(
    nodes: &serde_json::Value,
    routing: &serde_json::Value,
    purges: &serde_json::Value,
) -> (String, bool) {
    use std::fmt::Write as _;
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) if !s.is_empty() => s.clone(),
        serde_json::Value::Number(n) => n.to_string(),
        serde_json::Value::Bool(b) => b.to_string(),
        _ => "-".to_string(),
    };
    let share = |v: &serde_json::Value| {
        v.as_f64()
            .map_or_else(|| "-".to_string(), |x| format!("{:.1}%", x * 100.0))
    };
    let list = |v: &serde_json::Value| v.as_array().cloned().unwrap_or_default();
    let nodes = list(nodes);
    let up = nodes.iter().filter(|n| n["state"] == "up").count();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} nodes, {up} up; routing table version {}",
        nodes.len(),
        text(&routing["version"])
    );
    let mut regions: Vec<String> = nodes.iter().map(|n| text(&n["region"])).collect();
    regions.sort();
    regions.dedup();
    for region in &regions {
        let _ = writeln!(out, "\nregion {region}");
        let _ = writeln!(
            out,
            "  {:<20} {:<7} {:<5} {:<10} {:>10} {:>9} {:>8} {:>8}",
            "node", "role", "state", "version", "heartbeat", "req/s", "hits", "offload"
        );
        for node in nodes.iter().filter(|n| text(&n["region"]) == *region) {
            let heartbeat = node["last_heartbeat_ms_ago"].as_u64().map_or_else(
                || "-".to_string(),
                |ms| format!("{:.1}s ago", ms as f64 / 1000.0),
            );
            let rates = &node["rates"];
            let per_second = rates["requests_per_second"]
                .as_f64()
                .map_or_else(|| "-".to_string(), |r| format!("{r:.1}"));
            let _ = writeln!(
                out,
                "  {:<20} {:<7} {:<5} {:<10} {:>10} {:>9} {:>8} {:>8}",
                text(&node["id"]),
                text(&node["role"]),
                text(&node["state"]),
                text(&node["version"]),
                heartbeat,
                per_second,
                share(&rates["hit_ratio"]),
                share(&rates["offload"]),
            );
        }
    }
    let awaited: Vec<String> = list(&routing["awaiting_shields"])
        .iter()
        .map(text)
        .collect();
    if !awaited.is_empty() {
        let _ = writeln!(
            out,
            "\nrouting held back until {} register again (control has just started; the nodes keep the tables they have)",
            awaited.join(", ")
        );
    }
    let shields = list(&routing["shields"]);
    let in_ring: Vec<String> = shields
        .iter()
        .filter(|s| s["healthy"] == true)
        .map(|s| format!("{} (weight {})", text(&s["id"]), text(&s["weight"])))
        .collect();
    let _ = writeln!(
        out,
        "\nshield ring: {}",
        if !awaited.is_empty() && in_ring.is_empty() {
            "none published since the start".to_string()
        } else if in_ring.is_empty() {
            "empty (edges go to the origin)".to_string()
        } else {
            in_ring.join(", ")
        }
    );
    let tiers = &routing["tiers"];
    if !tiers.is_null() {
        let _ = writeln!(out, "tiers ({}):", text(&tiers["topology"]));
        for tier in list(&tiers["regions"]) {
            let ids: Vec<String> = list(&tier["shields"]).iter().map(text).collect();
            let _ = writeln!(
                out,
                "  {} -> {} ({})",
                text(&tier["region"]),
                if ids.is_empty() {
                    "the origin".to_string()
                } else {
                    ids.join(", ")
                },
                text(&tier["basis"])
            );
        }
        let upper: Vec<String> = list(&tiers["upper"]).iter().map(text).collect();
        if !upper.is_empty() {
            let _ = writeln!(out, "  other shields -> {}", upper.join(", "));
        }
    }
    let purges = list(purges);
    if !purges.is_empty() {
        let _ = writeln!(out, "\nrecent purges");
    }
    for purge in &purges {
        let nodes = list(&purge["nodes"]);
        let applied = nodes.iter().filter(|n| n["state"] == "applied").count();
        let state = if purge["complete"] == true {
            "complete"
        } else {
            "in progress"
        };
        let _ = writeln!(
            out,
            "  {:<6} {:<12} {applied}/{} nodes applied",
            text(&purge["id"]),
            state,
            nodes.len()
        );
    }
    (out, up == nodes.len())
}

/// `verge purge`: sends `spec` to control and waits up to `timeout` until every live node has
/// applied it, then prints each node's state.
pub async fn purge(control: &str, token: &str, spec: &PurgeSpec, timeout: &str) -> ExitCode {
    if let Err(e) = spec.validate() {
        eprintln!("verge purge: {e}");
        return ExitCode::from(EXIT_UNUSABLE);
    }
    let timeout = match verge_config::parse_duration(timeout) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("verge purge: --timeout: {e}");
            return ExitCode::from(EXIT_UNUSABLE);
        }
    };
    let client = match admin_client(control, token, "verge purge: --control") {
        Ok(client) => client,
        Err(code) => return code,
    };
    purge_and_wait(&client, spec, timeout).await
}

async fn purge_and_wait(client: &AdminClient, spec: &PurgeSpec, timeout: Duration) -> ExitCode {
    let accepted = match client.purge(spec).await {
        Ok(accepted) => accepted,
        Err(e) => {
            eprintln!("verge purge: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("purge {} accepted (seq {})", accepted.id, accepted.seq);
    let (status, complete) = match client.wait(accepted.id, timeout).await {
        Ok(status) => (status, true),
        Err(e) => {
            eprintln!("verge purge: {e}");
            match client.status(accepted.id).await {
                Ok(status) => (status, false),
                Err(_) => return ExitCode::FAILURE,
            }
        }
    };
    println!("{:<24} {:<7} {:<8} applied after", "node", "role", "state");
    for node in &status.nodes {
        let after = node
            .applied_after_ms
            .map_or_else(|| "-".to_string(), |ms| format!("{ms} ms"));
        println!(
            "{:<24} {:<7} {:<8} {after}",
            node.id.as_str(),
            node.role.to_string(),
            node.state
        );
    }
    match (complete, status.completed_after_us) {
        (true, Some(us)) => {
            println!(
                "complete on every live node after {:.1} ms",
                us as f64 / 1000.0
            );
            ExitCode::SUCCESS
        }
        (true, None) => {
            println!("complete on every live node");
            ExitCode::SUCCESS
        }
        (false, _) => ExitCode::FAILURE,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{render_replica, render_status};

    #[test]
    fn status_lists_each_region_s_nodes_the_ring_and_purges_and_says_whether_all_are_up() {
        let nodes = json!([
            {"id": "e1", "role": "edge", "region": "us", "state": "up", "version": "0.1.0",
             "last_heartbeat_ms_ago": 1500,
             "rates": {"requests_per_second": 12.5, "hit_ratio": 0.5, "offload": 0.75}},
            {"id": "s1", "role": "shield", "region": "eu", "state": "down", "version": "",
             "last_heartbeat_ms_ago": 90000, "rates": null}
        ]);
        let routing = json!({"version": 7, "shields": [
            {"id": "s1", "weight": 2, "healthy": false},
            {"id": "s2", "weight": 1, "healthy": true}
        ], "tiers": {"topology": "auto", "upper": ["s2"], "regions": [
            {"region": "eu", "shields": ["s2"], "basis": "measured", "cost": 4.0},
            {"region": "us", "shields": [], "basis": "proximity", "cost": 0.0}
        ]}});
        let purges = json!([{"id": 3, "complete": false,
            "nodes": [{"id": "e1", "state": "applied"}, {"id": "s1", "state": "down"}]}]);
        let (text, all_up) = render_status(&nodes, &routing, &purges);
        assert!(!all_up, "s1 is down");
        assert!(
            text.starts_with("2 nodes, 1 up; routing table version 7\n"),
            "{text}"
        );
        let eu = text.find("region eu").unwrap();
        let us = text.find("region us").unwrap();
        assert!(eu < us, "regions in order: {text}");
        assert!(text.contains("12.5") && text.contains("50.0%") && text.contains("75.0%"));
        assert!(
            text.contains("1.5s ago") && text.contains("90.0s ago"),
            "{text}"
        );
        assert!(text.contains("shield ring: s2 (weight 1)\n"), "{text}");
        assert!(
            text.contains(
                "tiers (auto):\n  eu -> s2 (measured)\n  us -> the origin (proximity)\n  other shields -> s2\n"
            ),
            "{text}"
        );
        assert!(text.contains("in progress  1/2 nodes applied"), "{text}");

        assert!(!text.contains("held back"), "{text}");
        let held = json!({"version": 1, "shields": [], "awaiting_shields": ["s1", "s2"]});
        let (text, _) = render_status(&nodes, &held, &purges);
        assert!(
            text.contains("\nrouting held back until s1, s2 register again (control has just started; the nodes keep the tables they have)\n"),
            "{text}"
        );
        assert!(
            text.contains("shield ring: none published since the start\n"),
            "{text}"
        );

        let (_, all_up) = render_status(&json!([]), &json!({}), &json!(null));
        let line = render_replica(&json!({"name": "b", "leader": "a", "is_leader": false,
            "store_up": true, "peers": [{"name": "a", "nodes": 3}]}));
        assert_eq!(
            line,
            "replica b, a follower (leader: a), etcd up; other replicas: a (3 nodes)\n"
        );
        assert!(render_replica(&json!({})).contains("leader: none"));
        assert!(all_up, "no node is down");
    }
}
