//! The same zone served by NSD and by healthdns, asked the same questions: the answers
//! must agree in RCODE, AA, TC, the answer and authority sections, and the additional section
//! of referrals and NS answers.
//!
//! The zone adds RFC 3597 records (`TYPE65280 \# ...`, and `TYPE1 \# 4 ...` which is an A
//! record) to the usual test zone, and every question is also asked with DO set, which both
//! must copy into the response (RFC 3225 §3), truncated answers included.
//!
//! Known, deliberate differences (NSD runs with `minimal-responses: yes`, like Knot):
//! - healthdns adds in-zone addresses of MX and SRV targets; minimal NSD does not.
//! - NSD writes answer owners as a pointer to the question, so they take the query's case;
//!   healthdns echoes the question exactly and writes owners as in the zone. Names are
//!   compared without case.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::op::Message;
use hickory_proto::rr::RecordType;

use crate::support::{
    free_port, query, require_tool, texts, wait_until, Process, TestServer, TEST_ZONE,
};

/// NSD serving `TEST_ZONE` on a free loopback port, in its own folder.
struct Nsd {
    address: SocketAddr,
    _process: Process,
    _folder: tempfile::TempDir,
}

/// The test zone plus RFC 3597 records: an unknown type, and an A record in generic form.
fn compared_zone() -> String {
    format!(
        "{TEST_ZONE}unk         IN TYPE65280 \\# 4 0A000001\ngeneric     TYPE1 \\# 4 C0000201\nplain       A     192.0.2.1\n"
    )
}

impl Nsd {
    fn start(zone: &str) -> Self {
        let nsd = require_tool("nsd", "nsd");
        let folder = tempfile::tempdir().unwrap();
        let port = free_port();
        let dir = folder.path().display().to_string();
        std::fs::write(folder.path().join("example.test.zone"), zone).unwrap();
        std::fs::write(
            folder.path().join("nsd.conf"),
            format!(
                "server:\n  ip-address: 127.0.0.1@{port}\n  server-count: 1\n  username: \"\"\n  chroot: \"\"\n  zonesdir: \"{dir}\"\n  pidfile: \"{dir}/nsd.pid\"\n  database: \"\"\n  xfrdfile: \"{dir}/xfrd.state\"\n  zonelistfile: \"{dir}/zone.list\"\n  logfile: \"{dir}/nsd.log\"\n  rrl-ratelimit: 0\n  minimal-responses: yes\nremote-control:\n  control-enable: no\nzone:\n  name: example.test\n  zonefile: example.test.zone\n"
            ),
        )
        .unwrap();
        let process = Process::spawn(
            std::process::Command::new(nsd)
                .arg("-d")
                .arg("-c")
                .arg(folder.path().join("nsd.conf")),
        );
        let mut process = process;
        let address: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        // Ready when it answers a name only this zone has: another test's server that took
        // the port first would not.
        let ready = wait_until(Duration::from_secs(20), || {
            exchange(
                address,
                &query("unk.example.test.", RecordType::Unknown(65280), None),
            )
            .is_some_and(|answer| answer.answers.len() == 1)
        });
        let log = std::fs::read_to_string(folder.path().join("nsd.log")).unwrap_or_default();
        assert!(ready, "NSD did not start: {log}");
        assert!(
            process.child.try_wait().unwrap().is_none(),
            "NSD exited (port {port} taken?): {log}"
        );
        Self {
            address,
            _process: process,
            _folder: folder,
        }
    }
}

fn exchange(address: SocketAddr, message: &Message) -> Option<Message> {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    socket.send_to(&message.to_vec().unwrap(), address).unwrap();
    let mut buffer = vec![0u8; 65_535];
    let length = socket.recv(&mut buffer).ok()?;
    Message::from_vec(&buffer[..length]).ok()
}

/// What must agree: header bits and sections, order- and case-insensitive.
fn summary(message: &Message, record_type: RecordType) -> String {
    let sorted = |records: &[hickory_proto::rr::Record]| {
        let mut lines: Vec<String> = texts(records)
            .iter()
            .map(|line| line.to_lowercase())
            .collect();
        lines.sort();
        lines.join(" | ")
    };
    let referral = !message.metadata.authoritative && !message.authorities.is_empty();
    let additional = if referral || record_type == RecordType::NS {
        sorted(&message.additionals)
    } else {
        "(not compared)".to_string()
    };
    let dnssec_ok = message.edns.as_ref().map(|edns| edns.flags().dnssec_ok);
    format!(
        "rcode={} aa={} tc={} do={dnssec_ok:?}\n  answer: {}\n  authority: {}\n  additional: {}",
        message.metadata.response_code,
        message.metadata.authoritative,
        message.metadata.truncation,
        sorted(&message.answers),
        sorted(&message.authorities),
        additional,
    )
}

#[test]
fn answers_match_nsd_on_the_same_zone() {
    let zone = compared_zone();
    let nsd = Nsd::start(&zone);
    let server = TestServer::with_zones(&[("example.test", &zone)]);
    let questions: &[(&str, RecordType)] = &[
        ("www.example.test.", RecordType::A),
        ("www.example.test.", RecordType::AAAA),
        ("www.example.test.", RecordType::MX),
        ("WwW.ExAmple.TEST.", RecordType::A),
        ("nothing.example.test.", RecordType::A),
        ("a.deep.example.test.", RecordType::TXT),
        ("x.a.deep.example.test.", RecordType::TXT),
        ("example.test.", RecordType::SOA),
        ("example.test.", RecordType::NS),
        ("example.test.", RecordType::MX),
        ("mail.example.test.", RecordType::AAAA),
        ("alias.example.test.", RecordType::A),
        ("alias.example.test.", RecordType::CNAME),
        ("dangling.example.test.", RecordType::A),
        ("outside.example.test.", RecordType::A),
        ("anything.apps.example.test.", RecordType::A),
        ("a.b.apps.example.test.", RecordType::TXT),
        ("anything.apps.example.test.", RecordType::MX),
        ("exists.apps.example.test.", RecordType::A),
        ("ent.apps.example.test.", RecordType::A),
        ("y.ent.apps.example.test.", RecordType::A),
        ("_sip._udp.example.test.", RecordType::SRV),
        ("sub.example.test.", RecordType::A),
        ("www.sub.example.test.", RecordType::A),
        ("ns.sub.example.test.", RecordType::A),
        ("sub.example.test.", RecordType::NS),
        ("sub.example.test.", RecordType::DS),
        ("nods.example.test.", RecordType::DS),
        ("big.example.test.", RecordType::TXT),
        ("unk.example.test.", RecordType::Unknown(65280)),
        ("unk.example.test.", RecordType::A),
        ("generic.example.test.", RecordType::A),
        ("plain.example.test.", RecordType::A),
    ];
    let mut differences = Vec::new();
    for &(name, record_type) in questions {
        for (payload, dnssec_ok) in [
            (None, false),
            (Some(1232), false),
            (Some(1232), true),
            (Some(512), true),
        ] {
            let mut message = query(name, record_type, payload);
            if let Some(edns) = message.edns.as_mut() {
                edns.set_dnssec_ok(dnssec_ok);
            }
            let ours = server.exchange_udp(&message);
            let theirs = exchange(nsd.address, &message).expect("NSD answers");
            let (ours, theirs) = (summary(&ours, record_type), summary(&theirs, record_type));
            if ours != theirs {
                differences.push(format!(
                    "{name} {record_type} edns={payload:?} do={dnssec_ok}\n healthdns {ours}\n nsd       {theirs}"
                ));
            }
        }
    }
    assert!(differences.is_empty(), "{}", differences.join("\n\n"));
}

/// The RFC 3597 forms load as the records they stand for: `TYPE1 \# 4 C0000201` is exactly
/// `A 192.0.2.1`, and an unknown type is served as its bytes.
#[test]
fn rfc_3597_records_are_served_as_written() {
    let server = TestServer::with_zones(&[("example.test", &compared_zone())]);
    let generic = server.udp("generic.example.test.", RecordType::A);
    let plain = server.udp("plain.example.test.", RecordType::A);
    assert_eq!(crate::support::addresses(&generic), vec!["192.0.2.1"]);
    assert_eq!(
        generic.answers[0].data, plain.answers[0].data,
        "TYPE1 \\# equals A"
    );
    let unknown = server.udp("unk.example.test.", RecordType::Unknown(65280));
    assert_eq!(unknown.answers.len(), 1);
    let mut bytes = Vec::new();
    let mut encoder = hickory_proto::serialize::binary::BinEncoder::new(&mut bytes);
    hickory_proto::serialize::binary::BinEncodable::emit(&unknown.answers[0].data, &mut encoder)
        .unwrap();
    assert_eq!(bytes, [0x0a, 0, 0, 1]);
}
