//! The steering policy, client placement and the DNS responder's answers, over routing tables
//! built by hand (no sockets).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::opt::ClientSubnet;
use hickory_proto::rr::{DNSClass, LowerName, Name, RData, RecordType};
use prometheus::Registry;
use verge_config::geo::{GeoConfig, NamePolicy, Share};
use verge_config::wire::{NodeEntry, NodeRole, RegionRoute, RoutingTable};
use verge_config::{NodeId, RegionId};

use super::dns::{GeoDns, Question};
use super::metrics::GeoMetrics;
use super::policy::{Family, Outcome, Plan, Skip, Source, Step};
use super::steering::Steering;

#[path = "../../tests/control/geo_support/geo_toml.rs"]
mod geo_toml;

fn region(id: &str) -> RegionId {
    RegionId::new(id).unwrap()
}

/// An edge `id` in `region` at `ip` (port 8080).
fn edge(id: &str, region_id: &str, ip: &str, weight: u32, healthy: bool) -> NodeEntry {
    let host = if ip.contains(':') {
        format!("[{ip}]")
    } else {
        ip.to_string()
    };
    NodeEntry {
        id: NodeId::new(id).unwrap(),
        role: NodeRole::Edge,
        region: region(region_id),
        data_url: format!("http://{host}:8080"),
        admin_url: format!("http://{host}:9080"),
        weight,
        healthy,
    }
}

/// Regions us, eu, ap with the loopback fallbacks of the architecture page.
fn table(edges: Vec<NodeEntry>) -> RoutingTable {
    let fallback = |list: &[&str]| list.iter().map(|r| region(r)).collect::<Vec<_>>();
    let mut by_region: BTreeMap<&str, Vec<NodeEntry>> = BTreeMap::new();
    for id in ["ap", "eu", "us"] {
        by_region.insert(id, Vec::new());
    }
    for e in edges {
        let key = match e.region.as_str() {
            "us" => "us",
            "eu" => "eu",
            _ => "ap",
        };
        by_region.entry(key).or_default().push(e);
    }
    let regions = by_region
        .into_iter()
        .map(|(id, edges)| RegionRoute {
            id: region(id),
            edges,
            fallback: match id {
                "us" => fallback(&["eu", "ap"]),
                "eu" => fallback(&["us", "ap"]),
                _ => fallback(&["us", "eu"]),
            },
        })
        .collect();
    RoutingTable {
        version: 7,
        regions,
        shields: Vec::new(),
        rules: Vec::new(),
        tiers: None,
    }
}

fn metrics() -> GeoMetrics {
    GeoMetrics::new(&Registry::new()).unwrap()
}

const SLOTS: [&str; 3] = ["ap", "eu", "us"];

fn plan(t: &RoutingTable) -> Plan {
    let slots: Vec<RegionId> = SLOTS.iter().map(|s| region(s)).collect();
    Plan::build(t, &slots, &region("us"), &metrics())
}

fn slot(name: &str) -> u16 {
    SLOTS.iter().position(|s| *s == name).unwrap() as u16
}

fn policy(max_answers: usize, share: u16) -> NamePolicy {
    NamePolicy {
        max_answers,
        min_healthy_share: Share::from_thousandths(share),
    }
}

fn chosen(p: &Plan, edges: &[u32]) -> Vec<String> {
    edges
        .iter()
        .map(|&e| p.edge(e).unwrap().id.to_string())
        .collect()
}

fn answer_region(p: &Plan, r: Option<u16>) -> &str {
    p.region(r.unwrap()).unwrap().id.as_str()
}

pub(super) fn three_regions() -> RoutingTable {
    table(vec![
        edge("us-1", "us", "127.1.0.1", 1, true),
        edge("us-2", "us", "127.1.0.2", 1, true),
        edge("eu-1", "eu", "127.2.0.1", 1, true),
        edge("eu-2", "eu", "127.2.0.2", 1, true),
        edge("ap-1", "ap", "127.3.0.1", 1, true),
    ])
}

/// Whether `step` passed a region over for `why`, having found `healthy` of its `total` edges up.
fn skipped(step: &Step, why: Skip, healthy: u32, total: u32) -> bool {
    matches!(*step, Step::Skipped { why: w, healthy: h, total: t, .. } if (w, h, t) == (why, healthy, total))
}

#[test]
fn a_client_gets_its_own_regions_healthy_edges() {
    let p = plan(&three_regions());
    let d = p.decide(slot("eu"), policy(2, 500), Family::V4, 1);
    assert_eq!(d.outcome, Outcome::Local);
    assert_eq!(answer_region(&p, d.region), "eu");
    let mut ids = chosen(&p, d.edges());
    ids.sort();
    assert_eq!(ids, ["eu-1", "eu-2"]);
    assert!(matches!(
        d.steps(),
        [Step::Chosen {
            how: Outcome::Local,
            healthy: 2,
            total: 2,
            ..
        }]
    ));
}

#[test]
fn unhealthy_edges_are_dropped_and_max_answers_is_kept() {
    let mut t = three_regions();
    t.regions[2].edges[0].healthy = false; // us-1
    let p = plan(&t);
    for seed in 0..20 {
        let d = p.decide(slot("us"), policy(2, 500), Family::V4, seed);
        assert_eq!(chosen(&p, d.edges()), ["us-2"], "seed {seed}");
    }
    let d = p.decide(slot("eu"), policy(1, 0), Family::V4, 3);
    assert_eq!(d.edges().len(), 1);
}

#[test]
fn a_region_without_healthy_edges_fails_over_to_the_nearest() {
    let mut t = three_regions();
    for e in &mut t.regions[2].edges {
        e.healthy = false;
    }
    let p = plan(&t);
    let d = p.decide(slot("us"), policy(2, 500), Family::V4, 1);
    assert_eq!(d.outcome, Outcome::Failover);
    assert_eq!(answer_region(&p, d.region), "eu");
    assert!(
        skipped(&d.steps()[0], Skip::NoneHealthy, 0, 2),
        "{:?}",
        d.steps()
    );
    // ap's nearest is us (down), then eu.
    t.regions[0].edges[0].healthy = false;
    let p = plan(&t);
    let d = p.decide(slot("ap"), policy(2, 500), Family::V4, 1);
    assert_eq!(answer_region(&p, d.region), "eu");
    assert_eq!(d.steps().len(), 3);
}

#[test]
fn a_region_below_its_healthy_share_fails_over_and_is_the_last_resort() {
    let mut t = table(vec![
        edge("us-1", "us", "127.1.0.1", 1, true),
        edge("us-2", "us", "127.1.0.2", 1, false),
        edge("us-3", "us", "127.1.0.3", 1, false),
        edge("eu-1", "eu", "127.2.0.1", 1, true),
    ]);
    let p = plan(&t);
    let d = p.decide(slot("us"), policy(2, 500), Family::V4, 1);
    assert_eq!(
        (d.outcome, answer_region(&p, d.region)),
        (Outcome::Failover, "eu")
    );
    assert!(
        skipped(&d.steps()[0], Skip::BelowShare, 1, 3),
        "{:?}",
        d.steps()
    );
    // With no share required, the one healthy local edge answers.
    let d = p.decide(slot("us"), policy(2, 0), Family::V4, 1);
    assert_eq!(chosen(&p, d.edges()), ["us-1"]);
    // When every region is below its share, the nearest with a healthy edge answers.
    t.regions[1]
        .edges
        .push(edge("eu-2", "eu", "127.2.0.2", 1, false));
    t.regions[1]
        .edges
        .push(edge("eu-3", "eu", "127.2.0.3", 1, false));
    let p = plan(&t);
    let d = p.decide(slot("eu"), policy(2, 500), Family::V4, 1);
    assert_eq!(d.outcome, Outcome::LastResort);
    assert_eq!(chosen(&p, d.edges()), ["eu-1"]);
}

#[test]
fn with_no_healthy_edge_anywhere_every_edge_is_a_candidate() {
    let mut t = three_regions();
    for r in &mut t.regions {
        for e in &mut r.edges {
            e.healthy = false;
        }
    }
    let p = plan(&t);
    let d = p.decide(slot("ap"), policy(3, 500), Family::V4, 1);
    assert_eq!(d.outcome, Outcome::Panic);
    assert_eq!(answer_region(&p, d.region), "ap");
    // ap's one edge, then the nearest region's (us) to fill the answer.
    let ids = chosen(&p, d.edges());
    assert_eq!(ids.len(), 3);
    assert_eq!(ids[0], "ap-1");
    assert!(
        ids[1].starts_with("us-") && ids[2].starts_with("us-"),
        "{ids:?}"
    );
}

#[test]
fn no_edges_at_all_is_an_empty_answer() {
    let p = plan(&table(Vec::new()));
    let d = p.decide(slot("us"), policy(2, 500), Family::V4, 1);
    assert_eq!(d.outcome, Outcome::Empty);
    assert!(d.edges().is_empty());
    assert_eq!(d.region, None);
}

#[test]
fn weights_share_the_first_answer_within_a_region() {
    let t = table(vec![
        edge("us-1", "us", "127.1.0.1", 3, true),
        edge("us-2", "us", "127.1.0.2", 1, true),
    ]);
    let p = plan(&t);
    let n = 40_000;
    let heavy = (0..n)
        .filter(|&seed| {
            let d = p.decide(slot("us"), policy(1, 500), Family::V4, seed);
            chosen(&p, d.edges()) == ["us-1"]
        })
        .count();
    let share = heavy as f64 / n as f64;
    assert!(
        (share - 0.75).abs() < 0.02,
        "share of the weight-3 edge: {share}"
    );
    // Both are answered when two are asked for, heavier first more often.
    let d = p.decide(slot("us"), policy(2, 500), Family::V4, 5);
    assert_eq!(d.edges().len(), 2);
}

#[test]
fn a_families_answer_holds_only_edges_of_that_family() {
    let t = table(vec![
        edge("us-4", "us", "127.1.0.1", 1, true),
        edge("us-6", "us", "2001:db8::1", 1, true),
        edge("eu-6", "eu", "2001:db8:2::1", 1, true),
        NodeEntry {
            data_url: "http://edge.example.test:8080".into(),
            ..edge("us-name", "us", "127.1.0.9", 1, true)
        },
    ]);
    let p = plan(&t);
    let v4 = p.decide(slot("us"), policy(8, 0), Family::V4, 1);
    assert_eq!(chosen(&p, v4.edges()), ["us-4"]);
    let v6 = p.decide(slot("us"), policy(8, 0), Family::V6, 1);
    assert_eq!(chosen(&p, v6.edges()), ["us-6"]);
    let any = p.decide(slot("us"), policy(8, 0), Family::Any, 1);
    assert_eq!(any.edges().len(), 3);
    // eu has no IPv4 edge: A answers for eu clients come from us.
    let d = p.decide(slot("eu"), policy(2, 0), Family::V4, 1);
    assert!(matches!(
        d.steps()[0],
        Step::Skipped {
            why: Skip::NoEdges,
            ..
        }
    ));
    assert_eq!(answer_region(&p, d.region), "us");
}

#[test]
fn a_region_the_table_does_not_route_takes_the_default_regions_order() {
    let t = three_regions();
    let slots = vec![region("eu"), region("mars"), region("us")];
    let p = Plan::build(&t, &slots, &region("us"), &metrics());
    let d = p.decide(1, policy(1, 500), Family::V4, 1);
    assert_eq!(d.steps()[0], Step::Unrouted);
    assert_eq!(answer_region(&p, d.region), "us");
    assert_eq!(d.outcome, Outcome::Failover);
}

// --- client placement and the steering handle ---

/// The shared geo fixture, answering with TTL 20s: `cdn.verge.test` with two answers,
/// `a.b.verge.test` with one.
fn geo_config() -> GeoConfig {
    geo_toml::geo_config(
        "ttl = \"20s\"\n\
         names.\"cdn.verge.test\".max_answers = 2\n\
         names.\"a.b.verge.test\".max_answers = 1\n",
    )
}

fn steering(t: &RoutingTable) -> Arc<Steering> {
    Arc::new(Steering::new(&geo_config(), t, metrics()))
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

#[test]
fn clients_are_placed_by_block_else_by_default() {
    let s = steering(&three_regions());
    let eu = s.locate(ip("127.2.9.9"), false);
    assert_eq!(
        (s.slot_name(eu.slot).unwrap().as_str(), eu.source),
        ("eu", Source::Cidr)
    );
    assert_eq!(eu.scope, 16);
    let v6 = s.locate(ip("2001:db8:2::5"), true);
    assert_eq!(s.slot_name(v6.slot).unwrap().as_str(), "eu");
    assert!(v6.ecs);
    let mapped = s.locate(ip("::ffff:127.3.0.1"), false);
    assert_eq!(s.slot_name(mapped.slot).unwrap().as_str(), "ap");
    let stranger = s.locate(ip("192.0.2.1"), false);
    assert_eq!(
        (
            s.slot_name(stranger.slot).unwrap().as_str(),
            stranger.source
        ),
        ("us", Source::Default)
    );
    assert_eq!(s.metrics().default_region.get(), 1);
}

#[test]
fn a_new_table_changes_the_next_decision() {
    let s = steering(&three_regions());
    let client = s.locate(ip("127.1.0.50"), false);
    let name = s.name("CDN.verge.test.").unwrap();
    let d = s.decide(&s.plan(), name, &client, Family::V4);
    assert_eq!(d.outcome, Outcome::Local);
    let mut t = three_regions();
    t.version = 8;
    for e in &mut t.regions[2].edges {
        e.healthy = false;
    }
    s.update(&t);
    let plan = s.plan();
    assert_eq!(plan.version, 8);
    let d = s.decide(&plan, name, &client, Family::V4);
    assert_eq!(
        (d.outcome, answer_region(&plan, d.region)),
        (Outcome::Failover, "eu")
    );
    let m = s.metrics();
    assert_eq!(m.failovers.with_label_values(&["us"]).get(), 1);
    assert_eq!(m.answers.with_label_values(&["eu", "failover"]).get(), 1);
    assert_eq!(m.answers.with_label_values(&["us", "local"]).get(), 1);
    let json = serde_json::to_value(s.explain(&plan, name, &client, &d)).unwrap();
    assert_eq!(json["region"], "us");
    assert_eq!(json["answer_region"], "eu");
    assert_eq!(json["step"], "failover");
    assert_eq!(json["steps"][0]["action"], "skip");
    assert_eq!(json["steps"][0]["why"], "no healthy edges");
    assert_eq!(json["edges"].as_array().unwrap().len(), 2);
    assert_eq!(json["table_version"], 8);
}

// --- the DNS responder's answers ---

fn lower(name: &str) -> LowerName {
    LowerName::from(Name::from_ascii(name).unwrap())
}

fn ask<'a>(
    dns: &GeoDns,
    name: &'a LowerName,
    qtype: RecordType,
    src: &str,
    ecs: Option<&'a ClientSubnet>,
) -> super::dns::Reply {
    dns.answer(&Question {
        name,
        qtype,
        qclass: DNSClass::IN,
        src: ip(src),
        ecs,
    })
}

fn addresses(reply: &super::dns::Reply) -> Vec<IpAddr> {
    reply
        .answers
        .iter()
        .filter_map(|r| r.data().ip_addr())
        .collect()
}

pub(super) fn responder(t: &RoutingTable) -> GeoDns {
    let config = geo_config();
    GeoDns::new(&config, steering(t), Some(ip("127.0.0.53")))
}

#[test]
fn dns_answers_a_and_aaaa_by_the_clients_region() {
    let mut t = three_regions();
    t.regions[1]
        .edges
        .push(edge("eu-6", "eu", "2001:db8:2::1", 1, true));
    let dns = responder(&t);
    let name = lower("cdn.verge.test.");
    let reply = ask(&dns, &name, RecordType::A, "127.2.0.99", None);
    assert_eq!(reply.code, ResponseCode::NoError);
    assert!(reply.authoritative);
    let mut got = addresses(&reply);
    got.sort();
    assert_eq!(got, [ip("127.2.0.1"), ip("127.2.0.2")]);
    assert_eq!(reply.answers[0].ttl(), 20);
    let reply = ask(&dns, &name, RecordType::AAAA, "127.2.0.99", None);
    assert_eq!(addresses(&reply), [ip("2001:db8:2::1")]);
    // No IPv6 edge anywhere near us... but eu has one: us clients get it (failover by family).
    let reply = ask(&dns, &name, RecordType::AAAA, "127.1.0.1", None);
    assert_eq!(addresses(&reply), [ip("2001:db8:2::1")]);
}

#[test]
fn dns_aaaa_without_any_ipv6_edge_is_an_empty_noerror_with_the_soa() {
    let dns = responder(&three_regions());
    let name = lower("cdn.verge.test.");
    let reply = ask(&dns, &name, RecordType::AAAA, "127.1.0.1", None);
    assert_eq!(
        (reply.code, reply.result()),
        (ResponseCode::NoError, "nodata")
    );
    assert!(reply.answers.is_empty());
    assert_eq!(reply.authority[0].record_type(), RecordType::SOA);
}

#[test]
fn dns_ecs_places_the_client_and_sets_the_scope() {
    let dns = responder(&three_regions());
    let name = lower("cdn.verge.test.");
    let subnet = ClientSubnet::new(ip("127.3.7.0"), 24, 0);
    let reply = ask(&dns, &name, RecordType::A, "127.1.0.1", Some(&subnet));
    assert_eq!(addresses(&reply), [ip("127.3.0.1")]);
    let ecs = reply.ecs.unwrap();
    assert_eq!((ecs.source_prefix(), ecs.scope_prefix()), (24, 16));
    // Source prefix 0: the resolver's own address is used, and the scope is 0.
    let zero = ClientSubnet::new(ip("0.0.0.0"), 0, 0);
    let reply = ask(&dns, &name, RecordType::A, "127.1.0.1", Some(&zero));
    assert!(addresses(&reply)
        .iter()
        .all(|a| a.to_string().starts_with("127.1.")));
    assert_eq!(reply.ecs.unwrap().scope_prefix(), 0);
    // Address bits past the source prefix are ignored: 127.3.0.0/8 is 127.0.0.0/8 (default us).
    let sloppy = ClientSubnet::new(ip("127.3.0.0"), 8, 0);
    let reply = ask(&dns, &name, RecordType::A, "127.2.0.1", Some(&sloppy));
    assert!(addresses(&reply)
        .iter()
        .all(|a| a.to_string().starts_with("127.1.")));
}

#[test]
fn dns_serves_soa_and_ns_and_says_what_does_not_exist() {
    let dns = responder(&three_regions());
    let apex = lower("verge.test.");
    let soa = ask(&dns, &apex, RecordType::SOA, "127.1.0.1", None);
    match soa.answers[0].data() {
        RData::SOA(soa) => {
            assert_eq!(soa.mname().to_string(), "ns1.verge.test.");
            assert_eq!(soa.serial(), 7);
            assert_eq!(soa.minimum(), 20);
        }
        other => panic!("not an SOA: {other:?}"),
    }
    let ns = ask(&dns, &apex, RecordType::NS, "127.1.0.1", None);
    assert_eq!(ns.answers.len(), 1);
    let glue = ask(
        &dns,
        &lower("ns1.verge.test."),
        RecordType::A,
        "127.1.0.1",
        None,
    );
    assert_eq!(addresses(&glue), [ip("127.0.0.53")]);
    let missing = ask(
        &dns,
        &lower("nope.verge.test."),
        RecordType::A,
        "127.1.0.1",
        None,
    );
    assert_eq!(missing.code, ResponseCode::NXDomain);
    assert_eq!(missing.authority[0].record_type(), RecordType::SOA);
    // An ancestor of a configured name exists, without records.
    let between = ask(
        &dns,
        &lower("b.verge.test."),
        RecordType::A,
        "127.1.0.1",
        None,
    );
    assert_eq!(
        (between.code, between.result()),
        (ResponseCode::NoError, "nodata")
    );
    let outside = ask(
        &dns,
        &lower("example.com."),
        RecordType::A,
        "127.1.0.1",
        None,
    );
    assert_eq!(
        (outside.code, outside.authoritative),
        (ResponseCode::Refused, false)
    );
    let mx = ask(
        &dns,
        &lower("cdn.verge.test."),
        RecordType::MX,
        "127.1.0.1",
        None,
    );
    assert_eq!(mx.result(), "nodata");
}
