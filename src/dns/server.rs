//! Sockets: binding the listen addresses and serving queries on them until shutdown.
//!
//! Why this exists: I/O stays at the edge. The caller binds (`Listeners::bind`), so tests
//! can serve on port 0 and read the port back, and the daemon can fail before it starts
//! probing. UDP is served by our own loop, one OS thread per SO_REUSEPORT socket, several
//! sockets per address, because hickory-server serves each UDP socket from a single task and
//! spawns a task per query. A blocking thread receives and sends in batches (recvmmsg and
//! sendmmsg, `UDP_BATCH` datagrams per call, more while backlogged) and answers through its own answer cache
//! (`cache`); an async task would add an epoll wake-up and a failed `recvfrom` per query,
//! which measured as about 30% more CPU per query (bench/qps.sh). The kernel spreads
//! datagrams across the sockets. TCP is served here too, one task per connection: hickory-server's TCP response
//! handle queues at most 32 messages with `try_send` and fails past that, so it cannot stream
//! a zone transfer of thousands of messages; our loop writes each message with the socket's
//! own backpressure.
//!
//! TCP rules: queries on a connection are answered in order (pipelining, RFC 7766 §6.2.1);
//! a connection with no complete query for `tcp_idle_timeout` is closed, and so is one whose
//! client reads nothing for that long; at most `MAX_TCP_CONNECTIONS` are open at once, and a
//! connection beyond that is closed at once (clients retry; NSD does the same).
//!
//! Limits, so that one host cannot take TCP (the truncation fallback, transfers) from
//! everyone else:
//! - at most `MAX_TCP_PER_PREFIX` open connections per client prefix (/24, /56);
//! - a connection is closed after `MAX_TCP_QUERIES` queries or `MAX_TCP_LIFETIME`, once its
//!   answers so far are written (clients reconnect);
//! - at most `MAX_TRANSFERS_PER_SOURCE` zone transfers in flight per client address; one more
//!   is answered REFUSED.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio_util::sync::CancellationToken;

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::dns::handler::{Answered, DnsHandler, Transport};

/// How many times binding a port-0 address is retried when the UDP port is taken on TCP.
const PORT_ZERO_ATTEMPTS: usize = 20;
/// Largest UDP datagram we read.
const MAX_DATAGRAM: usize = 65_535;
/// How often an idle UDP thread looks at the shutdown token.
const UDP_SHUTDOWN_POLL: Duration = Duration::from_millis(100);
/// How long in-flight TCP work (a zone transfer to a slow secondary) may go on after shutdown
/// begins.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Open TCP connections at most; more are closed on accept.
const MAX_TCP_CONNECTIONS: usize = 1024;
/// Open TCP connections per client prefix (/24, /56) at most; more are closed on accept.
pub const MAX_TCP_PER_PREFIX: usize = 64;
/// Queries answered on one TCP connection before it is closed.
pub const MAX_TCP_QUERIES: usize = 10_000;
/// How long one TCP connection may stay open, however busy.
pub const MAX_TCP_LIFETIME: Duration = Duration::from_secs(120);
/// Zone transfers in flight per client address.
pub const MAX_TRANSFERS_PER_SOURCE: usize = 2;

/// Counts per key (a client prefix, or an address) shared by every TCP listener; a `Held`
/// gives its count back when dropped.
#[derive(Clone, Default)]
struct Counts(Arc<std::sync::Mutex<rustc_hash::FxHashMap<std::net::IpAddr, usize>>>);

struct Held {
    counts: Counts,
    key: std::net::IpAddr,
}

impl Counts {
    /// One more for `key`, unless it already has `limit`.
    fn take(&self, key: std::net::IpAddr, limit: usize) -> Option<Held> {
        let mut counts = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let count = counts.entry(key).or_default();
        if *count >= limit {
            return None;
        }
        *count += 1;
        Some(Held {
            counts: self.clone(),
            key,
        })
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut counts = self
            .counts
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(count) = counts.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

/// The /24 (IPv4) or /56 (IPv6) holding `address`, as an address.
fn prefix_of(address: std::net::IpAddr) -> std::net::IpAddr {
    super::rrl::client_prefix(address, 24, 56)
}

/// Shared by every TCP listener and connection.
#[derive(Clone, Default)]
struct TcpLimits {
    prefixes: Counts,
    transfers: Counts,
}

/// Why the listen addresses could not be bound; the operator fixes the address or frees it.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {address} ({transport}): {error}{}", advice(*address, error))]
pub struct BindError {
    pub address: SocketAddr,
    pub transport: &'static str,
    /// Not a `source`: the message already shows it, and `{:#}` would print it twice.
    pub error: io::Error,
}

/// What to do about a bind error, when there is something specific to say.
fn advice(address: SocketAddr, error: &io::Error) -> &'static str {
    match error.kind() {
        io::ErrorKind::PermissionDenied if address.port() < 1024 => {
            "; ports below 1024 need CAP_NET_BIND_SERVICE (`setcap cap_net_bind_service+ep \
             healthdns`, AmbientCapabilities=CAP_NET_BIND_SERVICE in systemd), or run as root"
        }
        io::ErrorKind::AddrInUse => {
            "; another process serves this address (`ss -ulpn`, `ss -tlpn`)"
        }
        io::ErrorKind::AddrNotAvailable => "; this machine has no such address",
        _ => "",
    }
}

/// Bound sockets, ready to serve.
pub struct Listeners {
    udp: Vec<std::net::UdpSocket>,
    tcp: Vec<std::net::TcpListener>,
}

impl Listeners {
    /// Binds every address on UDP (`udp_sockets` SO_REUSEPORT sockets each, with a receive
    /// buffer of `receive_buffer` bytes, or the kernel's default for 0) and TCP. For port 0,
    /// one free port is chosen per address and shared by UDP and TCP.
    pub fn bind(
        addresses: &[SocketAddr],
        udp_sockets: usize,
        receive_buffer: usize,
    ) -> Result<Self, BindError> {
        let mut listeners = Self {
            udp: Vec::new(),
            tcp: Vec::new(),
        };
        for &address in addresses {
            let attempts = if address.port() == 0 {
                PORT_ZERO_ATTEMPTS
            } else {
                1
            };
            let mut attempt = 0;
            loop {
                attempt += 1;
                match bind_address(address, udp_sockets.max(1), receive_buffer) {
                    Ok((udp, tcp)) => {
                        listeners.udp.extend(udp);
                        listeners.tcp.push(tcp);
                        break;
                    }
                    Err(error) if attempt < attempts => {
                        tracing::debug!(%error, "retrying a port-0 bind");
                    }
                    Err(error) => return Err(error),
                }
            }
        }
        Ok(listeners)
    }

    /// The bound addresses, one per listen address (UDP and TCP share them).
    pub fn local_addresses(&self) -> Vec<SocketAddr> {
        self.tcp
            .iter()
            .filter_map(|listener| listener.local_addr().ok())
            .collect()
    }
}

fn bind_address(
    address: SocketAddr,
    count: usize,
    receive_buffer: usize,
) -> Result<(Vec<std::net::UdpSocket>, std::net::TcpListener), BindError> {
    let error = |transport, error| BindError {
        address,
        transport,
        error,
    };
    let mut bound = address;
    let mut udp = Vec::with_capacity(count);
    for index in 0..count {
        let socket = udp_socket(bound).map_err(|source| error("udp", source))?;
        if receive_buffer > 0 {
            // Best effort; a capped size is reported once per address.
            use std::os::fd::AsRawFd;
            let kept = crate::socket_buffer::enlarge(socket.as_raw_fd(), receive_buffer);
            let capped = kept.is_none_or(|kept| crate::socket_buffer::capped(kept, receive_buffer));
            if index == 0 && capped {
                tracing::warn!(
                    asked = receive_buffer,
                    granted = kept.unwrap_or_default() / 2,
                    "the UDP receive buffer is smaller than [server] udp_receive_buffer: net.core.rmem_max caps it without CAP_NET_ADMIN; bursts past it are dropped"
                );
            }
        }
        bound = socket.local_addr().map_err(|source| error("udp", source))?;
        udp.push(socket);
    }
    let tcp = tcp_listener(bound).map_err(|source| error("tcp", source))?;
    Ok((udp, tcp))
}

fn new_socket(address: SocketAddr, kind: Type, protocol: Protocol) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(address), kind, Some(protocol))?;
    if address.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    Ok(socket)
}

/// A blocking UDP socket whose reads time out, so its thread can notice shutdown.
fn udp_socket(address: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let socket = new_socket(address, Type::DGRAM, Protocol::UDP)?;
    socket.set_read_timeout(Some(UDP_SHUTDOWN_POLL))?;
    socket.set_reuse_port(true)?;
    socket.bind(&address.into())?;
    Ok(socket.into())
}

fn tcp_listener(address: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = new_socket(address, Type::STREAM, Protocol::TCP)?;
    socket.set_nonblocking(true)?;
    socket.set_reuse_address(true)?;
    socket.bind(&address.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// Serves DNS on `listeners` until `shutdown` is cancelled, then stops gracefully.
pub async fn serve(
    listeners: Listeners,
    handler: DnsHandler,
    tcp_idle_timeout: Duration,
    rate_limit: Option<super::rrl::RateLimit>,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let mut udp_threads = Vec::with_capacity(listeners.udp.len());
    // Each UDP thread says here when it ends; before shutdown that is a failure.
    let (ended_sender, mut ended) = tokio::sync::mpsc::unbounded_channel::<String>();
    for (index, socket) in listeners.udp.into_iter().enumerate() {
        let handler = handler.clone();
        let shutdown = shutdown.clone();
        let ended_sender = ended_sender.clone();
        udp_threads.push(
            std::thread::Builder::new()
                .name(format!("udp-{index}"))
                .spawn(move || {
                    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        serve_udp(socket, handler, rate_limit, shutdown)
                    }));
                    let cause = match result {
                        Ok(()) => "it returned".to_string(),
                        Err(payload) => crate::fault::panic_message(&*payload),
                    };
                    let _ = ended_sender.send(format!("UDP thread {index}: {cause}"));
                })?,
        );
    }
    let mut tcp = JoinSet::new();
    let connections = Arc::new(Semaphore::new(MAX_TCP_CONNECTIONS));
    let limits = TcpLimits::default();
    for listener in listeners.tcp {
        tracing::info!(address = %listener.local_addr()?, "serving DNS on UDP and TCP");
        tcp.spawn(serve_tcp(
            TcpListener::from_std(listener)?,
            handler.clone(),
            tcp_idle_timeout,
            connections.clone(),
            limits.clone(),
            shutdown.clone(),
        ));
    }
    let failure = tokio::select! {
        biased;
        _ = shutdown.cancelled() => None,
        Some(cause) = ended.recv() => Some(cause),
        Some(result) = tcp.join_next() => Some(match result {
            Err(error) if error.is_panic() => format!("a TCP listener panicked: {error}"),
            _ => "a TCP listener stopped".to_string(),
        }),
    };
    // A listener that ends because shutdown began has not failed.
    let failure = failure.filter(|_| !shutdown.is_cancelled());
    if failure.is_some() {
        shutdown.cancel();
    }
    while tcp.join_next().await.is_some() {}
    tokio::task::spawn_blocking(move || {
        for thread in udp_threads {
            let _ = thread.join();
        }
    })
    .await
    .map_err(io::Error::other)?;
    match failure {
        Some(cause) => Err(io::Error::other(cause)),
        None => Ok(()),
    }
}

/// UDP threads run at the process's priority. Probes keep their schedule under a flood
/// without lowering it: they run on the runtime's threads, which sleep between probes and so
/// are scheduled ahead of a busy UDP thread when they wake, and their ticks keep their grid
/// (`health::schedule`); tests/faults.rs floods a server and counts its probes. UDP threads 5
/// nice steps lower were tried: they bought nothing in bench/overload.sh and cost 13-20% of
/// the throughput when the cores are shared with other work (bench/speed.sh MODE=two).
/// Datagrams received (and answers sent) per system call on a UDP socket while it keeps up.
/// 16 rather than 32: the first answer of a batch waits for the last, and at 80% load a fixed
/// 32 doubled the p99 latency (bench/speed.sh) for no measurable throughput.
const UDP_BATCH: usize = 16;
/// Datagrams per call while the socket is backlogged: after a call that filled its batch, the
/// next asks for up to this many. recvmmsg returns what is queued and never waits for more,
/// so this only takes datagrams that would otherwise wait for the next call, and each system
/// call (a fixed cost of the kernel's, most of a query's cost here) is shared by more queries.
const UDP_BATCH_BACKLOGGED: usize = 64;
/// Bytes between the starts of two receive buffers: a whole datagram, plus one cache line so
/// that the buffers' first bytes (the headers the parser reads) fall in different cache sets.
const UDP_BUFFER_STRIDE: usize = MAX_DATAGRAM + 1 + 64;

/// One UDP socket's thread: receive a batch (recvmmsg), answer each in place, send the
/// answers in one call (sendmmsg), until shutdown. Batching is where gdnsd gets much of its
/// speed: on loopback most of a query's cost is the kernel's, per system call and per wakeup.
fn serve_udp(
    socket: std::net::UdpSocket,
    handler: DnsHandler,
    rate_limit: Option<super::rrl::RateLimit>,
    shutdown: CancellationToken,
) {
    use super::rrl::{Class, Decision, RateLimiter};
    use std::os::fd::AsRawFd;
    let fd = socket.as_raw_fd();
    // One zeroed allocation for every receive buffer: large enough to come straight from the
    // kernel, whose zero pages become resident only where a datagram is written. Transparent
    // huge pages for it and the answer cache (MADV_HUGEPAGE, fewer TLB misses in the kernel's
    // copies) were tried: in bench/speed.sh (pool, static, NXDOMAIN, nxrandom; 12 rounds) the
    // build without them cost 0.96-1.01x the CPU per query of the build with them, which also
    // took 2.5 MiB more RSS.
    let mut inbox = vec![0u8; UDP_BUFFER_STRIDE * UDP_BATCH_BACKLOGGED];
    let mut answers: Vec<Vec<u8>> = (0..UDP_BATCH_BACKLOGGED)
        .map(|_| Vec::with_capacity(4096))
        .collect();
    // SAFETY: an all-zero sockaddr_storage is a valid (unspecified) address.
    let mut sources: Vec<libc::sockaddr_storage> =
        vec![unsafe { std::mem::zeroed() }; UDP_BATCH_BACKLOGGED];
    // SAFETY: all-zero iovec and mmsghdr values are valid; every pointer is set before use.
    let mut in_iovecs: Vec<libc::iovec> = vec![unsafe { std::mem::zeroed() }; UDP_BATCH_BACKLOGGED];
    let mut in_headers: Vec<libc::mmsghdr> =
        vec![unsafe { std::mem::zeroed() }; UDP_BATCH_BACKLOGGED];
    let mut out_iovecs: Vec<libc::iovec> =
        vec![unsafe { std::mem::zeroed() }; UDP_BATCH_BACKLOGGED];
    let mut out_headers: Vec<libc::mmsghdr> =
        vec![unsafe { std::mem::zeroed() }; UDP_BATCH_BACKLOGGED];
    // The receive headers point at buffers that never move; only what recvmmsg writes back
    // (the address length) is reset before each call, for the entries it used.
    let inbox_base = inbox.as_mut_ptr();
    for index in 0..UDP_BATCH_BACKLOGGED {
        in_iovecs[index] = libc::iovec {
            // SAFETY: index * UDP_BUFFER_STRIDE + MAX_DATAGRAM is within the allocation.
            iov_base: unsafe { inbox_base.add(index * UDP_BUFFER_STRIDE) }.cast(),
            iov_len: MAX_DATAGRAM,
        };
        let header = &mut in_headers[index].msg_hdr;
        header.msg_iov = &mut in_iovecs[index];
        header.msg_iovlen = 1;
        header.msg_name = (&mut sources[index] as *mut libc::sockaddr_storage).cast();
    }
    let storage_size = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    let mut used = UDP_BATCH_BACKLOGGED;
    let mut batch = UDP_BATCH;
    let mut stats = super::stats::QueryStats::new("udp");
    let mut cache = super::cache::AnswerCache::new();
    let mut limiter = rate_limit.map(RateLimiter::new);
    let clock = std::time::Instant::now();
    while !shutdown.is_cancelled() {
        for header in &mut in_headers[..used] {
            header.msg_hdr.msg_namelen = storage_size;
        }
        // SAFETY: every header points at live buffers owned by this function for the call.
        let received = unsafe {
            libc::recvmmsg(
                fd,
                in_headers.as_mut_ptr(),
                batch as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if received < 0 {
            let error = io::Error::last_os_error();
            if matches!(
                error.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
            ) {
                // Idle: the counts so far go out now.
                stats.flush();
                cache.flush_metrics();
                flush_rate_limits(limiter.as_mut());
            } else {
                // ICMP errors from earlier sends surface here once; they are not fatal.
                tracing::debug!(%error, "UDP receive error");
            }
            continue;
        }
        used = received as usize;
        // A full batch means more is queued: take more a call until the queue is short again.
        batch = if used == batch {
            UDP_BATCH_BACKLOGGED
        } else {
            UDP_BATCH
        };
        let mut outgoing = 0;
        // One clock reading a batch is precise enough for per-second buckets.
        let now_ms = limiter
            .as_ref()
            .map_or(0, |_| clock.elapsed().as_millis() as u64);
        // One snapshot a batch: a batch takes microseconds, and the next one sees any swap.
        let snapshot = handler.snapshot();
        for index in 0..received as usize {
            let length = in_headers[index].msg_len as usize;
            let namelen = in_headers[index].msg_hdr.msg_namelen;
            // SAFETY: recvmmsg wrote a socket address of `namelen` bytes into the storage.
            let source = unsafe { socket2::SockAddr::new(sources[index], namelen) }.as_socket();
            let started = stats.sample().then(super::stats::now);
            let packet = &inbox[index * UDP_BUFFER_STRIDE..][..length];
            // Port 0 cannot be answered; anything else is answered where it came from.
            let Some(source) = source.filter(|source| source.port() != 0) else {
                stats.dropped();
                continue;
            };
            if !matches!(
                handler.answer_cached(
                    &snapshot,
                    &mut cache,
                    packet,
                    source,
                    Transport::Udp,
                    &mut answers[index]
                ),
                Answered::Message
            ) {
                stats.dropped();
                continue;
            }
            stats.count(packet, &answers[index]);
            if let Some(started) = started {
                stats.record_latency(started.elapsed());
            }
            if let Some(limiter) = &mut limiter {
                match limiter.decide(source.ip(), Class::of(&answers[index]), now_ms) {
                    Decision::Send => {}
                    Decision::Drop => continue,
                    Decision::Slip => {
                        if !super::rrl::truncate(&mut answers[index]) {
                            continue;
                        }
                    }
                }
            }
            out_iovecs[outgoing] = libc::iovec {
                iov_base: answers[index].as_mut_ptr().cast(),
                iov_len: answers[index].len(),
            };
            let header = &mut out_headers[outgoing].msg_hdr;
            header.msg_iov = &mut out_iovecs[outgoing];
            header.msg_iovlen = 1;
            header.msg_name = (&mut sources[index] as *mut libc::sockaddr_storage).cast();
            header.msg_namelen = namelen;
            outgoing += 1;
        }
        let mut sent = 0;
        while sent < outgoing {
            // SAFETY: headers [sent, outgoing) point at live answers and sources.
            let result = unsafe {
                libc::sendmmsg(
                    fd,
                    out_headers[sent..].as_mut_ptr(),
                    (outgoing - sent) as libc::c_uint,
                    0,
                )
            };
            if result <= 0 {
                let error = io::Error::last_os_error();
                if error.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                // This answer cannot be sent (the source is unreachable, say): skip it.
                tracing::debug!(%error, "UDP send error");
                sent += 1;
            } else {
                sent += result as usize;
            }
        }
        // Under steady load the thread never idles: flush every FLUSH_EVERY queries.
        if stats.due() {
            stats.flush();
            cache.flush_metrics();
            flush_rate_limits(limiter.as_mut());
        }
    }
}

/// Adds a thread's rate-limited responses to `healthdns_rrl_responses_total{action}`, and
/// says so in the log at most once per `LOG_EVERY` for the whole server (with the count of the
/// reports it left out), never once per response.
fn flush_rate_limits(limiter: Option<&mut super::rrl::RateLimiter>) {
    let Some(limiter) = limiter else {
        return;
    };
    let (dropped, slipped) = (
        std::mem::take(&mut limiter.dropped),
        std::mem::take(&mut limiter.slipped),
    );
    if dropped + slipped == 0 {
        return;
    }
    metrics::counter!("healthdns_rrl_responses_total", "action" => "dropped").increment(dropped);
    metrics::counter!("healthdns_rrl_responses_total", "action" => "slipped").increment(slipped);
    static GATE: crate::dns::LogGate = crate::dns::LogGate::new();
    if let Some(suppressed) = GATE.allow() {
        tracing::warn!(
            dropped,
            slipped,
            suppressed,
            "response rate limiting: responses over the limit dropped (slipped ones sent empty with TC=1)"
        );
    }
}

/// Accepts TCP connections until `shutdown`, then waits for the open ones to finish.
async fn serve_tcp(
    listener: TcpListener,
    handler: DnsHandler,
    idle_timeout: Duration,
    connections: Arc<Semaphore>,
    limits: TcpLimits,
    shutdown: CancellationToken,
) {
    let mut open = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        while open.try_join_next().is_some() {}
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::debug!(%error, "TCP accept error");
                // EMFILE and friends: do not spin.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tcp_refused(peer, "too many TCP connections");
            continue;
        };
        let Some(held) = limits
            .prefixes
            .take(prefix_of(peer.ip()), MAX_TCP_PER_PREFIX)
        else {
            tcp_refused(peer, "too many TCP connections from this client's prefix");
            continue;
        };
        let handler = handler.clone();
        let shutdown = shutdown.clone();
        let transfers = limits.transfers.clone();
        open.spawn(async move {
            serve_connection(stream, peer, &handler, idle_timeout, &transfers, &shutdown).await;
            drop((permit, held));
        });
    }
    // Shutdown: queries in progress and zone transfers get a bounded time to finish.
    let finished = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while open.join_next().await.is_some() {}
    })
    .await;
    if finished.is_err() {
        tracing::warn!(
            connections = open.len(),
            "TCP connections still busy {SHUTDOWN_GRACE:?} after shutdown began; closed"
        );
        open.shutdown().await;
    }
}

/// Counts a TCP connection closed on accept, and says why in a gated log line.
fn tcp_refused(peer: SocketAddr, why: &'static str) {
    metrics::counter!("healthdns_tcp_refused_total", "reason" => why).increment(1);
    static GATE: crate::dns::LogGate = crate::dns::LogGate::new();
    if let Some(suppressed) = GATE.allow() {
        tracing::warn!(%peer, suppressed, "{why}; closing the connection");
    }
}

/// The REFUSED answer to `query` (header and question only), into `out`; false when the
/// question cannot be found.
fn refuse(query: &[u8], out: &mut Vec<u8>) -> bool {
    out.clear();
    out.extend_from_slice(query);
    if !super::rrl::truncate(out) {
        return false;
    }
    out[2] = 0x80 | (out[2] & 0x79);
    out[3] = 5;
    true
}

/// Answers the queries on one TCP connection, in order, until it closes, idles or `shutdown`.
/// Every complete query already received is answered before the next read, and their answers
/// go out in one write: a pipelining client costs one system call per batch, not per query.
async fn serve_connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    handler: &DnsHandler,
    idle_timeout: Duration,
    transfers: &Counts,
    shutdown: &CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let opened = tokio::time::Instant::now();
    let mut answered = 0usize;
    // Flushed to the metrics facade when the connection ends (on drop).
    let mut stats = super::stats::QueryStats::new("tcp");
    // Bytes received and not yet answered: at most one partial query after each batch.
    let mut input: Vec<u8> = Vec::with_capacity(4096);
    let mut response = Vec::with_capacity(4096);
    // Framed answers (length prefix and message), written together.
    let mut output: Vec<u8> = Vec::with_capacity(4096);
    let mut last_query = tokio::time::Instant::now();
    loop {
        let mut consumed = 0;
        while let Some(length) = input
            .get(consumed..consumed + 2)
            .map(|prefix| usize::from(u16::from_be_bytes([prefix[0], prefix[1]])))
            .filter(|length| input.len() >= consumed + 2 + length)
        {
            if answered == MAX_TCP_QUERIES {
                break;
            }
            answered += 1;
            let packet = &input[consumed + 2..consumed + 2 + length];
            consumed += 2 + length;
            last_query = tokio::time::Instant::now();
            let started = stats.sample().then(super::stats::now);
            match TCP_CACHE.with_borrow_mut(|cache| {
                handler.answer_cached(
                    &handler.snapshot(),
                    cache,
                    packet,
                    peer,
                    Transport::Tcp,
                    &mut response,
                )
            }) {
                Answered::Nothing => stats.dropped(),
                Answered::Message => {
                    stats.count(packet, &response);
                    if let Some(started) = started {
                        stats.record_latency(started.elapsed());
                    }
                    if stats.due() {
                        stats.flush();
                    }
                    output.extend_from_slice(&(response.len() as u16).to_be_bytes());
                    output.extend_from_slice(&response);
                }
                Answered::Transfer(transfer) => {
                    let Some(_held) = transfers.take(peer.ip(), MAX_TRANSFERS_PER_SOURCE) else {
                        tracing::warn!(zone = %transfer.zone().origin(), %peer, "zone transfer refused: {MAX_TRANSFERS_PER_SOURCE} already in flight to this address");
                        if refuse(packet, &mut response) {
                            output.extend_from_slice(&(response.len() as u16).to_be_bytes());
                            output.extend_from_slice(&response);
                        }
                        continue;
                    };
                    // The answers before it go first, in order.
                    if !write_all(&mut stream, &mut output, idle_timeout).await {
                        return;
                    }
                    let started = std::time::Instant::now();
                    match transfer.send(&mut stream, idle_timeout).await {
                        Ok(stats) => tracing::info!(
                            zone = %transfer.zone().origin(),
                            serial = transfer.zone().serial(),
                            kind = ?transfer.kind(),
                            %peer,
                            records = stats.records,
                            messages = stats.messages,
                            bytes = stats.bytes,
                            took_ms = started.elapsed().as_millis() as u64,
                            "zone transfer sent"
                        ),
                        Err(error) => {
                            tracing::warn!(zone = %transfer.zone().origin(), %peer, %error, "zone transfer stopped");
                            return;
                        }
                    }
                }
            }
        }
        input.drain(..consumed);
        if !write_all(&mut stream, &mut output, idle_timeout).await {
            return;
        }
        if answered == MAX_TCP_QUERIES || opened.elapsed() >= MAX_TCP_LIFETIME {
            // Its answers are written; the client reconnects for more.
            return;
        }
        // A connection with no complete query for `idle_timeout` is closed.
        input.reserve(4096);
        let read = tokio::select! {
            _ = shutdown.cancelled() => return,
            read = tokio::time::timeout_at((last_query + idle_timeout).min(opened + MAX_TCP_LIFETIME), stream.read_buf(&mut input)) => read,
        };
        if !matches!(read, Ok(Ok(1..))) {
            return;
        }
    }
}

thread_local! {
    /// The answer cache of TCP queries answered on this runtime thread.
    static TCP_CACHE: std::cell::RefCell<super::cache::AnswerCache> =
        std::cell::RefCell::new(super::cache::AnswerCache::new());
}

/// Writes and empties `output`; false if the client does not take it within `timeout`.
async fn write_all(stream: &mut TcpStream, output: &mut Vec<u8>, timeout: Duration) -> bool {
    if output.is_empty() {
        return true;
    }
    let written = matches!(
        tokio::time::timeout(timeout, stream.write_all(output)).await,
        Ok(Ok(()))
    );
    output.clear();
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_hold_up_to_the_limit_and_give_back_on_drop() {
        let counts = Counts::default();
        let address: std::net::IpAddr = "192.0.2.7".parse().unwrap();
        let first = counts.take(address, 2).unwrap();
        let second = counts.take(address, 2).unwrap();
        assert!(
            counts.take(address, 2).is_none(),
            "the third is over the limit"
        );
        assert!(counts.take("192.0.2.8".parse().unwrap(), 2).is_some());
        drop(first);
        let third = counts.take(address, 2).expect("a slot came back");
        drop((second, third));
        assert!(
            counts.0.lock().unwrap().get(&address).is_none(),
            "no empty entries kept"
        );
    }

    #[test]
    fn prefixes_are_slash_24_and_slash_56() {
        let prefix = |text: &str| prefix_of(text.parse().unwrap()).to_string();
        assert_eq!(prefix("192.0.2.77"), "192.0.2.0");
        assert_eq!(prefix("2001:db8:1:2ff:1:2:3:4"), "2001:db8:1:200::");
    }

    #[test]
    fn a_refused_transfer_gets_refused_with_its_question() {
        // ID 0x1234, RD, one question: example.test AXFR.
        let mut query = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        query.extend_from_slice(b"\x07example\x04test\x00\x00\xfc\x00\x01");
        let mut out = Vec::new();
        assert!(refuse(&query, &mut out));
        let response = hickory_proto::op::Message::from_vec(&out).unwrap();
        assert_eq!(response.metadata.id, 0x1234);
        assert_eq!(
            response.metadata.response_code,
            hickory_proto::op::ResponseCode::Refused
        );
        assert!(response.metadata.recursion_desired && !response.metadata.truncation);
        assert_eq!(response.queries.len(), 1);
        assert!(
            !refuse(&query[..20], &mut out),
            "no whole question, no answer"
        );
    }
}
