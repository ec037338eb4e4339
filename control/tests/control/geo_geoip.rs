//! GeoIP placement over DNS: a MaxMind database written by the test places clients that no
//! address block does, and a rewritten file is picked up while a broken one is not.

use crate::geo_support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use geo_support::geo_toml::geo_table;
use geo_support::{ip, one_edge_per_region, start_geo_control, wait_until, DnsClient};
use hickory_proto::rr::RecordType;
use maxminddb_writer::metadata::IpVersion;
use maxminddb_writer::paths::IpAddrWithMask;
use maxminddb_writer::Database;

/// Writes a GeoIP2-Country-shaped database of `(IPv4 block, country, continent)`.
#[allow(clippy::unwrap_used)] // test setup
fn write_database(path: &Path, rows: &[(&str, &str, &str)]) {
    let mut db = Database::default();
    db.metadata.ip_version = IpVersion::V6;
    db.metadata.binary_format_major_version = 2;
    db.metadata.database_type = "Verge-Test-Country".into();
    for (block, country, continent) in rows {
        let (addr, len) = block.split_once('/').unwrap();
        let len: u8 = len.parse().unwrap();
        let record = BTreeMap::from([
            ("country", BTreeMap::from([("iso_code", *country)])),
            ("continent", BTreeMap::from([("code", *continent)])),
        ]);
        let data = db.insert_value(record).unwrap();
        let network = format!("::{addr}/{}", 96 + u32::from(len));
        db.insert_node(network.parse::<IpAddrWithMask>().unwrap(), data);
    }
    // Written aside and renamed, as a database updater does.
    let fresh = path.with_extension("new");
    std::fs::write(&fresh, db.write_to(Vec::new()).unwrap()).unwrap();
    std::fs::rename(&fresh, path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_outside_every_block_are_placed_by_the_geoip_database() {
    let dir = tempfile::TempDir::new().unwrap();
    let db = dir.path().join("country.mmdb");
    write_database(
        &db,
        &[("127.4.0.0/16", "FR", "EU"), ("127.5.0.0/16", "JP", "AS")],
    );
    // France and Asia join eu's and ap's blocks; the clients below are in neither.
    let geo = geo_table(&format!(
        "geoip_db = {:?}\ngeoip_reload = \"100ms\"\n\
         regions.eu.countries = [\"FR\"]\nregions.ap.continents = [\"AS\"]\n\
         names.\"cdn.verge.test\".max_answers = 1\n",
        db.display().to_string()
    ));
    let control = start_geo_control(&geo).await;
    let _health = one_edge_per_region(&control).await;
    let france = DnsClient::bind("127.4.0.9", control.dns_addr).await;
    let japan = DnsClient::bind("127.5.0.9", control.dns_addr).await;
    let nowhere = DnsClient::bind("127.6.0.9", control.dns_addr).await;
    let name = "cdn.verge.test.";
    assert_eq!(
        france.addresses(name, RecordType::A).await,
        [ip("127.2.0.1")]
    );
    assert_eq!(
        japan.addresses(name, RecordType::A).await,
        [ip("127.3.0.1")]
    );
    assert_eq!(
        nowhere.addresses(name, RecordType::A).await,
        [ip("127.1.0.1")]
    );
    assert_eq!(
        control
            .metric("verge_geo_clients_total{source=\"geoip\"}")
            .await,
        2.0
    );

    // The file changes: 127.4/16 is now in Japan.
    write_database(&db, &[("127.4.0.0/16", "JP", "AS")]);
    wait_until(
        "the new database to be used",
        Duration::from_secs(5),
        || async { france.addresses(name, RecordType::A).await == [ip("127.3.0.1")] },
    )
    .await;
    // A broken file is not loaded: the last good database stays.
    std::fs::write(&db, b"this is not a database").unwrap();
    wait_until(
        "the broken file to be tried",
        Duration::from_secs(5),
        || async {
            control
                .metric("verge_geo_geoip_loads_total{result=\"error\"}")
                .await
                >= 1.0
        },
    )
    .await;
    assert_eq!(
        france.addresses(name, RecordType::A).await,
        [ip("127.3.0.1")]
    );
}
