//! Response rate limiting (RRL) for UDP, in the manner of BIND's `rate-limit` and Knot's
//! `rrl`: pure, with the clock passed in.
//!
//! Why this exists: an authoritative server answers anyone, so a spoofed source can turn it
//! into an amplifier (a 40-byte query for a 1,000-byte answer). Answers to one client prefix
//! of one response class are limited to a rate; those over it are dropped, and every
//! `slip`th dropped one is answered with an empty, truncated (TC=1) response instead, so a
//! real client behind a spoofed prefix retries over TCP, which cannot be spoofed.
//!
//! Documented rules:
//! - Off unless `[rate_limit] responses_per_second` is set: a rate that suits one operator's
//!   traffic drops another's resolvers behind one NAT (BIND and Knot also ship it off).
//! - A bucket is (client prefix: /24 for IPv4 and /56 for IPv6 by default, response class).
//!   The classes are answer, NXDOMAIN, NODATA, referral and error.
//! - Each bucket earns `responses_per_second` credits a second, holds at most one second's
//!   worth, and each response spends one. A response that finds no credit is dropped (or
//!   slipped). The balance can fall to `-responses_per_second × window`, so a flood keeps
//!   being limited for up to `window` after it stops, as in BIND.
//! - Only UDP is limited; TCP answers are never.
//! - Memory is bounded: each UDP thread keeps a fixed table of `SLOTS` buckets, and a new
//!   prefix takes over the slot of the one it collides with. Each thread limits what it sees,
//!   and the kernel spreads one source's packets over the threads by port, so one prefix
//!   gets at most `udp_sockets` times the rate.

use std::net::IpAddr;
use std::time::Duration;

/// Buckets per UDP thread (a power of two): 16 bytes each.
pub const SLOTS: usize = 1 << 14;

/// `[rate_limit]`, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub responses_per_second: u32,
    /// Answer every `slip`th dropped response with TC=1 (0: never, 1: always).
    pub slip: u32,
    pub window: Duration,
    pub ipv4_prefix: u8,
    pub ipv6_prefix: u8,
}

/// What a response is, for rate limiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Answer,
    NxDomain,
    NoData,
    Referral,
    Error,
}

impl Class {
    /// The class of an encoded response (header fields only).
    pub fn of(response: &[u8]) -> Self {
        let Some(header) = response.get(..12) else {
            return Self::Error;
        };
        let authoritative = header[2] & 0x04 != 0;
        let count = |at: usize| u16::from_be_bytes([header[at], header[at + 1]]);
        match header[3] & 0x0F {
            0 if count(6) > 0 => Self::Answer,
            0 if !authoritative && count(8) > 0 => Self::Referral,
            0 => Self::NoData,
            3 => Self::NxDomain,
            _ => Self::Error,
        }
    }

    fn code(self) -> u8 {
        self as u8
    }
}

/// What to do with a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Send,
    Drop,
    /// Send an empty response with TC=1 instead (`truncate`).
    Slip,
}

#[derive(Clone, Copy, Default)]
struct Bucket {
    /// Hash of (prefix, class); 0: empty.
    key: u64,
    /// Credit in thousandths of a response, so that fractions of a second earn credit.
    balance: i32,
    /// When the balance was last brought up to date, in ms (wraps after 49 days; the
    /// difference is what counts).
    updated_ms: u32,
}

/// One UDP thread's limiter.
pub struct RateLimiter {
    limit: RateLimit,
    buckets: Vec<Bucket>,
    /// Dropped responses counted towards the next slip.
    since_slip: u32,
    pub dropped: u64,
    pub slipped: u64,
}

impl RateLimiter {
    pub fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            buckets: vec![Bucket::default(); SLOTS],
            since_slip: 0,
            dropped: 0,
            slipped: 0,
        }
    }

    /// Whether to send a response of `class` to `client` at `now_ms`.
    pub fn decide(&mut self, client: IpAddr, class: Class, now_ms: u64) -> Decision {
        let rate = i64::from(self.limit.responses_per_second) * 1000;
        let most = rate;
        let least = -(rate * self.limit.window.as_secs().max(1) as i64);
        let key = self.key(client, class);
        let now = now_ms as u32;
        let bucket = &mut self.buckets[(key as usize) & (SLOTS - 1)];
        if bucket.key != key {
            // A new prefix (or one that lost its slot): it starts with a full second.
            *bucket = Bucket {
                key,
                balance: most.min(i64::from(i32::MAX)) as i32,
                updated_ms: now,
            };
        } else {
            let elapsed = i64::from(now.wrapping_sub(bucket.updated_ms));
            let earned = elapsed * i64::from(self.limit.responses_per_second);
            bucket.balance = (i64::from(bucket.balance) + earned).min(most) as i32;
            bucket.updated_ms = now;
        }
        let balance = i64::from(bucket.balance) - 1000;
        bucket.balance = balance.max(least) as i32;
        if balance >= 0 {
            return Decision::Send;
        }
        self.since_slip += 1;
        if self.limit.slip > 0 && self.since_slip >= self.limit.slip {
            self.since_slip = 0;
            self.slipped += 1;
            Decision::Slip
        } else {
            self.dropped += 1;
            Decision::Drop
        }
    }

    fn key(&self, client: IpAddr, class: Class) -> u64 {
        use std::hash::BuildHasher;
        let prefix = client_prefix(client, self.limit.ipv4_prefix, self.limit.ipv6_prefix);
        // Never 0, which marks an empty bucket.
        rustc_hash::FxBuildHasher.hash_one((prefix, class.code())) | 1
    }
}

/// The network of `address` with the first `ipv4` (IPv4) or `ipv6` (IPv6) bits kept: the
/// client a limit applies to, for the rate limiter and the TCP connection limits alike.
pub fn client_prefix(address: IpAddr, ipv4: u8, ipv6: u8) -> IpAddr {
    match address {
        IpAddr::V4(v4) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(ipv4.min(32)))
                .unwrap_or(0);
            std::net::Ipv4Addr::from(u32::from(v4) & mask).into()
        }
        IpAddr::V6(v6) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(ipv6.min(128)))
                .unwrap_or(0);
            std::net::Ipv6Addr::from(u128::from(v6) & mask).into()
        }
    }
}

/// Turns `response` into the empty TC=1 response a slip sends: header and question only.
/// False (send nothing) when its question cannot be found.
pub fn truncate(response: &mut Vec<u8>) -> bool {
    if response.len() < 12 || response[4..6] != [0, 1] {
        return false;
    }
    let Some(at) = crate::dns::plain_name_end(response, 12, |_| {}) else {
        return false;
    };
    let end = at + 1 + 4;
    if end > response.len() {
        return false;
    }
    response.truncate(end);
    response[2] |= 0x02;
    response[6..12].fill(0);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(rate: u32, slip: u32) -> RateLimiter {
        RateLimiter::new(RateLimit {
            responses_per_second: rate,
            slip,
            window: Duration::from_secs(15),
            ipv4_prefix: 24,
            ipv6_prefix: 56,
        })
    }

    fn count(
        limiter: &mut RateLimiter,
        client: &str,
        class: Class,
        at: u64,
        n: usize,
    ) -> [usize; 3] {
        let mut seen = [0; 3];
        for _ in 0..n {
            match limiter.decide(client.parse().unwrap(), class, at) {
                Decision::Send => seen[0] += 1,
                Decision::Drop => seen[1] += 1,
                Decision::Slip => seen[2] += 1,
            }
        }
        seen
    }

    #[test]
    fn a_burst_is_limited_to_the_rate_and_every_slipth_drop_slips() {
        let mut limiter = limiter(10, 2);
        assert_eq!(
            count(&mut limiter, "192.0.2.1", Class::Answer, 1000, 30),
            [10, 10, 10]
        );
        // The same /24 shares the bucket; another /24, another class and IPv6 do not.
        assert_eq!(
            count(&mut limiter, "192.0.2.200", Class::Answer, 1000, 2),
            [0, 1, 1]
        );
        assert_eq!(
            count(&mut limiter, "192.0.3.1", Class::Answer, 1000, 10),
            [10, 0, 0]
        );
        assert_eq!(
            count(&mut limiter, "192.0.2.1", Class::NxDomain, 1000, 10),
            [10, 0, 0]
        );
        assert_eq!(
            count(&mut limiter, "2001:db8::1", Class::Answer, 1000, 10),
            [10, 0, 0]
        );
        // Same /56, different /64: one bucket.
        assert_eq!(
            count(&mut limiter, "2001:db8:0:ff::1", Class::Answer, 1000, 1),
            [0, 1, 0]
        );
    }

    #[test]
    fn credit_comes_back_with_time_but_a_flood_leaves_a_debt() {
        let mut limiter = limiter(10, 0);
        assert_eq!(
            count(&mut limiter, "192.0.2.1", Class::Answer, 0, 10),
            [10, 0, 0]
        );
        // 100 ms earns one response.
        assert_eq!(
            count(&mut limiter, "192.0.2.1", Class::Answer, 100, 3),
            [1, 2, 0]
        );
        // A long flood: the debt is capped at rate × window (150 responses).
        assert_eq!(
            count(&mut limiter, "192.0.2.1", Class::Answer, 100, 1000),
            [0, 1000, 0]
        );
        // 10 s later the bucket is still in debt (-150 + 100), so nothing is sent...
        assert_eq!(
            count(&mut limiter, "192.0.2.1", Class::Answer, 10_100, 1),
            [0, 1, 0]
        );
        // ...and after the whole window it is full again, at most one second's worth.
        assert_eq!(
            count(&mut limiter, "192.0.2.1", Class::Answer, 60_000, 20),
            [10, 10, 0]
        );
    }

    #[test]
    fn slip_one_answers_every_drop_with_tc() {
        let mut limiter = limiter(1, 1);
        assert_eq!(
            count(&mut limiter, "192.0.2.1", Class::Error, 5, 4),
            [1, 0, 3]
        );
    }

    #[test]
    fn responses_are_classified_from_their_header() {
        let header = |flags: u8, rcode: u8, an: u8, ns: u8| {
            let mut bytes = vec![0, 1, 0x80 | flags, rcode, 0, 1, 0, an, 0, ns, 0, 0];
            bytes.extend_from_slice(b"\x03www\x00\x00\x01\x00\x01");
            bytes
        };
        assert_eq!(Class::of(&header(0x04, 0, 1, 0)), Class::Answer);
        assert_eq!(Class::of(&header(0x04, 3, 0, 1)), Class::NxDomain);
        assert_eq!(Class::of(&header(0x04, 0, 0, 1)), Class::NoData);
        assert_eq!(Class::of(&header(0x00, 0, 0, 2)), Class::Referral);
        assert_eq!(Class::of(&header(0x00, 5, 0, 0)), Class::Error);
        assert_eq!(Class::of(&[1, 2, 3]), Class::Error);
        let mut slipped = header(0x04, 0, 1, 0);
        slipped.extend_from_slice(&[0xC0, 0x0C, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1]);
        assert!(truncate(&mut slipped));
        assert_eq!(slipped, {
            let mut expected = header(0x06, 0, 0, 0);
            expected[7] = 0;
            expected
        });
        assert!(!truncate(&mut vec![0; 11]));
        assert!(!truncate(&mut header(0, 0, 0, 0)[..14].to_vec()));
    }
}
