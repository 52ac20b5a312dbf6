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
//! - The state is written (atomically) after each new serial is swapped in; a crash in the
//!   few milliseconds between could reissue one serial after restart.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::atomic::write_atomically;
use crate::zone::render::write_record;
use crate::zone::snapshot::{with_serial, Zone};

/// True when `left` is greater than `right` in serial number arithmetic (RFC 1982 §3.2).
pub fn serial_greater(left: u32, right: u32) -> bool {
    left != right && right.wrapping_sub(left) > (1 << 31)
}

/// A digest of a zone version's records with the serial left out: equal digests mean equal
/// content.
pub fn content_digest(zone: &Zone) -> String {
    digest_with_body(zone, &crate::zone::render::body(zone))
}

/// `content_digest` from the zone's already rendered `body` (`render::body`).
pub fn digest_with_body(zone: &Zone, body: &str) -> String {
    let mut soa = String::new();
    write_record(&mut soa, &with_serial(zone.soa(), 0));
    let mut hasher = Sha256::new();
    hasher.update(soa.as_bytes());
    hasher.update(body.as_bytes());
    hex::encode(hasher.finalize())
}

/// What the state file remembers of one zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneState {
    pub serial: u32,
    pub digest: String,
}

/// The state file's contents.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    /// By zone origin ("example.test.").
    #[serde(default)]
    pub zones: BTreeMap<String, ZoneState>,
}

/// The state file cannot be used; the message says which and why.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Reading failed (permissions?); fix it or point `state_file` elsewhere.
    #[error("{path}: cannot read the state file: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not ours or is damaged; move it away to start from the zone files' serials.
    #[error("{path}: the state file is damaged ({message}); move it away to start from the zone files' serials")]
    Damaged { path: PathBuf, message: String },
    /// Writing failed; the serials still go up while running.
    #[error("{path}: cannot write the state file: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
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
            Err(source) => {
                return Err(StateError::Read {
                    path: path.to_path_buf(),
                    source,
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
            "# healthdns state: each zone's last serial and content digest. Written by the server.\n",
        );
        text.push_str(&toml::to_string(self).expect("the state serializes"));
        write_atomically(path, text.as_bytes()).map_err(|source| StateError::Write {
            path: path.to_path_buf(),
            source,
        })
    }

    /// The serial to start `zone` at (see the module rules); `zone` is at its file's serial.
    pub fn starting_serial(&self, zone: &Zone, digest: &str) -> u32 {
        let file_serial = zone.serial();
        let Some(recorded) = self.zones.get(&zone.origin().to_string()) else {
            return file_serial;
        };
        if serial_greater(file_serial, recorded.serial) {
            file_serial
        } else if recorded.digest == digest {
            recorded.serial
        } else {
            crate::zone::snapshot::next_serial(recorded.serial)
        }
    }

    /// Records `zone`'s serial and digest; true when that changed the state.
    pub fn record(&mut self, zone: &Zone, digest: String) -> bool {
        let entry = ZoneState {
            serial: zone.serial(),
            digest,
        };
        self.zones.insert(zone.origin().to_string(), entry.clone()) != Some(entry)
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
            },
        );
        Snapshot::build(&[data], &answers)
            .zone(&name_key(&origin))
            .unwrap()
            .clone()
    }

    #[test]
    fn starting_serials_follow_the_documented_rules() {
        let mut state = State::default();
        let first = zone(100, "10.0.0.1");
        let digest = content_digest(&first);
        assert_eq!(
            state.starting_serial(&first, &digest),
            100,
            "no state: the file's"
        );
        // Recorded at 105 (five changes while running) with this content.
        let recorded = first.at_serial(105);
        assert!(state.record(&recorded, content_digest(&recorded)));
        assert!(
            !state.record(&recorded, content_digest(&recorded)),
            "unchanged"
        );
        assert_eq!(state.starting_serial(&first, &digest), 105, "same content");
        let other = zone(100, "10.0.0.2");
        assert_eq!(
            state.starting_serial(&other, &content_digest(&other)),
            106,
            "other content"
        );
        let bumped = zone(2026112201, "10.0.0.2");
        assert_eq!(
            state.starting_serial(&bumped, &content_digest(&bumped)),
            2026112201,
            "file greater"
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
