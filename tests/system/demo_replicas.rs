//! `verge demo --ha`: through the demo's library, three control replicas, each a process of the
//! real `verge` binary, on a real 3-member etcd cluster (the `etcd` binary from the Debian
//! package `etcd-server`; without it the test says SKIPPED and does not run); and the binary
//! refusing `--ha` without etcd. Here rather than in the demo crate's tests because only this
//! package's tests know where the binary is (`CARGO_BIN_EXE_verge`).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::time::timeout;
use verge_config::wire::PurgeSpec;
use verge_control::client::AdminClient;
use verge_demo::replicas::ReplicaInfo;
use verge_demo::{Demo, DemoOptions, HaOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ha_demo_purges_every_node_and_another_replica_leads_after_the_leader_is_killed() {
    let test = "demo_replicas::the_ha_demo_purges_every_node_and_another_replica_leads_after_the_leader_is_killed";
    let Some(etcd) = verge_testkit::installed("etcd", "etcd-server", test) else {
        return;
    };
    let options = DemoOptions {
        edges_per_region: 1,
        ha: Some(HaOptions {
            verge: PathBuf::from(env!("CARGO_BIN_EXE_verge")),
            etcd,
        }),
        ..DemoOptions::default()
    };
    let mut demo = timeout(Duration::from_secs(60), Demo::start(options))
        .await
        .expect("the HA demo starts within 60 s")
        .expect("the HA demo starts");
    let token = demo.state.control.token.clone();
    let nodes = demo.state.nodes.len();
    assert_eq!(nodes, 5, "{:?}", demo.state.nodes);
    let replicas = demo.replicas().expect("an HA demo has replicas");
    let infos = replicas.infos();
    assert_eq!(infos.len(), 3, "{infos:?}");
    let pids: Vec<u32> = infos.iter().filter_map(|r| r.pid).collect();
    assert_eq!(pids.len(), 3, "{infos:?}");
    // The state file names them too, for scripts (`verge demo --ha --state FILE`).
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("state.json");
    demo.state.write_to(&file).unwrap();
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let ha = &written["ha"];
    assert_eq!(ha["etcd"].as_array().map(Vec::len), Some(3), "{written}");
    let named: Vec<(&str, u64)> = ha["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["name"].as_str().unwrap(), r["pid"].as_u64().unwrap()))
        .collect();
    let expected: Vec<(&str, u64)> = infos
        .iter()
        .map(|r| (r.name.as_str(), u64::from(r.pid.unwrap())))
        .collect();
    assert_eq!(named, expected);
    assert!(
        infos.iter().any(|r| r.admin == demo.state.control.admin),
        "control's endpoints are one replica's"
    );
    let leader = replicas
        .views()
        .await
        .into_iter()
        .flatten()
        .find_map(|view| view.leader)
        .expect("the replicas know a leader once the demo is ready");

    // SIGKILL: the leader revokes nothing; the others wait out its lease.
    demo.kill(&leader).await.unwrap();
    let killed = Instant::now();
    let others: Vec<&ReplicaInfo> = infos.iter().filter(|r| r.name != leader).collect();
    let purge_at = AdminClient::new(&others[0].admin, &token).unwrap();
    let status_at = AdminClient::new(&others[1].admin, &token).unwrap();
    let spec = PurgeSpec {
        urls: vec![format!(
            "http://{}{}",
            demo.state.hostname, demo.state.samples[0]
        )],
        ..PurgeSpec::default()
    };
    let accepted = purge_at
        .purge(&spec)
        .await
        .expect("another replica accepts the purge");
    let give_up = Instant::now() + Duration::from_secs(15);
    let status = loop {
        let status = status_at.status(accepted.id).await;
        if let Ok(status) = &status {
            if status.nodes.len() == nodes && status.nodes.iter().all(|n| n.state == "applied") {
                break status.clone();
            }
        }
        assert!(
            Instant::now() < give_up,
            "the purge is not applied by every node after 15 s, at the third replica: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.complete, "{status:?}");

    let give_up = Instant::now() + Duration::from_secs(10);
    let new_leader = 'led: loop {
        for admin in [&purge_at, &status_at] {
            if let Ok(view) = admin.get_json("/v1/replica").await {
                if view["is_leader"] == true {
                    break 'led view["name"].as_str().unwrap_or_default().to_string();
                }
            }
        }
        assert!(
            Instant::now() < give_up,
            "no other replica leads 10 s after the kill"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_ne!(new_leader, leader);
    // The lease is 2 s: another leads within a few seconds of the kill.
    let after = killed.elapsed();
    assert!(
        after < Duration::from_secs(6),
        "another replica led after {after:?}"
    );

    // Back on its addresses, the killed replica follows the new leader.
    demo.restore(&leader).await.unwrap();
    let restored = demo.replicas().unwrap().infos();
    let restored = restored.iter().find(|r| r.name == leader).unwrap();
    let back = AdminClient::new(&restored.admin, &token).unwrap();
    let give_up = Instant::now() + Duration::from_secs(10);
    loop {
        let view = back.get_json("/v1/replica").await;
        if let Ok(view) = &view {
            if view["leader"] == new_leader.as_str() && view["is_leader"] == false {
                break;
            }
        }
        assert!(
            Instant::now() < give_up,
            "restored {leader} does not follow {new_leader}: {view:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pids: Vec<u32> = demo
        .replicas()
        .unwrap()
        .infos()
        .iter()
        .filter_map(|r| r.pid)
        .chain(pids)
        .collect();

    timeout(Duration::from_secs(15), demo.shutdown())
        .await
        .expect("the HA demo stops within 15 s");
    for pid in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "replica process {pid} outlived the demo"
        );
    }
}

#[test]
fn verge_demo_ha_without_etcd_refuses_before_starting_anything() {
    let empty = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_verge"))
        .args(["demo", "--ha"])
        .env("PATH", empty.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("`etcd-server`") && stderr.contains("apt-get install etcd-server"),
        "{stderr}"
    );
    assert!(
        !String::from_utf8_lossy(&output.stdout).contains("Starting"),
        "nothing starts without etcd"
    );
}
