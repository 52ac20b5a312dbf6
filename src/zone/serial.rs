//! Zone serials that only go up, across restarts too.
//!
//! Why this exists: a secondary transfers a zone only when the primary's SOA serial is greater
//! (RFC 1982) than its own. If a restart served an older serial, or the same serial with other
//! records, secondaries would keep stale addresses. healthdns persists each zone's last serial
//! and a digest of its content in the state file (`[server] state_file`) and decides the
//! starting serial from it.
//!
//! Documented rules:
//! - While running, a zone's serial goes up by one for each published change of its records
//!   (pool answers); changes are coalesced by `min_serial_interval` (see `publish`).
//! - At start, with no state for the zone: the zone file's serial.
//! - With state and the same content as recorded: the recorded serial, unless the zone file's
//!   serial is greater (then the file's: the operator bumped it).
//! - With state and other content: the file's serial if it is greater than the recorded one,
//!   else the recorded serial + 1.
//! - While running, every zone's state reserves serials ahead: it records `reserved`, the
//!   current serial + `RESERVE`, and is rewritten at most once per `min_serial_interval`.
//!   A clean stop records the exact last serial and drops the reservation. After an unclean
//!   stop (crash, `kill -9`, power loss) the zone starts above the reservation, so a serial
//!   published but not yet recorded is never reissued with other content.
//! - With no state for a zone (first start, or the state file lost): the zone file's serial,
//!   or, if the zone's snapshot file is there and its serial is greater, that serial + 1: the
//!   snapshot file is the second record of what secondaries may have seen. Lose both and
//!   serials restart from the zone file: bump its serial (or use a date-based one) then.
//! - `healthdns export` takes its serial through the same state (it records it), and
//!   refuses while the state holds a reservation (a server is running, or stopped uncleanly),
//!   so an exported serial is never published later with other content.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::atomic::write_atomically;
use hickory_proto::rr::{DNSClass, Record, RecordType};

/// The serial of the SOA in a snapshot file written by healthdns (`render`), read from its
/// first lines; None if the file is missing or not ours.
pub fn snapshot_file_serial(path: &Path) -> Option<u32> {
    use std::io::BufRead;
    let file = std::fs::File::open(path).ok()?;
    std::io::BufReader::new(file)
        .lines()
        .take(8)
        .map_while(Result::ok)
        .find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let soa = fields.iter().position(|field| *field == "SOA")?;
            fields.get(soa + 3)?.parse().ok()
        })
}
use crate::zone::snapshot::{with_serial, Zone};

/// True when `left` is greater than `right` in serial number arithmetic (RFC 1982 §3.2).
pub fn serial_greater(left: u32, right: u32) -> bool {
    left != right && right.wrapping_sub(left) > (1 << 31)
}

/// A digest of a zone version's records with the serial left out: equal digests mean equal
/// content.
///
/// The records are hashed in their canonical wire form (RFC 4034 §6.2: no compression, names
/// lowercase), each with its length, in the order zone transfers send them: about ten times
/// cheaper than rendering the zone as text, which took seconds for a million records.
pub fn content_digest(zone: &Zone) -> String {
    let mut hasher = Sha256::new();
    let mut wire = Vec::with_capacity(512);
    let hash = |hasher: &mut Sha256, wire: &mut Vec<u8>, record: &Record| {
        canonical_wire(record, wire);
        hasher.update((wire.len() as u32).to_be_bytes());
        hasher.update(&wire[..]);
    };
    hash(&mut hasher, &mut wire, &with_serial(zone.soa(), 0));
    for (key, set) in zone.rrsets() {
        if matches!(
            set.record_type,
            RecordType::A | RecordType::AAAA | RecordType::TXT
        ) {
            // No name in the RDATA: the stored form is the canonical one, and the owner's
            // key is its canonical (lowercase) wire form, so no record is rebuilt.
            let fixed = key.len() + 10;
            for rdata in set.rdatas() {
                hasher.update(((fixed + rdata.len()) as u32).to_be_bytes());
                hasher.update(key);
                hasher.update(u16::from(set.record_type).to_be_bytes());
                hasher.update(u16::from(DNSClass::IN).to_be_bytes());
                hasher.update(set.ttl().to_be_bytes());
                hasher.update((rdata.len() as u16).to_be_bytes());
                hasher.update(rdata);
            }
        } else {
            for record in set.records(&crate::zone::snapshot::key_name(key)) {
                hash(&mut hasher, &mut wire, &record);
            }
        }
    }
    hex::encode(hasher.finalize())
}

/// `record` in DNSSEC canonical wire form (RFC 4034 §6.2), or its text where it cannot be
/// encoded (which loaded records always can).
fn canonical_wire(record: &Record, wire: &mut Vec<u8>) {
    use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};
    wire.clear();
    let mut encoder = BinEncoder::new(wire);
    encoder.set_canonical_form(true);
    if record.emit(&mut encoder).is_err() {
        wire.clear();
        let mut text = String::new();
        crate::zone::render::write_record(&mut text, record);
        wire.extend_from_slice(text.as_bytes());
    }
}

/// What the state file remembers of one zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneState {
    pub serial: u32,
    pub digest: String,
    /// Set while a server runs: serials up to this one may have been served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reserved: Option<u32>,
}

/// How far ahead a running server reserves serials (see the module rules).
pub const RESERVE: u32 = 1000;

/// The reservation to hold while serving `serial`: the `current` one while it still covers
/// the serial with room to spare (so the state is not rewritten for every serial), else
/// `serial + RESERVE`.
fn reservation(current: Option<u32>, serial: u32) -> u32 {
    match current {
        Some(reserved) if serial_greater(reserved, serial.wrapping_add(RESERVE / 2)) => reserved,
        _ => serial.wrapping_add(RESERVE),
    }
}

/// The state file's contents.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    /// By zone origin ("example.test.").
    #[serde(default)]
    pub zones: BTreeMap<String, ZoneState>,
    /// What the health table believed at the last write (verdicts, overrides).
    #[serde(default)]
    pub health: crate::health::SavedHealth,
}

/// The state file cannot be used; the message says which and why.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Reading failed (permissions?); fix it or point `state_file` elsewhere.
    /// (The I/O errors here are named `error`, not `source`: the message prints them.)
    #[error("{path}: cannot read the state file: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    /// The file is not ours or is damaged; move it away to start from the zone files' serials.
    #[error("{path}: the state file is damaged ({message}); move it away to start from the zone files' serials")]
    Damaged { path: PathBuf, message: String },
    /// Writing failed; the serials still go up while running.
    #[error("{path}: cannot write the state file: {error}")]
    Write {
        path: PathBuf,
        error: std::io::Error,
    },
}

impl State {
    /// Reads the state file; a missing file is an empty state.
    pub fn load(path: &Path) -> Result<Self, StateError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Self::default())
            }
            Err(error) => {
                return Err(StateError::Read {
                    path: path.to_path_buf(),
                    error,
                })
            }
        };
        toml::from_str(&text).map_err(|error| StateError::Damaged {
            path: path.to_path_buf(),
            message: error.message().to_string(),
        })
    }

    /// Writes the state file atomically.
    pub fn save(&self, path: &Path) -> Result<(), StateError> {
        let mut text = String::from(
            "# healthdns state: each zone's last serial and content digest, and what the health\n# checks last believed. Written by the server.\n",
        );
        text.push_str(&toml::to_string(self).expect("the state serializes"));
        write_atomically(path, text.as_bytes()).map_err(|error| StateError::Write {
            path: path.to_path_buf(),
            error,
        })
    }

    /// The serial to start `zone` at (see the module rules); `zone` is at its file's serial,
    /// and `snapshot_serial` is the serial of its snapshot file, if there is one.
    pub fn starting_serial(&self, zone: &Zone, digest: &str, snapshot_serial: Option<u32>) -> u32 {
        let file_serial = zone.serial();
        let next = crate::zone::snapshot::next_serial;
        let candidate = match self.zones.get(&zone.origin().to_string()) {
            None => match snapshot_serial {
                Some(serial) => next(serial),
                None => return file_serial,
            },
            Some(ZoneState {
                reserved: Some(reserved),
                ..
            }) => next(*reserved),
            Some(recorded) if recorded.digest == digest => recorded.serial,
            Some(recorded) => next(recorded.serial),
        };
        if serial_greater(file_serial, candidate) {
            file_serial
        } else {
            candidate
        }
    }

    /// Records `zone`'s serial and digest, with a reservation while `running`; true when that
    /// changed the state.
    pub fn record(&mut self, zone: &Zone, digest: String, running: bool) -> bool {
        let origin = zone.origin().to_string();
        let current = self.zones.get(&origin).and_then(|state| state.reserved);
        let reserved = running.then(|| reservation(current, zone.serial()));
        let entry = ZoneState {
            serial: zone.serial(),
            digest,
            reserved,
        };
        self.zones.insert(origin, entry.clone()) != Some(entry)
    }

    /// Makes sure the reservation covers `zone`'s serial with room to spare, before anything
    /// slow (rendering, snapshot files) happens; true when that changed the state. A zone
    /// with no record yet is recorded with an unknown digest.
    pub fn reserve(&mut self, zone: &Zone) -> bool {
        let serial = zone.serial();
        let entry = self
            .zones
            .entry(zone.origin().to_string())
            .or_insert_with(|| ZoneState {
                serial,
                digest: String::new(),
                reserved: None,
            });
        let reserved = Some(reservation(entry.reserved, serial));
        std::mem::replace(&mut entry.reserved, reserved) != reserved
    }

    /// True when some zone holds a reservation: a server is running with this state, or one
    /// stopped without recording its last serials.
    pub fn reserved(&self) -> bool {
        self.zones.values().any(|zone| zone.reserved.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::health::{Answers, NameAnswer};
    use crate::zone::snapshot::{name_key, Snapshot};
    use hickory_proto::rr::Name;

    fn zone(file_serial: u32, address: &str) -> std::sync::Arc<Zone> {
        let origin = Name::from_ascii("example.test.").unwrap();
        let text = format!(
            "$TTL 300\n@ SOA ns h {file_serial} 3600 600 86400 60\n@ NS ns\nns A 192.0.2.1\n"
        );
        let data = crate::zone::zonefile::parse_zone(&text, Path::new("z"), &origin).unwrap();
        let mut answers = Answers::new();
        answers.insert(
            Name::from_ascii("www.example.test.").unwrap(),
            NameAnswer {
                ttl: 30,
                addresses: vec![address.parse().unwrap()],
                servfail: false,
                families: [true, true],
            },
        );
        Snapshot::build(&[data], &answers)
            .zone(&name_key(&origin))
            .unwrap()
            .clone()
    }

    /// The digest hashes A, AAAA and TXT from stored RDATA; it must equal hashing every
    /// record's canonical form (what earlier versions did), or every restart would look like
    /// a content change.
    #[test]
    fn digest_of_stored_rdata_equals_the_canonical_records() {
        let origin = Name::from_ascii("Example.TEST.").unwrap();
        let text = "$TTL 300\n@ SOA NS.example.test. H.Example.test. 7 3600 600 86400 60\n\
            @ NS ns\nNS A 192.0.2.1\nns AAAA 2001:db8::1\nWww TXT \"Mixed Case\" \"two\"\n\
            mail MX 10 MX.Example.test.\n_sip._tcp SRV 1 2 5060 Sip.example.test.\n\
            *.wild A 192.0.2.9\nalias CNAME Www\nsub NS ns.sub\nns.sub A 192.0.2.3\n";
        let data = crate::zone::zonefile::parse_zone(text, Path::new("z"), &origin).unwrap();
        let snapshot = Snapshot::build(&[data], &Answers::new());
        let zone = snapshot.zone(&name_key(&origin)).unwrap();
        let mut hasher = Sha256::new();
        let mut wire = Vec::new();
        let soa = with_serial(zone.soa(), 0);
        for record in std::iter::once(soa).chain(zone.records().skip(1)) {
            canonical_wire(&record, &mut wire);
            hasher.update((wire.len() as u32).to_be_bytes());
            hasher.update(&wire);
        }
        assert_eq!(content_digest(zone), hex::encode(hasher.finalize()));
    }

    #[test]
    fn starting_serials_follow_the_documented_rules() {
        let mut state = State::default();
        let first = zone(100, "10.0.0.1");
        let digest = content_digest(&first);
        assert_eq!(
            state.starting_serial(&first, &digest, None),
            100,
            "no state: the file's"
        );
        assert_eq!(
            state.starting_serial(&first, &digest, Some(150)),
            151,
            "no state but a snapshot file: above its serial"
        );
        // Recorded at 105 (five changes while running) with this content, at a clean stop.
        let recorded = first.at_serial(105);
        assert!(state.record(&recorded, content_digest(&recorded), false));
        assert!(
            !state.record(&recorded, content_digest(&recorded), false),
            "unchanged"
        );
        assert!(!state.reserved());
        assert_eq!(
            state.starting_serial(&first, &digest, Some(150)),
            105,
            "same content"
        );
        let other = zone(100, "10.0.0.2");
        assert_eq!(
            state.starting_serial(&other, &content_digest(&other), None),
            106,
            "other content"
        );
        let bumped = zone(2026112201, "10.0.0.2");
        assert_eq!(
            state.starting_serial(&bumped, &content_digest(&bumped), None),
            2026112201,
            "file greater"
        );
        // While running, serials are reserved ahead; the reservation moves only when half used.
        assert!(state.record(&recorded, content_digest(&recorded), true));
        assert!(state.reserved());
        assert_eq!(state.zones["example.test."].reserved, Some(105 + RESERVE));
        let later = first.at_serial(105 + RESERVE / 2 - 1);
        state.record(&later, content_digest(&later), true);
        assert_eq!(state.zones["example.test."].reserved, Some(105 + RESERVE));
        let later = first.at_serial(105 + RESERVE / 2);
        state.record(&later, content_digest(&later), true);
        assert_eq!(
            state.zones["example.test."].reserved,
            Some(105 + RESERVE / 2 + RESERVE)
        );
        // An unclean stop: start above the reservation, whatever the content.
        assert_eq!(
            state.starting_serial(&first, &digest, None),
            105 + RESERVE / 2 + RESERVE + 1
        );
        // The serial does not change the digest; the content does.
        assert_eq!(content_digest(&first), content_digest(&recorded));
        assert_ne!(content_digest(&first), content_digest(&other));
        // The file format round-trips.
        let folder = tempfile::tempdir().unwrap();
        let path = folder.path().join("state");
        state.save(&path).unwrap();
        assert_eq!(State::load(&path).unwrap(), state);
        std::fs::write(&path, "zones = 3").unwrap();
        assert!(matches!(
            State::load(&path),
            Err(StateError::Damaged { .. })
        ));
        // A snapshot file's serial is read back from the rendered text.
        let snapshot = folder.path().join("zone");
        std::fs::write(
            &snapshot,
            crate::zone::render::render(&other.at_serial(4321)),
        )
        .unwrap();
        assert_eq!(snapshot_file_serial(&snapshot), Some(4321));
        assert_eq!(snapshot_file_serial(&folder.path().join("missing")), None);
    }

    #[test]
    fn serial_arithmetic_wraps() {
        assert!(serial_greater(2, 1));
        assert!(!serial_greater(1, 2));
        assert!(!serial_greater(5, 5));
        assert!(serial_greater(0, u32::MAX));
        assert!(serial_greater(10, u32::MAX - 10));
    }
}
