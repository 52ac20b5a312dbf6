//! chitchat's UDP transport, with every datagram sealed (see [`seal`](super::seal)).
//!
//! Why this exists: chitchat 0.11 lets the caller supply the transport, and its `Socket`
//! carries `ChitchatMessage`, which is `Serializable`; this wraps that serialization in a seal
//! and opens every datagram before chitchat sees a byte of it. (The traits return
//! `anyhow::Result`, as chitchat defines them.)
//!
//! Documented rules:
//! - A datagram that does not open, is stale, replayed, malformed or not a chitchat message is
//!   dropped, counted in `healthdns_gossip_rejected_total{reason}` and logged at most once per
//!   10 s; `recv` then waits for the next one. It never returns an error for what a sender
//!   did: an `Err` from `recv` ends chitchat's gossip loop.
//! - Size: chitchat packs a delta up to about 64 KB, the UDP limit, and the seal adds 49 bytes
//!   plus 11 of framing. A message that no longer fits in one datagram is sent as two halves,
//!   each sealed on its own, and reassembled; halves that do not meet within
//!   `FRAGMENT_TIMEOUT` are dropped (chitchat retries with the next round).
//! - Send errors (an unreachable peer) are logged at most once per 10 s and counted; they do
//!   not break the transport.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chitchat::transport::{Socket, Transport};
use chitchat::{ChitchatMessage, Deserializable, Serializable};

use super::seal::{Rejected, ReplayGuard, Sealer, OVERHEAD};
use crate::log_gate::LogGate;

/// The largest UDP payload over IPv4.
pub const MAX_DATAGRAM: usize = 65_507;
/// How long the first half of a split message waits for the second.
pub const FRAGMENT_TIMEOUT: Duration = Duration::from_secs(5);
/// How far a datagram's timestamp may be from now, either way.
pub const WINDOW: Duration = Duration::from_secs(30);
/// Bytes of sealed datagrams sent and received by every gossip socket of this process (also in
/// `healthdns_gossip_bytes_total{direction}`); the benchmark reads them.
pub static SENT_BYTES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
pub static RECEIVED_BYTES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The most split messages waiting for their second half.
const MAX_PENDING: usize = 64;

const WHOLE: u8 = 0;
const HALF: u8 = 1;
/// Framing of a half: kind, message id (8), index (1), count (1).
const HALF_HEADER: usize = 11;

/// Opens sealed UDP sockets for chitchat.
pub struct SealedTransport {
    sealer: Arc<Sealer>,
}

impl SealedTransport {
    pub fn new(key: &[u8; 32], cluster: &str) -> Self {
        Self {
            sealer: Arc::new(Sealer::new(key, cluster)),
        }
    }
}

#[async_trait]
impl Transport for SealedTransport {
    async fn open(&self, listen: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let socket = tokio::net::UdpSocket::bind(listen).await.map_err(|error| {
            anyhow::anyhow!("cannot listen for gossip on {listen}/UDP: {error}")
        })?;
        Ok(Box::new(SealedSocket {
            socket,
            sealer: self.sealer.clone(),
            replays: ReplayGuard::new(WINDOW.as_millis() as u64),
            pending: HashMap::new(),
            buffer: vec![0; MAX_DATAGRAM].into_boxed_slice(),
        }))
    }
}

/// The two halves of a split message, as they arrive.
type Halves = [Option<Vec<u8>>; 2];

struct SealedSocket {
    socket: tokio::net::UdpSocket,
    sealer: Arc<Sealer>,
    replays: ReplayGuard,
    /// Split messages waiting for their other half: id -> (first seen, halves by index).
    pending: HashMap<u64, (Instant, Halves)>,
    buffer: Box<[u8]>,
}

use crate::wall_clock::unix_millis as now_ms;

fn random_nonce() -> [u8; 24] {
    let mut nonce = [0; 24];
    getrandom::fill(&mut nonce).expect("the operating system's random source works");
    nonce
}

/// Counts (and logs, rate-limited) a dropped datagram.
fn reject(reason: Rejected, from: SocketAddr) {
    static GATE: LogGate = LogGate::new();
    metrics::counter!("healthdns_gossip_rejected_total", "reason" => reason.label()).increment(1);
    if let Some(suppressed) = GATE.allow() {
        tracing::warn!(%from, %reason, suppressed, "gossip datagram dropped (at most one line per 10 s; see healthdns_gossip_rejected_total)");
    }
}

/// The payloads to seal for `message`: one, or two halves when one would not fit.
fn frame(message: &[u8]) -> Vec<Vec<u8>> {
    if 1 + message.len() + OVERHEAD <= MAX_DATAGRAM {
        let mut whole = Vec::with_capacity(1 + message.len());
        whole.push(WHOLE);
        whole.extend_from_slice(message);
        return vec![whole];
    }
    let mut id = [0u8; 8];
    getrandom::fill(&mut id).expect("the operating system's random source works");
    let middle = message.len().div_ceil(2);
    [&message[..middle], &message[middle..]]
        .iter()
        .enumerate()
        .map(|(index, part)| {
            let mut half = Vec::with_capacity(HALF_HEADER + part.len());
            half.push(HALF);
            half.extend_from_slice(&id);
            half.push(index as u8);
            half.push(2);
            half.extend_from_slice(part);
            half
        })
        .collect()
}

impl SealedSocket {
    /// The message in one opened payload, once whole; Err if the payload is malformed.
    fn unframe(&mut self, payload: Vec<u8>) -> Result<Option<Vec<u8>>, Rejected> {
        match payload.first() {
            Some(&WHOLE) => Ok(Some(payload[1..].to_vec())),
            Some(&HALF) if payload.len() >= HALF_HEADER => {
                let id = u64::from_be_bytes(payload[1..9].try_into().expect("length checked"));
                let (index, count) = (payload[9] as usize, payload[10]);
                if count != 2 || index > 1 {
                    return Err(Rejected::Malformed);
                }
                let now = Instant::now();
                self.pending
                    .retain(|_, (first, _)| now.duration_since(*first) < FRAGMENT_TIMEOUT);
                if self.pending.len() >= MAX_PENDING && !self.pending.contains_key(&id) {
                    return Ok(None);
                }
                let entry = self.pending.entry(id).or_insert((now, [None, None]));
                entry.1[index] = Some(payload[HALF_HEADER..].to_vec());
                if entry.1.iter().all(Option::is_some) {
                    let (_, [first, second]) = self.pending.remove(&id).expect("present");
                    let mut message = first.expect("present");
                    message.extend_from_slice(&second.expect("present"));
                    return Ok(Some(message));
                }
                Ok(None)
            }
            _ => Err(Rejected::Malformed),
        }
    }
}

#[async_trait]
impl Socket for SealedSocket {
    async fn send(&mut self, to: SocketAddr, message: ChitchatMessage) -> anyhow::Result<()> {
        let bytes = message.serialize_to_vec();
        for payload in frame(&bytes) {
            let datagram = self.sealer.seal(&payload, now_ms(), random_nonce());
            SENT_BYTES.fetch_add(datagram.len() as u64, std::sync::atomic::Ordering::Relaxed);
            metrics::counter!("healthdns_gossip_bytes_total", "direction" => "sent")
                .increment(datagram.len() as u64);
            if let Err(error) = self.socket.send_to(&datagram, to).await {
                static GATE: LogGate = LogGate::new();
                metrics::counter!("healthdns_gossip_send_failures_total").increment(1);
                if let Some(suppressed) = GATE.allow() {
                    tracing::warn!(%to, %error, suppressed, "gossip datagram not sent");
                }
            }
        }
        Ok(())
    }

    async fn recv(&mut self) -> anyhow::Result<(SocketAddr, ChitchatMessage)> {
        loop {
            let (size, from) = match self.socket.recv_from(&mut self.buffer).await {
                Ok(received) => received,
                Err(error)
                    if matches!(
                        error.kind(),
                        std::io::ErrorKind::ConnectionRefused
                            | std::io::ErrorKind::ConnectionReset
                            | std::io::ErrorKind::OutOfMemory
                            | std::io::ErrorKind::Interrupted
                    ) =>
                {
                    continue
                }
                Err(error) => return Err(anyhow::anyhow!("gossip socket failed: {error}")),
            };
            RECEIVED_BYTES.fetch_add(size as u64, std::sync::atomic::Ordering::Relaxed);
            metrics::counter!("healthdns_gossip_bytes_total", "direction" => "received")
                .increment(size as u64);
            let opened = self
                .sealer
                .open(&self.buffer[..size], now_ms(), &mut self.replays);
            let message = match opened.and_then(|payload| self.unframe(payload)) {
                Ok(Some(message)) => message,
                Ok(None) => continue,
                Err(reason) => {
                    reject(reason, from);
                    continue;
                }
            };
            match ChitchatMessage::deserialize(&mut message.as_slice()) {
                Ok(message) => {
                    metrics::counter!("healthdns_gossip_received_total").increment(1);
                    return Ok((from, message));
                }
                Err(_) => reject(Rejected::Garbage, from),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_messages_are_split_in_two_and_small_ones_are_not() {
        let small = vec![7u8; 1000];
        assert_eq!(frame(&small).len(), 1);
        let large = vec![9u8; MAX_DATAGRAM - 20];
        let halves = frame(&large);
        assert_eq!(halves.len(), 2);
        for half in &halves {
            assert!(half.len() + OVERHEAD <= MAX_DATAGRAM);
        }
    }

    /// Real sockets on loopback: a sealed message arrives; garbage, another key and a replay
    /// are skipped (recv keeps waiting and returns the next good message); a message too big
    /// for one datagram arrives in two halves.
    #[tokio::test]
    async fn sealed_messages_pass_and_everything_else_is_skipped() {
        let key = [5u8; 32];
        let transport = SealedTransport::new(&key, "test");
        // A free port (the trait does not say where a socket bound to port 0 listens).
        let address = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let mut receiver_at = transport.open(address).await.unwrap();
        let mut sender = transport
            .open("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let raw = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();

        let message = ChitchatMessage::BadCluster;
        let large = || ChitchatMessage::Syn {
            cluster_id: "x".repeat(MAX_DATAGRAM - 30),
            digest: Default::default(),
        };
        // Garbage, a datagram sealed under another key, then a good one.
        raw.send_to(b"junk", address).await.unwrap();
        let foreign = Sealer::new(&[6u8; 32], "test").seal(&[WHOLE], now_ms(), random_nonce());
        raw.send_to(&foreign, address).await.unwrap();
        let sealer = Sealer::new(&key, "test");
        let mut payload = vec![WHOLE];
        payload.extend_from_slice(&message.serialize_to_vec());
        let good = sealer.seal(&payload, now_ms(), random_nonce());
        raw.send_to(&good, address).await.unwrap();
        // The same good datagram again (a replay), then a message from the real sender.
        raw.send_to(&good, address).await.unwrap();
        sender
            .send(address, ChitchatMessage::BadCluster)
            .await
            .unwrap();

        let (_, first) = receiver_at.recv().await.unwrap();
        assert_eq!(first, message);
        let (from, second) = tokio::time::timeout(Duration::from_secs(5), receiver_at.recv())
            .await
            .expect("the replay is skipped, the next message arrives")
            .unwrap();
        assert_eq!(second, message);
        assert_ne!(from, raw.local_addr().unwrap(), "it came from the sender");
        // Too big for one sealed datagram: two halves, one message.
        sender.send(address, large()).await.unwrap();
        let (_, third) = tokio::time::timeout(Duration::from_secs(5), receiver_at.recv())
            .await
            .expect("the split message arrives")
            .unwrap();
        assert_eq!(third, large());
    }
}
