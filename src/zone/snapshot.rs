//! The immutable, ready-to-answer view of every served zone.
//!
//! Why this exists: queries must be answered without locks, without scanning a zone and without
//! building records per query. A `Snapshot` is built once (at start, and later whenever health
//! or configuration changes what is served) and then only read: every query loads the current
//! one from an `ArcSwap` and answers from it, while one writer may build and swap in the next.
//!
//! A zone is a static part built once from its file, plus an overlay of pool answers: a health
//! change rebuilds only the overlay (O(pool names)), so a 100,000-record zone swaps in about
//! 0.1 ms rather than the 0.3 s a full rebuild takes.
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

use crate::config::ZoneConfig;
use crate::health::Answers;
use crate::zone::zonefile::ZoneData;

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
    /// Bit n is set when some zone's key is n bytes long: `find_zone` hashes only suffixes
    /// of those lengths (one lookup for a name under the only zone, not one per label).
    key_lengths: [u64; 4],
    /// Each zone's `[[zone]]` settings (transfer ACL, NOTIFY targets, snapshot file), carried
    /// with the records so that a reload changes both in one swap.
    settings: Arc<Vec<ZoneConfig>>,
}

/// How a zone came through a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ZoneChange {
    /// Same records: same serial, same history.
    Unchanged,
    /// New records: a new serial, with the difference kept for IXFR.
    Changed,
    /// Not served before the reload.
    Added,
    /// No longer served.
    Removed,
}

impl Snapshot {
    /// Builds the snapshot from loaded zones and the pools' answers; later zones with the same
    /// origin replace earlier.
    pub fn build(zones: &[ZoneData], answers: &Answers) -> Self {
        let origins: Vec<&Name> = zones.iter().map(|zone| &zone.origin).collect();
        let zones = zones
            .iter()
            .enumerate()
            .map(|(index, zone)| {
                let pool_names: Vec<(&Name, [bool; 2])> = answers
                    .iter()
                    .filter(|(name, _)| zone_index_of(name, &origins) == Some(index))
                    .map(|(name, answer)| (name, answer.families))
                    .collect();
                let base = Arc::new(ZoneBase::build(zone, &pool_names));
                let serial = zone.soa_serial();
                (
                    base.key.clone(),
                    Arc::new(Zone::with_answers(base, answers, serial)),
                )
            })
            .collect::<FxHashMap<NameKey, Arc<Zone>>>();
        let mut key_lengths = [0u64; 4];
        for key in zones.keys() {
            key_lengths[key.len() / 64] |= 1 << (key.len() % 64);
        }
        Self {
            zones,
            key_lengths,
            settings: Arc::default(),
        }
    }

    /// This snapshot with the zones' `[[zone]]` settings.
    pub fn with_settings(mut self, settings: Arc<Vec<ZoneConfig>>) -> Self {
        self.settings = settings;
        self
    }

    /// The `[[zone]]` settings of the zone at `origin`, if it has any.
    pub fn settings_of(&self, origin: &Name) -> Option<&ZoneConfig> {
        self.settings.iter().find(|config| &config.origin == origin)
    }

    /// The TSIG key named `name` that some zone's `allow_transfer` or `also_notify` uses.
    pub fn tsig_key(&self, name: &Name) -> Option<Arc<crate::config::keys::TsigKey>> {
        self.settings
            .iter()
            .find_map(|config| config.key(name))
            .cloned()
    }

    /// Every zone's settings, in config order.
    pub fn settings(&self) -> &[ZoneConfig] {
        &self.settings
    }

    /// The snapshot after a reload: `zones` (re-read) with `answers` laid over them and
    /// `settings`. A zone whose records (or SOA fields other than the serial) are the same as
    /// in this snapshot keeps its serial and history; a changed one gets the zone file's serial
    /// if that is newer, else the next one, and the difference is kept for IXFR; a new one
    /// starts at `starting(zone)`. Returns what happened to each zone, removed ones included.
    pub fn reloaded(
        &self,
        zones: &[ZoneData],
        answers: &Answers,
        settings: Arc<Vec<ZoneConfig>>,
        starting: impl Fn(&Zone) -> u32,
    ) -> (Self, Vec<(Name, u32, ZoneChange)>) {
        let mut next = Self::build(zones, answers).with_settings(settings);
        let mut changes = Vec::new();
        for zone in next.zones.values_mut() {
            let (followed, change) = match self.zones.get(zone.key()) {
                Some(previous) => {
                    let (followed, changed) = zone.following(previous);
                    let change = if changed {
                        ZoneChange::Changed
                    } else {
                        ZoneChange::Unchanged
                    };
                    (followed, change)
                }
                None => (zone.at_serial(starting(zone)), ZoneChange::Added),
            };
            changes.push((followed.origin().clone(), followed.serial, change));
            *zone = Arc::new(followed);
        }
        for (key, zone) in &self.zones {
            if !next.zones.contains_key(key) {
                changes.push((zone.origin().clone(), zone.serial, ZoneChange::Removed));
            }
        }
        changes.sort_by(|left, right| left.0.cmp(&right.0));
        (next, changes)
    }

    /// This snapshot with new `answers` laid over the zones holding the `changed` names; their
    /// static parts and every other zone are shared, not copied or rebuilt. A zone whose
    /// records changed gets the next serial.
    pub fn with_answers(&self, changed: &[&Name], answers: &Answers) -> Self {
        let mut next = self.clone();
        let mut rebuilt: rustc_hash::FxHashSet<&[u8]> = rustc_hash::FxHashSet::default();
        for name in changed {
            let Some(zone) = self.find_zone(&name_key(name)) else {
                continue;
            };
            if rebuilt.insert(zone.key()) {
                let zone = zone.next_version(answers);
                next.zones.insert(zone.base.key.clone(), Arc::new(zone));
            }
        }
        next
    }

    /// This snapshot with the zone at origin `key` restarted at `serial` (no history).
    pub fn with_serial(&self, key: &[u8], serial: u32) -> Self {
        let mut next = self.clone();
        if let Some(zone) = self.zones.get(key) {
            next.zones
                .insert(zone.base.key.clone(), Arc::new(zone.at_serial(serial)));
        }
        next
    }

    /// The zone whose origin is exactly `key`.
    pub fn zone(&self, key: &[u8]) -> Option<&Arc<Zone>> {
        self.zones.get(key)
    }

    /// Every zone, in no particular order.
    pub fn zones(&self) -> impl Iterator<Item = &Arc<Zone>> {
        self.zones.values()
    }

    /// The most specific served zone that contains `key`.
    pub fn find_zone(&self, key: &[u8]) -> Option<&Arc<Zone>> {
        let mut candidate = Some(key);
        while let Some(suffix) = candidate {
            let length = suffix.len();
            if self.key_lengths[length / 64 % 4] & (1 << (length % 64)) != 0 {
                if let Some(zone) = self.zones.get(suffix) {
                    return Some(zone);
                }
            }
            candidate = parent_key(suffix);
        }
        None
    }
}

/// Read access to the served snapshot: it can only load. Every part of the server that answers,
/// transfers or reports holds one of these.
#[derive(Clone)]
pub struct SnapshotReader(Arc<arc_swap::ArcSwap<Snapshot>>);

impl SnapshotReader {
    /// The current snapshot, without a lock; cheap enough for every query.
    pub fn load(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.0.load()
    }

    /// The current snapshot, to keep.
    pub fn load_full(&self) -> Arc<Snapshot> {
        self.0.load_full()
    }
}

/// The one handle that can swap in a new snapshot. It is not `Clone`: whoever owns it (the
/// publisher) is the only writer, and readers get a [`SnapshotReader`].
pub struct SnapshotWriter(Arc<arc_swap::ArcSwap<Snapshot>>);

impl SnapshotWriter {
    /// Starts serving `first`.
    pub fn new(first: Snapshot) -> Self {
        Self(Arc::new(arc_swap::ArcSwap::from_pointee(first)))
    }

    /// A read handle to what this writer publishes.
    pub fn reader(&self) -> SnapshotReader {
        SnapshotReader(self.0.clone())
    }

    /// Swaps `next` in: the next query reads it.
    pub fn store(&self, next: Arc<Snapshot>) {
        self.0.store(next);
    }

    pub fn load(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.0.load()
    }

    pub fn load_full(&self) -> Arc<Snapshot> {
        self.0.load_full()
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

/// One zone's names and answers: the static part, built once from the zone file, and a small
/// overlay holding the pool names (and the names whose additional addresses point at them),
/// rebuilt whenever a pool's answer changes. A change costs O(pool names), not O(zone size).
#[derive(Debug)]
pub struct Zone {
    base: Arc<ZoneBase>,
    overlay: FxHashMap<NameKey, Node>,
    /// This version's SOA serial.
    serial: u32,
    /// The apex SOA at this version's serial.
    soa: Record,
    /// The SOA for negative answers: TTL = min(SOA TTL, SOA MINIMUM) (RFC 2308 §5).
    negative_soa: [Record; 1],
    /// The last changes up to this version, oldest first, for incremental transfers.
    history: Vec<Arc<Change>>,
}

/// How many changes a zone keeps for IXFR; a secondary further behind gets the whole zone.
pub const HISTORY_LENGTH: usize = 1024;

/// One serial change of a zone: the records that left and came (RFC 1995 §4).
#[derive(Debug, PartialEq)]
pub struct Change {
    pub from_serial: u32,
    pub to_serial: u32,
    pub removed: Vec<Record>,
    pub added: Vec<Record>,
}

/// `serial` + 1 in serial number arithmetic (RFC 1982): wraps past 2^32 - 1.
pub fn next_serial(serial: u32) -> u32 {
    serial.wrapping_add(1)
}

/// The SOA `soa` with `serial` in it.
pub fn with_serial(soa: &Record, serial: u32) -> Record {
    let mut record = soa.clone();
    if let RData::SOA(data) = &mut record.data {
        data.serial = serial;
    }
    record
}

/// The static part of a zone.
#[derive(Debug)]
pub struct ZoneBase {
    key: NameKey,
    /// Every name (empty non-terminals too) in canonical DNS order (RFC 4034 §6.1), the order
    /// zone transfers and snapshot files list names in; pool names are present without A/AAAA.
    nodes: Vec<(NameKey, Node)>,
    /// Positions in `nodes`, by key: one hash probe finds a name.
    index: hashbrown::HashTable<u32>,
    /// The pool names in this zone (key and name); their A/AAAA come from the answers.
    pool_names: Vec<(NameKey, Name)>,
    /// Names with an NS/MX/SRV RRset whose target is a pool name: their additional addresses
    /// are recomputed in the overlay.
    dependents: Vec<NameKey>,
    /// The zone file's SOA; its serial is replaced by each version's.
    soa: Record,
    /// Some name is a wildcard (`*` as its first label): only then can a missing name be
    /// synthesized, so only then does the resolver look for one.
    wildcards: bool,
}

impl ZoneBase {
    /// Builds the static part; at each of `pool_names`, the A (AAAA) records are left out when
    /// its pool has IPv4 (IPv6) addresses, [IPv4, IPv6] (the pool answers them).
    ///
    /// Built from the zone's owners in canonical order (sorted once, when the zone was
    /// checked), not through a map: one walk groups them into names, and the walks after it
    /// are sequential. A million-name zone builds in a fraction of the time a hash map of
    /// names took.
    pub fn build(data: &ZoneData, pool_names: &[(&Name, [bool; 2])]) -> Self {
        let key = name_key(&data.origin);
        let pool_keys: FxHashMap<NameKey, (Name, [bool; 2])> = pool_names
            .iter()
            .map(|(name, families)| (name_key(name), ((*name).clone(), *families)))
            .collect();
        // Each record's owner with its index, less the addresses pools replace; names that
        // may have no records (pool names, the apex) merged in with `NO_RECORD`.
        const NO_RECORD: u32 = u32::MAX;
        let mut extras: Vec<_> = pool_keys
            .keys()
            .chain([&key])
            .map(|owner| (canonical_labels(owner), &owner[..]))
            .collect();
        extras.sort();
        let mut extras = extras.into_iter().peekable();
        let mut entries: Vec<(&[u8], u32)> = Vec::with_capacity(data.owners.len() + extras.len());
        for (owner, index) in &data.owners {
            let record = &data.records[*index as usize].record;
            let family = match record.record_type() {
                RecordType::A => Some(0),
                RecordType::AAAA => Some(1),
                _ => None,
            };
            if let (Some(family), Some((_, families))) = (family, pool_keys.get(owner)) {
                if families[family] {
                    continue;
                }
            }
            if extras.peek().is_some() {
                let labels = canonical_labels(owner);
                while let Some((_, extra)) = extras.next_if(|(extra, _)| *extra <= labels) {
                    entries.push((extra, NO_RECORD));
                }
            }
            entries.push((owner, *index));
        }
        entries.extend(extras.map(|(_, extra)| (extra, NO_RECORD)));

        let mut nodes: Vec<(NameKey, Node)> = Vec::with_capacity(entries.len());
        for (owner, index) in entries {
            if nodes.last().is_none_or(|(last, _)| **last != *owner) {
                nodes.push((owner.into(), Node::default()));
            }
            let Some(sourced) = data.records.get(index as usize) else {
                continue;
            };
            let record = &sourced.record;
            let node = &mut nodes.last_mut().expect("pushed above").1;
            match node
                .rrsets
                .iter_mut()
                .find(|set| set.record_type == record.record_type())
            {
                // RFC 2181 §5.2: one TTL per RRset; the first record's wins.
                Some(set) => set.push(record),
                None => push_compact(&mut node.rrsets, RrSet::new(record)),
            }
        }
        nodes.shrink_to_fit();

        // One pass over every name: exact sizes (a vector grown by push keeps room for four
        // elements, which for a zone of single-record names is most of its memory), and the
        // few names the later steps need: parents that may be missing, zone cuts, and owners
        // of NS/MX/SRV.
        let mut parents: rustc_hash::FxHashSet<NameKey> = rustc_hash::FxHashSet::default();
        let mut cuts: rustc_hash::FxHashSet<NameKey> = rustc_hash::FxHashSet::default();
        let mut with_targets: Vec<NameKey> = Vec::new();
        for (owner, node) in &mut nodes {
            node.rrsets.sort_by_key(|set| u16::from(set.record_type));
            node.rrsets.shrink_to_fit();
            for set in &mut node.rrsets {
                set.shrink();
            }
            if let Some(parent) = parent_key(owner).filter(|parent| parent.len() > key.len()) {
                if !parents.contains(parent) {
                    parents.insert(parent.into());
                }
            }
            let mut targeted = false;
            for set in &node.rrsets {
                targeted |= matches!(
                    set.record_type,
                    RecordType::NS | RecordType::MX | RecordType::SRV
                );
                if set.record_type == RecordType::NS && *owner != key {
                    cuts.insert(owner.clone());
                }
            }
            if targeted {
                with_targets.push(owner.clone());
            }
        }
        let mut index = index_of(&nodes);

        // Empty non-terminals: every name between an owner and the apex exists (RFC 4592 §2.2.2).
        let mut missing: rustc_hash::FxHashSet<NameKey> = rustc_hash::FxHashSet::default();
        for parent in &parents {
            let mut ancestor = Some(&parent[..]);
            while let Some(suffix) = ancestor {
                if suffix.len() <= key.len()
                    || position(&nodes, &index, suffix).is_some()
                    || !missing.insert(suffix.into())
                {
                    break;
                }
                ancestor = parent_key(suffix);
            }
        }
        if !missing.is_empty() {
            nodes.extend(missing.into_iter().map(|ent| (ent, Node::default())));
            sort_canonical(&mut nodes, key.len());
            index = index_of(&nodes);
        }

        // Zone cuts: a non-apex name with NS. Everything at or below the topmost cut is
        // answered by referral from that cut.
        let mut cut_lens: Vec<(usize, u16)> = Vec::new();
        for (at, (owner, _)) in nodes.iter().enumerate().filter(|_| !cuts.is_empty()) {
            let mut suffix = Some(&owner[..]);
            while let Some(candidate) = suffix {
                if candidate.len() <= key.len() {
                    break;
                }
                if cuts.contains(candidate) {
                    cut_lens.push((at, candidate.len() as u16));
                }
                suffix = parent_key(candidate);
            }
        }
        for (at, cut_len) in cut_lens {
            nodes[at].1.cut_len = Some(cut_len);
        }

        // Addresses of in-zone targets for the additional section, and referral glue.
        let find = |key: &[u8]| position(&nodes, &index, key);
        let mut additional: Vec<(usize, RecordType, Vec<Record>)> = Vec::new();
        let mut dependents: Vec<NameKey> = Vec::new();
        for owner in &with_targets {
            let at = find(owner).expect("owners exist");
            let node = &nodes[at].1;
            let is_cut = node.cut_len == Some(owner.len() as u16);
            if node
                .rrsets
                .iter()
                .flat_map(targets)
                .any(|target| pool_keys.contains_key(&name_key(&target)))
            {
                dependents.push(owner.clone());
            }
            for set in &node.rrsets {
                let records =
                    additional_for(set, is_cut, |target| find(target).map(|at| &nodes[at].1));
                if !records.is_empty() {
                    additional.push((at, set.record_type, records));
                }
            }
        }
        // The apex is overlaid too: each version carries its own serial in the SOA.
        let overlaid: Vec<usize> = pool_keys
            .keys()
            .chain(&dependents)
            .chain([&key])
            .map(|owner| find(owner).expect("overlaid names exist"))
            .collect();
        for (at, record_type, records) in additional {
            let set = nodes[at]
                .1
                .rrsets
                .iter_mut()
                .find(|set| set.record_type == record_type)
                .expect("rrset exists");
            set.set_additional(records);
        }
        for at in overlaid {
            nodes[at].1.overlaid = true;
        }

        let mut pool_names: Vec<(NameKey, Name)> = pool_keys
            .into_iter()
            .map(|(owner, (name, _))| (owner, name))
            .collect();
        pool_names
            .sort_by(|left, right| canonical_labels(&left.0).cmp(&canonical_labels(&right.0)));
        let wildcards = nodes.iter().any(|(owner, _)| owner.starts_with(&[1, b'*']));
        Self {
            key,
            nodes,
            index,
            pool_names,
            dependents,
            soa: data.soa().clone(),
            wildcards,
        }
    }

    /// The static node at exactly `key`.
    fn node(&self, key: &[u8]) -> Option<&Node> {
        position(&self.nodes, &self.index, key).map(|at| &self.nodes[at].1)
    }
}

/// An index of `nodes`' positions by key.
fn index_of(nodes: &[(NameKey, Node)]) -> hashbrown::HashTable<u32> {
    let mut index = hashbrown::HashTable::with_capacity(nodes.len());
    for (at, (owner, _)) in nodes.iter().enumerate() {
        index.insert_unique(hash_key(owner), at as u32, |&at: &u32| {
            hash_key(&nodes[at as usize].0)
        });
    }
    index
}

/// The position of the node at exactly `key`, through `index`.
fn position(
    nodes: &[(NameKey, Node)],
    index: &hashbrown::HashTable<u32>,
    key: &[u8],
) -> Option<usize> {
    index
        .find(hash_key(key), |&at| &*nodes[at as usize].0 == key)
        .map(|&at| at as usize)
}

fn hash_key(key: &[u8]) -> u64 {
    use std::hash::BuildHasher;
    rustc_hash::FxBuildHasher.hash_one(key)
}

/// Pushes without the four-element first allocation of `Vec::push` while the vector is
/// small (most names have one RRset of one record), so a large zone leaves no freed holes
/// between its live allocations; larger vectors grow as usual and are shrunk once built.
fn push_compact<T>(vector: &mut Vec<T>, value: T) {
    if vector.len() < 4 {
        vector.reserve_exact(1);
    }
    vector.push(value);
}

/// Sorts keys of one zone (whose origin key is `origin_len` bytes) in canonical order. Each
/// key is decorated with the first bytes of an order-preserving encoding of its labels below
/// the origin, so most comparisons never follow the key's pointer: sorting a 1,000,000-name
/// zone by `canonical_labels` alone took seconds of cache misses.
pub(crate) fn sort_canonical<T>(entries: &mut Vec<(NameKey, T)>, origin_len: usize) {
    let mut decorated: Vec<([u8; 16], (NameKey, T))> = entries
        .drain(..)
        .map(|entry| (canonical_prefix(&entry.0, origin_len), entry))
        .collect();
    // Stable: entries with the same key keep their order (a name's records, file order).
    decorated.sort_by(|left, right| {
        left.0
            .cmp(&right.0)
            .then_with(|| canonical_labels(&left.1 .0).cmp(&canonical_labels(&right.1 .0)))
    });
    entries.extend(decorated.into_iter().map(|(_, entry)| entry));
}

/// The first 16 bytes of a key's labels below the origin, root side first, each label's
/// bytes followed by a 0 separator; bytes 0 and 1 are written as 1,1 and 1,2 so that the
/// separator sorts below every byte. Keys whose prefixes differ compare as their names do.
fn canonical_prefix(key: &[u8], origin_len: usize) -> [u8; 16] {
    let mut prefix = [0u8; 16];
    let relative = &canonical_labels(key)[canonical_labels(&key[key.len() - origin_len..]).len()..];
    let mut at = 0;
    let mut put = |byte: u8| {
        if at < prefix.len() {
            prefix[at] = byte;
        }
        at += 1;
    };
    for label in relative {
        for &byte in *label {
            if byte <= 1 {
                put(1);
                put(byte + 1);
            } else {
                put(byte);
            }
        }
        put(0);
    }
    prefix
}

/// The labels of a key from the root down: comparing these compares names in canonical DNS
/// order (RFC 4034 §6.1), since keys are lowercase and a parent's labels are a prefix.
fn canonical_labels(key: &[u8]) -> smallvec::SmallVec<[&[u8]; 8]> {
    let mut labels = smallvec::SmallVec::new();
    let mut rest = key;
    while let Some((&length, tail)) = rest.split_first() {
        if length == 0 {
            break;
        }
        labels.push(&tail[..length as usize]);
        rest = &tail[length as usize..];
    }
    labels.reverse();
    labels
}

/// The addresses of `set`'s in-zone NS/MX/SRV targets (for NS at a cut, glue below the cut
/// too), found through `lookup`.
fn additional_for<'n>(
    set: &RrSet,
    is_cut: bool,
    lookup: impl Fn(&[u8]) -> Option<&'n Node>,
) -> Vec<Record> {
    let mut records: Vec<Record> = Vec::new();
    for target in targets(set) {
        let Some(node) = lookup(&name_key(&target)) else {
            continue;
        };
        if node.cut_len.is_some() && !is_cut {
            continue;
        }
        for address_type in [RecordType::A, RecordType::AAAA] {
            for record in node
                .rrset(address_type)
                .into_iter()
                .flat_map(|set| set.records(&target))
            {
                if !records.contains(&record) {
                    records.push(record);
                }
            }
        }
    }
    records
}

impl Zone {
    /// The zone `base` with the pools' current `answers` laid over it, at `serial`.
    pub fn with_answers(base: Arc<ZoneBase>, answers: &Answers, serial: u32) -> Self {
        let mut overlay: FxHashMap<NameKey, Node> = FxHashMap::default();
        let apex = base.node(&base.key).cloned().expect("the apex exists");
        overlay.insert(base.key.clone(), apex);
        for (key, name) in &base.pool_names {
            let mut node = base.node(key).cloned().expect("pool names exist");
            if let Some(answer) = answers.get(name) {
                node.servfail_addresses = answer.servfail;
                for (family, is_v4) in [(0, true), (1, false)] {
                    if !answer.families[family] {
                        // Not the pool's family: the zone file's records stay.
                        continue;
                    }
                    let records = answer
                        .addresses
                        .iter()
                        .filter(|address| address.is_ipv4() == is_v4)
                        .map(|address| {
                            let data = match address {
                                IpAddr::V4(v4) => RData::A(A::from(*v4)),
                                IpAddr::V6(v6) => RData::AAAA(AAAA::from(*v6)),
                            };
                            Record::from_rdata(name.clone(), answer.ttl, data)
                        });
                    node.rrsets.extend(RrSet::from_records(records));
                }
                node.rrsets.sort_by_key(|set| u16::from(set.record_type));
            }
            overlay.insert(key.clone(), node);
        }
        for key in &base.dependents {
            let mut node = overlay
                .get(key)
                .cloned()
                .or_else(|| base.node(key).cloned())
                .expect("dependents exist");
            let is_cut = node.cut_len == Some(key.len() as u16);
            for set in &mut node.rrsets {
                let records = additional_for(set, is_cut, |target| {
                    overlay.get(target).or_else(|| base.node(target))
                });
                set.set_additional(records);
            }
            overlay.insert(key.clone(), node);
        }
        let mut zone = Self {
            soa: base.soa.clone(),
            negative_soa: [base.soa.clone()],
            base,
            overlay,
            serial,
            history: Vec::new(),
        };
        zone.set_serial(serial);
        zone
    }

    /// Puts `serial` in the apex SOA and the negative-answer SOA.
    fn set_serial(&mut self, serial: u32) {
        self.serial = serial;
        let soa = with_serial(&self.base.soa, serial);
        let apex = self
            .overlay
            .get_mut(&self.base.key)
            .expect("the apex is overlaid");
        for set in &mut apex.rrsets {
            if set.record_type == RecordType::SOA {
                *set = RrSet::new(&soa);
            }
        }
        let minimum = match &soa.data {
            RData::SOA(data) => data.minimum,
            _ => unreachable!("zones are loaded with an SOA"),
        };
        self.soa = soa.clone();
        let mut negative_soa = soa;
        negative_soa.ttl = negative_soa.ttl.min(minimum);
        self.negative_soa = [negative_soa];
    }

    /// The next version of this zone with `answers`: the serial goes up by one, with the change
    /// remembered for IXFR, only when the zone's records differ; otherwise the serial stays
    /// (a changed SERVFAIL flag alone changes no record).
    pub fn next_version(&self, answers: &Answers) -> Self {
        let mut next = Self::with_answers(self.base.clone(), answers, self.serial);
        let (removed, added) = self.pool_record_changes(&next);
        if removed.is_empty() && added.is_empty() {
            next.history = self.history.clone();
            return next;
        }
        let serial = next_serial(self.serial);
        next.set_serial(serial);
        let mut history = self.history.clone();
        if history.len() == HISTORY_LENGTH {
            history.remove(0);
        }
        history.push(Arc::new(Change {
            from_serial: self.serial,
            to_serial: serial,
            removed,
            added,
        }));
        next.history = history;
        next
    }

    /// The pool records in `self` but not in `next`, and in `next` but not in `self`.
    fn pool_record_changes(&self, next: &Zone) -> (Vec<Record>, Vec<Record>) {
        let addresses = |zone: &Zone, key: &[u8]| -> Vec<Record> {
            zone.node(key)
                .map(|node| {
                    node.rrsets
                        .iter()
                        .filter(|set| matches!(set.record_type, RecordType::A | RecordType::AAAA))
                        .flat_map(|set| set.records(&key_name(key)))
                        .collect()
                })
                .unwrap_or_default()
        };
        let mut removed = Vec::new();
        let mut added = Vec::new();
        for (key, _) in &self.base.pool_names {
            let before = addresses(self, key);
            let after = addresses(next, key);
            removed.extend(
                before
                    .iter()
                    .filter(|record| !after.contains(record))
                    .cloned(),
            );
            added.extend(
                after
                    .iter()
                    .filter(|record| !before.contains(record))
                    .cloned(),
            );
        }
        (removed, added)
    }

    /// This freshly built version as the successor of `previous` (a reload): at `previous`'s
    /// serial and history if nothing changed (false), else at a new serial with the change
    /// kept for IXFR (true). The new serial is this version's own (the zone file's) if that is
    /// newer than `previous`'s, else the next one.
    pub fn following(&self, previous: &Zone) -> (Self, bool) {
        let (removed, added) = record_changes(previous, self);
        let same_soa = {
            let (old, new) = (
                with_serial(&previous.base.soa, 0),
                with_serial(&self.base.soa, 0),
            );
            old == new && old.ttl == new.ttl
        };
        let mut next = self.at_serial(previous.serial);
        next.history = previous.history.clone();
        if removed.is_empty() && added.is_empty() && same_soa {
            return (next, false);
        }
        let serial = if crate::zone::serial::serial_greater(self.serial, previous.serial) {
            self.serial
        } else {
            next_serial(previous.serial)
        };
        next.set_serial(serial);
        if next.history.len() == HISTORY_LENGTH {
            next.history.remove(0);
        }
        next.history.push(Arc::new(Change {
            from_serial: previous.serial,
            to_serial: serial,
            removed,
            added,
        }));
        (next, true)
    }

    /// This version with its serial set to `serial` and no history (a starting version).
    pub fn at_serial(&self, serial: u32) -> Self {
        let mut zone = Self {
            base: self.base.clone(),
            overlay: self.overlay.clone(),
            serial,
            soa: self.soa.clone(),
            negative_soa: self.negative_soa.clone(),
            history: Vec::new(),
        };
        zone.set_serial(serial);
        zone
    }

    /// This version's SOA serial.
    pub fn serial(&self) -> u32 {
        self.serial
    }

    /// The zone's origin.
    pub fn origin(&self) -> &Name {
        &self.base.soa.name
    }

    /// The SOA at this version's serial.
    pub fn soa(&self) -> &Record {
        &self.soa
    }

    /// Every record of this version, SOA first, then names in canonical order with their
    /// RRsets by type code and records in zone-file (or pool-config) order. The SOA is not
    /// repeated at the end; a transfer adds it.
    pub fn records(&self) -> impl Iterator<Item = Record> + '_ {
        let mut owner = (&[][..], Name::root());
        std::iter::once(self.soa.clone()).chain(self.rrsets().flat_map(move |(key, set)| {
            if owner.0 != key {
                owner = (key, key_name(key));
            }
            set.records(&owner.1)
        }))
    }

    /// Every RRset but the SOA with its owner's key, in the order of `records`.
    pub fn rrsets(&self) -> impl Iterator<Item = (&[u8], &RrSet)> + '_ {
        self.base.nodes.iter().flat_map(move |(key, node)| {
            let node = if node.overlaid {
                self.overlay.get(key)
            } else {
                Some(node)
            };
            node.into_iter()
                .flat_map(|node| node.rrsets.iter())
                .filter(|set| set.record_type != RecordType::SOA)
                .map(move |set| (&key[..], set))
        })
    }

    /// The changes from `serial` to this version, oldest first, if they are all still kept;
    /// empty when `serial` is this version's.
    pub fn changes_since(&self, serial: u32) -> Option<&[Arc<Change>]> {
        if serial == self.serial {
            return Some(&[]);
        }
        let start = self
            .history
            .iter()
            .position(|change| change.from_serial == serial)?;
        Some(&self.history[start..])
    }

    /// The static part, shared by every version of this zone.
    pub fn base(&self) -> &Arc<ZoneBase> {
        &self.base
    }

    /// The lowercase wire form of the origin.
    pub fn key(&self) -> &[u8] {
        &self.base.key
    }

    /// True when some name of the zone is a wildcard.
    pub fn has_wildcards(&self) -> bool {
        self.base.wildcards
    }

    /// The node at exactly `key`, if the name exists (as an owner or an empty non-terminal).
    /// One hash probe, except for the few names the overlay replaces.
    pub fn node(&self, key: &[u8]) -> Option<&Node> {
        self.node_tracked(key).0
    }

    /// `node`, and whether the name is one the overlay replaces: an answer that read such a
    /// name can change with every version of the zone (the answer cache needs to know).
    pub fn node_tracked(&self, key: &[u8]) -> (Option<&Node>, bool) {
        match self.base.node(key) {
            Some(node) if node.overlaid => (self.overlay.get(key), true),
            node => (node, false),
        }
    }

    /// The SOA to put in the authority section of negative answers.
    pub fn negative_soa(&self) -> &[Record] {
        &self.negative_soa
    }
}

/// The records (SOA aside) in `previous` but not in `next`, and in `next` but not in
/// `previous`; a changed TTL is a change. Walks each zone's owners once (O(records)).
fn record_changes(previous: &Zone, next: &Zone) -> (Vec<Record>, Vec<Record>) {
    let same = |left: &Record, right: &Record| left == right && left.ttl == right.ttl;
    fn sets_at<'z>(zone: &'z Zone, key: &[u8]) -> Vec<&'z RrSet> {
        zone.node(key)
            .map(|node| {
                node.rrsets
                    .iter()
                    .filter(|set| set.record_type != RecordType::SOA)
                    .collect()
            })
            .unwrap_or_default()
    }
    let mut removed = Vec::new();
    let mut added = Vec::new();
    // Every name of `previous`, then the names only `next` has.
    let keys = previous.base.nodes.iter().map(|(key, _)| key).chain(
        next.base
            .nodes
            .iter()
            .map(|(key, _)| key)
            .filter(|key| previous.base.node(key).is_none()),
    );
    for key in keys {
        let (old, new) = (sets_at(previous, key), sets_at(next, key));
        // Most names are unchanged: their stored RDATA compares equal without rebuilding.
        if old.len() == new.len() && old.iter().zip(&new).all(|(old, new)| old.same_records(new)) {
            continue;
        }
        let owner = key_name(key);
        let before: Vec<Record> = old.iter().flat_map(|set| set.records(&owner)).collect();
        let after: Vec<Record> = new.iter().flat_map(|set| set.records(&owner)).collect();
        removed.extend(
            before
                .iter()
                .filter(|record| !after.iter().any(|other| same(record, other)))
                .cloned(),
        );
        added.extend(
            after
                .iter()
                .filter(|record| !before.iter().any(|other| same(record, other)))
                .cloned(),
        );
    }
    (removed, added)
}

/// The names an NS, MX or SRV RRset points at, whose addresses belong in the additional
/// section; none for other types.
fn targets(set: &RrSet) -> impl Iterator<Item = Name> + '_ {
    let wanted = matches!(
        set.record_type,
        RecordType::NS | RecordType::MX | RecordType::SRV
    );
    wanted
        .then(|| set.records(&Name::root()))
        .into_iter()
        .flatten()
        .filter_map(|record| match record.data {
            RData::NS(ns) => Some(ns.0),
            RData::MX(mx) => Some(mx.exchange),
            RData::SRV(srv) => Some(srv.target),
            _ => None,
        })
}

/// One name in a zone.
#[derive(Debug, Default, Clone)]
pub struct Node {
    /// Sorted by type code; empty for an empty non-terminal.
    rrsets: Vec<RrSet>,
    /// When the name is at or below a zone cut: the key length of the topmost cut above it
    /// (the cut's key is the last `cut_len` bytes of this node's key).
    cut_len: Option<u16>,
    /// A pool name whose pool answers SERVFAIL (all down, `all_down = "servfail"`).
    servfail_addresses: bool,
    /// In the static part: the zone's overlay holds this name's current node.
    overlaid: bool,
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
///
/// Stored compactly: one TTL (RFC 2181 §5.2) and each record's RDATA in uncompressed wire
/// form, case kept. A hickory `Record` is 280 bytes with its owner name; stored whole, they
/// were most of a million-name zone's memory. Records are rebuilt when an answer, transfer or
/// rendering needs them, with the owner name it supplies (answers from the answer cache need
/// none).
#[derive(Debug, Clone)]
pub struct RrSet {
    pub record_type: RecordType,
    ttl: u32,
    count: u16,
    /// Each record's RDATA after its big-endian u16 length, in zone-file order.
    rdata: Vec<u8>,
    /// Additional addresses and the CNAME target: most RRsets have neither.
    extra: Option<Box<Extra>>,
}

#[derive(Debug, Clone, Default)]
struct Extra {
    /// Addresses of in-zone NS/MX/SRV targets (glue, for NS at a cut).
    additional: Vec<Record>,
    /// For a CNAME: the target and its key, so a chain is followed without building names.
    cname_target: Option<(Name, NameKey)>,
}

impl RrSet {
    /// An RRset holding `record` (its type and TTL) alone.
    fn new(record: &Record) -> Self {
        let mut set = Self {
            record_type: record.record_type(),
            ttl: record.ttl,
            count: 0,
            rdata: Vec::new(),
            extra: None,
        };
        if let RData::CNAME(target) = &record.data {
            set.extra_mut().cname_target = Some((target.0.clone(), name_key(&target.0)));
        }
        set.push(record);
        set
    }

    /// Appends `record`'s RDATA; its TTL is the set's (the first record's wins).
    fn push(&mut self, record: &Record) {
        use hickory_proto::serialize::binary::{BinEncodable, BinEncoder, NameEncoding};
        thread_local! {
            static WIRE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        let mut append = |data: &[u8]| {
            // Exact for the first record (most sets have one), amortized after.
            if self.rdata.is_empty() {
                self.rdata.reserve_exact(2 + data.len());
            }
            self.rdata
                .extend_from_slice(&(data.len() as u16).to_be_bytes());
            self.rdata.extend_from_slice(data);
            self.count += 1;
        };
        match &record.data {
            // Most of a large zone: no encoder, no scratch buffer.
            RData::A(address) => append(&address.0.octets()),
            RData::AAAA(address) => append(&address.0.octets()),
            data => WIRE.with_borrow_mut(|wire| {
                wire.clear();
                let mut encoder = BinEncoder::new(wire);
                encoder.set_name_encoding(NameEncoding::Uncompressed);
                // Loaded and pool records always encode; one that cannot is left out.
                if data.emit(&mut encoder).is_ok() && wire.len() <= usize::from(u16::MAX) {
                    append(wire);
                }
            }),
        }
    }

    /// An RRset of `records` (one type, one owner), or `None` when there are none.
    fn from_records(records: impl IntoIterator<Item = Record>) -> Option<Self> {
        let mut records = records.into_iter();
        let mut set = Self::new(&records.next()?);
        for record in records {
            set.push(&record);
        }
        Some(set)
    }

    fn extra_mut(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Default::default)
    }

    /// How many records the set holds.
    pub fn len(&self) -> usize {
        usize::from(self.count)
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The set's TTL.
    pub fn ttl(&self) -> u32 {
        self.ttl
    }

    /// Each record's RDATA in wire form, in order.
    pub fn rdatas(&self) -> impl Iterator<Item = &[u8]> + '_ {
        let mut rest = &self.rdata[..];
        std::iter::from_fn(move || {
            let (length, tail) = rest.split_first_chunk::<2>()?;
            let (data, tail) = tail.split_at(usize::from(u16::from_be_bytes(*length)));
            rest = tail;
            Some(data)
        })
    }

    /// The records, owned by `owner`.
    pub fn records<'s>(&'s self, owner: &Name) -> impl Iterator<Item = Record> + use<'s> {
        use hickory_proto::serialize::binary::{BinDecoder, Restrict};
        let owner = owner.clone();
        self.rdatas().filter_map(move |data| {
            let mut decoder = BinDecoder::new(data);
            let read = RData::read(
                &mut decoder,
                self.record_type,
                Restrict::new(data.len() as u16),
            );
            debug_assert!(read.is_ok(), "stored RDATA decodes");
            Some(Record::from_rdata(owner.clone(), self.ttl, read.ok()?))
        })
    }

    /// True when both sets hold the same records with the same TTL.
    pub fn same_records(&self, other: &RrSet) -> bool {
        self.record_type == other.record_type && self.ttl == other.ttl && self.rdata == other.rdata
    }

    /// Addresses of in-zone NS/MX/SRV targets (glue, for NS at a cut).
    pub fn additional(&self) -> &[Record] {
        self.extra.as_ref().map_or(&[], |extra| &extra.additional)
    }

    fn set_additional(&mut self, records: Vec<Record>) {
        if records.is_empty() && self.extra.is_none() {
            return;
        }
        self.extra_mut().additional = records;
    }

    /// For a CNAME: the target name and its key.
    pub fn cname_target(&self) -> Option<&(Name, NameKey)> {
        self.extra.as_ref()?.cname_target.as_ref()
    }

    /// Drops spare capacity once the set is built.
    fn shrink(&mut self) {
        self.rdata.shrink_to_fit();
    }
}

/// The name whose lowercase wire form is `key`.
pub fn key_name(key: &[u8]) -> Name {
    use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
    Name::read(&mut BinDecoder::new(key)).unwrap_or_else(|_| Name::root())
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

#[cfg(test)]
mod overlay_tests {
    use super::*;
    use crate::dns::answer::{resolve, Question};
    use crate::health::NameAnswer;
    use crate::zone::zonefile::parse_zone;
    use hickory_proto::op::ResponseCode;
    use std::path::Path;

    const ZONE: &str = "$TTL 300
@        SOA ns1 hostmaster 1 3600 600 86400 60
         NS  ns1
         MX  10 mail
ns1      A   192.0.2.53
mail     A   192.0.2.25
mail     TXT \"kept\"
";

    fn answer(addresses: &[&str], servfail: bool) -> NameAnswer {
        NameAnswer {
            ttl: 30,
            addresses: addresses.iter().map(|text| text.parse().unwrap()).collect(),
            servfail,
            families: [true, true],
        }
    }

    fn ask(
        snapshot: &Snapshot,
        name: &str,
        record_type: RecordType,
    ) -> (ResponseCode, Vec<String>, Vec<String>) {
        let name = Name::from_ascii(name).unwrap();
        let response = resolve(
            snapshot,
            Question {
                name: &name,
                record_type,
            },
            0,
        );
        let data = |records: Vec<&Record>| {
            records
                .iter()
                .map(|record| record.data.to_string())
                .collect()
        };
        (
            response.rcode,
            data(response.answer.iter().collect()),
            data(response.additional.iter().collect()),
        )
    }

    #[test]
    fn pool_answers_are_laid_over_the_static_zone() {
        let origin = Name::from_ascii("example.test.").unwrap();
        let data = parse_zone(ZONE, Path::new("t.zone"), &origin).unwrap();
        let mail = Name::from_ascii("mail.example.test.").unwrap();
        let deep = Name::from_ascii("a.b.example.test.").unwrap();
        let mut answers = Answers::new();
        answers.insert(mail.clone(), answer(&["10.0.0.1", "2001:db8::1"], false));
        answers.insert(deep.clone(), answer(&[], true));
        let snapshot = Snapshot::build(&[data], &answers);

        // The pool replaced the file's A; other types stay; the MX additional follows the pool.
        assert_eq!(
            ask(&snapshot, "mail.example.test.", RecordType::A).1,
            ["10.0.0.1"]
        );
        assert_eq!(
            ask(&snapshot, "mail.example.test.", RecordType::TXT).1,
            ["kept"]
        );
        assert_eq!(
            ask(&snapshot, "example.test.", RecordType::MX).2,
            ["10.0.0.1", "2001:db8::1"]
        );
        // A pool name the file does not have exists, and so does its empty non-terminal parent.
        assert_eq!(
            ask(&snapshot, "a.b.example.test.", RecordType::A).0,
            ResponseCode::ServFail
        );
        assert_eq!(
            ask(&snapshot, "b.example.test.", RecordType::A).0,
            ResponseCode::NoError
        );

        // A new answer shares the static part and changes only the overlay.
        answers.insert(mail.clone(), answer(&["10.0.0.2"], false));
        answers.insert(deep, answer(&[], false));
        let next = snapshot.with_answers(&[&mail], &answers);
        let key = name_key(&origin);
        assert!(Arc::ptr_eq(
            snapshot.find_zone(&key).unwrap().base(),
            next.find_zone(&key).unwrap().base()
        ));
        assert_eq!(
            ask(&next, "mail.example.test.", RecordType::A).1,
            ["10.0.0.2"]
        );
        assert_eq!(ask(&next, "example.test.", RecordType::MX).2, ["10.0.0.2"]);
        let (rcode, records, _) = ask(&next, "a.b.example.test.", RecordType::A);
        assert_eq!((rcode, records.len()), (ResponseCode::NoError, 0));
        // The old snapshot is unchanged.
        assert_eq!(
            ask(&snapshot, "mail.example.test.", RecordType::A).1,
            ["10.0.0.1"]
        );
    }

    #[test]
    fn a_reload_keeps_unchanged_zones_and_diffs_changed_ones() {
        use crate::zone::zonefile::parse_zone;
        let zone = |origin: &str, serial: u32, extra: &str| {
            let origin = Name::from_ascii(origin).unwrap();
            let text =
                format!("$TTL 300\n@ SOA ns h {serial} 1 1 1 60\n@ NS ns\nns A 192.0.2.1\n{extra}");
            parse_zone(&text, std::path::Path::new("z"), &origin).unwrap()
        };
        let first = Snapshot::build(
            &[zone("a.test.", 10, "x TXT one\n"), zone("b.test.", 5, "")],
            &Answers::default(),
        )
        .with_serial(&name_key(&Name::from_ascii("a.test.").unwrap()), 500);
        let serial_of = |snapshot: &Snapshot, origin: &str| {
            snapshot
                .zone(&name_key(&Name::from_ascii(origin).unwrap()))
                .map(|zone| zone.serial())
        };
        // a.test: x's TXT changes and y comes (file serial 10, older than 500: 501);
        // b.test: same records (its file serial alone changed: not a change); c.test is new.
        let (next, changes) = first.reloaded(
            &[
                zone("a.test.", 10, "x TXT two\ny A 192.0.2.7\n"),
                zone("b.test.", 6, ""),
                zone("c.test.", 3, ""),
            ],
            &Answers::default(),
            Arc::default(),
            |_| 77,
        );
        let summary: Vec<(String, u32, ZoneChange)> = changes
            .iter()
            .map(|(origin, serial, change)| (origin.to_string(), *serial, *change))
            .collect();
        assert_eq!(
            summary,
            [
                ("a.test.".to_string(), 501, ZoneChange::Changed),
                ("b.test.".to_string(), 5, ZoneChange::Unchanged),
                ("c.test.".to_string(), 77, ZoneChange::Added),
            ]
        );
        assert_eq!(serial_of(&next, "a.test."), Some(501));
        let a = next
            .zone(&name_key(&Name::from_ascii("a.test.").unwrap()))
            .unwrap();
        let change = &a.changes_since(500).unwrap()[0];
        let text = |records: &[Record]| -> Vec<String> {
            records.iter().map(|record| record.to_string()).collect()
        };
        assert_eq!(text(&change.removed).len(), 1);
        assert!(text(&change.removed)[0].contains("one"));
        assert_eq!(change.added.len(), 2, "{:?}", text(&change.added));
        // A zone file serial newer than the served one is taken; removed zones are reported.
        let (again, changes) = next.reloaded(
            &[zone("a.test.", 900, "")],
            &Answers::default(),
            Arc::default(),
            |_| 1,
        );
        assert_eq!(serial_of(&again, "a.test."), Some(900));
        assert!(changes.contains(&(Name::from_ascii("b.test.").unwrap(), 5, ZoneChange::Removed)));
        // History is kept across reloads: IXFR from 500 still works at 900.
        let a = again
            .zone(&name_key(&Name::from_ascii("a.test.").unwrap()))
            .unwrap();
        assert_eq!(a.changes_since(500).unwrap().len(), 2);
    }
}

#[cfg(test)]
mod canonical_order {
    use super::*;

    #[test]
    fn the_decorated_sort_is_the_canonical_order() {
        let origin = name_key(&Name::from_ascii("example.test.").unwrap());
        let mut keys: Vec<NameKey> = Vec::new();
        let labels: &[&[u8]] = &[
            b"a",
            b"ab",
            b"abc",
            b"b",
            b"z",
            b"a\x00",
            b"a\x01",
            b"\x00",
            b"\x01",
            b"\x02",
            b"zzzzzzzzzzzzzzzzzzzz",
            b"zzzzzzzzzzzzzzzzzzzy",
            b"*",
            b"-",
        ];
        for first in labels {
            for second in [None].into_iter().chain(labels.iter().map(Some)) {
                let mut key = Vec::new();
                if let Some(second) = second {
                    key.push(second.len() as u8);
                    key.extend_from_slice(second);
                }
                key.push(first.len() as u8);
                key.extend_from_slice(first);
                key.extend_from_slice(&origin);
                keys.push(key.into());
            }
        }
        keys.push(origin.clone());
        keys.reverse();
        let mut expected = keys.clone();
        expected.sort_by(|left, right| canonical_labels(left).cmp(&canonical_labels(right)));
        let mut entries: Vec<(NameKey, ())> = keys.into_iter().map(|key| (key, ())).collect();
        sort_canonical(&mut entries, origin.len());
        let keys: Vec<NameKey> = entries.into_iter().map(|(key, ())| key).collect();
        assert_eq!(keys, expected);
    }
}
