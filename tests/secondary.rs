//! Secondaries follow the healthy set: AXFR/IXFR rules, NOTIFY to a real BIND `named`,
//! snapshot files, serials across restarts, and `kill -9` during snapshot writes.

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};

use crate::golden::assert_checkzone_clean;
use crate::support::backend::{backends, Behaviour};
use crate::support::named::Named;
use crate::support::{
    binary, dig, dig_serial, fast_pool as pool, free_port, rcode, wait_until, www_addresses,
    Fixture, Process, TestServer, CHANGE, POOL_ZONE as ZONE,
};

/// `dig` output lines that are records (no comments, no blanks).
fn records(output: &str) -> Vec<&str> {
    output
        .lines()
        .filter(|line| !line.starts_with(';') && !line.trim().is_empty())
        .collect()
}

#[test]
fn transfers_follow_the_rules_and_ixfr_is_incremental() {
    let prefix = "127.62.0";
    let (port, mut backends) = backends(prefix, vec![Behaviour::Healthy; 2]);
    let server = TestServer::from_fixture(Fixture::custom(
        "127.0.0.1:0",
        &[("example.test", ZONE)],
        "min_serial_interval = \"0s\"",
        "allow_transfer = [\"127.0.0.1\"]\nsnapshot = \"snapshots/example.test.zone\"",
        &pool(prefix, 2, port),
    ));
    let address = server.address;
    assert_eq!(
        server.serial("example.test."),
        100,
        "no state: the file's serial"
    );

    // AXFR from an allowed source: SOA first and last, every record once, pool answers in.
    let axfr = dig(address, &["example.test", "AXFR"]);
    let lines = records(&axfr);
    assert!(lines.first().unwrap().contains("SOA"), "{axfr}");
    assert!(lines.last().unwrap().contains("SOA"), "{axfr}");
    assert_eq!(lines.len(), 7, "SOA NS ns1/A www/A x2 www/TXT SOA:\n{axfr}");
    assert!(axfr.contains("127.62.0.2"), "{axfr}");
    assert!(
        !axfr.contains("192.0.2.80"),
        "the pool replaces the file's www A"
    );

    // From another source, over UDP, or for a name that is not a zone: refused.
    let refused = dig(address, &["-b", "127.0.0.2", "example.test", "AXFR"]);
    assert!(refused.contains("Transfer failed"), "{refused}");
    let mut message = Message::new(7, MessageType::Query, OpCode::Query);
    message.add_query(Query::query(
        Name::from_ascii("example.test.").unwrap(),
        RecordType::AXFR,
    ));
    assert_eq!(rcode(&server.exchange_udp(&message)), ResponseCode::Refused);
    let not_zone = dig(address, &["www.example.test", "AXFR"]);
    assert!(not_zone.contains("Transfer failed"), "{not_zone}");

    // IXFR at the current serial: one SOA.
    let current = dig(address, &["example.test", "IXFR=100"]);
    assert_eq!(records(&current).len(), 1, "{current}");

    // A backend dies: the serial goes up by one; IXFR from 100 lists exactly that change.
    backends[1].stop();
    assert!(
        wait_until(CHANGE, || server.serial("example.test.") == 101),
        "the serial goes up when the answer changes"
    );
    let ixfr = dig(address, &["+tcp", "example.test", "IXFR=100"]);
    let lines = records(&ixfr);
    assert_eq!(
        lines.len(),
        5,
        "SOA 101, SOA 100, -www A .2, SOA 101, SOA 101:\n{ixfr}"
    );
    assert!(
        lines[1].contains(" 100 ") && lines[2].contains("127.62.0.2"),
        "{ixfr}"
    );
    // A serial the zone has no history for: the whole zone, AXFR-style.
    let full = dig(address, &["+tcp", "example.test", "IXFR=42"]);
    assert_eq!(records(&full).len(), 6, "{full}");

    // The snapshot file and the state follow, and the snapshot is a clean zone.
    let snapshot = server.path("snapshots/example.test.zone");
    assert!(
        wait_until(CHANGE, || std::fs::read_to_string(&snapshot)
            .is_ok_and(|text| text.contains(" 101 3600 "))),
        "the snapshot is rewritten at serial 101"
    );
    let text = std::fs::read_to_string(&snapshot).unwrap();
    assert!(
        text.contains("127.62.0.1") && !text.contains("127.62.0.2"),
        "{text}"
    );
    assert_checkzone_clean("example.test", &text);
    let state = std::fs::read_to_string(server.path("healthdns.state")).unwrap();
    assert!(state.contains("serial = 101"), "{state}");
}

#[test]
fn bind_follows_a_health_change_through_notify() {
    let prefix = "127.62.1";
    let (port, mut backends) = backends(prefix, vec![Behaviour::Healthy; 2]);
    let named_port = free_port();
    let server = TestServer::from_fixture(Fixture::custom(
        "127.0.0.1:0",
        &[("example.test", ZONE)],
        "",
        &format!("allow_transfer = [\"127.0.0.1\"]\nalso_notify = [\"127.0.0.1:{named_port}\"]"),
        &pool(prefix, 2, port),
    ));
    let named = Named::secondary(&["example.test"], server.address, named_port);
    assert!(
        wait_until(Duration::from_secs(20), || named.serial("example.test")
            == Some(100)),
        "named loads the zone:\n{}",
        named.log()
    );
    assert_eq!(www_addresses(named.address), ["127.62.1.1", "127.62.1.2"]);

    backends[0].stop();
    assert!(wait_until(CHANGE, || server.serial("example.test.") == 101));
    let swapped = Instant::now();
    // The refresh timer is an hour: only NOTIFY can bring named to 101 this fast.
    let followed = wait_until(Duration::from_secs(2), || {
        named.serial("example.test") == Some(101) && www_addresses(named.address) == ["127.62.1.2"]
    });
    assert!(
        followed,
        "named serves serial 101 and the new address set within 2 s (after {:?}):\n{}",
        swapped.elapsed(),
        named.log()
    );
    assert!(
        named.log().contains("notify from 127.0.0.1"),
        "{}",
        named.log()
    );
}

/// A TSIG key made by BIND's own `tsig-keygen`, written to `path`; returns its secret.
fn tsig_keygen(name: &str, path: &std::path::Path) -> String {
    let keygen = crate::support::require_tool("tsig-keygen", "bind9");
    let output = Command::new(keygen)
        .arg(name)
        .output()
        .expect("run tsig-keygen");
    assert!(output.status.success(), "tsig-keygen {name} failed");
    let text = String::from_utf8(output.stdout).unwrap();
    std::fs::write(path, &text).unwrap();
    text.split('"')
        .nth(3)
        .expect("a secret in quotes")
        .to_string()
}

#[test]
fn tsig_signs_transfers_and_notify_to_bind_and_refuses_wrong_keys() {
    let prefix = "127.62.5";
    let (port, mut backends) = backends(prefix, vec![Behaviour::Healthy; 2]);
    let named_port = free_port();
    let wrong_port = free_port();
    let api: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let fixture = Fixture::custom(
        &format!("127.0.0.1:{}", free_port()),
        &[("example.test", ZONE)],
        "key_files = [\"transfer.key\"]",
        &format!(
            "allow_transfer = [\"127.0.0.1 key transfer\"]\nalso_notify = [\"127.0.0.1:{named_port} key transfer\", \"127.0.0.1:{wrong_port} key transfer\"]"
        ),
        &format!("{}\n[api]\nlisten = \"{api}\"\n", pool(prefix, 2, port)),
    );
    let key_file = fixture.path("transfer.key");
    let secret = tsig_keygen("transfer", &key_file);
    // The real binary, for its metrics: NOTIFY responses signed by named must verify.
    let _process = crate::api::serve_ready(&fixture.config_path, api);
    let address = fixture.listen_address();

    // BIND with the key: SOA checks, the AXFR, NOTIFY and the IXFR are all signed.
    let named = Named::secondary_with_key(
        &["example.test"],
        address,
        named_port,
        Some((&key_file, "transfer")),
    );
    assert!(
        wait_until(Duration::from_secs(20), || named.serial("example.test")
            == Some(100)),
        "named loads the zone with the key:\n{}",
        named.log()
    );
    // BIND with a key of the same name and another secret gets nothing.
    let wrong_folder = tempfile::tempdir().unwrap();
    let wrong_key = wrong_folder.path().join("wrong.key");
    tsig_keygen("transfer", &wrong_key);
    let wrong = Named::secondary_with_key(
        &["example.test"],
        address,
        wrong_port,
        Some((&wrong_key, "transfer")),
    );

    backends[0].stop();
    assert!(wait_until(CHANGE, || dig_serial(address, "example.test") == Some(101)));
    let followed = wait_until(Duration::from_secs(2), || {
        named.serial("example.test") == Some(101) && www_addresses(named.address) == ["127.62.5.2"]
    });
    assert!(
        followed,
        "named follows a signed NOTIFY within 2 s:\n{}",
        named.log()
    );
    assert!(
        named
            .log()
            .contains("received notify for zone 'example.test': TSIG 'transfer'")
            && named.log().contains("TSIG transfer"),
        "{}",
        named.log()
    );
    // named's responses to the signed NOTIFY verified here; the wrong-key named's did not.
    let metrics = || crate::api::samples(&crate::api::get(api, "/metrics").unwrap().1);
    assert!(
        wait_until(Duration::from_secs(10), || {
            let metrics = metrics();
            metrics.get("healthdns_notify_total{result=\"acknowledged\"}") >= Some(&1.0)
                && metrics.contains_key("healthdns_notify_total{result=\"bad_tsig\"}")
                    | metrics.contains_key("healthdns_notify_total{result=\"refused\"}")
        }),
        "{:?}",
        metrics()
    );
    assert!(
        wait_until(Duration::from_secs(10), || wrong
            .log()
            .contains("tsig verify failure")
            || wrong.log().contains("NOTAUTH")
            || wrong.log().contains("BADSIG")),
        "named with the wrong secret is refused:\n{}",
        wrong.log()
    );
    assert_eq!(wrong.serial("example.test"), None, "{}", wrong.log());

    // dig: with the key the transfer verifies; without it, or with a wrong secret, it is refused.
    let key_arg = format!("hmac-sha256:transfer:{secret}");
    let signed = dig(address, &["-y", &key_arg, "example.test", "AXFR"]);
    assert!(
        records(&signed).len() > 3 && !signed.contains("failure") && !signed.contains("failed"),
        "{signed}"
    );
    let unsigned = dig(address, &["example.test", "AXFR"]);
    assert!(unsigned.contains("Transfer failed"), "{unsigned}");
    let wrong_secret = format!(
        "hmac-sha256:transfer:{}",
        "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo="
    );
    let refused = dig(address, &["-y", &wrong_secret, "example.test", "AXFR"]);
    assert!(
        refused.contains("BADSIG")
            && refused.contains("Transfer failed")
            && !refused.contains(" SOA "),
        "{refused}"
    );
    let unknown = dig(
        address,
        &[
            "-y",
            &format!("hmac-sha256:other:{secret}"),
            "example.test",
            "SOA",
        ],
    );
    assert!(
        unknown.contains("NOTAUTH") || unknown.contains("tsig"),
        "{unknown}"
    );
    // A signed ordinary query gets a signed answer that dig verifies.
    let query = dig(address, &["-y", &key_arg, "www.example.test", "A"]);
    assert!(
        query.contains("status: NOERROR") && query.contains("TSIG") && !query.contains("failure"),
        "{query}"
    );
    let metrics = metrics();
    for result in ["verified", "badsig", "badkey"] {
        assert!(
            metrics.contains_key(&format!("healthdns_tsig_total{{result=\"{result}\"}}")),
            "{result}: {metrics:?}"
        );
    }
}

#[test]
fn a_zone_of_100000_records_transfers_to_bind() {
    let mut zone = String::from(
        "$TTL 300\n@ SOA ns1 hostmaster 7 3600 600 86400 60\n@ NS ns1\nns1 A 192.0.2.53\n",
    );
    for index in 0..99_997u32 {
        zone.push_str(&format!(
            "host{index} A 10.{}.{}.{}\n",
            index >> 16,
            (index >> 8) & 255,
            index & 255
        ));
    }
    let server = TestServer::from_fixture(Fixture::custom(
        "127.0.0.1:0",
        &[("big.test", &zone)],
        "",
        "allow_transfer = [\"127.0.0.1\"]",
        "",
    ));
    // dig reads the stream: many messages, every record, SOA at both ends.
    let axfr = dig(
        server.address,
        &["+tries=1", "+time=30", "big.test", "AXFR"],
    );
    let size = axfr
        .lines()
        .find(|line| line.starts_with(";; XFR size:"))
        .unwrap_or_else(|| {
            panic!(
                "no XFR size in dig output:\n{}",
                &axfr[axfr.len().saturating_sub(2000)..]
            )
        });
    // 100,000 records plus the closing SOA.
    assert!(size.contains("100001 records"), "{size}");
    let messages: usize = size
        .split("messages ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .and_then(|count| count.trim().parse().ok())
        .expect("a message count");
    assert!(messages > 50, "streamed in many messages: {size}");

    let named = Named::secondary(&["big.test"], server.address, free_port());
    assert!(
        wait_until(Duration::from_secs(60), || named.serial("big.test")
            == Some(7)),
        "named loads the 100,000-record zone:\n{}",
        named.log()
    );
    let last = dig(
        named.address,
        &["+short", "+norecurse", "host99996.big.test", "A"],
    );
    assert_eq!(last.trim(), "10.1.134.156");
}

/// The server as a process on a fixed port; `serial` asks it over UDP.
struct Daemon {
    process: Process,
    address: SocketAddr,
}

impl Daemon {
    fn start(fixture: &Fixture) -> Self {
        let address = fixture.listen_address();
        let process = Process::spawn(
            binary()
                .arg("serve")
                .arg("--config")
                .arg(&fixture.config_path),
        );
        let daemon = Self { process, address };
        assert!(
            wait_until(Duration::from_secs(20), || daemon.try_serial().is_some()),
            "the server answers"
        );
        daemon
    }

    fn try_serial(&self) -> Option<u32> {
        dig_serial(self.address, "example.test")
    }

    fn stop(mut self) {
        self.process.signal("TERM");
        assert!(self.process.wait_exit(Duration::from_secs(10)).is_some());
    }
}

#[test]
fn serials_never_go_down_across_restarts() {
    let prefix = "127.62.2";
    let (port, mut backends) = backends(prefix, vec![Behaviour::Healthy; 2]);
    backends[1].stop();
    let listen = format!("127.0.0.1:{}", free_port());
    let fixture = Fixture::custom(
        &listen,
        &[("example.test", ZONE)],
        "",
        "",
        &pool(prefix, 2, port),
    );

    // First start: no state, the file's serial.
    let daemon = Daemon::start(&fixture);
    assert_eq!(daemon.try_serial(), Some(100));
    daemon.stop();
    // Same content after a restart: the same serial; no transfer is needed.
    let daemon = Daemon::start(&fixture);
    assert_eq!(daemon.try_serial(), Some(100));
    daemon.stop();
    // Other content (the second backend is back): the recorded serial + 1.
    backends[1].resume();
    let daemon = Daemon::start(&fixture);
    assert_eq!(daemon.try_serial(), Some(101));
    daemon.stop();
    // The operator bumps the zone file's serial past it: the file's serial.
    let zone = fixture.path("zone0.zone");
    let text = std::fs::read_to_string(&zone)
        .unwrap()
        .replace(" 100 3600", " 500 3600");
    std::fs::write(&zone, text).unwrap();
    let daemon = Daemon::start(&fixture);
    assert_eq!(daemon.try_serial(), Some(500));
    daemon.stop();
}

#[test]
fn kill_9_during_snapshot_and_state_writes_never_leaves_a_partial_file() {
    let prefix = "127.62.3";
    let (port, backends) = backends(prefix, vec![Behaviour::Healthy; 2]);
    let mut zone = String::from(ZONE);
    for index in 0..20_000u32 {
        zone.push_str(&format!(
            "filler{index} TXT \"padding so that each write takes a while\"\n"
        ));
    }
    let listen = format!("127.0.0.1:{}", free_port());
    let fixture = Fixture::custom(
        &listen,
        &[("example.test", &zone)],
        "min_serial_interval = \"0s\"",
        "snapshot = \"snapshots/example.test.zone\"",
        &pool(prefix, 2, port),
    );
    let snapshot = fixture.path("snapshots/example.test.zone");
    let folder = snapshot.parent().unwrap().to_path_buf();
    let temporary_exists = || {
        std::fs::read_dir(&folder).is_ok_and(|entries| {
            entries
                .filter_map(Result::ok)
                .any(|entry| entry.file_name().to_string_lossy().contains(".tmp"))
        })
    };
    // A backend flaps all along, so the snapshot is rewritten again and again.
    let flapping = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let flapper = {
        let flapping = flapping.clone();
        let mut backend = backends.into_iter().nth(1).unwrap();
        std::thread::spawn(move || {
            let mut rounds = 0;
            while flapping.load(std::sync::atomic::Ordering::Relaxed) && rounds < 2_000 {
                backend.stop();
                std::thread::sleep(Duration::from_millis(60));
                backend.resume();
                std::thread::sleep(Duration::from_millis(60));
                rounds += 1;
            }
        })
    };
    // SOA, NS, ns1 A, www TXT and the fillers; the pool adds one or two addresses.
    let static_records = 4 + 20_000;
    let mut interrupted = 0;
    // The serial seen just before each kill: after the restart the zone must start above it
    // (the state reserved serials ahead), never reissue it.
    let mut last_seen: Option<u32> = None;
    for round in 0..6 {
        let mut daemon = Daemon::start(&fixture);
        let started_at = daemon.try_serial().expect("a serial after the restart");
        if let Some(last) = last_seen {
            assert!(
                started_at != last && started_at.wrapping_sub(last) < (1 << 31),
                "round {round}: restarted at {started_at}, not above {last} seen before kill -9"
            );
        }
        // There is a previous snapshot to keep (the first start's first write completes).
        assert!(wait_until(Duration::from_secs(10), || snapshot.exists()));
        // kill -9 the moment a write is under way (its temporary file exists).
        last_seen = daemon.try_serial();
        let caught = wait_until_busy(Duration::from_secs(5), temporary_exists);
        daemon.process.signal("KILL");
        assert!(daemon.process.wait_exit(Duration::from_secs(5)).is_some());
        if caught && temporary_exists() {
            interrupted += 1;
        }
        let text = std::fs::read_to_string(&snapshot).expect("a snapshot survives every kill");
        let count = records(&text)
            .iter()
            .filter(|line| !line.starts_with('$'))
            .count();
        assert!(text.ends_with('\n'), "round {round}: the file is whole");
        // The state file (rewritten with every verdict change) is whole too: it loads, with
        // a reservation above what was served.
        let state = healthdns::zone::serial::State::load(&fixture.path("healthdns.state"))
            .unwrap_or_else(|error| panic!("round {round}: the state file is whole: {error}"));
        let zone = &state.zones["example.test."];
        assert!(
            zone.reserved
                .is_some_and(|reserved| last_seen.is_none_or(|seen| reserved >= seen)),
            "round {round}: {zone:?} reserves past {last_seen:?}"
        );
        assert!(
            (static_records + 1..=static_records + 2).contains(&count),
            "round {round}: {count} records"
        );
        // Clear what the killed writer left, so the next round sees only new writes.
        for entry in std::fs::read_dir(&folder).unwrap().filter_map(Result::ok) {
            if entry.file_name().to_string_lossy().contains(".tmp") {
                std::fs::remove_file(entry.path()).unwrap();
            }
        }
    }
    flapping.store(false, std::sync::atomic::Ordering::Relaxed);
    flapper.join().unwrap();
    assert!(
        interrupted >= 1,
        "no kill landed during a write; the test proved nothing"
    );
    eprintln!("{interrupted} of 6 kills interrupted a snapshot write");
    let checkzone = Command::new(crate::support::require_tool(
        "named-checkzone",
        "bind9-utils",
    ))
    .args(["-i", "local", "example.test"])
    .arg(&snapshot)
    .output()
    .unwrap();
    assert!(
        checkzone.status.success(),
        "{}",
        String::from_utf8_lossy(&checkzone.stdout)
    );
}

/// Polls `condition` without sleeping (a write lasts milliseconds) until it holds or `limit`.
fn wait_until_busy(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if condition() {
            return true;
        }
    }
    false
}

/// BIND, NSD and Knot each transfer a 20,000-record zone (many AXFR messages) and follow a
/// health change through NOTIFY and IXFR. Knot refuses a message with trailing bytes, so
/// this is also the check that every transfer message holds exactly what its counts say.
#[test]
fn bind_nsd_and_knot_transfer_a_large_zone_and_follow_notify() {
    use crate::support::named::Secondary;
    let prefix = "127.62.5";
    let (port, mut backends) = backends(prefix, vec![Behaviour::Healthy; 2]);
    let mut zone = ZONE.to_string();
    for index in 0..20_000u32 {
        zone.push_str(&format!(
            "bulk{index} A 10.9.{}.{}\n",
            (index >> 8) & 255,
            index & 255
        ));
    }
    let ports = [free_port(), free_port(), free_port()];
    let notify: Vec<String> = ports
        .iter()
        .map(|port| format!("\"127.0.0.1:{port}\""))
        .collect();
    let server = TestServer::from_fixture(Fixture::custom(
        "127.0.0.1:0",
        &[("example.test", &zone)],
        "",
        &format!(
            "allow_transfer = [\"127.0.0.1\"]\nalso_notify = [{}]",
            notify.join(", ")
        ),
        // A long timeout: three secondaries loading 20,000 records at once load this machine,
        // and a healthy backend must not flap meanwhile (a killed one is refused at once).
        &pool(prefix, 2, port).replace("timeout = \"100ms\"", "timeout = \"1s\""),
    ));
    // kdig reads every message strictly and warns about trailing data.
    let kdig = crate::support::require_tool("kdig", "knot-dnsutils");
    let output = Command::new(kdig)
        .arg(format!("@{}", server.address.ip()))
        .args([
            "-p",
            &server.address.port().to_string(),
            "example.test",
            "AXFR",
        ])
        .output()
        .unwrap();
    let text = crate::support::output_text(&output);
    assert!(
        !text.contains("trailing"),
        "{}",
        &text[..text.len().min(3000)]
    );
    let summary = text
        .lines()
        .find(|line| line.contains("Received"))
        .unwrap_or_default()
        .to_string();
    assert!(summary.contains("messages"), "{summary}");

    let named = Named::secondary(&["example.test"], server.address, ports[0]);
    let nsd = Secondary::nsd("example.test", server.address, ports[1]);
    let knot = Secondary::knot("example.test", server.address, ports[2]);
    let serials = || {
        [
            named.serial("example.test"),
            nsd.serial("example.test"),
            knot.serial("example.test"),
        ]
    };
    let logs = || {
        format!(
            "named:\n{}\nnsd:\n{}\nknot:\n{}",
            named.log(),
            nsd.log(),
            knot.log()
        )
    };
    assert!(
        wait_until(Duration::from_secs(30), || serials() == [Some(100); 3]),
        "every secondary loads serial 100: {:?}\n{}",
        serials(),
        logs()
    );
    for address in [named.address, nsd.address, knot.address] {
        assert_eq!(www_addresses(address), ["127.62.5.1", "127.62.5.2"]);
        let last = dig(
            address,
            &["+short", "+norecurse", "bulk19999.example.test", "A"],
        );
        assert_eq!(last.trim(), "10.9.78.31", "{address}");
    }

    backends[0].stop();
    assert!(wait_until(CHANGE, || www_addresses(server.address) == ["127.62.5.2"]));
    let swapped = Instant::now();
    let serial = server.serial("example.test.");
    assert!(serial > 100, "a new serial: {serial}");
    // Refresh timers are an hour: only NOTIFY brings them to the new serial this fast.
    let followed = wait_until(Duration::from_secs(3), || {
        serials() == [Some(server.serial("example.test.")); 3]
            && [named.address, nsd.address, knot.address]
                .iter()
                .all(|address| www_addresses(*address) == ["127.62.5.2"])
    });
    assert!(
        followed,
        "every secondary serves the new serial and address set within 3 s (after {:?}): {:?}\n{}",
        swapped.elapsed(),
        serials(),
        logs()
    );
}

/// Answers never wait, but what secondaries see is paced: with a flapping backend the serial
/// goes up at every change, while snapshot files and NOTIFY go out at most once per
/// `min_serial_interval` (here 1 s), each for the newest serial.
#[test]
fn snapshot_files_and_notify_are_paced_but_serials_are_not() {
    let prefix = "127.62.6";
    let (port, mut backends) = backends(prefix, vec![Behaviour::Healthy; 2]);
    // A stand-in secondary: counts NOTIFYs and acknowledges each.
    let secondary = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    secondary
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let notify_port = secondary.local_addr().unwrap().port();
    let listen = format!("127.0.0.1:{}", free_port());
    let fixture = Fixture::custom(
        &listen,
        &[("example.test", ZONE)],
        "min_serial_interval = \"1s\"",
        &format!(
            "snapshot = \"snapshots/example.test.zone\"\nalso_notify = [\"127.0.0.1:{notify_port}\"]"
        ),
        &pool(prefix, 2, port),
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let received: std::sync::Arc<std::sync::Mutex<Vec<(Instant, u32)>>> = Default::default();
    let counter = {
        let stop = stop.clone();
        let notifies = received.clone();
        std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok((length, from)) = secondary.recv_from(&mut buffer) else {
                    continue;
                };
                let Ok(message) = Message::from_vec(&buffer[..length]) else {
                    continue;
                };
                if message.metadata.op_code != OpCode::Notify {
                    continue;
                }
                let serial = message
                    .answers
                    .iter()
                    .find_map(|record| match &record.data {
                        hickory_proto::rr::RData::SOA(soa) => Some(soa.serial),
                        _ => None,
                    });
                notifies
                    .lock()
                    .unwrap()
                    .push((Instant::now(), serial.unwrap_or_default()));
                let mut response = message.clone();
                response.metadata.message_type = MessageType::Response;
                let _ = secondary.send_to(&response.to_vec().unwrap(), from);
            }
        })
    };
    let mut daemon = Daemon::start(&fixture);
    let first = daemon.try_serial().unwrap();
    // Flap one backend for about 3 s: stopped and resumed every 150 ms (fall 1, rise 1 at
    // 100 ms), so the answer changes several times a second.
    let started = Instant::now();
    let mut rounds = 0;
    while started.elapsed() < Duration::from_secs(3) && rounds < 40 {
        backends[1].stop();
        backends[0].await_probes(2);
        backends[1].resume();
        backends[0].await_probes(2);
        rounds += 1;
    }
    let flapped = started.elapsed();
    let last = daemon.try_serial().unwrap();
    let changes = last.wrapping_sub(first);
    assert!(
        changes >= 6,
        "the serial follows every change: {first} -> {last}"
    );
    // The newest serial reaches the file and the secondary within the interval.
    let snapshot = fixture.path("snapshots/example.test.zone");
    assert!(wait_until(Duration::from_secs(3), || {
        std::fs::read_to_string(&snapshot).is_ok_and(|text| text.contains(&format!(" {last} ")))
    }));
    assert!(
        wait_until(Duration::from_secs(3), || received
            .lock()
            .unwrap()
            .iter()
            .any(|(_, serial)| *serial == last)),
        "the newest serial {last} is notified"
    );
    daemon.process.signal("TERM");
    assert!(daemon.process.wait_exit(Duration::from_secs(10)).is_some());
    let log = daemon.process.stderr_text();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    counter.join().unwrap();
    let notifies = received.lock().unwrap().clone();
    let writes = log.matches("zone snapshot written").count();
    // One per started second at most, plus the one at start and the final one.
    let bound = flapped.as_secs() as usize + 3;
    assert!(
        writes <= bound,
        "{writes} snapshot writes for {changes} serials in {flapped:?}:\n{log}"
    );
    let rounds_sent: std::collections::BTreeSet<u32> =
        notifies.iter().map(|(_, serial)| *serial).collect();
    assert!(
        rounds_sent.len() <= bound && rounds_sent.len() < changes as usize,
        "{} NOTIFY serials for {changes} serials: {rounds_sent:?}",
        rounds_sent.len()
    );
    // NOTIFY rounds for different serials are at least the interval apart (a little slack
    // for scheduling).
    let mut firsts: Vec<Instant> = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for (at, serial) in &notifies {
        if seen.insert(*serial) {
            firsts.push(*at);
        }
    }
    for pair in firsts.windows(2) {
        assert!(
            pair[1] - pair[0] >= Duration::from_millis(950),
            "NOTIFY rounds {:?} apart",
            pair[1] - pair[0]
        );
    }
    assert!(
        rounds_sent.contains(&last),
        "the newest serial {last} was notified: {rounds_sent:?}"
    );
}

/// `snapshot_command` runs (without a shell) after each snapshot write, like edgemanage's
/// `run_after_changes`; a failing or hanging one is logged (and killed after its timeout),
/// and never stops the server.
#[test]
fn a_snapshot_command_runs_after_each_write() {
    let prefix = "127.62.7";
    let (port, mut backends) = backends(prefix, vec![Behaviour::Healthy; 2]);
    let folder = tempfile::tempdir().unwrap();
    let snapshot = folder.path().join("example.test.zone");
    let copy = folder.path().join("copy.zone");
    let serve = |command: String, timeout: &str| {
        let listen = format!("127.0.0.1:{}", free_port());
        let fixture = Fixture::custom(
            &listen,
            &[("example.test", ZONE)],
            "min_serial_interval = \"0s\"",
            &format!(
                "snapshot = \"{}\"\nsnapshot_command = {command}\n\
                 snapshot_command_timeout = \"{timeout}\"",
                snapshot.display()
            ),
            &pool(prefix, 2, port),
        );
        let process = Process::spawn(
            binary()
                .args(["serve", "--config"])
                .arg(&fixture.config_path),
        );
        (process, fixture, listen.parse::<SocketAddr>().unwrap())
    };
    let copied = || std::fs::read_to_string(&copy).unwrap_or_default();

    // Copying the snapshot: the copy follows every write.
    let (mut process, _fixture, address) = serve(
        format!(
            "[\"cp\", \"{}\", \"{}\"]",
            snapshot.display(),
            copy.display()
        ),
        "5s",
    );
    assert!(wait_until(Duration::from_secs(10), || copied().contains(" 100 3600 ")));
    backends[1].stop();
    assert!(wait_until(CHANGE, || dig_serial(address, "example.test") == Some(101)));
    assert!(
        wait_until(Duration::from_secs(5), || copied().contains(" 101 3600 ")),
        "{}",
        process.stderr_now()
    );
    assert!(process.stderr_now().contains("snapshot command done"));
    process.signal("TERM");
    assert!(process.wait_exit(Duration::from_secs(10)).is_some());

    // Failing, and hanging past its timeout: logged, and the server keeps answering.
    for (command, expected) in [
        ("[\"false\"]".to_string(), "snapshot command failed"),
        ("[\"sleep\", \"30\"]".to_string(), "snapshot command killed"),
    ] {
        let (mut process, _fixture, address) = serve(command, "300ms");
        assert!(
            wait_until(Duration::from_secs(10), || process
                .stderr_now()
                .contains(expected)),
            "{}",
            process.stderr_now()
        );
        assert!(dig_serial(address, "example.test").is_some());
        process.signal("TERM");
        assert!(process.wait_exit(Duration::from_secs(10)).is_some());
    }
    backends[1].resume();
}

/// The test zone with about 15 MB of records: more than the kernel's socket buffers on both
/// ends can hold, so a transfer whose client stops reading really stalls and stays in flight.
fn stuck_zone() -> String {
    let mut zone = String::from(ZONE);
    let long = "x".repeat(250);
    for index in 0..15_000u32 {
        zone.push_str(&format!(
            "t{index} TXT \"{long}\" \"{long}\" \"{long}\" \"{long}\"\n"
        ));
    }
    zone
}

/// SIGTERM while a secondary is stuck mid-transfer: the transfer gets a bounded grace
/// (5 s), then the server exits 0 with its state written, instead of waiting for the
/// connection's 60 s write timeout.
#[test]
fn shutdown_bounds_a_stuck_transfer() {
    use std::io::{Read, Write};
    let zone = stuck_zone();
    let listen = format!("127.0.0.1:{}", free_port());
    let fixture = Fixture::custom(
        &listen,
        &[("example.test", &zone)],
        "tcp_idle_timeout = \"60s\"",
        "allow_transfer = [\"127.0.0.1\"]",
        "",
    );
    let mut daemon = Daemon::start(&fixture);
    let address: SocketAddr = listen.parse().unwrap();
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&address.into()).unwrap();
    let mut stream: std::net::TcpStream = socket.into();
    let query = {
        let mut message = Message::new(4321, MessageType::Query, OpCode::Query);
        message.add_query(Query::query(
            Name::from_ascii("example.test.").unwrap(),
            RecordType::AXFR,
        ));
        message.to_vec().unwrap()
    };
    stream
        .write_all(&(query.len() as u16).to_be_bytes())
        .unwrap();
    stream.write_all(&query).unwrap();
    // Read the first bytes, then stop reading: the server's socket buffers fill up.
    let mut first = [0u8; 2];
    stream.read_exact(&mut first).unwrap();
    let stopping = Instant::now();
    daemon.process.signal("TERM");
    let status = daemon
        .process
        .wait_exit(Duration::from_secs(20))
        .expect("serve exits within the grace, not the write timeout");
    let log = daemon.process.stderr_text();
    assert!(status.success(), "{log}");
    // The transfer really was stuck (else this proves nothing), and was cut at the grace.
    assert!(log.contains("TCP connections still busy"), "{log}");
    let took = stopping.elapsed();
    assert!(took < Duration::from_secs(15), "took {took:?}");
    assert!(std::fs::read_to_string(fixture.path("healthdns.state"))
        .unwrap()
        .contains("[zones.\"example.test.\"]"));
    drop(stream);
}

/// An AXFR request for example.test on a fresh TCP connection from `source` to `server`,
/// with a small receive buffer, so a transfer the test does not read stays in flight.
fn start_axfr(server: SocketAddr, source: &str) -> std::net::TcpStream {
    use std::io::Write;
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let source: SocketAddr = format!("{source}:0").parse().unwrap();
    socket.bind(&source.into()).unwrap();
    socket.connect(&server.into()).unwrap();
    let mut stream: std::net::TcpStream = socket.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut message = Message::new(4321, MessageType::Query, OpCode::Query);
    message.add_query(Query::query(
        Name::from_ascii("example.test.").unwrap(),
        RecordType::AXFR,
    ));
    let query = message.to_vec().unwrap();
    stream
        .write_all(&(query.len() as u16).to_be_bytes())
        .unwrap();
    stream.write_all(&query).unwrap();
    stream
}

/// The first response message on a transfer connection.
fn first_message(stream: &mut std::net::TcpStream) -> Message {
    use std::io::Read;
    let mut length = [0u8; 2];
    stream.read_exact(&mut length).unwrap();
    let mut bytes = vec![0u8; usize::from(u16::from_be_bytes(length))];
    stream.read_exact(&mut bytes).unwrap();
    Message::from_vec(&bytes).unwrap()
}

#[test]
fn transfers_in_flight_are_capped_per_address() {
    let zone = stuck_zone();
    let server = TestServer::from_fixture(Fixture::custom(
        "127.0.0.1:0",
        &[("example.test", &zone)],
        "tcp_idle_timeout = \"60s\"",
        "allow_transfer = [\"127.0.0.0/8\"]",
        "",
    ));
    // Two stuck transfers from 127.0.0.1: both started.
    let mut stuck: Vec<_> = (0..2)
        .map(|_| start_axfr(server.address, "127.0.0.1"))
        .collect();
    for stream in &mut stuck {
        let first = first_message(stream);
        assert_eq!(first.metadata.response_code, ResponseCode::NoError);
        assert!(!first.answers.is_empty());
    }
    // A third from the same address: REFUSED at once, with its question.
    let mut third = start_axfr(server.address, "127.0.0.1");
    let refused = first_message(&mut third);
    assert_eq!(refused.metadata.response_code, ResponseCode::Refused);
    assert_eq!(refused.queries.len(), 1);
    assert!(refused.answers.is_empty());
    // Another address is not held up by them.
    let mut other = start_axfr(server.address, "127.0.0.2");
    let started = first_message(&mut other);
    assert_eq!(started.metadata.response_code, ResponseCode::NoError);
    assert!(!started.answers.is_empty());
    // When the stuck ones go, the first address may transfer again.
    drop(stuck);
    assert!(
        wait_until(Duration::from_secs(10), || {
            let mut again = start_axfr(server.address, "127.0.0.1");
            first_message(&mut again).metadata.response_code == ResponseCode::NoError
        }),
        "the slots are given back"
    );
}
