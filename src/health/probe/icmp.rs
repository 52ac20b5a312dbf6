//! ICMP echo probes through surge-ping: one socket per address family, shared by every target.
//!
//! An unprivileged ICMP datagram socket is tried first (allowed when the process's group is in
//! `net.ipv4.ping_group_range`); surge-ping falls back to a raw socket (CAP_NET_RAW). With a
//! datagram socket the kernel owns the echo identifier, so replies are matched by address and
//! sequence number; every probe takes a fresh sequence number from one counter per family.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use surge_ping::{Client, Config, PingIdentifier, PingSequence, SurgeError, ICMP};

use super::{Outcome, ProbeError};

/// The echo payload: names the sender for anyone capturing traffic.
const PAYLOAD: &[u8] = b"healthdns health check";

#[derive(Clone)]
struct Family {
    client: Client,
    sequence: Arc<AtomicU16>,
}

/// The ICMP sockets, opened only for the families some target needs.
pub struct IcmpClients {
    v4: Option<Family>,
    v6: Option<Family>,
}

/// Opens one ICMP socket of `kind`, bound to `source` if given.
fn open_family(
    kind: ICMP,
    family: &'static str,
    source: Option<IpAddr>,
) -> Result<Family, ProbeError> {
    let mut config = Config::builder().kind(kind);
    if let Some(source) = source {
        config = config.bind(std::net::SocketAddr::new(source, 0));
    }
    Client::new(&config.build())
        .map(|client| {
            enlarge_receive_buffer(client.get_socket().get_native_sock());
            Family {
                client,
                sequence: Arc::new(AtomicU16::new(fastrand::u16(..))),
            }
        })
        .map_err(|error| ProbeError::Icmp { family, error })
}

impl IcmpClients {
    pub fn open(v4: bool, v6: bool) -> Result<Self, ProbeError> {
        let open = |kind: ICMP, family: &'static str| open_family(kind, family, None);
        Ok(Self {
            v4: v4.then(|| open(ICMP::V4, "IPv4")).transpose()?,
            v6: v6.then(|| open(ICMP::V6, "IPv6")).transpose()?,
        })
    }

    /// The checker of one address sent from `source`, on a socket of its own bound to it.
    pub fn checker_from(
        address: IpAddr,
        timeout: Duration,
        source: IpAddr,
    ) -> Result<IcmpChecker, ProbeError> {
        let family = if address.is_ipv4() {
            open_family(ICMP::V4, "IPv4", Some(source))?
        } else {
            open_family(ICMP::V6, "IPv6", Some(source))?
        };
        Ok(IcmpChecker {
            family,
            address,
            identifier: PingIdentifier(fastrand::u16(..)),
            timeout,
        })
    }

    /// The checker of one address; the family's socket must have been opened.
    pub fn checker(&self, address: IpAddr, timeout: Duration) -> IcmpChecker {
        let family = if address.is_ipv4() {
            &self.v4
        } else {
            &self.v6
        };
        IcmpChecker {
            family: family
                .clone()
                .expect("the socket of every probed family is opened"),
            address,
            identifier: PingIdentifier(fastrand::u16(..)),
            timeout,
        }
    }
}

/// The receive buffer asked for: the cold-start round sends every echo at once, and 10,000
/// replies arriving together overflow the default (about 200 KiB, some 300 packets).
const RECEIVE_BUFFER: usize = 32 << 20;

/// Raises the socket's receive buffer (see `socket_buffer`).
fn enlarge_receive_buffer(fd: std::os::fd::RawFd) {
    let capped = crate::socket_buffer::enlarge(fd, RECEIVE_BUFFER)
        .is_none_or(|kept| crate::socket_buffer::capped(kept, RECEIVE_BUFFER));
    if capped {
        tracing::warn!(
            "cannot enlarge the ICMP receive buffer to {RECEIVE_BUFFER} bytes (net.core.rmem_max caps it without CAP_NET_ADMIN); a large first probe round may lose replies"
        );
    }
}

/// Pings one address.
pub struct IcmpChecker {
    family: Family,
    address: IpAddr,
    identifier: PingIdentifier,
    timeout: Duration,
}

impl IcmpChecker {
    /// Sends one probe.
    pub async fn check(&self) -> Outcome {
        let start = Instant::now();
        let mut pinger = self
            .family
            .client
            .pinger(self.address, self.identifier)
            .await;
        pinger.timeout(self.timeout);
        let sequence = self.family.sequence.fetch_add(1, Ordering::Relaxed);
        let result = pinger.ping(PingSequence(sequence), PAYLOAD).await;
        let latency = start.elapsed();
        match result {
            Ok((_, round_trip)) => Outcome::pass(round_trip),
            Err(SurgeError::Timeout { .. }) => Outcome::fail(
                latency,
                format!("icmp: no echo reply within {:?}", self.timeout),
            ),
            Err(error) => Outcome::fail(latency, format!("icmp: {error}")),
        }
    }
}
