//! Finding a region's edges the way its clients would: through GeoDNS (asked from the region's
//! source address), through HTTP steering (its `302 Location`), or from the state's list.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::config::{
    NameServerConfig, ResolveHosts, ResolverConfig as HickoryConfig, ResolverOpts,
};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::TokioResolver;

use super::client::{EdgeTarget, RegionClient};
use super::workload::Steering;
use crate::state::{DemoState, NodeEndpoints};

/// The `host[:port]` of an `http://host:port/...` URL.
fn authority(url: &str) -> Option<&str> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    rest.split('/').next().filter(|a| !a.is_empty())
}

/// The IP of a URL whose host is an IP literal.
fn url_ip(url: &str) -> Option<IpAddr> {
    let authority = authority(url)?;
    if let Ok(addr) = authority.parse::<SocketAddr>() {
        return Some(addr.ip());
    }
    authority
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

fn target(node: &NodeEndpoints) -> EdgeTarget {
    EdgeTarget {
        id: node.id.clone(),
        url: node.http.trim_end_matches('/').to_string(),
    }
}

/// The edges of `region` as the state lists them.
pub fn edges_in(state: &DemoState, region: &str) -> Vec<EdgeTarget> {
    state
        .edges()
        .filter(|n| n.region == region)
        .map(target)
        .collect()
}

/// The edges whose data URL has address `ip` (DNS answers carry no ports).
pub fn edges_at(state: &DemoState, ip: IpAddr) -> Vec<EdgeTarget> {
    state
        .edges()
        .filter(|n| url_ip(&n.http) == Some(ip))
        .map(target)
        .collect()
}

/// The edge a steering redirect points to: the state's node with that authority, or the URL
/// itself when the state does not list it.
pub fn edge_of_location(state: &DemoState, location: &str) -> Option<EdgeTarget> {
    let wanted = authority(location)?;
    let scheme = location.split_once("://").map_or("http", |(s, _)| s);
    Some(
        state
            .edges()
            .find(|n| authority(&n.http) == Some(wanted))
            .map(target)
            .unwrap_or_else(|| EdgeTarget {
                id: wanted.to_string(),
                url: format!("{scheme}://{wanted}"),
            }),
    )
}

/// Where the clients of a region go, and how that was found.
pub struct Steered {
    pub edges: Vec<EdgeTarget>,
}

/// The edges for clients at `source` in `region`; an error names what did not answer.
pub async fn steer(
    state: &DemoState,
    region: &str,
    source: IpAddr,
    steering: Steering,
    clients: usize,
    timeout: Duration,
) -> Result<Steered, String> {
    let edges = match steering {
        Steering::None => edges_in(state, region),
        Steering::Dns => by_dns(state, source, timeout).await?,
        Steering::Http => by_http(state, source, clients, timeout).await?,
    };
    if edges.is_empty() {
        return Err(match steering {
            Steering::None => format!("the state lists no edge in region {region}"),
            _ => format!(
                "{} steering sent clients of {region} to no edge",
                steering.as_str()
            ),
        });
    }
    Ok(Steered { edges })
}

async fn by_dns(
    state: &DemoState,
    source: IpAddr,
    timeout: Duration,
) -> Result<Vec<EdgeTarget>, String> {
    let server: SocketAddr = state
        .dns
        .parse()
        .map_err(|e| format!("dns {:?} is not IP:PORT: {e}", state.dns))?;
    let mut config = HickoryConfig::new();
    for protocol in [Protocol::Udp, Protocol::Tcp] {
        let mut ns = NameServerConfig::new(server, protocol);
        ns.bind_addr = Some(SocketAddr::new(source, 0));
        config.add_name_server(ns);
    }
    let mut builder =
        TokioResolver::builder_with_config(config, TokioConnectionProvider::default());
    let options: &mut ResolverOpts = builder.options_mut();
    options.use_hosts_file = ResolveHosts::Never;
    options.cache_size = 0;
    options.attempts = 2;
    options.timeout = (timeout / 2).max(Duration::from_millis(50));
    let resolver = builder.build();
    let name = format!("{}.", state.hostname.trim_end_matches('.'));
    let answer = tokio::time::timeout(timeout, resolver.lookup_ip(name.as_str()))
        .await
        .map_err(|_| {
            format!(
                "DNS server {server} does not answer for {} (asked from {source}) within {timeout:?}",
                state.hostname
            )
        })?
        .map_err(|e| {
            format!(
                "DNS server {server} gave no address for {} (asked from {source}): {e}",
                state.hostname
            )
        })?;
    let mut edges = Vec::new();
    for ip in answer.iter() {
        let found = edges_at(state, ip);
        if found.is_empty() {
            return Err(format!(
                "DNS answered {ip} for {}, which is no edge of the state",
                state.hostname
            ));
        }
        for edge in found {
            if !edges.contains(&edge) {
                edges.push(edge);
            }
        }
    }
    Ok(edges)
}

/// One steering request per client, as each client would make: the set of edges they were
/// sent to, in order of first appearance.
async fn by_http(
    state: &DemoState,
    source: IpAddr,
    clients: usize,
    timeout: Duration,
) -> Result<Vec<EdgeTarget>, String> {
    let client = RegionClient::new(Some(source), timeout, 1);
    let url = format!("{}/", state.steering.trim_end_matches('/'));
    let mut edges: Vec<EdgeTarget> = Vec::new();
    for _ in 0..clients.clamp(1, 16) {
        let (status, headers, _) = client
            .fetch(&url, Some(&state.hostname))
            .await
            .map_err(|e| format!("HTTP steering: {e}"))?;
        let location = headers
            .get(http::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .filter(|_| status.is_redirection())
            .ok_or_else(|| {
                format!("HTTP steering at {url} answered {status} without a redirect")
            })?;
        let edge = edge_of_location(state, location)
            .ok_or_else(|| format!("HTTP steering redirected to {location:?}, not a URL"))?;
        if !edges.contains(&edge) {
            edges.push(edge);
        }
    }
    Ok(edges)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> DemoState {
        serde_json::from_str(
            r#"{"hostname": "cdn.verge.test", "dns": "127.0.0.1:53",
                "steering": "http://127.0.0.1:80",
                "control": {"api": "", "admin": "", "token": ""}, "origin": "",
                "nodes": [
                  {"role": "edge", "id": "us-1", "region": "us", "http": "http://127.1.0.1:4000", "admin": ""},
                  {"role": "shield", "id": "s-1", "region": "us", "http": "http://127.1.0.101:4002", "admin": ""},
                  {"role": "edge", "id": "eu-1", "region": "eu", "http": "http://127.2.0.1:4001/", "admin": ""}],
                "regions": [], "samples": []}"#,
        )
        .unwrap()
    }

    #[test]
    fn answers_map_to_the_state_s_edges() {
        let s = state();
        assert_eq!(edges_in(&s, "eu")[0].url, "http://127.2.0.1:4001");
        assert_eq!(edges_at(&s, "127.1.0.1".parse().unwrap())[0].id, "us-1");
        assert!(edges_at(&s, "127.9.0.1".parse().unwrap()).is_empty());
        assert_eq!(
            edge_of_location(&s, "http://127.2.0.1:4001/x?y")
                .unwrap()
                .id,
            "eu-1"
        );
        let unknown = edge_of_location(&s, "http://10.0.0.1:8080/").unwrap();
        assert_eq!(unknown.url, "http://10.0.0.1:8080");
    }
}
