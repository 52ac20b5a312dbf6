//! The configuration: a strict TOML file format, validated into a typed runtime `Config`.
//!
//! Why this exists: operators edit `config.toml` by hand, so a typo must be an error that
//! names the file, the line and the key, never a silently ignored option. The serde structs
//! (`file::*`) mirror the file exactly and reject unknown keys; `Config` is what the rest of
//! the program uses: names parsed, paths resolved against the config file's folder, defaults
//! applied. The shipped `config.toml` documents every option and its default, and a test
//! parses it.

use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::rr::Name;

/// The config file, exactly as written. Unknown keys are errors.
pub mod keys;

mod file {
    use std::net::{IpAddr, SocketAddr};
    use std::time::Duration;

    use serde::Deserialize;
    use toml::Spanned;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct ConfigFile {
        #[serde(default)]
        pub server: Server,
        #[serde(default)]
        pub zone: Vec<Spanned<Zone>>,
        #[serde(default)]
        pub pool: Vec<Spanned<Pool>>,
        pub api: Option<Spanned<Api>>,
        pub cluster: Option<Spanned<Cluster>>,
        pub rate_limit: Option<Spanned<RateLimit>>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct RateLimit {
        #[serde(default)]
        pub responses_per_second: u32,
        #[serde(default = "default_slip")]
        pub slip: u32,
        #[serde(default = "default_rrl_window", with = "humantime_serde")]
        pub window: Duration,
        #[serde(default = "default_ipv4_prefix")]
        pub ipv4_prefix: u8,
        #[serde(default = "default_ipv6_prefix")]
        pub ipv6_prefix: u8,
    }

    fn default_slip() -> u32 {
        2
    }

    fn default_rrl_window() -> Duration {
        Duration::from_secs(15)
    }

    fn default_ipv4_prefix() -> u8 {
        24
    }

    fn default_ipv6_prefix() -> u8 {
        56
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Cluster {
        pub node: Spanned<String>,
        pub listen: SocketAddr,
        pub advertise: Option<SocketAddr>,
        #[serde(default)]
        pub peers: Vec<SocketAddr>,
        pub min_peers_agree: Option<Spanned<u32>>,
        pub quorum: Option<Spanned<String>>,
        pub key_file: Spanned<String>,
        #[serde(default = "default_gossip_interval", with = "humantime_serde")]
        pub gossip_interval: Duration,
        #[serde(default = "default_cluster_name")]
        pub name: Spanned<String>,
    }

    fn default_gossip_interval() -> Duration {
        Duration::from_millis(200)
    }

    fn default_cluster_name() -> Spanned<String> {
        Spanned::new(0..0, "healthdns".into())
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Api {
        #[serde(default = "default_api_listen")]
        pub listen: SocketAddr,
        pub token_file: Option<Spanned<String>>,
    }

    fn default_api_listen() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 8053))
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Server {
        #[serde(default = "default_listen")]
        pub listen: Spanned<Vec<SocketAddr>>,
        #[serde(default = "default_tcp_idle_timeout", with = "humantime_serde")]
        pub tcp_idle_timeout: Duration,
        #[serde(default)]
        pub udp_sockets: usize,
        #[serde(default = "default_udp_receive_buffer")]
        pub udp_receive_buffer: Spanned<usize>,
        #[serde(default = "default_udp_payload")]
        pub udp_payload: Spanned<u16>,
        #[serde(default)]
        pub dry_run: bool,
        #[serde(default = "default_min_serial_interval", with = "humantime_serde")]
        pub min_serial_interval: Duration,
        pub identity: Option<Spanned<String>>,
        pub nsid: Option<Spanned<String>>,
        #[serde(default = "default_state_file")]
        pub state_file: String,
        #[serde(default)]
        pub key_files: Vec<Spanned<String>>,
    }

    fn default_min_serial_interval() -> Duration {
        Duration::from_secs(1)
    }

    fn default_udp_receive_buffer() -> Spanned<usize> {
        Spanned::new(0..0, super::DEFAULT_UDP_RECEIVE_BUFFER)
    }

    fn default_state_file() -> String {
        "healthdns.state".into()
    }

    impl Default for Server {
        fn default() -> Self {
            Self {
                listen: default_listen(),
                tcp_idle_timeout: default_tcp_idle_timeout(),
                udp_sockets: 0,
                udp_receive_buffer: default_udp_receive_buffer(),
                udp_payload: default_udp_payload(),
                dry_run: false,
                min_serial_interval: default_min_serial_interval(),
                identity: None,
                nsid: None,
                state_file: default_state_file(),
                key_files: Vec::new(),
            }
        }
    }

    fn default_listen() -> Spanned<Vec<SocketAddr>> {
        Spanned::new(0..0, vec![SocketAddr::from(([127, 0, 0, 1], 5353))])
    }

    fn default_tcp_idle_timeout() -> Duration {
        Duration::from_secs(10)
    }

    fn default_udp_payload() -> Spanned<u16> {
        Spanned::new(0..0, 1232)
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Zone {
        pub origin: Spanned<String>,
        pub file: Spanned<String>,
        pub snapshot: Option<Spanned<String>>,
        pub snapshot_command: Option<Spanned<Vec<String>>>,
        #[serde(default, with = "humantime_serde::option")]
        pub snapshot_command_timeout: Option<Duration>,
        #[serde(default)]
        pub allow_transfer: Vec<Spanned<String>>,
        #[serde(default)]
        pub also_notify: Vec<Spanned<String>>,
        pub notify_source: Option<Spanned<IpAddr>>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Pool {
        pub name: Spanned<String>,
        pub names: Spanned<Vec<Spanned<String>>>,
        pub addresses: Spanned<Vec<IpAddr>>,
        #[serde(default = "default_pool_ttl")]
        pub ttl: u32,
        #[serde(default)]
        pub max_answers: usize,
        #[serde(default)]
        pub select: super::Select,
        #[serde(default)]
        pub all_down: super::AllDown,
        pub canary: Option<Spanned<Canary>>,
        #[serde(default)]
        pub check: Vec<Spanned<Check>>,
    }

    fn default_pool_ttl() -> u32 {
        30
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Canary {
        pub name: Spanned<String>,
        pub address: Spanned<IpAddr>,
    }

    #[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
    #[serde(rename_all = "snake_case")]
    pub enum CheckKind {
        Http,
        Icmp,
        Tcp,
    }

    /// A duration written as "500ms" or "2s".
    #[derive(Debug, Clone, Copy, Deserialize)]
    #[serde(transparent)]
    pub struct HumanDuration(#[serde(with = "humantime_serde")] pub Duration);

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Check {
        pub kind: CheckKind,
        pub url: Option<Spanned<String>>,
        pub host: Option<Spanned<String>>,
        pub expect_status: Option<Spanned<Vec<u16>>>,
        pub max_latency: Option<Spanned<HumanDuration>>,
        pub body_sha256: Option<Spanned<String>>,
        pub follow_redirects: Option<Spanned<bool>>,
        pub ca_file: Option<Spanned<String>>,
        pub port: Option<Spanned<u16>>,
        pub interval: Option<Spanned<HumanDuration>>,
        pub timeout: Option<Spanned<HumanDuration>>,
        pub fall: Option<Spanned<u32>>,
        pub rise: Option<Spanned<u32>>,
        pub source: Option<IpAddr>,
    }
}

/// What is wrong with a config file; the message says where.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read: check the path and permissions.
    /// The I/O error is named `error`, not `source`: the message prints it, so it is not also
    /// a cause that `{:#}` would print again (as in `dns::server::BindError`).
    #[error("{path}: cannot read config: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    /// The file is not valid TOML, has an unknown key, or a value of the wrong type.
    #[error("{path}:{line}: {message}")]
    Syntax {
        path: PathBuf,
        line: usize,
        message: String,
    },
    /// A value is well-formed but not acceptable.
    #[error("{path}:{line}: {key}: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        key: String,
        message: String,
    },
}

/// The most UDP sockets (one thread each) per listen address.
pub const MAX_UDP_SOCKETS: usize = 256;
/// The receive buffer asked for each UDP socket unless configured. The kernel keeps twice
/// this (8 MiB, half for its bookkeeping): some 10,000 small queries, 60 ms at 170,000 a
/// second. Measured here (bench/overload.sh, a flood at twice the server's capacity): a client
/// in another /24 got 56% of its queries answered with this size, 43% with 1 MiB (NSD's
/// default), as bursts of the flood overflow a smaller buffer. The price is latency while the
/// server is behind: queued queries are answered later rather than dropped (bench/speed.sh
/// compares latency with healthdns and gdnsd both at 1 MiB, the most gdnsd accepts).
pub const DEFAULT_UDP_RECEIVE_BUFFER: usize = 4 << 20;
/// The sizes `udp_receive_buffer` accepts (besides 0).
pub const UDP_RECEIVE_BUFFER_RANGE: std::ops::RangeInclusive<usize> = 65_536..=(256 << 20);

/// The validated configuration the server runs with.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from.
    pub path: PathBuf,
    pub server: ServerConfig,
    pub zones: Vec<ZoneConfig>,
    pub pools: Vec<PoolConfig>,
    /// `[api]`: the HTTP API, if configured.
    pub api: Option<ApiConfig>,
    /// `[cluster]`: peer votes, if configured; without it this instance decides alone.
    pub cluster: Option<ClusterConfig>,
    /// `[rate_limit]`: response rate limiting on UDP, if `responses_per_second` is set.
    pub rate_limit: Option<crate::dns::rrl::RateLimit>,
}

/// `[cluster]`: the instances that vote together.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    /// This instance's unique name.
    pub node: String,
    /// The UDP gossip address.
    pub listen: SocketAddr,
    /// The address peers reach this instance at (default: `listen`).
    pub advertise: SocketAddr,
    /// Seed peers.
    pub peers: Vec<SocketAddr>,
    pub agreement: Agreement,
    /// The shared 32-byte secret every datagram is sealed with.
    pub key: [u8; 32],
    pub gossip_interval: Duration,
    /// Instances of different clusters never accept each other's datagrams.
    pub name: String,
}

/// `[api]`: the HTTP status and control API.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub listen: SocketAddr,
    /// The bearer token the state-changing endpoints require; without one they are allowed
    /// only from loopback.
    pub token: Option<String>,
}

/// `[server]`: where and how DNS is served.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Addresses served on both UDP and TCP.
    pub listen: Vec<SocketAddr>,
    /// A TCP connection with no complete query for this long is closed (RFC 7766 §6.2.3).
    pub tcp_idle_timeout: Duration,
    /// UDP sockets (SO_REUSEPORT) per listen address; each is served by its own task.
    pub udp_sockets: usize,
    /// The receive buffer asked for each UDP socket, in bytes; 0 leaves the kernel's default.
    pub udp_receive_buffer: usize,
    /// The EDNS UDP payload size we advertise and the most we send over UDP.
    pub udp_payload: u16,
    /// Probe and log, but answer every configured address.
    pub dry_run: bool,
    /// Answered to `id.server` and `hostname.bind` CH TXT queries; None: refused.
    pub identity: Option<String>,
    /// Sent as the NSID option (RFC 5001) to queries that ask for it; None: not sent.
    pub nsid: Option<String>,
    /// The least time between two serials of the answers (changes in between are coalesced).
    pub min_serial_interval: Duration,
    /// Where each zone's last serial is kept across restarts.
    pub state_file: PathBuf,
}

/// `[[zone]]`: one zone served from a master file.
#[derive(Debug, Clone)]
pub struct ZoneConfig {
    pub origin: Name,
    /// Resolved against the config file's folder.
    pub file: PathBuf,
    /// Where the BIND snapshot of the served zone is written, if anywhere.
    pub snapshot: Option<PathBuf>,
    /// Run (without a shell) after each snapshot write, e.g. `rndc reload <zone>`.
    pub snapshot_command: Option<Vec<String>>,
    /// How long `snapshot_command` may run before it is killed.
    pub snapshot_command_timeout: Duration,
    /// Who may transfer the zone (AXFR/IXFR over TCP); empty: nobody.
    pub allow_transfer: Vec<TransferRule>,
    /// Secondaries sent NOTIFY on every new serial.
    pub also_notify: Vec<NotifyTarget>,
    /// The address NOTIFY is sent from; `None`: the listen address of the target's family.
    pub notify_source: Option<IpAddr>,
}

impl ZoneConfig {
    /// True when `address` may transfer this zone, with a request signed with `key` (None:
    /// unsigned): an entry without a key admits its prefix, one with a key only requests
    /// signed with it.
    pub fn may_transfer(&self, address: IpAddr, key: Option<&Name>) -> bool {
        let address = match address {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
            v4 => v4,
        };
        self.allow_transfer.iter().any(|rule| {
            rule.prefix.contains(&address)
                && rule
                    .key
                    .as_ref()
                    .is_none_or(|required| Some(required.name()) == key)
        })
    }

    /// The key named `name` that one of this zone's entries uses.
    pub fn key(&self, name: &Name) -> Option<&Arc<keys::TsigKey>> {
        let rules = self.allow_transfer.iter().map(|rule| &rule.key);
        let targets = self.also_notify.iter().map(|target| &target.key);
        rules
            .chain(targets)
            .flatten()
            .find(|key| key.name() == name)
    }
}

/// One `allow_transfer` entry: a prefix, and the key its requests must be signed with.
#[derive(Debug, Clone)]
pub struct TransferRule {
    pub prefix: ipnet::IpNet,
    pub key: Option<Arc<keys::TsigKey>>,
}

/// One `also_notify` entry: where NOTIFY goes, and the key it is signed with.
#[derive(Debug, Clone)]
pub struct NotifyTarget {
    pub address: SocketAddr,
    pub key: Option<Arc<keys::TsigKey>>,
}

/// `[[pool]]`: health-checked addresses that answer A/AAAA for some names.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    pub name: String,
    /// The config line of the `[[pool]]`, for errors found later (against zone data).
    pub line: usize,
    /// Owner names, each inside a served zone; their A/AAAA come only from this pool.
    pub names: Vec<Name>,
    /// In config order; IPv4 answer A queries, IPv6 answer AAAA.
    pub addresses: Vec<IpAddr>,
    pub ttl: u32,
    /// At most this many addresses per family in an answer; 0 means every healthy one.
    pub max_answers: usize,
    pub select: Select,
    pub all_down: AllDown,
    pub canary: Option<Canary>,
    /// An address is up only while every check says up.
    pub checks: Vec<CheckConfig>,
}

/// How healthy addresses are chosen when `max_answers` caps them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Select {
    /// Config order.
    #[default]
    All,
    /// Lowest recent latency first; the live set is kept while all of it passes.
    Fastest,
}

/// What a pool answers when none of its addresses is up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AllDown {
    /// Every configured address (fail open): the default, because "everything is down" is more
    /// often the checker's own network failing than every backend at once.
    #[default]
    ServeAll,
    /// The last set that had a healthy address.
    KeepLast,
    /// NOERROR with no address (NODATA, SOA in authority).
    Empty,
    /// SERVFAIL for A and AAAA at the pool's names.
    Servfail,
}

/// `[cluster]`: how many voters must agree before an address leaves the answers (the rule
/// is `health::agreement`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Agreement {
    /// At least this many other voters must also say down (k + 1 in all).
    MinPeersAgree(u32),
    /// More than half of the voters, and at least two.
    Majority,
}

impl Default for Agreement {
    fn default() -> Self {
        Self::MinPeersAgree(1)
    }
}

/// One address that is probed like the others but answers for one name only, in place of one
/// of that name's addresses, while it is healthy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Canary {
    pub name: Name,
    pub address: IpAddr,
}

/// `[[pool.check]]`: how to probe an address and when to believe the result. Two pools with
/// an identical check on the same address share one probe.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CheckConfig {
    pub kind: CheckKind,
    pub interval: Duration,
    /// A probe with no result after this long has failed.
    pub timeout: Duration,
    /// Consecutive failures before an up address goes down.
    pub fall: u32,
    /// Consecutive successes before a down address comes back.
    pub rise: u32,
    /// The local address probes are sent from (multi-homed hosts); None: the system's choice.
    /// Only addresses of its family are probed from it.
    pub source: Option<IpAddr>,
}

/// The probe itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CheckKind {
    /// ICMP echo to the address.
    Icmp,
    /// A TCP connection to the address and port.
    Tcp { port: u16 },
    /// An HTTP(S) request.
    Http(HttpCheck),
}

impl std::fmt::Display for CheckKind {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Icmp => formatter.write_str("icmp"),
            Self::Tcp { port } => write!(formatter, "tcp port {port}"),
            Self::Http(http) => write!(formatter, "http {}", http.url),
        }
    }
}

/// An HTTP(S) probe.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HttpCheck {
    /// The URL with `{address}` where the address goes (IPv6 in brackets).
    pub url: String,
    /// Host header and TLS server name; the connection still goes to the literal address.
    pub host: Option<String>,
    pub expect_status: Vec<u16>,
    /// A slower answer is a failure.
    pub max_latency: Option<Duration>,
    /// The body must hash to this.
    pub body_sha256: Option<[u8; 32]>,
    pub follow_redirects: bool,
    /// PEM certificates to trust for https instead of the system store (an internal CA).
    pub ca_file: Option<PathBuf>,
}

impl HttpCheck {
    /// The URL to fetch for `address` (with `host` in place of the address when it is set).
    pub fn url_for(&self, address: IpAddr) -> String {
        let host = match (&self.host, address) {
            (Some(host), _) => host.clone(),
            (None, IpAddr::V4(v4)) => v4.to_string(),
            (None, IpAddr::V6(v6)) => format!("[{v6}]"),
        };
        self.url.replace("{address}", &host)
    }
}

impl Config {
    /// Reads and validates the config file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_path_buf(),
            error,
        })?;
        Self::parse(&text, path)
    }

    /// Validates config text; `path` names it in errors and anchors relative zone paths.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let line_of = |span: Range<usize>| {
            1 + text.as_bytes()[..span.start.min(text.len())]
                .iter()
                .filter(|byte| **byte == b'\n')
                .count()
        };
        let raw: file::ConfigFile = toml::from_str(text).map_err(|error| ConfigError::Syntax {
            path: path.to_path_buf(),
            line: error.span().map_or(1, line_of),
            message: match error.span().and_then(|span| key_and_value(text, span)) {
                Some((key, value)) => format!("{} (at {key} = {value})", error.message()),
                None => error.message().to_string(),
            },
        })?;
        let invalid = |span: Range<usize>, key: &str, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            line: line_of(span),
            key: key.to_string(),
            message,
        };

        // Where a plain `[server]` key is written (these keys carry no span of their own).
        let key_span = |key: &str| {
            let mut offset = 0;
            for line in text.split_inclusive('\n') {
                if line.trim_start().starts_with(key) {
                    return offset..offset + line.len();
                }
                offset += line.len();
            }
            0..0
        };
        if raw.server.tcp_idle_timeout.is_zero() {
            return Err(invalid(
                key_span("tcp_idle_timeout"),
                "server.tcp_idle_timeout",
                "\"0s\" would close every TCP connection before its first query; use at least \"1s\" (default \"10s\")".into(),
            ));
        }
        if raw.server.udp_sockets > MAX_UDP_SOCKETS {
            return Err(invalid(
                key_span("udp_sockets"),
                "server.udp_sockets",
                format!(
                    "{} is more than {MAX_UDP_SOCKETS}; each socket is a thread, and more than the CPU cores gains nothing (0 means one per core)",
                    raw.server.udp_sockets
                ),
            ));
        }
        let buffer_span = raw.server.udp_receive_buffer.span();
        let udp_receive_buffer = raw.server.udp_receive_buffer.into_inner();
        if udp_receive_buffer != 0 && !UDP_RECEIVE_BUFFER_RANGE.contains(&udp_receive_buffer) {
            return Err(invalid(
                buffer_span,
                "server.udp_receive_buffer",
                format!(
                    "{udp_receive_buffer} is outside {} to {} bytes (0 leaves the kernel's default; default {DEFAULT_UDP_RECEIVE_BUFFER})",
                    UDP_RECEIVE_BUFFER_RANGE.start(),
                    UDP_RECEIVE_BUFFER_RANGE.end()
                ),
            ));
        }
        let listen_span = raw.server.listen.span();
        let listen = raw.server.listen.into_inner();
        if listen.is_empty() {
            return Err(invalid(
                listen_span,
                "server.listen",
                "needs at least one address".into(),
            ));
        }
        for (index, address) in listen.iter().enumerate() {
            if listen[..index].contains(address) {
                return Err(invalid(
                    listen_span,
                    "server.listen",
                    format!("{address} is listed twice"),
                ));
            }
        }
        let payload_span = raw.server.udp_payload.span();
        let udp_payload = raw.server.udp_payload.into_inner();
        if udp_payload < 512 {
            return Err(invalid(
                payload_span,
                "server.udp_payload",
                format!("{udp_payload} is below the DNS minimum of 512"),
            ));
        }
        let udp_sockets = match raw.server.udp_sockets {
            0 => std::thread::available_parallelism().map_or(1, |count| count.get()),
            count => count,
        };

        let folder = path.parent().unwrap_or(Path::new("."));
        let mut tsig_keys: Vec<Arc<keys::TsigKey>> = Vec::new();
        for file in &raw.server.key_files {
            let key_path = folder.join(file.get_ref());
            let read = keys::read_key_file(&key_path).map_err(|error| {
                if error.line == 0 {
                    invalid(
                        file.span(),
                        "server.key_files",
                        format!("{}: {}", key_path.display(), error.message),
                    )
                } else {
                    ConfigError::Invalid {
                        path: key_path.clone(),
                        line: error.line,
                        key: error.key.to_string(),
                        message: error.message,
                    }
                }
            })?;
            for key in read {
                if tsig_keys.iter().any(|other| other.name() == key.name()) {
                    return Err(invalid(
                        file.span(),
                        "server.key_files",
                        format!("key {} is defined in two files", key.name()),
                    ));
                }
                tsig_keys.push(Arc::new(key));
            }
        }
        let mut zones: Vec<ZoneConfig> = Vec::new();
        if raw.zone.is_empty() {
            return Err(invalid(
                0..0,
                "zone",
                "no [[zone]] is configured; there is nothing to serve".into(),
            ));
        }
        for zone in raw.zone {
            let zone = zone.into_inner();
            let origin = parse_name(&zone.origin, "zone.origin", &invalid)?;
            if zones.iter().any(|other| other.origin == origin) {
                return Err(invalid(
                    zone.origin.span(),
                    "zone.origin",
                    format!("zone {origin} is configured twice"),
                ));
            }
            let file = folder.join(zone.file.get_ref());
            let snapshot = zone
                .snapshot
                .as_ref()
                .map(|path| folder.join(path.get_ref()));
            let allow_transfer = zone
                .allow_transfer
                .iter()
                .map(|text| {
                    let (address, key) =
                        with_key(text, "zone.allow_transfer", &tsig_keys, &invalid)?;
                    let prefix = parse_prefix(address).ok_or_else(|| {
                        invalid(
                            text.span(),
                            "zone.allow_transfer",
                            format!(
                                "{:?} is not an address or prefix, with an optional key (\"192.0.2.1\", \"10.0.0.0/8\", \"::1\", \"10.0.0.0/8 key NAME\")",
                                text.get_ref()
                            ),
                        )
                    })?;
                    Ok(TransferRule { prefix, key })
                })
                .collect::<Result<_, _>>()?;
            let also_notify = zone
                .also_notify
                .iter()
                .map(|text| {
                    let (address, key) = with_key(text, "zone.also_notify", &tsig_keys, &invalid)?;
                    let address = parse_notify_target(address).ok_or_else(|| {
                        invalid(
                            text.span(),
                            "zone.also_notify",
                            format!(
                                "{:?} is not an address with an optional port and key (\"192.0.2.1\", \"192.0.2.1:5300\", \"[::1]:53\", \"192.0.2.1 key NAME\")",
                                text.get_ref()
                            ),
                        )
                    })?;
                    Ok(NotifyTarget { address, key })
                })
                .collect::<Result<_, _>>()?;
            let snapshot_command = match zone.snapshot_command {
                None => None,
                Some(command) => {
                    let span = command.span();
                    let command = command.into_inner();
                    if command.is_empty() || command[0].trim().is_empty() {
                        return Err(invalid(
                            span,
                            "zone.snapshot_command",
                            "needs a program: [\"rndc\", \"reload\", \"example.test\"]".into(),
                        ));
                    }
                    if snapshot.is_none() {
                        return Err(invalid(
                            span,
                            "zone.snapshot_command",
                            "runs after each snapshot write, so it needs `snapshot`".into(),
                        ));
                    }
                    Some(command)
                }
            };
            zones.push(ZoneConfig {
                origin,
                file,
                snapshot,
                snapshot_command,
                snapshot_command_timeout: zone
                    .snapshot_command_timeout
                    .unwrap_or(Duration::from_secs(30)),
                allow_transfer,
                also_notify,
                notify_source: zone.notify_source.map(|source| source.into_inner()),
            });
        }

        let mut pools: Vec<PoolConfig> = Vec::new();
        for pool in raw.pool {
            let span = pool.span();
            let pool = parse_pool(
                pool.into_inner(),
                span.clone(),
                line_of(span.clone()),
                &zones,
                folder,
                &invalid,
            )?;
            if pools.iter().any(|other| other.name == pool.name) {
                return Err(invalid(
                    span,
                    "pool.name",
                    format!("pool {:?} is configured twice", pool.name),
                ));
            }
            for name in &pool.names {
                if let Some(other) = pools.iter().find(|other| other.names.contains(name)) {
                    return Err(invalid(
                        span,
                        "pool.names",
                        format!("{name} is already answered by pool {:?}", other.name),
                    ));
                }
            }
            pools.push(pool);
        }

        let api = match raw.api {
            None => None,
            Some(api) => {
                let span = api.span();
                let api = api.into_inner();
                let token = match api.token_file {
                    None => None,
                    Some(file) => {
                        let token_path = folder.join(file.get_ref());
                        let token = std::fs::read_to_string(&token_path)
                            .map_err(|error| {
                                invalid(
                                    file.span(),
                                    "api.token_file",
                                    format!("{}: cannot read: {error}", token_path.display()),
                                )
                            })?
                            .trim()
                            .to_string();
                        if token.len() < 16 {
                            return Err(invalid(
                                file.span(),
                                "api.token_file",
                                format!(
                                    "{}: the token must be at least 16 characters",
                                    token_path.display()
                                ),
                            ));
                        }
                        Some(token)
                    }
                };
                let _ = span;
                Some(ApiConfig {
                    listen: api.listen,
                    token,
                })
            }
        };
        let cluster = match raw.cluster {
            None => None,
            Some(cluster) => {
                let span = cluster.span();
                let cluster = cluster.into_inner();
                Some(cluster_config(cluster, span, folder, &invalid)?)
            }
        };
        let rate_limit = match raw.rate_limit {
            None => None,
            Some(spanned) => {
                let limit = spanned.into_inner();
                let check = |ok: bool, key: &str, message: String| {
                    if ok {
                        Ok(())
                    } else {
                        let short = key.trim_start_matches("rate_limit.");
                        Err(invalid(key_span(short), key, message))
                    }
                };
                check(
                    limit.responses_per_second <= 1_000_000,
                    "rate_limit.responses_per_second",
                    format!(
                        "{} is more than 1000000 (0 turns rate limiting off)",
                        limit.responses_per_second
                    ),
                )?;
                check(
                    limit.slip <= 10,
                    "rate_limit.slip",
                    format!("{} is more than 10 (0: never answer a dropped response, 1: answer each with TC=1)", limit.slip),
                )?;
                check(
                    limit.window >= Duration::from_secs(1)
                        && limit.window <= Duration::from_secs(3600),
                    "rate_limit.window",
                    format!("{:?} is not between \"1s\" and \"1h\"", limit.window),
                )?;
                check(
                    limit.ipv4_prefix <= 32,
                    "rate_limit.ipv4_prefix",
                    format!(
                        "{} is longer than an IPv4 address (at most 32)",
                        limit.ipv4_prefix
                    ),
                )?;
                check(
                    limit.ipv6_prefix <= 128,
                    "rate_limit.ipv6_prefix",
                    format!(
                        "{} is longer than an IPv6 address (at most 128)",
                        limit.ipv6_prefix
                    ),
                )?;
                (limit.responses_per_second > 0).then_some(crate::dns::rrl::RateLimit {
                    responses_per_second: limit.responses_per_second,
                    slip: limit.slip,
                    window: limit.window,
                    ipv4_prefix: limit.ipv4_prefix,
                    ipv6_prefix: limit.ipv6_prefix,
                })
            }
        };
        Ok(Self {
            path: path.to_path_buf(),
            cluster,
            rate_limit,
            server: ServerConfig {
                listen,
                tcp_idle_timeout: raw.server.tcp_idle_timeout,
                udp_sockets,
                udp_receive_buffer,
                udp_payload,
                dry_run: raw.server.dry_run,
                min_serial_interval: raw.server.min_serial_interval,
                identity: text_setting(raw.server.identity, "server.identity", &invalid)?,
                nsid: text_setting(raw.server.nsid, "server.nsid", &invalid)?,
                state_file: folder.join(&raw.server.state_file),
            },
            zones,
            pools,
            api,
        })
    }
}

/// A short text setting (identity, NSID): 1 to 255 printable ASCII characters.
fn text_setting(
    value: Option<toml::Spanned<String>>,
    key: &str,
    invalid: &dyn Fn(Range<usize>, &str, String) -> ConfigError,
) -> Result<Option<String>, ConfigError> {
    let Some(value) = value else {
        return Ok(None);
    };
    let text = value.get_ref();
    if text.is_empty()
        || text.len() > 255
        || !text
            .bytes()
            .all(|byte| byte.is_ascii_graphic() || byte == b' ')
    {
        return Err(invalid(
            value.span(),
            key,
            format!("{text:?} must be 1 to 255 printable ASCII characters"),
        ));
    }
    Ok(Some(text.clone()))
}

/// Validates `[cluster]` (at `span`); key files are read relative to `folder`.
fn cluster_config(
    cluster: file::Cluster,
    span: Range<usize>,
    folder: &Path,
    invalid: &dyn Fn(Range<usize>, &str, String) -> ConfigError,
) -> Result<ClusterConfig, ConfigError> {
    use base64::Engine;
    let node = cluster.node.get_ref().trim().to_string();
    if node.is_empty() || node.len() > 64 || node.contains(['|', ' ']) {
        return Err(invalid(
            cluster.node.span(),
            "cluster.node",
            format!("{node:?} must be 1 to 64 characters, without spaces or '|'"),
        ));
    }
    let agreement = match (cluster.min_peers_agree, cluster.quorum) {
        (Some(_), Some(quorum)) => {
            return Err(invalid(
                quorum.span(),
                "cluster.quorum",
                "set either min_peers_agree or quorum, not both".into(),
            ))
        }
        (None, Some(quorum)) if quorum.get_ref() == "majority" => Agreement::Majority,
        (None, Some(quorum)) => {
            return Err(invalid(
                quorum.span(),
                "cluster.quorum",
                format!("{:?} is not \"majority\"", quorum.get_ref()),
            ))
        }
        (Some(count), None) => Agreement::MinPeersAgree(*count.get_ref()),
        (None, None) => Agreement::default(),
    };
    if cluster.gossip_interval.is_zero() {
        return Err(invalid(
            span,
            "cluster.gossip_interval",
            "must be more than 0".into(),
        ));
    }
    let key_path = folder.join(cluster.key_file.get_ref());
    let key_text = std::fs::read_to_string(&key_path).map_err(|error| {
        invalid(
            cluster.key_file.span(),
            "cluster.key_file",
            format!("{}: cannot read: {error}", key_path.display()),
        )
    })?;
    let key: [u8; 32] = base64::engine::general_purpose::STANDARD
        .decode(key_text.trim())
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(|| {
            invalid(
                cluster.key_file.span(),
                "cluster.key_file",
                format!(
                    "{}: must hold 32 random bytes in base64 (make one with: head -c 32 /dev/urandom | base64)",
                    key_path.display()
                ),
            )
        })?;
    Ok(ClusterConfig {
        node,
        listen: cluster.listen,
        advertise: cluster.advertise.unwrap_or(cluster.listen),
        peers: cluster.peers,
        agreement,
        key,
        gossip_interval: cluster.gossip_interval,
        name: cluster.name.into_inner(),
    })
}

/// The key and the offending value of a TOML error at `span`, when the span is a value (not a
/// key or a whole table): the key is the nearest `key =` at or before the value's line.
fn key_and_value(text: &str, span: Range<usize>) -> Option<(String, String)> {
    let value = text.get(span.clone())?.trim();
    let is_key = text
        .get(span.end..)
        .is_some_and(|rest| rest.trim_start_matches([' ', '\t']).starts_with('='));
    if value.is_empty() || value.contains('\n') || value.starts_with('[') || is_key {
        return None;
    }
    let before = text.get(..span.end)?;
    let line = before.lines().rev().find(|line| {
        let line = line.trim_start();
        line.contains('=') && !line.starts_with('#')
    })?;
    let key = line.split('=').next()?.trim();
    if key.is_empty() || key == value {
        return None;
    }
    let value: String = value.chars().take(80).collect();
    Some((key.to_string(), value))
}

/// The PEM certificates in `path`: at least one, or why not.
pub fn read_certificates(
    path: &Path,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    let certificates = rustls::pki_types::CertificateDer::pem_file_iter(path)
        .map_err(|error| format!("cannot read certificates: {error}"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| format!("not a PEM certificate file: {error}"))?;
    if certificates.is_empty() {
        return Err("holds no PEM certificate".into());
    }
    Ok(certificates)
}

/// "192.0.2.1", "10.0.0.0/8", "::1" or "2001:db8::/32".
fn parse_prefix(text: &str) -> Option<ipnet::IpNet> {
    let text = text.trim();
    if text.contains('/') {
        return text.parse().ok();
    }
    text.parse::<IpAddr>().ok().map(ipnet::IpNet::from)
}

/// Splits "ADDRESS key NAME" into the address text and the key, which must be in `keys`.
fn with_key<'a>(
    text: &'a toml::Spanned<String>,
    field: &str,
    keys: &[Arc<keys::TsigKey>],
    invalid: &dyn Fn(Range<usize>, &str, String) -> ConfigError,
) -> Result<(&'a str, Option<Arc<keys::TsigKey>>), ConfigError> {
    let mut words = text.get_ref().split_whitespace();
    let address = words.next().unwrap_or("");
    match (words.next(), words.next(), words.next()) {
        (None, _, _) => Ok((address, None)),
        (Some("key"), Some(name), None) => {
            let wanted = Name::from_ascii(name)
                .map(|mut name| {
                    name.set_fqdn(true);
                    name
                })
                .ok();
            let key = keys
                .iter()
                .find(|key| Some(key.name()) == wanted.as_ref())
                .ok_or_else(|| {
                    invalid(
                        text.span(),
                        field,
                        format!(
                            "{:?}: no key named {name:?} in [server] key_files",
                            text.get_ref()
                        ),
                    )
                })?;
            Ok((address, Some(key.clone())))
        }
        _ => Err(invalid(
            text.span(),
            field,
            format!(
                "{:?}: expected \"ADDRESS\" or \"ADDRESS key NAME\"",
                text.get_ref()
            ),
        )),
    }
}

/// "192.0.2.1" (port 53), "192.0.2.1:5300", "::1" or "[::1]:5300".
fn parse_notify_target(text: &str) -> Option<SocketAddr> {
    let text = text.trim();
    text.parse::<SocketAddr>().ok().or_else(|| {
        text.parse::<IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, 53))
    })
}

type Invalid<'a> = dyn Fn(Range<usize>, &str, String) -> ConfigError + 'a;

fn parse_name(
    text: &toml::Spanned<String>,
    key: &str,
    invalid: &Invalid,
) -> Result<Name, ConfigError> {
    let mut name = Name::from_ascii(text.get_ref()).map_err(|error| {
        invalid(
            text.span(),
            key,
            format!("{:?} is not a domain name: {error}", text.get_ref()),
        )
    })?;
    name.set_fqdn(true);
    Ok(name)
}

/// `span` is the `[[pool]]` table's, `line` its first line.
fn parse_pool(
    raw: file::Pool,
    span: Range<usize>,
    line: usize,
    zones: &[ZoneConfig],
    folder: &Path,
    invalid: &Invalid,
) -> Result<PoolConfig, ConfigError> {
    let name = raw.name.get_ref().trim().to_string();
    if name.is_empty() {
        return Err(invalid(
            raw.name.span(),
            "pool.name",
            "must not be empty".into(),
        ));
    }
    let names_span = raw.names.span();
    let mut names: Vec<Name> = Vec::new();
    for text in raw.names.get_ref() {
        let owner = parse_name(text, "pool.names", invalid)?;
        if !zones.iter().any(|zone| zone.origin.zone_of(&owner)) {
            return Err(invalid(
                text.span(),
                "pool.names",
                format!("{owner} is not inside any configured [[zone]]"),
            ));
        }
        if names.contains(&owner) {
            return Err(invalid(
                text.span(),
                "pool.names",
                format!("{owner} is listed twice"),
            ));
        }
        names.push(owner);
    }
    if names.is_empty() {
        return Err(invalid(
            names_span,
            "pool.names",
            "needs at least one name".into(),
        ));
    }
    let addresses_span = raw.addresses.span();
    let addresses = raw.addresses.into_inner();
    if addresses.is_empty() {
        return Err(invalid(
            addresses_span,
            "pool.addresses",
            "needs at least one address".into(),
        ));
    }
    for (index, address) in addresses.iter().enumerate() {
        if addresses[..index].contains(address) {
            return Err(invalid(
                addresses_span,
                "pool.addresses",
                format!("{address} is listed twice"),
            ));
        }
    }
    let canary = match raw.canary {
        None => None,
        Some(canary) => {
            let canary = canary.into_inner();
            let canary_name = parse_name(&canary.name, "pool.canary.name", invalid)?;
            if !names.contains(&canary_name) {
                return Err(invalid(
                    canary.name.span(),
                    "pool.canary.name",
                    format!("{canary_name} is not one of this pool's names"),
                ));
            }
            let address = *canary.address.get_ref();
            if addresses.contains(&address) {
                return Err(invalid(
                    canary.address.span(),
                    "pool.canary.address",
                    format!("{address} is already one of the pool's addresses"),
                ));
            }
            Some(Canary {
                name: canary_name,
                address,
            })
        }
    };
    if raw.check.is_empty() {
        return Err(invalid(
            span,
            "pool.check",
            format!("pool {name:?} has no [[pool.check]]; every pool needs at least one"),
        ));
    }
    let checks = raw
        .check
        .into_iter()
        .map(|check| {
            let check_line = check.span();
            parse_check(check.into_inner(), check_line, folder, invalid)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(PoolConfig {
        name,
        line,
        names,
        addresses,
        ttl: raw.ttl,
        max_answers: raw.max_answers,
        select: raw.select,
        all_down: raw.all_down,
        canary,
        checks,
    })
}

fn parse_check(
    raw: file::Check,
    span: Range<usize>,
    folder: &Path,
    invalid: &Invalid,
) -> Result<CheckConfig, ConfigError> {
    let duration =
        |value: &Option<toml::Spanned<file::HumanDuration>>, key: &str, default: Duration| {
            let Some(value) = value else {
                return Ok(default);
            };
            if value.get_ref().0.is_zero() {
                return Err(invalid(value.span(), key, "must be above zero".into()));
            }
            Ok(value.get_ref().0)
        };
    let interval = duration(&raw.interval, "pool.check.interval", Duration::from_secs(1))?;
    let timeout = duration(
        &raw.timeout,
        "pool.check.timeout",
        Duration::from_millis(500),
    )?;
    let count = |value: &Option<toml::Spanned<u32>>, key: &str, default: u32| match value {
        None => Ok(default),
        Some(value) if *value.get_ref() == 0 => {
            Err(invalid(value.span(), key, "must be at least 1".into()))
        }
        Some(value) => Ok(*value.get_ref()),
    };
    let fall = count(&raw.fall, "pool.check.fall", 3)?;
    let rise = count(&raw.rise, "pool.check.rise", 2)?;

    // Keys that belong to another kind of check are mistakes, not options to ignore.
    let http_only = [
        ("url", raw.url.as_ref().map(|value| value.span())),
        ("host", raw.host.as_ref().map(|value| value.span())),
        (
            "expect_status",
            raw.expect_status.as_ref().map(|value| value.span()),
        ),
        (
            "max_latency",
            raw.max_latency.as_ref().map(|value| value.span()),
        ),
        (
            "body_sha256",
            raw.body_sha256.as_ref().map(|value| value.span()),
        ),
        (
            "follow_redirects",
            raw.follow_redirects.as_ref().map(|value| value.span()),
        ),
        ("ca_file", raw.ca_file.as_ref().map(|value| value.span())),
    ];
    let reject = |keys: &[(&str, Option<Range<usize>>)], kind: &str| {
        for (key, key_span) in keys {
            if let Some(key_span) = key_span {
                return Err(invalid(
                    key_span.clone(),
                    &format!("pool.check.{key}"),
                    format!("does not apply to kind = \"{kind}\""),
                ));
            }
        }
        Ok(())
    };
    let port_key = [("port", raw.port.as_ref().map(|value| value.span()))];
    let kind = match raw.kind {
        file::CheckKind::Icmp => {
            reject(&http_only, "icmp")?;
            reject(&port_key, "icmp")?;
            CheckKind::Icmp
        }
        file::CheckKind::Tcp => {
            reject(&http_only, "tcp")?;
            let Some(port) = raw.port else {
                return Err(invalid(
                    span,
                    "pool.check.port",
                    "kind = \"tcp\" needs a port".into(),
                ));
            };
            CheckKind::Tcp {
                port: *port.get_ref(),
            }
        }
        file::CheckKind::Http => {
            reject(&port_key, "http")?;
            CheckKind::Http(parse_http_check(&raw, span, timeout, folder, invalid)?)
        }
    };
    Ok(CheckConfig {
        kind,
        interval,
        timeout,
        fall,
        rise,
        source: raw.source,
    })
}

fn parse_http_check(
    raw: &file::Check,
    span: Range<usize>,
    timeout: Duration,
    folder: &Path,
    invalid: &Invalid,
) -> Result<HttpCheck, ConfigError> {
    let Some(url) = &raw.url else {
        return Err(invalid(
            span,
            "pool.check.url",
            "kind = \"http\" needs a url".into(),
        ));
    };
    let host = match &raw.host {
        None => None,
        Some(host) => {
            let text = host.get_ref().trim();
            if text.is_empty() || text.contains(['/', ':', ' ', '{', '}']) {
                return Err(invalid(
                    host.span(),
                    "pool.check.host",
                    format!("{text:?} is not a host name"),
                ));
            }
            Some(text.to_string())
        }
    };
    let check = HttpCheck {
        url: url.get_ref().clone(),
        host,
        expect_status: raw
            .expect_status
            .as_ref()
            .map_or_else(|| vec![200], |value| value.get_ref().clone()),
        max_latency: raw.max_latency.as_ref().map(|value| value.get_ref().0),
        body_sha256: None,
        follow_redirects: raw
            .follow_redirects
            .as_ref()
            .is_some_and(|value| *value.get_ref()),
        ca_file: match &raw.ca_file {
            None => None,
            Some(text) => {
                let path = folder.join(text.get_ref());
                if let Err(message) = read_certificates(&path) {
                    return Err(invalid(
                        text.span(),
                        "pool.check.ca_file",
                        format!("{}: {message}", path.display()),
                    ));
                }
                Some(path)
            }
        },
    };
    if !check.url.contains("{address}") {
        return Err(invalid(
            url.span(),
            "pool.check.url",
            "must contain {address}, where the probed address goes".into(),
        ));
    }
    for sample in [
        IpAddr::from([192, 0, 2, 1]),
        IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1]),
    ] {
        match reqwest::Url::parse(&check.url_for(sample)) {
            Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => {}
            Ok(parsed) => {
                return Err(invalid(
                    url.span(),
                    "pool.check.url",
                    format!("scheme {:?} is not http or https", parsed.scheme()),
                ))
            }
            Err(error) => {
                return Err(invalid(
                    url.span(),
                    "pool.check.url",
                    format!("{:?} is not a URL: {error}", check.url),
                ))
            }
        }
    }
    if let Some(status) = &raw.expect_status {
        if status.get_ref().is_empty()
            || status
                .get_ref()
                .iter()
                .any(|code| !(100..=599).contains(code))
        {
            return Err(invalid(
                status.span(),
                "pool.check.expect_status",
                "needs one or more HTTP status codes (100-599)".into(),
            ));
        }
    }
    if let (Some(max_latency), Some(value)) = (check.max_latency, &raw.max_latency) {
        if max_latency > timeout {
            return Err(invalid(
                value.span(),
                "pool.check.max_latency",
                "is longer than the timeout, so it could never fail a probe".into(),
            ));
        }
    }
    let body_sha256 = match &raw.body_sha256 {
        None => None,
        Some(text) => {
            let mut digest = [0u8; 32];
            hex::decode_to_slice(text.get_ref().trim(), &mut digest).map_err(|_| {
                invalid(
                    text.span(),
                    "pool.check.body_sha256",
                    "must be 64 hexadecimal digits (a SHA-256 digest)".into(),
                )
            })?;
            Some(digest)
        }
    };
    Ok(HttpCheck {
        body_sha256,
        ..check
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/healthdns/config.toml"))
    }

    #[test]
    fn rate_limits_are_off_by_default_and_checked() {
        let base = "[[zone]]\norigin = \"example.test\"\nfile = \"z\"\n";
        assert_eq!(parse(base).unwrap().rate_limit, None);
        let off = parse(&format!("{base}[rate_limit]\nslip = 3\n")).unwrap();
        assert_eq!(off.rate_limit, None, "responses_per_second = 0 is off");
        let on = parse(&format!("{base}[rate_limit]\nresponses_per_second = 20\n"))
            .unwrap()
            .rate_limit
            .unwrap();
        assert_eq!(
            (on.slip, on.window, on.ipv4_prefix, on.ipv6_prefix),
            (2, Duration::from_secs(15), 24, 56)
        );
        for (line, expected) in [
            (
                "ipv4_prefix = 33",
                "config.toml:6: rate_limit.ipv4_prefix: 33 is longer",
            ),
            (
                "ipv6_prefix = 129",
                "config.toml:6: rate_limit.ipv6_prefix: 129 is longer",
            ),
            (
                "slip = 11",
                "config.toml:6: rate_limit.slip: 11 is more than 10",
            ),
            (
                "window = \"0s\"",
                "config.toml:6: rate_limit.window: 0ns is not between",
            ),
        ] {
            let text = format!("{base}[rate_limit]\nresponses_per_second = 5\n{line}\n");
            let error = parse(&text).unwrap_err().to_string();
            assert!(error.contains(expected), "{error}");
        }
        let error = parse(&format!("{base}[rate_limit]\nrate = 5\n"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("rate"), "unknown keys are refused: {error}");
    }

    #[test]
    fn values_that_make_no_sense_are_rejected_with_line_key_and_value() {
        let base = "[[zone]]\norigin = \"example.test\"\nfile = \"z\"\n";
        let error = parse(&format!("[server]\ntcp_idle_timeout = \"0s\"\n{base}"))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("config.toml:2: server.tcp_idle_timeout: \"0s\""),
            "{error}"
        );
        let error = parse(&format!("[server]\nudp_sockets = 100000\n{base}"))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("config.toml:2: server.udp_sockets: 100000 is more than 256"),
            "{error}"
        );
        let error = parse(&format!("[server]\nudp_receive_buffer = 1000\n{base}"))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("config.toml:2: server.udp_receive_buffer: 1000 is outside 65536 to 268435456 bytes"),
            "{error}"
        );
        let pool = "[[pool]]\nname = \"p\"\nnames = [\"www.example.test\"]\naddresses = [\"10.0.0.1\", \"300.1.1.1\"]\n[[pool.check]]\nkind = \"icmp\"\n";
        let error = parse(&format!("{base}{pool}")).unwrap_err().to_string();
        assert!(
            error.contains(
                "config.toml:7: invalid IP address syntax (at addresses = \"300.1.1.1\")"
            ),
            "{error}"
        );
    }

    #[test]
    fn the_shipped_config_parses() {
        let text = include_str!("../../config.toml");
        let config = parse(text).unwrap();
        assert_eq!(
            config.server.listen,
            vec!["127.0.0.1:5353".parse().unwrap()]
        );
        assert_eq!(config.server.tcp_idle_timeout, Duration::from_secs(10));
        assert_eq!(config.server.udp_payload, 1232);
        assert_eq!(config.zones[0].origin.to_string(), "example.test.");
        assert_eq!(
            config.zones[0].file,
            Path::new("/etc/healthdns/zones/example.test.zone")
        );
        assert!(!config.server.dry_run);
        assert_eq!(config.server.min_serial_interval, Duration::from_secs(1));
        assert_eq!(
            config.server.state_file,
            Path::new("/etc/healthdns/healthdns.state")
        );
        let zone = &config.zones[0];
        assert_eq!(
            zone.snapshot.as_deref(),
            Some(Path::new("/etc/healthdns/snapshots/example.test.zone"))
        );
        assert!(zone.may_transfer("127.0.0.9".parse().unwrap(), None));
        assert!(zone.may_transfer("::1".parse().unwrap(), None));
        assert!(zone.may_transfer("::ffff:127.0.0.2".parse().unwrap(), None));
        assert!(!zone.may_transfer("192.0.2.1".parse().unwrap(), None));
        assert!(zone.also_notify.is_empty());
        assert_eq!(zone.notify_source, None);
        let pool = &config.pools[0];
        assert_eq!(pool.names[0].to_string(), "www.example.test.");
        assert_eq!((pool.ttl, pool.max_answers), (30, 0));
        assert_eq!(
            (pool.select, pool.all_down),
            (Select::All, AllDown::ServeAll)
        );
        let check = &pool.checks[0];
        assert_eq!((check.fall, check.rise), (3, 2));
        assert_eq!(check.interval, Duration::from_secs(1));
        let api = config
            .api
            .as_ref()
            .expect("the shipped config runs the API");
        assert_eq!(api.listen, "127.0.0.1:8053".parse().unwrap());
        assert_eq!(api.token, None);
        assert_eq!(check.timeout, Duration::from_millis(500));
        let CheckKind::Http(http) = &check.kind else {
            panic!("the shipped check is http");
        };
        assert_eq!(http.expect_status, [200]);
        assert_eq!(
            http.url_for("127.0.5.1".parse().unwrap()),
            "http://127.0.5.1:8080/"
        );
        assert_eq!(http.url_for("::1".parse().unwrap()), "http://[::1]:8080/");
    }

    #[test]
    fn transfer_settings_are_checked() {
        let zone = |extra: &str| {
            parse(&format!(
                "[[zone]]\norigin = \"example.test\"\nfile = \"x\"\n{extra}"
            ))
        };
        let error = zone("allow_transfer = [\"10.0.0.0/33\"]")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("config.toml:4: zone.allow_transfer"),
            "{error}"
        );
        let error = zone("also_notify = [\"ns1.example\"]")
            .unwrap_err()
            .to_string();
        assert!(error.contains("config.toml:4: zone.also_notify"), "{error}");
        let config = zone("also_notify = [\"192.0.2.1\", \"[::1]:5300\"]").unwrap();
        let targets: Vec<SocketAddr> = config.zones[0]
            .also_notify
            .iter()
            .map(|target| target.address)
            .collect();
        assert_eq!(
            targets,
            [
                "192.0.2.1:53".parse().unwrap(),
                "[::1]:5300".parse::<SocketAddr>().unwrap()
            ]
        );
        assert!(zone("snapshots = \"typo\"").is_err());
    }

    #[test]
    fn tsig_keys_are_read_from_bind_key_files_and_named_by_entries() {
        let folder = tempfile::tempdir().unwrap();
        std::fs::write(
            folder.path().join("transfer.key"),
            "key \"transfer\" {\n\talgorithm hmac-sha256;\n\tsecret \"c2VjcmV0c2VjcmV0c2VjcmV0\";\n};\n",
        )
        .unwrap();
        std::fs::write(
            folder.path().join("bad.key"),
            "key \"old\" {\n  algorithm hmac-md5;\n  secret \"c2VjcmV0\";\n};\n",
        )
        .unwrap();
        let path = folder.path().join("config.toml");
        let parse = |server: &str, zone: &str| {
            Config::parse(
                &format!("[server]\n{server}\n[[zone]]\norigin = \"example.test\"\nfile = \"z\"\n{zone}\n"),
                &path,
            )
        };
        let config = parse(
            "key_files = [\"transfer.key\"]",
            "allow_transfer = [\"127.0.0.1 key transfer\", \"10.0.0.0/8\"]\nalso_notify = [\"127.0.0.2:5300 key Transfer.\"]",
        )
        .unwrap();
        let zone = &config.zones[0];
        let key: Name = "transfer.".parse().unwrap();
        assert!(zone.may_transfer("127.0.0.1".parse().unwrap(), Some(&key)));
        assert!(
            !zone.may_transfer("127.0.0.1".parse().unwrap(), None),
            "an entry with a key needs a signed request"
        );
        assert!(!zone.may_transfer(
            "127.0.0.1".parse().unwrap(),
            Some(&"other.".parse().unwrap())
        ));
        assert!(zone.may_transfer("10.1.2.3".parse().unwrap(), None));
        assert!(zone.may_transfer("10.1.2.3".parse().unwrap(), Some(&key)));
        assert_eq!(zone.also_notify[0].key.as_ref().unwrap().name(), &key);
        assert!(zone.key(&key).is_some());

        let error = parse(
            "key_files = [\"transfer.key\"]",
            "allow_transfer = [\"127.0.0.1 key nosuch\"]",
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("config.toml:6: zone.allow_transfer")
                && error.contains("no key named \"nosuch\""),
            "{error}"
        );
        let error = parse("key_files = [\"bad.key\"]", "")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("bad.key:2: algorithm") && error.contains("hmac-md5"),
            "{error}"
        );
        let error = parse("key_files = [\"missing.key\"]", "")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("config.toml:2: server.key_files") && error.contains("missing.key"),
            "{error}"
        );
        let error = parse("", "also_notify = [\"127.0.0.1 key\"]")
            .unwrap_err()
            .to_string();
        assert!(error.contains("zone.also_notify"), "{error}");
    }

    fn pool_error(pool: &str) -> String {
        let text = format!(
            "[[zone]]\norigin = \"example.test\"\nfile = \"x\"\n\n[[pool]]\nname = \"web\"\n{pool}"
        );
        parse(&text).unwrap_err().to_string()
    }

    #[test]
    fn pool_errors_name_line_and_key() {
        let cases = [
            (
                "names = [\"www.example.org\"]\naddresses = [\"10.0.0.1\"]\n[[pool.check]]\nkind = \"icmp\"\n",
                ":7: pool.names: www.example.org. is not inside any configured [[zone]]",
            ),
            (
                "names = [\"www.example.test\"]\naddresses = [\"10.0.0.1\", \"10.0.0.1\"]\n[[pool.check]]\nkind = \"icmp\"\n",
                ":8: pool.addresses: 10.0.0.1 is listed twice",
            ),
            (
                "names = [\"www.example.test\"]\naddresses = [\"10.0.0.1\"]\n",
                ":5: pool.check: pool \"web\" has no [[pool.check]]",
            ),
            (
                "names = [\"www.example.test\"]\naddresses = [\"10.0.0.1\"]\n[[pool.check]]\nkind = \"icmp\"\nurl = \"http://{address}/\"\n",
                ":11: pool.check.url: does not apply to kind = \"icmp\"",
            ),
            (
                "names = [\"www.example.test\"]\naddresses = [\"10.0.0.1\"]\n[[pool.check]]\nkind = \"http\"\nurl = \"http://10.0.0.1/\"\n",
                ":11: pool.check.url: must contain {address}",
            ),
            (
                "names = [\"www.example.test\"]\naddresses = [\"10.0.0.1\"]\n[[pool.check]]\nkind = \"tcp\"\nport = 80\ntimeout = \"0s\"\n",
                ":12: pool.check.timeout: must be above zero",
            ),
            (
                "names = [\"www.example.test\"]\naddresses = [\"10.0.0.1\"]\n[[pool.check]]\nkind = \"tcp\"\n",
                "pool.check.port: kind = \"tcp\" needs a port",
            ),
            (
                "names = [\"www.example.test\"]\naddresses = [\"10.0.0.1\"]\n[[pool.check]]\nkind = \"http\"\nurl = \"http://{address}/\"\nbody_sha256 = \"abc\"\n",
                ":12: pool.check.body_sha256: must be 64 hexadecimal digits",
            ),
            (
                "names = [\"www.example.test\"]\naddresses = [\"10.0.0.1\"]\ncanary = { name = \"other.example.test\", address = \"10.0.0.9\" }\n[[pool.check]]\nkind = \"icmp\"\n",
                ":9: pool.canary.name: other.example.test. is not one of this pool's names",
            ),
            (
                "names = [\"www.example.test\"]\naddresses = [\"10.0.0.1\"]\nall_down = \"fail_open\"\n[[pool.check]]\nkind = \"icmp\"\n",
                ":9: unknown variant `fail_open`",
            ),
            (
                "names = [\"www.example.test\"]\naddresses = [\"10.0.0.1\"]\n[[pool.check]]\nkind = \"icmp\"\nfal = 2\n",
                ":11: unknown field `fal`",
            ),
        ];
        for (pool, expected) in cases {
            let error = pool_error(pool);
            assert!(error.contains(expected), "{error}\nexpected: {expected}");
            assert!(error.starts_with("/etc/healthdns/config.toml:"), "{error}");
        }
    }

    #[test]
    fn unknown_key_names_line_and_key() {
        let error = parse("[server]\nlisten = [\"127.0.0.1:53\"]\nlisen = 3\n").unwrap_err();
        let text = error.to_string();
        assert!(
            text.starts_with("/etc/healthdns/config.toml:3: unknown field `lisen`"),
            "{text}"
        );
        assert!(!text.contains("(at "), "a key is not a value: {text}");
    }

    #[test]
    fn bad_values_name_line_and_key() {
        let text =
            "[server]\nlisten = [\"127.0.0.1:53\"]\n\n[[zone]]\norigin = \"a..b\"\nfile = \"x\"\n";
        let error = parse(text).unwrap_err().to_string();
        assert!(
            error.starts_with("/etc/healthdns/config.toml:5: zone.origin:"),
            "{error}"
        );

        let error = parse("[server]\nlisten = [\"nonsense\"]\n")
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("/etc/healthdns/config.toml:2:"),
            "{error}"
        );
    }

    #[test]
    fn duplicate_zones_are_rejected() {
        let text = "[[zone]]\norigin = \"a.test\"\nfile = \"x\"\n[[zone]]\norigin = \"A.test.\"\nfile = \"y\"\n";
        let error = parse(text).unwrap_err().to_string();
        assert!(
            error.contains(":5: zone.origin: zone A.test. is configured twice"),
            "{error}"
        );
    }

    #[test]
    fn cluster_settings_are_checked() {
        let folder = tempfile::tempdir().unwrap();
        let path = folder.path().join("config.toml");
        std::fs::write(
            folder.path().join("cluster.key"),
            "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\n",
        )
        .unwrap();
        std::fs::write(folder.path().join("short.key"), "c2hvcnQ=\n").unwrap();
        let base = "[cluster]\nnode = \"ns1\"\nlisten = \"127.0.6.1:7946\"\n\
                    peers = [\"127.0.6.2:7946\"]\nkey_file = \"cluster.key\"\n";
        let zone = "[[zone]]\norigin = \"example.test\"\nfile = \"z\"\n";
        let config = Config::parse(&format!("{base}{zone}"), &path).unwrap();
        let cluster = config.cluster.unwrap();
        assert_eq!(cluster.node, "ns1");
        assert_eq!(cluster.advertise, cluster.listen);
        assert_eq!(cluster.agreement, Agreement::MinPeersAgree(1));
        assert_eq!(cluster.key, [7; 32]);
        assert_eq!(cluster.gossip_interval, Duration::from_millis(200));
        let majority =
            Config::parse(&format!("{base}quorum = \"majority\"\n{zone}"), &path).unwrap();
        assert_eq!(majority.cluster.unwrap().agreement, Agreement::Majority);
        for (extra, expected) in [
            (
                "quorum = \"majority\"\nmin_peers_agree = 2\n",
                ":6: cluster.quorum: set either min_peers_agree or quorum, not both",
            ),
            (
                "quorum = \"most\"\n",
                ":6: cluster.quorum: \"most\" is not \"majority\"",
            ),
        ] {
            let error = Config::parse(&format!("{base}{extra}{zone}"), &path)
                .unwrap_err()
                .to_string();
            assert!(error.contains(expected), "{error}");
        }
        let base = format!("{base}{zone}");
        let error = Config::parse(&base.replace("cluster.key", "short.key"), &path)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains(":5: cluster.key_file:") && error.contains("32 random bytes"),
            "{error}"
        );
        let error = Config::parse(&base.replace("cluster.key", "missing.key"), &path)
            .unwrap_err()
            .to_string();
        assert!(error.contains("missing.key: cannot read"), "{error}");
        let error = Config::parse(&base.replace("\"ns1\"", "\"a b\""), &path)
            .unwrap_err()
            .to_string();
        assert!(error.contains(":2: cluster.node:"), "{error}");
    }
}
