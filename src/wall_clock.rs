//! The wall clock, for what must be stamped with it: TSIG and gossip times, file names and
//! the times shown to operators.
//!
//! Why this exists: timers, schedules and pacing use the monotonic clock (`Instant`); the
//! few places that need the time of day read it here, one way, so a clock before 1970
//! (misconfigured) reads as 0 everywhere rather than panicking anywhere.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since 1970-01-01 UTC.
pub fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

/// Seconds since 1970-01-01 UTC.
pub fn unix_seconds() -> u64 {
    unix_millis() / 1000
}
