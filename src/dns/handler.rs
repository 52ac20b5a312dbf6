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
//! - AXFR/IXFR: for a name that is not a served zone's origin, NOTAUTH; from a source not in
//!   the zone's `allow_transfer`, REFUSED (logged). AXFR over UDP: REFUSED. IXFR over UDP:
//!   the current SOA only (RFC 1995 §2; the client then asks over TCP). Over TCP: the
//!   transfer, streamed by `transfer`. QTYPE OPT: FORMERR.
//! - EDNS version above 0: BADVERS with our OPT (RFC 6891 §6.1.3). DO is never set in
//!   answers (no DNSSEC). Our OPT advertises `udp_payload` (1232 by default).
//! - UDP size limit: 512 without EDNS, else max(512, min(client size, udp_payload)).
//!   If optional additional records do not fit they are left out without TC (RFC 2181 §9);
//!   if the answer, the authority or a referral's glue does not fit, the response is the
//!   header, question and OPT with TC=1, and the client retries over TCP (RFC 9471).

use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::Arc;

use hickory_proto::rr::Name;

use hickory_proto::op::{Edns, Header, HeaderCounts, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::{DNSClass, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncoder};
use hickory_server::net::xfer::Protocol;
use hickory_server::server::Request;
use hickory_server::zone_handler::MessageRequest;

use crate::dns::answer::{resolve, Question, Response, SectionIter};
use crate::dns::cache::{AnswerCache, Fill, Lookup};
use crate::dns::transfer::{client_serial, Transfer};
use crate::dns::tsig;
use crate::zone::snapshot::{name_key, Snapshot, SnapshotReader};

/// The transport a request came over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// What to do with a request after `DnsHandler::answer`.
pub enum Answered {
    /// Send nothing (a response, or a packet too short to answer).
    Nothing,
    /// Send the message in the output buffer.
    Message,
    /// Stream this zone transfer (TCP only).
    Transfer(Transfer),
}

/// The smallest UDP payload every DNS client accepts (RFC 1035 §4.2.1).
const MIN_UDP_PAYLOAD: u16 = 512;

/// The most bytes a response may have: 512 without EDNS, else max(512, min(the client's
/// payload, `ours`)) over UDP; no limit but the message's over TCP.
pub(crate) fn response_limit(client_payload: Option<u16>, ours: u16, transport: Transport) -> u16 {
    match (client_payload, transport) {
        (_, Transport::Tcp) => u16::MAX,
        (None, Transport::Udp) => MIN_UDP_PAYLOAD,
        (Some(payload), Transport::Udp) => payload.min(ours).max(MIN_UDP_PAYLOAD),
    }
}

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

/// The rotation the next query on this thread gets, without taking it.
fn peek_rotation() -> usize {
    ROTATION.with(Cell::get)
}

/// Sets this thread's rotation counter (tests compare the two paths at one rotation).
#[cfg(test)]
pub(crate) fn set_rotation(value: usize) {
    ROTATION.with(|rotation| rotation.set(value));
}

/// What a request gets, before encoding. Lives on the stack for one query; boxing the
/// answer would put an allocation on the hot path.
#[allow(clippy::large_enum_variant)]
enum Plan<'a> {
    /// Header, question and OPT only, with this RCODE.
    Error(ResponseCode),
    /// An answer from the snapshot.
    Answer(Response<'a>),
    /// A zone transfer, encoded by `transfer`.
    Transfer(Transfer),
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
    snapshots: SnapshotReader,
    /// Our OPT records: advertised UDP payload, version 0, DO clear and DO set. DO is copied
    /// from the query (RFC 3225 §3), though nothing is signed.
    edns: [Edns; 2],
    /// The same with our NSID option, when `[server] nsid` is set (RFC 5001).
    edns_nsid: Option<[Edns; 2]>,
    /// `id.server.` and `hostname.bind.` CH TXT with `[server] identity`, when set.
    identity: Option<[hickory_proto::rr::Record; 2]>,
}

impl DnsHandler {
    pub fn new(snapshots: SnapshotReader, udp_payload: u16) -> Self {
        let mut edns = Edns::new();
        edns.set_max_payload(udp_payload.max(MIN_UDP_PAYLOAD));
        edns.set_version(0);
        edns.set_dnssec_ok(false);
        let mut edns_do = edns.clone();
        edns_do.set_dnssec_ok(true);
        Self {
            snapshots,
            edns: [edns, edns_do],
            edns_nsid: None,
            identity: None,
        }
    }

    /// Answers `id.server` and `hostname.bind` CH TXT with `identity`, and sends `nsid` to
    /// queries with the NSID option, as NSD and Knot do (both off unless set).
    pub fn with_identity(mut self, identity: Option<&str>, nsid: Option<&str>) -> Self {
        use hickory_proto::rr::rdata::opt::{EdnsOption, NSIDPayload};
        use hickory_proto::rr::rdata::TXT;
        use hickory_proto::rr::{Name, RData, Record};
        self.identity = identity.map(|identity| {
            ["id.server.", "hostname.bind."].map(|name| {
                let mut record = Record::from_rdata(
                    Name::from_ascii(name).expect("a valid name"),
                    0,
                    RData::TXT(TXT::new(vec![identity.to_string()])),
                );
                record.dns_class = DNSClass::CH;
                record
            })
        });
        self.edns_nsid = nsid.map(|nsid| {
            self.edns.clone().map(|mut edns| {
                edns.options_mut().insert(EdnsOption::NSID(
                    NSIDPayload::new(nsid.as_bytes()).expect("at most 255 bytes"),
                ));
                edns
            })
        });
        self
    }

    /// The CH TXT answer to `name` (id.server, hostname.bind) when an identity is set.
    fn identity_answer(&self, name: &hickory_proto::rr::Name, record_type: RecordType) -> Plan<'_> {
        let Some(records) = &self.identity else {
            return Plan::Error(ResponseCode::Refused);
        };
        let Some(record) = records.iter().find(|record| &record.name == name) else {
            return Plan::Error(ResponseCode::Refused);
        };
        if !matches!(record_type, RecordType::TXT | RecordType::ANY) {
            return Plan::Answer(crate::dns::answer::Response::empty_authoritative());
        }
        Plan::Answer(crate::dns::answer::Response::single(record))
    }

    /// The response to a transfer request (AXFR or IXFR) for `name`, signed with `key`.
    #[allow(clippy::too_many_arguments)]
    fn plan_transfer<'a>(
        &self,
        snapshot: &'a Snapshot,
        request: &MessageRequest,
        name: &Name,
        record_type: RecordType,
        source: SocketAddr,
        transport: Transport,
        key: Option<&Name>,
    ) -> Plan<'a> {
        let Some(zone) = snapshot.zone(&name_key(name)) else {
            return Plan::Error(ResponseCode::NotAuth);
        };
        let allowed = snapshot
            .settings_of(zone.origin())
            .is_some_and(|config| config.may_transfer(source.ip(), key));
        let outcome = match (allowed, transport, record_type) {
            (false, _, _) => "refused",
            (true, Transport::Udp, RecordType::AXFR) => "refused",
            (true, Transport::Udp, _) => "soa",
            (true, Transport::Tcp, _) => "started",
        };
        metrics::counter!("healthdns_transfers_total", "type" => record_type.to_string(), "result" => outcome)
            .increment(1);
        if !allowed {
            static GATE: crate::dns::LogGate = crate::dns::LogGate::new();
            if let Some(suppressed) = GATE.allow() {
                tracing::warn!(zone = %zone.origin(), %source, %record_type, suppressed, key = ?key.map(Name::to_ascii), "transfer refused: source (and key) not in allow_transfer (at most one line per 10 s; see healthdns_transfers_total)");
            }
            return Plan::Error(ResponseCode::Refused);
        }
        let query = request.queries.queries()[0].original().clone();
        match (transport, record_type) {
            (Transport::Udp, RecordType::AXFR) => Plan::Error(ResponseCode::Refused),
            (Transport::Udp, _) => Plan::Answer(Response::soa_only(zone)),
            (Transport::Tcp, RecordType::AXFR) => {
                Plan::Transfer(Transfer::axfr(zone.clone(), request.metadata.id, query))
            }
            (Transport::Tcp, _) => Plan::Transfer(Transfer::ixfr(
                zone.clone(),
                request.metadata.id,
                query,
                client_serial(&request.authorities),
            )),
        }
    }

    /// Decides the response to a parsed request.
    fn plan<'a>(
        &'a self,
        snapshot: &'a Snapshot,
        request: &MessageRequest,
        source: SocketAddr,
        transport: Transport,
        key: Option<&Name>,
    ) -> (Metadata, Plan<'a>) {
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
                (DNSClass::CH, record_type) => self.identity_answer(&original.name, record_type),
                (class, _) if class != DNSClass::IN => Plan::Error(ResponseCode::Refused),
                (_, record_type @ (RecordType::AXFR | RecordType::IXFR)) => self.plan_transfer(
                    snapshot,
                    request,
                    &original.name,
                    record_type,
                    source,
                    transport,
                    key,
                ),
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
            Plan::Transfer(_) => {}
        }
        (metadata, plan)
    }

    /// Our OPT for a response, present only when the request had one.
    fn response_edns(&self, request: &MessageRequest) -> Option<&Edns> {
        request.edns.as_ref().map(|edns| {
            let ours = match &self.edns_nsid {
                Some(with_nsid)
                    if edns
                        .option(hickory_proto::rr::rdata::opt::EdnsCode::NSID)
                        .is_some() =>
                {
                    with_nsid
                }
                _ => &self.edns,
            };
            &ours[usize::from(edns.flags().dnssec_ok)]
        })
    }

    /// Answers one UDP datagram into `out`; returns false when nothing should be sent.
    pub fn answer_udp(&self, packet: &[u8], source: SocketAddr, out: &mut Vec<u8>) -> bool {
        matches!(
            self.answer(packet, source, Transport::Udp, out),
            Answered::Message
        )
    }

    /// The snapshot to answer a batch of queries from: loading it once a batch rather than
    /// once a query saves the load's cost (about 50 instructions) for all but the first.
    pub fn snapshot(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.snapshots.load()
    }

    /// `answer` through this thread's answer cache (`cache`): the same bytes, cheaper for a
    /// question answered before, from `snapshot`, which the caller loads (`snapshot`) once for
    /// a batch of queries.
    pub fn answer_cached(
        &self,
        snapshot: &Arc<Snapshot>,
        cache: &mut AnswerCache,
        packet: &[u8],
        source: SocketAddr,
        transport: Transport,
        out: &mut Vec<u8>,
    ) -> Answered {
        let question = match cache.lookup(
            packet,
            snapshot,
            self.edns[0].max_payload(),
            transport,
            self.edns_nsid.is_some(),
            peek_rotation(),
            out,
        ) {
            Lookup::Hit => {
                next_rotation();
                return Answered::Message;
            }
            Lookup::Miss(question) => question,
            Lookup::Uncacheable => {
                return self.answer_in(snapshot, packet, source, transport, out, None)
            }
        };
        let mut fill = None;
        let answered = self.answer_in(snapshot, packet, source, transport, out, Some(&mut fill));
        if let Some(fill) = fill {
            cache.fill(question, packet, out, snapshot, fill);
        }
        answered
    }

    /// Answers one request into `out`, or returns the transfer to stream.
    pub fn answer(
        &self,
        packet: &[u8],
        source: SocketAddr,
        transport: Transport,
        out: &mut Vec<u8>,
    ) -> Answered {
        self.answer_in(&self.snapshots.load(), packet, source, transport, out, None)
    }

    /// Answers from `snapshot`; when the response is a whole answer (nothing truncated or
    /// left out) and `fill` is given, says there what the answer cache needs to keep it.
    fn answer_in(
        &self,
        snapshot: &Arc<Snapshot>,
        packet: &[u8],
        source: SocketAddr,
        transport: Transport,
        out: &mut Vec<u8>,
        fill: Option<&mut Option<Fill>>,
    ) -> Answered {
        out.clear();
        let Ok(header) = Header::read(&mut BinDecoder::new(packet)) else {
            return Answered::Nothing;
        };
        if header.metadata.message_type == MessageType::Response {
            return Answered::Nothing;
        }
        let protocol = match transport {
            Transport::Udp => Protocol::Udp,
            Transport::Tcp => Protocol::Tcp,
        };
        let request = match Request::from_bytes(packet.to_vec(), source, protocol) {
            // The question is echoed as sent, so its name must not point anywhere: a pointer
            // (necessarily into the header) would point into our header instead, and the
            // response would not parse (found by the `dns_message` fuzz target).
            Ok(request) if plain_question(request.queries.as_bytes()) => request,
            _ => {
                encode_header_only(&header.metadata, ResponseCode::FormErr, out);
                return Answered::Message;
            }
        };
        let limit = response_limit(
            request.edns.as_ref().map(Edns::max_payload),
            self.edns[0].max_payload(),
            transport,
        );
        let edns = self.response_edns(&request);
        let mut signing = None;
        if request.signature.is_some() {
            let now = tsig::now();
            let Some(checked) = tsig::check_request(packet, |name| snapshot.tsig_key(name), now)
            else {
                encode_header_only(&header.metadata, ResponseCode::FormErr, out);
                return Answered::Message;
            };
            metrics::counter!("healthdns_tsig_total", "result" => checked.label()).increment(1);
            match checked {
                tsig::Checked::Verified(verified) => signing = Some(verified),
                tsig::Checked::Failed(failure) => {
                    static GATE: crate::dns::LogGate = crate::dns::LogGate::new();
                    if let Some(suppressed) = GATE.allow() {
                        tracing::warn!(%source, key = %failure.key_name(), error = ?failure.error, suppressed, "TSIG check failed; answered NOTAUTH (at most one line per 10 s; see healthdns_tsig_total)");
                    }
                    let mut metadata = Metadata::response_from_request(&request.metadata);
                    metadata.response_code = ResponseCode::NotAuth;
                    let limit = without_room(limit, failure.record_length());
                    let plan = Plan::Error(ResponseCode::NotAuth);
                    self.encode(&request, edns, metadata, &plan, limit, source, out, None);
                    failure.append(out, now);
                    return Answered::Message;
                }
            }
        }
        let key = signing.as_ref().map(|signing| signing.key().name());
        let (metadata, plan) = self.plan(snapshot, &request, source, transport, key);
        if let Plan::Transfer(transfer) = plan {
            return Answered::Transfer(transfer.signed(signing));
        }
        // Room for the TSIG, when the response is signed.
        let limit = match &signing {
            Some(signing) => without_room(limit, signing.key().record_length()),
            None => limit,
        };
        let fill = if signing.is_some() { None } else { fill };
        let answered = self.encode(&request, edns, metadata, &plan, limit, source, out, fill);
        if let (Some(mut signing), Answered::Message) = (signing, &answered) {
            signing.sign(out, tsig::now());
        }
        answered
    }

    /// Encodes a planned response into `out` within `limit` bytes: whole, without the
    /// optional additional records, or truncated, in that order of preference.
    #[allow(clippy::too_many_arguments)]
    // Inlined into `answer_in` as when it had one caller (the NOTAUTH answer to a failed TSIG
    // is the other): bench/instructions.sh counted 10 more instructions a query without it.
    #[inline(always)]
    fn encode(
        &self,
        request: &MessageRequest,
        edns: Option<&Edns>,
        metadata: Metadata,
        plan: &Plan<'_>,
        limit: u16,
        source: SocketAddr,
        out: &mut Vec<u8>,
        fill: Option<&mut Option<Fill>>,
    ) -> Answered {
        let mut fit = match plan {
            Plan::Answer(_) => Fit::Everything,
            _ => Fit::Truncated,
        };
        loop {
            out.clear();
            let mut encoder = BinEncoder::new(out);
            encoder.set_max_size(limit);
            let mut metadata = metadata;
            if fit == Fit::Truncated {
                metadata.truncation = matches!(plan, Plan::Answer(_));
            }
            match emit(request, edns, metadata, plan, fit, &mut encoder) {
                Ok(info) if !info.metadata.truncation && fit == Fit::Everything => {
                    if let (Some(fill), Plan::Answer(response)) = (fill, plan) {
                        *fill = response.cache_fill();
                    }
                    return Answered::Message;
                }
                Ok(info) if !info.metadata.truncation || fit == Fit::Truncated => {
                    return Answered::Message
                }
                Ok(info) => {
                    let Plan::Answer(response) = plan else {
                        unreachable!("errors are encoded without records")
                    };
                    let counts = info.counts;
                    let core_fits = usize::from(counts.answers) == response.answer.len()
                        && usize::from(counts.authorities) == response.authority.len();
                    fit = if fit == Fit::Everything && core_fits && !response.additional_required {
                        Fit::WithoutAdditional
                    } else {
                        Fit::Truncated
                    };
                }
                Err(error) => {
                    metrics::counter!("healthdns_encode_failures_total").increment(1);
                    static GATE: crate::dns::LogGate = crate::dns::LogGate::new();
                    if let Some(suppressed) = GATE.allow() {
                        tracing::warn!(%error, %source, suppressed, "cannot encode a response; sending SERVFAIL");
                    }
                    encode_header_only(&request.metadata, ResponseCode::ServFail, out);
                    return Answered::Message;
                }
            }
        }
    }
}

/// `limit` less the room a TSIG record of `room` bytes needs, never below half the DNS minimum.
fn without_room(limit: u16, room: usize) -> u16 {
    limit
        .saturating_sub(u16::try_from(room).unwrap_or(u16::MAX))
        .max(MIN_UDP_PAYLOAD / 2)
}

/// Encodes the response for a plan, leaving out what `fit` says does not fit; returns the
/// header written (counts, and whether a section was cut short).
fn emit(
    request: &MessageRequest,
    edns: Option<&Edns>,
    metadata: Metadata,
    plan: &Plan<'_>,
    fit: Fit,
    encoder: &mut BinEncoder<'_>,
) -> Result<Header, hickory_proto::ProtoError> {
    let (answers, authorities, additionals) = match (plan, fit) {
        (Plan::Answer(response), Fit::Everything) => (
            response.answer.iter(),
            response.authority.iter(),
            response.additional.iter(),
        ),
        (Plan::Answer(response), Fit::WithoutAdditional) => (
            response.answer.iter(),
            response.authority.iter(),
            SectionIter::empty(),
        ),
        _ => (
            SectionIter::empty(),
            SectionIter::empty(),
            SectionIter::empty(),
        ),
    };
    hickory_proto::op::emit_message_parts(
        &metadata,
        &mut EchoedQuestion(request.queries.as_bytes(), request.queries.len()),
        &mut { answers },
        &mut { authorities },
        &mut { additionals },
        edns,
        None,
        encoder,
    )
}

/// The question section as the client sent it (0x20 case kept), with its name registered for
/// compression. hickory's own echo registers the whole question, type and class included, so
/// no later name could point into it: every owner name was written out in full, 10 to 15
/// bytes per answer more than NSD or gdnsd send.
struct EchoedQuestion<'q>(&'q [u8], usize);

impl hickory_proto::op::EmitAndCount for EchoedQuestion<'_> {
    fn emit(&mut self, encoder: &mut BinEncoder<'_>) -> Result<usize, hickory_proto::ProtoError> {
        use hickory_proto::serialize::binary::NameEncoding;
        let start = encoder.offset();
        encoder.emit_vec(self.0)?;
        if self.1 != 1 || !matches!(encoder.name_encoding(), NameEncoding::Compressed) {
            return Ok(self.1);
        }
        // One question: a name of plain labels (no pointer), then type and class.
        let name = &self.0[..self.0.len().saturating_sub(4)];
        let mut labels: smallvec::SmallVec<[usize; 8]> = smallvec::SmallVec::new();
        let end = crate::dns::plain_name_end(name, 0, |label| labels.push(label));
        if let Some(end) = end.filter(|end| end + 1 == name.len()) {
            for label in labels {
                encoder.store_label_pointer(start + label, start + end);
            }
        }
        Ok(self.1)
    }
}

/// True when `question` (the question section as sent) is empty or starts with a name of
/// plain labels, without compression pointers or other label types.
fn plain_question(question: &[u8]) -> bool {
    question.is_empty() || crate::dns::plain_name_end(question, 0, |_| {}).is_some()
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::Name;

    use super::*;
    use crate::zone::zonefile::parse_zone;

    fn handler() -> DnsHandler {
        let mut zone = String::from("$TTL 300\n@ SOA ns h 1 2 3 4 30\n@ NS ns\nns A 192.0.2.1\n");
        for index in 0..60 {
            zone.push_str(&format!("big A 192.0.2.{index}\n"));
        }
        let origin = Name::from_ascii("example.test.").unwrap();
        let data = parse_zone(&zone, Path::new("t.zone"), &origin).unwrap();
        DnsHandler::new(
            crate::zone::snapshot::SnapshotWriter::new(Snapshot::build(
                &[data],
                &Default::default(),
            ))
            .reader(),
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

    /// A question whose name is a compression pointer (into the header) gets FORMERR: echoed,
    /// it would point into our header and the response would not parse. Found by fuzzing
    /// (`fuzz/artifacts/dns_message/crash-babde27f...`).
    #[test]
    fn a_question_with_a_compression_pointer_is_formerr() {
        let handler = handler();
        let crash: &[u8] = &[
            0x01, 0x3a, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xc0, 0x00,
            0xbe, 0xff, 0xff, 0xff, 0xf6, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x08, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x01,
        ];
        for transport in [Transport::Udp, Transport::Tcp] {
            let mut out = Vec::new();
            let answered =
                handler.answer(crash, "127.0.0.1:9".parse().unwrap(), transport, &mut out);
            assert!(matches!(answered, Answered::Message));
            let response = Message::from_vec(&out).expect("the response parses");
            assert_eq!(response.metadata.response_code, ResponseCode::FormErr);
        }
        // A plain name followed by a pointer elsewhere is refused the same way.
        let mut message = Message::new(3, MessageType::Query, OpCode::Query);
        message.add_query(Query::query(
            Name::from_ascii("ns.example.test.").unwrap(),
            RecordType::A,
        ));
        let mut bytes = message.to_vec().unwrap();
        let end = bytes.len() - 4;
        bytes.splice(end - 1..end, [0xc0, 0x0c]);
        let mut out = Vec::new();
        handler.answer(
            &bytes,
            "127.0.0.1:9".parse().unwrap(),
            Transport::Udp,
            &mut out,
        );
        let response = Message::from_vec(&out).expect("the response parses");
        assert_eq!(response.metadata.response_code, ResponseCode::FormErr);
    }

    /// Names after the question point into it, whatever the question's case: answers are
    /// as small as NSD's and gdnsd's (header, question, then 16 bytes an address record,
    /// 41 for the negative SOA: owner pointer, 10 fixed, 29 of RDATA with two pointers).
    #[test]
    fn later_names_point_into_the_question() {
        let handler = handler();
        for (name, record_type, expected) in [
            ("ns.example.test.", RecordType::A, 12 + 21 + 16),
            ("NS.Example.TEST.", RecordType::A, 12 + 21 + 16),
            ("nope.example.test.", RecordType::A, 12 + 23 + 41),
            ("example.test.", RecordType::MX, 12 + 18 + 41),
        ] {
            let mut message = Message::new(7, MessageType::Query, OpCode::Query);
            message.add_query(Query::query(Name::from_ascii(name).unwrap(), record_type));
            let mut out = Vec::new();
            assert!(handler.answer_udp(
                &message.to_vec().unwrap(),
                "127.0.0.1:9".parse().unwrap(),
                &mut out
            ));
            assert_eq!(out.len(), expected, "{name} {record_type}: {out:?}");
            let response = Message::from_vec(&out).unwrap();
            assert_eq!(response.queries[0].name().to_string(), name, "case echoed");
        }
    }
}
