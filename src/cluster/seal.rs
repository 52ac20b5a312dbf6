//! Sealed gossip datagrams: XChaCha20-Poly1305 under the cluster's shared key.
//!
//! Why this exists: peer votes decide what every instance answers, so a vote must come from
//! an instance that holds the key, unaltered and fresh. goavail sent its liveness flag in
//! clear JSON with no MAC; here nothing is read from a datagram until it has been opened.
//! This module is pure: the caller passes the time, so every rule is tested without a clock.
//!
//! Format: `version (1) | nonce (24) | ciphertext`, where the ciphertext (with its 16-byte
//! tag) holds `timestamp in ms since the Unix epoch (8, big-endian) | payload`. The
//! associated data is `healthdns-gossip/<version>/<cluster name>`, so a datagram of another
//! cluster or protocol version does not open. 49 bytes of overhead in all.
//!
//! Documented rules:
//! - A datagram that does not open (wrong key, other cluster, altered), is malformed, carries
//!   a timestamp more than the window away from now (either way), or repeats a nonce seen
//!   within the window, is rejected with its reason; the caller drops and counts it.
//! - Nonces are random (24 bytes: collisions are not a concern); the replay cache keeps each
//!   nonce for the window, and at most `MAX_REMEMBERED` of them (the oldest go first).

use std::collections::{HashSet, VecDeque};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

/// The protocol version, first byte of every datagram and part of the associated data.
pub const VERSION: u8 = 1;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
const TIMESTAMP_LEN: usize = 8;
/// What sealing adds to a payload.
pub const OVERHEAD: usize = 1 + NONCE_LEN + TAG_LEN + TIMESTAMP_LEN;
/// The most nonces the replay cache remembers.
pub const MAX_REMEMBERED: usize = 1 << 17;

/// Why a datagram was dropped (the label of `healthdns_gossip_rejected_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    #[error("malformed: too short or an unknown version")]
    Malformed,
    #[error("does not open: another key or cluster, or altered")]
    Unopenable,
    #[error("timestamp outside the window")]
    Stale,
    #[error("replayed")]
    Replayed,
    #[error("the payload is not a gossip message")]
    Garbage,
}

impl Rejected {
    pub fn label(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::Unopenable => "unopenable",
            Self::Stale => "stale",
            Self::Replayed => "replayed",
            Self::Garbage => "garbage",
        }
    }
}

/// Seals and opens datagrams of one cluster.
pub struct Sealer {
    cipher: XChaCha20Poly1305,
    associated: Vec<u8>,
}

impl Sealer {
    pub fn new(key: &[u8; 32], cluster: &str) -> Self {
        Self {
            cipher: XChaCha20Poly1305::new(key.into()),
            associated: format!("healthdns-gossip/{VERSION}/{cluster}").into_bytes(),
        }
    }

    /// Seals `payload` at `now_ms` under the random `nonce`.
    pub fn seal(&self, payload: &[u8], now_ms: u64, nonce: [u8; NONCE_LEN]) -> Vec<u8> {
        let mut plain = Vec::with_capacity(TIMESTAMP_LEN + payload.len());
        plain.extend_from_slice(&now_ms.to_be_bytes());
        plain.extend_from_slice(payload);
        let sealed = self
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &plain,
                    aad: &self.associated,
                },
            )
            .expect("XChaCha20-Poly1305 seals any payload that fits in memory");
        let mut datagram = Vec::with_capacity(1 + NONCE_LEN + sealed.len());
        datagram.push(VERSION);
        datagram.extend_from_slice(&nonce);
        datagram.extend_from_slice(&sealed);
        datagram
    }

    /// Opens `datagram` received at `now_ms`: its payload, or why it is rejected.
    pub fn open(
        &self,
        datagram: &[u8],
        now_ms: u64,
        replays: &mut ReplayGuard,
    ) -> Result<Vec<u8>, Rejected> {
        if datagram.len() < OVERHEAD || datagram[0] != VERSION {
            return Err(Rejected::Malformed);
        }
        let nonce: [u8; NONCE_LEN] = datagram[1..1 + NONCE_LEN]
            .try_into()
            .expect("length checked");
        let plain = self
            .cipher
            .decrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &datagram[1 + NONCE_LEN..],
                    aad: &self.associated,
                },
            )
            .map_err(|_| Rejected::Unopenable)?;
        // `seal` always writes the timestamp; a peer holding the key could still send less.
        let Some(stamp) = plain.first_chunk::<TIMESTAMP_LEN>() else {
            return Err(Rejected::Malformed);
        };
        let timestamp = u64::from_be_bytes(*stamp);
        replays.admit(nonce, timestamp, now_ms)?;
        Ok(plain[TIMESTAMP_LEN..].to_vec())
    }
}

/// Remembers recently seen nonces, so that a datagram is accepted at most once.
pub struct ReplayGuard {
    window_ms: u64,
    seen: HashSet<[u8; NONCE_LEN]>,
    /// (nonce, timestamp) in arrival order, for expiry.
    order: VecDeque<([u8; NONCE_LEN], u64)>,
    /// The latest `now` seen.
    latest: u64,
}

impl ReplayGuard {
    /// Accepts timestamps within `window_ms` of now, either way.
    pub fn new(window_ms: u64) -> Self {
        Self {
            window_ms,
            seen: HashSet::new(),
            order: VecDeque::new(),
            latest: 0,
        }
    }

    fn admit(
        &mut self,
        nonce: [u8; NONCE_LEN],
        timestamp: u64,
        now_ms: u64,
    ) -> Result<(), Rejected> {
        // Judged against the latest time seen too: if the clock steps back, what was forgotten
        // as stale stays stale.
        self.latest = self.latest.max(now_ms);
        if timestamp.abs_diff(now_ms) > self.window_ms
            || timestamp.saturating_add(self.window_ms) < self.latest
        {
            return Err(Rejected::Stale);
        }
        // Forget what has left the window: a replay of it would be stale anyway.
        while let Some((old, at)) = self.order.front().copied() {
            if at.saturating_add(self.window_ms) >= now_ms && self.order.len() < MAX_REMEMBERED {
                break;
            }
            self.order.pop_front();
            self.seen.remove(&old);
        }
        if !self.seen.insert(nonce) {
            return Err(Rejected::Replayed);
        }
        self.order.push_back((nonce, timestamp));
        Ok(())
    }

    /// How many nonces are remembered now.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 32] = [7; 32];
    const NOW: u64 = 1_800_000_000_000;

    fn nonce(byte: u8) -> [u8; NONCE_LEN] {
        [byte; NONCE_LEN]
    }

    #[test]
    fn a_sealed_datagram_opens_once() {
        let sealer = Sealer::new(&KEY, "prod");
        let mut replays = ReplayGuard::new(10_000);
        let datagram = sealer.seal(b"votes", NOW, nonce(1));
        assert_eq!(datagram.len(), 5 + OVERHEAD);
        assert_eq!(
            sealer.open(&datagram, NOW + 5, &mut replays).unwrap(),
            b"votes"
        );
        assert_eq!(
            sealer.open(&datagram, NOW + 6, &mut replays),
            Err(Rejected::Replayed)
        );
    }

    #[test]
    fn every_bad_datagram_is_rejected_with_its_reason() {
        let sealer = Sealer::new(&KEY, "prod");
        let mut replays = ReplayGuard::new(10_000);
        let good = sealer.seal(b"votes", NOW, nonce(2));
        // Another key, another cluster name.
        let other_key = Sealer::new(&[8; 32], "prod").seal(b"votes", NOW, nonce(3));
        let other_cluster = Sealer::new(&KEY, "staging").seal(b"votes", NOW, nonce(4));
        // One flipped bit anywhere after the version.
        let mut flipped = good.clone();
        flipped[30] ^= 1;
        let mut version = good.clone();
        version[0] = 2;
        for (datagram, reason) in [
            (&other_key, Rejected::Unopenable),
            (&other_cluster, Rejected::Unopenable),
            (&flipped, Rejected::Unopenable),
            (&version, Rejected::Malformed),
            (&b"junk".to_vec(), Rejected::Malformed),
            (&Vec::new(), Rejected::Malformed),
        ] {
            assert_eq!(sealer.open(datagram, NOW, &mut replays), Err(reason));
        }
        // Too old or too far ahead.
        let old = sealer.seal(b"votes", NOW - 10_001, nonce(5));
        let ahead = sealer.seal(b"votes", NOW + 10_001, nonce(6));
        assert_eq!(sealer.open(&old, NOW, &mut replays), Err(Rejected::Stale));
        assert_eq!(sealer.open(&ahead, NOW, &mut replays), Err(Rejected::Stale));
        // None of that consumed the good datagram's nonce.
        assert!(sealer.open(&good, NOW, &mut replays).is_ok());
    }

    #[test]
    fn the_replay_cache_forgets_only_what_has_left_the_window() {
        let sealer = Sealer::new(&KEY, "prod");
        let mut replays = ReplayGuard::new(1_000);
        let first = sealer.seal(b"a", NOW, nonce(9));
        assert!(sealer.open(&first, NOW, &mut replays).is_ok());
        for step in 1..100u8 {
            let at = NOW + u64::from(step) * 20;
            let datagram = sealer.seal(b"b", at, nonce(step + 10));
            assert!(sealer.open(&datagram, at, &mut replays).is_ok());
            if step == 40 {
                // Within the window the first is still remembered.
                assert_eq!(
                    sealer.open(&first, at, &mut replays),
                    Err(Rejected::Replayed)
                );
            }
        }
        // Past the window it is stale and forgotten: only the last second's nonces are kept.
        assert_eq!(
            sealer.open(&first, NOW + 3_000, &mut replays),
            Err(Rejected::Stale)
        );
        assert!(replays.len() <= 51, "{}", replays.len());
        // A clock that steps back does not bring forgotten nonces back.
        assert_eq!(
            sealer.open(&first, NOW + 500, &mut replays),
            Err(Rejected::Stale)
        );
    }
}
