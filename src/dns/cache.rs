//! The UDP fast path: a per-thread cache of the general path's own response bytes.
//!
//! Why this exists: hickory's request decoder and response encoder cost most of a query
//! (bench/speed.sh, bench/instructions.sh). Most queries repeat a question the thread has
//! answered before, so each UDP thread keeps the bytes the general path (`handler`) produced
//! for a question and, next time, parses the header, the question and the OPT record by hand,
//! copies the bytes and patches what differs from query to query. This is the design of
//! PowerDNS's packet cache, not gdnsd's answers built at load time: building every (name,
//! type, EDNS) answer when the snapshot is built would multiply the memory of a 1,000,000-name
//! zone, and bytes made by the general path are equal to it by construction (a test compares
//! the two for every name and type of its zones).
//!
//! Documented rules:
//! - UDP threads and TCP runtime threads each keep their own cache; over TCP there is no
//!   size limit, and the bytes of a whole answer are the same on both transports.
//! - Only a plain question is looked up: QR=0, opcode QUERY, one question with no compression
//!   pointer and no upper-case letter (the general path compresses case-sensitively, so a
//!   mixed-case name gets different bytes), class IN, no ANCOUNT/NSCOUNT, at most an OPT in
//!   the additional section with version 0, extended RCODE 0, and options other than NSID,
//!   DAU and client subnet, which the general path interprets; no trailing bytes. Types ANY,
//!   DS, AXFR, IXFR, OPT and the meta types (128–255) are never cached. Everything else
//!   goes to the general path, as do mixed-case and random names, at its usual cost.
//! - The key is (question bytes, no EDNS / EDNS / EDNS with DO). An entry holds a response
//!   the general path encoded whole (no truncation, nothing left out); it is used only when
//!   it fits the client's UDP limit, so a small limit falls back and is truncated as before.
//! - Patched per query: the ID, RD and CD (copied from the query, as the general path does),
//!   and the order of each A/AAAA RRset in the answer section, rotated by the same per-thread
//!   counter the general path uses.
//! - An entry is valid for the snapshot it was made from. After a swap it is checked once:
//!   the question must still fall in the same zone, and either that zone is the same
//!   version, or the answer read no name the zone's overlay replaces (pools, the apex,
//!   names with pool addresses in their additional section) and the zone's static part is
//!   the same; the negative-answer SOA's serial is then rewritten. Otherwise it is rebuilt.
//!   A pool change so costs only the answers it can change.
//! - NXDOMAIN is shared: a zone's first NXDOMAIN (per EDNS variant) becomes the answer for
//!   every name in it that does not exist, with the query's question copied in and the
//!   compression pointers after it moved to where the apex now is. A name qualifies when the
//!   resolver's own walk (`answer::is_nxdomain`: no node, no cut above, no wildcard) says
//!   so, and it does not end with a name of the SOA's that lies below the apex (the general
//!   path would compress against it). So junk names, however many, cost no entry each and
//!   never evict the names that exist; the template is checked against the general path's
//!   bytes when made, and its serial is rewritten for each version of the zone.
//! - The cache is bounded: `SLOTS - 1` entries per thread, `WAYS`-way set-associative; a new
//!   entry replaces the least recently used of its set. Nothing is allocated or locked on a
//!   hit.

use std::sync::{Arc, Weak};

use hickory_proto::rr::{RData, Record};

use rustc_hash::FxHashMap;

use crate::dns::answer::is_nxdomain;
use crate::dns::handler::{response_limit, Transport};
use crate::zone::snapshot::{is_within, Snapshot, Zone, ZoneBase};

/// Entries per thread (a power of two).
pub const SLOTS: usize = 1 << 16;
/// Entries a question may be kept in (a power of two): the set of `WAYS` slots its hash picks.
const WAYS: usize = 4;

/// What the general path says about a response it encoded, for the cache to keep it.
pub struct Fill {
    /// The zone that answered, if any.
    pub zone: Option<Arc<Zone>>,
    /// The answer read a name the overlay replaces.
    pub volatile: bool,
    /// The A/AAAA RRsets of the answer section that rotate: (index of their first record in
    /// the section, their records in zone order).
    pub rotated: Vec<(usize, Vec<Record>)>,
}

/// A question the fast path can look up, parsed from a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Question {
    /// End of the question section (header + name + type + class).
    end: usize,
    /// 0: no EDNS, 1: EDNS, 2: EDNS with DO.
    variant: u8,
    /// The UDP payload the client's OPT offers, if it has one.
    payload: Option<u16>,
}

/// One cached response. Its first 128 bytes hold what a hit reads: the snapshot it was valid
/// in, the LRU stamp, the rotated groups' pointer, the question's length and, for a response
/// of up to `INLINE` bytes (nearly all), the response itself, which starts with the question
/// the lookup compares. Aligned to a cache line, a hit on a short response reads two lines
/// after its set's: bench/instructions.sh (CACHE=1) counted 4.4 first-level misses a cached
/// NXDOMAIN with the response in a separate heap block, against gdnsd's 0.7.
#[repr(C, align(64))]
struct Entry {
    /// The snapshot the entry was last known valid in (a `Weak` pins the address, so a new
    /// snapshot can never be mistaken for it).
    snapshot: Weak<Snapshot>,
    /// Bumped on each hit; the older of two slots is replaced.
    used: u64,
    /// Rotated RRsets: the rdata offset of each record slot, and the rdata in zone order.
    groups: Box<[Group]>,
    question_len: u16,
    variant: u8,
    /// The response; its question section (bytes 12..12 + `question_len`) is the key.
    response: Response,
    zone: Option<Weak<Zone>>,
    base: Option<Weak<ZoneBase>>,
    volatile: bool,
    /// Where the negative-answer SOA's serial is, if the response has one.
    serial_at: Option<usize>,
}

/// Responses up to this many bytes are kept inside their entry.
const INLINE: usize = 100;

/// A cached response's bytes: inside the entry when short, else in a block of their own.
enum Response {
    Inline { length: u8, data: [u8; INLINE] },
    Heap(Box<[u8]>),
}

impl Response {
    fn new(bytes: &[u8]) -> Self {
        if bytes.len() <= INLINE {
            let mut data = [0u8; INLINE];
            data[..bytes.len()].copy_from_slice(bytes);
            Self::Inline {
                length: bytes.len() as u8,
                data,
            }
        } else {
            Self::Heap(bytes.into())
        }
    }

    fn as_slice(&self) -> &[u8] {
        match self {
            Self::Inline { length, data } => &data[..usize::from(*length)],
            Self::Heap(bytes) => bytes,
        }
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        match self {
            Self::Inline { length, data } => &mut data[..usize::from(*length)],
            Self::Heap(bytes) => bytes,
        }
    }
}

struct Group {
    slots: Vec<usize>,
    width: usize,
    rdata: Vec<u8>,
}

/// Lookup and fill counts, for tests and metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub revalidated: u64,
    pub uncacheable: u64,
    /// Answered from a zone's shared NXDOMAIN.
    pub negative: u64,
}

/// One thread's cache.
pub struct AnswerCache {
    /// Each set's tags and the places of its entries: 16 bytes a set, four sets a cache line,
    /// 256 KiB in all, small enough to stay in a core's second-level cache. A question that
    /// is not cached (an NXDOMAIN answered from the shared one, or a miss) reads one line of
    /// it and nothing else; a hit reads that line and its entry.
    sets: Vec<Set>,
    /// The entries, in the order they were first made (a way keeps its place when its entry
    /// is replaced), so names first asked one after another sit side by side in memory, as
    /// a zone's nodes do in servers that build them at load time. At most `SLOTS - 1`: a
    /// place is stored plus one in 16 bits, 0 meaning none.
    entries: Vec<Entry>,
    clock: u64,
    /// Each zone's shared NXDOMAIN, by (address of its `ZoneBase`, EDNS variant).
    negatives: FxHashMap<(usize, u8), Negative>,
    pub stats: CacheStats,
    /// The counts already added to the metrics facade.
    flushed: CacheStats,
}

impl Default for AnswerCache {
    fn default() -> Self {
        Self::new()
    }
}

impl AnswerCache {
    pub fn new() -> Self {
        Self {
            sets: vec![Set::default(); SLOTS / WAYS],
            // Reserved, not touched: a thread that answers few names costs little memory.
            entries: Vec::with_capacity(SLOTS - 1),
            clock: 0,
            negatives: FxHashMap::default(),
            stats: CacheStats::default(),
            flushed: CacheStats::default(),
        }
    }

    /// Adds the counts since the last flush to `healthdns_answer_cache_total{result}` (called
    /// with the query counters' flush, never per query).
    pub fn flush_metrics(&mut self) {
        let (now, was) = (self.stats, self.flushed);
        for (result, count) in [
            ("hit", now.hits - was.hits),
            ("miss", now.misses - was.misses),
            ("revalidated", now.revalidated - was.revalidated),
            ("uncacheable", now.uncacheable - was.uncacheable),
            ("negative", now.negative - was.negative),
        ] {
            if count > 0 {
                metrics::counter!("healthdns_answer_cache_total", "result" => result)
                    .increment(count);
            }
        }
        self.flushed = now;
    }

    /// Answers `packet` from the cache into `out` when it can; `our_payload` is the UDP size
    /// we advertise, and `rotation` is the rotation counter's value for this query.
    #[allow(clippy::too_many_arguments)]
    pub fn lookup(
        &mut self,
        packet: &[u8],
        snapshot: &Arc<Snapshot>,
        our_payload: u16,
        transport: Transport,
        nsid: bool,
        rotation: usize,
        out: &mut Vec<u8>,
    ) -> Lookup {
        let Some(question) = parse(packet, nsid) else {
            self.stats.uncacheable += 1;
            return Lookup::Uncacheable;
        };
        let limit = response_limit(question.payload, our_payload, transport);
        let key = &packet[12..question.end];
        let (set, tag) = set_of(key, question.variant);
        self.clock += 1;
        let clock = self.clock;
        let slots = &mut self.sets[set];
        for way in 0..WAYS {
            if slots.tags[way] != tag {
                continue;
            }
            let entry = &mut self.entries[slots.tagged_place(way)];
            if entry.variant != question.variant || entry.question() != key {
                continue;
            }
            if !std::ptr::eq(entry.snapshot.as_ptr(), Arc::as_ptr(snapshot)) {
                if !entry.revalidate(snapshot, &key[..key.len() - 4]) {
                    // The place stays the way's, for the entry that replaces this one.
                    slots.tags[way] = 0;
                    break;
                }
                self.stats.revalidated += 1;
            }
            if entry.response.as_slice().len() > usize::from(limit) {
                break;
            }
            entry.used = clock;
            self.stats.hits += 1;
            entry.write(packet, rotation, out);
            return Lookup::Hit;
        }
        if self.shared_negative(packet, question, snapshot, limit, out) {
            self.stats.negative += 1;
            return Lookup::Hit;
        }
        self.stats.misses += 1;
        Lookup::Miss(question)
    }

    /// Answers `packet` with its zone's shared NXDOMAIN, when the name does not exist there
    /// and the answer fits in `limit` bytes.
    fn shared_negative(
        &mut self,
        packet: &[u8],
        question: Question,
        snapshot: &Arc<Snapshot>,
        limit: u16,
        out: &mut Vec<u8>,
    ) -> bool {
        if self.negatives.is_empty() {
            return false;
        }
        let name = &packet[12..question.end - 4];
        let Some(zone) = snapshot.find_zone(name) else {
            return false;
        };
        let key = (Arc::as_ptr(zone.base()) as usize, question.variant);
        let Some(negative) = self.negatives.get_mut(&key) else {
            return false;
        };
        if question.end + negative.tail.len() > usize::from(limit)
            || negative.compresses_against(name)
            || !is_nxdomain(zone, name)
        {
            return false;
        }
        negative.write(packet, question, zone, out);
        true
    }

    /// Keeps `response`, which the general path just encoded whole for `packet` (whose
    /// question `question` missed), in `snapshot`.
    pub fn fill(
        &mut self,
        question: Question,
        packet: &[u8],
        response: &[u8],
        snapshot: &Arc<Snapshot>,
        fill: Fill,
    ) {
        if response.get(3).is_some_and(|flags| flags & 0x0F == 3) {
            if let Some(zone) = &fill.zone {
                if self.share_negative(question, packet, response, zone) {
                    return;
                }
            }
        }
        let Some(mut entry) = Entry::new(question, packet, response, snapshot, fill) else {
            self.stats.uncacheable += 1;
            return;
        };
        let (set, tag) = set_of(entry.question(), question.variant);
        let slots = &mut self.sets[set];
        let entries = &mut self.entries;
        let used = |way: usize| match slots.tags[way] {
            0 => 0,
            _ => entries[slots.tagged_place(way)].used,
        };
        let way = (0..WAYS).min_by_key(|&way| used(way)).expect("WAYS > 0");
        entry.used = self.clock;
        match slots.place(way) {
            Some(place) => entries[place] = entry,
            None if entries.len() == SLOTS - 1 => return,
            None => {
                entries.push(entry);
                slots.places[way] = entries.len() as u16;
            }
        }
        slots.tags[way] = tag;
    }

    /// Makes `response`, an NXDOMAIN from `zone`, the zone's shared one for `question`'s
    /// variant, when it reproduces itself; true when this question will be answered from it.
    fn share_negative(
        &mut self,
        question: Question,
        packet: &[u8],
        response: &[u8],
        zone: &Arc<Zone>,
    ) -> bool {
        let Some(mut negative) = Negative::new(question, packet, response, zone) else {
            return false;
        };
        let mut check = Vec::with_capacity(response.len());
        negative.write(packet, question, zone, &mut check);
        if check != response || negative.compresses_against(&packet[12..question.end - 4]) {
            return false;
        }
        // Zones that left the served set leave theirs behind; a bound keeps that small.
        if self.negatives.len() >= MAX_NEGATIVES {
            self.negatives.clear();
        }
        let key = (Arc::as_ptr(zone.base()) as usize, question.variant);
        self.negatives.insert(key, negative);
        true
    }
}

/// Shared NXDOMAIN answers kept per thread before they are all dropped and made again.
const MAX_NEGATIVES: usize = 4096;

/// A zone's NXDOMAIN for one EDNS variant, less the question (module rules).
struct Negative {
    /// The version whose serial `tail` carries.
    zone: Weak<Zone>,
    /// Keeps the zone base's address, the map's key, from being reused.
    _base: Weak<ZoneBase>,
    header: [u8; 12],
    /// What follows the question: the SOA, then our OPT with EDNS.
    tail: Box<[u8]>,
    /// The compression pointers in `tail`: where each is, and what it points at.
    pointers: Box<[(usize, Target)]>,
    /// Where the SOA's serial is in `tail`.
    serial_at: usize,
    /// Names in `tail` below the apex, and their suffixes below it (lowercase keys).
    below_apex: Box<[Box<[u8]>]>,
    apex_len: usize,
}

/// What a compression pointer of a shared NXDOMAIN points at.
#[derive(Debug, Clone, Copy)]
enum Target {
    /// This far into the apex's labels at the end of the question.
    Apex(usize),
    /// This far into the tail.
    Tail(usize),
}

impl Negative {
    fn new(question: Question, packet: &[u8], response: &[u8], zone: &Arc<Zone>) -> Option<Self> {
        let count = |at: usize| u16::from_be_bytes([response[at], response[at + 1]]);
        let end = question.end;
        if response.len() <= end
            || response[12..end] != packet[12..end]
            || count(4) != 1
            || count(6) != 0
            || count(8) != 1
            || count(10) > 1
        {
            return None;
        }
        let apex_len = zone.key().len();
        let apex_at = end - 4 - apex_len;
        let mut pointers = Vec::new();
        let mut below_apex: Vec<Box<[u8]>> = Vec::new();
        let mut walker = Walker {
            bytes: response,
            at: end,
        };
        let mut name = |walker: &mut Walker| -> Option<()> {
            let start = walker.at;
            let full = decode_name(response, start)?;
            let pointer = walker.name()?;
            if let Some(last) = pointer {
                let target =
                    usize::from(u16::from_be_bytes([response[last], response[last + 1]]) & 0x3FFF);
                let target = if (apex_at..end - 4).contains(&target) {
                    Target::Apex(target - apex_at)
                } else if target >= end && target < start {
                    Target::Tail(target - end)
                } else {
                    return None;
                };
                pointers.push((last - end, target));
            }
            let mut suffix = Some(&full[..]);
            while let Some(below) = suffix.filter(|below| below.len() > apex_len) {
                if is_within(below, zone.key()) && !below_apex.iter().any(|kept| **kept == *below) {
                    below_apex.push(below.into());
                }
                suffix = crate::zone::snapshot::parent_key(below);
            }
            Some(())
        };
        // The SOA: owner, fixed part, MNAME, RNAME, five 32-bit fields.
        name(&mut walker)?;
        let fixed = response.get(walker.at..walker.at + 10)?;
        let rdlength = usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
        if u16::from_be_bytes([fixed[0], fixed[1]]) != 6 {
            return None;
        }
        walker.at += 10;
        let rdata_end = walker.at + rdlength;
        name(&mut walker)?;
        name(&mut walker)?;
        let serial_at = walker.at - end;
        walker.at += 20;
        if walker.at != rdata_end {
            return None;
        }
        // Our OPT: the root name, no pointer.
        if count(10) == 1 {
            if response.get(walker.at) != Some(&0) {
                return None;
            }
            walker.record()?;
        }
        if walker.at != response.len() {
            return None;
        }
        Some(Self {
            zone: Arc::downgrade(zone),
            _base: Arc::downgrade(zone.base()),
            header: response[..12].try_into().ok()?,
            tail: response[end..].into(),
            pointers: pointers.into_boxed_slice(),
            serial_at,
            below_apex: below_apex.into_boxed_slice(),
            apex_len,
        })
    }

    /// True when `name` (a key) ends with a name of the tail below the apex: the general
    /// path would compress that name against the question instead.
    fn compresses_against(&self, name: &[u8]) -> bool {
        self.below_apex.iter().any(|below| {
            let Some(start) = name.len().checked_sub(below.len()) else {
                return false;
            };
            let mut at = 0;
            while at < start {
                at += 1 + usize::from(name[at]);
            }
            at == start && name[start..] == **below
        })
    }

    /// Writes the NXDOMAIN for `query` (whose question is `question`) in `zone`'s version.
    fn write(&mut self, query: &[u8], question: Question, zone: &Arc<Zone>, out: &mut Vec<u8>) {
        if !std::ptr::eq(self.zone.as_ptr(), Arc::as_ptr(zone)) {
            self.tail[self.serial_at..self.serial_at + 4]
                .copy_from_slice(&zone.serial().to_be_bytes());
            self.zone = Arc::downgrade(zone);
        }
        let end = question.end;
        let apex_at = end - 4 - self.apex_len;
        out.clear();
        out.extend_from_slice(&self.header);
        out[0] = query[0];
        out[1] = query[1];
        out[2] = (out[2] & !0x01) | (query[2] & 0x01);
        out[3] = (out[3] & !0x10) | (query[3] & 0x10);
        out.extend_from_slice(&query[12..end]);
        out.extend_from_slice(&self.tail);
        for &(at, target) in self.pointers.iter() {
            let to = match target {
                Target::Apex(offset) => apex_at + offset,
                Target::Tail(offset) => end + offset,
            };
            out[end + at..end + at + 2].copy_from_slice(&(0xC000 | to as u16).to_be_bytes());
        }
    }
}

/// The lowercase key of the name at `at` in a message, following compression pointers.
fn decode_name(bytes: &[u8], mut at: usize) -> Option<Vec<u8>> {
    let mut key = Vec::with_capacity(64);
    for _ in 0..128 {
        let length = *bytes.get(at)?;
        match length {
            0 => {
                key.push(0);
                return (key.len() <= 255).then_some(key);
            }
            length if length & 0xC0 == 0xC0 => {
                at = usize::from(u16::from_be_bytes([length, *bytes.get(at + 1)?]) & 0x3FFF);
            }
            length if length < 64 => {
                let label = bytes.get(at + 1..at + 1 + usize::from(length))?;
                key.push(length);
                key.extend(label.iter().map(u8::to_ascii_lowercase));
                at += 1 + usize::from(length);
            }
            _ => return None,
        }
    }
    None
}

/// What `lookup` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// The response is in `out`.
    Hit,
    /// Not cached: answer with the general path, then `fill`.
    Miss(Question),
    /// Not a question the cache handles: answer with the general path.
    Uncacheable,
}

/// One set: a tag per way (0: empty) and the place of its entry in `entries` plus one (0:
/// none yet). Only an entry whose tag matches is read.
#[derive(Default, Clone, Copy)]
#[repr(C, align(16))]
struct Set {
    tags: [u16; WAYS],
    places: [u16; WAYS],
}

impl Set {
    /// The index in `entries` of `way`'s entry, if the way has a place yet.
    fn place(&self, way: usize) -> Option<usize> {
        usize::from(self.places[way]).checked_sub(1)
    }

    /// `place` of a way with a tag, which always has one: the hit path reads it without the
    /// `Option` (which cost 25-35 instructions a hit).
    fn tagged_place(&self, way: usize) -> usize {
        usize::from(self.places[way]) - 1
    }
}

/// The question's set, and its tag (16 bits of the hash that do not pick the set; never 0,
/// which marks an empty way).
fn set_of(question: &[u8], variant: u8) -> (usize, u16) {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = rustc_hash::FxBuildHasher.build_hasher();
    hasher.write(question);
    hasher.write_u8(variant);
    // FxHash mixes little; a finalizer (murmur3's fmix64) spreads similar names over sets.
    let mut hash = hasher.finish();
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    hash ^= hash >> 33;
    (
        (hash as usize >> 1) & (SLOTS / WAYS - 1),
        (hash >> 48) as u16 | 1,
    )
}

/// True when `bytes` has an ASCII uppercase letter (0x41..=0x5A), tested a word at a time:
/// in each byte, with the top bit cleared, adding 0x3F carries into the top bit from 0x41 up
/// and adding 0x25 from 0x5B up, and neither sum reaches the next byte. The last word is the
/// last eight bytes, overlapping the one before it.
#[inline]
fn has_uppercase(bytes: &[u8]) -> bool {
    const HIGH: u64 = 0x8080_8080_8080_8080;
    const LOW: u64 = !HIGH;
    let word_at =
        |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("eight bytes"));
    let word_has = |word: u64| {
        let low = word & LOW;
        let from_a = low.wrapping_add(0x3F3F_3F3F_3F3F_3F3F);
        let past_z = low.wrapping_add(0x2525_2525_2525_2525);
        from_a & !past_z & !word & HIGH != 0
    };
    let length = bytes.len();
    if length < 8 {
        return bytes.iter().any(u8::is_ascii_uppercase);
    }
    let mut found = false;
    let mut at = 0;
    while at + 8 < length {
        found |= word_has(word_at(at));
        at += 8;
    }
    found | word_has(word_at(length - 8))
}

/// Parses a query's header, question and OPT record, if the cache handles it (module rules).
pub fn parse(packet: &[u8], nsid: bool) -> Option<Question> {
    let header = packet.get(..12)?;
    // QR=0 and opcode QUERY.
    if header[2] & 0xF8 != 0 {
        return None;
    }
    let count = |at: usize| u16::from_be_bytes([header[at], header[at + 1]]);
    if count(4) != 1 || count(6) != 0 || count(8) != 0 || count(10) > 1 {
        return None;
    }
    let mut at = 12;
    loop {
        let length = usize::from(*packet.get(at)?);
        if length == 0 {
            at += 1;
            break;
        }
        if length > 63 {
            return None;
        }
        at += 1 + length;
    }
    // Length bytes (at most 63) are never uppercase letters, so the whole name is checked at
    // once, eight bytes at a time.
    if at - 12 > 255 || has_uppercase(packet.get(12..at)?) {
        return None;
    }
    let fixed = packet.get(at..at + 4)?;
    let qtype = u16::from_be_bytes([fixed[0], fixed[1]]);
    let qclass = u16::from_be_bytes([fixed[2], fixed[3]]);
    // OPT, DS, and meta types (AXFR, IXFR, ANY, TSIG...) go to the general path.
    if qclass != 1 || qtype == 0 || qtype == 41 || qtype == 43 || (128..=255).contains(&qtype) {
        return None;
    }
    let end = at + 4;
    if count(10) == 0 {
        return (end == packet.len()).then_some(Question {
            end,
            variant: 0,
            payload: None,
        });
    }
    // The OPT record: root owner, type 41, class = UDP payload, TTL = rcode/version/flags.
    let opt = packet.get(end..end + 11)?;
    if opt[0] != 0 || u16::from_be_bytes([opt[1], opt[2]]) != 41 || opt[5] != 0 || opt[6] != 0 {
        return None;
    }
    let payload = u16::from_be_bytes([opt[3], opt[4]]);
    let dnssec_ok = opt[7] & 0x80 != 0;
    let rdlength = usize::from(u16::from_be_bytes([opt[9], opt[10]]));
    let options = packet.get(end + 11..end + 11 + rdlength)?;
    if end + 11 + rdlength != packet.len() {
        return None;
    }
    let mut rest = options;
    while !rest.is_empty() {
        let code = u16::from_be_bytes([*rest.first()?, *rest.get(1)?]);
        let length = usize::from(u16::from_be_bytes([*rest.get(2)?, *rest.get(3)?]));
        // NSID changes our OPT when we have one; DAU and client subnet are parsed (and can
        // be refused) by the general path.
        if (code == 3 && nsid) || code == 5 || code == 8 {
            return None;
        }
        rest = rest.get(4 + length..)?;
    }
    Some(Question {
        end,
        variant: 1 + u8::from(dnssec_ok),
        payload: Some(payload),
    })
}

impl Entry {
    fn new(
        question: Question,
        packet: &[u8],
        response: &[u8],
        snapshot: &Arc<Snapshot>,
        fill: Fill,
    ) -> Option<Self> {
        let mut walker = Walker {
            bytes: response,
            at: question.end,
        };
        // The response repeats the question byte for byte.
        if response.get(12..question.end)? != &packet[12..question.end] {
            return None;
        }
        let counts = |at: usize| usize::from(u16::from_be_bytes([response[at], response[at + 1]]));
        let (answers, authorities) = (counts(6), counts(8));
        let mut rdata_at = Vec::with_capacity(answers);
        let mut serial_at = None;
        for index in 0..answers + authorities {
            let (record_type, data) = walker.record()?;
            if index < answers {
                rdata_at.push((record_type, data));
            } else if record_type == 6 && serial_at.is_none() {
                let mut soa = Walker {
                    bytes: response,
                    at: data,
                };
                soa.name()?;
                soa.name()?;
                serial_at = Some(soa.at);
            }
        }
        let mut groups = Vec::with_capacity(fill.rotated.len());
        for (first, records) in &fill.rotated {
            let mut group = Group {
                slots: Vec::with_capacity(records.len()),
                width: 0,
                rdata: Vec::new(),
            };
            for (index, record) in records.iter().enumerate() {
                let (record_type, data) = *rdata_at.get(first + index)?;
                let bytes: &[u8] = match &record.data {
                    RData::A(address) if record_type == 1 => &address.0.octets()[..],
                    RData::AAAA(address) if record_type == 28 => &address.0.octets()[..],
                    _ => return None,
                };
                group.width = bytes.len();
                group.rdata.extend_from_slice(bytes);
                group.slots.push(data);
            }
            groups.push(group);
        }
        Some(Self {
            snapshot: Arc::downgrade(snapshot),
            used: 0,
            groups: groups.into_boxed_slice(),
            question_len: u16::try_from(question.end - 12).ok()?,
            variant: question.variant,
            response: Response::new(response),
            zone: fill.zone.as_ref().map(Arc::downgrade),
            base: fill.zone.as_ref().map(|zone| Arc::downgrade(zone.base())),
            volatile: fill.volatile,
            serial_at,
        })
    }

    /// The question section this entry answers.
    fn question(&self) -> &[u8] {
        &self.response.as_slice()[12..12 + usize::from(self.question_len)]
    }

    /// Checks the entry against a new snapshot (module rules), updating the serial.
    fn revalidate(&mut self, snapshot: &Arc<Snapshot>, name: &[u8]) -> bool {
        let zone = snapshot.find_zone(name);
        let valid = match (zone, &self.zone, &self.base) {
            (None, None, _) => true,
            (Some(zone), Some(was), Some(base)) => {
                if std::ptr::eq(was.as_ptr(), Arc::as_ptr(zone)) {
                    true
                } else if !self.volatile && std::ptr::eq(base.as_ptr(), Arc::as_ptr(zone.base())) {
                    if let Some(at) = self.serial_at {
                        self.response.as_mut_slice()[at..at + 4]
                            .copy_from_slice(&zone.serial().to_be_bytes());
                    }
                    self.zone = Some(Arc::downgrade(zone));
                    true
                } else {
                    false
                }
            }
            _ => false,
        };
        if valid {
            self.snapshot = Arc::downgrade(snapshot);
        }
        valid
    }

    /// Writes the response to `query` at `rotation` into `out`.
    fn write(&self, query: &[u8], rotation: usize, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(self.response.as_slice());
        out[0] = query[0];
        out[1] = query[1];
        // RD (0x01 of byte 2) and CD (0x10 of byte 3) come from the query.
        out[2] = (out[2] & !0x01) | (query[2] & 0x01);
        out[3] = (out[3] & !0x10) | (query[3] & 0x10);
        for group in self.groups.iter() {
            let count = group.slots.len();
            let rotate = rotation % count;
            for (index, &slot) in group.slots.iter().enumerate() {
                let source = ((index + rotate) % count) * group.width;
                out[slot..slot + group.width]
                    .copy_from_slice(&group.rdata[source..source + group.width]);
            }
        }
    }
}

/// Reads records from an encoded message.
struct Walker<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Walker<'_> {
    /// Skips a name (labels, ending in a zero or a pointer); returns where its pointer is.
    fn name(&mut self) -> Option<Option<usize>> {
        loop {
            let length = *self.bytes.get(self.at)?;
            match length {
                0 => {
                    self.at += 1;
                    return Some(None);
                }
                length if length & 0xC0 == 0xC0 => {
                    self.at += 2;
                    return Some(Some(self.at - 2));
                }
                length => self.at += 1 + usize::from(length),
            }
        }
    }

    /// Skips a record; returns its type and where its rdata starts.
    fn record(&mut self) -> Option<(u16, usize)> {
        self.name()?;
        let fixed = self.bytes.get(self.at..self.at + 10)?;
        let record_type = u16::from_be_bytes([fixed[0], fixed[1]]);
        let length = usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
        let data = self.at + 10;
        self.at = data + length;
        (self.at <= self.bytes.len()).then_some((record_type, data))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &str, qtype: u16, opt: Option<&[u8]>) -> Vec<u8> {
        let mut packet = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.split('.').filter(|label| !label.is_empty()) {
            packet.push(label.len() as u8);
            packet.extend_from_slice(label.as_bytes());
        }
        packet.push(0);
        packet.extend_from_slice(&qtype.to_be_bytes());
        packet.extend_from_slice(&1u16.to_be_bytes());
        if let Some(opt) = opt {
            packet[11] = 1;
            packet.extend_from_slice(opt);
        }
        packet
    }

    /// The word-at-a-time test agrees with a byte-at-a-time one for every byte value at every
    /// place of names of every length up to three words.
    #[test]
    fn the_uppercase_test_sees_every_uppercase_byte_and_nothing_else() {
        for length in 1..=24 {
            for at in 0..length {
                for byte in 0..=255u8 {
                    let mut bytes = vec![b'a'; length];
                    bytes[at] = byte;
                    assert_eq!(
                        has_uppercase(&bytes),
                        byte.is_ascii_uppercase(),
                        "byte {byte:#04x} at {at} of {length}"
                    );
                }
            }
        }
        assert!(!has_uppercase(&[]));
        assert!(!has_uppercase(&[
            0x3F, 0x40, 0x5B, 0xC1, 0xDA, 0xFF, 0x00, 0x60, 0x7B
        ]));
    }

    #[test]
    fn the_parser_takes_only_plain_questions() {
        let plain = query("www.example.test", 1, None);
        let parsed = parse(&plain, false).unwrap();
        assert_eq!((parsed.variant, parsed.payload), (0, None));
        let edns = [0, 0, 41, 0x10, 0, 0, 0, 0x80, 0, 0, 0];
        let parsed = parse(&query("www.example.test", 1, Some(&edns)), false).unwrap();
        assert_eq!((parsed.variant, parsed.payload), (2, Some(4096)));
        // A cookie option is ignored; NSID only matters when we send one.
        let cookie = [
            0, 0, 41, 2, 0, 0, 0, 0, 0, 0, 12, 0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8,
        ];
        assert!(parse(&query("a.test", 1, Some(&cookie)), false).is_some());
        let nsid = [0, 0, 41, 2, 0, 0, 0, 0, 0, 0, 4, 0, 3, 0, 0];
        assert!(parse(&query("a.test", 1, Some(&nsid)), false).is_some());
        assert!(parse(&query("a.test", 1, Some(&nsid)), true).is_none());
        let refused = [
            ("mixed case", query("WWW.example.test", 1, None)),
            ("ANY", query("a.test", 255, None)),
            ("AXFR", query("a.test", 252, None)),
            ("DS", query("a.test", 43, None)),
            (
                "EDNS version 1",
                query("a.test", 1, Some(&[0, 0, 41, 2, 0, 0, 1, 0, 0, 0, 0])),
            ),
            (
                "a bad option length",
                query(
                    "a.test",
                    1,
                    Some(&[0, 0, 41, 2, 0, 0, 0, 0, 0, 0, 4, 0, 10, 0, 9]),
                ),
            ),
            (
                "client subnet",
                query(
                    "a.test",
                    1,
                    Some(&[0, 0, 41, 2, 0, 0, 0, 0, 0, 0, 4, 0, 8, 0, 0]),
                ),
            ),
        ];
        for (what, packet) in refused {
            assert_eq!(parse(&packet, false), None, "{what}");
        }
        let mut response = plain.clone();
        response[2] |= 0x80;
        assert_eq!(parse(&response, false), None, "a response");
        let mut trailing = plain.clone();
        trailing.push(0);
        assert_eq!(parse(&trailing, false), None, "trailing bytes");
        for cut in 0..plain.len() {
            assert_eq!(parse(&plain[..cut], false), None, "cut at {cut}");
        }
    }
}

/// The cache against the general path: equal bytes for every name and type of a zone that
/// has every kind of answer, across rotations, flags, EDNS variants and snapshot swaps.
#[cfg(test)]
mod equality {
    use std::net::IpAddr;
    use std::path::Path;

    use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
    use hickory_proto::rr::{Name, RecordType};

    use crate::dns::handler::{set_rotation, Answered, DnsHandler, Transport};
    use crate::health::{Answers, NameAnswer};
    use crate::zone::snapshot::{Snapshot, SnapshotWriter};
    use crate::zone::zonefile::parse_zone;

    use super::*;

    const ZONE: &str = "$TTL 300\n@ SOA ns1 hostmaster 7 3600 600 1209600 60\n@ NS ns1\n@ NS ns2\n\
        @ MX 10 mail\nns1 A 192.0.2.1\nns2 A 192.0.2.2\nns2 AAAA 2001:db8::2\n\
        www A 192.0.2.10\nwww A 192.0.2.11\nwww A 192.0.2.12\nwww AAAA 2001:db8::10\nwww AAAA 2001:db8::11\n\
        one A 192.0.2.20\nalias CNAME www\nchain CNAME alias\nout CNAME www.example.org.\n\
        mail A 192.0.2.30\n*.wild A 192.0.2.40\n*.wild A 192.0.2.41\n*.wtxt TXT \"w\"\n\
        x.ent TXT \"x\"\nsub NS ns.sub\nns.sub A 192.0.2.50\nmx MX 5 pool\nsrv SRV 1 2 3 pool\n\
        big TXT \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\" \"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\" \"cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc\"\n";

    const NAMES: &[&str] = &[
        "example.test",
        "ns1.example.test",
        "ns2.example.test",
        "www.example.test",
        "one.example.test",
        "alias.example.test",
        "chain.example.test",
        "out.example.test",
        "mail.example.test",
        "a.wild.example.test",
        "b.c.wild.example.test",
        "q.wtxt.example.test",
        "ent.example.test",
        "x.ent.example.test",
        "sub.example.test",
        "a.b.sub.example.test",
        "ns.sub.example.test",
        "mx.example.test",
        "srv.example.test",
        "pool.example.test",
        "down.example.test",
        "nx.example.test",
        "nx2.example.test",
        "a.much.longer.nonexistent.name.example.test",
        "a.x.ent.example.test",
        "b.ns1.example.test",
        "hostmaster.example.test",
        "a.hostmaster.example.test",
        "nx.sub.example.test",
        "big.example.test",
        "example.org",
        "test",
    ];
    const TYPES: &[u16] = &[1, 28, 2, 6, 15, 16, 5, 33, 12, 65, 99];

    fn answers(addresses: &[&str]) -> Answers {
        let mut answers = Answers::new();
        let addresses: Vec<IpAddr> = addresses.iter().map(|text| text.parse().unwrap()).collect();
        answers.insert(
            Name::from_ascii("pool.example.test.").unwrap(),
            NameAnswer {
                ttl: 30,
                addresses,
                servfail: false,
                families: [true, true],
            },
        );
        answers.insert(
            Name::from_ascii("down.example.test.").unwrap(),
            NameAnswer {
                ttl: 30,
                addresses: vec![],
                servfail: true,
                families: [true, false],
            },
        );
        answers
    }

    fn snapshot(addresses: &[&str]) -> Snapshot {
        let origin = Name::from_ascii("example.test.").unwrap();
        let data = parse_zone(ZONE, Path::new("t.zone"), &origin).unwrap();
        Snapshot::build(&[data], &answers(addresses))
    }

    fn query(
        name: &str,
        qtype: u16,
        id: u16,
        flags: (bool, bool),
        edns: Option<(u16, bool)>,
    ) -> Vec<u8> {
        let mut message = Message::new(id, MessageType::Query, OpCode::Query);
        message.metadata.recursion_desired = flags.0;
        message.metadata.checking_disabled = flags.1;
        message.add_query(Query::query(
            Name::from_ascii(name).unwrap(),
            RecordType::from(qtype),
        ));
        if let Some((payload, dnssec_ok)) = edns {
            let mut edns = Edns::new();
            edns.set_max_payload(payload);
            edns.set_dnssec_ok(dnssec_ok);
            message.set_edns(edns);
        }
        message.to_vec().unwrap()
    }

    /// Asks every question through both paths and compares; returns the cache's counts.
    fn compare_all(handler: &DnsHandler, cache: &mut AnswerCache) -> CacheStats {
        let source = "127.0.0.1:5300".parse().unwrap();
        let variants = [
            None,
            Some((1232, false)),
            Some((4096, true)),
            Some((600, false)),
        ];
        let (mut general, mut cached) = (Vec::new(), Vec::new());
        for name in NAMES {
            for &qtype in TYPES {
                for edns in variants {
                    for round in 0..4u16 {
                        let flags = (round % 2 == 0, round / 2 == 1);
                        let packet = query(name, qtype, 0x100 * round + 7, flags, edns);
                        let transport = if round == 3 {
                            Transport::Tcp
                        } else {
                            Transport::Udp
                        };
                        set_rotation(round as usize);
                        let sent = handler.answer(&packet, source, transport, &mut general);
                        set_rotation(round as usize);
                        let sent_cached = handler.answer_cached(
                            &handler.snapshot(),
                            cache,
                            &packet,
                            source,
                            transport,
                            &mut cached,
                        );
                        assert_eq!(
                            matches!(sent, Answered::Message),
                            matches!(sent_cached, Answered::Message)
                        );
                        assert_eq!(
                            general,
                            cached,
                            "{name} type {qtype} {edns:?} round {round}: {:?}",
                            Message::from_vec(&general).map(|message| message.to_string())
                        );
                    }
                }
            }
        }
        cache.stats
    }

    #[test]
    fn cached_answers_equal_the_general_path_byte_for_byte() {
        let writer = SnapshotWriter::new(snapshot(&["10.0.0.1", "10.0.0.2", "2001:db8::7"]));
        let handler = DnsHandler::new(writer.reader(), 1232);
        let mut cache = AnswerCache::new();
        let first = compare_all(&handler, &mut cache);
        assert!(
            first.hits > first.misses,
            "most of the rounds were served from the cache: {first:?}"
        );
        assert!(
            first.negative > 0,
            "names that do not exist share their zone's NXDOMAIN: {first:?}"
        );
        // A pool change: a new zone version; the pool's answers are rebuilt, the static ones
        // revalidated (negative answers with the new serial), and all stay equal.
        let current = writer.load_full();
        let pool = Name::from_ascii("pool.example.test.").unwrap();
        writer.store(Arc::new(
            current.with_answers(&[&pool], &answers(&["10.0.0.3"])),
        ));
        let second = compare_all(&handler, &mut cache);
        assert!(
            second.revalidated > first.revalidated,
            "static answers revalidated: {second:?}"
        );
        writer.store(Arc::new(
            writer.load_full().with_answers(&[&pool], &answers(&[])),
        ));
        compare_all(&handler, &mut cache);
        // A whole new snapshot (a reload): nothing stale survives.
        writer.store(Arc::new(snapshot(&["10.0.0.9"])));
        compare_all(&handler, &mut cache);
    }

    /// Random queries, mostly near-valid (a valid query with a few bytes changed, cut short or
    /// extended), through both paths: the cache answers exactly what the general path does,
    /// or nothing when it sends nothing.
    #[test]
    fn mutated_queries_get_the_general_paths_answer() {
        let writer = SnapshotWriter::new(snapshot(&["10.0.0.1", "10.0.0.2"]));
        let handler = DnsHandler::new(writer.reader(), 1232).with_identity(None, Some("ns1"));
        let mut cache = AnswerCache::new();
        let source = "127.0.0.1:5300".parse().unwrap();
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut random = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let (mut general, mut cached) = (Vec::new(), Vec::new());
        let mut hits = 0;
        for round in 0..30_000u32 {
            let name = NAMES[random() as usize % NAMES.len()];
            let qtype = TYPES[random() as usize % TYPES.len()];
            let edns = match random() % 3 {
                0 => None,
                1 => Some((512 + (random() % 4096) as u16, false)),
                _ => Some((1232, true)),
            };
            let mut packet = query(name, qtype, round as u16, (true, false), edns);
            if edns.is_some() && random() % 4 == 0 {
                // An NSID option (the handler sends one back): the OPT is last, with no options.
                let length = packet.len();
                packet[length - 2..].copy_from_slice(&4u16.to_be_bytes());
                packet.extend_from_slice(&[0, 3, 0, 0]);
            }
            match random() % 4 {
                0 => {}
                1 => {
                    for _ in 0..1 + random() % 3 {
                        let at = random() as usize % packet.len();
                        packet[at] = random() as u8;
                    }
                }
                2 => packet.truncate(random() as usize % packet.len()),
                _ => packet.extend((0..1 + random() % 8).map(|_| random() as u8)),
            }
            // Each packet twice: the second can be a hit.
            for _ in 0..2 {
                let rotation = random() as usize % 7;
                set_rotation(rotation);
                let sent = handler.answer(&packet, source, Transport::Udp, &mut general);
                set_rotation(rotation);
                let before = cache.stats.hits + cache.stats.negative;
                let sent_cached = handler.answer_cached(
                    &handler.snapshot(),
                    &mut cache,
                    &packet,
                    source,
                    Transport::Udp,
                    &mut cached,
                );
                hits += cache.stats.hits + cache.stats.negative - before;
                let sent = matches!(sent, Answered::Message);
                assert_eq!(sent, matches!(sent_cached, Answered::Message), "{packet:?}");
                if sent {
                    assert_eq!(general, cached, "{packet:?}");
                }
            }
        }
        assert!(hits > 10_000, "the cache answered {hits}");
    }

    /// `answer_cached` over UDP from the tests' client, from the current snapshot.
    fn udp_cached(
        handler: &DnsHandler,
        cache: &mut AnswerCache,
        packet: &[u8],
        out: &mut Vec<u8>,
    ) -> Answered {
        let source = "127.0.0.1:5300".parse().unwrap();
        handler.answer_cached(
            &handler.snapshot(),
            cache,
            packet,
            source,
            Transport::Udp,
            out,
        )
    }

    /// More distinct questions that exist than the cache has slots: every way is filled, then
    /// replaced in its place, the entries stay bounded, and the newest are hits equal to the
    /// general path's bytes.
    #[test]
    fn replaced_entries_reuse_their_places_and_stay_correct() {
        let writer = SnapshotWriter::new(snapshot(&["10.0.0.1", "10.0.0.2"]));
        let handler = DnsHandler::new(writer.reader(), 1232);
        let mut cache = AnswerCache::new();
        let source = "127.0.0.1:5300".parse().unwrap();
        let (mut out, mut general) = (Vec::new(), Vec::new());
        let questions: Vec<Vec<u8>> = ["www.example.test", "example.test"]
            .iter()
            .flat_map(|name| {
                (256..256 + (SLOTS as u16 / 2 + 1000)).map(move |qtype| (*name, qtype))
            })
            .map(|(name, qtype)| query(name, qtype, qtype, (false, false), None))
            .collect();
        for packet in &questions {
            udp_cached(&handler, &mut cache, packet, &mut out);
        }
        assert_eq!(
            cache.stats.misses,
            questions.len() as u64,
            "{:?}",
            cache.stats
        );
        assert!(cache.entries.len() < SLOTS, "{}", cache.entries.len());
        let hits = cache.stats.hits;
        for packet in &questions[questions.len() - 500..] {
            udp_cached(&handler, &mut cache, packet, &mut out);
            handler.answer(packet, source, Transport::Udp, &mut general);
            assert_eq!(out, general);
        }
        assert_eq!(cache.stats.hits, hits + 500, "the newest entries are kept");
    }

    /// More distinct junk names than the cache has slots: each is answered from the zone's
    /// shared NXDOMAIN, none reaches the general path after the first, and a name answered
    /// before the flood is still a hit after it.
    #[test]
    fn junk_names_share_one_nxdomain_and_evict_nothing() {
        let writer = SnapshotWriter::new(snapshot(&["10.0.0.1", "10.0.0.2"]));
        let handler = DnsHandler::new(writer.reader(), 1232);
        let mut cache = AnswerCache::new();
        let source = "127.0.0.1:5300".parse().unwrap();
        let (mut out, mut general) = (Vec::new(), Vec::new());
        let www = query("www.example.test", 1, 1, (true, false), None);
        udp_cached(&handler, &mut cache, &www, &mut out);
        let flood = SLOTS + 1000;
        for index in 0..flood {
            let name = format!("j{index:x}.example.test");
            let packet = query(&name, 1, index as u16, (false, false), None);
            udp_cached(&handler, &mut cache, &packet, &mut out);
            if index % 997 == 0 {
                handler.answer(&packet, source, Transport::Udp, &mut general);
                assert_eq!(out, general, "{name}");
            }
        }
        assert_eq!(cache.stats.negative, flood as u64 - 1, "{:?}", cache.stats);
        assert_eq!(cache.stats.misses, 2, "www and the first junk name");
        let hits = cache.stats.hits;
        udp_cached(&handler, &mut cache, &www, &mut out);
        assert_eq!(cache.stats.hits, hits + 1, "www was not evicted");
    }

    #[test]
    fn a_hit_allocates_nothing() {
        let writer = SnapshotWriter::new(snapshot(&["10.0.0.1", "10.0.0.2"]));
        let handler = DnsHandler::new(writer.reader(), 1232);
        let mut cache = AnswerCache::new();
        let mut out = Vec::with_capacity(4096);
        let questions: Vec<Vec<u8>> = [
            ("pool.example.test", 1),
            ("www.example.test", 28),
            ("nx.example.test", 1),
            ("sub.example.test", 1),
            ("other.nx.example.test", 16),
        ]
        .iter()
        .map(|(name, qtype)| query(name, *qtype, 9, (true, false), Some((1232, true))))
        .collect();
        for packet in &questions {
            assert!(matches!(
                udp_cached(&handler, &mut cache, packet, &mut out),
                Answered::Message
            ));
        }
        let before = cache.stats.hits + cache.stats.negative;
        let allocations = crate::test_alloc::count(|| {
            for _ in 0..100 {
                for packet in &questions {
                    assert!(matches!(
                        udp_cached(&handler, &mut cache, packet, &mut out),
                        Answered::Message
                    ));
                }
            }
        });
        assert_eq!(cache.stats.hits + cache.stats.negative - before, 500);
        assert!(cache.stats.negative >= 200, "{:?}", cache.stats);
        assert_eq!(allocations, 0, "allocations on 500 cache hits");
    }
}
