//! The immutable, ready-to-answer view of every served zone.
//!
//! Why this exists: queries must be answered without locks, without scanning a zone and without
//! building records per query. A `Snapshot` is built once (at start, and later whenever health
//! or configuration changes what is served) and then only read: every query loads the current
//! one from an `ArcSwap` and answers from it, while one writer may build and swap in the next.
//!
//! Names are keyed by their lowercase wire form. The wire form of a parent is a suffix of the
//! wire form of its child (`\3www\7example\4test\0` ends with `\7example\4test\0`), so walking
//! up a query name is slicing, and every lookup is one hash probe: O(1) in zone size.
//! Everything an answer needs is precomputed here: empty non-terminals, zone cuts, referral
//! glue, additional-section addresses and the negative-answer SOA.

use std::net::IpAddr;
use std::sync::Arc;

use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use rustc_hash::FxHashMap;

use crate::health::{Answers, NameAnswer};
use crate::zonefile::ZoneData;

/// The longest wire-format name (RFC 1035 §3.1).
pub const MAX_NAME_LEN: usize = 255;

/// A lowercase wire-format name.
pub type NameKey = Box<[u8]>;

/// Writes the lowercase wire form of `name` into `buffer` and returns its length.
pub fn write_key(name: &Name, buffer: &mut [u8; MAX_NAME_LEN + 2]) -> usize {
    let mut length = 0;
    for label in name.iter() {
        buffer[length] = label.len() as u8;
        length += 1;
        for byte in label {
            buffer[length] = byte.to_ascii_lowercase();
            length += 1;
        }
    }
    buffer[length] = 0;
    length + 1
}

/// The lowercase wire form of `name`, as an owned key.
pub fn name_key(name: &Name) -> NameKey {
    let mut buffer = [0u8; MAX_NAME_LEN + 2];
    let length = write_key(name, &mut buffer);
    buffer[..length].into()
}

/// The key of `key`'s parent, or `None` at the root.
pub fn parent_key(key: &[u8]) -> Option<&[u8]> {
    match key.first() {
        Some(0) | None => None,
        Some(&length) => key.get(1 + length as usize..),
    }
}

/// True when `key` is `ancestor` or a name below it.
pub fn is_within(key: &[u8], ancestor: &[u8]) -> bool {
    let mut candidate = Some(key);
    while let Some(suffix) = candidate {
        if suffix.len() == ancestor.len() {
            return suffix == ancestor;
        }
        if suffix.len() < ancestor.len() {
            return false;
        }
        candidate = parent_key(suffix);
    }
    false
}

/// Every served zone, ready to answer.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    zones: FxHashMap<NameKey, Arc<Zone>>,
}

impl Snapshot {
    /// Builds the snapshot from loaded zones and the pools' answers; later zones with the same
    /// origin replace earlier.
    pub fn build(zones: &[ZoneData], answers: &Answers) -> Self {
        let origins: Vec<&Name> = zones.iter().map(|zone| &zone.origin).collect();
        let zones = zones
            .iter()
            .map(|zone| {
                let built = Zone::build(zone, &answers_in_zone(&zone.origin, &origins, answers));
                (built.key.clone(), Arc::new(built))
            })
            .collect();
        Self { zones }
    }

    /// This snapshot with `zones` rebuilt from their data and `answers`; the other zones are
    /// shared, not copied.
    pub fn rebuild(&self, all_zones: &[ZoneData], rebuilt: &[usize], answers: &Answers) -> Self {
        let origins: Vec<&Name> = all_zones.iter().map(|zone| &zone.origin).collect();
        let mut next = self.clone();
        for index in rebuilt {
            let data = &all_zones[*index];
            let built = Zone::build(data, &answers_in_zone(&data.origin, &origins, answers));
            next.zones.insert(built.key.clone(), Arc::new(built));
        }
        next
    }

    /// The most specific served zone that contains `key`.
    pub fn find_zone(&self, key: &[u8]) -> Option<&Zone> {
        let mut candidate = Some(key);
        while let Some(suffix) = candidate {
            if let Some(zone) = self.zones.get(suffix) {
                return Some(zone);
            }
            candidate = parent_key(suffix);
        }
        None
    }
}

/// The index of the most specific zone (of `origins`) that holds `name`.
pub fn zone_index_of(name: &Name, origins: &[&Name]) -> Option<usize> {
    origins
        .iter()
        .enumerate()
        .filter(|(_, origin)| origin.zone_of(name))
        .max_by_key(|(_, origin)| origin.num_labels())
        .map(|(index, _)| index)
}

/// The answers whose names belong to the zone at `origin`.
fn answers_in_zone<'a>(
    origin: &Name,
    origins: &[&Name],
    answers: &'a Answers,
) -> Vec<(&'a Name, &'a NameAnswer)> {
    answers
        .iter()
        .filter(|(name, _)| {
            zone_index_of(name, origins).is_some_and(|index| origins[index] == origin)
        })
        .collect()
}

/// One zone's names and answers.
#[derive(Debug)]
pub struct Zone {
    pub origin: Name,
    key: NameKey,
    nodes: FxHashMap<NameKey, Node>,
    /// The SOA for negative answers: TTL = min(SOA TTL, SOA MINIMUM) (RFC 2308 §5).
    negative_soa: [Record; 1],
}

impl Zone {
    /// Builds a zone from its file's records, with the A/AAAA at pool names replaced by the
    /// pools' `answers`.
    pub fn build(data: &ZoneData, answers: &[(&Name, &NameAnswer)]) -> Self {
        let key = name_key(&data.origin);
        let pool_names: FxHashMap<NameKey, &NameAnswer> = answers
            .iter()
            .map(|(name, answer)| (name_key(name), *answer))
            .collect();
        let pool_records = answers.iter().flat_map(|(name, answer)| {
            answer.addresses.iter().map(|address| {
                let data = match address {
                    IpAddr::V4(v4) => RData::A(A::from(*v4)),
                    IpAddr::V6(v6) => RData::AAAA(AAAA::from(*v6)),
                };
                Record::from_rdata((*name).clone(), answer.ttl, data)
            })
        });
        let static_records = data
            .records
            .iter()
            .map(|sourced| &sourced.record)
            .filter(|record| {
                !(matches!(record.record_type(), RecordType::A | RecordType::AAAA)
                    && pool_names.contains_key(&name_key(&record.name)))
            });
        let pool_records: Vec<Record> = pool_records.collect();
        let mut nodes: FxHashMap<NameKey, Node> = FxHashMap::default();
        for (owner, answer) in &pool_names {
            nodes.entry(owner.clone()).or_default().servfail_addresses = answer.servfail;
        }
        for record in static_records.chain(&pool_records) {
            let node = nodes.entry(name_key(&record.name)).or_default();
            match node
                .rrsets
                .iter_mut()
                .find(|set| set.record_type == record.record_type())
            {
                Some(set) => {
                    // RFC 2181 §5.2: one TTL per RRset; the first record's wins.
                    let mut record = record.clone();
                    record.ttl = set.records[0].ttl;
                    set.records.push(record);
                }
                None => node.rrsets.push(RrSet::new(record.clone())),
            }
        }
        for node in nodes.values_mut() {
            node.rrsets.sort_by_key(|set| u16::from(set.record_type));
        }
        // Empty non-terminals: every name between an owner and the apex exists (RFC 4592 §2.2.2).
        let owners: Vec<NameKey> = nodes.keys().cloned().collect();
        for owner in &owners {
            let mut ancestor = parent_key(owner);
            while let Some(suffix) = ancestor {
                if suffix.len() <= key.len() {
                    break;
                }
                nodes.entry(suffix.into()).or_default();
                ancestor = parent_key(suffix);
            }
        }
        nodes.entry(key.clone()).or_default();

        // Zone cuts: a non-apex name with NS. Everything at or below the topmost cut is
        // answered by referral from that cut.
        let cuts: rustc_hash::FxHashSet<NameKey> = nodes
            .iter()
            .filter(|(owner, node)| **owner != key && node.rrset(RecordType::NS).is_some())
            .map(|(owner, _)| owner.clone())
            .collect();
        for (owner, node) in nodes.iter_mut() {
            let mut suffix = Some(&owner[..]);
            while let Some(candidate) = suffix {
                if candidate.len() <= key.len() {
                    break;
                }
                if cuts.contains(candidate) {
                    node.cut_len = Some(candidate.len() as u16);
                }
                suffix = parent_key(candidate);
            }
        }

        // Addresses of in-zone targets for the additional section, and referral glue.
        let addresses_of = |target: &Name, with_glue: bool| -> Vec<Record> {
            let Some(node) = nodes.get(&name_key(target)) else {
                return Vec::new();
            };
            if node.cut_len.is_some() && !with_glue {
                return Vec::new();
            }
            [RecordType::A, RecordType::AAAA]
                .iter()
                .filter_map(|record_type| node.rrset(*record_type))
                .flat_map(|set| set.records.iter().cloned())
                .collect()
        };
        let mut additional: Vec<(NameKey, RecordType, Vec<Record>)> = Vec::new();
        for (owner, node) in &nodes {
            for set in &node.rrsets {
                let is_cut = node.cut_len == Some(owner.len() as u16);
                let targets: Vec<&Name> = set.records.iter().filter_map(target_of).collect();
                let mut records = Vec::new();
                for target in targets {
                    for record in addresses_of(target, is_cut) {
                        if !records.contains(&record) {
                            records.push(record);
                        }
                    }
                }
                if !records.is_empty() {
                    additional.push((owner.clone(), set.record_type, records));
                }
            }
        }
        for (owner, record_type, records) in additional {
            let node = nodes.get_mut(&owner).expect("owner exists");
            let set = node
                .rrsets
                .iter_mut()
                .find(|set| set.record_type == record_type)
                .expect("rrset exists");
            set.additional = records;
        }

        let soa = data.soa().clone();
        let minimum = match &soa.data {
            RData::SOA(soa) => soa.minimum,
            _ => unreachable!("soa() returns an SOA"),
        };
        let mut negative_soa = soa;
        negative_soa.ttl = negative_soa.ttl.min(minimum);
        Self {
            origin: data.origin.clone(),
            key,
            nodes,
            negative_soa: [negative_soa],
        }
    }

    /// The lowercase wire form of the origin.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// The node at exactly `key`, if the name exists (as an owner or an empty non-terminal).
    pub fn node(&self, key: &[u8]) -> Option<&Node> {
        self.nodes.get(key)
    }

    /// The SOA to put in the authority section of negative answers.
    pub fn negative_soa(&self) -> &[Record] {
        &self.negative_soa
    }
}

/// The name a record points at whose addresses belong in the additional section.
fn target_of(record: &Record) -> Option<&Name> {
    match &record.data {
        RData::NS(ns) => Some(&ns.0),
        RData::MX(mx) => Some(&mx.exchange),
        RData::SRV(srv) => Some(&srv.target),
        _ => None,
    }
}

/// One name in a zone.
#[derive(Debug, Default)]
pub struct Node {
    /// Sorted by type code; empty for an empty non-terminal.
    rrsets: Vec<RrSet>,
    /// When the name is at or below a zone cut: the key length of the topmost cut above it
    /// (the cut's key is the last `cut_len` bytes of this node's key).
    cut_len: Option<u16>,
    /// A pool name whose pool answers SERVFAIL (all down, `all_down = "servfail"`).
    servfail_addresses: bool,
}

impl Node {
    /// The RRset of `record_type`, if the name has one.
    pub fn rrset(&self, record_type: RecordType) -> Option<&RrSet> {
        self.rrsets
            .iter()
            .find(|set| set.record_type == record_type)
    }

    /// Every RRset at the name, by type code.
    pub fn rrsets(&self) -> &[RrSet] {
        &self.rrsets
    }

    /// True when A and AAAA queries here must get SERVFAIL.
    pub fn servfail_addresses(&self) -> bool {
        self.servfail_addresses
    }

    /// Key length of the zone cut this name is at or below.
    pub fn cut_len(&self) -> Option<usize> {
        self.cut_len.map(usize::from)
    }
}

/// The records of one name and type, with what an answer carrying them adds.
#[derive(Debug)]
pub struct RrSet {
    pub record_type: RecordType,
    pub records: Vec<Record>,
    /// Addresses of in-zone NS/MX/SRV targets (glue, for NS at a cut).
    pub additional: Vec<Record>,
    /// For a CNAME: the target's key, so a chain is followed without building names.
    pub cname_target: Option<(Name, NameKey)>,
}

impl RrSet {
    fn new(record: Record) -> Self {
        let cname_target = match &record.data {
            RData::CNAME(target) => Some((target.0.clone(), name_key(&target.0))),
            _ => None,
        };
        Self {
            record_type: record.record_type(),
            records: vec![record],
            additional: Vec::new(),
            cname_target,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_lowercase_wire_and_parents_are_suffixes() {
        let key = name_key(&Name::from_ascii("WwW.Example.TEST.").unwrap());
        assert_eq!(&*key, b"\x03www\x07example\x04test\x00");
        let parent = parent_key(&key).unwrap();
        assert_eq!(parent, b"\x07example\x04test\x00");
        assert_eq!(parent_key(b"\x00"), None);
    }
}
