//! Property tests of what the GeoDNS responder reads from the network: any datagram is
//! answered without panic, with nothing or with a reply to it; a response is never answered;
//! a well-formed query for any name is answered for that name, or refused outside the zone.

use std::net::SocketAddr;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{LowerName, Name, RecordType};
use proptest::prelude::*;

use super::GeoDns;
use crate::geo::tests::{responder, three_regions};

fn src() -> SocketAddr {
    SocketAddr::from(([127, 1, 0, 10], 5300))
}

fn query(id: u16, name: &Name, qtype: RecordType, edns: bool) -> Vec<u8> {
    let mut message = Message::new();
    message
        .set_id(id)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .add_query(Query::query(name.clone(), qtype));
    if edns {
        let mut edns = Edns::new();
        edns.set_max_payload(1232);
        message.set_edns(edns);
    }
    message.to_vec().unwrap()
}

/// Arbitrary bytes, and well-formed queries with bytes overwritten and the end cut off.
fn datagram() -> impl Strategy<Value = Vec<u8>> {
    let mangled = (
        any::<u16>(),
        prop::sample::select(vec!["cdn.verge.test.", "verge.test.", "example.com."]),
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        any::<prop::sample::Index>(),
        any::<bool>(),
    )
        .prop_map(|(id, name, writes, cut, edns)| {
            let name = Name::from_ascii(name).unwrap();
            let mut bytes = query(id, &name, RecordType::A, edns);
            for (at, byte) in writes {
                let at = at.index(bytes.len());
                bytes[at] = byte;
            }
            bytes.truncate(cut.index(bytes.len() + 1));
            bytes
        });
    prop_oneof![prop::collection::vec(any::<u8>(), 0..600), mangled]
}

/// Names in the zone, below its names, outside it and the root, in any letter case.
fn name() -> impl Strategy<Value = Name> {
    (
        prop::collection::vec("[a-zA-Z0-9][a-zA-Z0-9-]{0,14}", 0..3),
        prop::sample::select(vec![
            "",
            "verge.test",
            "Verge.Test",
            "cdn.verge.test",
            "b.verge.test",
            "example.com",
            "test",
        ]),
    )
        .prop_map(|(labels, suffix)| {
            let mut parts = labels;
            if !suffix.is_empty() {
                parts.push(suffix.to_string());
            }
            Name::from_ascii(format!("{}.", parts.join("."))).unwrap()
        })
}

fn qtype() -> impl Strategy<Value = RecordType> {
    prop::sample::select(vec![
        RecordType::A,
        RecordType::AAAA,
        RecordType::SOA,
        RecordType::NS,
        RecordType::MX,
        RecordType::TXT,
        RecordType::ANY,
    ])
}

fn in_zone(name: &Name) -> bool {
    LowerName::from(Name::from_ascii("verge.test.").unwrap()).zone_of(&LowerName::from(name))
}

fn dns() -> GeoDns {
    responder(&three_regions())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_datagram_is_answered_without_panic_by_a_reply_to_it_or_nothing(bytes in datagram()) {
        if let Some(reply) = dns().answer_packet(&bytes, src()) {
            prop_assert!(reply.len() <= 1232, "{} bytes", reply.len());
            let reply = Message::from_vec(&reply).unwrap();
            prop_assert_eq!(reply.message_type(), MessageType::Response);
            prop_assert_eq!(reply.id(), u16::from_be_bytes([bytes[0], bytes[1]]));
        }
    }

    #[test]
    fn a_response_is_never_answered(mut bytes in datagram()) {
        if bytes.len() > 2 {
            bytes[2] |= 0x80;
        }
        prop_assert_eq!(dns().answer_packet(&bytes, src()), None);
    }

    #[test]
    fn a_query_for_any_name_is_answered_for_that_name_or_refused(
        id in any::<u16>(),
        name in name(),
        qtype in qtype(),
        edns in any::<bool>(),
    ) {
        let bytes = query(id, &name, qtype, edns);
        let reply = dns().answer_packet(&bytes, src()).expect("a query is answered");
        let reply = Message::from_vec(&reply).unwrap();
        prop_assert_eq!(reply.id(), id);
        prop_assert_eq!(reply.message_type(), MessageType::Response);
        prop_assert!(!reply.truncated());
        prop_assert_eq!(reply.queries().len(), 1);
        let asked = LowerName::from(&name);
        prop_assert_eq!(LowerName::from(reply.queries()[0].name()), asked.clone());
        prop_assert_eq!(reply.extensions().is_some(), edns);
        if !in_zone(&name) {
            prop_assert_eq!(reply.response_code(), ResponseCode::Refused);
            prop_assert!(reply.answers().is_empty());
            return Ok(());
        }
        prop_assert!(reply.authoritative());
        prop_assert!(
            matches!(reply.response_code(), ResponseCode::NoError | ResponseCode::NXDomain),
            "{:?}", reply.response_code()
        );
        for answer in reply.answers() {
            prop_assert_eq!(LowerName::from(answer.name()), asked.clone());
            prop_assert!(
                qtype == RecordType::ANY || answer.record_type() == qtype,
                "{:?} answered with {:?}", qtype, answer.record_type()
            );
        }
        if reply.answers().is_empty() {
            prop_assert_eq!(reply.name_servers()[0].record_type(), RecordType::SOA);
        }
        if asked == LowerName::from(Name::from_ascii("cdn.verge.test.").unwrap())
            && qtype == RecordType::A
        {
            prop_assert_eq!(reply.answers().len(), 2);
        }
    }
}
