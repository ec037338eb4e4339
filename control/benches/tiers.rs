//! What planning tiers by latency adds to computing a routing table: `routing::compute` for a
//! large fleet with the `auto` topology and a full measured matrix, against the same table with
//! the `global` topology (every region gets every shield: the plan's own work is next to none).
//!
//! Fleet: 20 regions, 50 edges each (1,000 edges) and 5 shields each (100 shields); every
//! region has measured round trips to every shield, every shield one to the origin.
//!
//! Run with `cargo bench -p verge-control --bench tiers`; compare the two lines of one run.

use std::collections::BTreeMap;

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use verge_config::tiers::{LatencyMatrix, TiersConfig, Topology};
use verge_config::wire::{NodeEntry, NodeRole};
use verge_config::{NodeId, RegionId};
use verge_control::routing::{compute, Inputs};

const REGIONS: usize = 20;
const EDGES: usize = 50;
const SHIELDS: usize = 5;

fn region(r: usize) -> RegionId {
    RegionId::new(&format!("r{r:02}")).expect("valid region")
}

fn node(id: String, role: NodeRole, r: usize) -> NodeEntry {
    NodeEntry {
        id: NodeId::new(&id).expect("valid id"),
        role,
        region: region(r),
        data_url: format!("http://{id}:8080"),
        admin_url: format!("http://{id}:9080"),
        weight: 1,
        healthy: true,
    }
}

fn fleet() -> Vec<NodeEntry> {
    let mut nodes = Vec::new();
    for r in 0..REGIONS {
        nodes.extend((0..EDGES).map(|e| node(format!("e-{r}-{e}"), NodeRole::Edge, r)));
        nodes.extend((0..SHIELDS).map(|s| node(format!("s-{r}-{s}"), NodeRole::Shield, r)));
    }
    nodes
}

/// Round trips growing with the distance between region numbers; the origin by region 0.
fn matrix() -> LatencyMatrix {
    let mut m = LatencyMatrix::default();
    for from in 0..REGIONS {
        let row = m.edge_to_shield.entry(region(from)).or_default();
        for to in 0..REGIONS {
            for s in 0..SHIELDS {
                let id = NodeId::new(&format!("s-{to}-{s}")).expect("valid id");
                row.insert(id, 2.0 + 10.0 * from.abs_diff(to) as f64 + s as f64 * 0.1);
            }
        }
    }
    for to in 0..REGIONS {
        for s in 0..SHIELDS {
            let id = NodeId::new(&format!("s-{to}-{s}")).expect("valid id");
            m.shield_to_origin.insert(id, 2.0 + 10.0 * to as f64);
        }
    }
    m
}

fn bench(c: &mut Criterion) {
    let nodes = fleet();
    let latency = matrix();
    let proximity = BTreeMap::new();
    let mut group = c.benchmark_group("routing_table_1000_edges_100_shields");
    for topology in [Topology::Global, Topology::Auto] {
        let tiers = TiersConfig {
            topology,
            ..TiersConfig::default()
        };
        let inputs = Inputs {
            proximity: &proximity,
            rules: &[],
            tiers: &tiers,
            latency: &latency,
        };
        group.bench_function(topology.as_str(), |b| {
            b.iter(|| compute(black_box(nodes.iter().cloned()), black_box(&inputs)))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
