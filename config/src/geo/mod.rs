//! Geo load balancing (`[geo]` in control's file): which clients belong to which region, the
//! host names control answers for, and how each name is steered.
//!
//! ```toml
//! [geo]
//! zone = "verge.test"
//! dns_listen = "127.0.0.1:5353"
//! http_listen = "127.0.0.1:7072"
//! default_region = "us"
//!
//! [geo.regions.eu]
//! cidrs = ["127.2.0.0/16"]
//! countries = ["FR", "DE"]
//! continents = ["EU"]
//!
//! [geo.names."cdn.verge.test"]
//! max_answers = 2
//! min_healthy_share = 0.5
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::error::Collector;
use crate::field::{count, duration, socket_addr};
use crate::ids::RegionId;

/// Most addresses one answer may hold (`max_answers`).
pub const MAX_ANSWERS: usize = 8;

/// The seven continent codes of GeoIP databases.
pub const CONTINENTS: [&str; 7] = ["AF", "AN", "AS", "EU", "NA", "OC", "SA"];

pub mod defaults {
    pub const TTL: &str = "30s";
    pub const MAX_ANSWERS: u64 = 2;
    pub const MIN_HEALTHY_SHARE: f64 = 0.5;
    pub const GEOIP_RELOAD: &str = "10s";
    pub const DNS_MAX_CONCURRENT_QUERIES: u64 = 1024;
}

/// Everything geo steering runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeoConfig {
    /// The zone control is authoritative for (lower case, no trailing dot).
    pub zone: DnsName,
    /// Authoritative DNS over UDP and TCP (the same port); none: no DNS.
    pub dns_listen: Option<SocketAddr>,
    /// Most UDP queries answered at once, and most TCP connections served at once; a query or
    /// connection beyond it is dropped unanswered (the client retries), so a flood cannot queue
    /// unbounded work.
    pub dns_max_concurrent_queries: usize,
    /// HTTP steering (redirects and `/v1/route`); none: no HTTP steering.
    pub http_listen: Option<SocketAddr>,
    /// TTL of answers, and of negative answers (the SOA minimum).
    pub ttl: Duration,
    /// The zone's name servers (NS records; the first is the SOA's primary).
    pub nameservers: Vec<DnsName>,
    /// The SOA's responsible mailbox, as a name (`hostmaster.verge.test`).
    pub hostmaster: DnsName,
    /// Where clients that no rule places go.
    pub default_region: RegionId,
    pub geoip: Option<GeoIpConfig>,
    /// Which clients belong to each region.
    pub regions: BTreeMap<RegionId, RegionMatch>,
    /// The host names answered, each with its steering policy.
    pub names: BTreeMap<DnsName, NamePolicy>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeoIpConfig {
    /// A MaxMind GeoIP2/GeoLite2 Country or City database.
    pub path: PathBuf,
    /// How often the file's modification time is checked; a changed file is reloaded.
    pub reload_interval: Duration,
}

/// The clients of one region: address blocks first (longest prefix wins), then the GeoIP
/// country, then the GeoIP continent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegionMatch {
    pub cidrs: Vec<Cidr>,
    /// ISO 3166-1 alpha-2 codes, upper case.
    pub countries: Vec<String>,
    /// Continent codes, one of [`CONTINENTS`].
    pub continents: Vec<String>,
}

/// How one host name is steered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NamePolicy {
    /// Most edges in one answer (1..=[`MAX_ANSWERS`]).
    pub max_answers: usize,
    /// A region whose share of healthy edges is below this is failed over to the next nearest.
    pub min_healthy_share: Share,
}

/// A fraction from 0 to 1, kept in thousandths so configurations compare exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Share(u16);

impl Share {
    pub const fn from_thousandths(n: u16) -> Share {
        Share(if n > 1000 { 1000 } else { n })
    }

    pub const fn thousandths(self) -> u16 {
        self.0
    }

    /// Whether `part` of `whole` is below this share (`whole` 0: never).
    pub fn exceeds(self, part: usize, whole: usize) -> bool {
        whole > 0 && (part as u128) * 1000 < u128::from(self.0) * (whole as u128)
    }

    pub fn as_f64(self) -> f64 {
        f64::from(self.0) / 1000.0
    }
}

/// A DNS name: lower case ASCII, no trailing dot, labels of 1 to 63 letters, digits, `-` or `_`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DnsName(String);

impl DnsName {
    pub fn new(text: &str) -> Result<DnsName, String> {
        let name = text.strip_suffix('.').unwrap_or(text).to_ascii_lowercase();
        if name.is_empty() {
            return Err("must not be empty (the root zone is not served)".into());
        }
        if name.len() > 253 {
            return Err(format!("{text:?} is longer than 253 characters"));
        }
        for label in name.split('.') {
            if label.is_empty() || label.len() > 63 {
                return Err(format!(
                    "{text:?} has an empty label or one longer than 63 characters"
                ));
            }
            if let Some(c) = label
                .chars()
                .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_')))
            {
                return Err(format!(
                    "{text:?} contains {c:?}; a DNS name has ASCII letters, digits, '-' and '_'"
                ));
            }
        }
        Ok(DnsName(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this name is `zone` or below it.
    pub fn is_within(&self, zone: &DnsName) -> bool {
        self.0 == zone.0
            || self
                .0
                .strip_suffix(zone.0.as_str())
                .is_some_and(|head| head.ends_with('.'))
    }
}

impl fmt::Display for DnsName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An address block: `127.1.0.0/16`, `2001:db8::/32`. Host bits are zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    pub addr: IpAddr,
    pub len: u8,
}

impl Cidr {
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let (addr, len) = match text.split_once('/') {
            Some((addr, len)) => (addr, Some(len)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{text:?} is not an address block (e.g. 127.1.0.0/16)"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match len {
            None => max,
            Some(len) => len
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|l| *l <= max)
                .ok_or_else(|| format!("{text:?}: the prefix length must be 0 to {max}"))?,
        };
        let cidr = Cidr { addr, len };
        let network = cidr.network();
        if network != addr {
            return Err(format!(
                "{text:?} has host bits set; did you mean {network}/{len}?"
            ));
        }
        Ok(cidr)
    }

    /// The address with the bits past the prefix cleared (a prefix longer than the address
    /// clears nothing).
    pub fn network(self) -> IpAddr {
        match self.addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX
                    .checked_shl(32u32.saturating_sub(u32::from(self.len)))
                    .unwrap_or(0);
                IpAddr::V4((u32::from(a) & mask).into())
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX
                    .checked_shl(128u32.saturating_sub(u32::from(self.len)))
                    .unwrap_or(0);
                IpAddr::V6((u128::from(a) & mask).into())
            }
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGeo {
    pub zone: Option<String>,
    pub dns_listen: Option<String>,
    pub dns_max_concurrent_queries: Option<u64>,
    pub http_listen: Option<String>,
    pub ttl: Option<String>,
    pub nameservers: Option<Vec<String>>,
    pub hostmaster: Option<String>,
    pub default_region: Option<String>,
    pub geoip_db: Option<String>,
    pub geoip_reload: Option<String>,
    #[serde(default)]
    pub regions: BTreeMap<String, RawGeoRegion>,
    #[serde(default)]
    pub names: BTreeMap<String, RawGeoName>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGeoRegion {
    #[serde(default)]
    pub cidrs: Vec<String>,
    #[serde(default)]
    pub countries: Vec<String>,
    #[serde(default)]
    pub continents: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGeoName {
    pub max_answers: Option<u64>,
    pub min_healthy_share: Option<f64>,
}

/// Validates `[geo]`, recording every problem in `c` under `geo.…` key paths.
pub(crate) fn validate(c: &mut Collector, raw: RawGeo) -> Option<GeoConfig> {
    let zone = match raw.zone.as_deref() {
        None => {
            c.push(
                "geo.zone",
                "missing: the DNS zone control answers for, e.g. \"cdn.example.com\"",
            );
            None
        }
        Some(text) => c.take("geo.zone", DnsName::new(text)),
    };
    let listen = |c: &mut Collector, path: &str, value: Option<&str>| match value {
        None => Some(None),
        Some(text) => socket_addr(c, path, text, "127.0.0.1:5353").map(Some),
    };
    let dns_listen = listen(c, "geo.dns_listen", raw.dns_listen.as_deref());
    let http_listen = listen(c, "geo.http_listen", raw.http_listen.as_deref());
    let dns_max_concurrent_queries = count(
        c,
        "geo.dns_max_concurrent_queries",
        raw.dns_max_concurrent_queries,
        defaults::DNS_MAX_CONCURRENT_QUERIES,
        (1, 1 << 20),
    );
    if raw.dns_listen.is_none() && raw.http_listen.is_none() {
        c.push(
            "geo.dns_listen",
            "nothing to serve: give dns_listen, http_listen or both",
        );
    }
    let ttl = duration(
        c,
        "geo.ttl",
        raw.ttl.as_deref(),
        defaults::TTL,
        Duration::from_secs(1),
    );
    if ttl.is_some_and(|t| t > Duration::from_secs(86_400)) {
        c.push("geo.ttl", "must be at most 1d (answers follow health)");
    }
    let in_zone = |c: &mut Collector, path: &str, text: &str| {
        let name = c.take(path, DnsName::new(text))?;
        match &zone {
            Some(zone) if !name.is_within(zone) => {
                c.push(path, format!("{name} is outside the zone {zone}"));
                None
            }
            _ => Some(name),
        }
    };
    let nameservers = match (&raw.nameservers, &zone) {
        (None, Some(zone)) => DnsName::new(&format!("ns1.{zone}")).ok().map(|n| vec![n]),
        (None, None) => None,
        (Some(list), _) if list.is_empty() => {
            c.push("geo.nameservers", "must name at least one name server");
            None
        }
        (Some(list), _) => {
            let names: Vec<Option<DnsName>> = list
                .iter()
                .enumerate()
                .map(|(i, n)| c.take(&format!("geo.nameservers[{i}]"), DnsName::new(n)))
                .collect();
            names.into_iter().collect()
        }
    };
    let hostmaster = match (&raw.hostmaster, &zone) {
        (Some(text), _) => c.take("geo.hostmaster", DnsName::new(text)),
        (None, Some(zone)) => DnsName::new(&format!("hostmaster.{zone}")).ok(),
        (None, None) => None,
    };
    let default_region = match raw.default_region.as_deref() {
        None => {
            c.push(
                "geo.default_region",
                "missing: the region of clients no rule places, e.g. \"us\"",
            );
            None
        }
        Some(text) => c.take("geo.default_region", RegionId::new(text)),
    };
    let reload = duration(
        c,
        "geo.geoip_reload",
        raw.geoip_reload.as_deref(),
        defaults::GEOIP_RELOAD,
        Duration::from_millis(100),
    );
    let geoip = match raw.geoip_db.as_deref() {
        None => Some(None),
        Some("") => {
            c.push(
                "geo.geoip_db",
                "must not be empty (leave it out for no GeoIP)",
            );
            None
        }
        Some(path) => reload.map(|reload_interval| {
            Some(GeoIpConfig {
                path: PathBuf::from(path),
                reload_interval,
            })
        }),
    };

    let regions = validate_regions(c, raw.regions);
    let mut names = BTreeMap::new();
    if raw.names.is_empty() {
        c.push(
            "geo.names",
            "no host names: add a [geo.names.\"cdn.example.com\"] table",
        );
    }
    for (text, policy) in raw.names {
        let path = format!("geo.names.{text:?}");
        let name = in_zone(c, &path, &text);
        let max_answers = count(
            c,
            &format!("{path}.max_answers"),
            policy.max_answers,
            defaults::MAX_ANSWERS,
            (1, MAX_ANSWERS as u64),
        );
        let share = policy
            .min_healthy_share
            .unwrap_or(defaults::MIN_HEALTHY_SHARE);
        let share = if (0.0..=1.0).contains(&share) {
            Some(Share::from_thousandths((share * 1000.0).round() as u16))
        } else {
            c.push(
                &format!("{path}.min_healthy_share"),
                format!("{share} is out of range 0.0..=1.0"),
            );
            None
        };
        if let (Some(name), Some(max_answers), Some(min_healthy_share)) = (name, max_answers, share)
        {
            if names.contains_key(&name) {
                c.push(&path, format!("{name} is listed twice"));
            }
            names.insert(
                name,
                NamePolicy {
                    max_answers: usize::try_from(max_answers).unwrap_or(1),
                    min_healthy_share,
                },
            );
        }
    }
    Some(GeoConfig {
        zone: zone?,
        dns_listen: dns_listen?,
        dns_max_concurrent_queries: usize::try_from(dns_max_concurrent_queries?).ok()?,
        http_listen: http_listen?,
        ttl: ttl?,
        nameservers: nameservers?,
        hostmaster: hostmaster?,
        default_region: default_region?,
        geoip: geoip?,
        regions: regions?,
        names,
    })
}

/// Gives `code` (a block, country or continent) to region `id` and adds it to the region's
/// `rule`, unless an earlier region has it in `taken`: then that is an error at `at`, and false.
fn claim<K: Ord + Clone + fmt::Display>(
    c: &mut Collector,
    at: &str,
    code: K,
    id: &RegionId,
    taken: &mut BTreeMap<K, String>,
    rule: &mut Vec<K>,
) -> bool {
    if let Some(other) = taken.get(&code) {
        c.push(at, format!("{code} is already in region {other}"));
        return false;
    }
    taken.insert(code.clone(), id.to_string());
    rule.push(code);
    true
}

fn validate_regions(
    c: &mut Collector,
    raw: BTreeMap<String, RawGeoRegion>,
) -> Option<BTreeMap<RegionId, RegionMatch>> {
    let mut regions = BTreeMap::new();
    let mut blocks: BTreeMap<Cidr, String> = BTreeMap::new();
    let mut countries: BTreeMap<String, String> = BTreeMap::new();
    let mut continents: BTreeMap<String, String> = BTreeMap::new();
    let mut ok = true;
    for (name, region) in raw {
        let path = format!("geo.regions.{name}");
        let Some(id) = c.take(&path, RegionId::new(&name)) else {
            ok = false;
            continue;
        };
        let mut rule = RegionMatch::default();
        for (i, text) in region.cidrs.iter().enumerate() {
            let at = format!("{path}.cidrs[{i}]");
            match Cidr::parse(text) {
                Ok(cidr) => ok &= claim(c, &at, cidr, &id, &mut blocks, &mut rule.cidrs),
                Err(e) => {
                    ok = false;
                    c.push(&at, e);
                }
            }
        }
        for (i, text) in region.countries.iter().enumerate() {
            let at = format!("{path}.countries[{i}]");
            let code = text.to_ascii_uppercase();
            if code.len() != 2 || !code.chars().all(|ch| ch.is_ascii_alphabetic()) {
                ok = false;
                c.push(
                    &at,
                    format!("{text:?} is not a two-letter country code (ISO 3166-1, e.g. \"FR\")"),
                );
            } else {
                ok &= claim(c, &at, code, &id, &mut countries, &mut rule.countries);
            }
        }
        for (i, text) in region.continents.iter().enumerate() {
            let at = format!("{path}.continents[{i}]");
            let code = text.to_ascii_uppercase();
            if !CONTINENTS.contains(&code.as_str()) {
                ok = false;
                c.push(
                    &at,
                    format!(
                        "{text:?} is not a continent code (one of {})",
                        CONTINENTS.join(", ")
                    ),
                );
            } else {
                ok &= claim(c, &at, code, &id, &mut continents, &mut rule.continents);
            }
        }
        regions.insert(id, rule);
    }
    ok.then_some(regions)
}

#[cfg(test)]
mod tests;
