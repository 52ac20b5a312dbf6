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
//! - [`stats`]: query counters and sampled answer times, flushed to the metrics facade.

pub mod answer;
pub mod cache;
pub mod handler;
pub mod notify;
pub mod rrl;
pub mod server;
pub mod stats;
pub mod transfer;

pub use crate::log_gate::{LogGate, LOG_EVERY};
