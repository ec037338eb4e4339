//! The shield tier in tests: shields and front edges (all of them [`TestEdge`]s) in front of one
//! [`FakeOrigin`], the ring placement the front edges compute ([`Placement`]), and reading back
//! from the origin's record which node fetched an object.
//!
//! A shield is an edge whose `upstream.origin` is the [`FakeOrigin`]; every node adds
//! `Via: 1.1 <edge.id>` upstream, so the last `Via` entry the origin receives names the fetcher.

use std::net::SocketAddr;
use std::time::Duration;

use http::header::{HeaderValue, HOST};
use http::HeaderMap;
use verge_cache::CacheKey;
use verge_edge::ring::{RingMember, ShieldRing};

use crate::{start_edge, FakeOrigin, HttpClient, RecordedRequest, Reply, TestEdge, TestResponse};

/// The site clients ask every front edge for, so that all edges share cache keys.
pub const SITE: &str = "www.example.test";

pub const SHIELD_REQUESTS: &str = "verge_shield_requests_total";
pub const SHIELD_UP: &str = "verge_shield_up";

/// The `shields.members` tweak listing `(id, address, weight)` in this order.
pub fn members_tweak(shields: &[(&str, SocketAddr, u32)]) -> String {
    let list: Vec<String> = shields
        .iter()
        .map(|(id, addr, weight)| {
            format!("{{ id = \"{id}\", url = \"http://{addr}\", weight = {weight} }}")
        })
        .collect();
    format!("shields.members = [{}]", list.join(", "))
}

/// A shield: an edge named `id` in front of `origin`.
pub async fn start_shield(origin: &FakeOrigin, id: &str) -> TestEdge {
    start_edge(origin.addr(), &[&format!("edge.id = {id:?}")]).await
}

/// Shield `id` started again on `addr`, the address a stopped shield listened on, as a restarted
/// process would be. Until `limit` has passed, a failed start (the port still taken) is retried.
pub async fn restart_shield_at(
    origin: &FakeOrigin,
    id: &str,
    addr: SocketAddr,
    limit: Duration,
) -> TestEdge {
    let give_up = tokio::time::Instant::now() + limit;
    let tweaks = [
        format!("edge.id = {id:?}"),
        format!("server.listen = \"{addr}\""),
    ];
    loop {
        let (origin, tweaks) = (origin.addr(), tweaks.clone());
        // `start_edge` panics when it cannot bind; in a task of its own, that panic is an answer.
        let attempt = tokio::spawn(async move {
            let tweaks: Vec<&str> = tweaks.iter().map(String::as_str).collect();
            start_edge(origin, &tweaks).await
        });
        match attempt.await {
            Ok(edge) => return edge,
            Err(error) if error.is_panic() && tokio::time::Instant::now() < give_up => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(error) => panic!("restarting shield {id} on {addr}: {error}"),
        }
    }
}

/// A front edge named `id` with these shields and extra tweaks.
pub async fn start_front(
    origin: SocketAddr,
    id: &str,
    shields: &[(&str, SocketAddr, u32)],
    tweaks: &[&str],
) -> TestEdge {
    let id_tweak = format!("edge.id = {id:?}");
    let members = members_tweak(shields);
    let mut all = vec![id_tweak.as_str(), members.as_str()];
    all.extend_from_slice(tweaks);
    start_edge(origin, &all).await
}

/// The ring placement a front edge computes, rebuilt in the test from the same ids and weights.
pub struct Placement {
    ring: ShieldRing,
    ids: Vec<String>,
}

impl Placement {
    pub fn new(members: &[(&str, u32)]) -> Placement {
        let ring_members: Vec<RingMember<'_>> = members
            .iter()
            .map(|&(id, weight)| RingMember { id, weight })
            .collect();
        Placement {
            ring: ShieldRing::new(&ring_members).unwrap(),
            ids: members.iter().map(|(id, _)| id.to_string()).collect(),
        }
    }

    /// The id of the shield owning this cache key text.
    pub fn owner(&self, key: &str) -> &str {
        &self.ids[self.ring.owner(key.as_bytes())]
    }

    /// The owner of `path` requested with `Host: host`.
    pub fn owner_of(&self, host: &str, path: &str) -> &str {
        self.owner(&key_for(host, path))
    }

    /// Every shield for `path` requested with `Host: host`, in the order a front edge tries
    /// them: the owner, then where its keys fail over.
    pub fn candidates_of(&self, host: &str, path: &str) -> Vec<&str> {
        self.ring
            .candidates(key_for(host, path).as_bytes())
            .map(|index| self.ids[index].as_str())
            .collect()
    }
}

/// The cache key text of `path` (origin-form) requested with `Host: host`.
pub fn key_for(host: &str, path: &str) -> String {
    let mut headers = HeaderMap::new();
    headers.insert(HOST, HeaderValue::from_str(host).unwrap());
    CacheKey::for_request("http", &path.parse().unwrap(), &headers)
        .unwrap()
        .as_str()
        .to_string()
}

/// The path without its query, as [`FakeOrigin::hits`] counts it.
pub fn path_only(path: &str) -> &str {
    path.split('?').next().unwrap()
}

/// An origin answering every path with a cacheable 200.
pub async fn cacheable_origin() -> FakeOrigin {
    let origin = FakeOrigin::start().await;
    origin.on_prefix("/", Reply::ok("object").cache_control("max-age=300"));
    origin
}

/// GET `path` on `edge` as a request for [`SITE`].
pub async fn get_site(client: &HttpClient, edge: &TestEdge, path: &str) -> TestResponse {
    client
        .request("GET", &edge.url(path), &[("host", SITE)], "")
        .await
}

/// The node ids in a request's `Via`, nearest the client first.
pub fn via_chain(request: &RecordedRequest) -> Vec<String> {
    request
        .header("via")
        .unwrap_or_default()
        .split(',')
        .filter_map(|hop| hop.split_whitespace().nth(1))
        .map(str::to_string)
        .collect()
}

/// The node that sent this request to the origin: the last entry of its `Via`.
pub fn fetched_by(request: &RecordedRequest) -> String {
    via_chain(request).pop().unwrap_or_default()
}

/// The last request the origin received for `path` (query ignored), and who sent it.
pub fn last_fetcher(origin: &FakeOrigin, path: &str) -> String {
    let request = origin
        .last_request(path_only(path))
        .unwrap_or_else(|| panic!("the origin never received {path}"));
    fetched_by(&request)
}

/// `verge_shield_up{shield=id}` on the front edge.
pub async fn shield_up(front: &TestEdge, id: &str) -> Option<f64> {
    front.metrics().await.value(SHIELD_UP, &[("shield", id)])
}
