//! Origin shields an edge sends its misses to: which, how heavily, and when one is taken out.
//! How a node uses the shields above it ([`UpperTierConfig`]: ejection, failover budget,
//! bounded load, TLS) is validated here once, for an edge's `[shields]` and a shield's
//! `[parents]` alike.

use std::collections::HashSet;
use std::time::Duration;

use crate::error::Collector;
use crate::field::{count, duration};
use std::collections::BTreeMap;

use crate::ids::{NodeId, RegionId};
use crate::raw::{RawShields, RawUpperTier};
use crate::tiers::{self, LatencyMatrix, PlanInput, PlanShield, TiersConfig};
use crate::tls::ClientTlsConfig;
use crate::upstream::OriginUrl;

/// Shields beyond this are refused: the ring tracks members in a 256-bit set.
pub const MAX_SHIELDS: usize = 256;

/// The `[shields]` table. With no members, misses go straight to `upstream.origin`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShieldsConfig {
    pub members: Vec<ShieldSpec>,
    /// When no shield can answer, go to `upstream.origin` directly (else 503).
    pub origin_fallback: bool,
    /// Ejection, failover budget, bounded load and TLS towards the shields.
    pub upper: UpperTierConfig,
    /// Which members make this edge's ring (`topology`, `origin_region`; every member has a
    /// region then). `None`: all of them. A control plane's routing tables replace it.
    pub tiers: Option<TiersConfig>,
}

/// How a node uses the shields above it, whichever its role: an edge's `[shields]`, a
/// shield's `[parents]` (the upper shields control's two-level plan gives it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpperTierConfig {
    /// Consecutive failures (connect error, timeout, broken exchange, an error the shield
    /// generated) that take a shield out of the ring.
    pub failures_to_eject: u32,
    /// How long an ejected shield stays out before one request probes it again.
    pub eject_for: Duration,
    /// Failovers to the next shield (or the origin) stay under this share of requests.
    pub retry_budget_percent: u32,
    /// Bounded-load mode: a shield with more than (1 + this/100) × the mean in-flight requests
    /// spills new ones to the next shield in ring order. `None`: off.
    pub bounded_load_percent: Option<u32>,
    /// How `https://` shields are verified, and the client certificate shown to them.
    pub tls: ClientTlsConfig,
}

/// One shield: its id (stable: ring placement is computed from it), address and weight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShieldSpec {
    pub id: NodeId,
    pub url: OriginUrl,
    /// Share of the ring, relative to the other shields (1..=10): a bound that keeps the ring
    /// (1024 points per unit of weight) small.
    pub weight: u32,
    /// The shield's region, for `shields.topology`.
    pub region: Option<RegionId>,
}

impl ShieldsConfig {
    /// Shields used as `upper` says, with these members, without a topology of their own;
    /// `origin_fallback`: misses go to the origin when no shield can answer.
    pub fn with_upper_tier(
        upper: UpperTierConfig,
        members: Vec<ShieldSpec>,
        origin_fallback: bool,
    ) -> ShieldsConfig {
        ShieldsConfig {
            members,
            origin_fallback,
            upper,
            tiers: None,
        }
    }

    /// The members that make the ring of an edge in `region`, and the others (measured only):
    /// all in the ring without `topology`, else the [`tiers::plan`] of the members' regions
    /// (by proximity: the edge's own region first, the others in the order members name
    /// them).
    pub fn ring_for(&self, region: &RegionId) -> (Vec<ShieldSpec>, Vec<ShieldSpec>) {
        let Some(config) = &self.tiers else {
            return (self.members.clone(), Vec::new());
        };
        let mut order: Vec<RegionId> = Vec::new();
        for r in self.members.iter().filter_map(|m| m.region.as_ref()) {
            if !order.contains(r) {
                order.push(r.clone());
            }
        }
        let mut everywhere = order.clone();
        everywhere.extend(config.origin_region.iter().cloned());
        everywhere.push(region.clone());
        let proximity: BTreeMap<RegionId, Vec<RegionId>> = everywhere
            .iter()
            .map(|from| {
                let others = order.iter().filter(|r| *r != from).cloned().collect();
                (from.clone(), others)
            })
            .collect();
        let shields: Vec<PlanShield> = self
            .members
            .iter()
            .filter_map(|m| {
                Some(PlanShield {
                    id: m.id.clone(),
                    region: m.region.clone()?,
                })
            })
            .collect();
        let plan = tiers::plan(&PlanInput {
            tiers: config,
            regions: std::slice::from_ref(region),
            shields: &shields,
            proximity: &proximity,
            latency: &LatencyMatrix::default(),
        });
        let chosen = plan.shields_for(region).unwrap_or_default();
        self.members
            .iter()
            .cloned()
            .partition(|m| chosen.contains(&m.id))
    }
}

pub mod defaults {
    pub const ORIGIN_FALLBACK: bool = true;
    pub const FAILURES_TO_EJECT: u64 = 3;
    pub const EJECT_FOR: &str = "5s";
    pub const RETRY_BUDGET_PERCENT: u64 = 20;
    pub const WEIGHT: u64 = 1;
}

pub(crate) fn validate_shields(c: &mut Collector, raw: RawShields) -> Option<ShieldsConfig> {
    if raw.members.len() > MAX_SHIELDS {
        c.push(
            "shields.members",
            format!("{} shields given; at most {MAX_SHIELDS}", raw.members.len()),
        );
    }
    let mut seen = HashSet::new();
    let mut members = Vec::with_capacity(raw.members.len());
    let mut complete = true;
    for (i, member) in raw.members.into_iter().enumerate() {
        let at = |key: &str| format!("shields.members[{i}].{key}");
        let id = match member.id.as_deref() {
            Some(id) => c.take(&at("id"), NodeId::new(id)),
            None => {
                c.push(&at("id"), "missing: every shield needs an id");
                None
            }
        };
        if let Some(id) = &id {
            if !seen.insert(id.clone()) {
                c.push(&at("id"), format!("{id} is listed twice"));
            }
        }
        let url = match member.url.as_deref() {
            Some(url) => c.take(&at("url"), OriginUrl::parse(url)),
            None => {
                c.push(
                    &at("url"),
                    "missing: the shield's URL, e.g. \"http://10.0.0.5:8080\"",
                );
                None
            }
        };
        let weight = count(c, &at("weight"), member.weight, defaults::WEIGHT, (1, 10));
        let region = match member.region.as_deref() {
            Some(text) => c.take(&at("region"), RegionId::new(text)).map(Some),
            None if raw.topology.is_some() => {
                c.push(
                    &at("region"),
                    "missing: shields.topology places shields by their region",
                );
                None
            }
            None => Some(None),
        };
        match (id, url, weight, region) {
            (Some(id), Some(url), Some(weight), Some(region)) => members.push(ShieldSpec {
                id,
                url,
                weight: u32::try_from(weight).ok()?,
                region,
            }),
            _ => complete = false,
        }
    }
    let upper = validate_upper_tier(
        c,
        "shields",
        RawUpperTier {
            failures_to_eject: raw.failures_to_eject,
            eject_for: raw.eject_for,
            retry_budget_percent: raw.retry_budget_percent,
            bounded_load_percent: raw.bounded_load_percent,
            tls: raw.tls,
        },
    );
    let tiers = match raw.topology.as_deref() {
        None => Some(None),
        Some(text) => {
            let topology = c.take("shields.topology", text.parse());
            let origin_region = match raw.origin_region.as_deref() {
                None => Some(None),
                Some(r) => c.take("shields.origin_region", RegionId::new(r)).map(Some),
            };
            Some(Some(TiersConfig {
                topology: topology?,
                origin_region: origin_region?,
                ..TiersConfig::default()
            }))
        }
    };
    if raw.topology.is_none() && raw.origin_region.is_some() {
        c.push("shields.origin_region", "only used with shields.topology");
    }
    if !complete || members.len() > MAX_SHIELDS {
        return None;
    }
    let origin_fallback = raw.origin_fallback.unwrap_or(defaults::ORIGIN_FALLBACK);
    Some(ShieldsConfig {
        tiers: tiers?,
        ..ShieldsConfig::with_upper_tier(upper?, members, origin_fallback)
    })
}

/// Validates how a node uses the shields above it, each key under `table` (`shields`,
/// `parents`); every key is optional, with the defaults of [`defaults`].
pub(crate) fn validate_upper_tier(
    c: &mut Collector,
    table: &str,
    raw: RawUpperTier,
) -> Option<UpperTierConfig> {
    let at = |key: &str| format!("{table}.{key}");
    let failures = count(
        c,
        &at("failures_to_eject"),
        raw.failures_to_eject,
        defaults::FAILURES_TO_EJECT,
        (1, 1000),
    );
    let eject_for = duration(
        c,
        &at("eject_for"),
        raw.eject_for.as_deref(),
        defaults::EJECT_FOR,
        Duration::from_millis(1),
    );
    let budget = count(
        c,
        &at("retry_budget_percent"),
        raw.retry_budget_percent,
        defaults::RETRY_BUDGET_PERCENT,
        (0, 100),
    );
    let bounded = match raw.bounded_load_percent {
        None => Some(None),
        Some(p) => count(c, &at("bounded_load_percent"), Some(p), 0, (1, 1000)).map(Some),
    };
    let tls = crate::tls::validate_client_tls(c, raw.tls, &at("tls"));
    Some(UpperTierConfig {
        failures_to_eject: u32::try_from(failures?).ok()?,
        eject_for: eject_for?,
        retry_budget_percent: u32::try_from(budget?).ok()?,
        bounded_load_percent: bounded?.map(|p| u32::try_from(p).unwrap_or(u32::MAX)),
        tls: tls?,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::{ConfigErrors, EdgeConfig, ShieldConfig};

    const BASE: &str = "[upstream]\norigin = \"http://127.0.0.1:8000\"\n";
    const SHIELD: &str = "[origin]\nservers = [\"http://127.0.0.1:8000\"]\n";

    #[test]
    fn a_topology_picks_this_edges_ring_from_the_members_regions() {
        let members = "[[shields.members]]\nid = \"s-us\"\nurl = \"http://127.1.0.101:8080\"\nregion = \"us\"\n\
             [[shields.members]]\nid = \"s-eu\"\nurl = \"http://127.2.0.101:8080\"\nregion = \"eu\"\n";
        let ring = |topology: &str, origin: &str, edge: &str| -> (Vec<String>, Vec<String>) {
            let text = format!("{BASE}[shields]\ntopology = {topology:?}\n{origin}{members}");
            let cfg = EdgeConfig::from_toml(&text).unwrap();
            let (ring, rest) = cfg.shields.ring_for(&crate::RegionId::new(edge).unwrap());
            let ids = |v: Vec<super::ShieldSpec>| v.into_iter().map(|s| s.id.to_string()).collect();
            (ids(ring), ids(rest))
        };
        let us_origin = "origin_region = \"us\"\n";
        assert_eq!(ring("regional", "", "eu").0, ["s-eu"]);
        assert_eq!(
            ring("regional", "", "ap").0,
            ["s-us"],
            "no ap shield: the first listed"
        );
        assert_eq!(
            ring("origin-near", us_origin, "eu"),
            (vec!["s-us".into()], vec!["s-eu".into()])
        );
        assert_eq!(
            ring("auto", us_origin, "eu").0,
            ["s-us"],
            "a tie: the one nearer the origin"
        );
        assert_eq!(ring("global", "", "eu").0, ["s-us", "s-eu"]);
        // Without a topology every member is in the ring, region or not.
        let plain = EdgeConfig::from_toml(&format!("{BASE}{members}")).unwrap();
        assert_eq!(
            plain
                .shields
                .ring_for(&crate::RegionId::new("ap").unwrap())
                .0
                .len(),
            2
        );
    }

    #[test]
    fn a_topology_needs_every_members_region_and_a_known_name() {
        let text = format!(
            "{BASE}[shields]\ntopology = \"nearest\"\norigin_region = \"u s\"\n\
             [[shields.members]]\nid = \"s1\"\nurl = \"http://127.0.0.1:9001\"\n"
        );
        let errs = EdgeConfig::from_toml(&text).unwrap_err();
        for path in [
            "shields.topology",
            "shields.origin_region",
            "shields.members[0].region",
        ] {
            assert!(errs.mentions(path), "{path} not reported in:\n{errs}");
        }
        let stray = format!("{BASE}[shields]\norigin_region = \"us\"\n");
        assert!(EdgeConfig::from_toml(&stray)
            .unwrap_err()
            .mentions("shields.origin_region"));
    }

    #[test]
    fn no_shields_by_default() {
        let cfg = EdgeConfig::from_toml(BASE).unwrap();
        assert!(cfg.shields.members.is_empty());
        assert!(cfg.shields.origin_fallback);
    }

    #[test]
    fn shields_parse_with_weights_and_health_settings() {
        let text = format!(
            "{BASE}[shields]\norigin_fallback = false\nfailures_to_eject = 2\neject_for = \"250ms\"\nretry_budget_percent = 50\n\
             [[shields.members]]\nid = \"s1\"\nurl = \"http://127.0.0.1:9001\"\n\
             [[shields.members]]\nid = \"s2\"\nurl = \"http://127.0.0.1:9002\"\nweight = 3\n"
        );
        let cfg = EdgeConfig::from_toml(&text).unwrap();
        let s = &cfg.shields;
        assert_eq!(s.members.len(), 2);
        assert_eq!(s.members[0].weight, 1);
        assert_eq!(s.members[1].weight, 3);
        assert_eq!(s.members[1].url.to_string(), "http://127.0.0.1:9002");
        assert!(!s.origin_fallback);
        assert_eq!(s.upper.failures_to_eject, 2);
        assert_eq!(s.upper.retry_budget_percent, 50);
        assert_eq!(s.upper.eject_for, std::time::Duration::from_millis(250));
        assert_eq!(s.upper.bounded_load_percent, None);
        let on = text.replace("[shields]\n", "[shields]\nbounded_load_percent = 25\n");
        assert_eq!(
            EdgeConfig::from_toml(&on)
                .unwrap()
                .shields
                .upper
                .bounded_load_percent,
            Some(25)
        );
        let bad = text.replace("[shields]\n", "[shields]\nbounded_load_percent = 0\n");
        assert!(EdgeConfig::from_toml(&bad)
            .unwrap_err()
            .mentions("shields.bounded_load_percent"));
    }

    #[test]
    fn every_bad_shield_field_is_named() {
        let text = format!(
            "{BASE}[shields]\neject_for = \"soon\"\nretry_budget_percent = 101\n\
             [[shields.members]]\nid = \"s1\"\nurl = \"ftp://x\"\nweight = 0\n\
             [[shields.members]]\nurl = \"http://127.0.0.1:9002\"\n\
             [[shields.members]]\nid = \"s1\"\nurl = \"http://127.0.0.1:9003\"\n"
        );
        let errs = EdgeConfig::from_toml(&text).unwrap_err();
        for path in [
            "shields.eject_for",
            "shields.retry_budget_percent",
            "shields.members[0].url",
            "shields.members[0].weight",
            "shields.members[1].id",
            "shields.members[2].id",
        ] {
            assert!(errs.mentions(path), "{path} not reported in:\n{errs}");
        }
    }

    #[test]
    fn a_shields_parents_default_to_what_an_edge_gives_its_shields() {
        let parents = ShieldConfig::from_toml(SHIELD).unwrap().parents;
        assert_eq!(parents.failures_to_eject, 3);
        assert_eq!(parents.eject_for, Duration::from_secs(5));
        assert_eq!(parents.retry_budget_percent, 20);
        assert_eq!(parents.bounded_load_percent, None);
        assert_eq!(parents.tls, crate::ClientTlsConfig::default());
        let edge = EdgeConfig::from_toml(BASE).unwrap().shields;
        assert_eq!(
            super::ShieldsConfig::with_upper_tier(parents, Vec::new(), true),
            edge
        );
        let empty = ShieldConfig::from_toml(&format!("{SHIELD}[parents]\n")).unwrap();
        assert_eq!(empty, ShieldConfig::from_toml(SHIELD).unwrap());
    }

    #[test]
    fn every_parents_key_is_read() {
        let text = format!(
            "{SHIELD}[parents]\nfailures_to_eject = 1\neject_for = \"1m\"\n\
             retry_budget_percent = 0\nbounded_load_percent = 50\n\
             [parents.tls]\nca_file = \"/etc/verge/ca.pem\"\nclient_cert = \"/etc/verge/s.pem\"\n\
             client_key = \"/etc/verge/s.key\"\nserver_name = \"shields.internal\"\n"
        );
        let parents = ShieldConfig::from_toml(&text).unwrap().parents;
        assert_eq!(parents.failures_to_eject, 1);
        assert_eq!(parents.eject_for, Duration::from_secs(60));
        assert_eq!(parents.retry_budget_percent, 0);
        assert_eq!(parents.bounded_load_percent, Some(50));
        let tls = parents.tls;
        assert_eq!(tls.ca_file, Some("/etc/verge/ca.pem".into()));
        let client = tls.client_cert.unwrap();
        assert_eq!(
            (client.cert, client.key),
            ("/etc/verge/s.pem".into(), "/etc/verge/s.key".into())
        );
        assert_eq!(tls.server_name.as_deref(), Some("shields.internal"));
    }

    #[test]
    fn every_bad_parents_value_is_named() {
        let text = format!(
            "{SHIELD}[parents]\nfailures_to_eject = 0\neject_for = \"soon\"\n\
             retry_budget_percent = 101\nbounded_load_percent = 0\n\
             [parents.tls]\nca_file = \"\"\nclient_cert = \"/etc/verge/s.pem\"\nserver_name = \"a b\"\n"
        );
        let errs = ShieldConfig::from_toml(&text).unwrap_err();
        for path in [
            "parents.failures_to_eject",
            "parents.eject_for",
            "parents.retry_budget_percent",
            "parents.bounded_load_percent",
            "parents.tls.ca_file",
            "parents.tls.client_key",
            "parents.tls.server_name",
        ] {
            assert!(errs.mentions(path), "{path} not reported in:\n{errs}");
        }
        assert_eq!(errs.errors.len(), 7, "{errs}");
        let keyless = format!("{SHIELD}[parents.tls]\nclient_key = \"/etc/verge/s.key\"\n");
        let errs = ShieldConfig::from_toml(&keyless).unwrap_err();
        assert!(errs.mentions("parents.tls.client_cert"), "{errs}");
    }

    #[test]
    fn parents_take_no_key_of_their_own_beyond_the_shared_ones() {
        for (table, key) in [
            ("parents", "origin_fallback = false"),
            ("parents", "members = []"),
            ("parents", "topology = \"regional\""),
            ("parents", "failure_to_eject = 1"),
            ("parents.tls", "ca = \"/etc/verge/ca.pem\""),
        ] {
            let text = format!("{SHIELD}[{table}]\n{key}\n");
            let errs = ShieldConfig::from_toml(&text).unwrap_err();
            let name = key.split(' ').next().unwrap();
            let path = format!("{table}.{name}");
            assert!(errs.mentions(&path), "{path} not reported in:\n{errs}");
        }
    }

    /// The (path, message) of every error, with `from.` paths written `to.`.
    fn renamed(errs: ConfigErrors, from: &str, to: &str) -> Vec<(String, String)> {
        errs.errors
            .into_iter()
            .map(|e| {
                let path = match e.path.strip_prefix(&format!("{from}.")) {
                    Some(rest) => format!("{to}.{rest}"),
                    None => e.path,
                };
                (path, e.message)
            })
            .collect()
    }

    #[test]
    fn parents_are_checked_exactly_as_an_edges_shields() {
        for body in [
            "failures_to_eject = 1001\n",
            "eject_for = \"0s\"\n",
            "eject_for = \"5 parsecs\"\n",
            "retry_budget_percent = 150\n",
            "bounded_load_percent = 1001\n",
            "[TABLE.tls]\nclient_cert = \"\"\nclient_key = \"\"\n",
            "[TABLE.tls]\nca_file = \"\"\nserver_name = \"x/y\"\n",
            "[TABLE.tls]\nclient_cert = \"/etc/verge/s.pem\"\n",
        ] {
            let edge = format!("{BASE}[shields]\n{}", body.replace("TABLE", "shields"));
            let shield = format!("{SHIELD}[parents]\n{}", body.replace("TABLE", "parents"));
            let edge = EdgeConfig::from_toml(&edge).unwrap_err();
            let shield = ShieldConfig::from_toml(&shield).unwrap_err();
            assert_eq!(
                renamed(edge, "shields", "parents"),
                renamed(shield, "parents", "parents"),
                "{body}"
            );
        }
    }

    #[test]
    fn the_shield_example_shows_the_parents_defaults() {
        let example = include_str!("../examples/shield.toml");
        // The example's [parents] block is commented out; its keys, uncommented, are the defaults.
        let keys = [
            "[parents]",
            "failures_to_eject =",
            "eject_for =",
            "retry_budget_percent =",
        ];
        let mut in_block = false;
        let mut uncommented = 0;
        let text: String = example
            .lines()
            .map(|line| {
                let bare = line.strip_prefix("# ").unwrap_or(line);
                if line.starts_with('[') || line.starts_with("# [") {
                    in_block = bare == "[parents]";
                }
                if in_block && line.starts_with("# ") && keys.iter().any(|k| bare.starts_with(k)) {
                    uncommented += 1;
                    format!("{bare}\n")
                } else {
                    format!("{line}\n")
                }
            })
            .collect();
        assert_eq!(
            uncommented,
            keys.len(),
            "the example's [parents] block:\n{text}"
        );
        let shown = ShieldConfig::from_toml(&text).unwrap().parents;
        assert_eq!(shown, ShieldConfig::from_toml(SHIELD).unwrap().parents);
    }
}
