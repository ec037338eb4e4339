//! What the tier benches share: a shield and edges running in this process on loopback, and
//! the GET they are asked. Included with `#[path = "support/tiers.rs"] mod tiers;`.

use std::net::SocketAddr;

use bytes::Bytes;
use http::Request;
use http_body_util::Empty;
use verge_edge::EdgeRole;
use verge_origin_shield::ShieldRole;
use verge_testkit::RunningNode;

/// The host every GET names.
pub const HOST: &str = "www.example.test";

/// Shield `shield-1` in front of `origin`, with `extra` TOML tables; its data address.
pub async fn shield(origin: SocketAddr, extra: &str) -> SocketAddr {
    let node = RunningNode::from_toml::<ShieldRole>(&format!(
        "[shield]\nid = \"shield-1\"\n[server]\nlisten = \"127.0.0.1:0\"\n\
         admin_listen = \"127.0.0.1:0\"\n[origin]\nservers = [\"http://{origin}\"]\n{extra}"
    ))
    .await;
    let addr = node.data_addr;
    node.keep_serving();
    addr
}

/// Edge `edge-{n}` in front of `origin`, through `shield` (no fallback to the origin) if any,
/// with `extra` TOML tables; its data address.
pub async fn edge(
    origin: SocketAddr,
    shield: Option<SocketAddr>,
    n: usize,
    extra: &str,
) -> SocketAddr {
    let shields = shield.map_or(String::new(), |s| {
        format!(
            "[shields]\norigin_fallback = false\n\
             members = [{{ id = \"shield-1\", url = \"http://{s}\" }}]\n"
        )
    });
    let node = RunningNode::from_toml::<EdgeRole>(&format!(
        "[edge]\nid = \"edge-{n}\"\n[server]\nlisten = \"127.0.0.1:0\"\n\
         admin_listen = \"127.0.0.1:0\"\n[upstream]\norigin = \"http://{origin}\"\n\
         {shields}{extra}"
    ))
    .await;
    let addr = node.data_addr;
    node.keep_serving();
    addr
}

/// `GET path` for [`HOST`] at `edge`.
pub fn get(edge: SocketAddr, path: &str) -> Request<Empty<Bytes>> {
    Request::get(format!("http://{edge}{path}"))
        .header("host", HOST)
        .body(Empty::new())
        .expect("request")
}
