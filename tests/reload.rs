//! Reload of the real binary under a query loop: SIGHUP, `POST /reload` and `healthdns
//! reload`; a broken config or zone keeps the old answers; a valid change changes them,
//! keeps the verdicts of unchanged probes, probes new addresses once before answering with
//! them, and reaches a real BIND secondary by NOTIFY and IXFR.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::api::{get, request};
use crate::support::backend::{backends, Behaviour};
use crate::support::named::Named;
use crate::support::{
    addresses, binary, dig, dig_serial, free_port, output_text, query, rcode, wait_until,
    www_addresses, CHANGE,
};

/// Queries www.example.test A over UDP, one after another, until stopped (at most 60 s and
/// 200,000 queries); counts answers that are not NOERROR with at least one address.
struct QueryLoop {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    thread: Option<JoinHandle<Vec<String>>>,
}

impl QueryLoop {
    fn start(server: SocketAddr) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        let (flag, count, failures) = (stop.clone(), sent.clone(), failed.clone());
        let thread = std::thread::spawn(move || {
            let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
            socket
                .set_read_timeout(Some(Duration::from_secs(2)))
                .unwrap();
            let started = Instant::now();
            let mut reasons = Vec::new();
            let mut buffer = [0u8; 4096];
            for id in 0..200_000u32 {
                if flag.load(Ordering::Relaxed) || started.elapsed() > Duration::from_secs(60) {
                    break;
                }
                let mut message = query("www.example.test.", RecordType::A, None);
                message.metadata.id = id as u16;
                socket.send_to(&message.to_vec().unwrap(), server).unwrap();
                count.fetch_add(1, Ordering::Relaxed);
                let reason = match socket.recv(&mut buffer) {
                    Err(error) => Some(format!("query {id}: no answer: {error}")),
                    Ok(size) => match hickory_proto::op::Message::from_vec(&buffer[..size]) {
                        Err(error) => Some(format!("query {id}: undecodable: {error}")),
                        Ok(answer) if answer.metadata.id != id as u16 => {
                            Some(format!("query {id}: answered id {}", answer.metadata.id))
                        }
                        Ok(answer)
                            if rcode(&answer) != ResponseCode::NoError
                                || addresses(&answer).is_empty() =>
                        {
                            Some(format!(
                                "query {id}: {:?} {:?}",
                                rcode(&answer),
                                addresses(&answer)
                            ))
                        }
                        Ok(_) => None,
                    },
                };
                if let Some(reason) = reason {
                    failures.fetch_add(1, Ordering::Relaxed);
                    reasons.push(reason);
                }
            }
            reasons
        });
        Self {
            stop,
            sent,
            failed,
            thread: Some(thread),
        }
    }

    /// Waits until `count` more queries have been sent (the loop runs across what came
    /// before).
    fn await_queries(&self, count: usize) {
        let target = self.sent.load(Ordering::Relaxed) + count;
        assert!(
            wait_until(Duration::from_secs(20), || self
                .sent
                .load(Ordering::Relaxed)
                >= target),
            "the query loop goes on"
        );
    }

    /// Stops the loop; (queries sent, failure reasons).
    fn finish(mut self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let reasons = self.thread.take().unwrap().join().unwrap();
        assert_eq!(reasons.len(), self.failed.load(Ordering::Relaxed));
        (self.sent.load(Ordering::Relaxed), reasons)
    }
}

const ZONE: &str = "$TTL 300
@      SOA ns1 hostmaster 100 3600 600 86400 60
       NS  ns1
ns1    A   192.0.2.53
www    A   192.0.2.80
www    TXT \"stays\"
api    A   192.0.2.81
";

/// The config of these tests: DNS on `dns`, the API on `api`, zone `zone.zone`, and `pools`.
fn config(dns: SocketAddr, api: SocketAddr, zone_keys: &str, pools: &str) -> String {
    format!(
        "[server]\nlisten = [\"{dns}\"]\nudp_sockets = 2\nmin_serial_interval = \"0s\"\n\n\
         [api]\nlisten = \"{api}\"\n\n\
         [[zone]]\norigin = \"example.test\"\nfile = \"zone.zone\"\n{zone_keys}\n\n{pools}"
    )
}

/// A pool over `addresses` (last octets under `prefix`) checked by HTTP on `port`.
fn pool(name: &str, host: &str, prefix: &str, hosts: &[u8], port: u16) -> String {
    let addresses: Vec<String> = hosts.iter().map(|h| format!("\"{prefix}.{h}\"")).collect();
    format!(
        "[[pool]]\nname = \"{name}\"\nnames = [\"{host}.example.test\"]\naddresses = [{}]\n\
         [[pool.check]]\nkind = \"http\"\nurl = \"http://{{address}}:{port}/health\"\n\
         interval = \"100ms\"\ntimeout = \"1s\"\nfall = 1\nrise = 1\n\n",
        addresses.join(", ")
    )
}

fn sorted(mut list: Vec<String>) -> Vec<String> {
    list.sort();
    list
}

/// `dig +short` answer lines for `name` `record_type`, sorted.
fn short(server: SocketAddr, name: &str, record_type: &str) -> Vec<String> {
    sorted(
        dig(server, &["+short", "+norecurse", name, record_type])
            .lines()
            .map(str::to_string)
            .collect(),
    )
}

/// The `since` of each check of `address` in the status report.
fn check_since(api: SocketAddr, address: &str) -> Vec<String> {
    let report: serde_json::Value = serde_json::from_str(&get(api, "/status").unwrap().1).unwrap();
    let mut found = Vec::new();
    for pool in report["pools"].as_array().unwrap() {
        for entry in pool["addresses"].as_array().unwrap() {
            if entry["address"] == address {
                for check in entry["checks"].as_array().unwrap() {
                    found.push(check["since"].as_str().unwrap_or("-").to_string());
                }
            }
        }
    }
    found
}

#[test]
fn reload_under_a_query_loop_keeps_or_changes_the_answers_and_never_fails_a_query() {
    let prefix = "127.66.1";
    // .1 .2 .3 answer; .4 has no backend.
    let (port, _backends) = backends(prefix, vec![Behaviour::Healthy; 3]);
    let folder = tempfile::tempdir().unwrap();
    let dns: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let api: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let config_path = folder.path().join("config.toml");
    let zone_path = folder.path().join("zone.zone");
    std::fs::write(&zone_path, ZONE).unwrap();
    let first = config(dns, api, "", &pool("web", "www", prefix, &[1, 2], port));
    std::fs::write(&config_path, &first).unwrap();
    let mut server = crate::api::serve_ready(&config_path, api);
    let both = vec![format!("{prefix}.1"), format!("{prefix}.2")];
    assert_eq!(www_addresses(dns), both);
    let since_before = check_since(api, &format!("{prefix}.1"));
    let serial_before = dig_serial(dns, "example.test").unwrap();
    let queries = QueryLoop::start(dns);
    queries.await_queries(200);

    // 1. SIGHUP with a broken config: every error logged with file, line and key; the old
    // answers stay.
    std::fs::write(
        &config_path,
        first.replace("udp_sockets = 2", "udp_sockets = \"two\""),
    )
    .unwrap();
    server.signal("HUP");
    assert!(
        wait_until(CHANGE, || server.stderr_now().contains("reload refused")),
        "the refusal is logged: {}",
        server.stderr_now()
    );
    let log = server.stderr_now();
    let refused = log
        .lines()
        .find(|line| line.contains("reload refused"))
        .unwrap();
    assert!(
        refused.contains("config.toml")
            && refused.contains(":3")
            && refused.contains("udp_sockets"),
        "file, line and key: {refused}"
    );
    queries.await_queries(200);
    assert_eq!(www_addresses(dns), both);
    assert_eq!(dig_serial(dns, "example.test"), Some(serial_before));

    // 1b. The zone file replaced by an empty file, then SIGHUP: refused, naming the file;
    // the old zone is still served.
    std::fs::write(&config_path, &first).unwrap();
    std::fs::write(&zone_path, "").unwrap();
    server.signal("HUP");
    assert!(
        wait_until(CHANGE, || server
            .stderr_now()
            .matches("reload refused")
            .count()
            >= 2),
        "the refusal is logged: {}",
        server.stderr_now()
    );
    let log = server.stderr_now();
    let refused = log
        .lines()
        .filter(|line| line.contains("reload refused"))
        .nth(1)
        .unwrap();
    assert!(
        refused.contains("zone.zone"),
        "names the empty file: {refused}"
    );
    queries.await_queries(200);
    assert_eq!(www_addresses(dns), both);
    assert_eq!(dig_serial(dns, "example.test"), Some(serial_before));

    // 2. POST /reload with a broken zone file: 422 naming the file and line; old answers.
    std::fs::write(&zone_path, format!("{ZONE}bad    A   300.1.1.1\n")).unwrap();
    let (code, body) = request(api, "POST", "/reload", &[], "").unwrap();
    assert_eq!(code, 422, "{body}");
    assert!(body.contains("zone.zone:8"), "{body}");
    queries.await_queries(200);
    assert_eq!(www_addresses(dns), both);
    assert!(short(dns, "bad.example.test", "A").is_empty());

    // 3. `healthdns reload` with a valid change: .2 leaves www, a new pool answers api with
    // the healthy .3 (and not .4, which fails its cold-start probe), and the zone changes.
    std::fs::write(
        &zone_path,
        format!("{ZONE}new    TXT \"added by reload\"\n"),
    )
    .unwrap();
    let pools = pool("web", "www", prefix, &[1], port) + &pool("api", "api", prefix, &[3, 4], port);
    std::fs::write(&config_path, config(dns, api, "", &pools)).unwrap();
    let output = binary()
        .args(["reload", "--api", &format!("http://{api}")])
        .output()
        .unwrap();
    let text = output_text(&output);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("probes 2 added, 1 removed, 1 kept"), "{text}");
    assert!(text.contains("zone example.test."), "{text}");
    // In effect when the command returns.
    assert_eq!(www_addresses(dns), vec![format!("{prefix}.1")]);
    assert_eq!(
        short(dns, "api.example.test", "A"),
        vec![format!("{prefix}.3")]
    );
    assert_eq!(
        short(dns, "new.example.test", "TXT"),
        vec!["\"added by reload\"".to_string()]
    );
    let serial_after = dig_serial(dns, "example.test").unwrap();
    assert!(
        serial_after > serial_before,
        "{serial_before} -> {serial_after}"
    );
    // The unchanged (address, check) kept its verdict: its `since` did not move.
    assert_eq!(check_since(api, &format!("{prefix}.1")), since_before);
    // The new address with no backend is down, by its cold-start probe.
    let status = get(api, "/status").unwrap().1;
    assert!(status.contains(&format!("\"{prefix}.4\"")), "{status}");
    assert!(!status.contains(&format!("\"{prefix}.2\"")), "{status}");
    queries.await_queries(200);

    // 4. SIGHUP with nothing changed: same serial, nothing added or removed.
    server.signal("HUP");
    assert!(wait_until(CHANGE, || server
        .stderr_now()
        .matches("reloaded")
        .count()
        >= 2));
    assert_eq!(dig_serial(dns, "example.test"), Some(serial_after));
    queries.await_queries(200);

    let (sent, failures) = queries.finish();
    assert!(sent >= 1000, "{sent} queries");
    assert!(
        failures.is_empty(),
        "{} of {sent} failed: {failures:?}",
        failures.len()
    );
    server.signal("TERM");
    assert!(server.wait_exit(Duration::from_secs(10)).is_some());
}

/// A zone changed by a reload reaches a real BIND secondary at once by NOTIFY, and the
/// change is incremental: IXFR from the old serial lists exactly the added record.
#[test]
fn a_reloaded_zone_reaches_a_bind_secondary_by_notify_and_ixfr() {
    let folder = tempfile::tempdir().unwrap();
    let dns: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let api: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let named_port = free_port();
    let zone_keys =
        format!("allow_transfer = [\"127.0.0.1\"]\nalso_notify = [\"127.0.0.1:{named_port}\"]");
    let config_path = folder.path().join("config.toml");
    std::fs::write(folder.path().join("zone.zone"), ZONE).unwrap();
    std::fs::write(&config_path, config(dns, api, &zone_keys, "")).unwrap();
    let _server = crate::api::serve_ready(&config_path, api);
    let named = Named::secondary(&["example.test"], dns, named_port);
    assert!(
        wait_until(Duration::from_secs(20), || named.serial("example.test")
            == Some(100)),
        "named loads the zone:\n{}",
        named.log()
    );

    std::fs::write(
        folder.path().join("zone.zone"),
        format!("{ZONE}new    TXT \"added by reload\"\n"),
    )
    .unwrap();
    let (code, body) = request(api, "POST", "/reload", &[], "").unwrap();
    assert_eq!(code, 200, "{body}");
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(report["zones"][0]["change"], "changed", "{report:#}");
    assert_eq!(report["zones"][0]["serial"], 101, "{report:#}");

    // The refresh timer is an hour: only NOTIFY brings named to 101 this fast.
    assert!(
        wait_until(Duration::from_secs(5), || named.serial("example.test")
            == Some(101)),
        "named follows the reload:\n{}",
        named.log()
    );
    assert_eq!(
        short(named.address, "new.example.test", "TXT"),
        vec!["\"added by reload\"".to_string()]
    );
    let ixfr = dig(dns, &["+tcp", "example.test", "IXFR=100"]);
    let records: Vec<&str> = ixfr
        .lines()
        .filter(|line| !line.starts_with(';') && !line.trim().is_empty())
        .collect();
    // SOA 101, SOA 100, (nothing removed), SOA 101, the TXT, SOA 101.
    assert_eq!(records.len(), 5, "{ixfr}");
    assert!(records[3].contains("added by reload"), "{ixfr}");
}
