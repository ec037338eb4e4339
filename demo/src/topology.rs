//! What a demo runs and where, before anything starts: the options, the nodes with their ids
//! and addresses, and each role's configuration as TOML parsed by the real config types (so the
//! demo runs exactly what a user's files would). Pure: no sockets.
//!
//! Addresses, in region R's block `127.R.0.0/16`: edge `i` at `127.R.0.i`, shield `k` at
//! `127.R.0.(100+k)`, the origin at `127.R.0.200`, control's delay links at `127.R.0.250`,
//! clients at `127.R.200.1`. Each node's listener and its delay link share the address, on
//! ports the OS picks.
//!
//! With `--ha`, the control replicas and the etcd members are processes of their own on fixed
//! ports of their own addresses ([`crate::replica_plan`]).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use verge_config::tiers::Topology;
use verge_config::{ConfigErrors, ControlConfig, EdgeConfig, ShieldConfig};

use crate::origin::ServiceTime;
use crate::regions::{default_regions, LatencyMatrix, Region};
use crate::replica_plan::{ReplicaPlan, REPLICA_LEASE};

/// The CDN's DNS zone and host name.
pub const ZONE: &str = "verge.test";
pub const HOSTNAME: &str = "cdn.verge.test";
/// Most edges or shields per region: their addresses are `127.R.0.1..=99` and `.101..=199`.
pub const MAX_PER_REGION: usize = 99;

/// What to start.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub regions: Vec<Region>,
    pub edges_per_region: usize,
    /// The region of each shield, in order; empty: edges go straight to the origin.
    pub shields: Vec<String>,
    /// Where the sample origin is.
    pub origin_region: String,
    pub latency: LatencyMatrix,
    /// Extra delay per chunk on every link, up to this (0: none).
    pub jitter: Duration,
    /// How long the sample origin takes per fetch.
    pub origin_time: ServiceTime,
    /// Control's purge log; a temporary directory, removed at shutdown, when `None`.
    pub data_dir: Option<PathBuf>,
    /// Control's admin token (16+ characters); a random one when `None`.
    pub token: Option<String>,
    /// How long to wait for every node to be up and routed before giving up.
    pub ready_timeout: Duration,
    /// How edges pick their shields (control's `[tiers] topology`).
    pub topology: Topology,
    /// 2: regional shields send their misses to the shields near the origin (`[tiers] levels`).
    pub tier_levels: u8,
    /// Control as replicas on an etcd cluster, each a process of its own, instead of one
    /// control in this process (`verge demo --ha`).
    pub ha: Option<HaOptions>,
}

/// The programs an HA demo runs as child processes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HaOptions {
    /// The `verge` binary: each replica runs as `verge control --config FILE`.
    pub verge: PathBuf,
    /// The `etcd` binary (3.4 or newer).
    pub etcd: PathBuf,
}

impl DemoOptions {
    /// The demo in `regions`: two edges each, shields in us and eu (those of them present,
    /// else the first region), the origin in us (else the first region), the default latency.
    pub fn new(regions: Vec<Region>) -> DemoOptions {
        let ids: Vec<&str> = regions.iter().map(|r| r.id.as_str()).collect();
        let mut shields: Vec<String> = ["us", "eu"]
            .into_iter()
            .filter(|r| ids.contains(r))
            .map(String::from)
            .collect();
        if shields.is_empty() {
            shields.extend(ids.first().map(|r| r.to_string()));
        }
        let origin_region = if ids.contains(&"us") {
            "us".to_string()
        } else {
            ids.first().map(|r| r.to_string()).unwrap_or_default()
        };
        DemoOptions {
            regions,
            edges_per_region: 2,
            shields,
            origin_region,
            latency: LatencyMatrix::default_demo(),
            jitter: Duration::ZERO,
            origin_time: ServiceTime::DEFAULT,
            data_dir: None,
            token: None,
            ready_timeout: Duration::from_secs(30),
            topology: Topology::default(),
            tier_levels: 1,
            ha: None,
        }
    }

    /// The demo in the named regions (from the defaults: us, eu, ap).
    pub fn for_regions(names: &[String]) -> Result<DemoOptions, String> {
        let known = default_regions();
        let mut regions = Vec::new();
        for name in names {
            let name = name.trim();
            let Some(region) = known.iter().find(|r| r.id == name) else {
                let ids: Vec<&str> = known.iter().map(|r| r.id.as_str()).collect();
                return Err(format!(
                    "unknown region {name:?}; the demo has {}",
                    ids.join(", ")
                ));
            };
            if regions.contains(region) {
                return Err(format!("region {name:?} is listed twice"));
            }
            regions.push(region.clone());
        }
        Ok(DemoOptions::new(regions))
    }

    /// Every problem with the options, or none.
    pub fn validate(&self) -> Result<(), String> {
        if self.regions.is_empty() {
            return Err("at least one region is needed".into());
        }
        if !(1..=MAX_PER_REGION).contains(&self.edges_per_region) {
            return Err(format!(
                "edges per region must be 1 to {MAX_PER_REGION}, not {}",
                self.edges_per_region
            ));
        }
        let known = |id: &str| self.regions.iter().any(|r| r.id == id);
        if let Some(stray) = self.shields.iter().find(|s| !known(s)) {
            return Err(format!("shield region {stray:?} is not one of the regions"));
        }
        for region in &self.regions {
            let n = self.shields.iter().filter(|s| **s == region.id).count();
            if n > MAX_PER_REGION {
                return Err(format!("at most {MAX_PER_REGION} shields per region"));
            }
        }
        if !known(&self.origin_region) {
            return Err(format!(
                "origin region {:?} is not one of the regions",
                self.origin_region
            ));
        }
        if !(1..=2).contains(&self.tier_levels) {
            return Err(format!(
                "tier levels must be 1 or 2, not {}",
                self.tier_levels
            ));
        }
        if self.tier_levels == 2 && !matches!(self.topology, Topology::Regional | Topology::Auto) {
            return Err(format!(
                "2 tier levels need topology regional or auto, not {}",
                self.topology
            ));
        }
        if self.token.as_ref().is_some_and(|t| t.len() < 16) {
            return Err("the admin token must have at least 16 characters".into());
        }
        if self.ha.is_some() && self.data_dir.is_some() {
            return Err(
                "a data directory is for the one control; the HA demo's replicas keep their state in etcd"
                    .into(),
            );
        }
        Ok(())
    }
}

impl Default for DemoOptions {
    fn default() -> DemoOptions {
        DemoOptions::new(default_regions())
    }
}

/// A cache node's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Edge,
    Shield,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Edge => "edge",
            Role::Shield => "shield",
        }
    }
}

/// One cache node to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePlan {
    pub role: Role,
    pub id: String,
    pub region: Region,
    /// The node's listener, its delay link, and the source of its upstream connections.
    pub ip: IpAddr,
}

/// The cache nodes, shields first (edges find them in their first routing table).
pub fn nodes(options: &DemoOptions) -> Vec<NodePlan> {
    let mut plans = Vec::new();
    for region in &options.regions {
        let shields = options.shields.iter().filter(|s| **s == region.id);
        for (k, _) in shields.enumerate() {
            plans.push(NodePlan {
                role: Role::Shield,
                id: format!("shield-{}-{}", region.id, k + 1),
                region: region.clone(),
                ip: region.addr(0, 101 + k as u8),
            });
        }
    }
    for region in &options.regions {
        for i in 1..=options.edges_per_region {
            plans.push(NodePlan {
                role: Role::Edge,
                id: format!("{}-{i}", region.id),
                region: region.clone(),
                ip: region.addr(0, i as u8),
            });
        }
    }
    plans
}

/// The origin's address, in `region`.
pub fn origin_ip(region: &Region) -> IpAddr {
    region.addr(0, 200)
}

/// The addresses at the origin's site: the origin and the shields of its region.
pub fn origin_site(options: &DemoOptions) -> Vec<IpAddr> {
    let Some(region) = options
        .regions
        .iter()
        .find(|r| r.id == options.origin_region)
    else {
        return Vec::new();
    };
    let shields = nodes(options)
        .into_iter()
        .filter(|n| n.role == Role::Shield && n.region == *region)
        .map(|n| n.ip);
    std::iter::once(origin_ip(region)).chain(shields).collect()
}

/// The addresses at the site of `ip` (with it): the origin's site when `ip` is there, else none.
pub fn site_of(options: &DemoOptions, ip: IpAddr) -> Vec<IpAddr> {
    let site = origin_site(options);
    if site.contains(&ip) {
        site
    } else {
        Vec::new()
    }
}

/// Control's address for nodes (its delay link; with `--ha`, every replica's), in `region`
/// (the origin's).
pub fn control_ip(region: &Region) -> IpAddr {
    region.addr(0, 250)
}

/// The source address of a client in `region`.
pub fn client_ip(region: &Region) -> IpAddr {
    region.addr(200, 1)
}

/// The other regions, nearest first: where `region`'s clients go when its edges are down.
pub fn fallback_order(region: &Region, regions: &[Region], matrix: &LatencyMatrix) -> Vec<String> {
    let mut others: Vec<&Region> = regions.iter().filter(|r| r.id != region.id).collect();
    others.sort_by_key(|r| matrix.one_way(&region.id, &r.id));
    others.into_iter().map(|r| r.id.clone()).collect()
}

/// The in-process control's file: its listeners and DNS and HTTP steering on ports the OS
/// picks, its purge log in `data_dir`; the rest as [`control_body`] has it.
pub fn control_toml(options: &DemoOptions, data_dir: &Path, token: &str) -> String {
    let any = "127.0.0.1:0";
    let controller = format!(
        "listen = \"{any}\"\nadmin_listen = \"{any}\"\ndata_dir = {:?}\n",
        data_dir.display().to_string()
    );
    control_body(options, token, &controller, (any, any))
}

/// A control replica's file (`verge demo --ha`): its own fixed addresses, its state in the
/// `etcd` cluster with the other replicas, a short lease so that another replica leads soon
/// after it is killed; the rest as [`control_body`] has it, the same for every replica.
pub fn replica_toml(
    options: &DemoOptions,
    replica: &ReplicaPlan,
    etcd: &[String],
    token: &str,
) -> String {
    let controller = format!(
        "listen = \"{}\"\nadmin_listen = \"{}\"\n",
        replica.listen, replica.admin
    );
    let mut toml = control_body(
        options,
        token,
        &controller,
        (&replica.dns.to_string(), &replica.steering.to_string()),
    );
    toml += &format!(
        "\n[store]\netcd = {etcd:?}\nreplica = {:?}\nlease_ttl = \"{}s\"\ntimeout = \"1s\"\n",
        replica.name,
        REPLICA_LEASE.as_secs()
    );
    toml
}

/// Control's file after the `[controller]` lines of its listeners and store: quick health and
/// heartbeats, purge rate high enough for benchmarks, the tier topology with the origin's
/// region, the regions' fallback order by latency, and geo steering of [`HOSTNAME`] over every
/// region's block, DNS and HTTP steering on `(dns, http)`.
fn control_body(options: &DemoOptions, token: &str, controller: &str, geo: (&str, &str)) -> String {
    let mut toml = format!(
        "[controller]\n{controller}token = {token:?}\nnode_token = {:?}\n\n\
         [health]\nheartbeat_interval = \"200ms\"\nheartbeat_timeout = \"1s\"\n\
         probe_interval = \"200ms\"\nprobe_timeout = \"500ms\"\nrise = 2\nfall = 3\n\n\
         [purge]\nrate_per_second = 1000\nburst = 1000\nshield_ack_timeout = \"1s\"\n\n",
        node_token(token)
    );
    toml += &format!(
        "[tiers]\ntopology = \"{}\"\norigin_region = {:?}\nlevels = {}\n\n",
        options.topology, options.origin_region, options.tier_levels
    );
    for region in &options.regions {
        let fallback = fallback_order(region, &options.regions, &options.latency);
        toml += &format!("[regions.{}]\nfallback = {fallback:?}\n", region.id);
    }
    let (dns, http) = geo;
    toml += &format!(
        "\n[geo]\nzone = \"{ZONE}\"\ndns_listen = \"{dns}\"\nhttp_listen = \"{http}\"\n\
         ttl = \"5s\"\ndefault_region = {:?}\n",
        options.regions.first().map_or("us", |r| r.id.as_str())
    );
    for region in &options.regions {
        toml += &format!(
            "[geo.regions.{}]\ncidrs = [{:?}]\n",
            region.id,
            region.block()
        );
    }
    toml += &format!("[geo.names.\"{HOSTNAME}\"]\nmax_answers = 2\nmin_healthy_share = 0.5\n");
    toml
}

/// The token the demo's nodes present to control, from its admin token (never equal to it).
pub fn node_token(admin_token: &str) -> String {
    format!("{admin_token}-nodes")
}

/// The `[control]` table of a node that follows the control (replicas) at `control_urls`,
/// reached through `advertise_url`, its delay link, which
/// shares the node's address: its connections to control leave from that address, so control's
/// link delays them by the node's distance from control.
fn node_control(control_urls: &[String], advertise_url: &str, node_token: &str) -> String {
    let source = advertise_url
        .strip_prefix("http://")
        .and_then(|authority| authority.trim_end_matches('/').parse::<SocketAddr>().ok())
        .map_or_else(String::new, |link| {
            format!("source_address = \"{}\"\n", link.ip())
        });
    format!(
        "[control]\nurls = {control_urls:?}\nheartbeat_interval = \"200ms\"\n\
         reconnect_min = \"50ms\"\nreconnect_max = \"1s\"\nadvertise_url = {advertise_url:?}\n\
         token = {node_token:?}\n{source}"
    )
}

/// The `[server]` table: data listener on the node's address, admin on 127.0.0.1 (so control's
/// probes and metrics scrapes are not delayed), a short drain at shutdown. Clients reach a node
/// through its delay link, which hides their addresses: no per-address share applies.
fn server(ip: IpAddr) -> String {
    format!(
        "[server]\nlisten = \"{ip}:0\"\nadmin_listen = \"127.0.0.1:0\"\nmax_connections = 4096\n\
         shutdown_grace = \"2s\"\nmax_connections_per_address = 1000000\n\
         max_upstream_requests_per_address = 1000000\n"
    )
}

/// An edge: its shields come from control's routing tables; the origin (through its link) is
/// the fallback; upstream connections leave from the edge's own address, so links see its
/// region.
pub fn edge_toml(
    node: &NodePlan,
    origin_url: &str,
    control_urls: &[String],
    advertise: &str,
    node_token: &str,
) -> String {
    format!(
        "[edge]\nid = {:?}\nregion = {:?}\n{}\
         [cache]\nmax_bytes = \"64MiB\"\nmax_object_bytes = \"4MiB\"\n\
         [upstream]\norigin = {origin_url:?}\nsource_address = \"{}\"\nmax_idle_per_host = 64\n\
         [shields]\nfailures_to_eject = 3\neject_for = \"2s\"\n{}",
        node.id,
        node.region.id,
        server(node.ip),
        node.ip,
        node_control(control_urls, advertise, node_token)
    )
}

/// A shield in front of the origin (through its link), connecting from its own address.
pub fn shield_toml(
    node: &NodePlan,
    origin_url: &str,
    control_urls: &[String],
    advertise: &str,
    node_token: &str,
) -> String {
    format!(
        "[shield]\nid = {:?}\nregion = {:?}\n{}\
         [cache]\nmax_bytes = \"128MiB\"\nmax_object_bytes = \"4MiB\"\n\
         [origin]\nservers = [{origin_url:?}]\nsource_address = \"{}\"\nmax_idle_per_host = 64\n{}",
        node.id,
        node.region.id,
        server(node.ip),
        node.ip,
        node_control(control_urls, advertise, node_token)
    )
}

/// A generated file that does not parse is a bug in this module: say which and why.
pub fn parsed<T>(
    what: &str,
    toml: &str,
    parse: fn(&str) -> Result<T, ConfigErrors>,
) -> Result<T, String> {
    parse(toml).map_err(|e| format!("the demo's {what} configuration is invalid: {e}\n{toml}"))
}

pub fn control_config(toml: &str) -> Result<ControlConfig, String> {
    parsed("control", toml, ControlConfig::from_toml)
}

pub fn edge_config(toml: &str) -> Result<EdgeConfig, String> {
    parsed("edge", toml, EdgeConfig::from_toml)
}

pub fn shield_config(toml: &str) -> Result<ShieldConfig, String> {
    parsed("shield", toml, ShieldConfig::from_toml)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replica_plan::HaPlan;

    #[test]
    fn the_default_demo_has_shields_in_us_and_eu_and_two_edges_per_region() {
        let options = DemoOptions::default();
        options.validate().unwrap();
        let nodes = nodes(&options);
        let ids: Vec<&str> = nodes.iter().map(|n| n.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "shield-us-1",
                "shield-eu-1",
                "us-1",
                "us-2",
                "eu-1",
                "eu-2",
                "ap-1",
                "ap-2"
            ]
        );
        let ip = |id: &str| nodes.iter().find(|n| n.id == id).unwrap().ip.to_string();
        assert_eq!(ip("eu-2"), "127.2.0.2");
        assert_eq!(ip("shield-eu-1"), "127.2.0.101");
        assert_eq!(origin_ip(&options.regions[0]).to_string(), "127.1.0.200");
        assert_eq!(client_ip(&options.regions[2]).to_string(), "127.3.200.1");
    }

    #[test]
    fn the_origins_site_holds_the_origin_and_the_shields_of_its_region() {
        let options = DemoOptions::default();
        let at = |s: &str| s.parse::<IpAddr>().unwrap();
        let site = vec![at("127.1.0.200"), at("127.1.0.101")];
        assert_eq!(origin_site(&options), site);
        assert_eq!(site_of(&options, at("127.1.0.101")), site);
        for elsewhere in ["127.2.0.101", "127.1.0.1", "127.1.0.250"] {
            assert!(site_of(&options, at(elsewhere)).is_empty(), "{elsewhere}");
        }
        let no_shield_there = DemoOptions {
            shields: vec!["eu".into()],
            ..DemoOptions::default()
        };
        assert_eq!(origin_site(&no_shield_there), vec![at("127.1.0.200")]);
    }

    #[test]
    fn regions_fall_back_to_the_nearest_first() {
        let regions = default_regions();
        let m = LatencyMatrix::default_demo();
        assert_eq!(fallback_order(&regions[0], &regions, &m), ["eu", "ap"]);
        assert_eq!(fallback_order(&regions[1], &regions, &m), ["us", "ap"]);
        assert_eq!(fallback_order(&regions[2], &regions, &m), ["us", "eu"]);
    }

    #[test]
    fn options_name_known_regions_only() {
        let names = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let eu_ap = DemoOptions::for_regions(&names(&["eu", "ap"])).unwrap();
        assert_eq!(eu_ap.shields, ["eu"]);
        assert_eq!(eu_ap.origin_region, "eu");
        assert!(DemoOptions::for_regions(&names(&["mars"]))
            .unwrap_err()
            .contains("us, eu, ap"));
        assert!(DemoOptions::for_regions(&names(&["us", "us"])).is_err());
        let bad = DemoOptions {
            edges_per_region: 0,
            ..DemoOptions::default()
        };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn every_generated_configuration_parses() {
        let options = DemoOptions::default();
        let control = control_config(&control_toml(
            &options,
            Path::new("/tmp/x"),
            "0123456789abcdef",
        ))
        .unwrap();
        assert_eq!(control.tiers.topology, Topology::Auto);
        assert_eq!(control.tiers.origin_region.unwrap().as_str(), "us");
        assert_eq!(
            control.node_token.as_deref(),
            Some("0123456789abcdef-nodes")
        );
        let geo = control.geo.unwrap();
        assert_eq!(geo.regions.len(), 3);
        assert_eq!(control.regions.len(), 3);
        for node in nodes(&options) {
            let (origin, link) = (
                "http://127.1.0.200:8000",
                format!("http://{}:9999", node.ip),
            );
            let control = &["http://127.0.0.1:7000".to_string()];
            match node.role {
                Role::Edge => {
                    let c =
                        edge_config(&edge_toml(&node, origin, control, &link, "t-nodes")).unwrap();
                    assert_eq!(
                        c.control.as_ref().unwrap().token.as_deref(),
                        Some("t-nodes")
                    );
                    assert_eq!(c.upstream.source_address, Some(node.ip));
                    let control = c.control.unwrap();
                    assert_eq!(control.urls.len(), 1);
                    assert_eq!(control.advertise_url.unwrap().to_string(), link);
                }
                Role::Shield => {
                    let c = shield_config(&shield_toml(&node, origin, control, &link, "t-nodes"))
                        .unwrap();
                    assert_eq!(c.origin.servers.len(), 1);
                }
            }
        }
    }

    #[test]
    fn a_replica_keeps_its_state_in_etcd_with_the_settings_of_the_one_control() {
        let options = DemoOptions::default();
        let replica = &HaPlan { block: 10 }.replicas()[1];
        let etcd = ["http://127.0.10.11:2379".to_string()];
        let config =
            control_config(&replica_toml(&options, replica, &etcd, "0123456789abcdef")).unwrap();
        let store = config.store.etcd.unwrap();
        assert_eq!(store.replica, "control-2");
        assert_eq!(store.endpoints, etcd);
        assert_eq!(store.lease_ttl, REPLICA_LEASE);
        assert_eq!(config.listen, replica.listen);
        assert_eq!(config.admin_listen, replica.admin);
        let geo = config.geo.unwrap();
        assert_eq!(geo.dns_listen, Some(replica.dns));
        let one = control_config(&control_toml(
            &options,
            Path::new("/tmp/x"),
            "0123456789abcdef",
        ))
        .unwrap();
        assert_eq!(
            (config.health, config.tiers, config.regions),
            (one.health, one.tiers, one.regions)
        );
        let with_dir = DemoOptions {
            data_dir: Some(PathBuf::from("/tmp/x")),
            ha: Some(HaOptions {
                verge: PathBuf::from("verge"),
                etcd: PathBuf::from("etcd"),
            }),
            ..DemoOptions::default()
        };
        assert!(with_dir.validate().unwrap_err().contains("etcd"));
    }
}
