//! Tier topologies: which shields each region's edges hash their misses over.
//!
//! - `global`: one ring over every healthy shield;
//! - `regional`: the shields of the edge's own region, else of the nearest region that has any;
//! - `origin-near`: the shields nearest the origin, for every region;
//! - `auto` (the default): per edge region, the shields with the least edge → shield +
//!   shield → origin latency; among those within a tolerance of the best, the ones nearest the
//!   origin, so that regions share one upper tier whenever it costs them next to nothing. When
//!   even the best shields would add more than `max_detour` to the region's measured round trip
//!   straight to the origin (its near shields down, say, leaving only far ones), the region's
//!   misses go straight to the origin instead (basis `direct`).
//!
//! With `levels = 2` (`regional` and `auto`), each region's edges use their nearest shields, and
//! those shields send their own misses to the shields nearest the origin ([`TierPlan::upper`]),
//! by consistent hashing again; the upper shields go to the origin. A shield never has itself
//! or a lower shield as a parent, and a node's `Via` check refuses any loop (508).
//!
//! Costs are measured round-trip times when every candidate has them (edges report their
//! shields, shields their origin servers: [`LatencyMatrix`]), else proximity ranks from the
//! regions' fallback lists (own region 0, the n-th listed n). Consistent hashing stays within the
//! chosen set, so each object still has one owner per tier. [`plan`] is pure: control calls it
//! for its routing tables, an edge for its own `[shields]` table.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::Collector;
use crate::ids::{NodeId, RegionId};

/// How edges pick their shields.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Topology {
    Global,
    Regional,
    OriginNear,
    #[default]
    Auto,
}

impl Topology {
    pub const ALL: [Topology; 4] = [
        Topology::Global,
        Topology::Regional,
        Topology::OriginNear,
        Topology::Auto,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Topology::Global => "global",
            Topology::Regional => "regional",
            Topology::OriginNear => "origin-near",
            Topology::Auto => "auto",
        }
    }
}

impl fmt::Display for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Topology {
    type Err = String;

    fn from_str(text: &str) -> Result<Topology, String> {
        Topology::ALL
            .into_iter()
            .find(|t| t.as_str() == text)
            .ok_or_else(|| {
                format!("{text:?} is not a tier topology (global, regional, origin-near or auto)")
            })
    }
}

/// The `[tiers]` table of control's file (and of an edge's `[shields]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TiersConfig {
    pub topology: Topology,
    /// The region the origin is in: the proximity estimate of shield → origin until shields
    /// report measured times. `None`: every shield counts as equally near.
    pub origin_region: Option<RegionId>,
    /// A latency change smaller than this share (percent) of the planned value, or than
    /// `REPLAN_MIN_MS`, does not recompute the plan.
    pub replan_percent: u32,
    /// 1: edges → shields → origin. 2: edges → nearest shields → shields nearest the origin →
    /// origin (`regional` and `auto` only).
    pub levels: u8,
    /// `auto`: the most its shields may add to a region's measured round trip straight to the
    /// origin; past it the region goes straight to the origin. `None` (`"off"`): never.
    pub max_detour: Option<Duration>,
}

impl Default for TiersConfig {
    fn default() -> TiersConfig {
        TiersConfig {
            topology: Topology::Auto,
            origin_region: None,
            replan_percent: defaults::REPLAN_PERCENT,
            levels: 1,
            max_detour: Some(defaults::MAX_DETOUR),
        }
    }
}

pub mod defaults {
    use std::time::Duration;

    pub const REPLAN_PERCENT: u32 = 20;
    /// What a region's shields may add to its round trip straight to the origin: a local
    /// shield costs a few milliseconds for the offload, a far one (its near shields down) far
    /// more.
    pub const MAX_DETOUR: Duration = Duration::from_millis(20);
    /// Changes under this many milliseconds never recompute the plan.
    pub const REPLAN_MIN_MS: f64 = 2.0;
    /// `auto` takes shields costing at most this share (percent) over the best, plus
    /// [`TOLERANCE_MS`], as equally good, and prefers those nearest the origin among them.
    pub const TOLERANCE_PERCENT: f64 = 10.0;
    pub const TOLERANCE_MS: f64 = 2.0;
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTiers {
    pub topology: Option<String>,
    pub origin_region: Option<String>,
    pub replan_percent: Option<u64>,
    pub levels: Option<u64>,
    pub max_detour: Option<String>,
}

pub(crate) fn validate_tiers(c: &mut Collector, raw: Option<RawTiers>) -> Option<TiersConfig> {
    let raw = raw.unwrap_or_default();
    let topology = match raw.topology.as_deref() {
        None => Some(Topology::Auto),
        Some(text) => c.take("tiers.topology", text.parse()),
    };
    let origin_region = match raw.origin_region.as_deref() {
        None => Some(None),
        Some(text) => c.take("tiers.origin_region", RegionId::new(text)).map(Some),
    };
    let replan_percent = crate::field::count(
        c,
        "tiers.replan_percent",
        raw.replan_percent,
        u64::from(defaults::REPLAN_PERCENT),
        (1, 1000),
    );
    let levels = crate::field::count(c, "tiers.levels", raw.levels, 1, (1, 2));
    let max_detour = match raw.max_detour.as_deref() {
        Some("off") => Some(None),
        Some(text) if crate::units::parse_duration(text).is_err() => {
            c.push(
                "tiers.max_detour",
                format!("{text:?} is neither a duration (like \"20ms\") nor \"off\""),
            );
            None
        }
        text => crate::field::bounded_duration(
            c,
            "tiers.max_detour",
            text,
            "20ms",
            (Duration::ZERO, Duration::from_secs(60)),
        )
        .map(Some),
    };
    if raw.max_detour.is_some() && topology.is_some_and(|t| t != Topology::Auto) {
        c.push(
            "tiers.max_detour",
            "applies to topology auto only: the other topologies never send a region straight to the origin",
        );
    }
    let (topology, levels, max_detour) = (topology?, levels?, max_detour?);
    if levels == 2 && !matches!(topology, Topology::Regional | Topology::Auto) {
        c.push(
            "tiers.levels",
            format!("2 levels need topology regional or auto, not {topology}"),
        );
        return None;
    }
    Some(TiersConfig {
        topology,
        origin_region: origin_region?,
        replan_percent: u32::try_from(replan_percent?).ok()?,
        levels: u8::try_from(levels).ok()?,
        max_detour,
    })
}

/// Smoothed round-trip times in milliseconds: from each edge region to each shield (the
/// region's edges together), from each shield to the origin, and from each edge region straight
/// to the origin (when every edge there may fetch from it).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencyMatrix {
    pub edge_to_shield: BTreeMap<RegionId, BTreeMap<NodeId, f64>>,
    pub shield_to_origin: BTreeMap<NodeId, f64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub edge_to_origin: BTreeMap<RegionId, f64>,
}

impl LatencyMatrix {
    /// Whether `other` differs from this one by more than `percent` (and
    /// [`defaults::REPLAN_MIN_MS`]) anywhere, or has entries this one lacks or the reverse.
    pub fn differs(&self, other: &LatencyMatrix, percent: u32) -> bool {
        let far = |a: f64, b: f64| {
            let change = (a - b).abs();
            change > defaults::REPLAN_MIN_MS && change > a.abs() * f64::from(percent) / 100.0
        };
        fn maps_differ<K: Ord>(
            a: &BTreeMap<K, f64>,
            b: &BTreeMap<K, f64>,
            far: impl Fn(f64, f64) -> bool,
        ) -> bool {
            a.len() != b.len()
                || a.iter()
                    .any(|(k, v)| b.get(k).is_none_or(|other| far(*v, *other)))
        }
        self.edge_to_shield.len() != other.edge_to_shield.len()
            || self.edge_to_shield.iter().any(|(region, row)| {
                other
                    .edge_to_shield
                    .get(region)
                    .is_none_or(|o| maps_differ(row, o, far))
            })
            || maps_differ(&self.shield_to_origin, &other.shield_to_origin, far)
            || maps_differ(&self.edge_to_origin, &other.edge_to_origin, far)
    }
}

/// A healthy shield as the planner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanShield {
    pub id: NodeId,
    pub region: RegionId,
}

/// What a plan is computed from.
#[derive(Debug, Clone)]
pub struct PlanInput<'a> {
    pub tiers: &'a TiersConfig,
    /// The regions to plan for (where edges are).
    pub regions: &'a [RegionId],
    /// The healthy shields.
    pub shields: &'a [PlanShield],
    /// Per region, the other regions nearest first.
    pub proximity: &'a BTreeMap<RegionId, Vec<RegionId>>,
    pub latency: &'a LatencyMatrix,
}

/// The shields one edge region hashes over, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegionTier {
    pub region: RegionId,
    /// Empty: no shield (misses go to the origin).
    pub shields: Vec<NodeId>,
    /// `measured` (round-trip times), `proximity` (the regions' fallback order), or `direct`
    /// (no shields: they would add more than `max_detour` to the measured round trip straight
    /// to the origin).
    pub basis: String,
    /// The chosen set's cost: milliseconds when measured, a rank otherwise.
    pub cost: f64,
}

/// The tier plan of a routing table: per edge region, its shields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TierPlan {
    pub topology: Topology,
    pub regions: Vec<RegionTier>,
    /// With two levels: the shields every other shield sends its misses to (theirs go to the
    /// origin). Empty: one level.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub upper: Vec<NodeId>,
}

impl TierPlan {
    /// The shields `region`'s edges hash over; `None` when the plan does not name the region
    /// (then every healthy shield).
    pub fn shields_for(&self, region: &RegionId) -> Option<&[NodeId]> {
        self.regions
            .iter()
            .find(|r| &r.region == region)
            .map(|r| r.shields.as_slice())
    }

    /// Where `shield` sends its misses: the upper shields, unless it is one of them (or there
    /// are none), then nowhere but the origin.
    pub fn parents_of(&self, shield: &NodeId) -> &[NodeId] {
        if self.upper.contains(shield) {
            return &[];
        }
        &self.upper
    }
}

/// Rank of `to` as seen from `from`: 0 for itself, n for the n-th of its fallback list, and
/// past the list's end for regions it does not name.
fn rank(proximity: &BTreeMap<RegionId, Vec<RegionId>>, from: &RegionId, to: &RegionId) -> f64 {
    if from == to {
        return 0.0;
    }
    let list = proximity.get(from).map(Vec::as_slice).unwrap_or_default();
    let position = list.iter().position(|r| r == to).unwrap_or(list.len());
    (position + 1) as f64
}

/// The two legs of one shield's cost from one edge region.
struct Leg<'a> {
    shield: &'a PlanShield,
    to_shield: f64,
    to_origin: f64,
}

impl Leg<'_> {
    fn total(&self) -> f64 {
        self.to_shield + self.to_origin
    }
}

/// Each shield's legs from `region`: measured when every shield has both, else by rank.
fn legs<'a>(input: &PlanInput<'a>, region: &RegionId) -> (Vec<Leg<'a>>, &'static str) {
    let measured_row = input.latency.edge_to_shield.get(region);
    let measured: Option<Vec<Leg<'a>>> = input
        .shields
        .iter()
        .map(|s| {
            Some(Leg {
                shield: s,
                to_shield: *measured_row?.get(&s.id)?,
                to_origin: *input.latency.shield_to_origin.get(&s.id)?,
            })
        })
        .collect();
    if let Some(legs) = measured {
        return (legs, "measured");
    }
    let to_origin = |s: &PlanShield| match &input.tiers.origin_region {
        Some(origin) => rank(input.proximity, &s.region, origin),
        None => 0.0,
    };
    let legs = input
        .shields
        .iter()
        .map(|s| Leg {
            shield: s,
            to_shield: rank(input.proximity, region, &s.region),
            to_origin: to_origin(s),
        })
        .collect();
    (legs, "proximity")
}

/// Whether `value` is within the tolerance of `best` (exact for ranks).
fn near(best: f64, value: f64, measured: bool) -> bool {
    if measured {
        value <= best * (1.0 + defaults::TOLERANCE_PERCENT / 100.0) + defaults::TOLERANCE_MS
    } else {
        value <= best
    }
}

/// The legs within tolerance of the least `cost`.
fn least<'a, 'b>(
    legs: &'b [Leg<'a>],
    cost: fn(&Leg<'a>) -> f64,
    measured: bool,
) -> Vec<&'b Leg<'a>> {
    let best = legs.iter().map(cost).fold(f64::INFINITY, f64::min);
    legs.iter()
        .filter(|l| near(best, cost(l), measured))
        .collect()
}

/// The shields nearest the origin: by measured round trips when every shield has one, else
/// by the rank of the origin's region from theirs.
fn upper_tier(input: &PlanInput<'_>) -> Vec<NodeId> {
    let measured: Option<Vec<f64>> = input
        .shields
        .iter()
        .map(|s| input.latency.shield_to_origin.get(&s.id).copied())
        .collect();
    let costs = match &measured {
        Some(costs) => costs.clone(),
        None => input
            .shields
            .iter()
            .map(|s| match &input.tiers.origin_region {
                Some(origin) => rank(input.proximity, &s.region, origin),
                None => 0.0,
            })
            .collect(),
    };
    let best = costs.iter().copied().fold(f64::INFINITY, f64::min);
    input
        .shields
        .iter()
        .zip(&costs)
        .filter(|(_, cost)| near(best, **cost, measured.is_some()))
        .map(|(s, _)| s.id.clone())
        .collect()
}

/// With `auto` and measured costs: the region's round trip straight to the origin, when its
/// chosen shields (costing `cost`) would add more than `max_detour` to it. Never without a
/// measurement of that direct path: edges report one only when they may fetch from the origin.
fn detour_too_long(
    input: &PlanInput<'_>,
    region: &RegionId,
    measured: bool,
    cost: f64,
) -> Option<f64> {
    let allowed = input.tiers.max_detour?;
    if input.tiers.topology != Topology::Auto || !measured {
        return None;
    }
    let direct = *input.latency.edge_to_origin.get(region)?;
    (cost > direct + allowed.as_secs_f64() * 1000.0).then_some(direct)
}

/// Computes the plan: for each region, the shields its edges hash over. With no healthy
/// shield every region gets an empty set (misses go to the origin, as without shields).
pub fn plan(input: &PlanInput<'_>) -> TierPlan {
    let two_levels = input.tiers.levels == 2
        && matches!(input.tiers.topology, Topology::Regional | Topology::Auto);
    // The upper tier: the shields nearest the origin (measured once every shield has it).
    let upper: Vec<NodeId> = if two_levels {
        upper_tier(input)
    } else {
        Vec::new()
    };
    let regions: Vec<RegionTier> = input
        .regions
        .iter()
        .map(|region| {
            let (legs, basis) = legs(input, region);
            let measured = basis == "measured";
            let chosen: Vec<&Leg<'_>> = match input.tiers.topology {
                // Two levels: the nearest shields; their misses go on to the upper tier.
                Topology::Auto if two_levels => least(&legs, |l| l.to_shield, measured),
                Topology::Global => legs.iter().collect(),
                Topology::Regional => {
                    // The region of the nearest shield: the edges' own when it has any.
                    let home = legs
                        .iter()
                        .min_by(|a, b| a.to_shield.total_cmp(&b.to_shield))
                        .map(|l| l.shield.region.clone());
                    legs.iter()
                        .filter(|l| Some(&l.shield.region) == home.as_ref())
                        .collect()
                }
                Topology::OriginNear => least(&legs, |l| l.to_origin, measured),
                Topology::Auto => {
                    let good = least(&legs, Leg::total, measured);
                    let best_origin = good
                        .iter()
                        .map(|l| l.to_origin)
                        .fold(f64::INFINITY, f64::min);
                    good.into_iter()
                        .filter(|l| near(best_origin, l.to_origin, measured))
                        .collect()
                }
            };
            let cost = chosen.iter().map(|l| l.total()).fold(0.0, f64::max);
            if let Some(direct) = detour_too_long(input, region, measured, cost) {
                return RegionTier {
                    region: region.clone(),
                    shields: Vec::new(),
                    basis: "direct".to_string(),
                    cost: direct,
                };
            }
            RegionTier {
                region: region.clone(),
                shields: chosen.iter().map(|l| l.shield.id.clone()).collect(),
                basis: basis.to_string(),
                cost,
            }
        })
        .collect();
    // One level after all when every region's shields are upper ones.
    let lower_used = regions
        .iter()
        .flat_map(|r| &r.shields)
        .any(|s| !upper.contains(s));
    TierPlan {
        topology: input.tiers.topology,
        regions,
        upper: if lower_used { upper } else { Vec::new() },
    }
}

#[cfg(test)]
mod tests;
