//! The HTTP API of the real binary: Prometheus metrics that follow a dying backend, the status
//! report as JSON, health probes, and `healthdns status` (table and Nagios exit codes).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use crate::support::backend::{backends, Behaviour};
use crate::support::{binary, fast_pool, free_port, wait_until, Fixture, Process, POOL_ZONE};

/// One GET over HTTP/1.1: (status code, body).
pub fn get(address: SocketAddr, path: &str) -> Option<(u16, String)> {
    request(address, "GET", path, &[], "")
}

/// One request over HTTP/1.1 with extra `headers` and a `body`: (status code, body).
pub fn request(
    address: SocketAddr,
    method: &str,
    path: &str,
    headers: &[&str],
    body: &str,
) -> Option<(u16, String)> {
    let mut stream = std::net::TcpStream::connect_timeout(&address, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for header in headers {
        head.push_str(header);
        head.push_str("\r\n");
    }
    write!(stream, "{head}\r\n{body}").ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n")?.1.to_string();
    Some((status, body))
}

/// Prometheus text format: every sample as "name{labels}" -> value (HELP/TYPE skipped).
pub fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("a sample line");
            (series.to_string(), value.parse().expect("a sample value"))
        })
        .collect()
}

struct Server {
    process: Process,
    api: SocketAddr,
    _fixture: Fixture,
}

fn start(prefix: &str, port: u16) -> Server {
    let api: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    start_with(prefix, port, api, "")
}

/// A server whose API listens on `api`, with `api_keys` in its `[api]` table (a `token_file`
/// is written as `api.token`).
fn start_with(prefix: &str, port: u16, api: SocketAddr, api_keys: &str) -> Server {
    let fixture = Fixture::custom(
        &format!("127.0.0.1:{}", free_port()),
        &[("example.test", POOL_ZONE)],
        "",
        "",
        &format!(
            "{}\n[api]\nlisten = \"{api}\"\n{api_keys}\n",
            // A killed backend is refused at once; a long timeout keeps a healthy one from
            // flapping on a loaded machine, which would change the counts these tests check.
            fast_pool(prefix, 2, port).replace("timeout = \"100ms\"", "timeout = \"1s\"")
        ),
    );
    if api_keys.contains("token_file") {
        std::fs::write(fixture.path("api.token"), "0123456789abcdef-test-token\n").unwrap();
    }
    Server {
        process: serve_ready(&fixture.config_path, api),
        api,
        _fixture: fixture,
    }
}

/// `healthdns serve` on `config`, once its API at `api` says ready.
pub fn serve_ready(config: &std::path::Path, api: SocketAddr) -> Process {
    serve_ready_with(&mut binary(), config, api)
}

/// `serve_ready` with `command` (the binary, with its environment set by the caller).
pub fn serve_ready_with(
    command: &mut std::process::Command,
    config: &std::path::Path,
    api: SocketAddr,
) -> Process {
    let process = Process::spawn(command.args(["serve", "--config"]).arg(config));
    assert!(
        wait_until(Duration::from_secs(20), || get(api, "/readyz")
            .is_some_and(|(code, _)| code == 200)),
        "the API says ready: {}",
        process.stderr_now()
    );
    process
}

#[test]
fn metrics_and_status_follow_a_dying_backend() {
    let prefix = "127.65.1";
    let (port, mut backends) = backends(prefix, vec![Behaviour::Healthy; 2]);
    let mut server = start(prefix, port);
    assert_eq!(get(server.api, "/healthz").unwrap().0, 200);
    let up = |address: &str| format!("healthdns_address_up{{pool=\"web\",address=\"{address}\"}}");
    let scrape = || samples(&get(server.api, "/metrics").expect("metrics").1);
    let before = scrape();
    assert_eq!(
        before.get(&up(&format!("{prefix}.2"))),
        Some(&1.0),
        "{before:?}"
    );
    // Probes by pool, address, check and result; the checker's own health (the age of each
    // check's last probe, which a working checker keeps below its interval); serials.
    let probes = |metrics: &BTreeMap<String, f64>, host: u8, result: &str| {
        metrics
            .get(&format!(
                "healthdns_probes_total{{pool=\"web\",address=\"{prefix}.{host}\",check=\"http http://{{address}}:{port}/health\",result=\"{result}\"}}"
            ))
            .copied()
            .unwrap_or(0.0)
    };
    let age = format!(
        "healthdns_probe_age_seconds{{address=\"{prefix}.2\",check=\"http http://{{address}}:{port}/health\"}}"
    );
    assert!(
        before.get(&age).is_some_and(|age| *age < 1.0),
        "{age}: {before:?}"
    );
    assert_eq!(
        before.get("healthdns_zone_serial{zone=\"example.test.\"}"),
        Some(&100.0)
    );
    assert!(
        before.keys().any(|series| series
            .starts_with("healthdns_probe_seconds_bucket{kind=\"http\",result=\"pass\"")),
        "a probe-latency histogram: {before:?}"
    );
    let passed_before = probes(&before, 2, "pass");

    backends[1].stop();
    assert!(wait_until(Duration::from_secs(5), || scrape()
        .get(&up(&format!("{prefix}.2")))
        == Some(&0.0)));
    let after = scrape();
    assert_eq!(after.get(&up(&format!("{prefix}.1"))), Some(&1.0));
    assert_eq!(
        after.get("healthdns_transitions_total{to=\"down\"}"),
        Some(&1.0),
        "{after:?}"
    );
    assert!(probes(&after, 2, "fail") >= 1.0, "{after:?}");
    assert!(probes(&after, 2, "pass") >= passed_before, "{after:?}");
    assert!(
        wait_until(Duration::from_secs(5), || probes(&scrape(), 1, "pass")
            > 0.0),
        "{after:?}"
    );
    assert_eq!(
        after.get("healthdns_zone_serial{zone=\"example.test.\"}"),
        Some(&101.0)
    );
    assert!(
        after
            .get("healthdns_snapshot_swaps_total{cause=\"health\"}")
            .is_some_and(|swaps| *swaps >= 1.0),
        "{after:?}"
    );

    let (code, body) = get(server.api, "/status").unwrap();
    assert_eq!(code, 200, "{body}");
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    let addresses = &report["pools"][0]["addresses"];
    assert_eq!(addresses[0]["state"], "up", "{report:#}");
    assert_eq!(addresses[1]["state"], "down", "{report:#}");
    let reason = addresses[1]["checks"][0]["reason"]
        .as_str()
        .unwrap_or_default();
    assert!(reason.contains("Connection refused"), "{report:#}");
    assert!(addresses[1]["since"]
        .as_str()
        .is_some_and(|since| since.ends_with('Z')));
    assert_eq!(report["answers"][0]["name"], "www.example.test.");
    assert_eq!(
        report["answers"][0]["addresses"],
        serde_json::json!([format!("{prefix}.1")])
    );
    assert_eq!(report["zones"][0]["origin"], "example.test.");
    assert_eq!(report["zones"][0]["serial"], 101);

    // Queries by transport, rcode and qtype; answer times sampled one in 64.
    let dns: SocketAddr = server._fixture.listen_address();
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut buffer = [0u8; 1500];
    for name in std::iter::repeat_n("www.example.test.", 100)
        .chain(std::iter::repeat_n("nothing.example.test.", 30))
    {
        let query = crate::support::query(name, hickory_proto::rr::RecordType::A, None);
        socket.send_to(&query.to_vec().unwrap(), dns).unwrap();
        socket.recv(&mut buffer).unwrap();
    }
    let counted = |metrics: &BTreeMap<String, f64>, rcode: &str| {
        metrics
            .get(&format!(
                "healthdns_queries_total{{transport=\"udp\",rcode=\"{rcode}\",qtype=\"A\"}}"
            ))
            .copied()
            .unwrap_or(0.0)
    };
    // A packet that is not a query (QR set) is dropped unanswered, and counted.
    let mut response_packet =
        crate::support::query("www.example.test.", hickory_proto::rr::RecordType::A, None)
            .to_vec()
            .unwrap();
    response_packet[2] |= 0x80;
    socket.send_to(&response_packet, dns).unwrap();
    let dropped = "healthdns_malformed_total{transport=\"udp\",result=\"dropped\"}";
    // Counts are flushed when a UDP thread goes idle (100 ms).
    assert!(wait_until(Duration::from_secs(5), || {
        let metrics = scrape();
        counted(&metrics, "NOERROR") >= 100.0
            && counted(&metrics, "NXDOMAIN") >= 30.0
            && metrics.get(dropped).is_some_and(|count| *count >= 1.0)
    }));
    let metrics = scrape();
    assert!(
        metrics
            .keys()
            .any(|series| series.starts_with("healthdns_answer_seconds")),
        "{metrics:?}"
    );

    assert_eq!(get(server.api, "/nothing").unwrap().0, 404);
    server.process.signal("TERM");
    assert!(server.process.wait_exit(Duration::from_secs(10)).is_some());
}

#[test]
fn status_prints_a_table_and_nagios_exit_codes() {
    let prefix = "127.65.2";
    let (port, mut backends) = backends(prefix, vec![Behaviour::Healthy; 2]);
    let server = start(prefix, port);
    let url = format!("http://{}", server.api);
    let status = |nagios: bool| {
        let mut command = binary();
        command.args(["status", "--api", &url]);
        if nagios {
            command.arg("--nagios");
        }
        let output = command.output().unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
        )
    };
    let (code, table) = status(false);
    assert_eq!(code, Some(0), "{table}");
    assert!(table.starts_with("POOL"), "{table}");
    assert!(
        table.lines().any(|line| line.starts_with("web")
            && line.contains(&format!("{prefix}.1"))
            && line.contains(" up ")),
        "{table}"
    );
    let (code, line) = status(true);
    assert_eq!(
        (code, line.starts_with("HEALTHDNS OK")),
        (Some(0), true),
        "{line}"
    );

    backends[1].stop();
    assert!(wait_until(Duration::from_secs(5), || status(true).0 == Some(1)));
    let (_, line) = status(true);
    assert!(line.starts_with("HEALTHDNS WARNING - web 1/2 up"), "{line}");

    backends[0].stop();
    assert!(wait_until(Duration::from_secs(5), || status(true).0 == Some(2)));
    let (_, line) = status(true);
    assert!(
        line.starts_with("HEALTHDNS CRITICAL - web 0/2 up"),
        "{line}"
    );

    // Nothing listens here: UNKNOWN.
    let output = binary()
        .args(["status", "--nagios", "--api"])
        .arg(format!("http://127.0.0.1:{}", free_port()))
        .output()
        .unwrap();
    let line = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(3), "{line}");
    assert!(line.starts_with("HEALTHDNS UNKNOWN"), "{line}");
}

/// The status page in a real headless Chromium: the DOM shows a backend up, then down after
/// it is killed.
#[test]
fn the_status_page_shows_a_killed_backend_in_chromium() {
    let chromium = crate::support::require_tool("chromium", "chromium");
    let prefix = "127.65.3";
    let (port, mut backends) = backends(prefix, vec![Behaviour::Healthy; 2]);
    let mut server = start(prefix, port);
    let profile = tempfile::tempdir().unwrap();
    let dom = || {
        let output = std::process::Command::new(&chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-background-networking",
                "--disable-gpu",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("--dump-dom")
            .arg(format!("http://{}/", server.api))
            .output()
            .expect("run chromium");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let row = |state: &str| format!("data-address=\"{prefix}.2\" data-state=\"{state}\"");
    let page = dom();
    assert!(page.contains(&row("up")), "{page}");
    assert!(
        page.contains("<td>example.test.</td><td>100</td>"),
        "{page}"
    );

    backends[1].stop();
    assert!(wait_until(Duration::from_secs(5), || get(
        server.api, "/status"
    )
    .is_some_and(|(_, body)| body.contains("\"state\":\"down\""))));
    let page = dom();
    assert!(page.contains(&row("down")), "{page}");
    assert!(page.contains("Connection refused"), "{page}");
    assert!(
        page.contains("<td>example.test.</td><td>101</td>"),
        "{page}"
    );
    server.process.signal("TERM");
    assert!(server.process.wait_exit(Duration::from_secs(10)).is_some());
}

/// Forcing an address down for maintenance takes it out of the answers at once, whatever its
/// probes say; `auto` gives it back to them; forcing up answers a dead backend. Through the
/// CLI and the API; status and metrics show the override.
#[test]
fn force_takes_an_address_out_and_back_through_the_cli_and_api() {
    let prefix = "127.65.4";
    let (port, mut backends) = backends(prefix, vec![Behaviour::Healthy; 2]);
    let mut server = start(prefix, port);
    let dns: SocketAddr = server._fixture.listen_address();
    let both = vec![format!("{prefix}.1"), format!("{prefix}.2")];
    assert_eq!(crate::support::www_addresses(dns), both);
    let url = format!("http://{}", server.api);
    let force = |state: &str| {
        let output = binary()
            .args(["force", "web", &format!("{prefix}.2"), state, "--api", &url])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    // Down through the CLI: out of the answer by the time the command returns.
    force("down");
    assert_eq!(
        crate::support::www_addresses(dns),
        vec![format!("{prefix}.1")]
    );
    let (_, body) = get(server.api, "/status").unwrap();
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        report["pools"][0]["addresses"][1]["override"], "down",
        "{report:#}"
    );
    assert_eq!(
        report["pools"][0]["addresses"][1]["state"], "down",
        "{report:#}"
    );
    let metrics = samples(&get(server.api, "/metrics").unwrap().1);
    assert_eq!(
        metrics.get(&format!(
            "healthdns_override{{pool=\"web\",address=\"{prefix}.2\"}}"
        )),
        Some(&-1.0)
    );
    // Auto through the API: back to its (passing) probes.
    let (code, text) = request(
        server.api,
        "POST",
        &format!("/pools/web/addresses/{prefix}.2/force"),
        &["Content-Type: application/json"],
        "{\"state\": \"auto\"}",
    )
    .unwrap();
    assert_eq!(code, 200, "{text}");
    assert_eq!(crate::support::www_addresses(dns), both);
    // Up: a dead backend stays answered while forced up.
    backends[1].stop();
    assert!(wait_until(
        Duration::from_secs(5),
        || crate::support::www_addresses(dns) == vec![format!("{prefix}.1")]
    ));
    force("up");
    assert_eq!(crate::support::www_addresses(dns), both);
    force("auto");
    assert_eq!(
        crate::support::www_addresses(dns),
        vec![format!("{prefix}.1")]
    );

    // Malformed requests get a clear 4xx and change nothing.
    let path = format!("/pools/web/addresses/{prefix}.1/force");
    for (path, body, expected) in [
        (path.as_str(), "{\"state\": \"sideways\"}", 400),
        (path.as_str(), "not json", 400),
        (path.as_str(), "{\"state\": \"down\", \"extra\": 1}", 400),
        (
            "/pools/web/addresses/not-an-ip/force",
            "{\"state\": \"down\"}",
            400,
        ),
        (
            "/pools/nope/addresses/127.0.0.1/force",
            "{\"state\": \"down\"}",
            404,
        ),
        (
            "/pools/web/addresses/192.0.2.200/force",
            "{\"state\": \"down\"}",
            404,
        ),
    ] {
        let (code, text) = request(server.api, "POST", path, &[], body).unwrap();
        assert_eq!(code, expected, "{path} {body}: {text}");
    }
    assert_eq!(
        crate::support::www_addresses(dns),
        vec![format!("{prefix}.1")]
    );
    assert_eq!(get(server.api, "/healthz").unwrap().0, 200, "still serving");
    server.process.signal("TERM");
    assert!(server.process.wait_exit(Duration::from_secs(10)).is_some());
}

/// With a token, changes need it (401 without or with a wrong one); without a token, changes
/// are allowed only from loopback (403 from a host in a network namespace of the test's own).
#[test]
fn changes_need_the_token_or_loopback() {
    let prefix = "127.65.5";
    let (port, _backends) = backends(prefix, vec![Behaviour::Healthy; 2]);
    let api: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let server = start_with(prefix, port, api, "token_file = \"api.token\"");
    let path = format!("/pools/web/addresses/{prefix}.2/force");
    let body = "{\"state\": \"down\"}";
    for headers in [
        &[][..],
        &["Authorization: Bearer wrong-token-0123456789"][..],
    ] {
        let (code, text) = request(server.api, "POST", &path, headers, body).unwrap();
        assert_eq!(code, 401, "{text}");
    }
    let token_file = server._fixture.path("api.token");
    let output = binary()
        .args(["force", "web", &format!("{prefix}.2"), "down", "--api"])
        .arg(format!("http://{api}"))
        .arg("--token-file")
        .arg(&token_file)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Reading needs no token.
    assert_eq!(get(server.api, "/status").unwrap().0, 200);

    // No token: only loopback may change state. The API listens on the host end of a veth
    // pair, and the request comes from the namespace's end.
    let host = crate::support::netns::Host::create(
        "api",
        ("198.51.100.13", "198.51.100.14"),
        ("2001:db8:64:e::1", "2001:db8:64:e::2"),
    );
    let api: SocketAddr = format!("198.51.100.13:{}", free_port()).parse().unwrap();
    let open = start_with(prefix, port, api, "");
    let output = std::process::Command::new("ip")
        .args(["netns", "exec", &host.namespace])
        .arg(binary().get_program())
        .args(["force", "web", &format!("{prefix}.2"), "down", "--api"])
        .arg(format!("http://{api}"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("403"), "{stderr}");
    drop(open);
}

/// A restarted server starts from what it last believed: an address that was down stays out
/// of the first answer although its backend is back (it needs `rise` passes), and an override
/// survives. A damaged state file is set aside, logged, and the server starts.
#[test]
fn verdicts_and_overrides_survive_a_restart() {
    let prefix = "127.65.6";
    let (port, mut backends) = backends(prefix, vec![Behaviour::Healthy; 3]);
    let api: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let dns: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let pool = format!(
        "[[pool]]\nname = \"web\"\nnames = [\"www.example.test\"]\n\
         addresses = [\"{prefix}.1\", \"{prefix}.2\", \"{prefix}.3\"]\n\
         [[pool.check]]\nkind = \"http\"\nurl = \"http://{{address}}:{port}/health\"\n\
         interval = \"300ms\"\ntimeout = \"1s\"\nfall = 1\nrise = 3\n\
         [api]\nlisten = \"{api}\"\n"
    );
    let fixture = Fixture::custom(
        &dns.to_string(),
        &[("example.test", POOL_ZONE)],
        "",
        "",
        &pool,
    );
    let serve = || serve_ready(&fixture.config_path, api);
    let address = |host: u8| format!("{prefix}.{host}");
    let www = || crate::support::www_addresses(dns);

    let mut process = serve();
    assert_eq!(www(), vec![address(1), address(2), address(3)]);
    let output = binary()
        .args(["force", "web", &address(1), "down", "--api"])
        .arg(format!("http://{api}"))
        .output()
        .unwrap();
    assert!(output.status.success());
    backends[1].stop();
    assert!(wait_until(Duration::from_secs(5), || www() == vec![address(3)]));
    process.signal("TERM");
    assert!(process.wait_exit(Duration::from_secs(10)).is_some());
    let state = std::fs::read_to_string(fixture.path("healthdns.state")).unwrap();
    assert!(state.contains("[[health.overrides]]"), "{state}");

    // .2's backend is back before the restart; without the saved verdict the cold-start probe
    // alone would put it in the first answer.
    backends[1].resume();
    let mut process = serve();
    assert_eq!(
        www(),
        vec![address(3)],
        "the first answer after the restart"
    );
    let log = process.stderr_now();
    assert!(log.contains("health state restored"), "{log}");
    // After `rise` passes .2 returns; .1 stays forced down.
    assert!(wait_until(Duration::from_secs(5), || www()
        == vec![address(2), address(3)]));
    process.signal("TERM");
    assert!(process.wait_exit(Duration::from_secs(10)).is_some());

    // A damaged state file: set aside, logged, and the server starts.
    std::fs::write(fixture.path("healthdns.state"), "zones = [\n").unwrap();
    let mut process = serve();
    let log = process.stderr_now();
    assert!(
        log.contains("the state file is damaged; set aside"),
        "{log}"
    );
    let aside = std::fs::read_dir(fixture.folder.path())
        .unwrap()
        .filter_map(Result::ok)
        .find(|entry| {
            entry
                .file_name()
                .to_string_lossy()
                .starts_with("healthdns.state.damaged-")
        })
        .expect("the damaged file is kept under another name");
    assert_eq!(
        std::fs::read_to_string(aside.path()).unwrap(),
        "zones = [\n"
    );
    process.signal("TERM");
    assert!(process.wait_exit(Duration::from_secs(10)).is_some());
}
