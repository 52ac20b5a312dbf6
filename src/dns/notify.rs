//! NOTIFY (RFC 1996): telling secondaries at once that a zone has a new serial.
//!
//! Why this exists: without NOTIFY a secondary only looks at the primary when its SOA refresh
//! timer fires (often an hour), so it would keep serving addresses that are down. On every
//! new serial of a zone, each `also_notify` target is sent a NOTIFY, and the secondary then
//! asks for the changes (IXFR) within milliseconds.
//!
//! Documented rules:
//! - Sent from `notify_source`, else from the IP of the first listen address of the target's
//!   family (BIND and Knot accept a NOTIFY only from an address they list as a primary),
//!   from an ephemeral port. It carries the new SOA in the answer section (RFC 1996 §3.7).
//! - Retried until a response with the same ID and opcode arrives: tries after 0, 1, 3, 7
//!   and 15 s (five in all), then the failure is logged. A response with an error RCODE is
//!   logged and not retried: the secondary has answered.
//! - A newer serial cancels the retries of the older one. Sending never blocks the publisher:
//!   this task follows the published snapshots on a watch channel.
//! - Paced: at most one round per `min_serial_interval`, always for the newest serial; the
//!   secondary's IXFR then brings every change since its serial.
//! - Also sent for the serial served at start, so a secondary catches up after a restart.
//! - To a target with a key ("192.0.2.1 key NAME"), each try is TSIG-signed and the
//!   response must be signed with the same key; else it is logged as not acknowledged.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, Record, RecordType};
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::dns::tsig::{self, Signing, TsigKey};
use crate::zone::snapshot::{name_key, Snapshot};

/// How long to wait for the answer to each try; five tries in all.
const TRY_TIMEOUTS: [Duration; 5] = [
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
    Duration::from_secs(8),
    Duration::from_secs(15),
];

/// Sends NOTIFY for every new serial of the snapshot's zones (to each zone's `also_notify`,
/// as its settings in that snapshot say) until `shutdown`.
pub async fn run(
    mut versions: watch::Receiver<Arc<Snapshot>>,
    listen: Vec<SocketAddr>,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut notified: HashMap<Name, (u32, CancellationToken)> = HashMap::new();
    let mut senders = JoinSet::new();
    loop {
        let snapshot = versions.borrow_and_update().clone();
        for config in snapshot.settings() {
            if config.also_notify.is_empty() {
                continue;
            }
            let Some(zone) = snapshot.zone(&name_key(&config.origin)) else {
                continue;
            };
            if notified
                .get(&config.origin)
                .is_some_and(|(serial, _)| *serial == zone.serial())
            {
                continue;
            }
            let round = shutdown.child_token();
            if let Some((_, previous)) =
                notified.insert(config.origin.clone(), (zone.serial(), round.clone()))
            {
                previous.cancel();
            }
            for target in &config.also_notify {
                let source = config
                    .notify_source
                    .unwrap_or_else(|| source_for(target.address, &listen));
                senders.spawn(notify(
                    zone.soa().clone(),
                    zone.serial(),
                    source,
                    target.address,
                    target.key.clone(),
                    round.clone(),
                ));
            }
        }
        while let Some(ended) = senders.try_join_next() {
            if let Err(error) = ended {
                if error.is_panic() {
                    std::panic::resume_unwind(error.into_panic());
                }
            }
        }
        // At most one round per interval, for the newest serial: wait for a new version, then
        // for the end of the interval.
        let next_round = tokio::time::Instant::now() + interval;
        tokio::select! {
            _ = shutdown.cancelled() => break,
            changed = versions.changed() => if changed.is_err() { break },
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep_until(next_round) => {}
        }
    }
    senders.shutdown().await;
}

/// The IP of the first listen address of `target`'s family, or the unspecified address.
fn source_for(target: SocketAddr, listen: &[SocketAddr]) -> IpAddr {
    listen
        .iter()
        .map(SocketAddr::ip)
        .find(|ip| ip.is_ipv4() == target.is_ipv4())
        .unwrap_or(if target.is_ipv4() {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        } else {
            IpAddr::V6(Ipv6Addr::UNSPECIFIED)
        })
}

/// Why one NOTIFY did not get through.
#[derive(Debug, thiserror::Error)]
enum NotifyError {
    #[error("cannot send from {source_address}: {error}")]
    Socket {
        source_address: IpAddr,
        error: std::io::Error,
    },
    #[error("no answer after {0} tries")]
    NoAnswer(usize),
    #[error("answered {0}")]
    Refused(ResponseCode),
    #[error("TSIG: {0}")]
    Unsigned(String),
}

/// Sends one zone's NOTIFY to one target, retrying, until answered, out of tries or cancelled.
async fn notify(
    soa: Record,
    serial: u32,
    source: IpAddr,
    target: SocketAddr,
    key: Option<Arc<TsigKey>>,
    cancel: CancellationToken,
) {
    let zone = &soa.name;
    let result = tokio::select! {
        _ = cancel.cancelled() => return,
        result = exchange(&soa, source, target, key) => result,
    };
    let outcome = match &result {
        Ok(()) => "acknowledged",
        Err(NotifyError::Refused(_)) => "refused",
        Err(NotifyError::Unsigned(_)) => "bad_tsig",
        Err(_) => "failed",
    };
    metrics::counter!("healthdns_notify_total", "result" => outcome).increment(1);
    match result {
        Ok(()) => tracing::info!(%zone, serial, %target, "NOTIFY acknowledged"),
        Err(error) => tracing::warn!(%zone, serial, %target, %error, "NOTIFY not acknowledged"),
    }
}

async fn exchange(
    soa: &Record,
    source: IpAddr,
    target: SocketAddr,
    key: Option<Arc<TsigKey>>,
) -> Result<(), NotifyError> {
    let socket_error = |error| NotifyError::Socket {
        source_address: source,
        error,
    };
    let socket = UdpSocket::bind(SocketAddr::new(source, 0))
        .await
        .map_err(socket_error)?;
    let id: u16 = fastrand::u16(..);
    let mut message = Message::new(id, MessageType::Query, OpCode::Notify);
    message.metadata.authoritative = true;
    let mut query = Query::query(soa.name.clone(), RecordType::SOA);
    query.query_class = DNSClass::IN;
    message.add_query(query);
    message.add_answer(soa.clone());
    let unsigned = message.to_vec().expect("a NOTIFY encodes");
    let mut buffer = vec![0u8; 4096];
    for timeout in TRY_TIMEOUTS {
        // Each try is signed afresh: its time must be now.
        let mut bytes = unsigned.clone();
        let signing = key.as_ref().map(|key| {
            let mut signing = Signing::request(key.clone(), id);
            signing.sign(&mut bytes, tsig::now());
            signing
        });
        socket.send_to(&bytes, target).await.map_err(socket_error)?;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let received = tokio::time::timeout_at(deadline, socket.recv_from(&mut buffer)).await;
            let Ok(received) = received else {
                break;
            };
            let Ok((length, from)) = received else {
                // An ICMP error (port unreachable) from an earlier try: wait out the timeout.
                tokio::time::sleep_until(deadline).await;
                break;
            };
            let Ok(response) = Message::from_vec(&buffer[..length]) else {
                continue;
            };
            if from != target
                || response.metadata.id != id
                || response.metadata.message_type != MessageType::Response
                || response.metadata.op_code != OpCode::Notify
            {
                continue;
            }
            if let Some(problem) = signing
                .as_ref()
                .and_then(|signing| signing.verify_response(&buffer[..length], tsig::now()))
            {
                return Err(NotifyError::Unsigned(problem));
            }
            return match response.metadata.response_code {
                ResponseCode::NoError => Ok(()),
                code => Err(NotifyError::Refused(code)),
            };
        }
    }
    Err(NotifyError::NoAnswer(TRY_TIMEOUTS.len()))
}
