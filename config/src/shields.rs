//! Origin shields an edge sends its misses to: which, how heavily, and when one is taken out.

use std::collections::HashSet;
use std::time::Duration;

use crate::error::Collector;
use crate::field::{count, duration};
use crate::ids::NodeId;
use crate::raw::RawShields;
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
    /// Consecutive failures (connect error, timeout, broken exchange, an error the shield
    /// generated) that take a shield out of the ring.
    pub failures_to_eject: u32,
    /// Failovers to the next shield (or the origin) stay under this share of requests.
    pub retry_budget_percent: u32,
    /// How long an ejected shield stays out before one request probes it again.
    pub eject_for: Duration,
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
        match (id, url, weight) {
            (Some(id), Some(url), Some(weight)) => members.push(ShieldSpec {
                id,
                url,
                weight: u32::try_from(weight).ok()?,
            }),
            _ => complete = false,
        }
    }
    let failures = count(
        c,
        "shields.failures_to_eject",
        raw.failures_to_eject,
        defaults::FAILURES_TO_EJECT,
        (1, 1000),
    );
    let eject_for = duration(
        c,
        "shields.eject_for",
        raw.eject_for.as_deref(),
        defaults::EJECT_FOR,
        Duration::from_millis(1),
    );
    let budget = count(
        c,
        "shields.retry_budget_percent",
        raw.retry_budget_percent,
        defaults::RETRY_BUDGET_PERCENT,
        (0, 100),
    );
    let bounded = match raw.bounded_load_percent {
        None => Some(None),
        Some(p) => count(c, "shields.bounded_load_percent", Some(p), 0, (1, 1000)).map(Some),
    };
    let tls = crate::tls::validate_client_tls(c, raw.tls, "shields.tls");
    if !complete || members.len() > MAX_SHIELDS {
        return None;
    }
    Some(ShieldsConfig {
        members,
        origin_fallback: raw.origin_fallback.unwrap_or(defaults::ORIGIN_FALLBACK),
        failures_to_eject: u32::try_from(failures?).ok()?,
        eject_for: eject_for?,
        retry_budget_percent: u32::try_from(budget?).ok()?,
        bounded_load_percent: bounded?.map(|p| u32::try_from(p).unwrap_or(u32::MAX)),
        tls: tls?,
    })
}

#[cfg(test)]
mod tests {
    use crate::EdgeConfig;

    const BASE: &str = "[upstream]\norigin = \"http://127.0.0.1:8000\"\n";

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
        assert_eq!(s.failures_to_eject, 2);
        assert_eq!(s.retry_budget_percent, 50);
        assert_eq!(s.eject_for, std::time::Duration::from_millis(250));
        assert_eq!(s.bounded_load_percent, None);
        let on = text.replace("[shields]\n", "[shields]\nbounded_load_percent = 25\n");
        assert_eq!(
            EdgeConfig::from_toml(&on)
                .unwrap()
                .shields
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
}
