//! Rate-limited log lines for events a remote sender can trigger.
//!
//! Why this exists: refused transfers, undecodable queries and rejected gossip datagrams come
//! from the network, and a spoofed flood of them must not become a flood on stderr. It has no
//! place in the data flow and depends on nothing; `dns` and `cluster` use it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How often a log line that a remote sender can trigger may be written, per call site.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// Rate limit for log lines that a remote sender can trigger (a refused transfer, an answer
/// that cannot be encoded, a transfer): a spoofed flood must not become a stderr flood. Each
/// call site has one gate; it lets one line through per [`LOG_EVERY`] and says how many it
/// held back since. The events themselves are always counted in metrics.
pub struct LogGate {
    /// Milliseconds since the process's first gate check when the next line may be written.
    next: AtomicU64,
    suppressed: AtomicU64,
}

impl LogGate {
    pub const fn new() -> Self {
        Self {
            next: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Some(lines held back since the last one) if a line may be written now.
    pub fn allow(&self) -> Option<u64> {
        static START: OnceLock<Instant> = OnceLock::new();
        let now = START.get_or_init(Instant::now).elapsed().as_millis() as u64;
        let next = self.next.load(Ordering::Relaxed);
        if now >= next
            && self
                .next
                .compare_exchange(
                    next,
                    now + LOG_EVERY.as_millis() as u64,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::Relaxed));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

impl Default for LogGate {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gate_lets_one_line_through_and_counts_the_rest() {
        let gate = LogGate::new();
        assert_eq!(gate.allow(), Some(0));
        for _ in 0..1000 {
            assert_eq!(gate.allow(), None);
        }
        // The next window reports what was held back.
        gate.next.store(0, Ordering::Relaxed);
        assert_eq!(gate.allow(), Some(1000));
    }
}
