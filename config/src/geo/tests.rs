//! `[geo]`: validation through whole control files, and the DNS name and share types.

use super::*;
use crate::ControlConfig;

const BASE: &str = r#"
    [controller]
    data_dir = "/tmp/verge-control"
    token = "0123456789abcdef"
"#;

fn parse(geo: &str) -> Result<GeoConfig, crate::ConfigErrors> {
    ControlConfig::from_toml(&format!("{BASE}\n{geo}"))
        .map(|c| c.geo.expect("a [geo] table was given"))
}

#[test]
fn a_control_file_without_geo_has_none() {
    assert_eq!(ControlConfig::from_toml(BASE).unwrap().geo, None);
}

#[test]
fn a_small_geo_table_takes_the_defaults() {
    let geo = parse(
        r#"
        [geo]
        zone = "Verge.Test."
        dns_listen = "127.0.0.1:0"
        default_region = "us"
        [geo.regions.eu]
        cidrs = ["127.2.0.0/16", "2001:db8::/32"]
        countries = ["fr"]
        continents = ["eu"]
        [geo.names."cdn.verge.test"]
        "#,
    )
    .unwrap();
    assert_eq!(geo.zone.as_str(), "verge.test");
    assert_eq!(geo.ttl, Duration::from_secs(30));
    assert_eq!(geo.http_listen, None);
    assert_eq!(geo.dns_max_concurrent_queries, 1024);
    assert_eq!(geo.nameservers[0].as_str(), "ns1.verge.test");
    assert_eq!(geo.hostmaster.as_str(), "hostmaster.verge.test");
    let eu = &geo.regions[&RegionId::new("eu").unwrap()];
    assert_eq!(eu.cidrs[1].to_string(), "2001:db8::/32");
    assert_eq!(
        (eu.countries[0].as_str(), eu.continents[0].as_str()),
        ("FR", "EU")
    );
    let policy = geo.names[&DnsName::new("cdn.verge.test").unwrap()];
    assert_eq!(policy.max_answers, 2);
    assert_eq!(policy.min_healthy_share.thousandths(), 500);
    assert_eq!(geo.geoip, None);
}

#[test]
fn every_bad_geo_value_is_reported_with_its_key() {
    let errors = parse(
        r#"
        [geo]
        zone = "bad zone"
        dns_listen = "nowhere"
        dns_max_concurrent_queries = 0
        ttl = "2d"
        default_region = "u s"
        geoip_db = ""
        [geo.regions.us]
        cidrs = ["127.1.0.1/16", "127.9.0.0/40", "10.0.0.0/8"]
        countries = ["USA"]
        continents = ["XX"]
        [geo.regions.eu]
        cidrs = ["10.0.0.0/8"]
        countries = ["us"]
        [geo.names."cdn.other.test"]
        max_answers = 9
        min_healthy_share = 1.5
        "#,
    )
    .unwrap_err();
    for key in [
        "geo.zone",
        "geo.dns_listen",
        "geo.dns_max_concurrent_queries",
        "geo.ttl",
        "geo.default_region",
        "geo.geoip_db",
        "geo.regions.us.cidrs[0]",
        "geo.regions.us.cidrs[1]",
        "geo.regions.us.countries[0]",
        "geo.regions.us.continents[0]",
        "geo.regions.us.cidrs[2]",
        "geo.names.\"cdn.other.test\".max_answers",
        "geo.names.\"cdn.other.test\".min_healthy_share",
    ] {
        assert!(errors.mentions(key), "{key} not in {errors}");
    }
    assert!(
        errors.to_string().contains("did you mean 127.1.0.0/16"),
        "{errors}"
    );
}

#[test]
fn names_must_be_in_the_zone_and_something_must_be_served() {
    let errors = parse(
        r#"
        [geo]
        zone = "verge.test"
        default_region = "us"
        [geo.names."cdn.other.test"]
        "#,
    )
    .unwrap_err();
    assert!(errors.mentions("geo.dns_listen"), "{errors}");
    assert!(errors.mentions("geo.names.\"cdn.other.test\""), "{errors}");
    let none = parse(
        "[geo]\nzone = \"verge.test\"\nhttp_listen = \"127.0.0.1:0\"\ndefault_region = \"us\"\n",
    )
    .unwrap_err();
    assert!(none.mentions("geo.names"), "{none}");
}

#[test]
fn dns_names_are_checked_and_compared_by_zone() {
    let zone = DnsName::new("verge.test").unwrap();
    assert!(DnsName::new("cdn.verge.test").unwrap().is_within(&zone));
    assert!(zone.is_within(&zone));
    assert!(!DnsName::new("xverge.test").unwrap().is_within(&zone));
    assert!(DnsName::new("a..b").is_err());
    assert!(DnsName::new(&"a".repeat(64)).is_err());
    assert!(DnsName::new("").is_err());
}

#[test]
fn shares_compare_in_whole_numbers() {
    let half = Share::from_thousandths(500);
    assert!(half.exceeds(1, 3));
    assert!(!half.exceeds(1, 2));
    assert!(!half.exceeds(0, 0));
    assert!(!Share::from_thousandths(0).exceeds(0, 4));
}

#[test]
fn the_control_example_parses_with_its_geo_table() {
    let text = include_str!("../../examples/control.toml");
    let config = ControlConfig::from_toml(text).unwrap_or_else(|e| panic!("{e}"));
    let geo = config.geo.expect("the example has a [geo] table");
    assert_eq!(geo.default_region.as_str(), "us");
    assert_eq!(geo.regions.len(), 3);
    assert!(geo
        .names
        .contains_key(&DnsName::new("cdn.verge.test").unwrap()));
}
