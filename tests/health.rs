//! Health-checked answers end to end: real HTTP backends on loopback, the real server probing
//! them, and answers read over UDP.

use std::net::IpAddr;
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use sha2::{Digest, Sha256};

use healthdns::config::{CheckConfig, CheckKind, HttpCheck};
use healthdns::health::probe::{Check, Probers};
use healthdns::health::Target;

use crate::support::backend::{backends, Behaviour, HEALTHY_BODY};
use crate::support::{
    addresses, rcode, wait_until, Fixture, TestServer, CHANGE, POOL_ZONE as ZONE,
};

fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// A server for `example.test` with `pools` in its config.
fn server(pools: &str) -> TestServer {
    TestServer::from_fixture(Fixture::with_pools(
        "127.0.0.1:0",
        &[("example.test", ZONE)],
        pools,
    ))
}

fn sorted(mut list: Vec<String>) -> Vec<String> {
    list.sort();
    list
}

fn answer(server: &TestServer, name: &str) -> Vec<String> {
    sorted(addresses(&server.udp(name, RecordType::A)))
}

fn prefix_addresses(prefix: &str, hosts: &[u8]) -> Vec<String> {
    hosts
        .iter()
        .map(|host| format!("{prefix}.{host}"))
        .collect()
}

/// A pool on `names` over `prefix.1..=count`, with one fast HTTP check and `extra` keys.
fn http_pool(names: &str, prefix: &str, count: u8, port: u16, extra: &str, check: &str) -> String {
    let addresses: Vec<String> = prefix_addresses(prefix, &(1..=count).collect::<Vec<_>>())
        .iter()
        .map(|address| format!("\"{address}\""))
        .collect();
    format!(
        "[[pool]]\nname = \"web\"\nnames = [{names}]\naddresses = [{}]\n{extra}\n\
         [[pool.check]]\nkind = \"http\"\nurl = \"http://{{address}}:{port}/health\"\n\
         interval = \"100ms\"\ntimeout = \"100ms\"\nfall = 2\nrise = 2\n{check}\n",
        addresses.join(", ")
    )
}

#[test]
fn a_killed_backend_leaves_the_answer_and_comes_back_after_rise() {
    let prefix = "127.61.0";
    let (port, mut backends) = backends(prefix, vec![Behaviour::Healthy; 3]);
    let server = server(&http_pool("\"www.example.test\"", prefix, 3, port, "", ""));
    let all = prefix_addresses(prefix, &[1, 2, 3]);
    // The cold-start round already decided: the first answer is health-checked.
    assert_eq!(answer(&server, "www.example.test."), all);
    // Static records of other types at a pool name stay.
    assert_eq!(
        crate::support::rcode(&server.udp("www.example.test.", RecordType::TXT)),
        ResponseCode::NoError
    );

    backends[1].stop();
    let without = prefix_addresses(prefix, &[1, 3]);
    assert!(
        wait_until(CHANGE, || answer(&server, "www.example.test.") == without),
        "the stopped backend leaves the answer"
    );
    // It stays out while it is down: four more probe rounds (seen by a live backend) change
    // nothing.
    backends[0].await_probes(4);
    assert_eq!(answer(&server, "www.example.test."), without);

    backends[1].resume();
    assert!(
        wait_until(CHANGE, || answer(&server, "www.example.test.") == all),
        "the backend comes back"
    );
}

/// A healthy backend (.1), then one of each way to fail: status 503 (.2), 150 ms slow (.3),
/// wrong body (.4), never answering (.5), a 3 MiB body (.6).
fn one_of_each() -> Vec<Behaviour> {
    vec![
        Behaviour::Healthy,
        Behaviour::Status(503),
        Behaviour::Delay(Duration::from_millis(150)),
        Behaviour::Body("broken\n"),
        Behaviour::Hang,
        // "10 GB": sent until the prober stops reading, after 1 MiB.
        Behaviour::Huge(10 << 30),
        Behaviour::Trickle,
        Behaviour::Reset,
    ]
}

#[test]
fn every_kind_of_failure_removes_its_address() {
    let prefix = "127.61.1";
    let (port, backends) = backends(prefix, one_of_each());
    let check = format!(
        "max_latency = \"100ms\"\nbody_sha256 = \"{}\"",
        sha256_hex(HEALTHY_BODY)
    );
    let pool = http_pool("\"www.example.test\"", prefix, 8, port, "", &check)
        .replace("timeout = \"100ms\"", "timeout = \"300ms\"")
        .replace("interval = \"100ms\"", "interval = \"300ms\"");
    let server = server(&pool);
    assert_eq!(
        answer(&server, "www.example.test."),
        prefix_addresses(prefix, &[1])
    );
    // The slow backend gets fast: it comes back.
    backends[2].set(Behaviour::Healthy);
    assert!(wait_until(CHANGE, || {
        answer(&server, "www.example.test.") == prefix_addresses(prefix, &[1, 3])
    }));
    drop(backends);
}

/// Builds the HTTP checker of one target, the way the server does.
fn http_target(address: IpAddr, port: u16, configure: impl FnOnce(&mut HttpCheck)) -> Target {
    let mut http = HttpCheck {
        ca_file: None,
        url: format!("http://{{address}}:{port}/health"),
        host: None,
        expect_status: vec![200],
        max_latency: None,
        body_sha256: None,
        follow_redirects: false,
    };
    configure(&mut http);
    Target {
        address,
        check: CheckConfig {
            kind: CheckKind::Http(http),
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(300),
            fall: 1,
            rise: 1,
            source: None,
        },
    }
}

#[test]
fn http_probe_failures_say_why() {
    let prefix = "127.61.2";
    let (port, _backends) = backends(prefix, one_of_each());
    let address = |host: u8| -> IpAddr { format!("{prefix}.{host}").parse().unwrap() };
    let digest: [u8; 32] = Sha256::digest(HEALTHY_BODY.as_bytes()).into();
    let cases: Vec<(Target, Option<&str>)> = vec![
        (
            http_target(address(1), port, |check| check.body_sha256 = Some(digest)),
            None,
        ),
        (http_target(address(2), port, |_| {}), Some("status 503")),
        (
            http_target(address(3), port, |check| {
                check.max_latency = Some(Duration::from_millis(100))
            }),
            Some("over max_latency"),
        ),
        (
            http_target(address(4), port, |check| check.body_sha256 = Some(digest)),
            Some("body sha256"),
        ),
        (
            http_target(address(5), port, |_| {}),
            Some("no complete response within 300ms"),
        ),
        (
            http_target(address(6), port, |check| check.body_sha256 = Some(digest)),
            Some("body over 1048576 bytes"),
        ),
        (
            http_target(address(7), port, |_| {}),
            Some("no complete response within 300ms"),
        ),
        (http_target(address(8), port, |_| {}), Some("reset")),
        // Nothing listens here: refused.
        (
            http_target(address(9), port, |_| {}),
            Some("Connection refused"),
        ),
        // With a Host header, the request still goes to the literal address.
        (
            http_target(address(1), port, |check| {
                check.host = Some("www.example.test".into())
            }),
            None,
        ),
    ];
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let targets: Vec<Target> = cases.iter().map(|(target, _)| target.clone()).collect();
        let probers =
            Probers::new(targets.iter().map(|target| (target.address, &target.check))).unwrap();
        for (target, expected) in &cases {
            let outcome = probers
                .checker(target.address, &target.check)
                .unwrap()
                .check()
                .await;
            match expected {
                None => assert!(outcome.passed, "{}: {outcome:?}", target.address),
                Some(reason) => {
                    assert!(!outcome.passed, "{}: {outcome:?}", target.address);
                    assert!(
                        outcome.reason.contains(reason),
                        "{}: {outcome:?}",
                        target.address
                    );
                }
            }
        }
        // A hanging backend costs the timeout, not more.
        let outcome = probers
            .checker(cases[4].0.address, &cases[4].0.check)
            .unwrap()
            .check()
            .await;
        assert!(outcome.latency < Duration::from_millis(600), "{outcome:?}");
    });
}

/// `source` sends HTTP and TCP probes from the given local address: a backend that fails
/// requests from 127.61.9.200 fails a probe sent from there, and passes one from elsewhere.
#[test]
fn probes_are_sent_from_the_configured_source() {
    let prefix = "127.61.9";
    let bad: IpAddr = "127.61.9.200".parse().unwrap();
    let (port, backends) = backends(prefix, vec![Behaviour::FailFrom(vec![bad])]);
    let address: IpAddr = format!("{prefix}.1").parse().unwrap();
    let from = |source: Option<IpAddr>| {
        let mut target = http_target(address, port, |_| {});
        target.check.source = source;
        target
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let targets = [
            from(None),
            from(Some(bad)),
            from(Some("127.61.9.201".parse().unwrap())),
        ];
        let probers =
            Probers::new(targets.iter().map(|target| (target.address, &target.check))).unwrap();
        let mut passed = Vec::new();
        for target in &targets {
            let checker = probers.checker(target.address, &target.check).unwrap();
            passed.push(checker.check().await.passed);
        }
        assert_eq!(passed, [true, false, true]);
        // TCP from a local source connects; from an address this host does not have, the
        // bind fails, which shows the source is used.
        let tcp = |source: &str| CheckConfig {
            kind: CheckKind::Tcp { port },
            source: Some(source.parse().unwrap()),
            ..targets[0].check.clone()
        };
        let before = backends[0].accepted();
        let outcome = probers
            .checker(address, &tcp("127.61.9.200"))
            .unwrap()
            .check()
            .await;
        assert!(outcome.passed, "{outcome:?}");
        // The kernel completes the handshake before the backend's thread accepts and
        // counts it, so the count is awaited rather than read once.
        assert!(wait_until(Duration::from_secs(5), || backends[0]
            .accepted()
            > before));
        let outcome = probers
            .checker(address, &tcp("192.0.2.77"))
            .unwrap()
            .check()
            .await;
        assert!(
            !outcome.passed && outcome.reason.contains("assign requested address"),
            "{outcome:?}"
        );
    });
}

#[test]
fn a_frozen_backend_is_removed_by_timeouts() {
    let prefix = "127.61.3";
    let (port, backends) = backends(prefix, vec![Behaviour::Healthy; 2]);
    let server = server(&http_pool("\"www.example.test\"", prefix, 2, port, "", ""));
    assert_eq!(
        answer(&server, "www.example.test."),
        prefix_addresses(prefix, &[1, 2])
    );
    backends[0].set(Behaviour::Hang);
    assert!(wait_until(CHANGE, || {
        answer(&server, "www.example.test.") == prefix_addresses(prefix, &[2])
    }));
    backends[0].set(Behaviour::Healthy);
    assert!(wait_until(CHANGE, || {
        answer(&server, "www.example.test.") == prefix_addresses(prefix, &[1, 2])
    }));
}

#[test]
fn all_down_policies_answer_as_configured() {
    let prefix = "127.61.4";
    let (port, mut backends) = backends(prefix, vec![Behaviour::Healthy; 2]);
    // One server, four pools over the same two addresses with the same check: the targets are
    // probed once and shared, so every pool sees each verdict in the same swap, and what one
    // pool answers tells when the others saw it too.
    let pools: String = ["servfail", "empty", "serve_all", "keep_last"]
        .iter()
        .map(|policy| {
            // servfail answers at www, whose TXT must stay answered.
            let name = if *policy == "servfail" {
                "www".to_string()
            } else {
                policy.replace('_', "-")
            };
            http_pool(
                &format!("\"{name}.example.test\""),
                prefix,
                2,
                port,
                &format!("all_down = \"{policy}\""),
                "",
            )
            .replace("name = \"web\"", &format!("name = \"{policy}\""))
        })
        .collect();
    let server = server(&pools);
    let (servfail, empty, serve_all, keep_last) = (
        "www.example.test.",
        "empty.example.test.",
        "serve-all.example.test.",
        "keep-last.example.test.",
    );
    let both = prefix_addresses(prefix, &[1, 2]);
    for name in [servfail, empty, serve_all, keep_last] {
        assert_eq!(answer(&server, name), both);
    }
    backends[0].stop();
    assert!(wait_until(CHANGE, || {
        answer(&server, keep_last) == prefix_addresses(prefix, &[2])
    }));
    assert_eq!(answer(&server, serve_all), prefix_addresses(prefix, &[2]));
    backends[1].stop();
    // serve_all answers every address again only once all are down...
    assert!(wait_until(CHANGE, || answer(&server, serve_all) == both));
    // ...and in that same snapshot keep_last still answers the last healthy set, servfail
    // fails and empty is empty.
    assert_eq!(answer(&server, keep_last), prefix_addresses(prefix, &[2]));
    let response = server.udp(servfail, RecordType::A);
    assert_eq!(rcode(&response), ResponseCode::ServFail);
    assert!(!response.metadata.authoritative);
    // Other types at the name are still answered.
    assert_eq!(
        rcode(&server.udp(servfail, RecordType::TXT)),
        ResponseCode::NoError
    );
    let response = server.udp(empty, RecordType::A);
    assert!(response.answers.is_empty());
    assert_eq!(rcode(&response), ResponseCode::NoError);
    assert!(response.metadata.authoritative);
    assert_eq!(response.authorities[0].record_type(), RecordType::SOA);
    // A backend coming back ends the all-down state for every pool.
    backends[0].resume();
    assert!(wait_until(CHANGE, || {
        answer(&server, serve_all) == prefix_addresses(prefix, &[1])
    }));
    for name in [servfail, empty, keep_last] {
        assert_eq!(
            answer(&server, name),
            prefix_addresses(prefix, &[1]),
            "{name}"
        );
    }
}

#[test]
fn a_healthy_canary_answers_for_its_name_only() {
    let prefix = "127.61.5";
    let (port, mut backends) = backends(prefix, vec![Behaviour::Healthy; 3]);
    let canary = format!("canary = {{ name = \"www.example.test\", address = \"{prefix}.3\" }}");
    let pool = http_pool(
        "\"www.example.test\", \"example.test\"",
        prefix,
        2,
        port,
        &canary,
        "",
    );
    let server = server(&pool);
    assert_eq!(
        answer(&server, "www.example.test."),
        prefix_addresses(prefix, &[1, 3])
    );
    assert_eq!(
        answer(&server, "example.test."),
        prefix_addresses(prefix, &[1, 2])
    );
    backends[2].stop();
    assert!(wait_until(CHANGE, || {
        answer(&server, "www.example.test.") == prefix_addresses(prefix, &[1, 2])
    }));
}

#[test]
fn only_ipv4_healthy_answers_aaaa_with_nodata() {
    let prefix = "127.61.6";
    let (port, _backends) = backends(prefix, vec![Behaviour::Healthy]);
    // Nothing listens on [::1] at this port, so the IPv6 address is down.
    let pool = format!(
        "[[pool]]\nname = \"dual\"\nnames = [\"www.example.test\"]\n\
         addresses = [\"{prefix}.1\", \"::1\"]\n\
         [[pool.check]]\nkind = \"http\"\nurl = \"http://{{address}}:{port}/\"\n"
    );
    let server = server(&pool);
    assert_eq!(
        answer(&server, "www.example.test."),
        prefix_addresses(prefix, &[1])
    );
    let response = server.udp("www.example.test.", RecordType::AAAA);
    assert_eq!(rcode(&response), ResponseCode::NoError);
    assert!(response.answers.is_empty());
    assert_eq!(response.authorities[0].record_type(), RecordType::SOA);
}

#[test]
fn a_dry_run_answers_every_address_while_probing() {
    let prefix = "127.61.7";
    let (port, _backends) = backends(prefix, vec![Behaviour::Healthy, Behaviour::Status(500)]);
    let pool = http_pool("\"www.example.test\"", prefix, 2, port, "", "");
    let fixture = Fixture::with_pools("127.0.0.1:0", &[("example.test", ZONE)], &pool);
    let text = std::fs::read_to_string(&fixture.config_path).unwrap();
    std::fs::write(
        &fixture.config_path,
        text.replace("[server]\n", "[server]\ndry_run = true\n"),
    )
    .unwrap();
    let server = TestServer::from_fixture(fixture);
    assert_eq!(
        answer(&server, "www.example.test."),
        prefix_addresses(prefix, &[1, 2])
    );
}

#[test]
fn a_tcp_check_follows_the_listening_port() {
    let prefix = "127.61.9";
    let (port, mut backends) = backends(prefix, vec![Behaviour::Healthy; 2]);
    let pool = format!(
        "[[pool]]\nname = \"tcp\"\nnames = [\"www.example.test\"]\n\
         addresses = [\"{prefix}.1\", \"{prefix}.2\", \"{prefix}.3\"]\n\
         [[pool.check]]\nkind = \"tcp\"\nport = {port}\n\
         interval = \"100ms\"\ntimeout = \"100ms\"\nfall = 2\nrise = 2\n"
    );
    let server = server(&pool);
    // Nothing listens on .3.
    assert_eq!(
        answer(&server, "www.example.test."),
        prefix_addresses(prefix, &[1, 2])
    );
    backends[0].stop();
    assert!(wait_until(CHANGE, || {
        answer(&server, "www.example.test.") == prefix_addresses(prefix, &[2])
    }));
    backends[0].resume();
    assert!(wait_until(CHANGE, || {
        answer(&server, "www.example.test.") == prefix_addresses(prefix, &[1, 2])
    }));
}

/// Issue 9's regression: a change that follows another within `min_serial_interval` must
/// still reach the answers at once. A backend killed a few hundred milliseconds after the
/// previous change was swapped in leaves within fall × interval + timeout + 150 ms.
#[test]
fn a_backend_killed_right_after_a_change_still_leaves_at_once() {
    let prefix = "127.61.9";
    let (port, mut backends) = backends(prefix, vec![Behaviour::Healthy; 3]);
    let pool = format!(
        "[[pool]]\nname = \"web\"\nnames = [\"www.example.test\"]\n\
         addresses = [\"{prefix}.1\", \"{prefix}.2\", \"{prefix}.3\"]\n\
         [[pool.check]]\nkind = \"http\"\nurl = \"http://{{address}}:{port}/health\"\n\
         interval = \"100ms\"\ntimeout = \"200ms\"\nfall = 2\nrise = 2\n"
    );
    let server = TestServer::from_fixture(Fixture::custom(
        "127.0.0.1:0",
        &[("example.test", ZONE)],
        "min_serial_interval = \"1s\"",
        "",
        &pool,
    ));
    let bound = Duration::from_millis(2 * 100 + 200 + 150);
    let first_serial = server.serial("example.test.");
    let mut previous_change = None;
    for (round, host) in [1u8, 2].into_iter().enumerate() {
        if let Some(changed) = previous_change {
            // A few hundred milliseconds after the previous change was swapped in: well
            // inside min_serial_interval.
            std::thread::sleep(
                Duration::from_millis(300)
                    .saturating_sub(std::time::Instant::now().duration_since(changed)),
            );
        }
        let killed = format!("{prefix}.{host}");
        backends[usize::from(host) - 1].stop();
        let started = std::time::Instant::now();
        assert!(
            wait_until(CHANGE, || !answer(&server, "www.example.test.")
                .contains(&killed)),
            "{killed} leaves"
        );
        let took = started.elapsed();
        assert!(
            took <= bound,
            "round {round}: {killed} left after {took:?}, over the bound {bound:?}"
        );
        previous_change = Some(std::time::Instant::now());
    }
    assert_eq!(
        answer(&server, "www.example.test."),
        vec![format!("{prefix}.3")]
    );
    // Each change was swapped in under its own serial.
    assert_eq!(server.serial("example.test."), first_serial.wrapping_add(2));
}

/// A pool replaces only the address families it has addresses for: an IPv4-only pool at a name
/// leaves the zone file's AAAA there served, never silently dropped.
#[test]
fn a_pool_replaces_only_the_families_it_has() {
    let prefix = "127.61.10";
    let (port, _backends) = backends(prefix, vec![Behaviour::Healthy; 2]);
    let zone = format!("{ZONE}www AAAA 2001:db8::5\nwww A 192.0.2.99\n");
    let server = TestServer::from_fixture(Fixture::with_pools(
        "127.0.0.1:0",
        &[("example.test", &zone)],
        &http_pool("\"www.example.test\"", prefix, 2, port, "", ""),
    ));
    // A comes from the pool (the static A is replaced), AAAA from the zone file.
    assert_eq!(
        answer(&server, "www.example.test."),
        prefix_addresses(prefix, &[1, 2])
    );
    assert_eq!(
        addresses(&server.udp("www.example.test.", RecordType::AAAA)),
        vec!["2001:db8::5"]
    );
}
