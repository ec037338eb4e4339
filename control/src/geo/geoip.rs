//! Client → region by a MaxMind GeoIP2/GeoLite2 database: the country (or, failing that, the
//! continent) of the client's address names a region slot.
//!
//! The database is read whole into memory and swapped atomically. A background task (see
//! [`super::GeoService`]) calls [`GeoIp::check`] every `reload_interval`, which reloads the file
//! when its modification time or size changed; a file that cannot be read or parsed keeps the
//! last good database, and the reason is logged once per change of the file.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwapOption;
use serde::Deserialize;

use super::metrics::GeoMetrics;

/// Region slots by country and continent code.
#[derive(Debug, Clone, Default)]
pub struct GeoIpRules {
    countries: HashMap<[u8; 2], u16>,
    continents: HashMap<[u8; 2], u16>,
}

impl GeoIpRules {
    pub fn new<'a>(
        countries: impl IntoIterator<Item = (&'a str, u16)>,
        continents: impl IntoIterator<Item = (&'a str, u16)>,
    ) -> GeoIpRules {
        let collect = |codes: &mut dyn Iterator<Item = (&'a str, u16)>| {
            codes
                .filter_map(|(code, slot)| Some((code_key(code)?, slot)))
                .collect()
        };
        GeoIpRules {
            countries: collect(&mut countries.into_iter()),
            continents: collect(&mut continents.into_iter()),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.countries.is_empty() && self.continents.is_empty()
    }

    /// The slot of a client with this country and continent: the country's, else the
    /// continent's.
    pub fn region(&self, country: Option<&str>, continent: Option<&str>) -> Option<u16> {
        let find = |map: &HashMap<[u8; 2], u16>, code: Option<&str>| {
            code.and_then(code_key).and_then(|k| map.get(&k).copied())
        };
        find(&self.countries, country).or_else(|| find(&self.continents, continent))
    }
}

/// A two-letter code as a key, upper case.
fn code_key(code: &str) -> Option<[u8; 2]> {
    match code.as_bytes() {
        [a, b] => Some([a.to_ascii_uppercase(), b.to_ascii_uppercase()]),
        _ => None,
    }
}

/// The parts of a GeoIP2 Country or City record that place a client.
#[derive(Debug, Default, Deserialize)]
struct Record<'a> {
    #[serde(borrow, default)]
    country: Option<Country<'a>>,
    #[serde(borrow, default)]
    registered_country: Option<Country<'a>>,
    #[serde(borrow, default)]
    continent: Option<Continent<'a>>,
}

#[derive(Debug, Default, Deserialize)]
struct Country<'a> {
    #[serde(borrow, default)]
    iso_code: Option<&'a str>,
}

#[derive(Debug, Default, Deserialize)]
struct Continent<'a> {
    #[serde(borrow, default)]
    code: Option<&'a str>,
}

/// What the database says about an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GeoMatch {
    /// The region slot, if a rule names the address's country or continent.
    pub slot: Option<u16>,
    /// Prefix length of the database's network holding the address.
    pub scope: u8,
}

struct Loaded {
    reader: maxminddb::Reader<Vec<u8>>,
}

/// A GeoIP database that follows its file.
pub struct GeoIp {
    path: PathBuf,
    rules: GeoIpRules,
    current: ArcSwapOption<Loaded>,
    /// What the file looked like when last tried, so an unchanged file is not re-read and a bad
    /// one is reported once.
    tried: Mutex<Option<Seen>>,
    metrics: GeoMetrics,
}

/// The file as a check saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    File(SystemTime, u64),
    Unreadable(std::io::ErrorKind),
}

/// The outcome of one check of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reload {
    Unchanged,
    Loaded,
    Failed(String),
}

impl GeoIp {
    /// A reader of the database at `path` that has not tried to load it yet.
    fn unloaded(path: &Path, rules: GeoIpRules, metrics: GeoMetrics) -> GeoIp {
        GeoIp {
            path: path.to_path_buf(),
            rules,
            current: ArcSwapOption::empty(),
            tried: Mutex::new(None),
            metrics,
        }
    }

    /// Loads the database at `path` if it can; a failure is logged and retried when the file
    /// changes.
    pub fn open(path: &Path, rules: GeoIpRules, metrics: GeoMetrics) -> GeoIp {
        let geoip = GeoIp::unloaded(path, rules, metrics);
        geoip.check();
        geoip
    }

    pub fn is_loaded(&self) -> bool {
        self.current.load().is_some()
    }

    /// Looks `addr` up; `None` when no database is loaded.
    pub fn lookup(&self, addr: IpAddr) -> Option<GeoMatch> {
        let loaded = self.current.load();
        let loaded = loaded.as_ref()?;
        let Ok(result) = loaded.reader.lookup(addr) else {
            return Some(GeoMatch {
                slot: None,
                scope: 0,
            });
        };
        let scope = result.network().map_or(0, |n| n.prefix());
        let record = result.decode::<Record<'_>>().ok().flatten();
        let slot = record.and_then(|r| {
            let country = r
                .country
                .and_then(|c| c.iso_code)
                .or_else(|| r.registered_country.and_then(|c| c.iso_code));
            self.rules.region(country, r.continent.and_then(|c| c.code))
        });
        Some(GeoMatch { slot, scope })
    }

    /// Opens the database at `path`, or fails saying why: for a reload that names a new file,
    /// which must not leave clients unplaced.
    pub fn try_open(path: &Path, rules: GeoIpRules, metrics: GeoMetrics) -> Result<GeoIp, String> {
        let geoip = GeoIp::unloaded(path, rules, metrics);
        match geoip.attempt() {
            Some(Err(e)) => {
                geoip
                    .metrics
                    .geoip_loads
                    .with_label_values(&["error"])
                    .inc();
                Err(e)
            }
            _ => {
                geoip.metrics.geoip_loads.with_label_values(&["ok"]).inc();
                tracing::info!(path = %geoip.path.display(), "GeoIP database loaded");
                Ok(geoip)
            }
        }
    }

    /// The same database, as loaded now, placing clients by other rules: a reload that changes
    /// only the rules keeps the last good database.
    pub fn with_rules(&self, rules: GeoIpRules) -> GeoIp {
        let tried = self.tried.lock().unwrap_or_else(|p| p.into_inner()).clone();
        GeoIp {
            path: self.path.clone(),
            rules,
            current: ArcSwapOption::new(self.current.load_full()),
            tried: Mutex::new(tried),
            metrics: self.metrics.clone(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Loads the file if its modification time or size changed since the last attempt
    /// (`None`: unchanged).
    fn attempt(&self) -> Option<Result<(), String>> {
        let seen = match std::fs::metadata(&self.path).and_then(|m| Ok((m.modified()?, m.len()))) {
            Ok((modified, len)) => Seen::File(modified, len),
            Err(e) => Seen::Unreadable(e.kind()),
        };
        let mut tried = self.tried.lock().unwrap_or_else(|p| p.into_inner());
        if tried.as_ref() == Some(&seen) {
            return None;
        }
        *tried = Some(seen);
        Some(self.load())
    }

    /// Reloads the file if its modification time or size changed since the last attempt.
    pub fn check(&self) -> Reload {
        let Some(outcome) = self.attempt() else {
            return Reload::Unchanged;
        };
        match outcome {
            Ok(()) => {
                self.metrics.geoip_loads.with_label_values(&["ok"]).inc();
                tracing::info!(path = %self.path.display(), "GeoIP database loaded");
                Reload::Loaded
            }
            Err(e) => {
                self.metrics.geoip_loads.with_label_values(&["error"]).inc();
                if self.is_loaded() {
                    tracing::warn!(error = %e, "GeoIP database not reloaded; keeping the last good one");
                } else {
                    tracing::error!(error = %e, "GeoIP database not loaded; clients are placed by address blocks only");
                }
                Reload::Failed(e)
            }
        }
    }

    fn load(&self) -> Result<(), String> {
        let bytes = std::fs::read(&self.path)
            .map_err(|e| format!("cannot read {}: {e}", self.path.display()))?;
        let reader = maxminddb::Reader::from_source(bytes)
            .map_err(|e| format!("{} is not a MaxMind database: {e}", self.path.display()))?;
        // A database that cannot answer a lookup is as bad as one that cannot be opened.
        if let Err(e) = reader.lookup(IpAddr::from([127, 0, 0, 1])) {
            return Err(format!("{}: lookups fail: {e}", self.path.display()));
        }
        self.current.store(Some(Arc::new(Loaded { reader })));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use maxminddb_writer::metadata::IpVersion;
    use maxminddb_writer::paths::IpAddrWithMask;
    use maxminddb_writer::Database;
    use std::collections::BTreeMap;

    /// A GeoIP2-Country-shaped database: `(network, country, continent)`.
    fn database(rows: &[(&str, Option<&str>, &str)]) -> Vec<u8> {
        let mut db = Database::default();
        db.metadata.ip_version = IpVersion::V6;
        db.metadata.binary_format_major_version = 2;
        db.metadata.database_type = "Verge-Test-Country".into();
        for (network, country, continent) in rows {
            let mut record = BTreeMap::new();
            record.insert("continent", BTreeMap::from([("code", *continent)]));
            if let Some(country) = country {
                record.insert("country", BTreeMap::from([("iso_code", *country)]));
            }
            let data = db.insert_value(record).unwrap();
            db.insert_node(network.parse::<IpAddrWithMask>().unwrap(), data);
        }
        db.write_to(Vec::new()).unwrap()
    }

    fn rules() -> GeoIpRules {
        GeoIpRules::new([("FR", 1)], [("EU", 2), ("AS", 3)])
    }

    fn metrics() -> GeoMetrics {
        GeoMetrics::new(&prometheus::Registry::new()).unwrap()
    }

    fn slot(g: &GeoIp, addr: &str) -> Option<u16> {
        g.lookup(addr.parse().unwrap()).and_then(|m| m.slot)
    }

    #[test]
    fn a_database_places_clients_by_country_then_continent() {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("geo.mmdb");
        std::fs::write(
            &path,
            database(&[
                ("::10.0.0.0/104", Some("FR"), "EU"),
                ("::11.0.0.0/104", Some("DE"), "EU"),
                ("::12.0.0.0/104", None, "AS"),
                ("::13.0.0.0/104", Some("BR"), "SA"),
            ]),
        )
        .unwrap();
        let g = GeoIp::open(&path, rules(), metrics());
        assert!(g.is_loaded());
        assert_eq!(slot(&g, "10.1.2.3"), Some(1));
        assert_eq!(slot(&g, "11.1.2.3"), Some(2));
        assert_eq!(slot(&g, "12.1.2.3"), Some(3));
        assert_eq!(slot(&g, "13.1.2.3"), None);
        assert_eq!(slot(&g, "14.1.2.3"), None);
        assert_eq!(g.lookup("10.1.2.3".parse().unwrap()).unwrap().scope, 8);
    }

    #[test]
    fn a_changed_file_is_reloaded_and_a_bad_one_keeps_the_last_good() {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("geo.mmdb");
        std::fs::write(&path, database(&[("::10.0.0.0/104", Some("FR"), "EU")])).unwrap();
        let m = metrics();
        let g = GeoIp::open(&path, rules(), m.clone());
        assert_eq!(g.check(), Reload::Unchanged);
        // A new version (different size) moves 10/8 to Asia.
        std::fs::write(
            &path,
            database(&[
                ("::10.0.0.0/104", Some("JP"), "AS"),
                ("::99.0.0.0/104", None, "AS"),
            ]),
        )
        .unwrap();
        assert_eq!(g.check(), Reload::Loaded);
        assert_eq!(slot(&g, "10.1.2.3"), Some(3));
        // Garbage: reported once, the last good database stays.
        std::fs::write(&path, b"not a database").unwrap();
        assert!(matches!(g.check(), Reload::Failed(e) if e.contains("not a MaxMind database")));
        assert_eq!(g.check(), Reload::Unchanged);
        assert_eq!(slot(&g, "10.1.2.3"), Some(3));
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(g.check(), Reload::Failed(e) if e.contains("cannot read")));
        assert_eq!(slot(&g, "10.1.2.3"), Some(3));
        assert_eq!(m.geoip_loads.with_label_values(&["ok"]).get(), 2);
        assert_eq!(m.geoip_loads.with_label_values(&["error"]).get(), 2);
    }

    #[test]
    fn new_rules_keep_the_loaded_database_and_a_new_file_must_load() {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("geo.mmdb");
        std::fs::write(&path, database(&[("::10.0.0.0/104", Some("FR"), "EU")])).unwrap();
        let g = GeoIp::open(&path, rules(), metrics());
        // The file goes bad after it was loaded: new rules still place by the good database.
        std::fs::write(&path, b"not a database").unwrap();
        let moved = g.with_rules(GeoIpRules::new([("FR", 5)], []));
        assert_eq!(slot(&moved, "10.1.2.3"), Some(5));
        assert_eq!(moved.path(), path.as_path());
        assert!(matches!(moved.check(), Reload::Failed(_)));
        assert_eq!(slot(&moved, "10.1.2.3"), Some(5));

        let bad = GeoIp::try_open(&path, rules(), metrics()).err().unwrap();
        assert!(bad.contains("not a MaxMind database"), "{bad}");
        let missing = dir.path().join("none.mmdb");
        let gone = GeoIp::try_open(&missing, rules(), metrics()).err().unwrap();
        assert!(gone.contains("cannot read"), "{gone}");
        std::fs::write(&missing, database(&[("::10.0.0.0/104", Some("FR"), "EU")])).unwrap();
        let good = GeoIp::try_open(&missing, rules(), metrics()).unwrap();
        assert_eq!(slot(&good, "10.1.2.3"), Some(1));
    }

    #[test]
    fn a_missing_file_at_start_means_no_database_until_it_appears() {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("later.mmdb");
        let g = GeoIp::open(&path, rules(), metrics());
        assert!(!g.is_loaded());
        assert_eq!(g.lookup("10.0.0.1".parse().unwrap()), None);
        std::fs::write(&path, database(&[("::10.0.0.0/104", Some("FR"), "EU")])).unwrap();
        assert_eq!(g.check(), Reload::Loaded);
        assert_eq!(slot(&g, "10.0.0.1"), Some(1));
    }

    #[test]
    fn the_country_wins_over_the_continent_and_codes_ignore_case() {
        let rules = GeoIpRules::new([("FR", 1), ("us", 0)], [("EU", 2), ("NA", 0)]);
        assert_eq!(rules.region(Some("fr"), Some("EU")), Some(1));
        assert_eq!(rules.region(Some("DE"), Some("EU")), Some(2));
        assert_eq!(rules.region(Some("US"), None), Some(0));
        assert_eq!(rules.region(None, Some("na")), Some(0));
        assert_eq!(rules.region(Some("JP"), Some("AS")), None);
        assert_eq!(rules.region(Some("FRA"), None), None);
        assert_eq!(rules.region(None, None), None);
    }
}
