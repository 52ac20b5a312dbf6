//! Message-level rules over real sockets: EDNS, truncation, TCP, opcodes, classes, and
//! malformed packets.

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RecordType};

use crate::support::{query, rcode, tcp_exchange, tcp_receive, tcp_send, TestServer};

#[test]
fn edns_is_echoed_with_our_payload_size() {
    let server = TestServer::start();
    let response = server.udp("www.example.test.", RecordType::A);
    let edns = response.edns.as_ref().expect("OPT in the answer");
    assert_eq!(edns.max_payload(), 1232);
    assert_eq!(edns.version(), 0);
    assert!(!edns.flags().dnssec_ok);

    let response = server.udp_plain("www.example.test.", RecordType::A);
    assert!(response.edns.is_none(), "no OPT when the query had none");
}

#[test]
fn unknown_edns_version_gets_badvers() {
    let server = TestServer::start();
    let mut message = query("www.example.test.", RecordType::A, Some(1232));
    let mut edns = Edns::new();
    edns.set_version(1);
    message.set_edns(edns);
    let response = server.exchange_udp(&message);
    // RCODE 16 is BADVERS in an OPT answer (hickory decodes the number as BADSIG).
    assert_eq!(u16::from(rcode(&response)), 16);
    assert!(response.answers.is_empty());
    assert_eq!(response.edns.as_ref().unwrap().version(), 0);
}

#[test]
fn large_answer_truncates_over_plain_udp_and_is_complete_over_tcp() {
    let server = TestServer::start();
    // About 630 bytes: more than 512, less than 1232.
    let plain = server.udp_plain("big.example.test.", RecordType::TXT);
    assert!(plain.metadata.truncation, "TC over 512-byte UDP");
    assert!(
        plain.answers.is_empty(),
        "a truncated answer carries no partial RRset"
    );
    let edns = server.udp("big.example.test.", RecordType::TXT);
    assert!(!edns.metadata.truncation);
    assert_eq!(edns.answers.len(), 6);
    let tcp = server.tcp("big.example.test.", RecordType::TXT);
    assert!(!tcp.metadata.truncation);
    assert_eq!(tcp.answers.len(), 6);
}

#[test]
fn client_payload_smaller_than_ours_is_respected() {
    let server = TestServer::start();
    let response = server.exchange_udp(&query("big.example.test.", RecordType::TXT, Some(600)));
    assert!(response.metadata.truncation, "client said 600 bytes");
    let bytes = server
        .raw_udp(
            &query("big.example.test.", RecordType::TXT, Some(600))
                .to_vec()
                .unwrap(),
        )
        .unwrap();
    assert!(bytes.len() <= 600);
}

#[test]
fn optional_additional_records_are_dropped_without_tc() {
    let server = TestServer::start();
    // 4 MX + 20 AAAA in additional do not fit 512 bytes; the MX answer does.
    let response = server.udp_plain("manymx.example.test.", RecordType::MX);
    assert!(
        !response.metadata.truncation,
        "RFC 2181 §9: no TC for optional data"
    );
    assert_eq!(response.answers.len(), 4);
    assert!(response.additionals.len() < 20);
    let full = server.udp("manymx.example.test.", RecordType::MX);
    assert_eq!(full.additionals.len(), 20);
}

#[test]
fn tcp_connection_carries_pipelined_queries() {
    let server = TestServer::start();
    let mut stream = server.tcp_connect();
    let names = [
        "www.example.test.",
        "mail.example.test.",
        "nothing.example.test.",
    ];
    let queries: Vec<Message> = names
        .iter()
        .map(|name| query(name, RecordType::A, None))
        .collect();
    for message in &queries {
        tcp_send(&mut stream, message);
    }
    let mut ids: Vec<u16> = (0..names.len())
        .map(|_| tcp_receive(&mut stream).metadata.id)
        .collect();
    let mut expected: Vec<u16> = queries.iter().map(|m| m.metadata.id).collect();
    ids.sort();
    expected.sort();
    assert_eq!(ids, expected, "every pipelined query answered");
    // The same connection keeps working.
    let response = tcp_exchange(
        &mut stream,
        &query("www.example.test.", RecordType::A, None),
    );
    assert_eq!(response.answers.len(), 3);
}

#[test]
fn other_opcodes_get_notimp() {
    let server = TestServer::start();
    for op_code in [OpCode::Notify, OpCode::Update, OpCode::Status] {
        let mut message = query("example.test.", RecordType::SOA, None);
        message.metadata.op_code = op_code;
        let response = server.exchange_udp(&message);
        assert_eq!(rcode(&response), ResponseCode::NotImp, "{op_code:?}");
    }
}

#[test]
fn non_in_classes_are_refused() {
    let server = TestServer::start();
    for class in [DNSClass::CH, DNSClass::ANY, DNSClass::NONE, DNSClass::HS] {
        let mut message = Message::new(77, MessageType::Query, OpCode::Query);
        let mut question =
            Query::query(Name::from_ascii("version.bind.").unwrap(), RecordType::TXT);
        question.query_class = class;
        message.add_query(question);
        let response = server.exchange_udp(&message);
        assert_eq!(rcode(&response), ResponseCode::Refused, "{class:?}");
        assert!(response.answers.is_empty());
    }
}

#[test]
fn zone_transfers_are_refused_for_now() {
    let server = TestServer::start();
    for record_type in [RecordType::AXFR, RecordType::IXFR] {
        let response = server.tcp("example.test.", record_type);
        assert_eq!(rcode(&response), ResponseCode::Refused, "{record_type}");
    }
}

#[test]
fn question_count_other_than_one_is_formerr() {
    let server = TestServer::start();
    let empty = Message::new(9, MessageType::Query, OpCode::Query);
    assert_eq!(rcode(&server.exchange_udp(&empty)), ResponseCode::FormErr);

    let mut two = query("www.example.test.", RecordType::A, None);
    two.add_query(Query::query(
        Name::from_ascii("mail.example.test.").unwrap(),
        RecordType::A,
    ));
    assert_eq!(rcode(&server.exchange_udp(&two)), ResponseCode::FormErr);
}

#[test]
fn malformed_packets_never_stop_the_server() {
    let server = TestServer::start();
    let valid = query("www.example.test.", RecordType::A, None)
        .to_vec()
        .unwrap();
    let short = std::time::Duration::from_millis(200);

    // Shorter than a header: dropped.
    assert!(server.raw_udp_wait(&valid[..5], short).is_none());
    // A response (QR=1): dropped, never answered (no reflection).
    let mut response_bit = valid.clone();
    response_bit[2] |= 0x80;
    assert!(server.raw_udp_wait(&response_bit, short).is_none());
    // Header fine, question cut off: FORMERR with the same ID.
    let answer = server.raw_udp(&valid[..valid.len() - 3]).expect("FORMERR");
    assert_eq!(&answer[..2], &valid[..2]);
    assert_eq!(answer[3] & 0x0f, 1, "RCODE FORMERR");
    // A compression pointer loop in the question.
    let mut looping = valid[..12].to_vec();
    looping.extend_from_slice(&[0xc0, 0x0c, 0x00, 0x01, 0x00, 0x01]);
    let answer = server
        .raw_udp(&looping)
        .expect("FORMERR for a pointer loop");
    assert_eq!(answer[3] & 0x0f, 1);
    // Counts that claim far more records than the packet has.
    let mut lying = valid.clone();
    lying[6] = 0xff;
    lying[7] = 0xff;
    let answer = server.raw_udp(&lying).expect("FORMERR for lying counts");
    assert_eq!(answer[3] & 0x0f, 1);
    // Random garbage of many lengths (deterministic), over UDP and TCP.
    let mut state: u32 = 0x1234_5678;
    for length in 0..300usize {
        let packet: Vec<u8> = (0..length)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                state as u8
            })
            .collect();
        let _ = server.raw_udp_wait(&packet, std::time::Duration::from_millis(5));
    }
    let mut stream = server.tcp_connect();
    use std::io::Write;
    let _ = stream.write_all(&[0x00, 0x05, 0xff, 0xff, 0xff, 0xff, 0xff]);
    drop(stream);

    // Still answering, on both transports.
    let response = server.udp("www.example.test.", RecordType::A);
    assert_eq!(response.answers.len(), 3);
    let response = server.tcp("www.example.test.", RecordType::A);
    assert_eq!(response.answers.len(), 3);
}

#[test]
fn idle_tcp_connections_are_closed() {
    let fixture = crate::support::Fixture::new(
        "127.0.0.1:0",
        &[("example.test", crate::support::TEST_ZONE)],
    );
    let text = std::fs::read_to_string(&fixture.config_path).unwrap();
    let text = text.replace("[server]\n", "[server]\ntcp_idle_timeout = \"300ms\"\n");
    std::fs::write(&fixture.config_path, text).unwrap();
    let server = TestServer::from_fixture(fixture);
    let mut stream = server.tcp_connect();
    // A query first: an active connection is served.
    let response = tcp_exchange(
        &mut stream,
        &query("www.example.test.", RecordType::A, None),
    );
    assert_eq!(response.answers.len(), 3);
    // Then silence: the server closes it (read returns 0 bytes) well before our 3 s timeout.
    let start = std::time::Instant::now();
    let mut byte = [0u8; 1];
    use std::io::Read;
    let read = stream.read(&mut byte);
    assert!(
        matches!(read, Ok(0)),
        "server closed the idle connection: {read:?}"
    );
    assert!(
        start.elapsed() < std::time::Duration::from_secs(2),
        "closed after {:?}",
        start.elapsed()
    );
}

/// The UDP loop answers in batches (recvmmsg/sendmmsg): queries from several clients that
/// arrive together each get their own answer, at their own address, with their own ID. 400
/// queries queue more than one backlogged batch (64), so both batch sizes are exercised.
#[test]
fn a_burst_from_several_clients_is_answered_to_each() {
    let server = TestServer::with_zones(&[("example.test", crate::support::POOL_ZONE)]);
    let clients: Vec<std::net::UdpSocket> = (0..4)
        .map(|_| {
            let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            socket
                .set_read_timeout(Some(std::time::Duration::from_secs(2)))
                .unwrap();
            socket
        })
        .collect();
    // 4 clients x 100 queries, all sent before any answer is read.
    for round in 0..100u16 {
        for (index, client) in clients.iter().enumerate() {
            let mut message = query("www.example.test.", RecordType::TXT, None);
            message.metadata.id = round * 4 + index as u16;
            client
                .send_to(&message.to_vec().unwrap(), server.address)
                .unwrap();
        }
    }
    let mut buffer = [0u8; 1500];
    for (index, client) in clients.iter().enumerate() {
        let mut ids: Vec<u16> = (0..100)
            .map(|_| {
                let size = client.recv(&mut buffer).expect("an answer for each query");
                let answer = Message::from_vec(&buffer[..size]).unwrap();
                assert_eq!(rcode(&answer), ResponseCode::NoError);
                assert_eq!(answer.answers.len(), 1);
                answer.metadata.id
            })
            .collect();
        ids.sort_unstable();
        let expected: Vec<u16> = (0..100u16).map(|round| round * 4 + index as u16).collect();
        assert_eq!(ids, expected, "client {index} got exactly its own answers");
    }
}

/// The answer cache over a real socket: the first answer to a question comes from the general
/// path, the next ones from the cache; apart from the ID and RD they are the same bytes, and a
/// mixed-case question (never cached) gets its own case back.
#[test]
fn repeated_questions_get_the_same_bytes_from_the_cache() {
    let server = TestServer::start();
    for (name, record_type) in [
        ("mail.example.test.", RecordType::A),
        ("nothing.example.test.", RecordType::A),
        ("www.example.test.", RecordType::MX),
    ] {
        let mut answers = Vec::new();
        for (index, rd) in [true, false, true].into_iter().enumerate() {
            let mut message = query(name, record_type, Some(1232));
            message.metadata.id = 0x4000 + index as u16;
            message.metadata.recursion_desired = rd;
            let bytes = server
                .raw_udp(&message.to_vec().unwrap())
                .expect("an answer");
            assert_eq!(
                &bytes[..2],
                &message.metadata.id.to_be_bytes(),
                "ID patched"
            );
            assert_eq!(bytes[2] & 1 == 1, rd, "RD copied");
            answers.push(bytes);
        }
        for answer in &answers[1..] {
            assert_eq!(answer[2] & !1, answers[0][2] & !1, "{name}: same flags");
            assert_eq!(
                answer[3..],
                answers[0][3..],
                "{name}: same bytes after the header flags"
            );
        }
    }
    let mixed = server.udp("MaIl.ExAmPlE.tEsT.", RecordType::A);
    assert_eq!(mixed.queries[0].name().to_string(), "MaIl.ExAmPlE.tEsT.");
    assert_eq!(mixed.answers.len(), 1);
}

/// A query whose bytes arrive in two TCP segments, followed by two queries in one segment:
/// all three answered, in order.
#[test]
fn tcp_queries_split_and_joined_across_segments_are_answered_in_order() {
    use std::io::Write;
    let server = TestServer::start();
    let mut stream = server.tcp_connect();
    stream.set_nodelay(true).unwrap();
    let frame = |message: &Message| {
        let bytes = message.to_vec().unwrap();
        let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&bytes);
        framed
    };
    let queries: Vec<Message> = [
        "www.example.test.",
        "mail.example.test.",
        "nothing.example.test.",
    ]
    .iter()
    .map(|name| query(name, RecordType::A, None))
    .collect();
    let first = frame(&queries[0]);
    stream.write_all(&first[..5]).unwrap();
    // The server has read the partial query; the rest comes in a later segment.
    std::thread::sleep(std::time::Duration::from_millis(50));
    stream.write_all(&first[5..]).unwrap();
    let mut joined = frame(&queries[1]);
    joined.extend_from_slice(&frame(&queries[2]));
    stream.write_all(&joined).unwrap();
    for message in &queries {
        let answer = tcp_receive(&mut stream);
        assert_eq!(answer.metadata.id, message.metadata.id, "answered in order");
    }
}

/// Response rate limiting: a burst from one /24 gets `responses_per_second` answers, every
/// second dropped one comes back empty with TC=1 (slip = 2), and the rest get nothing; a
/// client in another /24 is answered at once, and TCP from the limited address still is.
#[test]
fn rate_limiting_cuts_one_prefix_and_spares_the_others() {
    let fixture = crate::support::Fixture::new(
        "127.0.0.1:0",
        &[("example.test", crate::support::TEST_ZONE)],
    );
    let mut text = std::fs::read_to_string(&fixture.config_path).unwrap();
    text.push_str("\n[rate_limit]\nresponses_per_second = 5\nslip = 2\n");
    std::fs::write(&fixture.config_path, text).unwrap();
    let server = TestServer::from_fixture(fixture);
    let flooder = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    flooder
        .set_read_timeout(Some(std::time::Duration::from_millis(500)))
        .unwrap();
    const SENT: u16 = 40;
    for id in 0..SENT {
        let mut message = query("www.example.test.", RecordType::A, None);
        message.metadata.id = id;
        flooder
            .send_to(&message.to_vec().unwrap(), server.address)
            .unwrap();
    }
    let (mut full, mut slipped) = (0, 0);
    let mut buffer = [0u8; 1500];
    // Read until the server has been silent for 500 ms (at most one reply per query).
    for _ in 0..SENT {
        let Ok(size) = flooder.recv(&mut buffer) else {
            break;
        };
        let answer = Message::from_vec(&buffer[..size]).unwrap();
        if answer.metadata.truncation {
            assert!(answer.answers.is_empty() && answer.queries.len() == 1);
            slipped += 1;
        } else {
            assert_eq!(answer.answers.len(), 3);
            full += 1;
        }
    }
    let dropped = usize::from(SENT) - full - slipped;
    // 5 at once, plus what the bucket earns (5/s) while a loaded machine works through the
    // burst.
    assert!(
        (5..=9).contains(&full),
        "{full} full answers for a limit of 5/s"
    );
    assert!(
        slipped.abs_diff(dropped) <= 1,
        "every second response over the limit slips: {slipped} slipped, {dropped} dropped"
    );
    // Another /24 is not limited.
    let other = std::net::UdpSocket::bind("127.0.1.1:0").unwrap();
    other
        .set_read_timeout(Some(std::time::Duration::from_secs(2)))
        .unwrap();
    other
        .send_to(
            &query("www.example.test.", RecordType::A, None)
                .to_vec()
                .unwrap(),
            server.address,
        )
        .unwrap();
    let size = other.recv(&mut buffer).expect("another prefix is answered");
    let answer = Message::from_vec(&buffer[..size]).unwrap();
    assert!(!answer.metadata.truncation && answer.answers.len() == 3);
    // TCP is never limited.
    let mut stream = server.tcp_connect();
    let answer = tcp_exchange(
        &mut stream,
        &query("www.example.test.", RecordType::A, None),
    );
    assert_eq!(answer.answers.len(), 3);
}

fn connect_from(server: &TestServer, source: &str) -> std::net::TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&std::net::SocketAddr::new(source.parse().unwrap(), 0).into())
        .unwrap();
    socket.connect(&server.address.into()).unwrap();
    let stream: std::net::TcpStream = socket.into();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    stream
}

/// One prefix cannot hold every TCP slot: its connections past the limit are closed at once,
/// while another prefix still gets in and is answered.
#[test]
fn tcp_connections_are_limited_per_prefix() {
    use std::io::Read;
    let server = TestServer::start();
    let mut held: Vec<std::net::TcpStream> = (0..healthdns::dns::server::MAX_TCP_PER_PREFIX)
        .map(|_| connect_from(&server, "127.0.0.1"))
        .collect();
    // The last held connection is served (the server has accepted them all).
    let last = held.last_mut().unwrap();
    let answer = tcp_exchange(last, &query("www.example.test.", RecordType::A, None));
    assert_eq!(answer.answers.len(), 3);
    let mut extra = connect_from(&server, "127.0.0.2");
    let mut byte = [0u8; 1];
    assert!(
        matches!(extra.read(&mut byte), Ok(0) | Err(_)),
        "a connection past the prefix's limit is closed"
    );
    let mut other = connect_from(&server, "127.0.1.1");
    let answer = tcp_exchange(&mut other, &query("www.example.test.", RecordType::A, None));
    assert_eq!(answer.answers.len(), 3, "another prefix is served");
    drop(held);
}

/// A connection answers at most MAX_TCP_QUERIES queries, then closes once they are written.
#[test]
fn a_tcp_connection_carries_a_bounded_number_of_queries() {
    use std::io::{Read, Write};
    let server = TestServer::start();
    let mut stream = server.tcp_connect();
    let limit = healthdns::dns::server::MAX_TCP_QUERIES;
    let frame = {
        let bytes = query("www.example.test.", RecordType::A, None)
            .to_vec()
            .unwrap();
        let mut frame = (bytes.len() as u16).to_be_bytes().to_vec();
        frame.extend_from_slice(&bytes);
        frame
    };
    // The queries go out from another thread while this one reads, so neither side blocks.
    let mut writer = stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        for _ in 0..limit + 5 {
            if writer.write_all(&frame).is_err() {
                break;
            }
        }
    });
    let mut answered = 0;
    loop {
        let mut length = [0u8; 2];
        if stream.read_exact(&mut length).is_err() {
            break;
        }
        let mut message = vec![0u8; usize::from(u16::from_be_bytes(length))];
        stream.read_exact(&mut message).unwrap();
        answered += 1;
    }
    sender.join().unwrap();
    assert_eq!(
        answered, limit,
        "every query up to the limit answered, then closed"
    );
}

/// The UDP sockets keep the receive buffer `[server] udp_receive_buffer` asks for, as `ss`
/// reports it (the kernel keeps twice the size, half for its bookkeeping), even above
/// net.core.rmem_max: as root, SO_RCVBUFFORCE. The buffer is what holds queries while the
/// server is briefly behind (bench/speed.sh: latency at 80% load).
#[test]
fn udp_sockets_keep_the_configured_receive_buffer() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test asks for a receive buffer above net.core.rmem_max, which needs root (CAP_NET_ADMIN); run the suite as root (CI does)"
    );
    let ss = crate::support::require_tool("ss", "iproute2");
    let rmem_max: usize = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let asked = (rmem_max + (1 << 20)).next_multiple_of(4096);
    let fixture = crate::support::Fixture::custom(
        "127.0.0.1:0",
        &[("example.test", crate::support::TEST_ZONE)],
        &format!("udp_receive_buffer = {asked}"),
        "",
        "",
    );
    let server = TestServer::from_fixture(fixture);
    let port = server.address.port();
    let output = std::process::Command::new(ss)
        .args(["-u", "-a", "-n", "-m", &format!("sport = :{port}")])
        .output()
        .expect("run ss");
    let text = String::from_utf8_lossy(&output.stdout);
    let buffers: Vec<usize> = text
        .split(|c: char| c == ',' || c == '(' || c.is_whitespace())
        .filter_map(|field| field.strip_prefix("rb"))
        .filter_map(|value| value.parse().ok())
        .collect();
    // Both UDP sockets of the fixture.
    assert_eq!(buffers, vec![2 * asked, 2 * asked], "ss printed:\n{text}");
}
