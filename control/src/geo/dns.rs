//! The authoritative GeoDNS responder: [`GeoDns`] answers from the steering plan in force;
//! the bounded loops of [`super::udp`] and [`super::tcp`] hand it each datagram or framed
//! message ([`GeoDns::answer_packet`], [`GeoDns::answer_message`]).
//!
//! - A and AAAA of a configured name: the steered edges' addresses of that family (an empty
//!   NOERROR with the SOA when there are none), with the configured TTL;
//! - EDNS Client Subnet: the subnet's address places the client, and the reply carries the
//!   scope over which the answer holds;
//! - SOA and NS at the zone apex; A/AAAA of in-zone name servers (the listener's address);
//! - NXDOMAIN (with the SOA) for other names in the zone, REFUSED outside it, NOTIMP for
//!   opcodes other than QUERY, BADVERS for EDNS versions above 0, FORMERR for a message without
//!   exactly one question; a packet whose header reads but whose rest does not is answered
//!   FORMERR, other packets and responses (which could be reflected) get no answer.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use hickory_proto::op::{Edns, Header, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use hickory_proto::rr::rdata::{A, AAAA, NS, SOA};
use hickory_proto::rr::{DNSClass, LowerName, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncodable, BinEncoder};
use hickory_proto::xfer::Protocol;
use hickory_proto::ProtoErrorKind;
use hickory_server::authority::{MessageRequest, MessageResponseBuilder};
use hickory_server::server::Request;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;
use verge_config::geo::{Cidr, GeoConfig};

use super::policy::Family;
use super::steering::Steering;
use super::tcp;
use super::udp::{self, UdpAnswer, UdpLimit};
use crate::StartError;

/// The largest UDP reply offered (the DNS flag day 2020 figure).
const MAX_UDP_PAYLOAD: u16 = 1232;
/// The largest UDP reply to a query without EDNS (RFC 1035).
const PLAIN_UDP_PAYLOAD: u16 = 512;

/// Answers DNS queries for the zone from the steering plan.
pub struct GeoDns {
    steering: Arc<Steering>,
    zone: LowerName,
    /// Configured host names and their index in [`Steering::names`].
    names: Vec<(LowerName, usize)>,
    /// Names in the zone that exist only as ancestors of configured names: NODATA, not
    /// NXDOMAIN.
    between: Vec<LowerName>,
    nameservers: Vec<Name>,
    /// In-zone name servers, answered with the listener's address.
    glue: Vec<LowerName>,
    listen_ip: Option<IpAddr>,
    hostmaster: Name,
    ttl: u32,
}

/// One question, as the responder needs it.
#[derive(Debug, Clone)]
pub struct Question<'a> {
    pub name: &'a LowerName,
    pub qtype: RecordType,
    pub qclass: DNSClass,
    /// The source address of the query.
    pub src: IpAddr,
    pub ecs: Option<&'a ClientSubnet>,
}

/// What to answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub code: ResponseCode,
    pub authoritative: bool,
    pub answers: Vec<Record>,
    pub authority: Vec<Record>,
    /// The ECS option to return (the query's, with the scope set).
    pub ecs: Option<ClientSubnet>,
}

impl Reply {
    fn new(code: ResponseCode) -> Reply {
        Reply {
            code,
            authoritative: false,
            answers: Vec::new(),
            authority: Vec::new(),
            ecs: None,
        }
    }

    /// The `result` label of `verge_geo_dns_queries_total`.
    pub fn result(&self) -> &'static str {
        match self.code {
            ResponseCode::NoError if self.answers.is_empty() => "nodata",
            ResponseCode::NoError => "noerror",
            ResponseCode::NXDomain => "nxdomain",
            ResponseCode::Refused => "refused",
            ResponseCode::FormErr => "formerr",
            ResponseCode::NotImp => "notimp",
            ResponseCode::BADVERS => "badvers",
            _ => "servfail",
        }
    }
}

fn fqdn(text: &str) -> Option<Name> {
    match Name::from_ascii(format!("{text}.")) {
        Ok(name) => Some(name),
        Err(e) => {
            tracing::error!(name = text, error = %e, "not a DNS name; left out of the zone");
            None
        }
    }
}

/// The `type` label of `verge_geo_dns_queries_total`.
fn type_label(qtype: RecordType) -> &'static str {
    match qtype {
        RecordType::A => "a",
        RecordType::AAAA => "aaaa",
        RecordType::SOA => "soa",
        RecordType::NS => "ns",
        RecordType::ANY => "any",
        _ => "other",
    }
}

impl GeoDns {
    /// `listen_ip`: the address in-zone name servers answer with (none when unspecified).
    pub fn new(config: &GeoConfig, steering: Arc<Steering>, listen_ip: Option<IpAddr>) -> GeoDns {
        let zone_name = fqdn(config.zone.as_str()).unwrap_or_else(Name::root);
        let zone = LowerName::from(&zone_name);
        let names: Vec<(LowerName, usize)> = steering
            .names()
            .iter()
            .enumerate()
            .filter_map(|(i, (n, _))| Some((LowerName::from(fqdn(n.as_str())?), i)))
            .collect();
        let mut between = Vec::new();
        for (name, _) in &names {
            let mut parent = name.base_name();
            while zone.zone_of(&parent) && parent != zone {
                if !between.contains(&parent) {
                    between.push(parent.clone());
                }
                parent = parent.base_name();
            }
        }
        let nameservers: Vec<Name> = config
            .nameservers
            .iter()
            .filter_map(|n| fqdn(n.as_str()))
            .collect();
        let glue = nameservers
            .iter()
            .map(LowerName::from)
            .filter(|n| zone.zone_of(n))
            .collect();
        GeoDns {
            steering,
            zone,
            names,
            between,
            nameservers,
            glue,
            listen_ip: listen_ip.filter(|ip| !ip.is_unspecified()),
            hostmaster: fqdn(config.hostmaster.as_str()).unwrap_or_else(Name::root),
            ttl: u32::try_from(config.ttl.as_secs()).unwrap_or(u32::MAX),
        }
    }

    /// Answers one question: the responder's logic, without sockets.
    pub fn answer(&self, q: &Question<'_>) -> Reply {
        if q.qclass != DNSClass::IN && q.qclass != DNSClass::ANY {
            return Reply::new(ResponseCode::Refused);
        }
        if !self.zone.zone_of(q.name) {
            return Reply::new(ResponseCode::Refused);
        }
        let mut reply = Reply::new(ResponseCode::NoError);
        reply.authoritative = true;
        let owner = Name::from(q.name);
        let apex = *q.name == self.zone;
        let configured = self
            .names
            .iter()
            .find(|(n, _)| n == q.name)
            .map(|(_, i)| *i);
        let family = match q.qtype {
            RecordType::A | RecordType::ANY => Some(Family::V4),
            RecordType::AAAA => Some(Family::V6),
            _ => None,
        };
        if let (Some(name), Some(family)) = (configured, family) {
            self.steer(q, name, family, &owner, &mut reply);
        } else if apex && matches!(q.qtype, RecordType::SOA) {
            reply.answers.push(self.soa());
        } else if apex && matches!(q.qtype, RecordType::NS) {
            reply.answers.extend(self.ns());
        } else if self.glue.contains(q.name) {
            match (self.listen_ip, family) {
                (Some(IpAddr::V4(ip)), Some(Family::V4)) => {
                    reply
                        .answers
                        .push(Record::from_rdata(owner, self.ttl, RData::A(A::from(ip))))
                }
                (Some(IpAddr::V6(ip)), Some(Family::V6)) => reply.answers.push(Record::from_rdata(
                    owner,
                    self.ttl,
                    RData::AAAA(AAAA::from(ip)),
                )),
                _ => {}
            }
        } else if !(apex || configured.is_some() || self.between.contains(q.name)) {
            reply.code = ResponseCode::NXDomain;
        }
        if reply.answers.is_empty() {
            // Negative answers carry the SOA, whose minimum is their TTL.
            reply.authority.push(self.soa());
        }
        reply
    }

    fn steer(
        &self,
        q: &Question<'_>,
        name: usize,
        family: Family,
        owner: &Name,
        reply: &mut Reply,
    ) {
        // A source prefix of 0 asks that the client's address not be used.
        let ecs = q.ecs.filter(|e| e.source_prefix() > 0);
        // Bits past the source prefix must be zero (RFC 7871); a client that sets them does not
        // get placed by them.
        let client = ecs.map_or(q.src, |e| {
            Cidr {
                addr: e.addr(),
                len: e.source_prefix(),
            }
            .network()
        });
        let located = self.steering.locate(client, ecs.is_some());
        if ecs.is_some() {
            self.steering.metrics().ecs.inc();
        }
        let plan = self.steering.plan();
        let decision = self.steering.decide(&plan, name, &located, family);
        for edge in decision.edges().iter().filter_map(|&e| plan.edge(e)) {
            let rdata = match edge.ip {
                Some(IpAddr::V4(ip)) => RData::A(A::from(ip)),
                Some(IpAddr::V6(ip)) => RData::AAAA(AAAA::from(ip)),
                None => continue,
            };
            reply
                .answers
                .push(Record::from_rdata(owner.clone(), self.ttl, rdata));
        }
        reply.ecs = q.ecs.map(|e| {
            let scope = if ecs.is_some() { located.scope } else { 0 };
            ClientSubnet::new(e.addr(), e.source_prefix(), scope)
        });
    }

    fn soa(&self) -> Record {
        let serial = u32::try_from(self.steering.plan().version % (1 << 31)).unwrap_or(0);
        let primary = self.nameservers.first().cloned().unwrap_or_else(Name::root);
        let soa = SOA::new(
            primary,
            self.hostmaster.clone(),
            serial,
            3600,
            600,
            86_400,
            self.ttl,
        );
        Record::from_rdata(Name::from(&self.zone), self.ttl, RData::SOA(soa))
    }

    fn ns(&self) -> impl Iterator<Item = Record> + '_ {
        self.nameservers.iter().map(|ns| {
            Record::from_rdata(Name::from(&self.zone), self.ttl, RData::NS(NS(ns.clone())))
        })
    }

    /// Answers a parsed request: checks the message, answers its question, counts it.
    fn respond(&self, request: &Request) -> (Header, Reply, Option<Edns>) {
        let mut header = Header::response_from_request(request.header());
        let mut qtype = "other";
        let reply = if request.message_type() != MessageType::Query {
            Reply::new(ResponseCode::FormErr)
        } else if request.op_code() != OpCode::Query {
            Reply::new(ResponseCode::NotImp)
        } else if request.edns().is_some_and(|e| e.version() > 0) {
            // RFC 6891: only EDNS version 0 is spoken.
            Reply::new(ResponseCode::BADVERS)
        } else {
            match request.request_info() {
                Ok(info) => {
                    let ecs = request
                        .edns()
                        .and_then(|e| match e.option(EdnsCode::Subnet) {
                            Some(EdnsOption::Subnet(subnet)) => Some(subnet),
                            _ => None,
                        });
                    let question = Question {
                        name: info.query.name(),
                        qtype: info.query.query_type(),
                        qclass: info.query.query_class(),
                        src: info.src.ip(),
                        ecs,
                    };
                    qtype = type_label(question.qtype);
                    self.answer(&question)
                }
                Err(_) => Reply::new(ResponseCode::FormErr),
            }
        };
        self.steering
            .metrics()
            .dns_queries
            .with_label_values(&[qtype, reply.result()])
            .inc();
        header.set_response_code(reply.code);
        header.set_authoritative(reply.authoritative);
        header.set_recursion_available(false);
        let edns = request.edns().map(|asked| {
            let mut edns = Edns::new();
            edns.set_max_payload(asked.max_payload().clamp(512, MAX_UDP_PAYLOAD));
            edns.set_version(0);
            if let Some(ecs) = &reply.ecs {
                edns.options_mut().insert(EdnsOption::Subnet(*ecs));
            }
            edns
        });
        (header, reply, edns)
    }

    /// Answers one UDP datagram from `src`: the reply's bytes, or `None` when it gets none (it
    /// is a response, or not even its header reads). A reply larger than the client takes is
    /// cut short with the TC bit set, so the client asks again over TCP.
    pub fn answer_packet(&self, packet: &[u8], src: SocketAddr) -> Option<Vec<u8>> {
        self.answer_message(packet, src, Protocol::Udp)
    }

    /// Answers one message from `src` received over `protocol`: over UDP as
    /// [`GeoDns::answer_packet`]; over TCP the reply may take up to 64 KiB.
    pub fn answer_message(
        &self,
        packet: &[u8],
        src: SocketAddr,
        protocol: Protocol,
    ) -> Option<Vec<u8>> {
        let message = match MessageRequest::read(&mut BinDecoder::new(packet)) {
            Ok(message) => message,
            Err(e) => match e.kind() {
                ProtoErrorKind::FormError { header, .. } => return self.form_error(header),
                _ => return None,
            },
        };
        // Answering a response could reflect traffic between two servers forever.
        if message.message_type() == MessageType::Response {
            return None;
        }
        let request = Request::new(message, src, protocol);
        let (header, reply, edns) = self.respond(&request);
        let max_size = match protocol {
            Protocol::Udp => edns.as_ref().map_or(PLAIN_UDP_PAYLOAD, |e| e.max_payload()),
            _ => u16::MAX,
        };
        let mut builder = MessageResponseBuilder::from_message_request(&request);
        if let Some(edns) = edns {
            builder.edns(edns);
        }
        let message = builder.build(
            header,
            reply.answers.iter(),
            reply.authority.iter(),
            std::iter::empty(),
            std::iter::empty(),
        );
        let mut bytes = Vec::with_capacity(512);
        let mut encoder = BinEncoder::new(&mut bytes);
        encoder.set_max_size(max_size);
        match message.destructive_emit(&mut encoder) {
            Ok(_) => Some(bytes),
            Err(error) => {
                tracing::error!(%error, "DNS reply could not be encoded; answering SERVFAIL");
                let mut failed = Header::response_from_request(&header);
                failed.set_response_code(ResponseCode::ServFail);
                header_only(&failed)
            }
        }
    }

    /// FORMERR, with no question, to a query whose header reads but whose rest does not.
    fn form_error(&self, request: &Header) -> Option<Vec<u8>> {
        if request.message_type() == MessageType::Response {
            return None;
        }
        self.steering
            .metrics()
            .dns_queries
            .with_label_values(&["other", "formerr"])
            .inc();
        let mut header = Header::response_from_request(request);
        header.set_response_code(ResponseCode::FormErr);
        header_only(&header)
    }
}

/// A message of `header` alone (no records).
fn header_only(header: &Header) -> Option<Vec<u8>> {
    let mut bytes = Vec::with_capacity(Header::len());
    header.emit(&mut BinEncoder::new(&mut bytes)).ok()?;
    Some(bytes)
}

#[async_trait::async_trait]
impl UdpAnswer for GeoDns {
    async fn answer_udp(&self, packet: &[u8], src: SocketAddr) -> Option<Vec<u8>> {
        self.answer_packet(packet, src)
    }

    async fn answer_tcp(&self, message: &[u8], src: SocketAddr) -> Option<Vec<u8>> {
        self.answer_message(message, src, Protocol::Tcp)
    }
}

/// The DNS listeners: UDP and TCP on one port.
pub struct DnsListeners {
    udp: UdpSocket,
    tcp: TcpListener,
    pub addr: SocketAddr,
}

impl DnsListeners {
    /// Binds UDP, then TCP on the same port (port 0: a free port both are free on).
    pub async fn bind(addr: SocketAddr) -> Result<DnsListeners, StartError> {
        let what = "geo.dns_listen";
        let fail = |source| StartError::Bind { addr, what, source };
        let mut tries = 0;
        loop {
            let udp = UdpSocket::bind(addr).await.map_err(fail)?;
            let bound = udp.local_addr().map_err(fail)?;
            match TcpListener::bind(bound).await {
                Ok(tcp) => {
                    return Ok(DnsListeners {
                        udp,
                        tcp,
                        addr: bound,
                    })
                }
                Err(e) if addr.port() == 0 && tries < 16 => {
                    tries += 1;
                    tracing::debug!(error = %e, port = bound.port(), "TCP port taken; trying another");
                }
                Err(e) => return Err(fail(e)),
            }
        }
    }

    /// Serves `handler` until `shutdown`, through the bounded loops of [`udp::serve`] and
    /// [`tcp::serve`].
    pub async fn serve<H>(self, handler: H, limit: UdpLimit, shutdown: watch::Receiver<bool>)
    where
        H: UdpAnswer,
    {
        let handler = Arc::new(handler);
        let udp = tokio::spawn(udp::serve(
            self.udp,
            Arc::clone(&handler),
            limit.clone(),
            shutdown.clone(),
        ));
        tcp::serve(self.tcp, handler, limit, shutdown).await;
        let _ = udp.await;
    }
}

#[cfg(test)]
mod properties;
