//! What does one geo steering decision cost, against a bare hash-map lookup measured in the
//! same run? The target is under 2 µs for a decision, with the metrics counted.
//!
//! - `baseline/hashmap_get`: `HashMap<u32, u16>::get` — the cheapest "which region" imaginable;
//! - `cidr/lookup_1k_blocks`: longest-prefix match over 1,000 address blocks;
//! - `plan/decide_*`: the pure policy over a 3-region, 24-edge plan (local answer, failover
//!   past a dead region, panic with nothing healthy);
//! - `steering/locate_and_decide`: what a DNS query pays — place the client, load the plan
//!   (checking the table channel for a newer table), decide, count.
//!
//! Run: `cargo bench -p verge-control --bench steering`.

mod fixture;

use std::collections::HashMap;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{criterion_group, criterion_main, Criterion};
use fixture::{region, table, REGIONS};
use prometheus::Registry;
use verge_config::geo::{Cidr, NamePolicy, Share};
use verge_config::RegionId;
use verge_control::geo::cidr::CidrTable;
use verge_control::geo::metrics::GeoMetrics;
use verge_control::geo::policy::{Family, Plan};
use verge_control::geo::steering::Steering;

fn blocks(n: u32) -> Vec<(Cidr, u16)> {
    (0..n)
        .map(|i| {
            let addr = Ipv4Addr::from(0x0a00_0000 + (i << 12));
            let cidr = Cidr {
                addr: IpAddr::V4(addr),
                len: 20,
            };
            (cidr, (i % 3) as u16)
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let map: HashMap<u32, u16> = (0..1000u32).map(|i| (0x0a00_0000 + (i << 12), 1)).collect();
    let key = 0x0a00_0000u32 + (500 << 12);
    c.bench_function("baseline/hashmap_get", |b| {
        b.iter(|| black_box(map.get(black_box(&key))))
    });

    let cidr = CidrTable::new(blocks(1000));
    let addr = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + (500 << 12) + 7));
    c.bench_function("cidr/lookup_1k_blocks", |b| {
        b.iter(|| black_box(cidr.lookup(black_box(addr))))
    });

    let metrics = GeoMetrics::new(&Registry::new()).expect("metrics");
    let slots: Vec<RegionId> = REGIONS.iter().map(|r| region(r)).collect();
    let policy = NamePolicy {
        max_answers: 2,
        min_healthy_share: Share::from_thousandths(500),
    };
    let healthy = Plan::build(&table(&[]), &slots, &region("us"), &metrics);
    let us_down = Plan::build(&table(&["us"]), &slots, &region("us"), &metrics);
    let all_down = Plan::build(&table(&["us", "eu", "ap"]), &slots, &region("us"), &metrics);
    let mut seed = 0u64;
    for (name, plan) in [
        ("plan/decide_local", &healthy),
        ("plan/decide_failover", &us_down),
        ("plan/decide_panic", &all_down),
    ] {
        c.bench_function(name, |b| {
            b.iter(|| {
                seed += 1;
                black_box(plan.decide(2, policy, Family::V4, seed))
            })
        });
    }

    let config = fixture::geo_config();
    // As control runs it: the plan follows a watch channel of tables.
    let (_tables, receiver) = tokio::sync::watch::channel(std::sync::Arc::new(table(&[])));
    let steering = Steering::following(&config, receiver, metrics.clone());
    let client = IpAddr::V4(Ipv4Addr::new(127, 2, 3, 4));
    let name = steering.name("cdn.verge.test").expect("name");
    c.bench_function("steering/locate_and_decide", |b| {
        b.iter(|| {
            let located = steering.locate(black_box(client), false);
            let plan = steering.plan();
            black_box(steering.decide(&plan, name, &located, Family::V4))
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
