//! A batched UDP DNS load generator for `bench/speed.sh`: a fixed number of queries
//! outstanding, sent and received with sendmmsg/recvmmsg, loopback only, bounded in time.
//!
//! dnsperf saturates its own core at about 100k queries/s, below what the servers can do, so
//! it cannot tell them apart by throughput; this can.
//!
//! Usage: loadgen SERVER QUERY_FILE [OUTSTANDING] [SECONDS]
//! QUERY_FILE: one query per line, "name type" with optional "do" (EDNS with DO) or "edns".
//! Prints one line: `answered=N qps=Q p50_us=A p99_us=B errors=E lost=L`.

use std::io::BufRead;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};

const BATCH: usize = 64;
const PACKET: usize = 4096;

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
    let seconds: u64 = arguments.get(4).and_then(|a| a.parse().ok()).unwrap_or(5);
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
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
    let mut latencies: Vec<u32> = Vec::with_capacity(1 << 22);
    let mut errors = 0u64;
    let mut lost = 0u64;
    let mut out = vec![[0u8; PACKET]; BATCH];
    let mut out_len = [0usize; BATCH];
    let mut inbox = vec![[0u8; PACKET]; BATCH];
    let started = Instant::now();
    let limit = Duration::from_secs(seconds);
    while started.elapsed() < limit {
        // Fill the window, a batch at a time.
        while in_flight < outstanding {
            let count = (outstanding - in_flight).min(BATCH);
            for slot in 0..count {
                let query = &queries[next_query % queries.len()];
                next_query += 1;
                let id = next_id;
                next_id = next_id.wrapping_add(1);
                if sent_at[id as usize].is_some() {
                    // Its answer never came (lost); the slot is reused.
                    lost += 1;
                    in_flight -= 1;
                }
                out[slot][..query.len()].copy_from_slice(query);
                out[slot][..2].copy_from_slice(&id.to_be_bytes());
                out_len[slot] = query.len();
                sent_at[id as usize] = Some(Instant::now());
            }
            let mut iovecs: Vec<libc::iovec> = (0..count)
                .map(|slot| libc::iovec {
                    iov_base: out[slot].as_mut_ptr().cast(),
                    iov_len: out_len[slot],
                })
                .collect();
            let mut headers = headers(&mut iovecs);
            // SAFETY: the headers point at live buffers for the duration of the call.
            let sent = unsafe { libc::sendmmsg(fd, headers.as_mut_ptr(), count as u32, 0) };
            if sent <= 0 {
                break;
            }
            in_flight += sent as usize;
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
        let received = unsafe {
            libc::recvmmsg(
                fd,
                headers.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if received <= 0 {
            // A timeout: everything in flight is lost; start the window again.
            for slot in sent_at.iter_mut() {
                if slot.take().is_some() {
                    lost += 1;
                }
            }
            in_flight = 0;
            continue;
        }
        let now = Instant::now();
        for (index, header) in headers.iter().take(received as usize).enumerate() {
            let length = header.msg_len as usize;
            if length < 12 {
                errors += 1;
                continue;
            }
            let packet = &inbox[index];
            let id = u16::from_be_bytes([packet[0], packet[1]]);
            let Some(at) = sent_at[id as usize].take() else {
                continue;
            };
            in_flight -= 1;
            let rcode = packet[3] & 0x0f;
            if rcode != 0 && rcode != 3 {
                errors += 1;
            }
            latencies.push(now.duration_since(at).as_micros() as u32);
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let percentile = |p: f64| -> u32 {
        if latencies.is_empty() {
            return 0;
        }
        latencies[((latencies.len() - 1) as f64 * p) as usize]
    };
    println!(
        "answered={} qps={:.0} p50_us={} p99_us={} errors={errors} lost={lost}",
        latencies.len(),
        latencies.len() as f64 / elapsed,
        percentile(0.5),
        percentile(0.99)
    );
}
