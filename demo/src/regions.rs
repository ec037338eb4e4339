//! Simulated regions: each is a loopback block (us 127.1/16, eu 127.2/16, ap 127.3/16), and a
//! matrix of one-way latencies between them.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

/// A region and its loopback block `127.<octet>.0.0/16`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Region {
    pub id: String,
    pub octet: u8,
}

impl Region {
    /// Address `127.<octet>.<hi>.<lo>` in the region's block.
    pub fn addr(&self, hi: u8, lo: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(127, self.octet, hi, lo))
    }

    pub fn block(&self) -> String {
        format!("127.{}.0.0/16", self.octet)
    }
}

/// The region an address belongs to, by its block; `None` outside every block.
pub fn region_of(regions: &[Region], ip: IpAddr) -> Option<&Region> {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, _, _] = v4.octets();
            regions.iter().find(|r| a == 127 && r.octet == b)
        }
        IpAddr::V6(_) => None,
    }
}

/// One-way latency between regions, symmetric; `local` within a region, `site` within the
/// origin's site (the origin and the shields of its region, in one data centre, as a CDN places
/// the shields that guard an origin).
#[derive(Debug, Clone, PartialEq)]
pub struct LatencyMatrix {
    pub local: Duration,
    pub site: Duration,
    /// `(a, b, one-way)`, in either order.
    pub pairs: Vec<(String, String, Duration)>,
}

impl LatencyMatrix {
    /// The demo's default: us–eu 40 ms, us–ap 80 ms, eu–ap 110 ms one way; 1 ms within a region;
    /// none added within the origin's site, where relaying through the link alone takes about
    /// what a data centre's own network does (tens of microseconds).
    pub fn default_demo() -> LatencyMatrix {
        let ms = Duration::from_millis;
        LatencyMatrix {
            local: ms(1),
            site: Duration::ZERO,
            pairs: vec![
                ("us".into(), "eu".into(), ms(40)),
                ("us".into(), "ap".into(), ms(80)),
                ("eu".into(), "ap".into(), ms(110)),
            ],
        }
    }

    /// One-way latency from `a` to `b`; unknown pairs count as local.
    pub fn one_way(&self, a: &str, b: &str) -> Duration {
        if a == b {
            return self.local;
        }
        self.pairs
            .iter()
            .find(|(x, y, _)| (x == a && y == b) || (x == b && y == a))
            .map_or(self.local, |(_, _, d)| *d)
    }
}

/// The default regions, in order.
pub fn default_regions() -> Vec<Region> {
    [("us", 1), ("eu", 2), ("ap", 3)]
        .into_iter()
        .map(|(id, octet)| Region {
            id: id.to_string(),
            octet,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_map_to_their_region_and_latency_is_symmetric() {
        let regions = default_regions();
        let eu = region_of(&regions, "127.2.9.9".parse().unwrap()).unwrap();
        assert_eq!(eu.id, "eu");
        assert!(region_of(&regions, "127.0.0.1".parse().unwrap()).is_none());
        let m = LatencyMatrix::default_demo();
        assert_eq!(m.one_way("ap", "us"), Duration::from_millis(80));
        assert_eq!(m.one_way("eu", "eu"), Duration::from_millis(1));
    }
}
