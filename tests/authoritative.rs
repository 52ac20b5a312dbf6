//! Authoritative answering rules, asked over real UDP (and TCP where the transport matters).

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::support::{addresses, rcode, texts, TestServer};

#[test]
fn positive_answer_is_authoritative_without_recursion() {
    let server = TestServer::start();
    let response = server.udp("www.example.test.", RecordType::A);
    assert_eq!(rcode(&response), ResponseCode::NoError);
    assert!(response.metadata.authoritative, "AA set");
    assert!(!response.metadata.recursion_available, "RA never set");
    assert!(response.metadata.recursion_desired, "RD copied");
    assert_eq!(
        addresses(&response),
        vec!["192.0.2.10", "192.0.2.11", "192.0.2.12"]
    );
    assert!(response.authorities.is_empty());
}

#[test]
fn rd_clear_is_copied() {
    let server = TestServer::start();
    let mut query = crate::support::query("www.example.test.", RecordType::A, Some(1232));
    query.metadata.recursion_desired = false;
    let response = server.exchange_udp(&query);
    assert!(!response.metadata.recursion_desired);
}

#[test]
fn nxdomain_carries_soa_with_negative_ttl() {
    let server = TestServer::start();
    let response = server.udp("nothing.example.test.", RecordType::A);
    assert_eq!(rcode(&response), ResponseCode::NXDomain);
    assert!(response.metadata.authoritative);
    assert!(response.answers.is_empty());
    assert_eq!(response.authorities.len(), 1);
    let soa = &response.authorities[0];
    assert_eq!(soa.record_type(), RecordType::SOA);
    assert_eq!(soa.name.to_string(), "example.test.");
    assert_eq!(soa.ttl, 60, "min(SOA TTL 300, MINIMUM 60)");
}

#[test]
fn nodata_is_noerror_with_soa() {
    let server = TestServer::start();
    let response = server.udp("mail.example.test.", RecordType::AAAA);
    assert_eq!(rcode(&response), ResponseCode::NoError);
    assert!(response.metadata.authoritative);
    assert!(response.answers.is_empty());
    assert_eq!(texts(&response.authorities).len(), 1);
    assert_eq!(response.authorities[0].record_type(), RecordType::SOA);
}

#[test]
fn empty_non_terminal_is_nodata_not_nxdomain() {
    let server = TestServer::start();
    for name in ["a.deep.example.test.", "deep.example.test."] {
        let response = server.udp(name, RecordType::TXT);
        assert_eq!(rcode(&response), ResponseCode::NoError, "{name}");
        assert!(response.answers.is_empty(), "{name}");
        assert_eq!(response.authorities[0].record_type(), RecordType::SOA);
    }
}

#[test]
fn names_outside_served_zones_are_refused() {
    let server = TestServer::start();
    for name in ["www.example.org.", "test.", "."] {
        let response = server.udp(name, RecordType::A);
        assert_eq!(rcode(&response), ResponseCode::Refused, "{name}");
        assert!(!response.metadata.authoritative);
        assert!(response.answers.is_empty() && response.authorities.is_empty());
    }
}

#[test]
fn delegation_gives_referral_with_glue_and_no_aa() {
    let server = TestServer::start();
    for name in [
        "sub.example.test.",
        "www.sub.example.test.",
        "deep.sub.example.test.",
    ] {
        let response = server.udp(name, RecordType::A);
        assert_eq!(rcode(&response), ResponseCode::NoError, "{name}");
        assert!(
            !response.metadata.authoritative,
            "{name}: referral has AA=0"
        );
        assert!(response.answers.is_empty(), "{name}: glue is not an answer");
        let mut authority = texts(&response.authorities);
        authority.sort();
        assert_eq!(
            authority,
            vec![
                "sub.example.test. NS ns.elsewhere.example.org.",
                "sub.example.test. NS ns.sub.example.test.",
            ],
            "{name}"
        );
        let glue: Vec<_> = texts(&response.additionals);
        assert_eq!(glue, vec!["ns.sub.example.test. A 192.0.2.60"], "{name}");
    }
    // NS at the cut is a referral too.
    let response = server.udp("sub.example.test.", RecordType::NS);
    assert!(!response.metadata.authoritative);
    assert!(response.answers.is_empty());
}

#[test]
fn ds_at_the_cut_is_answered_from_the_parent() {
    let server = TestServer::start();
    let response = server.udp("sub.example.test.", RecordType::DS);
    assert!(response.metadata.authoritative);
    assert_eq!(response.answers.len(), 1);
    assert_eq!(response.answers[0].record_type(), RecordType::DS);

    let response = server.udp("nods.example.test.", RecordType::DS);
    assert!(
        response.metadata.authoritative,
        "no DS: authoritative NODATA"
    );
    assert_eq!(rcode(&response), ResponseCode::NoError);
    assert!(response.answers.is_empty());
    assert_eq!(response.authorities[0].record_type(), RecordType::SOA);
}

#[test]
fn cname_chain_is_followed_inside_the_zone() {
    let server = TestServer::start();
    let response = server.udp("alias.example.test.", RecordType::A);
    assert!(response.metadata.authoritative);
    let answer = texts(&response.answers);
    assert_eq!(answer[0], "alias.example.test. CNAME alias2.example.test.");
    assert_eq!(answer[1], "alias2.example.test. CNAME www.example.test.");
    assert_eq!(answer.len(), 5, "{answer:?}");

    // Asking for the CNAME itself returns only it.
    let response = server.udp("alias.example.test.", RecordType::CNAME);
    assert_eq!(texts(&response.answers).len(), 1);
}

#[test]
fn cname_to_missing_name_is_nxdomain_with_the_cname() {
    let server = TestServer::start();
    let response = server.udp("dangling.example.test.", RecordType::A);
    assert_eq!(rcode(&response), ResponseCode::NXDomain, "RFC 6604");
    assert_eq!(
        texts(&response.answers),
        vec!["dangling.example.test. CNAME missing.example.test."]
    );
    assert_eq!(response.authorities[0].record_type(), RecordType::SOA);
}

#[test]
fn cname_out_of_zone_and_loops_stop() {
    let server = TestServer::start();
    let response = server.udp("outside.example.test.", RecordType::A);
    assert_eq!(rcode(&response), ResponseCode::NoError);
    assert_eq!(texts(&response.answers).len(), 1);

    let response = server.udp("loop1.example.test.", RecordType::A);
    assert_eq!(rcode(&response), ResponseCode::NoError);
    assert_eq!(
        texts(&response.answers).len(),
        healthdns::dns::answer::MAX_CHAIN
    );
}

#[test]
fn wildcard_synthesizes_with_the_query_name() {
    let server = TestServer::start();
    let response = server.udp("anything.apps.example.test.", RecordType::A);
    assert!(response.metadata.authoritative);
    assert_eq!(
        texts(&response.answers),
        vec!["anything.apps.example.test. A 192.0.2.80"]
    );
    // Deeper names match too (RFC 4592 §2.2.1: the closest encloser is apps).
    let response = server.udp("a.b.apps.example.test.", RecordType::TXT);
    assert_eq!(
        texts(&response.answers),
        vec!["a.b.apps.example.test. TXT wild"]
    );
}

#[test]
fn wildcard_nodata_is_noerror_with_soa() {
    let server = TestServer::start();
    let response = server.udp("anything.apps.example.test.", RecordType::MX);
    assert_eq!(rcode(&response), ResponseCode::NoError);
    assert!(response.answers.is_empty());
    assert_eq!(response.authorities[0].record_type(), RecordType::SOA);
}

#[test]
fn wildcard_does_not_cover_existing_names_or_empty_non_terminals() {
    let server = TestServer::start();
    let response = server.udp("exists.apps.example.test.", RecordType::A);
    assert_eq!(rcode(&response), ResponseCode::NoError);
    assert!(
        response.answers.is_empty(),
        "existing name: NODATA, no wildcard"
    );

    let response = server.udp("ent.apps.example.test.", RecordType::A);
    assert_eq!(rcode(&response), ResponseCode::NoError);
    assert!(response.answers.is_empty(), "empty non-terminal: NODATA");

    // Below an existing name, the wildcard does not apply (closest encloser is not apps).
    let response = server.udp("y.ent.apps.example.test.", RecordType::A);
    assert_eq!(rcode(&response), ResponseCode::NXDomain);
}

#[test]
fn additional_section_has_target_addresses() {
    let server = TestServer::start();
    let response = server.udp("example.test.", RecordType::MX);
    assert_eq!(
        texts(&response.answers),
        vec!["example.test. MX 10 mail.example.test."]
    );
    assert_eq!(
        texts(&response.additionals),
        vec!["mail.example.test. A 192.0.2.25"]
    );

    let response = server.udp("example.test.", RecordType::NS);
    let mut additional = texts(&response.additionals);
    additional.sort();
    assert_eq!(
        additional,
        vec![
            "ns1.example.test. A 192.0.2.53",
            "ns2.example.test. AAAA 2001:db8::53"
        ]
    );

    let response = server.udp("_sip._udp.example.test.", RecordType::SRV);
    assert_eq!(
        texts(&response.additionals),
        vec!["mail.example.test. A 192.0.2.25"]
    );
}

#[test]
fn question_case_is_echoed_exactly() {
    let server = TestServer::start();
    let response = server.udp("WwW.eXaMpLe.TeSt.", RecordType::A);
    assert_eq!(response.queries[0].name.to_string(), "WwW.eXaMpLe.TeSt.");
    assert_eq!(addresses(&response).len(), 3);
    // And for synthesized wildcard owners the query's case is kept.
    let response = server.udp("MiXeD.apps.example.test.", RecordType::A);
    assert_eq!(
        response.answers[0].name.to_string(),
        "MiXeD.apps.example.test."
    );
}

#[test]
fn any_gets_one_rrset() {
    let server = TestServer::start();
    let response = server.udp("www.example.test.", RecordType::ANY);
    assert!(response.metadata.authoritative);
    let types: std::collections::BTreeSet<_> =
        response.answers.iter().map(|r| r.record_type()).collect();
    assert_eq!(types.len(), 1, "RFC 8482: one RRset, got {types:?}");
    let response = server.udp("nothing.example.test.", RecordType::ANY);
    assert_eq!(rcode(&response), ResponseCode::NXDomain);
}

#[test]
fn a_records_rotate_between_answers() {
    let server = TestServer::start();
    let mut firsts = std::collections::BTreeSet::new();
    for _ in 0..12 {
        let response = server.udp("www.example.test.", RecordType::A);
        assert_eq!(addresses(&response).len(), 3, "rotation keeps every record");
        firsts.insert(response.answers[0].data.to_string());
    }
    assert_eq!(
        firsts.len(),
        3,
        "each address comes first in turn: {firsts:?}"
    );
}

#[test]
fn the_most_specific_served_zone_answers() {
    let child = "$TTL 60\n@ SOA ns h 7 1 1 1 1\n@ NS ns\nns A 192.0.2.99\nwww A 192.0.2.98\n";
    let server = TestServer::with_zones(&[
        ("example.test", crate::support::TEST_ZONE),
        ("sub.example.test", child),
    ]);
    let response = server.udp("www.sub.example.test.", RecordType::A);
    assert!(
        response.metadata.authoritative,
        "served from the child zone"
    );
    assert_eq!(addresses(&response), vec!["192.0.2.98"]);
    // DS at the child apex comes from the parent (RFC 4035 §3.1.4.1).
    let response = server.udp("sub.example.test.", RecordType::DS);
    assert_eq!(response.answers[0].record_type(), RecordType::DS);
    // SOA of the child (serial 7), not the parent's delegation.
    let response = server.udp("sub.example.test.", RecordType::SOA);
    assert!(response.metadata.authoritative);
    match &response.answers[0].data {
        hickory_proto::rr::RData::SOA(soa) => assert_eq!(soa.serial, 7),
        other => panic!("expected the child's SOA, got {other}"),
    }
}

#[test]
fn ipv6_listen_address_is_served() {
    let server = TestServer::with_listen("[::1]:0", &[("example.test", crate::support::TEST_ZONE)]);
    assert!(server.address.is_ipv6());
    let response = server.udp("www.example.test.", RecordType::AAAA);
    assert_eq!(addresses(&response), vec!["2001:db8::10"]);
    let response = server.tcp("www.example.test.", RecordType::AAAA);
    assert_eq!(addresses(&response), vec!["2001:db8::10"]);
    let answer = crate::support::dig(server.address, &["www.example.test", "AAAA", "+short"]);
    assert_eq!(answer.trim(), "2001:db8::10");
}

#[test]
fn a_swapped_snapshot_is_answered_from_the_next_query_on() {
    let origin = hickory_proto::rr::Name::from_ascii("example.test.").unwrap();
    let parse = |text: &str| {
        healthdns::zone::zonefile::parse_zone(text, std::path::Path::new("t.zone"), &origin)
            .unwrap()
    };
    let server = crate::support::SwapServer::start(healthdns::zone::snapshot::Snapshot::build(
        &[parse(crate::support::TEST_ZONE)],
        &Default::default(),
    ));
    let ask = || {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        let query = crate::support::query("www.example.test.", RecordType::A, None);
        socket
            .send_to(&query.to_vec().unwrap(), server.address)
            .unwrap();
        let mut buffer = [0u8; 1500];
        let length = socket.recv(&mut buffer).unwrap();
        hickory_proto::op::Message::from_vec(&buffer[..length]).unwrap()
    };
    assert_eq!(addresses(&ask()).len(), 3);
    let replacement = crate::support::TEST_ZONE
        .replace("www         A     192.0.2.10\n            A     192.0.2.11\n            A     192.0.2.12\n", "www         A     192.0.2.99\n");
    assert_ne!(replacement, crate::support::TEST_ZONE);
    let zone = parse(&replacement);
    // Queries keep flowing on other threads while the writer swaps.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Each reader has an answer before the swap starts (the threads may start late).
    let first_answers = std::sync::Arc::new(std::sync::Barrier::new(3));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            let first_answers = first_answers.clone();
            let address = server.address;
            std::thread::spawn(move || {
                let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
                socket
                    .set_read_timeout(Some(std::time::Duration::from_secs(2)))
                    .unwrap();
                let query = crate::support::query("www.example.test.", RecordType::A, None)
                    .to_vec()
                    .unwrap();
                let mut buffer = [0u8; 1500];
                let mut answered = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && answered < 5000 {
                    socket.send_to(&query, address).unwrap();
                    socket
                        .recv(&mut buffer)
                        .expect("every query is answered during swaps");
                    answered += 1;
                    if answered == 1 {
                        first_answers.wait();
                    }
                }
                answered
            })
        })
        .collect();
    first_answers.wait();
    server.writer.store(std::sync::Arc::new(
        healthdns::zone::snapshot::Snapshot::build(&[zone], &Default::default()),
    ));
    assert_eq!(addresses(&ask()), vec!["192.0.2.99"]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for reader in readers {
        assert!(reader.join().unwrap() > 0);
    }
}

/// `[server] identity` answers `id.server` and `hostname.bind` CH TXT, and `nsid` is sent to
/// queries that ask for it (RFC 5001), as NSD and Knot do; both are off by default.
#[test]
fn identity_and_nsid_answer_which_server_this_is() {
    use crate::support::{dig, Fixture, POOL_ZONE};
    let server = TestServer::from_fixture(Fixture::custom(
        "127.0.0.1:0",
        &[("example.test", POOL_ZONE)],
        "identity = \"ns1.example\"\nnsid = \"ns1-fra\"",
        "",
        "",
    ));
    for name in ["id.server", "hostname.bind", "ID.SERVER"] {
        let answer = dig(server.address, &["+short", name, "CH", "TXT"]);
        assert_eq!(answer.trim(), "\"ns1.example\"", "{name}");
    }
    let other = dig(server.address, &["version.bind", "CH", "TXT"]);
    assert!(other.contains("status: REFUSED"), "{other}");
    let nsid = dig(server.address, &["+nsid", "www.example.test", "A"]);
    assert!(
        nsid.contains("NSID: 6e 73 31 2d 66 72 61 (\"ns1-fra\")"),
        "{nsid}"
    );
    let without = dig(server.address, &["www.example.test", "A"]);
    assert!(!without.contains("NSID"), "only when asked: {without}");

    // Off by default.
    let plain = TestServer::with_zones(&[("example.test", POOL_ZONE)]);
    let refused = dig(plain.address, &["id.server", "CH", "TXT"]);
    assert!(refused.contains("status: REFUSED"), "{refused}");
    let nsid = dig(plain.address, &["+nsid", "www.example.test", "A"]);
    assert!(!nsid.contains("NSID:"), "{nsid}");
}
