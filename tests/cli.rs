//! The built binary as a user runs it: `check`, and `serve` queried with the real `dig`.

use std::time::Duration;

use crate::support::{binary, dig, free_port, wait_until, Fixture, Process, TEST_ZONE};

/// Runs the binary with `arguments` and `--config config` to completion.
fn run(arguments: &[&str], config: impl AsRef<std::ffi::OsStr>) -> std::process::Output {
    binary()
        .args(arguments)
        .arg("--config")
        .arg(config)
        .output()
        .expect("run healthdns")
}

#[test]
fn check_accepts_the_shipped_config() {
    let output = binary()
        .args(["check", "--config"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("zone example.test. serial"), "{stdout}");
}

#[test]
fn check_reports_every_zone_error_with_file_and_line() {
    let broken = "$TTL 60\n@ SOA ns h 1 1 1 1 1\n@ NS ns\nns A 192.0.2.1\nwww A 300.1.1.1\nwww CNAME ns\nother.example.org. A 192.0.2.2\n";
    let fixture = Fixture::new("127.0.0.1:0", &[("example.test", broken)]);
    let output = run(&["check"], &fixture.config_path);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("zone0.zone:5: bad A record"), "{stderr}");
    assert!(
        stderr.contains("zone0.zone:7: other.example.org. is outside the zone"),
        "{stderr}"
    );
    // The CNAME at line 6 conflicts with nothing once line 5 failed; a valid A would.
    let with_conflict = broken.replace("300.1.1.1", "192.0.2.3");
    std::fs::write(fixture.path("zone0.zone"), with_conflict).unwrap();
    let output = run(&["check"], &fixture.config_path);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("zone0.zone:6: CNAME and other data at www.example.test."),
        "{stderr}"
    );
}

#[test]
fn check_names_the_line_and_key_of_a_config_typo() {
    let fixture = Fixture::new("127.0.0.1:0", &[("example.test", TEST_ZONE)]);
    let text = std::fs::read_to_string(&fixture.config_path).unwrap();
    std::fs::write(
        &fixture.config_path,
        text.replace("udp_sockets", "udp_sokets"),
    )
    .unwrap();
    let output = run(&["check"], &fixture.config_path);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr.contains("config.toml:3: unknown field `udp_sokets`"),
        "{stderr}"
    );
}

#[test]
fn serve_fails_on_a_zone_without_soa() {
    let fixture = Fixture::new(
        "127.0.0.1:0",
        &[("example.test", "$TTL 60\n@ NS ns\nns A 192.0.2.1\n")],
    );
    let output = run(&["serve"], &fixture.config_path);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr.contains("zone0.zone: no SOA record at the zone apex example.test."),
        "{stderr}"
    );
}

#[test]
fn served_binary_answers_dig_and_stops_on_sigterm() {
    let port = free_port();
    let fixture = Fixture::new(&format!("127.0.0.1:{port}"), &[("example.test", TEST_ZONE)]);
    let mut process = Process::spawn(
        binary()
            .args(["serve", "--config"])
            .arg(&fixture.config_path),
    );
    let address = format!("127.0.0.1:{port}").parse().unwrap();
    assert!(
        wait_until(Duration::from_secs(20), || dig(
            address,
            &["example.test", "SOA", "+short"]
        )
        .contains("hostmaster")),
        "server did not answer within 20 s"
    );

    let answer = dig(address, &["www.example.test", "A", "+norec"]);
    assert!(answer.contains("flags: qr aa;"), "{answer}");
    assert!(answer.contains("status: NOERROR"), "{answer}");
    assert!(answer.contains("192.0.2.10"), "{answer}");

    let answer = dig(address, &["nothing.example.test", "A"]);
    assert!(answer.contains("status: NXDOMAIN"), "{answer}");
    assert!(answer.contains("example.test.\t\t60\tIN\tSOA"), "{answer}");

    let answer = dig(address, &["example.org", "A"]);
    assert!(answer.contains("status: REFUSED"), "{answer}");

    // dig follows TC=1 to TCP by itself and gets the whole answer.
    let answer = dig(address, &["big.example.test", "TXT", "+noedns"]);
    assert!(
        answer.contains("Truncated, retrying in TCP mode"),
        "{answer}"
    );
    assert!(answer.contains("ANSWER: 6"), "{answer}");
    let answer = dig(address, &["big.example.test", "TXT", "+tcp", "+short"]);
    assert_eq!(answer.lines().count(), 6, "{answer}");

    let answer = dig(address, &["sub.example.test", "A", "+norec"]);
    assert!(
        answer.contains("flags: qr;"),
        "referral without AA: {answer}"
    );
    assert!(answer.contains("AUTHORITY: 2, ADDITIONAL: 2"), "{answer}");

    process.signal("TERM");
    let status = process
        .wait_exit(Duration::from_secs(10))
        .expect("stops on SIGTERM");
    assert!(
        status.success(),
        "graceful stop exits 0: {status:?}\n{}",
        process.stderr_text()
    );
}

#[test]
fn serve_dry_run_probes_and_logs_but_answers_every_address() {
    use crate::support::backend::{backends, Behaviour};

    let prefix = "127.61.8";
    let (http_port, mut backends) = backends(
        prefix,
        vec![
            Behaviour::Healthy,
            Behaviour::Healthy,
            Behaviour::Status(500),
        ],
    );
    let pool = format!(
        "[[pool]]\nname = \"web\"\nnames = [\"www.example.test\"]\n\
         addresses = [\"{prefix}.1\", \"{prefix}.2\", \"{prefix}.3\"]\n\
         [[pool.check]]\nkind = \"http\"\nurl = \"http://{{address}}:{http_port}/\"\n\
         interval = \"100ms\"\ntimeout = \"100ms\"\nfall = 2\nrise = 2\n"
    );
    let port = free_port();
    let fixture = Fixture::with_pools(
        &format!("127.0.0.1:{port}"),
        &[("example.test", TEST_ZONE)],
        &pool,
    );
    let mut process = Process::spawn(
        binary()
            .args(["serve", "--dry-run", "--config"])
            .arg(&fixture.config_path),
    );
    let address = format!("127.0.0.1:{port}").parse().unwrap();
    let every = format!("{prefix}.1\n{prefix}.2\n{prefix}.3");
    let sorted_answer = || {
        let mut lines: Vec<String> = dig(address, &["www.example.test", "A", "+short"])
            .lines()
            .map(String::from)
            .collect();
        lines.sort();
        lines.join("\n")
    };
    assert!(
        wait_until(Duration::from_secs(20), || sorted_answer() == every),
        "a dry run answers every address, the failing one too: {}",
        process.stderr_text()
    );
    backends[0].stop();
    // The publisher sees the change (fall = 2 at 100 ms) and logs what it would answer...
    let would = format!("dry run: would answer (serving every configured address) name=www.example.test. addresses=[\"{prefix}.2\"]");
    assert!(
        wait_until(Duration::from_secs(10), || process
            .stderr_now()
            .contains(&would)),
        "{}",
        process.stderr_now()
    );
    // ...and DNS still answers every address.
    assert_eq!(sorted_answer(), every);

    process.signal("TERM");
    assert!(process.wait_exit(Duration::from_secs(10)).is_some());
    let log = process.stderr_text();
    assert!(log.contains("dry run: probing and logging"), "{log}");
    assert!(
        log.contains(&format!("address down at start address={prefix}.3")),
        "{log}"
    );
    assert!(
        log.contains(&format!("address down address={prefix}.1")),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "dry run: would answer (serving every configured address) name=www.example.test. addresses=[\"{prefix}.2\"]"
        )),
        "{log}"
    );
}

/// Whether `gid` may open unprivileged ICMP sockets (net.ipv4.ping_group_range).
fn ping_group_allows(gid: u32) -> bool {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ping_group_range").unwrap_or_default();
    let bounds: Vec<u32> = range
        .split_whitespace()
        .filter_map(|value| value.parse().ok())
        .collect();
    matches!(bounds[..], [low, high] if low <= gid && gid <= high)
}

#[test]
fn serve_without_icmp_permission_names_the_fix() {
    use std::os::unix::fs::PermissionsExt;
    let setpriv = crate::support::require_tool("setpriv", "util-linux");
    let pool = "[[pool]]\nname = \"edge\"\nnames = [\"www.example.test\"]\n\
                addresses = [\"127.0.0.1\"]\n[[pool.check]]\nkind = \"icmp\"\n";
    let port = free_port();
    let fixture = Fixture::with_pools(
        &format!("127.0.0.1:{port}"),
        &[("example.test", TEST_ZONE)],
        pool,
    );
    // The unprivileged user must be able to read the config.
    std::fs::set_permissions(
        fixture.folder.path(),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let nobody = 65534;
    let healthdns = binary().get_program().to_owned();
    let mut process = Process::spawn(
        std::process::Command::new(setpriv)
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--inh-caps=-all",
            ])
            .arg(healthdns)
            .args(["serve", "--config"])
            .arg(&fixture.config_path),
    );
    let address = format!("127.0.0.1:{port}").parse().unwrap();
    if ping_group_allows(nobody) {
        // Unprivileged ping is allowed here: the server starts and answers.
        assert!(wait_until(Duration::from_secs(20), || dig(
            address,
            &["www.example.test", "A", "+short"]
        )
        .contains("127.0.0.1")));
        return;
    }
    let status = process
        .wait_exit(Duration::from_secs(20))
        .expect("startup fails without ICMP permission");
    let log = process.stderr_text();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("cannot open an ICMP socket for IPv4"), "{log}");
    assert!(log.contains("CAP_NET_RAW"), "{log}");
    assert!(log.contains("ping_group_range"), "{log}");
}

/// A task that dies is never silent: with a fault injected (debug builds only), `serve`
/// logs which task stopped and why, stops, and exits non-zero for systemd or Docker to
/// restart it.
#[test]
fn a_task_that_panics_makes_serve_exit_non_zero_with_the_cause() {
    use crate::support::backend::{backends, Behaviour};
    let prefix = "127.63.7";
    let (port, mut backends) = backends(prefix, vec![Behaviour::Healthy; 2]);
    let pool = crate::support::fast_pool(prefix, 2, port);
    for (task, needs_change) in [("snapshot writer", false), ("publisher", true)] {
        let listen = format!("127.0.0.1:{}", free_port());
        let fixture = Fixture::pool_zone(&listen, &pool);
        let mut process = Process::spawn(
            binary()
                .env("HEALTHDNS_FAULT", task)
                .args(["serve", "--config"])
                .arg(&fixture.config_path),
        );
        if needs_change {
            // The publisher fails at its first verdict change.
            assert!(
                wait_until(Duration::from_secs(10), || dig(
                    listen.parse().unwrap(),
                    &["+short", "www.example.test", "A"]
                )
                .lines()
                .count()
                    == 2),
                "the server answers before the change"
            );
            backends[1].stop();
        }
        let status = process
            .wait_exit(Duration::from_secs(10))
            .unwrap_or_else(|| panic!("serve exits when the {task} task dies"));
        let stderr = process.stderr_text();
        assert_eq!(status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains(&format!(
                "the {task} task stopped unexpectedly: panicked: injected fault"
            )),
            "{stderr}"
        );
        if needs_change {
            backends[1].resume();
        }
    }
}

/// `export` writes every pool address as if healthy and records its serial in the state file,
/// so the server never publishes that serial with other content; while a server runs with
/// that state file, `export` refuses.
#[test]
fn an_exported_serial_is_never_reused_by_the_server() {
    use crate::support::backend::{backends, Behaviour};
    let prefix = "127.63.8";
    let (port, mut backends) = backends(prefix, vec![Behaviour::Healthy; 2]);
    backends[1].stop();
    let pool = crate::support::fast_pool(prefix, 2, port);
    let listen = format!("127.0.0.1:{}", free_port());
    let fixture = Fixture::pool_zone(&listen, &pool);
    let out = fixture.path("exported");
    let export = |expect_success: bool| {
        let output = binary()
            .args(["export", "--out"])
            .arg(&out)
            .arg("--config")
            .arg(&fixture.config_path)
            .output()
            .unwrap();
        let text = crate::support::output_text(&output);
        assert_eq!(output.status.success(), expect_success, "{text}");
        text
    };
    export(true);
    let exported = std::fs::read_to_string(out.join("example.test.zone")).unwrap();
    assert!(
        exported.contains("every pool address as if healthy"),
        "{exported}"
    );
    assert!(exported.contains(&format!("{prefix}.1")) && exported.contains(&format!("{prefix}.2")));
    assert!(
        exported.contains(" 100 3600 "),
        "the zone file's serial: {exported}"
    );

    // The server sees .2 down: other content, so another serial than the exported one.
    let mut process = Process::spawn(
        binary()
            .args(["serve", "--config"])
            .arg(&fixture.config_path),
    );
    let address = listen.parse().unwrap();
    assert!(wait_until(Duration::from_secs(20), || {
        crate::support::dig_serial(address, "example.test").is_some()
    }));
    assert_eq!(
        crate::support::dig_serial(address, "example.test"),
        Some(101)
    );
    let refused = export(false);
    assert!(
        refused.contains("a server is running with this state file"),
        "{refused}"
    );
    process.signal("TERM");
    assert!(process.wait_exit(Duration::from_secs(10)).is_some());
}

/// A config that cannot be read names its path and the I/O error, once.
#[test]
fn a_missing_config_is_named_once_with_its_cause() {
    let output = run(&["serve"], "/nonexistent/healthdns.toml");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("/nonexistent/healthdns.toml: cannot read config"),
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("No such file or directory").count(),
        1,
        "{stderr}"
    );
}

/// A port that cannot be bound fails `serve` at once, before any probing, with the cause
/// once and what to do about it: a taken port names the other server, a privileged port
/// names CAP_NET_BIND_SERVICE.
#[test]
fn serve_names_the_fix_for_a_port_it_cannot_bind() {
    use std::os::unix::fs::PermissionsExt;
    let port = free_port();
    let _taken = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let pool = "[[pool]]\nname = \"edge\"\nnames = [\"www.example.test\"]\n\
                addresses = [\"127.0.0.1\"]\n[[pool.check]]\nkind = \"tcp\"\nport = 9\n";
    let fixture = Fixture::with_pools(
        &format!("127.0.0.1:{port}"),
        &[("example.test", TEST_ZONE)],
        pool,
    );
    let output = run(&["serve"], &fixture.config_path);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(
        stderr.matches("Address already in use").count(),
        1,
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{stderr}"
    );
    assert!(
        stderr.contains("another process serves this address"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("cold-start probe round"),
        "bind comes first: {stderr}"
    );

    // A privileged port as an unprivileged user, in a network namespace of the test's own:
    // there net.ipv4.ip_unprivileged_port_start is the kernel default (1024), whatever the
    // host (or a container runtime) set it to.
    let setpriv = crate::support::require_tool("setpriv", "util-linux");
    let host = crate::support::netns::Host::create(
        "bind",
        ("198.51.100.17", "198.51.100.18"),
        ("2001:db8:64:f::1", "2001:db8:64:f::2"),
    );
    let fixture = Fixture::with_pools("127.0.0.1:1023", &[("example.test", TEST_ZONE)], pool);
    std::fs::set_permissions(
        fixture.folder.path(),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let output = std::process::Command::new("ip")
        .args(["netns", "exec", &host.namespace])
        .arg(setpriv)
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(binary().get_program())
        .args(["serve", "--config"])
        .arg(&fixture.config_path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot listen on 127.0.0.1:1023"),
        "{stderr}"
    );
    assert!(stderr.contains("CAP_NET_BIND_SERVICE"), "{stderr}");
}

/// Shell completions come from clap_complete and are valid shell.
#[test]
fn completions_are_generated_for_bash() {
    let output = binary().args(["completions", "bash"]).output().unwrap();
    assert!(output.status.success());
    let script = String::from_utf8_lossy(&output.stdout);
    for word in ["serve", "check", "export", "status", "--nagios"] {
        assert!(script.contains(word), "{word} missing");
    }
    let folder = tempfile::tempdir().unwrap();
    let path = folder.path().join("healthdns.bash");
    std::fs::write(&path, script.as_bytes()).unwrap();
    let syntax = std::process::Command::new("bash")
        .arg("-n")
        .arg(&path)
        .status()
        .unwrap();
    assert!(syntax.success(), "bash -n accepts the script");
}

/// systemd `Type=notify`: READY=1 once DNS is answered, WATCHDOG=1 pings while the publisher
/// is alive (WATCHDOG_USEC), STOPPING=1 at shutdown, on a real notify socket.
#[test]
fn serve_notifies_systemd_readiness_and_feeds_the_watchdog() {
    use std::os::unix::net::UnixDatagram;
    let folder = tempfile::tempdir().unwrap();
    let socket_path = folder.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let port = free_port();
    let fixture = Fixture::new(&format!("127.0.0.1:{port}"), &[("example.test", TEST_ZONE)]);
    // systemd sets WATCHDOG_PID to the service's PID: the shell's, which `exec` keeps.
    let mut process = Process::spawn(
        std::process::Command::new("sh")
            .env("NOTIFY_SOCKET", &socket_path)
            .env("WATCHDOG_USEC", "200000")
            .arg("-c")
            .arg("WATCHDOG_PID=$$ exec \"$0\" serve --config \"$1\"")
            .arg(binary().get_program())
            .arg(&fixture.config_path),
    );
    let mut messages: Vec<String> = Vec::new();
    let mut buffer = [0u8; 1024];
    let mut receive_until = |wanted: &dyn Fn(&[String]) -> bool| {
        wait_until(Duration::from_secs(10), || {
            if let Ok(length) = socket.recv(&mut buffer) {
                messages.push(String::from_utf8_lossy(&buffer[..length]).into_owned());
            }
            wanted(&messages)
        })
    };
    assert!(
        receive_until(&|messages| messages.iter().any(|message| message.contains("READY=1"))),
        "READY=1"
    );
    // Ready means answering.
    let address = format!("127.0.0.1:{port}").parse().unwrap();
    assert!(dig(address, &["example.test", "SOA", "+short"]).contains("hostmaster"));
    assert!(
        receive_until(&|messages| messages
            .iter()
            .filter(|message| message.contains("WATCHDOG=1"))
            .count()
            >= 3),
        "watchdog pings every WATCHDOG_USEC / 2"
    );
    process.signal("TERM");
    assert!(
        receive_until(&|messages| messages
            .iter()
            .any(|message| message.contains("STOPPING=1"))),
        "STOPPING=1"
    );
    assert!(process.wait_exit(Duration::from_secs(10)).is_some());
}

/// The container's config is valid, with the shipped zones next to it.
#[test]
fn the_container_config_checks() {
    let folder = tempfile::tempdir().unwrap();
    let root = env!("CARGO_MANIFEST_DIR");
    std::fs::copy(
        format!("{root}/contrib/docker/config.toml"),
        folder.path().join("config.toml"),
    )
    .unwrap();
    std::fs::create_dir(folder.path().join("zones")).unwrap();
    std::fs::copy(
        format!("{root}/zones/example.test.zone"),
        folder.path().join("zones/example.test.zone"),
    )
    .unwrap();
    let output = run(&["check"], folder.path().join("config.toml"));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The shipped systemd unit passes `systemd-analyze verify` (with this build's binary path).
#[test]
fn the_systemd_unit_verifies() {
    let analyze = crate::support::require_tool("systemd-analyze", "systemd");
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/contrib/healthdns.service"
    ))
    .unwrap();
    assert!(unit.contains("Type=notify") && unit.contains("WatchdogSec="));
    let folder = tempfile::tempdir().unwrap();
    let path = folder.path().join("healthdns.service");
    let binary_path = binary().get_program().to_string_lossy().into_owned();
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/healthdns", &binary_path),
    )
    .unwrap();
    let output = std::process::Command::new(analyze)
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let text = crate::support::output_text(&output);
    assert!(output.status.success() && text.trim().is_empty(), "{text}");
}

/// `--log-format json` writes one JSON object per log line, transitions included.
#[test]
fn logs_can_be_json_lines() {
    use crate::support::backend::{backends, Behaviour};
    let prefix = "127.63.9";
    let (port, mut backends) = backends(prefix, vec![Behaviour::Healthy; 2]);
    let listen = format!("127.0.0.1:{}", free_port());
    let fixture = Fixture::pool_zone(&listen, &crate::support::fast_pool(prefix, 2, port));
    let mut process = Process::spawn(
        binary()
            .args(["--log-format", "json", "serve", "--config"])
            .arg(&fixture.config_path),
    );
    assert!(wait_until(Duration::from_secs(20), || process
        .stderr_now()
        .contains("serving DNS")));
    backends[1].stop();
    assert!(wait_until(Duration::from_secs(5), || process
        .stderr_now()
        .contains("address down")));
    process.signal("TERM");
    assert!(process.wait_exit(Duration::from_secs(10)).is_some());
    let log = process.stderr_text();
    for line in log.lines() {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|error| panic!("{error}: {line}"));
        assert!(
            value["level"].is_string() && value["fields"].is_object(),
            "{line}"
        );
    }
    let down = log
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .find(|value| value["fields"]["message"] == "address down")
        .expect("the transition is one JSON line");
    assert_eq!(down["fields"]["address"], format!("{prefix}.2"));
    assert!(down["fields"]["reason"]
        .as_str()
        .is_some_and(|reason| reason.contains("Connection refused")));
}
