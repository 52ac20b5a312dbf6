//! Faults the server must live through without losing anything: a full disk under its
//! snapshot and state files (serving goes on, the failure is reported and retried), and a
//! wall clock that jumps (probes run on the monotonic clock).

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::api::{get, samples, serve_ready, serve_ready_with};
use crate::golden::assert_checkzone_clean;
use crate::support::backend::{backends, Behaviour};
use crate::support::{
    binary, dig_serial, fast_pool as pool, free_port, wait_until, www_addresses, FakeClock,
    Fixture, CHANGE, POOL_ZONE as ZONE,
};

/// A tmpfs of a few hundred KiB on a folder of its own, unmounted when dropped. Needs root.
struct SmallDisk {
    folder: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> Self {
        // SAFETY: geteuid has no preconditions.
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "this test mounts a small tmpfs to fill it up, which needs root; run the suite as root (CI does)"
        );
        let folder = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(folder.path())
            .status()
            .expect("run mount");
        assert!(status.success(), "mount -t tmpfs failed");
        Self { folder }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.folder.path().join(name)
    }

    /// Writes a file until the disk is full (the tmpfs bounds it).
    fn fill(&self) {
        let mut file = std::fs::File::create(self.path("filler")).unwrap();
        let chunk = vec![0u8; 16 * 1024];
        while file.write_all(&chunk).is_ok() {}
        while file.write_all(&[0]).is_ok() {}
    }

    fn free(&self) {
        std::fs::remove_file(self.path("filler")).unwrap();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.folder.path())
            .status();
    }
}

/// The pool zone with two fast-checked backends on `prefix` and the API on a free port.
fn with_api(prefix: &str, port: u16) -> (Fixture, SocketAddr) {
    let api: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let fixture = Fixture::custom(
        &format!("127.0.0.1:{}", free_port()),
        &[("example.test", ZONE)],
        "",
        "",
        &format!("{}\n[api]\nlisten = \"{api}\"\n", pool(prefix, 2, port)),
    );
    (fixture, api)
}

/// The serial in the SOA line of a snapshot file, if the file is there.
fn snapshot_serial(path: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().find(|line| line.contains("\tSOA\t"))?;
    let fields: Vec<&str> = line.split_whitespace().collect();
    let at = fields.iter().position(|field| *field == "SOA")?;
    fields.get(at + 3)?.parse().ok()
}

#[test]
fn a_full_disk_keeps_answers_reports_the_failure_and_retries() {
    let disk = SmallDisk::mount("256k");
    let prefix = "127.62.7";
    let (port, mut backends) = backends(prefix, vec![Behaviour::Healthy; 2]);
    let api: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let state = disk.path("healthdns.state");
    let snapshot = disk.path("example.test.zone");
    let fixture = Fixture::custom(
        &format!("127.0.0.1:{}", free_port()),
        &[("example.test", ZONE)],
        &format!(
            "state_file = \"{}\"\nmin_serial_interval = \"100ms\"",
            state.display()
        ),
        &format!("snapshot = \"{}\"", snapshot.display()),
        &format!("{}\n[api]\nlisten = \"{api}\"\n", pool(prefix, 2, port)),
    );
    let mut server = serve_ready(&fixture.config_path, api);
    let dns = fixture.listen_address();
    assert!(wait_until(CHANGE, || snapshot_serial(&snapshot) == Some(100)));

    disk.fill();
    backends[0].stop();
    // Answers go on: the new serial and address set are served from memory.
    assert!(
        wait_until(CHANGE, || dig_serial(dns, "example.test") == Some(101)
            && www_addresses(dns) == ["127.62.7.2"]),
        "answers follow with the disk full"
    );
    // The failure is in the status (with retries counted) and in the metrics.
    let status = || {
        get(api, "/status")
            .map(|(_, body)| body)
            .unwrap_or_default()
    };
    assert!(
        wait_until(Duration::from_secs(10), || {
            let report: serde_json::Value = serde_json::from_str(&status()).unwrap_or_default();
            report["write_errors"].as_array().is_some_and(|problems| {
                problems.iter().any(|problem| {
                    problem["file"].as_str() == snapshot.to_str()
                        && problem["error"]
                            .as_str()
                            .is_some_and(|error| error.contains("No space left"))
                        && problem["failures"].as_u64() >= Some(2)
                })
            })
        }),
        "the status shows the snapshot file failing and retried: {}",
        status()
    );
    let metrics = samples(&get(api, "/metrics").unwrap().1);
    assert!(
        metrics["healthdns_snapshot_write_failures_total"] >= 2.0,
        "{metrics:?}"
    );
    assert!(metrics["healthdns_files_failing"] >= 1.0, "{metrics:?}");
    // The previous file is whole.
    assert_eq!(snapshot_serial(&snapshot), Some(100));
    assert_checkzone_clean("example.test", &std::fs::read_to_string(&snapshot).unwrap());

    // Space comes back: the retry writes the newest version, and the problem is gone.
    disk.free();
    assert!(
        wait_until(Duration::from_secs(10), || snapshot_serial(&snapshot)
            == Some(101)
            && !status().contains("write_errors")),
        "written again: {}",
        status()
    );
    let saved = std::fs::read_to_string(&state).unwrap();
    assert!(saved.contains("serial = 101"), "{saved}");
    // The log line is read from the server's stderr by another thread: awaited.
    assert!(
        wait_until(Duration::from_secs(5), || server
            .stderr_now()
            .contains("written again")),
        "{}",
        server.stderr_now()
    );
    let metrics = samples(&get(api, "/metrics").unwrap().1);
    assert_eq!(metrics["healthdns_files_failing"], 0.0, "{metrics:?}");
    server.signal("TERM");
    assert!(server.wait_exit(Duration::from_secs(10)).is_some());
}

/// The wall clock jumps an hour back, then a day ahead: a killed backend still leaves, and
/// comes back, within the usual time. Probe schedules, fall/rise and the publisher run on
/// the monotonic clock; only the times shown (status `since`) follow the wall clock.
#[test]
fn a_wall_clock_jump_moves_no_probe_timer() {
    let clock = FakeClock::new();
    let prefix = "127.62.8";
    let (port, mut backends) = backends(prefix, vec![Behaviour::Healthy; 2]);
    let (fixture, api) = with_api(prefix, port);
    let mut command = binary();
    clock.apply(&mut command);
    let mut server = serve_ready_with(&mut command, &fixture.config_path, api);
    let dns = fixture.listen_address();
    let both = ["127.62.8.1", "127.62.8.2"];
    assert!(wait_until(CHANGE, || www_addresses(dns) == both));

    clock.set("-3600");
    backends[0].stop();
    assert!(
        wait_until(CHANGE, || www_addresses(dns) == ["127.62.8.2"]),
        "a killed backend leaves after the clock went back an hour"
    );
    // The process does see the jump: the transition is stamped an hour back.
    let report: serde_json::Value = serde_json::from_str(&get(api, "/status").unwrap().1).unwrap();
    let since = report["pools"][0]["addresses"][0]["since"]
        .as_str()
        .unwrap()
        .to_string();
    let since = humantime::parse_rfc3339(&since).unwrap();
    let behind = std::time::SystemTime::now().duration_since(since).unwrap();
    assert!(
        behind > Duration::from_secs(3500) && behind < Duration::from_secs(3700),
        "since {since:?} is an hour back ({behind:?})"
    );

    clock.set("+86400");
    backends[0].resume();
    assert!(
        wait_until(CHANGE, || www_addresses(dns) == both),
        "it comes back after the clock jumped a day ahead"
    );
    server.signal("TERM");
    assert!(server.wait_exit(Duration::from_secs(10)).is_some());
}

/// Both UDP threads are flooded (two senders, bounded to 4 s and 3,000,000 datagrams):
/// probes still run on schedule, and a killed backend leaves the answers (read over TCP)
/// within fall × interval + timeout + a margin. Probes run on the runtime's threads, not the
/// UDP threads, and their ticks keep their grid.
#[test]
fn probes_keep_their_schedule_while_udp_is_flooded() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let prefix = "127.62.9";
    let (port, mut backends) = backends(prefix, vec![Behaviour::Healthy; 2]);
    let (fixture, api) = with_api(prefix, port);
    let mut server = serve_ready(&fixture.config_path, api);
    let dns = fixture.listen_address();
    let total = |metrics: &std::collections::BTreeMap<String, f64>, prefix: &str| -> f64 {
        metrics
            .iter()
            .filter(|(series, _)| series.starts_with(prefix))
            .map(|(_, value)| value)
            .sum()
    };
    let query = {
        use hickory_proto::op::{Message, MessageType, OpCode, Query};
        use hickory_proto::rr::{Name, RecordType};
        let mut message = Message::new(1, MessageType::Query, OpCode::Query);
        message.add_query(Query::query(
            Name::from_ascii("www.example.test.").unwrap(),
            RecordType::A,
        ));
        message.to_vec().unwrap()
    };
    let flooding = std::sync::Arc::new(AtomicBool::new(true));
    let senders: Vec<_> = (0..2)
        .map(|_| {
            let flooding = flooding.clone();
            let query = query.clone();
            std::thread::spawn(move || {
                let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
                socket.connect(dns).unwrap();
                let started = std::time::Instant::now();
                let mut sent = 0u64;
                while flooding.load(Ordering::Relaxed)
                    && sent < 1_500_000
                    && started.elapsed() < Duration::from_secs(4)
                {
                    if socket.send(&query).is_ok() {
                        sent += 1;
                    }
                }
                sent
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let before = samples(&get(api, "/metrics").unwrap().1);
    let window = std::time::Instant::now();
    std::thread::sleep(Duration::from_millis(700));
    backends[0].stop();
    let killed = std::time::Instant::now();
    let tcp_www = || -> Vec<String> {
        let output = crate::support::dig(dns, &["+tcp", "+short", "www.example.test", "A"]);
        let mut found: Vec<String> = output.lines().map(str::to_string).collect();
        found.sort();
        found
    };
    assert!(
        wait_until(Duration::from_secs(5), || tcp_www() == ["127.62.9.2"]),
        "the killed backend leaves during the flood"
    );
    let left = killed.elapsed();
    std::thread::sleep(Duration::from_millis(1000).saturating_sub(left));
    let after = samples(&get(api, "/metrics").unwrap().1);
    let seconds = window.elapsed().as_secs_f64();
    flooding.store(false, Ordering::Relaxed);
    let sent: u64 = senders
        .into_iter()
        .map(|sender| sender.join().unwrap())
        .sum();
    let probes = total(&after, "healthdns_probe_seconds_count")
        - total(&before, "healthdns_probe_seconds_count");
    let queries =
        total(&after, "healthdns_queries_total") - total(&before, "healthdns_queries_total");
    eprintln!("flood: {sent} sent, {queries} answered, {probes} probes in {seconds:.2} s, left after {left:?}");
    // The server really was busy: tens of thousands of queries answered in the window.
    assert!(
        queries > 20_000.0,
        "{queries} queries answered of {sent} sent"
    );
    // Two addresses, one probe each per 100 ms: none skipped (10% for the window's edges).
    let scheduled = 2.0 * 10.0 * seconds;
    assert!(
        probes >= 0.9 * scheduled,
        "{probes} probes in {seconds:.2} s under the flood, {scheduled:.0} scheduled"
    );
    // fall 1 × interval 100 ms + timeout 100 ms, and a margin for a loaded machine.
    assert!(left < Duration::from_millis(1200), "left after {left:?}");
    server.signal("TERM");
    assert!(server.wait_exit(Duration::from_secs(10)).is_some());
}
