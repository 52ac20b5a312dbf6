//! Turning a DNS request into response bytes: header flags, EDNS, errors and truncation.
//!
//! Why this exists: `answer::resolve` decides *what* is true; this module decides how a
//! request is treated as a message (opcode, class, question count, EDNS version, UDP size)
//! and encodes the answer. Both transports go through `DnsHandler::plan`, so UDP and TCP can
//! never answer differently. UDP is encoded here (hickory's encoder limits a UDP answer by
//! the size *we* advertise instead of the client's); TCP goes through hickory-server's
//! listener, which calls this handler as a `RequestHandler`.
//!
//! Documented rules:
//! - QR=1 messages and packets shorter than a header are dropped (no reflection).
//! - A packet whose header parses but whose body does not: FORMERR, header only.
//! - Opcode other than QUERY: NOTIMP. QDCOUNT other than 1: FORMERR.
//! - QCLASS other than IN (CH, ANY, NONE, ...): REFUSED; no server identity is disclosed.
//! - AXFR/IXFR: REFUSED (not served yet). QTYPE OPT: FORMERR.
//! - EDNS version above 0: BADVERS with our OPT (RFC 6891 §6.1.3). DO is never set in
//!   answers (no DNSSEC). Our OPT advertises `udp_payload` (1232 by default).
//! - UDP size limit: 512 without EDNS, else max(512, min(client size, udp_payload)).
//!   If optional additional records do not fit they are left out without TC (RFC 2181 §9);
//!   if the answer, the authority or a referral's glue does not fit, the response is the
//!   header, question and OPT with TC=1, and the client retries over TCP (RFC 9471).

use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use hickory_proto::op::{Edns, Header, HeaderCounts, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::{DNSClass, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncoder};
use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::{MessageRequest, MessageResponseBuilder};

use crate::answer::{resolve, Question, Response, SectionIter};
use crate::snapshot::Snapshot;

/// The smallest UDP payload every DNS client accepts (RFC 1035 §4.2.1).
const MIN_UDP_PAYLOAD: u16 = 512;

thread_local! {
    /// Per-thread round-robin position: no shared counter on the hot path.
    static ROTATION: Cell<usize> = const { Cell::new(0) };
}

fn next_rotation() -> usize {
    ROTATION.with(|rotation| {
        let value = rotation.get();
        rotation.set(value.wrapping_add(1));
        value
    })
}

/// What a request gets, before encoding. Lives on the stack for one query; boxing the
/// answer would put an allocation on the hot path.
#[allow(clippy::large_enum_variant)]
enum Plan<'a> {
    /// Header, question and OPT only, with this RCODE.
    Error(ResponseCode),
    /// An answer from the snapshot.
    Answer(Response<'a>),
}

/// Which records of a plan to encode.
#[derive(Clone, Copy, PartialEq)]
enum Fit {
    Everything,
    WithoutAdditional,
    Truncated,
}

/// Answers DNS requests from the current snapshot.
#[derive(Clone)]
pub struct DnsHandler {
    snapshots: Arc<ArcSwap<Snapshot>>,
    /// Our OPT record: advertised UDP payload, version 0, DO clear.
    edns: Edns,
}

impl DnsHandler {
    pub fn new(snapshots: Arc<ArcSwap<Snapshot>>, udp_payload: u16) -> Self {
        let mut edns = Edns::new();
        edns.set_max_payload(udp_payload.max(MIN_UDP_PAYLOAD));
        edns.set_version(0);
        edns.set_dnssec_ok(false);
        Self { snapshots, edns }
    }

    /// Decides the response to a parsed request.
    fn plan<'a>(&self, snapshot: &'a Snapshot, request: &MessageRequest) -> (Metadata, Plan<'a>) {
        let mut metadata = Metadata::response_from_request(&request.metadata);
        let plan = if request.edns.as_ref().is_some_and(|edns| edns.version() > 0) {
            Plan::Error(ResponseCode::BADVERS)
        } else if request.metadata.op_code != OpCode::Query {
            Plan::Error(ResponseCode::NotImp)
        } else if request.queries.len() != 1 {
            Plan::Error(ResponseCode::FormErr)
        } else {
            let query = &request.queries.queries()[0];
            let original = query.original();
            match (original.query_class, original.query_type) {
                (class, _) if class != DNSClass::IN => Plan::Error(ResponseCode::Refused),
                (_, RecordType::AXFR | RecordType::IXFR) => Plan::Error(ResponseCode::Refused),
                (_, RecordType::OPT) => Plan::Error(ResponseCode::FormErr),
                (_, record_type) => Plan::Answer(resolve(
                    snapshot,
                    Question {
                        name: &original.name,
                        record_type,
                    },
                    next_rotation(),
                )),
            }
        };
        match &plan {
            Plan::Error(code) => metadata.response_code = *code,
            Plan::Answer(response) => {
                metadata.response_code = response.rcode;
                metadata.authoritative = response.authoritative;
            }
        }
        (metadata, plan)
    }

    /// Our OPT for a response, present only when the request had one.
    fn response_edns(&self, request: &MessageRequest) -> Option<&Edns> {
        request.edns.as_ref().map(|_| &self.edns)
    }

    /// Answers one UDP datagram into `out`; returns false when nothing should be sent.
    pub fn answer_udp(&self, packet: &[u8], source: SocketAddr, out: &mut Vec<u8>) -> bool {
        out.clear();
        let Ok(header) = Header::read(&mut BinDecoder::new(packet)) else {
            return false;
        };
        if header.metadata.message_type == MessageType::Response {
            return false;
        }
        let request = match Request::from_bytes(packet.to_vec(), source, Protocol::Udp) {
            Ok(request) => request,
            Err(_) => {
                encode_header_only(&header.metadata, ResponseCode::FormErr, out);
                return true;
            }
        };
        let limit = match &request.edns {
            None => MIN_UDP_PAYLOAD,
            Some(edns) => edns
                .max_payload()
                .min(self.edns.max_payload())
                .max(MIN_UDP_PAYLOAD),
        };
        let snapshot = self.snapshots.load();
        let (metadata, plan) = self.plan(&snapshot, &request);
        let edns = self.response_edns(&request);
        let mut fit = match &plan {
            Plan::Error(_) => Fit::Truncated,
            Plan::Answer(_) => Fit::Everything,
        };
        loop {
            out.clear();
            let mut encoder = BinEncoder::new(out);
            encoder.set_max_size(limit);
            let mut metadata = metadata;
            if fit == Fit::Truncated {
                metadata.truncation = matches!(plan, Plan::Answer(_));
            }
            let message = build(&request, edns, metadata, &plan, fit);
            match message.destructive_emit(&mut encoder) {
                Ok(info) if !info.truncation || fit == Fit::Truncated => return true,
                Ok(info) => {
                    let Plan::Answer(response) = &plan else {
                        unreachable!("errors are encoded without records")
                    };
                    let counts = info.counts();
                    let core_fits = usize::from(counts.answers) == response.answer.len()
                        && usize::from(counts.authorities) == response.authority.len();
                    fit = if fit == Fit::Everything && core_fits && !response.additional_required {
                        Fit::WithoutAdditional
                    } else {
                        Fit::Truncated
                    };
                }
                Err(error) => {
                    tracing::warn!(%error, %source, "cannot encode a response; sending SERVFAIL");
                    encode_header_only(&request.metadata, ResponseCode::ServFail, out);
                    return true;
                }
            }
        }
    }
}

/// Builds the hickory message for a plan, leaving out what `fit` says does not fit.
fn build<'q, 'p, 'a: 'p>(
    request: &'q MessageRequest,
    edns: Option<&'q Edns>,
    metadata: Metadata,
    plan: &'p Plan<'a>,
    fit: Fit,
) -> hickory_server::zone_handler::MessageResponse<
    'q,
    'p,
    SectionIter<'p>,
    SectionIter<'p>,
    SectionIter<'p>,
    SectionIter<'p>,
> {
    let builder = MessageResponseBuilder::new(&request.queries, edns);
    match (plan, fit) {
        (Plan::Answer(response), Fit::Everything) => builder.build(
            metadata,
            response.answer.iter(),
            response.authority.iter(),
            SectionIter::empty(),
            response.additional.iter(),
        ),
        (Plan::Answer(response), Fit::WithoutAdditional) => builder.build(
            metadata,
            response.answer.iter(),
            response.authority.iter(),
            SectionIter::empty(),
            SectionIter::empty(),
        ),
        _ => builder.build(
            metadata,
            SectionIter::empty(),
            SectionIter::empty(),
            SectionIter::empty(),
            SectionIter::empty(),
        ),
    }
}

/// A response that is only a header: for requests whose question cannot be read.
fn encode_header_only(request: &Metadata, code: ResponseCode, out: &mut Vec<u8>) {
    out.clear();
    let mut metadata = Metadata::response_from_request(request);
    metadata.response_code = code;
    let header = Header {
        metadata,
        counts: HeaderCounts::default(),
    };
    let mut encoder = BinEncoder::new(out);
    if hickory_proto::serialize::binary::BinEncodable::emit(&header, &mut encoder).is_err() {
        out.clear();
    }
}

#[async_trait::async_trait]
impl RequestHandler for DnsHandler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let snapshot = self.snapshots.load_full();
        let (metadata, plan) = self.plan(&snapshot, request);
        let message = build(
            request,
            self.response_edns(request),
            metadata,
            &plan,
            match plan {
                Plan::Answer(_) => Fit::Everything,
                Plan::Error(_) => Fit::Truncated,
            },
        );
        match response_handle.send_response(message).await {
            Ok(info) => info,
            Err(error) => {
                tracing::debug!(%error, "cannot send a TCP response");
                let mut metadata = metadata;
                metadata.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header {
                    metadata,
                    counts: HeaderCounts::default(),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::Name;

    use super::*;
    use crate::zonefile::parse_zone;

    fn handler() -> DnsHandler {
        let mut zone = String::from("$TTL 300\n@ SOA ns h 1 2 3 4 30\n@ NS ns\nns A 192.0.2.1\n");
        for index in 0..60 {
            zone.push_str(&format!("big A 192.0.2.{index}\n"));
        }
        let origin = Name::from_ascii("example.test.").unwrap();
        let data = parse_zone(&zone, Path::new("t.zone"), &origin).unwrap();
        DnsHandler::new(
            Arc::new(ArcSwap::from_pointee(Snapshot::build(
                &[data],
                &Default::default(),
            ))),
            1232,
        )
    }

    fn ask(handler: &DnsHandler, payload: Option<u16>) -> Message {
        let mut message = Message::new(1, MessageType::Query, OpCode::Query);
        message.add_query(Query::query(
            Name::from_ascii("big.example.test.").unwrap(),
            RecordType::A,
        ));
        if let Some(payload) = payload {
            let mut edns = Edns::new();
            edns.set_max_payload(payload);
            message.set_edns(edns);
        }
        let mut out = Vec::new();
        assert!(handler.answer_udp(
            &message.to_vec().unwrap(),
            "127.0.0.1:9".parse().unwrap(),
            &mut out
        ));
        Message::from_vec(&out).unwrap()
    }

    #[test]
    fn answers_over_the_limit_are_truncated_empty() {
        let handler = handler();
        // 60 A records: about 1 KiB.
        let plain = ask(&handler, None);
        assert!(plain.metadata.truncation);
        assert!(plain.answers.is_empty());
        let small = ask(&handler, Some(700));
        assert!(small.metadata.truncation);
        assert!(small.edns.is_some(), "OPT survives truncation");
        let large = ask(&handler, Some(4096));
        assert!(!large.metadata.truncation, "1232 is enough");
        assert_eq!(large.answers.len(), 60);
    }
}
