//! Where an HA demo's control replicas and etcd members listen (`verge demo --ha`), before
//! anything starts. Pure: no sockets.
//!
//! They are processes of their own on fixed ports, so each takes an address of its own in a
//! block `127.0.B.0/24` clear of the regions: replica `i` at `127.0.B.i`, etcd member `i` at
//! `127.0.B.(10+i)`. Two HA demos side by side take two blocks.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::time::Duration;

/// Control replicas of an HA demo.
pub const REPLICAS: usize = 3;
/// Members of an HA demo's etcd cluster.
pub const ETCD_MEMBERS: usize = 3;
/// The blocks `127.0.B.0/24` an HA demo may take: the first with every address free, so that
/// two HA demos can run side by side. Clear of the regions (`127.1–3.0.0/16`) and of the
/// test harness's etcd clusters (`127.200.0.0` and up).
pub const HA_BLOCKS: RangeInclusive<u8> = 10..=19;
/// A replica's lease: how long after it is killed another replica leads (the least
/// `store.lease_ttl` takes).
pub const REPLICA_LEASE: Duration = Duration::from_secs(2);
/// A replica's ports on its own address: nodes, admin API, HTTP steering, GeoDNS.
const REPLICA_PORTS: [u16; 4] = [7000, 7071, 7072, 5300];
pub const ETCD_CLIENT_PORT: u16 = 2379;
pub const ETCD_PEER_PORT: u16 = 2380;

/// Where an HA demo's replicas and etcd members are: block `127.0.B.0/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HaPlan {
    pub block: u8,
}

/// One control replica: its name and the addresses it listens on itself (nodes reach its node
/// listener through a delay link in the origin's region).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaPlan {
    /// `control-1`, `control-2`, …: its `store.replica`.
    pub name: String,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub steering: SocketAddr,
    pub dns: SocketAddr,
}

impl HaPlan {
    fn ip(&self, last: u8) -> Ipv4Addr {
        Ipv4Addr::new(127, 0, self.block, last)
    }

    pub fn replicas(&self) -> Vec<ReplicaPlan> {
        (1..=REPLICAS as u8)
            .map(|i| {
                let [listen, admin, steering, dns] =
                    REPLICA_PORTS.map(|port| SocketAddr::new(IpAddr::V4(self.ip(i)), port));
                ReplicaPlan {
                    name: format!("control-{i}"),
                    listen,
                    admin,
                    steering,
                    dns,
                }
            })
            .collect()
    }

    /// The etcd members' addresses, each listening for clients on [`ETCD_CLIENT_PORT`] and
    /// for its peers on [`ETCD_PEER_PORT`].
    pub fn etcd_members(&self) -> Vec<Ipv4Addr> {
        (1..=ETCD_MEMBERS as u8).map(|i| self.ip(10 + i)).collect()
    }

    /// Every TCP address the plan's processes listen on (the replicas' DNS listens on UDP too).
    pub fn tcp_addrs(&self) -> Vec<SocketAddr> {
        let replicas = self
            .replicas()
            .into_iter()
            .flat_map(|r| [r.listen, r.admin, r.steering, r.dns]);
        let etcd = self.etcd_members().into_iter().flat_map(|ip| {
            [ETCD_CLIENT_PORT, ETCD_PEER_PORT].map(|port| SocketAddr::new(IpAddr::V4(ip), port))
        });
        replicas.chain(etcd).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ha_replicas_and_etcd_members_have_addresses_of_their_own_in_the_block() {
        let plan = HaPlan { block: 10 };
        let replicas = plan.replicas();
        let names: Vec<&str> = replicas.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["control-1", "control-2", "control-3"]);
        assert_eq!(replicas[1].admin.to_string(), "127.0.10.2:7071");
        assert_eq!(replicas[2].listen.to_string(), "127.0.10.3:7000");
        let members: Vec<String> = plan
            .etcd_members()
            .iter()
            .map(|ip| ip.to_string())
            .collect();
        assert_eq!(members, ["127.0.10.11", "127.0.10.12", "127.0.10.13"]);
        let addrs = plan.tcp_addrs();
        assert_eq!(addrs.len(), REPLICAS * 4 + ETCD_MEMBERS * 2);
        let distinct: std::collections::HashSet<_> = addrs.iter().collect();
        assert_eq!(distinct.len(), addrs.len());
        assert!(HA_BLOCKS.clone().all(|b| b != 1 && b != 2 && b != 3));
    }
}
