//! One cache definition, two topologies: the caching tests run against a [`TestCdn`] that is
//! either an edge straight in front of the origin or an edge in front of a real shield in front
//! of the origin, with the same expectations. Two tiers must behave as one cache.
//!
//! Both nodes share one manual clock, so `advance` moves time for the whole CDN, and a purge
//! reaches both tiers (as control would send it to every node). Test functions take a
//! [`Topology`]; [`in_both_topologies!`](crate::in_both_topologies) makes a test of each in a
//! `direct` and a `shielded` module.

use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::Arc;

use verge_cache::ManualClock;
use verge_config::ShieldConfig;
use verge_origin_shield::ShieldRole;

use crate::edge::{node_defaults, node_toml, purge_at, start_edge_with_clock};
use crate::node::test_config;
use crate::{FakeOrigin, RunningNode, TestEdge, TestResponse};

/// The shield's id in two-tier tests; it names the shield in `Via`.
pub const SHIELD_ID: &str = "shield-test";

/// How the cache under test reaches the origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    /// Client → edge → origin.
    Direct,
    /// Client → edge → shield → origin; the edge never goes to the origin itself.
    Shielded,
}

/// The cache clients talk to: its edge (what `Deref` gives), and the shield behind it in the
/// shielded topology.
pub struct TestCdn {
    pub edge: TestEdge,
    pub shield: Option<RunningNode>,
}

impl Deref for TestCdn {
    type Target = TestEdge;

    fn deref(&self) -> &TestEdge {
        &self.edge
    }
}

impl TestCdn {
    pub fn topology(&self) -> Topology {
        match self.shield {
            Some(_) => Topology::Shielded,
            None => Topology::Direct,
        }
    }

    /// `POST /v1/purge` on every tier, the shield first (as the origin side must forget before
    /// the edge asks again); the shield must answer as the edge does. The edge's answer.
    pub async fn purge(&self, body: &str, token: Option<&str>) -> TestResponse {
        if let Some(shield) = &self.shield {
            let at_shield = purge_at(shield.admin_addr, body, token).await;
            let at_edge = self.edge.purge(body, token).await;
            assert_eq!(
                at_shield.status,
                at_edge.status,
                "the shield and the edge answer the same purge differently: {} / {}",
                at_shield.text(),
                at_edge.text()
            );
            return at_edge;
        }
        self.edge.purge(body, token).await
    }
}

/// The TOML of the test shield in front of `origin`: loopback listeners on port 0, bounded
/// timeouts, then the `tweaks` that mean something to a shield (`shield.*`, `cache.*`,
/// `server.*`, `admin.*`, `rules`; `upstream.*` becomes `origin.*`).
pub fn shield_toml(origin: SocketAddr, tweaks: &[&str]) -> String {
    let defaults = node_defaults(
        ("shield.id", format!("{SHIELD_ID:?}")),
        ["origin.connect_timeout", "origin.response_timeout"],
        ("origin.servers", format!("[\"http://{origin}\"]")),
    );
    let translated: Vec<String> = tweaks
        .iter()
        .filter_map(|tweak| {
            let key = tweak.split_once('=').map_or(*tweak, |(k, _)| k).trim();
            if key == "rules" {
                return Some(tweak.to_string());
            }
            match key.split_once('.').map(|(table, _)| table) {
                Some("shield" | "cache" | "server" | "admin") => Some(tweak.to_string()),
                Some("upstream") if key != "upstream.origin" => {
                    Some(tweak.replacen("upstream.", "origin.", 1))
                }
                _ => None,
            }
        })
        .collect();
    let translated: Vec<&str> = translated.iter().map(String::as_str).collect();
    node_toml(&defaults, &translated)
}

/// Starts a real shield (`verge shield`) in front of `origin` with `tweaks` (see
/// [`shield_toml`]); freshness is judged by `clock`.
pub async fn start_shield_node(
    origin: SocketAddr,
    tweaks: &[&str],
    clock: Arc<ManualClock>,
) -> RunningNode {
    let config: ShieldConfig = test_config(&shield_toml(origin, tweaks));
    RunningNode::start_with_clock::<ShieldRole>(&config, clock).await
}

/// Starts a [`FakeOrigin`] and the CDN in front of it in `topology`, each node with `tweaks`
/// (see [`crate::edge_toml`] and [`shield_toml`]); the origin's `Date` follows the CDN's clock.
pub async fn start_origin_and_cdn(topology: Topology, tweaks: &[&str]) -> (FakeOrigin, TestCdn) {
    let origin = FakeOrigin::start().await;
    let clock = Arc::new(ManualClock::new());
    origin.follow_clock(clock.clone());
    let cdn = start_cdn_with_clock(origin.addr(), topology, tweaks, clock).await;
    (origin, cdn)
}

/// The CDN in `topology` in front of the origin at `origin` (any server: a [`crate::RawOrigin`],
/// say), each node with `tweaks`.
pub async fn start_cdn(origin: SocketAddr, topology: Topology, tweaks: &[&str]) -> TestCdn {
    start_cdn_with_clock(origin, topology, tweaks, Arc::new(ManualClock::new())).await
}

async fn start_cdn_with_clock(
    origin: SocketAddr,
    topology: Topology,
    tweaks: &[&str],
    clock: Arc<ManualClock>,
) -> TestCdn {
    match topology {
        Topology::Direct => TestCdn {
            edge: start_edge_with_clock(origin, tweaks, clock).await,
            shield: None,
        },
        Topology::Shielded => {
            let shield = start_shield_node(origin, tweaks, clock.clone()).await;
            let members = format!(
                "shields.members = [{{ id = {SHIELD_ID:?}, url = \"http://{}\" }}]",
                shield.data_addr
            );
            let mut edge_tweaks = vec![members.as_str(), "shields.origin_fallback = false"];
            edge_tweaks.extend_from_slice(tweaks);
            TestCdn {
                edge: start_edge_with_clock(origin, &edge_tweaks, clock).await,
                shield: Some(shield),
            }
        }
    }
}

/// Makes each named `async fn(Topology)` in scope a test in both topologies: `direct::NAME`
/// and `shielded::NAME`.
#[macro_export]
macro_rules! in_both_topologies {
    ($($test:ident),+ $(,)?) => {
        mod direct {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test($crate::cdn::Topology::Direct).await
                }
            )+
        }
        mod shielded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test($crate::cdn::Topology::Shielded).await
                }
            )+
        }
    };
}
