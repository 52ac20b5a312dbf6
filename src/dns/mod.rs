//! DNS on the wire: sockets, message rules, answers, zone transfers and NOTIFY.
//!
//! Why this exists: it is the last step of the data flow, reading the current snapshot and
//! never writing it. It may depend on `config` and `zone`; nothing but `service` depends on it.
//! - [`answer`]: pure authoritative answering rules over a snapshot.
//! - [`handler`]: request parsing rules, EDNS, truncation and encoding.
//! - [`cache`]: the UDP fast path, a per-thread cache of the handler's response bytes.
//! - [`server`]: sockets (bound by the caller) and the serving loops.
//! - [`transfer`]: AXFR/IXFR responses streamed from one zone version.
//! - [`notify`]: NOTIFY to secondaries when a zone has a new serial.
//! - [`tsig`]: TSIG signatures on transfers, NOTIFY and signed queries.
//! - [`rrl`]: response rate limiting on UDP.
//! - [`stats`]: query counters and sampled answer times, flushed to the metrics facade.

pub mod answer;
pub mod cache;
pub mod handler;
pub mod notify;
pub mod rrl;
pub mod server;
pub mod stats;
pub mod transfer;
pub mod tsig;

pub use crate::log_gate::{LogGate, LOG_EVERY};

/// Walks a name of plain labels (no compression pointer, no other label type) that starts at
/// `start` in `bytes`, calling `label` with each label's offset; returns the offset of the
/// name's terminating zero, or None for anything else. The one reading of an echoed question
/// for the handler, the rate limiter's slip and the TCP REFUSED answer.
pub fn plain_name_end(bytes: &[u8], start: usize, mut label: impl FnMut(usize)) -> Option<usize> {
    let mut at = start;
    loop {
        match *bytes.get(at)? {
            0 => return Some(at),
            length if length & 0xC0 == 0 => {
                label(at);
                at += 1 + usize::from(length);
            }
            _ => return None,
        }
    }
}
