//! Query counters for `/metrics`, kept off the per-query path.
//!
//! Why this exists: operators need queries by rcode, qtype and transport, and answer latency,
//! but a `metrics` facade call per query (a label lookup) would cost more than answering. Each
//! UDP thread counts into a small local table and flushes it to the facade every
//! `FLUSH_EVERY` queries or when idle (a TCP connection when it ends); latency is sampled, one
//! query in `SAMPLE_EVERY`, and kept locally until the flush too. The per-query part neither
//! allocates nor locks.

use std::time::{Duration, Instant};

/// Queries counted locally between flushes.
pub const FLUSH_EVERY: u32 = 4096;
/// One query in this many has its answer time recorded.
pub const SAMPLE_EVERY: u32 = 64;

const RCODES: [&str; 7] = [
    "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "other",
];
const QTYPES: [(u16, &str); 11] = [
    (1, "A"),
    (28, "AAAA"),
    (2, "NS"),
    (6, "SOA"),
    (15, "MX"),
    (16, "TXT"),
    (5, "CNAME"),
    (33, "SRV"),
    (65, "HTTPS"),
    (252, "AXFR"),
    (251, "IXFR"),
];

/// One transport's counts since the last flush.
pub struct QueryStats {
    transport: &'static str,
    /// [rcode][qtype bucket]; the last qtype bucket is "other".
    counts: [[u32; QTYPES.len() + 1]; RCODES.len()],
    pending: u32,
    /// Packets dropped unanswered (no readable header, or a response) since the last flush.
    dropped: u32,
    sampled: u32,
    /// Sampled answer times since the last flush (at most FLUSH_EVERY / SAMPLE_EVERY + 1,
    /// allocated once): recording them in the facade takes a lock, so it waits for the flush.
    latencies: Vec<f64>,
}

impl QueryStats {
    pub fn new(transport: &'static str) -> Self {
        Self {
            transport,
            counts: [[0; QTYPES.len() + 1]; RCODES.len()],
            pending: 0,
            dropped: 0,
            sampled: 0,
            latencies: Vec::with_capacity((FLUSH_EVERY / SAMPLE_EVERY + 1) as usize),
        }
    }

    /// True when this query's answer time should be measured.
    #[inline]
    pub fn sample(&mut self) -> bool {
        self.sampled = self.sampled.wrapping_add(1);
        self.sampled.is_multiple_of(SAMPLE_EVERY)
    }

    /// Counts one answered query: `query` is the request, `response` the answer's wire form.
    #[inline]
    pub fn count(&mut self, query: &[u8], response: &[u8]) {
        let rcode = response
            .get(3)
            .map_or(6, |byte| usize::from(byte & 0x0f).min(6));
        let qtype = question_type(query);
        let bucket = QTYPES
            .iter()
            .position(|(code, _)| Some(*code) == qtype)
            .unwrap_or(QTYPES.len());
        self.counts[rcode][bucket] += 1;
        self.pending += 1;
    }

    /// Counts one packet dropped unanswered (`healthdns_malformed_total`); malformed
    /// requests that are answered FORMERR are counted by rcode like every other answer.
    #[inline]
    pub fn dropped(&mut self) {
        self.dropped += 1;
        self.pending += 1;
    }

    /// True when enough has been counted to flush now.
    #[inline]
    pub fn due(&self) -> bool {
        self.pending >= FLUSH_EVERY
    }

    /// Keeps a sampled answer time for the next flush.
    #[inline]
    pub fn record_latency(&mut self, took: Duration) {
        if self.latencies.len() < self.latencies.capacity() {
            self.latencies.push(took.as_secs_f64());
        }
    }

    /// Moves the local counts and answer times to the metrics facade.
    pub fn flush(&mut self) {
        if !self.latencies.is_empty() {
            let histogram =
                metrics::histogram!("healthdns_answer_seconds", "transport" => self.transport);
            for took in self.latencies.drain(..) {
                histogram.record(took);
            }
        }
        if self.pending == 0 {
            return;
        }
        if self.dropped > 0 {
            metrics::counter!("healthdns_malformed_total", "transport" => self.transport, "result" => "dropped")
                .increment(u64::from(self.dropped));
            self.dropped = 0;
        }
        for (rcode, row) in self.counts.iter_mut().enumerate() {
            for (bucket, count) in row.iter_mut().enumerate() {
                if *count == 0 {
                    continue;
                }
                let qtype = QTYPES.get(bucket).map_or("other", |(_, name)| name);
                metrics::counter!(
                    "healthdns_queries_total",
                    "transport" => self.transport,
                    "rcode" => RCODES[rcode],
                    "qtype" => qtype
                )
                .increment(u64::from(*count));
                *count = 0;
            }
        }
        self.pending = 0;
    }
}

/// Whatever is still counted goes out when the counter goes (a TCP connection closes).
impl Drop for QueryStats {
    fn drop(&mut self) {
        self.flush();
    }
}

/// The QTYPE of a request's first question, read without parsing the message.
fn question_type(query: &[u8]) -> Option<u16> {
    let mut offset = 12;
    loop {
        let length = usize::from(*query.get(offset)?);
        if length == 0 {
            break;
        }
        if length & 0xc0 != 0 {
            return None;
        }
        offset += 1 + length;
    }
    let high = *query.get(offset + 1)?;
    let low = *query.get(offset + 2)?;
    Some(u16::from_be_bytes([high, low]))
}

/// A monotonic start time for a sampled answer.
#[inline]
pub fn now() -> Instant {
    Instant::now()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn question_types_are_read_from_the_wire() {
        let mut query = vec![0u8; 12];
        query.extend_from_slice(b"\x03www\x07example\x04test\x00\x00\x1c\x00\x01");
        assert_eq!(question_type(&query), Some(28));
        assert_eq!(question_type(&query[..20]), None);
        let mut stats = QueryStats::new("udp");
        let mut response = vec![0u8; 12];
        response[3] = 3;
        stats.count(&query, &response);
        assert_eq!(stats.counts[3][1], 1, "NXDOMAIN for AAAA");
        stats.flush();
        assert_eq!(stats.counts[3][1], 0);
    }
}
