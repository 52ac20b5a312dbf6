//! Shared test harness: an in-process server on 127.0.0.1 port 0, real UDP/TCP clients, and
//! helpers to run the built binary and `dig`.

#![allow(dead_code)]

pub mod backend;
pub mod named;
pub mod netns;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use tokio_util::sync::CancellationToken;

use healthdns::config::Config;
use healthdns::dns::server::Listeners;
use healthdns::service::Service;
use healthdns::zone::snapshot::{Snapshot, SnapshotReader, SnapshotWriter};

/// How long a test waits for any single answer.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(3);

/// The zone every protocol test is served: each record exists to exercise one rule.
pub const TEST_ZONE: &str = r#"$ORIGIN example.test.
$TTL 300
@           SOA   ns1 hostmaster 42 3600 600 1209600 60
            NS    ns1
            NS    ns2
            MX    10 mail
            A     192.0.2.1
ns1         A     192.0.2.53
ns2         AAAA  2001:db8::53
mail        A     192.0.2.25
www         A     192.0.2.10
            A     192.0.2.11
            A     192.0.2.12
            AAAA  2001:db8::10
alias       CNAME alias2
alias2      CNAME www
dangling    CNAME missing
outside     CNAME www.example.org.
loop1       CNAME loop2
loop2       CNAME loop1
*.apps      A     192.0.2.80
*.apps      TXT   "wild"
exists.apps AAAA  2001:db8::80
x.ent.apps  A     192.0.2.81
x.a.deep    TXT   "deep"
_sip._udp   SRV   10 20 5060 mail
sub         NS    ns.sub
sub         NS    ns.elsewhere.example.org.
sub         DS    12345 13 2 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
ns.sub      A     192.0.2.60
deep.sub    A     192.0.2.61
nods        NS    ns1
big         TXT   "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789"
big         TXT   "1123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789"
big         TXT   "2123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789"
big         TXT   "3123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789"
big         TXT   "4123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789"
big         TXT   "5123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789"
manymx      MX    10 m1
manymx      MX    20 m2
manymx      MX    30 m3
manymx      MX    40 m4
m1          AAAA  2001:db8::1:1
m1          AAAA  2001:db8::1:2
m1          AAAA  2001:db8::1:3
m1          AAAA  2001:db8::1:4
m1          AAAA  2001:db8::1:5
m2          AAAA  2001:db8::2:1
m2          AAAA  2001:db8::2:2
m2          AAAA  2001:db8::2:3
m2          AAAA  2001:db8::2:4
m2          AAAA  2001:db8::2:5
m3          AAAA  2001:db8::3:1
m3          AAAA  2001:db8::3:2
m3          AAAA  2001:db8::3:3
m3          AAAA  2001:db8::3:4
m3          AAAA  2001:db8::3:5
m4          AAAA  2001:db8::4:1
m4          AAAA  2001:db8::4:2
m4          AAAA  2001:db8::4:3
m4          AAAA  2001:db8::4:4
m4          AAAA  2001:db8::4:5
"#;

/// A small zone for pool tests: its static www A record is replaced by the pool, its TXT
/// stays; the refresh timer (1 hour) never fires in a test, so secondaries follow NOTIFY.
pub const POOL_ZONE: &str = "$TTL 300
@      SOA ns1 hostmaster 100 3600 600 86400 60
       NS  ns1
ns1    A   192.0.2.53
www    A   192.0.2.80
www    TXT \"stays\"
";

/// How long a test waits for a health change to reach the answers.
pub const CHANGE: Duration = Duration::from_secs(5);

/// A config file and zone files in a temporary folder.
pub struct Fixture {
    pub folder: tempfile::TempDir,
    pub config_path: PathBuf,
}

impl Fixture {
    /// Writes `zones` (origin, text) and a config listening on `listen`.
    pub fn new(listen: &str, zones: &[(&str, &str)]) -> Self {
        Self::with_pools(listen, zones, "")
    }

    /// Like `new`, with `pools` (TOML `[[pool]]` tables) appended to the config.
    pub fn with_pools(listen: &str, zones: &[(&str, &str)], pools: &str) -> Self {
        Self::custom(listen, zones, "", "", pools)
    }

    /// Like `with_pools`, with `server_keys` added to `[server]` and `zone_keys` to every
    /// `[[zone]]`.
    pub fn custom(
        listen: &str,
        zones: &[(&str, &str)],
        server_keys: &str,
        zone_keys: &str,
        pools: &str,
    ) -> Self {
        let folder = tempfile::tempdir().expect("temporary folder");
        let mut config =
            format!("[server]\nlisten = [\"{listen}\"]\nudp_sockets = 2\n{server_keys}\n");
        for (index, (origin, text)) in zones.iter().enumerate() {
            let file = format!("zone{index}.zone");
            std::fs::write(folder.path().join(&file), text).expect("write zone");
            config.push_str(&format!(
                "\n[[zone]]\norigin = \"{origin}\"\nfile = \"{file}\"\n{zone_keys}\n"
            ));
        }
        config.push('\n');
        config.push_str(pools);
        let config_path = folder.path().join("config.toml");
        std::fs::write(&config_path, config).expect("write config");
        Self {
            folder,
            config_path,
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.folder.path().join(name)
    }

    /// [`POOL_ZONE`] as `example.test` with `pools`, listening on `listen`.
    pub fn pool_zone(listen: &str, pools: &str) -> Self {
        Self::custom(listen, &[("example.test", POOL_ZONE)], "", "", pools)
    }

    /// The (first) DNS listen address written in the config.
    pub fn listen_address(&self) -> SocketAddr {
        std::fs::read_to_string(&self.config_path)
            .unwrap()
            .lines()
            .find_map(|line| line.strip_prefix("listen = [\""))
            .and_then(|rest| rest.split('"').next())
            .and_then(|text| text.parse().ok())
            .expect("a listen address in the fixture")
    }
}

/// DNS served in this process from a snapshot the test itself swaps (no probes, no
/// publisher): the test holds the only write handle.
pub struct SwapServer {
    pub address: SocketAddr,
    pub writer: SnapshotWriter,
    shutdown: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SwapServer {
    pub fn start(first: Snapshot) -> Self {
        let writer = SnapshotWriter::new(first);
        let handler = healthdns::dns::handler::DnsHandler::new(writer.reader(), 1232);
        let listeners =
            Listeners::bind(&["127.0.0.1:0".parse().unwrap()], 2, 4 << 20).expect("bind port 0");
        let address = listeners.local_addresses()[0];
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("runtime");
            runtime
                .block_on(healthdns::dns::server::serve(
                    listeners,
                    handler,
                    Duration::from_secs(10),
                    None,
                    token,
                ))
                .expect("serve");
        });
        Self {
            address,
            writer,
            shutdown,
            thread: Some(thread),
        }
    }
}

impl Drop for SwapServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A server running in this process on its own runtime thread; stopped when dropped.
pub struct TestServer {
    pub address: SocketAddr,
    pub snapshots: SnapshotReader,
    shutdown: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
    _fixture: Fixture,
}

impl TestServer {
    /// Serves `example.test` from [`TEST_ZONE`].
    pub fn start() -> Self {
        Self::with_zones(&[("example.test", TEST_ZONE)])
    }

    pub fn with_zones(zones: &[(&str, &str)]) -> Self {
        Self::with_listen("127.0.0.1:0", zones)
    }

    pub fn with_listen(listen: &str, zones: &[(&str, &str)]) -> Self {
        Self::from_fixture(Fixture::new(listen, zones))
    }

    /// Serves whatever `fixture`'s config says (its listen address must use port 0), as
    /// `healthdns serve` does: cold-start probe round, then probes, publisher and listeners.
    pub fn from_fixture(fixture: Fixture) -> Self {
        let config = Config::load(&fixture.config_path).expect("valid test config");
        let zones = healthdns::zone::load_zones(&config).expect("valid test zones");
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let (ready, started) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let service = Service::start(config.clone(), zones)
                    .await
                    .expect("probes start");
                let listeners = Listeners::bind(
                    &config.server.listen,
                    config.server.udp_sockets,
                    config.server.udp_receive_buffer,
                )
                .expect("bind port 0");
                ready
                    .send((listeners.local_addresses()[0], service.snapshots()))
                    .unwrap();
                service.run(listeners, token).await.expect("serve");
            });
        });
        let (address, snapshots) = started.recv().expect("the server starts");
        Self {
            address,
            snapshots,
            shutdown,
            thread: Some(thread),
            _fixture: fixture,
        }
    }

    /// A file in the server's config folder.
    pub fn path(&self, name: &str) -> PathBuf {
        self._fixture.path(name)
    }

    /// The SOA serial the server answers for `zone`.
    pub fn serial(&self, zone: &str) -> u32 {
        let response = self.udp(zone, RecordType::SOA);
        match response.answers.first().map(|record| &record.data) {
            Some(RData::SOA(soa)) => soa.serial,
            other => panic!("no SOA for {zone}: {other:?}"),
        }
    }

    /// Asks over UDP with EDNS (payload 1232).
    pub fn udp(&self, name: &str, record_type: RecordType) -> Message {
        self.exchange_udp(&query(name, record_type, Some(1232)))
    }

    /// Asks over UDP without EDNS.
    pub fn udp_plain(&self, name: &str, record_type: RecordType) -> Message {
        self.exchange_udp(&query(name, record_type, None))
    }

    /// Asks over TCP with EDNS.
    pub fn tcp(&self, name: &str, record_type: RecordType) -> Message {
        let mut stream = self.tcp_connect();
        tcp_exchange(&mut stream, &query(name, record_type, Some(1232)))
    }

    pub fn tcp_connect(&self) -> TcpStream {
        let stream = TcpStream::connect_timeout(&self.address, ANSWER_TIMEOUT).expect("connect");
        stream.set_read_timeout(Some(ANSWER_TIMEOUT)).unwrap();
        stream
    }

    pub fn exchange_udp(&self, message: &Message) -> Message {
        let bytes = self
            .raw_udp(&message.to_vec().expect("encode query"))
            .expect("an answer");
        let response = Message::from_vec(&bytes).expect("a parseable answer");
        assert_eq!(
            response.metadata.id, message.metadata.id,
            "answer ID matches"
        );
        response
    }

    /// Sends raw bytes over UDP and returns the raw answer, or `None` after a short wait.
    pub fn raw_udp(&self, bytes: &[u8]) -> Option<Vec<u8>> {
        self.raw_udp_wait(bytes, ANSWER_TIMEOUT)
    }

    pub fn raw_udp_wait(&self, bytes: &[u8], wait: Duration) -> Option<Vec<u8>> {
        let local = if self.address.is_ipv6() {
            "[::1]:0"
        } else {
            "127.0.0.1:0"
        };
        let socket = UdpSocket::bind(local).unwrap();
        socket.set_read_timeout(Some(wait)).unwrap();
        socket.send_to(bytes, self.address).unwrap();
        let mut buffer = vec![0u8; 65_535];
        match socket.recv(&mut buffer) {
            Ok(length) => Some(buffer[..length].to_vec()),
            Err(_) => None,
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Builds a query with a fresh ID and, if `payload` is given, an OPT record.
pub fn query(name: &str, record_type: RecordType, payload: Option<u16>) -> Message {
    let mut message = Message::new(next_id(), MessageType::Query, OpCode::Query);
    message.metadata.recursion_desired = true;
    let mut query = Query::query(Name::from_ascii(name).expect("test name"), record_type);
    query.query_class = DNSClass::IN;
    message.add_query(query);
    if let Some(payload) = payload {
        let mut edns = Edns::new();
        edns.set_max_payload(payload);
        message.set_edns(edns);
    }
    message
}

fn next_id() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(4242);
    NEXT.fetch_add(7919, Ordering::Relaxed)
}

/// One length-prefixed exchange on an open TCP stream.
pub fn tcp_exchange(stream: &mut TcpStream, message: &Message) -> Message {
    tcp_send(stream, message);
    tcp_receive(stream)
}

pub fn tcp_send(stream: &mut TcpStream, message: &Message) {
    let bytes = message.to_vec().unwrap();
    let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&bytes);
    stream.write_all(&framed).unwrap();
}

pub fn tcp_receive(stream: &mut TcpStream) -> Message {
    let mut length = [0u8; 2];
    stream.read_exact(&mut length).expect("TCP answer length");
    let mut bytes = vec![0u8; u16::from_be_bytes(length) as usize];
    stream.read_exact(&mut bytes).expect("TCP answer");
    Message::from_vec(&bytes).expect("parseable TCP answer")
}

/// Records as "owner TYPE data" text, for compact assertions.
pub fn texts(records: &[Record]) -> Vec<String> {
    records
        .iter()
        .map(|record| format!("{} {} {}", record.name, record.record_type(), record.data))
        .collect()
}

pub fn rcode(message: &Message) -> ResponseCode {
    message.metadata.response_code
}

/// The A/AAAA addresses in the answer section, sorted.
pub fn addresses(message: &Message) -> Vec<String> {
    let mut found: Vec<String> = message
        .answers
        .iter()
        .filter_map(|record| match &record.data {
            RData::A(a) => Some(a.to_string()),
            RData::AAAA(aaaa) => Some(aaaa.to_string()),
            _ => None,
        })
        .collect();
    found.sort();
    found
}

/// The path of a tool the test needs; fails the test, saying what to install, if absent.
pub fn require_tool(tool: &str, package: &str) -> PathBuf {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/bin"])
        .map(|folder| Path::new(folder).join(tool))
        .find(|candidate| candidate.is_file());
    found.unwrap_or_else(|| {
        panic!("this test needs `{tool}`: install the Debian package {package} (.ci/run does)")
    })
}

/// A wall clock of its own for a process (libfaketime, preloaded): its offset from the real
/// clock is read from a file on every call, so the test can make it jump while the process
/// runs. The monotonic clock is left alone, as a real wall-clock step (NTP, an operator)
/// leaves it.
pub struct FakeClock {
    file: PathBuf,
    _folder: tempfile::TempDir,
}

impl FakeClock {
    /// Starts at the real time.
    pub fn new() -> Self {
        let library = Path::new("/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1");
        assert!(
            library.is_file(),
            "this test needs libfaketime: install the Debian package faketime (.ci/run does)"
        );
        let folder = tempfile::tempdir().unwrap();
        let clock = Self {
            file: folder.path().join("offset"),
            _folder: folder,
        };
        clock.set("+0");
        clock
    }

    /// Sets the offset, e.g. "+3600" or "-86400" (seconds): the clock jumps at once.
    pub fn set(&self, offset: &str) {
        std::fs::write(&self.file, format!("{offset}\n")).unwrap();
    }

    /// `command` (the binary) with this clock.
    pub fn apply(&self, command: &mut Command) {
        command
            .env(
                "LD_PRELOAD",
                "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1",
            )
            .env("FAKETIME_TIMESTAMP_FILE", &self.file)
            .env("FAKETIME_NO_CACHE", "1")
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
    }
}

/// Runs `dig` against `address` with extra arguments; returns its standard output.
pub fn dig(address: SocketAddr, arguments: &[&str]) -> String {
    let dig = require_tool("dig", "bind9-dnsutils");
    let output = Command::new(dig)
        .arg(format!("@{}", address.ip()))
        .arg("-p")
        .arg(address.port().to_string())
        .args(["+time=2", "+tries=1"])
        .args(arguments)
        .output()
        .expect("run dig");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The SOA serial `dig` reads from `address` for `zone`, if it answers one.
pub fn dig_serial(address: SocketAddr, zone: &str) -> Option<u32> {
    dig(address, &["+short", "+norecurse", zone, "SOA"])
        .split_whitespace()
        .nth(2)?
        .parse()
        .ok()
}

/// The built `healthdns` binary.
pub fn binary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_healthdns"))
}

/// The binary started as a process; killed (if still running) when dropped.
pub struct Process {
    pub child: Child,
    /// What it wrote to stderr so far, read by a thread as it comes.
    stderr: Arc<std::sync::Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Process {
    pub fn spawn(command: &mut Command) -> Self {
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start healthdns");
        let stderr = Arc::new(std::sync::Mutex::new(String::new()));
        let reader = child.stderr.take().map(|pipe| {
            let stderr = stderr.clone();
            std::thread::spawn(move || {
                use std::io::BufRead;
                for line in std::io::BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    let mut text = stderr.lock().unwrap();
                    text.push_str(&line);
                    text.push('\n');
                }
            })
        });
        Self {
            child,
            stderr,
            reader,
        }
    }

    /// Starts a process whose stderr goes to `log` (a file the test reads itself).
    pub fn spawn_with_stderr(command: &mut Command, log: std::fs::File) -> Self {
        let child = command
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start the process");
        Self {
            child,
            stderr: Arc::default(),
            reader: None,
        }
    }

    /// What the process has written to stderr so far (it may still be running).
    pub fn stderr_now(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Sends a signal to our own child, by PID.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Everything the process wrote to stderr; call after it exited.
    pub fn stderr_text(&mut self) -> String {
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        self.stderr_now()
    }

    /// Waits up to `limit` for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let mut status = None;
        wait_until(limit, || {
            status = self.child.try_wait().expect("try_wait");
            status.is_some()
        });
        status
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Polls `condition` every 20 ms until it holds or `limit` passes.
pub fn wait_until(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if condition() {
            return true;
        }
        if start.elapsed() >= limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A port free on 127.0.0.1 for both TCP and UDP, for a server started as a process.
pub fn free_port() -> u16 {
    loop {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A pool on www over `prefix.1..=count` probed every 100 ms (fall 1, rise 1).
pub fn fast_pool(prefix: &str, count: u8, port: u16) -> String {
    let addresses: Vec<String> = (1..=count)
        .map(|host| format!("\"{prefix}.{host}\""))
        .collect();
    format!(
        "[[pool]]\nname = \"web\"\nnames = [\"www.example.test\"]\naddresses = [{}]\n\
         [[pool.check]]\nkind = \"http\"\nurl = \"http://{{address}}:{port}/health\"\n\
         interval = \"100ms\"\ntimeout = \"100ms\"\nfall = 1\nrise = 1\n",
        addresses.join(", ")
    )
}

/// The sorted A answer for www.example.test from the server at `address` (via dig).
pub fn www_addresses(address: SocketAddr) -> Vec<String> {
    let mut found: Vec<String> = dig(address, &["+short", "+norecurse", "www.example.test", "A"])
        .lines()
        .map(str::to_string)
        .collect();
    found.sort();
    found
}

/// A finished command's stdout and stderr as one text.
pub fn output_text(output: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}
