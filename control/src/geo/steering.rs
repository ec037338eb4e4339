//! The steering handle DNS and HTTP share: client → region (address blocks, GeoIP, default),
//! the plan of the latest routing table (swapped atomically when a table arrives), the policy
//! of each host name, and the metrics of every decision.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::{ArcSwap, Guard};
use prometheus::IntCounter;
use serde::Serialize;
use tokio::sync::watch;
use verge_config::geo::{Cidr, DnsName, GeoConfig, NamePolicy};
use verge_config::wire::RoutingTable;
use verge_config::RegionId;

use super::cidr::CidrTable;
use super::geoip::{GeoIp, GeoIpRules};
use super::metrics::GeoMetrics;
use super::policy::{Decision, Family, Plan, Source, Step};

/// Where a client is, as steering sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Located {
    /// The address that placed the client (the ECS subnet's, or the source address).
    pub addr: IpAddr,
    /// The client's region slot (see [`Steering::slot_name`]).
    pub slot: u16,
    pub source: Source,
    /// The shortest prefix of `addr` that every address of which is placed alike (the ECS
    /// reply's scope).
    pub scope: u8,
    /// Whether `addr` came from an EDNS Client Subnet.
    pub ecs: bool,
}

/// Shared steering state; cheap to share as `Arc<Steering>`.
pub struct Steering {
    names: Vec<(DnsName, NamePolicy)>,
    /// Region slots: the regions the client rules name, and the default region.
    slots: Vec<RegionId>,
    default_slot: u16,
    default_region: RegionId,
    cidr: CidrTable,
    geoip: Option<Arc<GeoIp>>,
    plan: ArcSwap<Plan>,
    /// Where tables come from, when following control (see [`Steering::following`]).
    tables: Option<watch::Receiver<Arc<RoutingTable>>>,
    /// Held while a plan is built, so one table is compiled once.
    building: Mutex<()>,
    /// Seeds each decision's weighted choice.
    seq: AtomicU64,
    metrics: GeoMetrics,
    /// `verge_geo_failovers_total{region}` per slot.
    failovers: Vec<IntCounter>,
    /// `verge_geo_clients_total{source}` per [`Source`].
    sources: [IntCounter; 3],
}

impl Steering {
    /// Builds the client rules from `config` (opening the GeoIP database if one is set) and the
    /// first plan from `table`.
    pub fn new(config: &GeoConfig, table: &RoutingTable, metrics: GeoMetrics) -> Steering {
        let rules = ClientRules::new(config);
        let geoip = config
            .geoip
            .as_ref()
            .map(|g| Arc::new(GeoIp::open(&g.path, rules.geoip.clone(), metrics.clone())));
        Steering::assemble(config, table, metrics, rules, geoip)
    }

    /// The steering of a new `[geo]` configuration that replaces `previous`: it follows
    /// `tables` and counts on the same metrics. The GeoIP database `previous` has loaded is
    /// kept when the path is the same; a new path must load, or this fails saying why.
    pub fn succeeding(
        config: &GeoConfig,
        previous: &Steering,
        tables: watch::Receiver<Arc<RoutingTable>>,
    ) -> Result<Steering, String> {
        let rules = ClientRules::new(config);
        let geoip = match (&config.geoip, &previous.geoip) {
            (None, _) => None,
            (Some(g), Some(old)) if old.path() == g.path => {
                Some(Arc::new(old.with_rules(rules.geoip.clone())))
            }
            (Some(g), _) => Some(Arc::new(
                GeoIp::try_open(&g.path, rules.geoip.clone(), previous.metrics.clone())
                    .map_err(|e| format!("geo.geoip_db: {e}"))?,
            )),
        };
        let table = Arc::clone(&tables.borrow());
        let mut steering =
            Steering::assemble(config, &table, previous.metrics.clone(), rules, geoip);
        steering.tables = Some(tables);
        Ok(steering)
    }

    fn assemble(
        config: &GeoConfig,
        table: &RoutingTable,
        metrics: GeoMetrics,
        rules: ClientRules,
        geoip: Option<Arc<GeoIp>>,
    ) -> Steering {
        let ClientRules {
            slots,
            default_slot,
            blocks,
            ..
        } = rules;
        let plan = Plan::build(table, &slots, &config.default_region, &metrics);
        metrics
            .table_version
            .set(i64::try_from(plan.version).unwrap_or(i64::MAX));
        let source = |s: Source| metrics.clients.with_label_values(&[s.as_str()]);
        Steering {
            names: config.names.iter().map(|(n, p)| (n.clone(), *p)).collect(),
            failovers: slots
                .iter()
                .map(|s| metrics.failovers.with_label_values(&[s.as_str()]))
                .collect(),
            sources: [
                source(Source::Cidr),
                source(Source::GeoIp),
                source(Source::Default),
            ],
            cidr: CidrTable::new(blocks),
            plan: ArcSwap::from_pointee(plan),
            tables: None,
            building: Mutex::new(()),
            seq: AtomicU64::new(0),
            default_slot,
            default_region: config.default_region.clone(),
            slots,
            geoip,
            metrics,
        }
    }

    /// Follows `tables`: every decision uses the plan of the latest table published there (a
    /// plan older than it is rebuilt before the decision), so a health change shows in the very
    /// next answer.
    pub fn following(
        config: &GeoConfig,
        tables: watch::Receiver<Arc<RoutingTable>>,
        metrics: GeoMetrics,
    ) -> Steering {
        let table = Arc::clone(&tables.borrow());
        let mut steering = Steering::new(config, &table, metrics);
        steering.tables = Some(tables);
        steering
    }

    /// Compiles a new routing table; decisions made from now on use it. A table no newer than
    /// the plan's is ignored.
    pub fn update(&self, table: &RoutingTable) {
        let _building = self.building.lock().unwrap_or_else(|p| p.into_inner());
        if self.plan.load().version == table.version && table.version != 0 {
            return;
        }
        let plan = Plan::build(table, &self.slots, &self.default_region, &self.metrics);
        self.metrics
            .table_version
            .set(i64::try_from(plan.version).unwrap_or(i64::MAX));
        self.plan.store(Arc::new(plan));
    }

    /// The plan of the latest table. Hold it only while answering one request.
    pub fn plan(&self) -> Guard<Arc<Plan>> {
        let plan = self.plan.load();
        let Some(tables) = &self.tables else {
            return plan;
        };
        let latest = tables.borrow().version;
        if latest == plan.version {
            return plan;
        }
        drop(plan);
        let table = Arc::clone(&tables.borrow());
        self.update(&table);
        self.plan.load()
    }

    pub fn geoip(&self) -> Option<&Arc<GeoIp>> {
        self.geoip.as_ref()
    }

    pub fn metrics(&self) -> &GeoMetrics {
        &self.metrics
    }

    /// The configured host names, in name order, with their policies.
    pub fn names(&self) -> &[(DnsName, NamePolicy)] {
        &self.names
    }

    /// The index of host name `host` (any case, trailing dot allowed).
    pub fn name(&self, host: &str) -> Option<usize> {
        let host = host.strip_suffix('.').unwrap_or(host);
        self.names
            .iter()
            .position(|(n, _)| n.as_str().eq_ignore_ascii_case(host))
    }

    pub fn slot_name(&self, slot: u16) -> Option<&RegionId> {
        self.slots.get(usize::from(slot))
    }

    /// Places a client: its address block, else its GeoIP country or continent, else the
    /// default region.
    pub fn locate(&self, addr: IpAddr, ecs: bool) -> Located {
        let addr = addr.to_canonical();
        let block = self.cidr.lookup(addr);
        let (slot, source, scope) = match block.value {
            Some(slot) => (slot, Source::Cidr, block.scope),
            None => {
                let geo = self.geoip.as_ref().and_then(|g| g.lookup(addr));
                let scope = geo.map_or(block.scope, |g| g.scope.max(block.scope));
                match geo.and_then(|g| g.slot) {
                    Some(slot) => (slot, Source::GeoIp, scope),
                    None => {
                        self.metrics.default_region.inc();
                        (self.default_slot, Source::Default, scope)
                    }
                }
            }
        };
        self.sources[source as usize].inc();
        Located {
            addr,
            slot,
            source,
            scope,
            ecs,
        }
    }

    /// Decides the answer for host name `name` (an index from [`Steering::name`]) and counts it.
    pub fn decide(&self, plan: &Plan, name: usize, client: &Located, family: Family) -> Decision {
        let policy = self.names.get(name).map_or(
            NamePolicy {
                max_answers: 1,
                min_healthy_share: verge_config::geo::Share::from_thousandths(0),
            },
            |(_, p)| *p,
        );
        let seed = self.seq.fetch_add(1, Ordering::Relaxed);
        let decision = plan.decide(client.slot, policy, family, seed);
        plan.count_answer(&decision);
        if decision.region.is_some() && decision.region != plan.region_of_slot(client.slot) {
            if let Some(counter) = self.failovers.get(usize::from(client.slot)) {
                counter.inc();
            }
        }
        decision
    }

    /// The decision as JSON-ready data: region, how it was found, every step, the edges.
    pub fn explain<'a>(
        &'a self,
        plan: &'a Plan,
        name: usize,
        client: &Located,
        decision: &Decision,
    ) -> Explanation<'a> {
        let region_name = |r: u16| plan.region(r).map_or("?", |r| r.id.as_str());
        let steps = decision
            .steps()
            .iter()
            .map(|step| match *step {
                Step::Unrouted => StepView {
                    region: self.slot_name(client.slot).map_or("?", |r| r.as_str()),
                    action: "unrouted",
                    why: "the routing table has no such region; trying the default region's order",
                    healthy: None,
                    total: None,
                },
                Step::Skipped {
                    region,
                    healthy,
                    total,
                    why,
                } => StepView {
                    region: region_name(region),
                    action: "skip",
                    why: why.as_str(),
                    healthy: Some(healthy),
                    total: Some(total),
                },
                Step::Chosen {
                    region,
                    healthy,
                    total,
                    how,
                } => StepView {
                    region: region_name(region),
                    action: "choose",
                    why: how.as_str(),
                    healthy: Some(healthy),
                    total: Some(total),
                },
            })
            .collect();
        let edges = decision
            .edges()
            .iter()
            .filter_map(|&e| plan.edge(e))
            .map(|e| EdgeView {
                id: e.id.as_str(),
                region: region_name(e.region),
                data_url: &e.data_url,
                address: e.ip,
                weight: e.weight,
                healthy: e.healthy,
            })
            .collect();
        Explanation {
            name: self.names.get(name).map_or("", |(n, _)| n.as_str()),
            client: client.addr,
            ecs: client.ecs,
            region: self.slot_name(client.slot).map_or("?", |r| r.as_str()),
            source: client.source.as_str(),
            scope: client.scope,
            table_version: plan.version,
            answer_region: decision.region.map(region_name),
            step: decision.outcome.as_str(),
            steps,
            steps_cut: decision.steps_cut,
            edges,
        }
    }
}

/// Which clients go to which region slot, as `[geo]` says.
struct ClientRules {
    /// The regions the client rules name, and the default region.
    slots: Vec<RegionId>,
    default_slot: u16,
    blocks: Vec<(Cidr, u16)>,
    geoip: GeoIpRules,
}

impl ClientRules {
    fn new(config: &GeoConfig) -> ClientRules {
        let mut slots: Vec<RegionId> = config.regions.keys().cloned().collect();
        if !slots.contains(&config.default_region) {
            slots.push(config.default_region.clone());
        }
        let slot_of = |id: &RegionId| {
            slots
                .iter()
                .position(|s| s == id)
                .and_then(|i| u16::try_from(i).ok())
        };
        let default_slot = slot_of(&config.default_region).unwrap_or(0);
        let mut blocks = Vec::new();
        let mut countries = Vec::new();
        let mut continents = Vec::new();
        for (id, rule) in &config.regions {
            let Some(slot) = slot_of(id) else { continue };
            blocks.extend(rule.cidrs.iter().map(|c| (*c, slot)));
            countries.extend(rule.countries.iter().map(|c| (c.as_str(), slot)));
            continents.extend(rule.continents.iter().map(|c| (c.as_str(), slot)));
        }
        let geoip = GeoIpRules::new(countries, continents);
        ClientRules {
            slots,
            default_slot,
            blocks,
            geoip,
        }
    }
}

/// `GET /v1/route`'s answer.
#[derive(Debug, Serialize)]
pub struct Explanation<'a> {
    pub name: &'a str,
    pub client: IpAddr,
    pub ecs: bool,
    /// The client's region and how it was found.
    pub region: &'a str,
    pub source: &'static str,
    pub scope: u8,
    pub table_version: u64,
    /// The region answered from, and the policy step that chose it.
    pub answer_region: Option<&'a str>,
    pub step: &'static str,
    pub steps: Vec<StepView<'a>>,
    pub steps_cut: bool,
    pub edges: Vec<EdgeView<'a>>,
}

#[derive(Debug, Serialize)]
pub struct StepView<'a> {
    pub region: &'a str,
    pub action: &'static str,
    pub why: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub healthy: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<u32>,
}

#[derive(Debug, Serialize)]
pub struct EdgeView<'a> {
    pub id: &'a str,
    pub region: &'a str,
    pub data_url: &'a str,
    pub address: Option<IpAddr>,
    pub weight: u32,
    pub healthy: bool,
}
