//! The `[geo]` table control's geo tests and benches steer with, written once: the integration
//! tests take it through `geo_support`; the unit tests (`src/geo/tests.rs`) and the benches
//! (`benches/fixture`) include this file by `#[path]`.

// Each includer uses a different part of this file.
#![allow(dead_code)]

use verge_config::geo::GeoConfig;
use verge_config::ControlConfig;

/// `[geo]` for zone `verge.test` with DNS and HTTP steering on ephemeral ports, clients placed
/// by block — 127.1/16 in us, 127.2/16 (and 2001:db8:2::/48) in eu, 127.3/16 in ap — and in us
/// when no block holds them; then `more`, further keys of `[geo]` as dotted keys (`ttl = "5s"`,
/// `names."cdn.verge.test".max_answers = 2`).
pub fn geo_table(more: &str) -> String {
    format!(
        r#"
[geo]
zone = "verge.test"
dns_listen = "127.0.0.1:0"
http_listen = "127.0.0.1:0"
default_region = "us"
regions.us.cidrs = ["127.1.0.0/16"]
regions.eu.cidrs = ["127.2.0.0/16", "2001:db8:2::/48"]
regions.ap.cidrs = ["127.3.0.0/16"]
{more}
"#
    )
}

/// [`geo_table`]`(more)` as control parses it.
pub fn geo_config(more: &str) -> GeoConfig {
    let text = format!(
        "[controller]\ndata_dir = \"/tmp/verge-geo\"\ntoken = \"0123456789abcdef\"\n{}",
        geo_table(more)
    );
    ControlConfig::from_toml(&text)
        .unwrap_or_else(|e| panic!("the geo fixture is invalid: {e}"))
        .geo
        .unwrap_or_else(|| panic!("the geo fixture has no [geo]"))
}
