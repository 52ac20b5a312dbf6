//! A batched UDP DNS load generator for `bench/speed.sh`: a fixed number of queries
//! outstanding, sent and received with sendmmsg/recvmmsg, loopback only, bounded in time.
//!
//! dnsperf saturates its own core at about 100k queries/s, below what the servers can do, so
//! it cannot tell them apart by throughput; this can.
//!
//! Usage: loadgen SERVER QUERY_FILE [OUTSTANDING] [SECONDS (may be fractional)] [--rate QPS] [--tcp CONNECTIONS]
//!                [--check]
//! QUERY_FILE: one query per line, "name type" with optional "do" (EDNS with DO) or "edns".
//! - `--rate QPS`: send at this fixed rate (at most OUTSTANDING in flight) instead of keeping
//!   OUTSTANDING in flight: latency at a chosen load.
//! - `--tcp N`: N TCP connections, each with OUTSTANDING / N queries pipelined per round.
//! - `--check`: parse every answer; one that does not parse, or a NOERROR answer to an A
//!   query with no record, counts as an error (torn or empty answers during swaps).
//! - `--source IP`: send from this loopback address (another client prefix).
//! - `--histogram FILE`: also write every latency to FILE as `MICROSECONDS COUNT` lines, and
//!   a last line `lost N`, so that many short runs can be pooled into one percentile.
//! - `--flood`: only send, at `--rate` (or as fast as possible), and never read: the answers
//!   are dropped by the kernel once this socket's buffer is full. A flood's sender does not
//!   pay for receiving, so one core can offer more than a server answers.
//!
//! Prints one line: `answered=N qps=Q p50_us=A p99_us=B errors=E lost=L sent=S bytes=B
//! truncated=T` (bytes: of every answer received; truncated: answers with TC=1).

use std::io::{BufRead, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};

const BATCH: usize = 64;
const PACKET: usize = 4096;
/// How long a paced run awaits the answers in flight when its time is up.
const DRAIN: Duration = Duration::from_secs(1);

fn encode(line: &str) -> Option<Vec<u8>> {
    let mut words = line.split_whitespace();
    let name = Name::from_ascii(words.next()?).ok()?;
    let record_type: RecordType = words.next().unwrap_or("A").parse().ok()?;
    let mut message = Message::new(0, MessageType::Query, OpCode::Query);
    message.add_query(Query::query(name, record_type));
    match words.next() {
        Some("do") => {
            let mut edns = Edns::new();
            edns.set_max_payload(1232);
            edns.set_dnssec_ok(true);
            message.set_edns(edns);
        }
        Some("edns") => {
            let mut edns = Edns::new();
            edns.set_max_payload(1232);
            message.set_edns(edns);
        }
        _ => {}
    }
    message.to_vec().ok()
}

/// One message header per iovec (no address: the socket is connected).
fn headers(iovecs: &mut [libc::iovec]) -> Vec<libc::mmsghdr> {
    iovecs
        .iter_mut()
        .map(|iovec| {
            // SAFETY: a zeroed msghdr is valid; only the iovec fields are set.
            let mut header: libc::mmsghdr = unsafe { std::mem::zeroed() };
            header.msg_hdr.msg_iov = iovec;
            header.msg_hdr.msg_iovlen = 1;
            header
        })
        .collect()
}

fn main() {
    let arguments: Vec<String> = std::env::args().collect();
    let server: SocketAddr = arguments[1].parse().expect("SERVER as address:port");
    assert!(server.ip().is_loopback(), "loopback only");
    let file = std::fs::File::open(&arguments[2]).expect("QUERY_FILE");
    let queries: Vec<Vec<u8>> = std::io::BufReader::new(file)
        .lines()
        .map_while(Result::ok)
        .filter_map(|line| encode(&line))
        .collect();
    assert!(!queries.is_empty(), "no queries in {}", arguments[2]);
    let outstanding: usize = arguments.get(3).and_then(|a| a.parse().ok()).unwrap_or(256);
    let seconds: f64 = arguments.get(4).and_then(|a| a.parse().ok()).unwrap_or(5.0);
    let flag = |name: &str| -> Option<f64> {
        let at = arguments.iter().position(|argument| argument == name)?;
        arguments.get(at + 1).and_then(|value| value.parse().ok())
    };
    let rate = flag("--rate");
    let check = arguments.iter().any(|argument| argument == "--check");
    let mut report = Report::default();
    let started = Instant::now();
    let limit = Duration::from_secs_f64(seconds);
    report.histogram = arguments
        .iter()
        .position(|argument| argument == "--histogram")
        .and_then(|at| arguments.get(at + 1))
        .map(std::path::PathBuf::from);
    if let Some(connections) = flag("--tcp") {
        run_tcp(
            server,
            &queries,
            outstanding,
            connections as usize,
            limit,
            check,
            &mut report,
        );
        report.print(started.elapsed().as_secs_f64());
        return;
    }
    let source = arguments
        .iter()
        .position(|argument| argument == "--source")
        .and_then(|at| arguments.get(at + 1))
        .map_or("127.0.0.1", String::as_str);
    let source: std::net::IpAddr = source.parse().expect("--source IP");
    assert!(source.is_loopback(), "loopback only");
    let socket = UdpSocket::bind((source, 0)).unwrap();
    socket.connect(server).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let fd = socket.as_raw_fd();

    // Send times by ID; 0 = free.
    let mut sent_at: Vec<Option<Instant>> = vec![None; 65536];
    let mut next_id: u16 = 0;
    let mut next_query = 0usize;
    let mut in_flight = 0usize;
    let mut out = vec![[0u8; PACKET]; BATCH];
    let mut out_len = [0usize; BATCH];
    let mut inbox = vec![[0u8; PACKET]; BATCH];
    let mut sent_total = 0u64;
    if arguments.iter().any(|argument| argument == "--flood") {
        flood(fd, &queries, rate, started, limit, &mut report);
        report.print(started.elapsed().as_secs_f64());
        return;
    }
    // Paced, the answers still in flight when the time is up are awaited (up to DRAIN), so
    // that a backlog at the end is measured rather than left out; what never comes is lost.
    let drain_until = limit
        + if rate.is_some() {
            DRAIN
        } else {
            Duration::ZERO
        };
    loop {
        let elapsed = started.elapsed();
        if elapsed >= limit && (in_flight == 0 || elapsed >= drain_until) {
            if rate.is_some() {
                report.lost += in_flight as u64;
            }
            break;
        }
        // Fill the window (or send what the rate allows by now), a batch at a time.
        while started.elapsed() < limit {
            let allowed = match rate {
                Some(rate) => {
                    let due = (started.elapsed().as_secs_f64() * rate) as u64;
                    (due.saturating_sub(sent_total) as usize).min(outstanding - in_flight)
                }
                None => outstanding - in_flight,
            };
            if allowed == 0 {
                break;
            }
            let count = allowed.min(BATCH);
            for slot in 0..count {
                let query = &queries[next_query % queries.len()];
                next_query += 1;
                let id = next_id;
                next_id = next_id.wrapping_add(1);
                if sent_at[id as usize].is_some() {
                    // Its answer never came (lost); the slot is reused.
                    report.lost += 1;
                    in_flight -= 1;
                }
                out[slot][..query.len()].copy_from_slice(query);
                out[slot][..2].copy_from_slice(&id.to_be_bytes());
                out_len[slot] = query.len();
                sent_at[id as usize] = Some(Instant::now());
            }
            let sent = send_batch(fd, &mut out[..count], &out_len[..count]);
            if sent <= 0 {
                break;
            }
            in_flight += sent as usize;
            sent_total += sent as u64;
            report.sent += sent as u64;
        }
        let mut iovecs: Vec<libc::iovec> = inbox
            .iter_mut()
            .map(|buffer| libc::iovec {
                iov_base: buffer.as_mut_ptr().cast(),
                iov_len: PACKET,
            })
            .collect();
        let mut headers = headers(&mut iovecs);
        // SAFETY: the headers point at live buffers for the duration of the call.
        // Paced: never block, so the next sends go out on time.
        let wait = if rate.is_some() {
            libc::MSG_DONTWAIT
        } else {
            libc::MSG_WAITFORONE
        };
        let received = unsafe {
            libc::recvmmsg(
                fd,
                headers.as_mut_ptr(),
                BATCH as u32,
                wait,
                std::ptr::null_mut(),
            )
        };
        if received < 0 && rate.is_some() {
            // Nothing has come yet; at a fixed rate a lost answer shows when its ID comes
            // round again.
            continue;
        }
        if received <= 0 {
            // A timeout: everything in flight is lost; start the window again.
            for slot in sent_at.iter_mut() {
                if slot.take().is_some() {
                    report.lost += 1;
                }
            }
            in_flight = 0;
            continue;
        }
        let now = Instant::now();
        for (index, header) in headers.iter().take(received as usize).enumerate() {
            let length = header.msg_len as usize;
            if length < 12 {
                report.errors += 1;
                continue;
            }
            let packet = &inbox[index][..length];
            let id = u16::from_be_bytes([packet[0], packet[1]]);
            let Some(at) = sent_at[id as usize].take() else {
                continue;
            };
            in_flight -= 1;
            report.answer(packet, check, now.duration_since(at));
        }
    }
    report.print(started.elapsed().min(limit).as_secs_f64());
}

/// Sends the first `lengths[i]` bytes of each of `packets` in one sendmmsg; its result.
fn send_batch(fd: std::os::fd::RawFd, packets: &mut [[u8; PACKET]], lengths: &[usize]) -> i32 {
    let mut iovecs: Vec<libc::iovec> = packets
        .iter_mut()
        .zip(lengths)
        .map(|(packet, length)| libc::iovec {
            iov_base: packet.as_mut_ptr().cast(),
            iov_len: *length,
        })
        .collect();
    let mut headers = headers(&mut iovecs);
    // SAFETY: the headers point at live buffers for the duration of the call.
    unsafe { libc::sendmmsg(fd, headers.as_mut_ptr(), headers.len() as u32, 0) }
}

/// Sends `queries` in batches at `rate` (or flat out) until `limit`, reading nothing.
fn flood(
    fd: std::os::fd::RawFd,
    queries: &[Vec<u8>],
    rate: Option<f64>,
    started: Instant,
    limit: Duration,
    report: &mut Report,
) {
    let mut out = vec![[0u8; PACKET]; BATCH];
    let mut out_len = [0usize; BATCH];
    let mut next: usize = 0;
    while started.elapsed() < limit {
        let allowed = match rate {
            Some(rate) => ((started.elapsed().as_secs_f64() * rate) as u64)
                .saturating_sub(report.sent) as usize,
            None => BATCH,
        };
        if allowed == 0 {
            std::hint::spin_loop();
            continue;
        }
        let count = allowed.min(BATCH);
        for slot in 0..count {
            let query = &queries[next % queries.len()];
            out[slot][..query.len()].copy_from_slice(query);
            out[slot][..2].copy_from_slice(&(next as u16).to_be_bytes());
            out_len[slot] = query.len();
            next += 1;
        }
        let sent = send_batch(fd, &mut out[..count], &out_len[..count]);
        if sent > 0 {
            report.sent += sent as u64;
        }
    }
}

/// What the run measured.
#[derive(Default)]
struct Report {
    latencies: Vec<u32>,
    errors: u64,
    lost: u64,
    sent: u64,
    bytes: u64,
    truncated: u64,
    histogram: Option<std::path::PathBuf>,
}

impl Report {
    /// Counts one answer: an error unless NOERROR or NXDOMAIN (and, with `check`, unless it
    /// parses and, for A, holds a record).
    fn answer(&mut self, packet: &[u8], check: bool, latency: Duration) {
        self.bytes += packet.len() as u64;
        self.truncated += u64::from(packet[2] & 0x02 != 0);
        let rcode = packet[3] & 0x0f;
        let mut bad = rcode != 0 && rcode != 3;
        if check && !bad {
            bad = match Message::from_vec(packet) {
                Err(_) => true,
                Ok(message) => {
                    let asked_a = message
                        .queries
                        .first()
                        .is_some_and(|query| query.query_type() == RecordType::A);
                    rcode == 0
                        && asked_a
                        && message.answers.is_empty()
                        && !message.metadata.truncation
                }
            };
        }
        if bad {
            self.errors += 1;
        }
        self.latencies.push(latency.as_micros() as u32);
    }

    fn print(mut self, elapsed: f64) {
        self.latencies.sort_unstable();
        let percentile = |p: f64| -> u32 {
            if self.latencies.is_empty() {
                return 0;
            }
            self.latencies[((self.latencies.len() - 1) as f64 * p) as usize]
        };
        println!(
            "answered={} qps={:.0} p50_us={} p99_us={} errors={} lost={} sent={} bytes={} truncated={}",
            self.latencies.len(),
            self.latencies.len() as f64 / elapsed,
            percentile(0.5),
            percentile(0.99),
            self.errors,
            self.lost,
            self.sent,
            self.bytes,
            self.truncated
        );
        if let Some(path) = &self.histogram {
            let mut text = String::new();
            for run in self.latencies.chunk_by(|a, b| a == b) {
                text.push_str(&format!("{} {}\n", run[0], run.len()));
            }
            text.push_str(&format!("lost {}\n", self.lost));
            std::fs::write(path, text).expect("--histogram FILE");
        }
    }
}

/// TCP: `connections` connections; each round writes OUTSTANDING / connections framed queries
/// on every connection, then reads every answer (pipelining, RFC 7766 §6.2.1).
fn run_tcp(
    server: SocketAddr,
    queries: &[Vec<u8>],
    outstanding: usize,
    connections: usize,
    limit: Duration,
    check: bool,
    report: &mut Report,
) {
    let connect = || {
        let stream = TcpStream::connect(server).expect("connect");
        stream.set_nodelay(true).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        stream
    };
    let connections = connections.max(1);
    let per = (outstanding / connections).max(1);
    let mut streams: Vec<TcpStream> = (0..connections).map(|_| connect()).collect();
    let mut next = 0usize;
    let mut buffer = Vec::with_capacity(per * 64);
    let mut answer = vec![0u8; 65_535];
    let started = Instant::now();
    while started.elapsed() < limit {
        let mut sent = Vec::with_capacity(connections);
        for stream in &mut streams {
            buffer.clear();
            for index in 0..per {
                let query = &queries[next % queries.len()];
                next += 1;
                buffer.extend_from_slice(&(query.len() as u16).to_be_bytes());
                let at = buffer.len();
                buffer.extend_from_slice(query);
                buffer[at..at + 2].copy_from_slice(&(index as u16).to_be_bytes());
            }
            sent.push((Instant::now(), stream.write_all(&buffer).is_ok()));
        }
        for (stream, (at, written)) in streams.iter_mut().zip(sent) {
            let mut healthy = written;
            for _ in 0..per {
                if !healthy {
                    report.lost += 1;
                    continue;
                }
                let mut length = [0u8; 2];
                let read = stream.read_exact(&mut length).and_then(|()| {
                    let length = usize::from(u16::from_be_bytes(length));
                    stream.read_exact(&mut answer[..length]).map(|()| length)
                });
                match read {
                    Ok(length) if length >= 12 => {
                        report.answer(&answer[..length], check, at.elapsed())
                    }
                    Ok(_) => report.errors += 1,
                    Err(_) => {
                        report.lost += 1;
                        healthy = false;
                    }
                }
            }
            if !healthy {
                // The server closed or stalled the connection: a new one for the next round.
                *stream = connect();
            }
        }
    }
}
