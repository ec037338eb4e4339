//! The GeoDNS responder over real sockets: a control with `[geo]`, fake edges registered
//! through its node API, and clients bound to source addresses in the region blocks.

use crate::geo_support;

use std::time::Duration;

use geo_support::{
    addresses, ask_tcp, geo, ip, reply_ecs, start_geo_control, three_regions, wait_until,
    DnsClient, HealthServer, IO_TIMEOUT,
};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::opt::ClientSubnet;
use hickory_proto::rr::RecordType;

use crate::support::TestControl;

/// Asserts that `control` has counted at least one `series`.
async fn assert_counted(control: &TestControl, series: &str) {
    let counted = control.metric(series).await;
    assert!(counted >= 1.0, "{series} is {counted}");
}

fn sorted(mut list: Vec<std::net::IpAddr>) -> Vec<std::net::IpAddr> {
    list.sort();
    list
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_region_gets_its_own_edges_over_udp_and_tcp() {
    let setup = three_regions().await;
    let dns = setup.control.dns_addr;
    for (from, want) in [
        ("127.1.0.10", ["127.1.0.1", "127.1.0.2"]),
        ("127.2.5.10", ["127.2.0.1", "127.2.0.2"]),
        ("127.3.200.1", ["127.3.0.1", "127.3.0.2"]),
    ] {
        let client = DnsClient::bind(from, dns).await;
        let answer = client.ask("cdn.verge.test.", RecordType::A, None).await;
        assert_eq!(answer.response_code(), ResponseCode::NoError);
        assert!(answer.authoritative(), "{from}: not authoritative");
        assert_eq!(answer.answers()[0].ttl(), 5);
        assert_eq!(sorted(addresses(&answer)), want.map(ip), "from {from}");
        // The case of the question does not matter.
        let shouted = client.addresses("CDN.Verge.TEST.", RecordType::A).await;
        assert_eq!(sorted(shouted), want.map(ip), "from {from}");
        let tcp = ask_tcp(from, dns, "cdn.verge.test.", RecordType::A).await;
        assert_eq!(sorted(addresses(&tcp)), want.map(ip), "TCP from {from}");
    }
    // No IPv6 edge: AAAA is an empty NOERROR carrying the SOA.
    let client = DnsClient::bind("127.1.0.10", dns).await;
    let aaaa = client.ask("cdn.verge.test.", RecordType::AAAA, None).await;
    assert_eq!(aaaa.response_code(), ResponseCode::NoError);
    assert!(aaaa.answers().is_empty());
    assert_eq!(aaaa.name_servers()[0].record_type(), RecordType::SOA);
    assert_eq!(
        setup
            .control
            .metric("verge_geo_dns_queries_total{result=\"nodata\",type=\"aaaa\"}")
            .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_zone_answers_soa_and_ns_and_refuses_what_is_not_its_own() {
    let setup = three_regions().await;
    let client = DnsClient::bind("127.1.0.10", setup.control.dns_addr).await;
    let soa = client.ask("verge.test.", RecordType::SOA, None).await;
    assert_eq!(soa.answers()[0].record_type(), RecordType::SOA);
    let ns = client.ask("verge.test.", RecordType::NS, None).await;
    assert_eq!(ns.answers()[0].record_type(), RecordType::NS);
    let missing = client.ask("nope.verge.test.", RecordType::A, None).await;
    assert_eq!(missing.response_code(), ResponseCode::NXDomain);
    assert_eq!(missing.name_servers()[0].record_type(), RecordType::SOA);
    let outside = client.ask("example.com.", RecordType::A, None).await;
    assert_eq!(outside.response_code(), ResponseCode::Refused);
    assert!(outside.answers().is_empty());
    // Only EDNS version 0 is spoken; other opcodes are not implemented.
    let mut query = geo_support::query(41, "cdn.verge.test.", RecordType::A, None);
    let mut edns1 = Message::from_vec(&query).unwrap();
    edns1.extensions_mut().as_mut().unwrap().set_version(1);
    client.send_raw(&edns1.to_vec().unwrap()).await;
    let reply = Message::from_vec(&client.recv_raw(IO_TIMEOUT).await.unwrap()).unwrap();
    // 16 is BADVERS in an OPT record (hickory reads it as its twin, BADSIG).
    assert_eq!((reply.id(), u16::from(reply.response_code())), (41, 16));
    query[2] = (query[2] & 0x87) | (4 << 3); // opcode NOTIFY
    client.send_raw(&query).await;
    let reply = Message::from_vec(&client.recv_raw(IO_TIMEOUT).await.unwrap()).unwrap();
    assert_eq!(
        (reply.id(), reply.response_code()),
        (41, ResponseCode::NotImp)
    );
    let tcp_outside = ask_tcp(
        "127.2.0.9",
        setup.control.dns_addr,
        "example.com.",
        RecordType::A,
    )
    .await;
    assert_eq!(tcp_outside.response_code(), ResponseCode::Refused);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_subnet_wins_over_the_source_address() {
    let setup = three_regions().await;
    let client = DnsClient::bind("127.1.0.10", setup.control.dns_addr).await;
    let subnet = ClientSubnet::new(ip("127.3.9.0"), 24, 0);
    let answer = client
        .ask("cdn.verge.test.", RecordType::A, Some(subnet))
        .await;
    assert_eq!(
        sorted(addresses(&answer)),
        [ip("127.3.0.1"), ip("127.3.0.2")]
    );
    let ecs = reply_ecs(&answer).expect("the reply carries the client subnet");
    assert_eq!(ecs.addr(), ip("127.3.9.0"));
    assert_eq!(ecs.source_prefix(), 24);
    // The whole of 127.3.0.0/16 is answered alike.
    assert_eq!(ecs.scope_prefix(), 16);
    assert_eq!(
        setup.control.metric("verge_geo_ecs_queries_total").await,
        1.0
    );
    // Without ECS the same client is in us.
    let plain = client.addresses("cdn.verge.test.", RecordType::A).await;
    assert!(
        plain.iter().all(|a| a.to_string().starts_with("127.1.")),
        "{plain:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_regions_edges_moves_its_clients_to_the_nearest_region_in_the_next_table() {
    let mut setup = three_regions().await;
    let us = DnsClient::bind("127.1.0.10", setup.control.dns_addr).await;
    let before = us.addresses("cdn.verge.test.", RecordType::A).await;
    assert!(before.iter().all(|a| a.to_string().starts_with("127.1.")));
    let version_before = setup.control.routing().await["version"].as_u64().unwrap();

    setup.kill("us").await;
    let control = &setup.control;
    wait_until(
        "us edges to be marked down",
        Duration::from_secs(5),
        || async { control.edge_is("us-1", false).await && control.edge_is("us-2", false).await },
    )
    .await;
    // The first query after the table that took us down is answered from it: eu, us's
    // nearest region (no waiting for DNS to catch up).
    let version = control.routing().await["version"].as_u64().unwrap();
    assert!(version > version_before);
    let after = us.addresses("cdn.verge.test.", RecordType::A).await;
    assert_eq!(sorted(after), [ip("127.2.0.1"), ip("127.2.0.2")]);
    assert_counted(control, "verge_geo_failovers_total{region=\"us\"}").await;
    assert_counted(
        control,
        "verge_geo_answers_total{region=\"eu\",step=\"failover\"}",
    )
    .await;
    // eu and ap clients are unaffected.
    let ap = DnsClient::bind("127.3.0.10", control.dns_addr).await;
    let ap_answer = ap.addresses("cdn.verge.test.", RecordType::A).await;
    assert!(ap_answer
        .iter()
        .all(|a| a.to_string().starts_with("127.3.")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_edge_down_dns_answers_with_all_rather_than_none() {
    let mut setup = three_regions().await;
    for region in ["us", "eu", "ap"] {
        setup.kill(region).await;
    }
    let control = &setup.control;
    wait_until("every edge down", Duration::from_secs(5), || async {
        let table = control.routing().await;
        table["regions"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| r["edges"].as_array().unwrap())
            .all(|e| e["healthy"] == false)
    })
    .await;
    let eu = DnsClient::bind("127.2.0.10", control.dns_addr).await;
    let answer = eu.addresses("cdn.verge.test.", RecordType::A).await;
    assert_eq!(sorted(answer), [ip("127.2.0.1"), ip("127.2.0.2")]);
    assert_counted(
        control,
        "verge_geo_answers_total{region=\"eu\",step=\"panic\"}",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_share_the_answers_within_a_region() {
    let control = start_geo_control(&geo()).await;
    let health = HealthServer::start().await;
    control
        .register_edge("us-heavy", "us", "127.1.0.1", 3, &health.url)
        .await;
    control
        .register_edge("us-light", "us", "127.1.0.2", 1, &health.url)
        .await;
    let client = DnsClient::bind("127.1.0.10", control.dns_addr).await;
    let n = 2000;
    let mut heavy = 0;
    for _ in 0..n {
        let answer = client.addresses("one.verge.test.", RecordType::A).await;
        assert_eq!(answer.len(), 1);
        if answer[0] == ip("127.1.0.1") {
            heavy += 1;
        }
    }
    let share = f64::from(heavy) / f64::from(n);
    assert!(
        (share - 0.75).abs() <= 0.075,
        "weight 3 of 4 got {share} of the answers"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_packets_leave_the_responder_answering() {
    let setup = three_regions().await;
    let dns = setup.control.dns_addr;
    let client = DnsClient::bind("127.1.0.10", dns).await;
    let valid = geo_support::query(9, "cdn.verge.test.", RecordType::A, None);
    let mut truncated_question = valid.clone();
    truncated_question.truncate(20);
    let mut bad_label = valid[..12].to_vec();
    bad_label.extend_from_slice(&[63, b'a', b'b', 0, 0, 1, 0, 1]);
    let mut pointer_loop = valid[..12].to_vec();
    pointer_loop.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
    let mut as_response = valid.clone();
    as_response[2] |= 0x80;
    let mut two_questions = valid.clone();
    two_questions[5] = 2;
    let garbage: Vec<Vec<u8>> = vec![
        Vec::new(),
        vec![0xff],
        vec![0; 11],
        vec![0xff; 12],
        truncated_question,
        bad_label,
        pointer_loop,
        as_response,
        two_questions,
        (0..600u32).map(|i| (i * 37 % 251) as u8).collect(),
    ];
    for bytes in &garbage {
        client.send_raw(bytes).await;
    }
    // Whatever comes back for the garbage is a FORMERR (or nothing at all).
    while let Some(bytes) = client.recv_raw(Duration::from_millis(200)).await {
        if let Ok(reply) = Message::from_vec(&bytes) {
            assert_ne!(reply.response_code(), ResponseCode::NoError, "{reply:?}");
        }
    }
    let answer = client.addresses("cdn.verge.test.", RecordType::A).await;
    assert_eq!(answer.len(), 2);

    // Over TCP: a frame of garbage, then a fresh connection still gets answers.
    {
        use tokio::io::AsyncWriteExt;
        let mut stream = tokio::net::TcpStream::connect(dns).await.unwrap();
        let _ = stream.write_all(&[0, 5, 1, 2, 3, 4, 5, 0, 0xff]).await;
        let _ = tokio::time::timeout(IO_TIMEOUT, stream.shutdown()).await;
    }
    let tcp = ask_tcp("127.1.0.11", dns, "cdn.verge.test.", RecordType::A).await;
    assert_eq!(addresses(&tcp).len(), 2);
}
