//! TSIG (RFC 8945): shared-secret signatures on zone transfers, NOTIFY and signed queries.
//!
//! Why this exists: without it a zone transfer is protected only by the client's source
//! address. NSD, Knot and BIND let a transfer ACL require a key and sign NOTIFY; so does
//! healthdns: `allow_transfer = ["192.0.2.0/24 key NAME"]`, `also_notify = ["192.0.2.1 key
//! NAME"]`, with the keys in `[server] key_files`.
//!
//! Documented rules:
//! - Keys are read by `config::keys` from files in BIND's format.
//! - Keys are known by name; a key that no zone names in `allow_transfer` or `also_notify`
//!   is not used.
//! - A request carrying a TSIG is checked, whatever it asks (RFC 8945 §5.2): a key we do not
//!   know (name and algorithm) gets NOTAUTH with TSIG error BADKEY; a MAC that does not
//!   verify, or is truncated, NOTAUTH with BADSIG (both unsigned); a signing time further
//!   from ours than the request's fudge, NOTAUTH with BADTIME, signed, with our time.
//!   Each is counted in `healthdns_tsig_total{result}` and logged at most once per 10 s.
//! - The response to a verified request is signed with its key: every message of a zone
//!   transfer, the first over the request's MAC and all TSIG variables, each next one over
//!   the previous MAC and the timers (§5.3.1). Our fudge is `FUDGE` seconds.
//! - NOTIFY to a target with a key is signed, and its response must verify; one that does
//!   not is logged as not acknowledged.
//! - TSIG times are wall-clock seconds (the protocol's); nothing else here reads that clock.

use std::sync::Arc;

use hickory_proto::rr::rdata::tsig::{signed_bitmessage_to_buf, TsigAlgorithm, TsigError, TSIG};
use hickory_proto::rr::{DNSClass, Name, RecordType};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder, NameEncoding};

pub use crate::config::keys::TsigKey;

/// The fudge (allowed clock difference, seconds) in our signatures; BIND's and Knot's.
pub const FUDGE: u16 = 300;

/// The current time in TSIG's terms: seconds since 1970 (wall clock).
pub use crate::wall_clock::unix_seconds as now;

/// A request whose TSIG verified: how its responses are signed.
#[derive(Debug, Clone)]
pub struct Signing {
    key: Arc<TsigKey>,
    /// The MAC the next message is chained to: the request's, then each sent message's.
    previous_mac: Vec<u8>,
    /// The request's original ID.
    original_id: u16,
    /// Messages signed so far.
    signed: usize,
}

/// A request whose TSIG did not verify: the unsigned (or BADTIME-signed) TSIG its NOTAUTH
/// response carries.
#[derive(Debug)]
pub struct Failure {
    pub error: TsigError,
    key_name: Name,
    algorithm: TsigAlgorithm,
    original_id: u16,
    /// BADTIME only: the response is signed.
    signing: Option<Signing>,
}

/// What a request's TSIG says.
#[derive(Debug)]
pub enum Checked {
    Verified(Signing),
    Failed(Failure),
}

impl Checked {
    /// The label `healthdns_tsig_total{result}` counts this under.
    pub fn label(&self) -> &'static str {
        match self {
            Checked::Verified(_) => "verified",
            Checked::Failed(Failure {
                error: TsigError::BadKey,
                ..
            }) => "badkey",
            Checked::Failed(Failure {
                error: TsigError::BadTime,
                ..
            }) => "badtime",
            Checked::Failed(_) => "badsig",
        }
    }
}

/// Checks the TSIG that ends `packet` (a request; hickory has parsed it and found one) with
/// the key `find` returns for its name, at time `now`. `None`: the packet does not parse as
/// a signed message (answered FORMERR by the caller).
pub fn check_request(
    packet: &[u8],
    find: impl Fn(&Name) -> Option<Arc<TsigKey>>,
    now: u64,
) -> Option<Checked> {
    let (signed_data, record) = signed_bitmessage_to_buf(packet, None, true).ok()?;
    let tsig = &record.data;
    let failure = |error, signing| {
        Checked::Failed(Failure {
            error,
            key_name: record.name.clone(),
            algorithm: tsig.algorithm.clone(),
            original_id: tsig.oid,
            signing,
        })
    };
    let Some(key) = find(&record.name).filter(|key| key.algorithm == tsig.algorithm) else {
        return Some(failure(TsigError::BadKey, None));
    };
    if tsig.mac.len() != key.mac_length()
        || key
            .algorithm
            .verify_mac(&key.secret, &signed_data, &tsig.mac)
            .is_err()
    {
        return Some(failure(TsigError::BadSig, None));
    }
    let signing = Signing {
        key,
        previous_mac: tsig.mac.clone(),
        original_id: tsig.oid,
        signed: 0,
    };
    if now.abs_diff(tsig.time) > u64::from(tsig.fudge) {
        return Some(failure(TsigError::BadTime, Some(signing)));
    }
    Some(Checked::Verified(signing))
}

impl Signing {
    /// Signing for a request we send with `key` (NOTIFY), whose ID is `id`.
    pub fn request(key: Arc<TsigKey>, id: u16) -> Self {
        Self {
            key,
            previous_mac: Vec::new(),
            original_id: id,
            signed: 0,
        }
    }

    /// The key responses are signed with.
    pub fn key(&self) -> &Arc<TsigKey> {
        &self.key
    }

    /// Signs the message in `out` (a whole message, without a TSIG) and appends the TSIG:
    /// the first message over the previous MAC (none for a request) and all variables, each
    /// later one over the previous MAC and the timers.
    pub fn sign(&mut self, out: &mut Vec<u8>, now: u64) {
        self.sign_with(out, now, None, Vec::new());
    }

    fn sign_with(&mut self, out: &mut Vec<u8>, now: u64, error: Option<TsigError>, other: Vec<u8>) {
        let tsig = TSIG::new(
            self.key.algorithm.clone(),
            now,
            FUDGE,
            Vec::new(),
            self.original_id,
            error,
            other,
        );
        let mut data = Vec::with_capacity(out.len() + 128);
        if !self.previous_mac.is_empty() {
            data.extend_from_slice(&(self.previous_mac.len() as u16).to_be_bytes());
            data.extend_from_slice(&self.previous_mac);
        }
        let id_at = data.len();
        data.extend_from_slice(out);
        // The MAC covers the original ID (the same unless a forwarder changed it).
        data[id_at..id_at + 2].copy_from_slice(&self.original_id.to_be_bytes());
        if self.signed == 0 {
            // A fresh encoder: one over `data` would write from its start.
            let mut variables = Vec::with_capacity(64);
            tsig.emit_tsig_for_mac(&mut BinEncoder::new(&mut variables), &self.key.name)
                .expect("TSIG variables encode");
            data.extend_from_slice(&variables);
        } else {
            data.extend_from_slice(&((now >> 32) as u16).to_be_bytes());
            data.extend_from_slice(&(now as u32).to_be_bytes());
            data.extend_from_slice(&FUDGE.to_be_bytes());
        }
        let mac = self.key.mac(&data);
        append_record(out, &self.key.name, &tsig.set_mac(mac.clone()));
        self.previous_mac = mac;
        self.signed += 1;
    }

    /// Checks the TSIG of `response`, the answer to the request this signed; `None` when it
    /// verifies, else why not.
    pub fn verify_response(&self, response: &[u8], now: u64) -> Option<String> {
        let Ok((signed_data, record)) =
            signed_bitmessage_to_buf(response, Some(&self.previous_mac), true)
        else {
            return Some("the response is not signed".into());
        };
        let tsig = &record.data;
        if let Some(error) = tsig.error {
            return Some(format!("the response has TSIG error {error:?}"));
        }
        if record.name != self.key.name || tsig.algorithm != self.key.algorithm {
            return Some(format!("the response is signed with key {}", record.name));
        }
        if tsig.mac.len() != self.key.mac_length()
            || self
                .key
                .algorithm
                .verify_mac(&self.key.secret, &signed_data, &tsig.mac)
                .is_err()
        {
            return Some("the response's signature does not verify".into());
        }
        if now.abs_diff(tsig.time) > u64::from(tsig.fudge) {
            return Some(format!(
                "the response was signed at {}, {now} here",
                tsig.time
            ));
        }
        None
    }
}

impl Failure {
    /// Appends this failure's TSIG to the NOTAUTH response in `out`.
    pub fn append(self, out: &mut Vec<u8>, now: u64) {
        match self.signing {
            Some(mut signing) => {
                let other = now.to_be_bytes()[2..].to_vec();
                signing.sign_with(out, now, Some(self.error), other);
            }
            None => append_record(
                out,
                &self.key_name,
                &TSIG::new(
                    self.algorithm,
                    now,
                    FUDGE,
                    Vec::new(),
                    self.original_id,
                    Some(self.error),
                    Vec::new(),
                ),
            ),
        }
    }

    /// The key name the request named.
    pub fn key_name(&self) -> &Name {
        &self.key_name
    }

    /// The bytes its TSIG takes in the response.
    pub fn record_length(&self) -> usize {
        crate::config::keys::record_length(&self.key_name, &self.algorithm)
    }
}

/// Appends a TSIG record (uncompressed owner, class ANY, TTL 0) to the message in `out` and
/// counts it in ARCOUNT.
fn append_record(out: &mut Vec<u8>, key_name: &Name, tsig: &TSIG) {
    let mut rdata = Vec::with_capacity(128);
    tsig.emit(&mut BinEncoder::new(&mut rdata))
        .expect("TSIG RDATA encodes");
    let mut owner = Vec::with_capacity(64);
    {
        let mut encoder = BinEncoder::new(&mut owner);
        let mut encoder = encoder.with_name_encoding(NameEncoding::UncompressedLowercase);
        key_name.emit(&mut encoder).expect("a key name encodes");
    }
    out.extend_from_slice(&owner);
    out.extend_from_slice(&u16::from(RecordType::TSIG).to_be_bytes());
    out.extend_from_slice(&u16::from(DNSClass::ANY).to_be_bytes());
    out.extend_from_slice(&0u32.to_be_bytes());
    out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
    out.extend_from_slice(&rdata);
    let additionals = u16::from_be_bytes([out[10], out[11]]).wrapping_add(1);
    out[10..12].copy_from_slice(&additionals.to_be_bytes());
}

#[cfg(test)]
mod tests {
    //! Checked against hickory's own client-side TSIG (an independent implementation of the
    //! same RFC); the interoperation with BIND's `named` and `dig` is in tests/secondary.rs.
    use super::*;
    use hickory_proto::op::{Message, MessageType, OpCode, Query};
    use hickory_proto::rr::{TSigVerifier, TSigner};

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn key() -> Arc<TsigKey> {
        Arc::new(TsigKey::new("transfer", "hmac-sha256", SECRET.to_vec()).unwrap())
    }

    fn client(secret: &[u8], name: &str) -> TSigner {
        TSigner::new(
            secret.to_vec(),
            TsigAlgorithm::HmacSha256,
            Name::from_ascii(name).unwrap(),
            300,
        )
        .unwrap()
    }

    /// An AXFR request signed by `signer` at `time`, and the client's verifier of responses.
    fn request(signer: &TSigner, time: u64) -> (Vec<u8>, TSigVerifier) {
        let mut message = Message::new(4321, MessageType::Query, OpCode::Query);
        message.add_query(Query::query(
            Name::from_ascii("example.test.").unwrap(),
            RecordType::AXFR,
        ));
        let verifier = message.finalize(signer, time).unwrap().unwrap();
        (message.to_vec().unwrap(), verifier)
    }

    fn find(name: &Name) -> Option<Arc<TsigKey>> {
        let key = key();
        (key.name() == name).then_some(key)
    }

    /// A response to `request`: its header with QR set, and its question.
    fn response_to(request: &[u8], answers: u16) -> Vec<u8> {
        let parsed = Message::from_vec(request).unwrap();
        let mut response = Message::new(parsed.metadata.id, MessageType::Response, OpCode::Query);
        response.add_query(parsed.queries[0].clone());
        let mut bytes = response.to_vec().unwrap();
        bytes[6..8].copy_from_slice(&answers.to_be_bytes());
        bytes
    }

    #[test]
    fn a_signed_request_verifies_and_every_response_message_is_chained() {
        let now = now();
        let (bytes, mut verifier) = request(&client(SECRET, "transfer."), now);
        let Some(Checked::Verified(mut signing)) = check_request(&bytes, find, now) else {
            panic!("verifies");
        };
        // Three messages of one transfer: the client checks each against the one before.
        for _ in 0..3 {
            let mut message = response_to(&bytes, 0);
            signing.sign(&mut message, now);
            verifier
                .verify(&message)
                .expect("the client verifies the chain");
        }
        // Out of order (a message left out) breaks the chain.
        let mut skipped = response_to(&bytes, 0);
        signing.sign(&mut skipped, now);
        let mut next = response_to(&bytes, 0);
        signing.sign(&mut next, now);
        assert!(verifier.verify(&next).is_err());
    }

    #[test]
    fn wrong_secret_unknown_key_and_old_time_fail_as_the_rfc_says() {
        let now = now();
        let (bytes, _) = request(&client(b"not the secret at all, no", "transfer."), now);
        let Some(Checked::Failed(failure)) = check_request(&bytes, find, now) else {
            panic!("a wrong secret fails");
        };
        assert_eq!(failure.error, TsigError::BadSig);

        let (bytes, _) = request(&client(SECRET, "other."), now);
        let checked = check_request(&bytes, find, now).unwrap();
        assert_eq!(checked.label(), "badkey");
        let Checked::Failed(failure) = checked else {
            unreachable!()
        };
        // The NOTAUTH response carries an unsigned TSIG with BADKEY.
        let mut out = response_to(&bytes, 0);
        failure.append(&mut out, now);
        let parsed = Message::from_vec(&out).unwrap();
        let tsig = parsed.signature().expect("a TSIG");
        assert_eq!(tsig.data.error, Some(TsigError::BadKey));
        assert!(tsig.data.mac.is_empty());

        let (bytes, mut verifier) = request(&client(SECRET, "transfer."), now - 301);
        let checked = check_request(&bytes, find, now).unwrap();
        assert_eq!(checked.label(), "badtime");
        let Checked::Failed(failure) = checked else {
            unreachable!()
        };
        // BADTIME is signed, with our time in Other Data.
        let mut out = response_to(&bytes, 0);
        failure.append(&mut out, now - 301);
        let parsed = Message::from_vec(&out).unwrap();
        let tsig = parsed.signature().unwrap();
        assert_eq!(tsig.data.error, Some(TsigError::BadTime));
        assert_eq!(tsig.data.other, (now - 301).to_be_bytes()[2..]);
        assert!(verifier.verify(&out).is_ok(), "signed with the key");

        // A tampered request fails.
        let (mut bytes, _) = request(&client(SECRET, "transfer."), now);
        bytes[2] ^= 0x01; // RD
        assert_eq!(check_request(&bytes, find, now).unwrap().label(), "badsig");
    }

    #[test]
    fn a_signed_notify_and_its_signed_response() {
        let now = now();
        // We sign a request; the other side (hickory) verifies it and signs a response.
        let mut notify = Message::new(77, MessageType::Query, OpCode::Notify);
        notify.add_query(Query::query(
            Name::from_ascii("example.test.").unwrap(),
            RecordType::SOA,
        ));
        let mut bytes = notify.to_vec().unwrap();
        let mut signing = Signing::request(key(), 77);
        signing.sign(&mut bytes, now);
        let peer = client(SECRET, "transfer.");
        let (request_mac, _, _) = peer.verify_message_byte(&bytes, None, true).unwrap();
        let mut answer = Message::new(77, MessageType::Response, OpCode::Notify);
        answer.add_query(notify.queries[0].clone());
        let mut response = answer.to_vec().unwrap();
        let mut responder = Signing {
            key: key(),
            previous_mac: request_mac,
            original_id: 77,
            signed: 0,
        };
        responder.sign(&mut response, now);
        assert_eq!(signing.verify_response(&response, now), None);
        let unsigned = answer.to_vec().unwrap();
        assert!(signing.verify_response(&unsigned, now).is_some());
        response[3] ^= 0x01;
        assert!(signing.verify_response(&response, now).is_some());
    }
}
