//! ICMP health checks against real hosts: network namespaces joined to this one by veth
//! pairs, on TEST-NET addresses (198.51.100.0/24, 2001:db8::/32). Taking a namespace's link
//! down must remove its address from the answers; bringing it up must restore it.
//! Needs root (CAP_NET_ADMIN for namespaces, CAP_NET_RAW or ping_group_range for ICMP) and
//! iproute2; without them the test fails and says so.

use std::time::Duration;

use hickory_proto::rr::RecordType;

use crate::support::netns::Host;
use crate::support::{addresses, wait_until, Fixture, TestServer};

const ZONE: &str = "$TTL 300
@      SOA ns1 hostmaster 1 3600 600 86400 60
       NS  ns1
ns1    A   192.0.2.53
";

fn sorted(mut list: Vec<String>) -> Vec<String> {
    list.sort();
    list
}

#[test]
fn a_host_whose_link_goes_down_leaves_the_answers_and_comes_back() {
    let first = Host::create(
        "a",
        ("198.51.100.1", "198.51.100.2"),
        ("2001:db8:64:a::1", "2001:db8:64:a::2"),
    );
    let second = Host::create(
        "b",
        ("198.51.100.5", "198.51.100.6"),
        ("2001:db8:64:b::1", "2001:db8:64:b::2"),
    );
    let pool = r#"
[[pool]]
name = "edge"
names = ["www.example.test"]
addresses = ["198.51.100.2", "198.51.100.6", "2001:db8:64:a::2", "2001:db8:64:b::2"]
[[pool.check]]
kind = "icmp"
interval = "200ms"
timeout = "200ms"
fall = 2
rise = 2
"#;
    // The veth links come up asynchronously: start probing once both answer pings.
    let both_v4 = vec!["198.51.100.2".to_string(), "198.51.100.6".to_string()];
    let both_v6 = vec![
        "2001:db8:64:a::2".to_string(),
        "2001:db8:64:b::2".to_string(),
    ];
    let mut server = None;
    let ready = wait_until(Duration::from_secs(10), || {
        let candidate = TestServer::from_fixture(Fixture::with_pools(
            "127.0.0.1:0",
            &[("example.test", ZONE)],
            pool,
        ));
        let up = sorted(addresses(
            &candidate.udp("www.example.test.", RecordType::A),
        )) == both_v4
            && sorted(addresses(
                &candidate.udp("www.example.test.", RecordType::AAAA),
            )) == both_v6;
        server = Some(candidate);
        up
    });
    let server = server.unwrap();
    assert!(ready, "the namespaced hosts answer pings");
    let a =
        |server: &TestServer| sorted(addresses(&server.udp("www.example.test.", RecordType::A)));
    let aaaa = |server: &TestServer| {
        sorted(addresses(
            &server.udp("www.example.test.", RecordType::AAAA),
        ))
    };

    first.set_link(false);
    assert!(
        wait_until(Duration::from_secs(5), || a(&server) == ["198.51.100.6"]
            && aaaa(&server) == ["2001:db8:64:b::2"]),
        "the unreachable host leaves both A and AAAA answers"
    );
    first.set_link(true);
    assert!(
        wait_until(Duration::from_secs(10), || a(&server) == both_v4
            && aaaa(&server) == both_v6),
        "the host comes back when its link is up"
    );
    drop(second);
}
