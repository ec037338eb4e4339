use super::*;

fn region(id: &str) -> RegionId {
    RegionId::new(id).unwrap()
}

fn node(id: &str) -> NodeId {
    NodeId::new(id).unwrap()
}

/// The demo's world: us, eu, ap; fallbacks by distance; shields in us and eu.
fn proximity() -> BTreeMap<RegionId, Vec<RegionId>> {
    BTreeMap::from([
        (region("us"), vec![region("eu"), region("ap")]),
        (region("eu"), vec![region("us"), region("ap")]),
        (region("ap"), vec![region("us"), region("eu")]),
    ])
}

fn shields(list: &[(&str, &str)]) -> Vec<PlanShield> {
    list.iter()
        .map(|(id, r)| PlanShield {
            id: node(id),
            region: region(r),
        })
        .collect()
}

/// One-way demo latencies (ms) doubled into round trips: us–eu 40, us–ap 80, eu–ap 110,
/// 1 within a region; the origin in us.
fn demo_matrix() -> LatencyMatrix {
    let one_way = |a: &str, b: &str| -> f64 {
        match (a.min(b), a.max(b)) {
            (x, y) if x == y => 1.0,
            ("eu", "us") => 40.0,
            ("ap", "us") => 80.0,
            ("ap", "eu") => 110.0,
            _ => unreachable!(),
        }
    };
    let shields = [("shield-us-1", "us"), ("shield-eu-1", "eu")];
    let mut m = LatencyMatrix::default();
    for edge in ["us", "eu", "ap"] {
        let row = m.edge_to_shield.entry(region(edge)).or_default();
        for (id, r) in shields {
            row.insert(node(id), 2.0 * one_way(edge, r));
        }
    }
    for (id, r) in shields {
        m.shield_to_origin.insert(node(id), 2.0 * one_way(r, "us"));
    }
    m
}

fn planned(topology: Topology, latency: &LatencyMatrix, origin: Option<&str>) -> Vec<String> {
    planned_with(topology, 1, latency, origin).0
}

/// Each region's line, and the upper tier.
fn planned_with(
    topology: Topology,
    levels: u8,
    latency: &LatencyMatrix,
    origin: Option<&str>,
) -> (Vec<String>, Vec<String>) {
    let tiers = TiersConfig {
        topology,
        origin_region: origin.map(region),
        levels,
        ..TiersConfig::default()
    };
    let regions = [region("us"), region("eu"), region("ap")];
    let list = shields(&[("shield-us-1", "us"), ("shield-eu-1", "eu")]);
    let proximity = proximity();
    let plan = plan(&PlanInput {
        tiers: &tiers,
        regions: &regions,
        shields: &list,
        proximity: &proximity,
        latency,
    });
    let lines = plan
        .regions
        .iter()
        .map(|r| {
            let ids: Vec<&str> = r.shields.iter().map(NodeId::as_str).collect();
            format!("{}:{}:{}", r.region, r.basis, ids.join("+"))
        })
        .collect();
    (lines, plan.upper.iter().map(NodeId::to_string).collect())
}

#[test]
fn each_topology_picks_its_shields_from_a_measured_matrix() {
    let m = demo_matrix();
    let table = [
        (
            Topology::Global,
            [
                "us:measured:shield-us-1+shield-eu-1",
                "eu:measured:shield-us-1+shield-eu-1",
                "ap:measured:shield-us-1+shield-eu-1",
            ],
        ),
        (
            Topology::Regional,
            [
                "us:measured:shield-us-1",
                "eu:measured:shield-eu-1",
                // ap has none: the nearest region with shields.
                "ap:measured:shield-us-1",
            ],
        ),
        (
            Topology::OriginNear,
            [
                "us:measured:shield-us-1",
                "eu:measured:shield-us-1",
                "ap:measured:shield-us-1",
            ],
        ),
        (
            // ap: us shield 160 + 2 against eu shield 220 + 80. eu: 2 + 80 against 80 + 2,
            // a tie, so the shield nearer the origin, shared with the other regions.
            Topology::Auto,
            [
                "us:measured:shield-us-1",
                "eu:measured:shield-us-1",
                "ap:measured:shield-us-1",
            ],
        ),
    ];
    for (topology, expected) in table {
        assert_eq!(planned(topology, &m, None), expected, "{topology}");
    }
}

#[test]
fn auto_follows_the_measured_costs_not_the_configured_regions() {
    // The origin moves next to eu: eu's shield is now 2 ms from it, us's 80.
    let mut m = demo_matrix();
    m.shield_to_origin.insert(node("shield-us-1"), 80.0);
    m.shield_to_origin.insert(node("shield-eu-1"), 2.0);
    assert_eq!(
        planned(Topology::Auto, &m, Some("us")),
        [
            // us: 2 + 80 against 80 + 2: a tie, and eu's shield is nearer the origin.
            "us:measured:shield-eu-1",
            "eu:measured:shield-eu-1",
            // ap: 160 + 80 = 240 against 220 + 2 = 222.
            "ap:measured:shield-eu-1",
        ]
    );
    // A far origin behind both, ap close to us: ap keeps to the us shield, eu to its own.
    let mut m = demo_matrix();
    m.shield_to_origin.insert(node("shield-us-1"), 300.0);
    m.shield_to_origin.insert(node("shield-eu-1"), 300.0);
    assert_eq!(
        planned(Topology::Auto, &m, None),
        [
            "us:measured:shield-us-1",
            "eu:measured:shield-eu-1",
            "ap:measured:shield-us-1",
        ]
    );
}

#[test]
fn without_measurements_the_regions_fallback_order_decides() {
    let none = LatencyMatrix::default();
    assert_eq!(
        planned(Topology::Auto, &none, Some("us")),
        [
            "us:proximity:shield-us-1",
            // eu shield: rank 0 + eu→us rank 1; us shield: rank 1 + 0. Tie: nearer the origin.
            "eu:proximity:shield-us-1",
            "ap:proximity:shield-us-1",
        ]
    );
    // No origin region: every shield is as near the origin, so each region its nearest.
    assert_eq!(
        planned(Topology::Auto, &none, None),
        [
            "us:proximity:shield-us-1",
            "eu:proximity:shield-eu-1",
            "ap:proximity:shield-us-1",
        ]
    );
    // One missing measurement is as good as none for that region.
    let mut partial = demo_matrix();
    partial
        .edge_to_shield
        .get_mut(&region("ap"))
        .unwrap()
        .remove(&node("shield-eu-1"));
    assert!(planned(Topology::Auto, &partial, None)[2].starts_with("ap:proximity:"));
}

#[test]
fn no_healthy_shield_leaves_every_region_on_the_origin() {
    let tiers = TiersConfig::default();
    let regions = [region("ap")];
    let plan = plan(&PlanInput {
        tiers: &tiers,
        regions: &regions,
        shields: &[],
        proximity: &proximity(),
        latency: &demo_matrix(),
    });
    assert_eq!(plan.shields_for(&region("ap")), Some(&[][..]));
    assert_eq!(plan.shields_for(&region("mars")), None);
}

/// Each region's line under `auto` with only `healthy` shields up, `max_detour` as given, and
/// the demo's matrix plus, for `direct` regions, their round trip straight to the origin.
fn planned_direct(
    topology: Topology,
    healthy: &[(&str, &str)],
    max_detour: Option<Duration>,
    direct: &[(&str, f64)],
    measured: bool,
) -> Vec<String> {
    let tiers = TiersConfig {
        topology,
        origin_region: Some(region("us")),
        max_detour,
        ..TiersConfig::default()
    };
    let mut latency = if measured {
        demo_matrix()
    } else {
        LatencyMatrix::default()
    };
    for (r, ms) in direct {
        latency.edge_to_origin.insert(region(r), *ms);
    }
    let regions = [region("us"), region("eu"), region("ap")];
    let plan = plan(&PlanInput {
        tiers: &tiers,
        regions: &regions,
        shields: &shields(healthy),
        proximity: &proximity(),
        latency: &latency,
    });
    plan.regions
        .iter()
        .map(|r| {
            let ids: Vec<&str> = r.shields.iter().map(NodeId::as_str).collect();
            format!("{}:{}:{}", r.region, r.basis, ids.join("+"))
        })
        .collect()
}

/// One planning case: the healthy shields, `max_detour`, the regions' direct round trips, and
/// whether the shields' costs are measured; each region's expected line.
struct Case<'a> {
    name: &'a str,
    topology: Topology,
    healthy: &'a [(&'a str, &'a str)],
    max_detour: Option<Duration>,
    direct: &'a [(&'a str, f64)],
    measured: bool,
    expected: [&'a str; 3],
}

#[test]
fn auto_sends_a_region_straight_to_the_origin_only_when_its_shields_are_a_long_detour() {
    let both = [("shield-us-1", "us"), ("shield-eu-1", "eu")];
    let eu_only = [("shield-eu-1", "eu")];
    // Round trips straight to the origin (in us), as the demo's edges measure them.
    let direct = [("us", 2.0), ("eu", 80.0), ("ap", 160.0)];
    let ms = |n| Some(Duration::from_millis(n));
    let default = TiersConfig::default().max_detour;
    assert_eq!(default, ms(20));
    let table = [
        // Every region's shield path is within 2 ms of its direct one: the offload stays.
        Case {
            name: "both shields up",
            topology: Topology::Auto,
            healthy: &both,
            max_detour: default,
            direct: &direct,
            measured: true,
            expected: [
                "us:measured:shield-us-1",
                "eu:measured:shield-us-1",
                "ap:measured:shield-us-1",
            ],
        },
        // us would go 160 ms through eu instead of 2 ms, ap 300 instead of 160; eu's own
        // shield costs it 2 ms.
        Case {
            name: "the shield near the origin down",
            topology: Topology::Auto,
            healthy: &eu_only,
            max_detour: default,
            direct: &direct,
            measured: true,
            expected: ["us:direct:", "eu:measured:shield-eu-1", "ap:direct:"],
        },
        Case {
            name: "no detour allowed",
            topology: Topology::Auto,
            healthy: &both,
            max_detour: ms(0),
            direct: &direct,
            measured: true,
            expected: ["us:direct:", "eu:direct:", "ap:direct:"],
        },
        Case {
            name: "max_detour off",
            topology: Topology::Auto,
            healthy: &eu_only,
            max_detour: None,
            direct: &direct,
            measured: true,
            expected: [
                "us:measured:shield-eu-1",
                "eu:measured:shield-eu-1",
                "ap:measured:shield-eu-1",
            ],
        },
        // ap's edges reported no direct round trip (they may not fetch from the origin).
        Case {
            name: "no direct measurement",
            topology: Topology::Auto,
            healthy: &eu_only,
            max_detour: default,
            direct: &direct[..2],
            measured: true,
            expected: [
                "us:direct:",
                "eu:measured:shield-eu-1",
                "ap:measured:shield-eu-1",
            ],
        },
        Case {
            name: "another topology",
            topology: Topology::Regional,
            healthy: &eu_only,
            max_detour: default,
            direct: &direct,
            measured: true,
            expected: [
                "us:measured:shield-eu-1",
                "eu:measured:shield-eu-1",
                "ap:measured:shield-eu-1",
            ],
        },
        Case {
            name: "proximity only",
            topology: Topology::Auto,
            healthy: &eu_only,
            max_detour: default,
            direct: &direct,
            measured: false,
            expected: [
                "us:proximity:shield-eu-1",
                "eu:proximity:shield-eu-1",
                "ap:proximity:shield-eu-1",
            ],
        },
    ];
    for case in table {
        let line = planned_direct(
            case.topology,
            case.healthy,
            case.max_detour,
            case.direct,
            case.measured,
        );
        assert_eq!(line, case.expected, "{}", case.name);
    }
}

#[test]
fn max_detour_is_checked() {
    let parse = |text: &str| {
        let mut c = Collector::default();
        let raw: RawTiers = toml::from_str(text).unwrap();
        let tiers = validate_tiers(&mut c, Some(raw));
        c.finish(tiers).map_err(|e| e.to_string())
    };
    let detour = |text: &str| parse(text).unwrap().max_detour;
    assert_eq!(
        detour("max_detour = \"5ms\""),
        Some(Duration::from_millis(5))
    );
    assert_eq!(detour("max_detour = \"off\""), None);
    assert_eq!(detour(""), Some(defaults::MAX_DETOUR));
    for bad in ["max_detour = \"soon\"", "max_detour = \"2m\""] {
        let errors = parse(bad).unwrap_err();
        assert!(errors.contains("tiers.max_detour"), "{bad}: {errors}");
    }
    let errors = parse("max_detour = \"soon\"").unwrap_err();
    assert!(errors.contains("nor \"off\""), "{errors}");
    let errors = parse("topology = \"regional\"\nmax_detour = \"5ms\"").unwrap_err();
    assert!(errors.contains("auto only"), "{errors}");
}

#[test]
fn a_change_in_the_direct_round_trip_counts_like_any_other() {
    let mut m = demo_matrix();
    m.edge_to_origin.insert(region("us"), 2.0);
    let mut moved = m.clone();
    moved.edge_to_origin.insert(region("us"), 40.0);
    assert!(m.differs(&moved, 20));
    let mut gone = m.clone();
    gone.edge_to_origin.clear();
    assert!(m.differs(&gone, 20));
}

#[test]
fn small_latency_changes_do_not_count_and_large_ones_do() {
    let m = demo_matrix();
    let mut small = m.clone();
    *small
        .edge_to_shield
        .get_mut(&region("ap"))
        .unwrap()
        .get_mut(&node("shield-us-1"))
        .unwrap() += 10.0;
    assert!(!m.differs(&small, 20), "10 ms on 160 is under 20%");
    let mut large = m.clone();
    large.shield_to_origin.insert(node("shield-eu-1"), 200.0);
    assert!(m.differs(&large, 20));
    let mut fewer = m.clone();
    fewer.shield_to_origin.remove(&node("shield-eu-1"));
    assert!(m.differs(&fewer, 20) && fewer.differs(&m, 20));
    // Under REPLAN_MIN_MS never counts, whatever the share.
    let mut tiny = m.clone();
    tiny.shield_to_origin.insert(node("shield-us-1"), 3.5);
    assert!(!m.differs(&tiny, 1));
}

#[test]
fn topology_names_are_checked() {
    for t in Topology::ALL {
        assert_eq!(t.as_str().parse::<Topology>().unwrap(), t);
    }
    let error = "nearest".parse::<Topology>().unwrap_err();
    assert!(
        error.contains("\"nearest\"") && error.contains("origin-near"),
        "{error}"
    );
}

#[test]
fn two_levels_send_regional_shields_misses_to_the_shields_near_the_origin() {
    let m = demo_matrix();
    let (lines, upper) = planned_with(Topology::Auto, 2, &m, None);
    assert_eq!(
        lines,
        [
            "us:measured:shield-us-1",
            // eu's edges keep to their own shield, whose misses go on to us's.
            "eu:measured:shield-eu-1",
            "ap:measured:shield-us-1",
        ]
    );
    assert_eq!(upper, ["shield-us-1"]);
    let tiers = TierPlan {
        topology: Topology::Auto,
        regions: Vec::new(),
        upper: vec![node("shield-us-1")],
    };
    // Loop protection: the upper shield goes to the origin, never to a lower one or itself.
    assert!(tiers.parents_of(&node("shield-us-1")).is_empty());
    assert_eq!(
        tiers.parents_of(&node("shield-eu-1")),
        [node("shield-us-1")]
    );
    // Regional with two levels, by proximity: the same shape.
    let (lines, upper) = planned_with(Topology::Regional, 2, &LatencyMatrix::default(), Some("us"));
    assert_eq!(lines[1], "eu:proximity:shield-eu-1");
    assert_eq!(upper, ["shield-us-1"]);
    // When every region already uses an upper shield there is one level.
    let only_us = planned_with(Topology::Auto, 2, &m, None);
    assert!(!only_us.1.is_empty());
    let mut near = demo_matrix();
    near.shield_to_origin.insert(node("shield-eu-1"), 2.0);
    let (_, upper) = planned_with(Topology::Auto, 2, &near, None);
    assert!(upper.is_empty(), "both shields are upper ones: {upper:?}");
}

#[test]
fn two_levels_need_a_topology_that_has_a_lower_tier() {
    use crate::ControlConfig;
    let base = "[controller]\ntoken = \"0123456789abcdef0\"\ndata_dir = \"/tmp/x\"\n";
    let ok = format!("{base}[tiers]\ntopology = \"auto\"\nlevels = 2\n");
    assert_eq!(ControlConfig::from_toml(&ok).unwrap().tiers.levels, 2);
    for bad in ["topology = \"global\"\nlevels = 2", "levels = 3"] {
        let errs = ControlConfig::from_toml(&format!("{base}[tiers]\n{bad}\n")).unwrap_err();
        assert!(errs.mentions("tiers.levels"), "{errs}");
    }
}
