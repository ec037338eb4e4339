//! What `verge demo --ha` prints after the usual summary: the etcd members, each control
//! replica with its pid and which one leads, and the commands of the drill — kill the leader,
//! purge through another replica, see the purge reach every node and another replica lead.
//! Pure text from a [`Failover`], testable without a demo.

use std::fmt::Write;
use std::path::PathBuf;

use crate::replica_plan::REPLICA_LEASE;
use crate::replicas::{ReplicaInfo, Replicas};
use crate::state::DemoState;

/// What the drill is printed from.
#[derive(Debug, Clone)]
pub struct Failover {
    pub etcd: Vec<String>,
    pub replicas: Vec<ReplicaInfo>,
    /// The leader's name, as the replicas report it.
    pub leader: Option<String>,
    /// The id the next purge will get (purge ids are etcd-wide sequence numbers).
    pub next_purge: u64,
    pub logs: PathBuf,
}

impl Failover {
    /// Asks the replicas who leads and where the purge log is.
    pub async fn observe(replicas: &Replicas) -> Failover {
        let views: Vec<_> = replicas.views().await.into_iter().flatten().collect();
        Failover {
            etcd: replicas.etcd_urls(),
            replicas: replicas.infos(),
            leader: views.iter().find_map(|v| v.leader.clone()),
            next_purge: views.iter().map(|v| v.purge_head).max().unwrap_or(0) + 1,
            logs: replicas.log_dir().to_path_buf(),
        }
    }
}

/// The replicas' table and the drill's commands; `verge` is how to run the binary.
pub fn summary(failover: &Failover, state: &DemoState, verge: &str) -> String {
    let mut out = String::from("Control replicas on etcd (--ha):\n\n");
    let width = failover
        .replicas
        .iter()
        .map(|r| r.name.len())
        .max()
        .unwrap_or(0)
        .max("etcd".len());
    let _ = writeln!(out, "{:<width$}  {}", "etcd", failover.etcd.join(" "));
    for replica in &failover.replicas {
        let pid = replica
            .pid
            .map_or_else(|| "killed".to_string(), |pid| format!("pid {pid}"));
        let leads = if failover.leader.as_deref() == Some(replica.name.as_str()) {
            "  leader"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "{:<width$}  {pid:<10}  admin {}  nodes {}{leads}",
            replica.name, replica.admin, replica.api
        );
    }
    let _ = writeln!(
        out,
        "Logs: {}/ (control-N.log, etcd-N.log; removed when the demo stops)",
        failover.logs.display()
    );
    let leader = failover
        .replicas
        .iter()
        .find(|r| failover.leader.as_deref() == Some(r.name.as_str()));
    let (Some(leader), Some(leader_pid)) = (leader, leader.and_then(|l| l.pid)) else {
        out += "\nNo replica leads yet: ask again with GET /v1/replica on any admin URL above.\n";
        return out;
    };
    let others: Vec<&ReplicaInfo> = failover
        .replicas
        .iter()
        .filter(|r| r.name != leader.name)
        .collect();
    let (Some(purge_at), Some(status_at)) = (others.first(), others.last()) else {
        return out;
    };
    let token = &state.control.token;
    let sample = state
        .samples
        .first()
        .map_or("/static/img/000.jpg", String::as_str);
    let _ = write!(
        out,
        "\nTry: kill the leader. Purges still reach every node, and another replica leads once \
         the killed one's {} s lease has expired.\n\n\
         kill -9 {leader_pid}\n\n\
         # Purge through another replica (it waits until every node has applied it):\n\
         {verge} purge --control {} --token {token} --url http://{}{sample}\n\n\
         # The purge at yet another replica ({}: the id `verge purge` printed):\n\
         curl -s -H 'Authorization: Bearer {token}' {}/v1/purge/{}\n\n\
         # Who leads now:\n\
         curl -s -H 'Authorization: Bearer {token}' {}/v1/replica\n",
        REPLICA_LEASE.as_secs(),
        purge_at.admin,
        state.hostname,
        failover.next_purge,
        status_at.admin,
        failover.next_purge,
        purge_at.admin,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::ControlEndpoints;

    fn replica(i: u32) -> ReplicaInfo {
        ReplicaInfo {
            name: format!("control-{i}"),
            pid: Some(100 + i),
            admin: format!("http://127.0.10.{i}:7071"),
            api: format!("http://127.1.0.250:4000{i}"),
        }
    }

    fn state() -> DemoState {
        DemoState {
            hostname: "cdn.verge.test".into(),
            dns: String::new(),
            steering: String::new(),
            control: ControlEndpoints {
                api: "http://127.1.0.250:40001".into(),
                admin: "http://127.0.10.1:7071".into(),
                token: "demo-token-0123456789".into(),
            },
            origin: "http://127.1.0.200:8000".into(),
            nodes: Vec::new(),
            regions: Vec::new(),
            samples: vec!["/static/img/000.jpg".into()],
            latency: Vec::new(),
            origin_site: None,
            origin_time: None,
            ha: None,
        }
    }

    #[test]
    fn the_drill_kills_the_leader_and_asks_the_other_replicas() {
        let failover = Failover {
            etcd: vec!["http://127.0.10.11:2379".into()],
            replicas: vec![replica(1), replica(2), replica(3)],
            leader: Some("control-2".into()),
            next_purge: 4,
            logs: PathBuf::from("/tmp/x"),
        };
        let text = summary(&failover, &state(), "verge");
        let leader_line = text.lines().find(|l| l.starts_with("control-2")).unwrap();
        assert!(leader_line.ends_with("leader"), "{leader_line}");
        assert!(leader_line.contains("pid 102"), "{leader_line}");
        assert!(text.contains("\nkill -9 102\n"), "{text}");
        assert!(text.contains(
            "verge purge --control http://127.0.10.1:7071 --token demo-token-0123456789 \
             --url http://cdn.verge.test/static/img/000.jpg"
        ));
        assert!(text.contains(
            "curl -s -H 'Authorization: Bearer demo-token-0123456789' \
             http://127.0.10.3:7071/v1/purge/4"
        ));
        assert!(text.contains("http://127.0.10.1:7071/v1/replica"));
    }

    #[test]
    fn without_a_leader_no_drill_is_offered() {
        let failover = Failover {
            etcd: Vec::new(),
            replicas: vec![replica(1), replica(2)],
            leader: None,
            next_purge: 1,
            logs: PathBuf::from("/tmp/x"),
        };
        let text = summary(&failover, &state(), "verge");
        assert!(!text.contains("kill -9"), "{text}");
        assert!(text.contains("No replica leads yet"), "{text}");
    }
}
