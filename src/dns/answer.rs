//! Deciding what an authoritative answer contains: pure, no sockets, no clock.
//!
//! Why this exists: the rules of authoritative answering (RFC 1034 §4.3.2, RFC 2308, RFC 4592,
//! RFC 6604, RFC 8482) are the product's correctness, and they should be testable with nothing
//! but a snapshot and a question. `resolve` returns a `Response` that borrows RRsets from the
//! snapshot, so the per-query path copies no records; the wire encoding lives in `handler`.
//!
//! Documented rules:
//! - A name under no served zone: REFUSED.
//! - A name at or below a zone cut: a referral (NS in authority, glue in additional, AA=0),
//!   except a DS query at the cut, which the parent side answers authoritatively.
//! - A CNAME is followed inside the same zone, up to `MAX_CHAIN` links; the RCODE is that of
//!   the last name in the chain (RFC 6604).
//! - Wildcards synthesize only where the name does not exist at all (not over existing names
//!   or empty non-terminals), with the query name as owner.
//! - ANY gets one RRset (RFC 8482 §4.1): the name's lowest-numbered type.
//! - A/AAAA RRsets are rotated by the caller-supplied `rotation`, so load spreads.
//! - A/AAAA at a pool name whose pool answers SERVFAIL (all down, `all_down = "servfail"`):
//!   SERVFAIL without AA.

use std::sync::Arc;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{Name, Record, RecordType};
use smallvec::SmallVec;

use crate::zone::snapshot::{is_within, parent_key, Node, RrSet, Snapshot, Zone, MAX_NAME_LEN};

/// How many CNAME links are followed inside a zone before the answer stops.
pub const MAX_CHAIN: usize = 8;

/// A run of records in a section: borrowed from the snapshot, rebuilt from a stored RRset
/// (both optionally rotated), or synthesized for this query (wildcards).
#[derive(Debug, Clone)]
pub enum Part<'a> {
    Shared {
        records: &'a [Record],
        rotate: usize,
    },
    Rebuilt {
        records: Vec<Record>,
        rotate: usize,
    },
    Synthesized(Vec<Record>),
}

/// One section of a response.
#[derive(Debug, Clone, Default)]
pub struct Section<'a> {
    parts: SmallVec<[Part<'a>; 3]>,
}

impl<'a> Section<'a> {
    fn push_shared(&mut self, records: &'a [Record], rotate: usize) {
        if !records.is_empty() {
            self.parts.push(Part::Shared { records, rotate });
        }
    }

    /// Adds `set`'s records, owned by `owner`, the first at index `rotate`.
    fn push_set(&mut self, set: &RrSet, owner: &Name, rotate: usize) {
        if !set.is_empty() {
            let records = set.records(owner).collect();
            self.parts.push(Part::Rebuilt { records, rotate });
        }
    }

    /// The records in order.
    pub fn iter(&self) -> SectionIter<'_> {
        SectionIter {
            parts: &self.parts,
            part: 0,
            index: 0,
        }
    }

    /// How many records the section holds.
    pub fn len(&self) -> usize {
        self.parts
            .iter()
            .map(|part| match part {
                Part::Shared { records, .. } => records.len(),
                Part::Rebuilt { records, .. } | Part::Synthesized(records) => records.len(),
            })
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }
}

/// Iterates a section's records, applying each part's rotation.
#[derive(Debug, Clone)]
pub struct SectionIter<'s> {
    parts: &'s [Part<'s>],
    part: usize,
    index: usize,
}

impl SectionIter<'_> {
    /// An iterator over no records.
    pub fn empty() -> Self {
        Self {
            parts: &[],
            part: 0,
            index: 0,
        }
    }
}

impl<'s> Iterator for SectionIter<'s> {
    type Item = &'s Record;

    fn next(&mut self) -> Option<&'s Record> {
        loop {
            let part = self.parts.get(self.part)?;
            let (records, rotate) = match part {
                Part::Shared { records, rotate } => (*records, *rotate),
                Part::Rebuilt { records, rotate } => (records.as_slice(), *rotate),
                Part::Synthesized(records) => (records.as_slice(), 0),
            };
            if self.index < records.len() {
                let record = &records[(self.index + rotate) % records.len()];
                self.index += 1;
                return Some(record);
            }
            self.part += 1;
            self.index = 0;
        }
    }
}

/// What an authoritative server says to one question.
#[derive(Debug, Clone)]
pub struct Response<'a> {
    pub rcode: ResponseCode,
    pub authoritative: bool,
    pub answer: Section<'a>,
    pub authority: Section<'a>,
    pub additional: Section<'a>,
    /// True for referrals: glue that does not fit means the response must be truncated
    /// (RFC 9471), rather than sent without it.
    pub additional_required: bool,
    /// The zone that answered (None: REFUSED, or not from a zone).
    pub zone: Option<&'a Arc<Zone>>,
    /// True when the answer read a name the zone's overlay replaces (a pool name, the apex,
    /// a name whose additional addresses are a pool's): it may change with every version.
    pub volatile: bool,
}

impl<'a> Response<'a> {
    /// An authoritative answer holding only `zone`'s SOA (IXFR over UDP, RFC 1995 §2).
    pub fn soa_only(zone: &'a crate::zone::snapshot::Zone) -> Self {
        let mut response = Self::new(ResponseCode::NoError, true);
        response
            .answer
            .push_shared(std::slice::from_ref(zone.soa()), 0);
        response
    }

    /// An authoritative NOERROR answer holding `record` alone (CH identity queries).
    pub fn single(record: &'a Record) -> Self {
        let mut response = Self::new(ResponseCode::NoError, true);
        response.answer.push_shared(std::slice::from_ref(record), 0);
        response
    }

    /// An authoritative NOERROR answer with no record (NODATA with no SOA: CH identity names
    /// asked for another type).
    pub fn empty_authoritative() -> Self {
        Self::new(ResponseCode::NoError, true)
    }

    fn new(rcode: ResponseCode, authoritative: bool) -> Self {
        Self {
            rcode,
            authoritative,
            answer: Section::default(),
            authority: Section::default(),
            additional: Section::default(),
            additional_required: false,
            zone: None,
            volatile: true,
        }
    }

    /// What the answer cache keeps with this response's bytes, or None when it must not
    /// keep them (records synthesized in a rotated order).
    pub fn cache_fill(&self) -> Option<crate::dns::cache::Fill> {
        let mut rotated = Vec::new();
        let mut index = 0;
        for part in &self.answer.parts {
            // Stored records are rotated in the order stored, which the cache can redo;
            // synthesized ones were rotated when built.
            let (records, stored) = match part {
                Part::Shared { records, .. } => (*records, true),
                Part::Rebuilt { records, .. } => (records.as_slice(), true),
                Part::Synthesized(records) => (records.as_slice(), false),
            };
            let rotates = records.len() > 1
                && records
                    .iter()
                    .any(|record| matches!(record.record_type(), RecordType::A | RecordType::AAAA));
            if rotates {
                if !stored {
                    return None;
                }
                rotated.push((index, records.to_vec()));
            }
            index += records.len();
        }
        Some(crate::dns::cache::Fill {
            zone: self.zone.cloned(),
            volatile: self.volatile,
            rotated,
        })
    }

    /// REFUSED, for names under no served zone.
    pub fn refused() -> Self {
        Self::new(ResponseCode::Refused, false)
    }
}

/// The question, as the resolver needs it.
#[derive(Debug, Clone, Copy)]
pub struct Question<'q> {
    /// The query name as received (case kept), owner of synthesized records.
    pub name: &'q Name,
    pub record_type: RecordType,
}

/// Answers `question` from `snapshot`. `rotation` picks the first A/AAAA of each RRset.
pub fn resolve<'a>(
    snapshot: &'a Snapshot,
    question: Question<'_>,
    rotation: usize,
) -> Response<'a> {
    let mut key_buffer = [0u8; MAX_NAME_LEN + 2];
    let length = crate::zone::snapshot::write_key(question.name, &mut key_buffer);
    let key = &key_buffer[..length];
    let Some(mut zone) = snapshot.find_zone(key) else {
        return Response::refused();
    };
    // RFC 4035 §3.1.4.1: DS at a child apex belongs to the parent zone, when we serve it.
    if question.record_type == RecordType::DS && key == zone.key() {
        if let Some(parent) = parent_key(key).and_then(|parent| snapshot.find_zone(parent)) {
            zone = parent;
        }
    }
    let mut response = Response::new(ResponseCode::NoError, true);
    response.zone = Some(zone);
    response.volatile = false;
    let mut resolver = Resolver {
        zone,
        record_type: question.record_type,
        rotation,
        response: &mut response,
    };
    resolver.lookup(key, question.name, 0);
    response
}

/// How a name with no node of its own is answered.
pub enum Absent<'a> {
    /// By referral from the cut whose key starts at this offset of the name's key.
    Referral(usize),
    /// From this wildcard node, with the name as owner.
    Wildcard(&'a Node),
    /// NXDOMAIN with the negative SOA.
    NxDomain,
}

/// Answers for `key`, a name in `zone` with no node: finds the closest encloser (it exists,
/// the apex at worst), then a cut at or above it, or its wildcard (RFC 4592 §3.3.1). `node`
/// finds a node by key; the apex is not looked up (it exists and is never a cut), nor are
/// wildcards in a zone that has none. The resolver and the answer cache's shared NXDOMAIN
/// both use this, so they cannot disagree on what does not exist.
pub fn absent<'a>(
    zone: &Zone,
    key: &[u8],
    mut node: impl FnMut(&[u8]) -> Option<&'a Node>,
) -> Absent<'a> {
    let apex_len = zone.key().len();
    let mut encloser = parent_key(key);
    while let Some(candidate) = encloser {
        if candidate.len() < apex_len {
            break;
        }
        if candidate.len() > apex_len {
            let Some(found) = node(candidate) else {
                encloser = parent_key(candidate);
                continue;
            };
            if let Some(cut_len) = found.cut_len() {
                return Absent::Referral(key.len() - cut_len);
            }
        }
        if zone.has_wildcards() {
            let mut wildcard = [0u8; MAX_NAME_LEN + 4];
            wildcard[0] = 1;
            wildcard[1] = b'*';
            wildcard[2..2 + candidate.len()].copy_from_slice(candidate);
            if let Some(source) = node(&wildcard[..2 + candidate.len()]) {
                return Absent::Wildcard(source);
            }
        }
        break;
    }
    Absent::NxDomain
}

/// True when `key`, in `zone`, is answered NXDOMAIN whatever the type (DS and ANY aside,
/// which the answer cache never takes): no node, no cut above it, no wildcard.
pub fn is_nxdomain(zone: &Zone, key: &[u8]) -> bool {
    zone.node(key).is_none()
        && matches!(
            absent(zone, key, |candidate| zone.node(candidate)),
            Absent::NxDomain
        )
}

struct Resolver<'a, 'r> {
    zone: &'a Arc<Zone>,
    record_type: RecordType,
    rotation: usize,
    response: &'r mut Response<'a>,
}

impl<'a> Resolver<'a, '_> {
    /// The node at `key`, noting when it is one the zone's overlay replaces.
    fn node(&mut self, key: &[u8]) -> Option<&'a Node> {
        let (node, overlaid) = self.zone.node_tracked(key);
        self.response.volatile |= overlaid;
        node
    }

    /// Answers for `key` (owner name `name`), `depth` links into a CNAME chain.
    fn lookup(&mut self, key: &[u8], name: &Name, depth: usize) {
        let zone = self.zone;
        if let Some(node) = self.node(key) {
            if let Some(cut_len) = node.cut_len() {
                let at_cut = cut_len == key.len();
                if !(at_cut && self.record_type == RecordType::DS) {
                    if depth == 0 {
                        self.referral(&key[key.len() - cut_len..]);
                    }
                    return;
                }
                // DS at the cut: answered from the parent side, authoritatively.
                match node.rrset(RecordType::DS) {
                    Some(set) => self.response.answer.push_set(set, name, 0),
                    None => self.negative(ResponseCode::NoError),
                }
                return;
            }
            self.answer_node(node, name, false, depth);
            return;
        }

        match absent(zone, key, |candidate| self.node(candidate)) {
            Absent::Referral(cut_at) => {
                if depth == 0 {
                    self.referral(&key[cut_at..]);
                }
            }
            Absent::Wildcard(source) => self.answer_node(source, name, true, depth),
            Absent::NxDomain => self.negative(ResponseCode::NXDomain),
        }
    }

    /// Answers from an existing node for `owner`; `synthesize` for wildcard answers.
    fn answer_node(&mut self, node: &'a Node, owner: &Name, synthesize: bool, depth: usize) {
        if node.servfail_addresses() && matches!(self.record_type, RecordType::A | RecordType::AAAA)
        {
            // A pool with every address down and `all_down = "servfail"`.
            self.response.rcode = ResponseCode::ServFail;
            self.response.authoritative = false;
            return;
        }
        let wanted = if self.record_type == RecordType::ANY {
            node.rrsets().first()
        } else {
            node.rrset(self.record_type)
        };
        if let Some(set) = wanted {
            self.add_answer(set, owner, synthesize);
            self.response.additional.push_shared(set.additional(), 0);
            return;
        }
        if let Some(cname) = node.rrset(RecordType::CNAME) {
            self.add_answer(cname, owner, synthesize);
            let Some((target, target_key)) = cname.cname_target() else {
                return;
            };
            if depth + 1 < MAX_CHAIN && is_within(target_key, self.zone.key()) {
                self.lookup(target_key, target, depth + 1);
            }
            return;
        }
        self.negative(ResponseCode::NoError);
    }

    /// Adds `set` to the answer with `owner`: a wildcard's synthesized records are rotated
    /// here, the others when encoded (the answer cache rotates those itself).
    fn add_answer(&mut self, set: &'a RrSet, owner: &Name, synthesize: bool) {
        let rotate = match set.record_type {
            RecordType::A | RecordType::AAAA => self.rotation % set.len().max(1),
            _ => 0,
        };
        if synthesize {
            let mut records: Vec<Record> = set.records(owner).collect();
            records.rotate_left(rotate);
            self.response.answer.parts.push(Part::Synthesized(records));
        } else {
            self.response.answer.push_set(set, owner, rotate);
        }
    }

    fn negative(&mut self, rcode: ResponseCode) {
        self.response.rcode = rcode;
        self.response
            .authority
            .push_shared(self.zone.negative_soa(), 0);
    }

    fn referral(&mut self, cut_key: &[u8]) {
        let node = self.node(cut_key).expect("cut nodes exist");
        let ns = node.rrset(RecordType::NS).expect("cuts have NS");
        self.response.authoritative = false;
        self.response
            .authority
            .push_set(ns, &crate::zone::snapshot::key_name(cut_key), 0);
        self.response.additional.push_shared(ns.additional(), 0);
        self.response.additional_required = true;
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::zone::zonefile::parse_zone;

    const ZONE: &str = "$TTL 300\n@ SOA ns h 1 2 3 4 30\n@ NS ns\nns A 192.0.2.1\n\
        www A 192.0.2.10\nwww A 192.0.2.11\nwww A 192.0.2.12\nalias CNAME www\n\
        *.wild TXT \"w\"\nx.ent A 192.0.2.2\nsub NS ns.sub\nns.sub A 192.0.2.3\n";

    fn snapshot() -> Snapshot {
        let origin = Name::from_ascii("example.test.").unwrap();
        Snapshot::build(
            &[parse_zone(ZONE, Path::new("t.zone"), &origin).unwrap()],
            &Default::default(),
        )
    }

    fn ask<'a>(snapshot: &'a Snapshot, name: &str, record_type: RecordType) -> Response<'a> {
        let name = Name::from_ascii(name).unwrap();
        resolve(
            snapshot,
            Question {
                name: &name,
                record_type,
            },
            0,
        )
    }

    fn answer_texts(section: &Section<'_>) -> Vec<String> {
        section
            .iter()
            .map(|record| format!("{} {}", record.name, record.data))
            .collect()
    }

    #[test]
    fn exact_match_is_authoritative() {
        let snapshot = snapshot();
        let response = ask(&snapshot, "WWW.example.test.", RecordType::A);
        assert_eq!(response.rcode, ResponseCode::NoError);
        assert!(response.authoritative);
        assert_eq!(response.answer.len(), 3);
        assert!(response.authority.is_empty());
    }

    #[test]
    fn negative_answers_carry_the_minimum_ttl_soa() {
        let snapshot = snapshot();
        let nxdomain = ask(&snapshot, "nope.example.test.", RecordType::A);
        assert_eq!(nxdomain.rcode, ResponseCode::NXDomain);
        let soa: Vec<_> = nxdomain.authority.iter().collect();
        assert_eq!(soa.len(), 1);
        assert_eq!(soa[0].ttl, 30);
        let nodata = ask(&snapshot, "www.example.test.", RecordType::MX);
        assert_eq!(nodata.rcode, ResponseCode::NoError);
        assert!(nodata.answer.is_empty());
        assert_eq!(nodata.authority.len(), 1);
        let ent = ask(&snapshot, "ent.example.test.", RecordType::A);
        assert_eq!(ent.rcode, ResponseCode::NoError, "empty non-terminal");
    }

    #[test]
    fn wildcard_synthesis_and_its_limits() {
        let snapshot = snapshot();
        let response = ask(&snapshot, "a.b.wild.example.test.", RecordType::TXT);
        assert_eq!(
            answer_texts(&response.answer),
            vec!["a.b.wild.example.test. w"]
        );
        let response = ask(&snapshot, "wild.example.test.", RecordType::TXT);
        assert!(
            response.answer.is_empty(),
            "the wildcard's parent is an ENT: NODATA"
        );
        assert_eq!(response.rcode, ResponseCode::NoError);
    }

    #[test]
    fn referral_below_a_cut() {
        let snapshot = snapshot();
        let response = ask(&snapshot, "a.b.sub.example.test.", RecordType::A);
        assert!(!response.authoritative);
        assert!(response.additional_required);
        assert_eq!(
            answer_texts(&response.authority),
            vec!["sub.example.test. ns.sub.example.test."]
        );
        assert_eq!(
            answer_texts(&response.additional),
            vec!["ns.sub.example.test. 192.0.2.3"]
        );
        let glue = ask(&snapshot, "ns.sub.example.test.", RecordType::A);
        assert!(!glue.authoritative, "glue is not answered authoritatively");
        assert!(glue.answer.is_empty());
    }

    #[test]
    fn cname_is_followed() {
        let snapshot = snapshot();
        let response = ask(&snapshot, "alias.example.test.", RecordType::A);
        assert_eq!(response.answer.len(), 4);
    }

    #[test]
    fn rotation_changes_the_first_address_only() {
        let snapshot = snapshot();
        let name = Name::from_ascii("www.example.test.").unwrap();
        let question = Question {
            name: &name,
            record_type: RecordType::A,
        };
        let orders: Vec<Vec<String>> = (0..3)
            .map(|rotation| answer_texts(&resolve(&snapshot, question, rotation).answer))
            .collect();
        assert_ne!(orders[0][0], orders[1][0]);
        assert_ne!(orders[1][0], orders[2][0]);
        // Each order is the same set, rotated: the zone's order shifted by the rotation.
        let mut expected = orders[0].clone();
        for order in &orders {
            let mut sorted = order.clone();
            sorted.sort();
            let mut all = orders[0].clone();
            all.sort();
            assert_eq!(sorted, all, "the same records in every order");
            assert_eq!(order, &expected, "a rotation of the previous order");
            expected.rotate_left(1);
        }
    }

    #[test]
    fn outside_every_zone_is_refused() {
        let snapshot = snapshot();
        assert_eq!(
            ask(&snapshot, "example.org.", RecordType::A).rcode,
            ResponseCode::Refused
        );
        assert_eq!(
            ask(&snapshot, "test.", RecordType::A).rcode,
            ResponseCode::Refused
        );
    }
}
