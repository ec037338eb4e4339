//! The steering policy: which edges answer a client of a given region, as a chain of filters in
//! the manner of NS1 — drop unhealthy edges, order regions by proximity, fail over a region
//! whose healthy share is too low, choose by weight within the region, keep the first N — with
//! a panic rule: when no edge anywhere is healthy, every edge is a candidate rather than none.
//!
//! A [`Plan`] is the routing table compiled for this: built once per table version, then read
//! by every decision without locks or allocation. A [`Decision`] is plain data (`Copy`), with
//! the steps taken, so that the JSON explanation and the metrics tell the same story as DNS.

use std::net::IpAddr;

use prometheus::IntCounter;
use verge_config::geo::{NamePolicy, MAX_ANSWERS};
use verge_config::wire::{NodeEntry, RoutingTable};
use verge_config::{NodeId, RegionId};

use super::metrics::GeoMetrics;

/// Most steps a decision records; a longer walk keeps the first ones and says it was cut.
pub const MAX_STEPS: usize = 12;

/// Which edges can answer: any (HTTP steering), or those with an address of one family (DNS A
/// and AAAA).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Any = 0,
    V4 = 1,
    V6 = 2,
}

/// How the client's region was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Cidr,
    GeoIp,
    Default,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Cidr => "cidr",
            Source::GeoIp => "geoip",
            Source::Default => "default",
        }
    }
}

/// The policy step that produced an answer (the `step` label of `verge_geo_answers_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The client's own region.
    Local = 0,
    /// The nearest other region that passed the health filters.
    Failover = 1,
    /// Every region was below its healthy share: the nearest with any healthy edge.
    LastResort = 2,
    /// No healthy edge anywhere: all edges are candidates.
    Panic = 3,
    /// No edge at all (of the family asked for).
    Empty = 4,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Local => "local",
            Outcome::Failover => "failover",
            Outcome::LastResort => "last_resort",
            Outcome::Panic => "panic",
            Outcome::Empty => "empty",
        }
    }
}

/// Why a region was passed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// No edges (with an address of the family asked for).
    NoEdges,
    /// Edges, none healthy.
    NoneHealthy,
    /// Fewer healthy edges than the name's `min_healthy_share`.
    BelowShare,
}

impl Skip {
    pub fn as_str(self) -> &'static str {
        match self {
            Skip::NoEdges => "no edges",
            Skip::NoneHealthy => "no healthy edges",
            Skip::BelowShare => "healthy share below min_healthy_share",
        }
    }
}

/// One step of a decision, for the explanation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The client's region has no route in the table: regions are tried in the default
    /// region's order.
    Unrouted,
    Skipped {
        region: u16,
        healthy: u32,
        total: u32,
        why: Skip,
    },
    Chosen {
        region: u16,
        healthy: u32,
        total: u32,
        how: Outcome,
    },
}

/// What a steering decision found: the client's region, the steps taken and the edges chosen
/// (indexes into the [`Plan`] it was made with).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub outcome: Outcome,
    /// The region answered from (plan index); `None` when empty.
    pub region: Option<u16>,
    steps: [Step; MAX_STEPS],
    step_count: u8,
    /// Steps past [`MAX_STEPS`] were not recorded.
    pub steps_cut: bool,
    edges: [u32; MAX_ANSWERS],
    edge_count: u8,
}

impl Decision {
    fn new() -> Decision {
        Decision {
            outcome: Outcome::Empty,
            region: None,
            steps: [Step::Unrouted; MAX_STEPS],
            step_count: 0,
            steps_cut: false,
            edges: [0; MAX_ANSWERS],
            edge_count: 0,
        }
    }

    pub fn steps(&self) -> &[Step] {
        &self.steps[..usize::from(self.step_count)]
    }

    /// The chosen edges, best first (indexes into the plan's edges).
    pub fn edges(&self) -> &[u32] {
        &self.edges[..usize::from(self.edge_count)]
    }

    fn step(&mut self, step: Step) {
        match self.steps.get_mut(usize::from(self.step_count)) {
            Some(slot) => {
                *slot = step;
                self.step_count += 1;
            }
            None => self.steps_cut = true,
        }
    }

    fn has(&self, edge: u32) -> bool {
        self.edges().contains(&edge)
    }

    fn push(&mut self, edge: u32) {
        if let Some(slot) = self.edges.get_mut(usize::from(self.edge_count)) {
            *slot = edge;
            self.edge_count += 1;
        }
    }
}

/// One edge of a plan.
#[derive(Debug, Clone)]
pub struct Edge {
    pub id: NodeId,
    /// Plan index of its region.
    pub region: u16,
    pub data_url: String,
    /// The address of `data_url`'s host, when it is an IP literal (what DNS answers).
    pub ip: Option<IpAddr>,
    pub weight: u32,
    pub healthy: bool,
}

/// A region's edges of one family.
#[derive(Debug, Clone, Default)]
struct Pool {
    all: Vec<u32>,
    all_weight: u64,
    healthy: Vec<u32>,
    healthy_weight: u64,
}

#[derive(Debug, Clone)]
pub struct Region {
    pub id: RegionId,
    /// This region, then the others nearest first (plan indexes).
    order: Vec<u16>,
    pools: [Pool; 3],
    /// `verge_geo_answers_total{region=id, step}` for each [`Outcome`] but empty.
    answers: [IntCounter; 4],
}

/// A routing table compiled for steering.
#[derive(Debug)]
pub struct Plan {
    pub version: u64,
    pub regions: Vec<Region>,
    pub edges: Vec<Edge>,
    /// Plan index of each configured region slot, when the table routes it.
    by_slot: Vec<Option<u16>>,
    /// The order tried for clients whose region the table does not route.
    default_order: Vec<u16>,
    empty_answers: IntCounter,
}

impl Plan {
    /// Compiles `table`. `slots` are the regions the client rules name (their index is the
    /// slot), `default` the region of unplaced clients.
    pub fn build(
        table: &RoutingTable,
        slots: &[RegionId],
        default: &RegionId,
        metrics: &GeoMetrics,
    ) -> Plan {
        let index_of = |id: &RegionId| {
            table
                .regions
                .iter()
                .position(|r| &r.id == id)
                .and_then(|i| u16::try_from(i).ok())
        };
        let mut edges = Vec::new();
        let mut regions = Vec::with_capacity(table.regions.len());
        for (r, route) in table.regions.iter().enumerate() {
            let Ok(r) = u16::try_from(r) else { break };
            let mut order = vec![r];
            order.extend(route.fallback.iter().filter_map(&index_of));
            order.dedup();
            let mut pools: [Pool; 3] = Default::default();
            for entry in &route.edges {
                let Ok(e) = u32::try_from(edges.len()) else {
                    break;
                };
                let edge = compile_edge(entry, r);
                for family in [Family::Any, Family::V4, Family::V6] {
                    if !edge.serves(family) {
                        continue;
                    }
                    let pool = &mut pools[family as usize];
                    let w = u64::from(edge.weight);
                    pool.all.push(e);
                    pool.all_weight += w;
                    if edge.healthy {
                        pool.healthy.push(e);
                        pool.healthy_weight += w;
                    }
                }
                edges.push(edge);
            }
            let counter = |o: Outcome| {
                metrics
                    .answers
                    .with_label_values(&[route.id.as_str(), o.as_str()])
            };
            regions.push(Region {
                id: route.id.clone(),
                order,
                pools,
                answers: [
                    counter(Outcome::Local),
                    counter(Outcome::Failover),
                    counter(Outcome::LastResort),
                    counter(Outcome::Panic),
                ],
            });
        }
        // Every region tries every other one, even if its fallback list forgot some.
        let all: Vec<u16> = (0..regions.len())
            .filter_map(|i| u16::try_from(i).ok())
            .collect();
        for region in &mut regions {
            for &other in &all {
                if !region.order.contains(&other) {
                    region.order.push(other);
                }
            }
        }
        let default_order = index_of(default)
            .and_then(|d| regions.get(usize::from(d)))
            .map_or(all, |d| d.order.clone());
        Plan {
            version: table.version,
            by_slot: slots.iter().map(index_of).collect(),
            default_order,
            regions,
            edges,
            empty_answers: metrics.answers.with_label_values(&["none", "empty"]),
        }
    }

    /// Decides which edges answer a client of region `slot`: the pure policy, with `seed`
    /// driving the weighted choice.
    pub fn decide(&self, slot: u16, policy: NamePolicy, family: Family, seed: u64) -> Decision {
        let mut d = Decision::new();
        let mut rng = SplitMix(seed);
        let wanted = policy.max_answers.clamp(1, MAX_ANSWERS);
        let home = self.by_slot.get(usize::from(slot)).copied().flatten();
        let order = match home.and_then(|h| self.regions.get(usize::from(h))) {
            Some(region) => region.order.as_slice(),
            None => {
                d.step(Step::Unrouted);
                self.default_order.as_slice()
            }
        };
        let mut last_resort = None;
        for &r in order {
            let Some(region) = self.regions.get(usize::from(r)) else {
                continue;
            };
            let pool = &region.pools[family as usize];
            let (healthy, total) = (count(&pool.healthy), count(&pool.all));
            let skip = if total == 0 {
                Some(Skip::NoEdges)
            } else if healthy == 0 {
                Some(Skip::NoneHealthy)
            } else if policy
                .min_healthy_share
                .exceeds(pool.healthy.len(), pool.all.len())
            {
                last_resort.get_or_insert(r);
                Some(Skip::BelowShare)
            } else {
                None
            };
            if let Some(why) = skip {
                d.step(Step::Skipped {
                    region: r,
                    healthy,
                    total,
                    why,
                });
                continue;
            }
            let how = if Some(r) == home {
                Outcome::Local
            } else {
                Outcome::Failover
            };
            self.choose(&mut d, r, how, wanted, &mut rng, family);
            return d;
        }
        if let Some(r) = last_resort {
            self.choose(&mut d, r, Outcome::LastResort, wanted, &mut rng, family);
            return d;
        }
        // Panic: nothing healthy anywhere. Every edge is a candidate, nearest regions first.
        for &r in order {
            let Some(region) = self.regions.get(usize::from(r)) else {
                continue;
            };
            let pool = &region.pools[family as usize];
            if pool.all.is_empty() {
                continue;
            }
            if d.region.is_none() {
                d.region = Some(r);
                d.outcome = Outcome::Panic;
                d.step(Step::Chosen {
                    region: r,
                    healthy: 0,
                    total: count(&pool.all),
                    how: Outcome::Panic,
                });
            }
            let more = wanted - d.edges().len();
            weighted(
                &self.edges,
                &pool.all,
                pool.all_weight,
                more,
                &mut rng,
                &mut d,
            );
            if d.edges().len() >= wanted {
                break;
            }
        }
        d
    }

    fn choose(
        &self,
        d: &mut Decision,
        r: u16,
        how: Outcome,
        wanted: usize,
        rng: &mut SplitMix,
        family: Family,
    ) {
        let Some(region) = self.regions.get(usize::from(r)) else {
            return;
        };
        let pool = &region.pools[family as usize];
        d.region = Some(r);
        d.outcome = how;
        d.step(Step::Chosen {
            region: r,
            healthy: count(&pool.healthy),
            total: count(&pool.all),
            how,
        });
        weighted(
            &self.edges,
            &pool.healthy,
            pool.healthy_weight,
            wanted,
            rng,
            d,
        );
    }

    /// Counts an answer in `verge_geo_answers_total` (counters resolved when the plan was built).
    pub fn count_answer(&self, d: &Decision) {
        let counter = d
            .region
            .and_then(|r| self.regions.get(usize::from(r)))
            .and_then(|region| region.answers.get(d.outcome as usize));
        match counter {
            Some(counter) => counter.inc(),
            None => self.empty_answers.inc(),
        }
    }

    pub fn region_of_slot(&self, slot: u16) -> Option<u16> {
        self.by_slot.get(usize::from(slot)).copied().flatten()
    }

    pub fn edge(&self, e: u32) -> Option<&Edge> {
        self.edges.get(e as usize)
    }

    pub fn region(&self, r: u16) -> Option<&Region> {
        self.regions.get(usize::from(r))
    }
}

fn count(list: &[u32]) -> u32 {
    u32::try_from(list.len()).unwrap_or(u32::MAX)
}

/// Adds up to `wanted` edges of `pool` to `d`, drawn by weight without replacement.
fn weighted(
    edges: &[Edge],
    pool: &[u32],
    total_weight: u64,
    wanted: usize,
    rng: &mut SplitMix,
    d: &mut Decision,
) {
    let mut remaining = total_weight;
    for _ in 0..wanted {
        if remaining == 0 {
            return;
        }
        let mut ticket = rng.next() % remaining;
        for &e in pool {
            if d.has(e) {
                continue;
            }
            let w = edges
                .get(e as usize)
                .map_or(1, |edge| u64::from(edge.weight));
            if ticket < w {
                d.push(e);
                remaining -= w;
                break;
            }
            ticket -= w;
        }
    }
}

fn compile_edge(entry: &NodeEntry, region: u16) -> Edge {
    Edge {
        id: entry.id.clone(),
        region,
        ip: url_ip(&entry.data_url),
        data_url: entry.data_url.trim_end_matches('/').to_string(),
        weight: entry.weight.max(1),
        healthy: entry.healthy,
    }
}

impl Edge {
    fn serves(&self, family: Family) -> bool {
        matches!(
            (family, self.ip),
            (Family::Any, _)
                | (Family::V4, Some(IpAddr::V4(_)))
                | (Family::V6, Some(IpAddr::V6(_)))
        )
    }
}

/// The IP address of a URL's host, if the host is an IP literal.
pub fn url_ip(url: &str) -> Option<IpAddr> {
    let uri: http::Uri = url.parse().ok()?;
    let host = uri.host()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    host.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
}

/// SplitMix64: a fast generator, good enough to spread answers by weight.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}
