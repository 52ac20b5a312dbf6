//! Peer votes between three real healthdns processes on 127.0.6.1/2/3, each probing from its
//! own source address HTTP backends that fail for some sources only: an address leaves only
//! when two instances see it down (min_peers_agree = 1), every instance answers the same, a
//! killed instance stops counting, and garbage, foreign-key and replayed datagrams change
//! nothing and are counted, even as a flood while an override spreads.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Duration;

use crate::api::get;
use crate::support::backend::{backends, Behaviour};
use crate::support::{binary, free_port, wait_until, www_addresses, FakeClock, Process};

/// The cluster key of these tests (32 bytes of 7, in base64).
const KEY: &str = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";

const ZONE: &str = "$TTL 300
@      SOA ns1 hostmaster 100 3600 600 86400 60
       NS  ns1
ns1    A   192.0.2.53
";

struct Node {
    process: Option<Process>,
    dns: SocketAddr,
    api: SocketAddr,
    gossip: SocketAddr,
    _folder: tempfile::TempDir,
}

impl Node {
    /// Stops the node (SIGTERM: its state file is written) and starts it again on the same
    /// config, folder and state file; returns once it is ready.
    fn restart(&mut self) {
        let mut process = self.process.take().unwrap();
        process.signal("TERM");
        assert!(process.wait_exit(Duration::from_secs(10)).is_some());
        let path = self._folder.path().join("config.toml");
        let process = crate::api::serve_ready(&path, self.api);
        self.process = Some(process);
    }

    fn metrics(&self) -> BTreeMap<String, f64> {
        get(self.api, "/metrics")
            .map(|(_, text)| {
                text.lines()
                    .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
                    .filter_map(|line| {
                        let (series, value) = line.rsplit_once(' ')?;
                        Some((series.to_string(), value.parse().ok()?))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn status(&self) -> serde_json::Value {
        serde_json::from_str(&get(self.api, "/status").expect("status").1).unwrap()
    }
}

/// The resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Starts node `index` (1..=3) of a cluster whose gossip ports are `gossip_ports`.
fn start_node(index: usize, gossip_ports: &[u16; 3], backend_port: u16, prefix: &str) -> Node {
    start_node_with(index, gossip_ports, backend_port, prefix, None)
}

/// `start_node`, with a wall clock of its own when `clock` is given.
fn start_node_with(
    index: usize,
    gossip_ports: &[u16; 3],
    backend_port: u16,
    prefix: &str,
    clock: Option<&FakeClock>,
) -> Node {
    let host: IpAddr = format!("127.0.6.{index}").parse().unwrap();
    let folder = tempfile::tempdir().unwrap();
    let dns = SocketAddr::new(host, free_port());
    let api = SocketAddr::new(host, free_port());
    let gossip = SocketAddr::new(host, gossip_ports[index - 1]);
    let peers: Vec<String> = (1..=3)
        .filter(|other| *other != index)
        .map(|other| format!("\"127.0.6.{other}:{}\"", gossip_ports[other - 1]))
        .collect();
    std::fs::write(folder.path().join("zone.zone"), ZONE).unwrap();
    std::fs::write(folder.path().join("cluster.key"), KEY).unwrap();
    let config = format!(
        "[server]\nlisten = [\"{dns}\"]\nudp_sockets = 1\n\n[api]\nlisten = \"{api}\"\n\n\
         [cluster]\nnode = \"ns{index}\"\nlisten = \"{gossip}\"\npeers = [{peers}]\n\
         min_peers_agree = 1\nkey_file = \"cluster.key\"\ngossip_interval = \"100ms\"\n\n\
         [[zone]]\norigin = \"example.test\"\nfile = \"zone.zone\"\n\n\
         [[pool]]\nname = \"web\"\nnames = [\"www.example.test\"]\n\
         addresses = [\"{prefix}.1\", \"{prefix}.2\", \"{prefix}.3\"]\n\
         [[pool.check]]\nkind = \"http\"\nurl = \"http://{{address}}:{backend_port}/health\"\n\
         interval = \"100ms\"\ntimeout = \"1s\"\nfall = 1\nrise = 1\nsource = \"{host}\"\n",
        peers = peers.join(", "),
    );
    let path = folder.path().join("config.toml");
    std::fs::write(&path, config).unwrap();
    let mut command = binary();
    if let Some(clock) = clock {
        clock.apply(&mut command);
    }
    let process = crate::api::serve_ready_with(&mut command, &path, api);
    Node {
        process: Some(process),
        dns,
        api,
        gossip,
        _folder: folder,
    }
}

#[test]
fn an_address_leaves_only_when_two_instances_agree_and_all_answer_alike() {
    let prefix = "127.67.1";
    let node = |index: u8| -> IpAddr { format!("127.0.6.{index}").parse().unwrap() };
    // .1 fails for node 1 only; .2 fails for nodes 1 and 2; .3 is healthy everywhere.
    let (backend_port, _backends) = backends(
        prefix,
        vec![
            Behaviour::FailFrom(vec![node(1)]),
            Behaviour::FailFrom(vec![node(1), node(2)]),
            Behaviour::Healthy,
        ],
    );
    let gossip_ports = [free_port(), free_port(), free_port()];
    let mut nodes: Vec<Node> = (1..=3)
        .map(|index| start_node(index, &gossip_ports, backend_port, prefix))
        .collect();
    let agreed = vec![format!("{prefix}.1"), format!("{prefix}.3")];
    // Every node: .2 out (two votes), .1 in (one vote is not agreement).
    assert!(
        wait_until(Duration::from_secs(20), || nodes
            .iter()
            .all(|node| www_addresses(node.dns) == agreed)),
        "all three answer {agreed:?}: {:?}\n{}",
        nodes
            .iter()
            .map(|node| www_addresses(node.dns))
            .collect::<Vec<_>>(),
        nodes[0].process.as_ref().unwrap().stderr_now()
    );
    // The votes behind it, in the status of node 3 (which sees both as up itself).
    let status = nodes[2].status();
    let addresses = &status["pools"][0]["addresses"];
    assert_eq!(addresses[1]["state"], "down", "{status:#}");
    assert_eq!(
        addresses[1]["votes"]["down"],
        serde_json::json!(["ns1", "ns2"])
    );
    assert_eq!(addresses[0]["state"], "up", "{status:#}");
    assert_eq!(addresses[0]["votes"]["down"], serde_json::json!(["ns1"]));
    assert_eq!(status["cluster"]["node"], "ns3");
    assert_eq!(status["cluster"]["isolated"], false);
    // The CLI shows the cluster and the votes.
    let output = binary()
        .args(["status", "--api", &format!("http://{}", nodes[2].api)])
        .output()
        .unwrap();
    let table = crate::support::output_text(&output);
    assert!(
        table.contains("cluster node ns3; peers: ns1 (live), ns2 (live)"),
        "{table}"
    );
    assert!(
        table.contains(&format!("{prefix}.2 (down: ns1,ns2 of 3)")),
        "{table}"
    );
    // The transition was logged with its votes.
    let log = nodes[2].process.as_ref().unwrap().stderr_now();
    assert!(
        log.lines()
            .any(|line| line.contains("cluster state changed")
                && line.contains(&format!("{prefix}.2"))
                && line.contains("ns1")
                && line.contains("ns2")),
        "{log}"
    );

    // A fourth sender: garbage, a datagram sealed under another key, and a datagram sealed
    // under the right key sent twice (its payload is not a gossip message; then a replay).
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    let target = nodes[0].gossip;
    sender.send_to(b"not a datagram of ours", target).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let foreign = healthdns::cluster::seal::Sealer::new(&[9; 32], "healthdns").seal(
        b"\x00junk",
        now,
        [1; 24],
    );
    sender.send_to(&foreign, target).unwrap();
    let sealed = healthdns::cluster::seal::Sealer::new(&[7; 32], "healthdns").seal(
        b"\x00junk",
        now,
        [2; 24],
    );
    sender.send_to(&sealed, target).unwrap();
    sender.send_to(&sealed, target).unwrap();
    let rejected = |metrics: &BTreeMap<String, f64>, reason: &str| {
        metrics
            .get(&format!(
                "healthdns_gossip_rejected_total{{reason=\"{reason}\"}}"
            ))
            .copied()
            .unwrap_or(0.0)
    };
    assert!(
        wait_until(Duration::from_secs(5), || {
            let metrics = nodes[0].metrics();
            ["malformed", "unopenable", "garbage", "replayed"]
                .iter()
                .all(|reason| rejected(&metrics, reason) >= 1.0)
        }),
        "each kind is counted: {:?}",
        nodes[0].metrics()
    );
    assert_eq!(www_addresses(nodes[0].dns), agreed, "nothing changed");

    let answers = |nodes: &[Node]| -> Vec<Vec<String>> {
        nodes.iter().map(|node| www_addresses(node.dns)).collect()
    };
    // A flood of sealed garbage at node 1 (bounded: 40,000 datagrams or 20 s) while an
    // override made there must still reach every node; its memory stays bounded.
    let rss_before = rss_kib(nodes[0].process.as_ref().unwrap().child.id());
    let counted_before = rejected(&nodes[0].metrics(), "unopenable");
    let flooding = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let flood = {
        let flooding = flooding.clone();
        std::thread::spawn(move || {
            let flooder = UdpSocket::bind("127.0.0.1:0").unwrap();
            let sealer = healthdns::cluster::seal::Sealer::new(&[9; 32], "healthdns");
            let started = std::time::Instant::now();
            let mut sent = 0u64;
            while flooding.load(std::sync::atomic::Ordering::Relaxed)
                && sent < 40_000
                && started.elapsed() < Duration::from_secs(20)
            {
                let mut nonce = [0u8; 24];
                nonce[..8].copy_from_slice(&sent.to_le_bytes());
                let datagram = sealer.seal(&[0x55; 200], now, nonce);
                if flooder.send_to(&datagram, target).is_ok() {
                    sent += 1;
                }
                if sent.is_multiple_of(64) {
                    // About 20,000 a second: a flood, not a test of the loopback's queue.
                    std::thread::sleep(Duration::from_millis(3));
                }
            }
            sent
        })
    };
    // A maintenance override on one node is gossiped and applies on every node.
    let (code, body) = crate::api::request(
        nodes[0].api,
        "POST",
        &format!("/pools/web/addresses/{prefix}.3/force"),
        &[],
        "{\"state\": \"down\"}",
    )
    .unwrap();
    assert_eq!(code, 200, "{body}");
    assert!(
        wait_until(Duration::from_secs(10), || answers(&nodes)
            .iter()
            .all(|answer| *answer == [format!("{prefix}.1")])),
        "forced down everywhere, during the flood: {:?}",
        answers(&nodes)
    );
    flooding.store(false, std::sync::atomic::Ordering::Relaxed);
    let flooded = flood.join().unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || rejected(
            &nodes[0].metrics(),
            "unopenable"
        ) - counted_before
            >= flooded as f64 * 0.5),
        "the flood ({flooded} datagrams) is counted: {:?}",
        nodes[0].metrics()
    );
    let rss_after = rss_kib(nodes[0].process.as_ref().unwrap().child.id());
    assert!(
        rss_after < rss_before + 16 * 1024,
        "memory stays bounded under the flood: {rss_before} -> {rss_after} KiB"
    );
    let (code, _) = crate::api::request(
        nodes[0].api,
        "POST",
        &format!("/pools/web/addresses/{prefix}.3/force"),
        &[],
        "{\"state\": \"auto\"}",
    )
    .unwrap();
    assert_eq!(code, 200);
    assert!(
        wait_until(Duration::from_secs(10), || answers(&nodes)
            .iter()
            .all(|answer| *answer == agreed)),
        "back: {:?}",
        answers(&nodes)
    );

    // Partition: node 1 hears from nobody (its peers are frozen). Isolated, it cannot reach
    // agreement alone: it serves every address (fail-open) and says so; when the peers come
    // back it follows the agreement again.
    for node in &nodes[1..] {
        node.process.as_ref().unwrap().signal("STOP");
    }
    let every = vec![
        format!("{prefix}.1"),
        format!("{prefix}.2"),
        format!("{prefix}.3"),
    ];
    let isolated = wait_until(Duration::from_secs(30), || {
        nodes[0].status()["cluster"]["isolated"] == true && www_addresses(nodes[0].dns) == every
    });
    for node in &nodes[1..] {
        node.process.as_ref().unwrap().signal("CONT");
    }
    assert!(
        isolated,
        "isolated node 1 fails open: {:#}",
        nodes[0].status()
    );
    assert!(nodes[0]
        .process
        .as_ref()
        .unwrap()
        .stderr_now()
        .contains("isolated: no live peer"));
    assert!(
        wait_until(Duration::from_secs(30), || answers(&nodes)
            .iter()
            .all(|answer| *answer == agreed)),
        "healed: {:?}",
        answers(&nodes)
    );

    // Node 3 restarts with its state file: it answers with the agreed set from its first
    // answer (its own probes see .2 up, the saved votes of ns1 and ns2 keep it out).
    nodes[2].restart();
    assert_eq!(
        www_addresses(nodes[2].dns),
        agreed,
        "no flap after a restart"
    );
    let log = nodes[2].process.as_ref().unwrap().stderr_now();
    assert!(
        log.contains("peer_votes=") && !log.contains("peer_votes=0"),
        "the saved peer votes were restored: {log}"
    );

    // Node 2 restarts: a new generation, counted once by name.
    nodes[1].process.take().unwrap().signal("KILL");
    let restarted = start_node(2, &gossip_ports, backend_port, prefix);
    nodes[1] = restarted;
    assert!(
        wait_until(Duration::from_secs(30), || answers(&nodes)
            .iter()
            .all(|answer| *answer == agreed)
            && nodes[0].status()["cluster"]["members"]
                .as_array()
                .is_some_and(|members| members
                    .iter()
                    .filter(|member| member["node"] == "ns2" && member["live"] == true)
                    .count()
                    == 1)),
        "the restarted node counts once: {:#}",
        nodes[0].status()
    );

    // Node 2 is killed: its vote on .2 stops counting once it is declared dead, so .2 has
    // one vote left (node 1's) and comes back on the two that remain.
    let mut killed = nodes.remove(1);
    killed.process.take().unwrap().signal("KILL");
    let all = vec![
        format!("{prefix}.1"),
        format!("{prefix}.2"),
        format!("{prefix}.3"),
    ];
    assert!(
        wait_until(Duration::from_secs(30), || nodes
            .iter()
            .all(|node| www_addresses(node.dns) == all)),
        "the survivors stop counting ns2: {:?}",
        nodes
            .iter()
            .map(|node| www_addresses(node.dns))
            .collect::<Vec<_>>()
    );
    let status = nodes[0].status();
    let members = status["cluster"]["members"].as_array().unwrap();
    assert!(
        members
            .iter()
            .any(|member| member["node"] == "ns2" && member["live"] == false),
        "{status:#}"
    );
}

/// The count of gossip datagrams `node` dropped for `reason`.
fn rejected_count(node: &Node, reason: &str) -> f64 {
    node.metrics()
        .get(&format!(
            "healthdns_gossip_rejected_total{{reason=\"{reason}\"}}"
        ))
        .copied()
        .unwrap_or(0.0)
}

/// Node 2's wall clock jumps (libfaketime) while node 1's does not: a skew inside the
/// replay window (30 s) changes nothing, agreement still takes an address out; a skew beyond
/// it makes node 1 drop node 2's datagrams as stale (counted); when the clocks agree again,
/// so do the nodes.
#[test]
fn peers_tolerate_a_bounded_clock_skew_and_count_what_is_beyond_it() {
    let prefix = "127.67.2";
    let (backend_port, mut backends) = backends(prefix, vec![Behaviour::Healthy; 3]);
    let gossip_ports = [free_port(), free_port(), free_port()];
    let clock = FakeClock::new();
    let nodes = [
        start_node(1, &gossip_ports, backend_port, prefix),
        start_node_with(2, &gossip_ports, backend_port, prefix, Some(&clock)),
    ];
    let all: Vec<String> = (1..=3).map(|host| format!("{prefix}.{host}")).collect();
    let live = |node: &Node, peer: &str| {
        node.status()["cluster"]["members"]
            .as_array()
            .is_some_and(|members| {
                members
                    .iter()
                    .any(|member| member["node"] == peer && member["live"] == true)
            })
    };
    assert!(
        wait_until(Duration::from_secs(20), || live(&nodes[0], "ns2")
            && live(&nodes[1], "ns1")),
        "the two nodes see each other: {:#}",
        nodes[0].status()
    );
    assert!(nodes.iter().all(|node| www_addresses(node.dns) == all));

    // 20 s ahead, inside the window: votes still count; both agree .1 is down.
    clock.set("+20");
    backends[0].stop();
    let rest = all[1..].to_vec();
    assert!(
        wait_until(Duration::from_secs(10), || nodes
            .iter()
            .all(|node| www_addresses(node.dns) == rest)),
        "agreement with a 20 s skew: {:?}",
        nodes
            .iter()
            .map(|node| www_addresses(node.dns))
            .collect::<Vec<_>>()
    );
    assert_eq!(rejected_count(&nodes[0], "stale"), 0.0);

    // 2 minutes ahead, beyond the window: node 1 drops node 2's datagrams, and counts them.
    clock.set("+120");
    assert!(
        wait_until(Duration::from_secs(10), || rejected_count(
            &nodes[0], "stale"
        ) >= 5.0),
        "stale datagrams are counted: {:?}",
        nodes[0].metrics()
    );
    assert!(
        wait_until(Duration::from_secs(20), || !live(&nodes[0], "ns2")),
        "node 2 is no longer heard: {:#}",
        nodes[0].status()
    );

    // The clocks agree again: node 2 is heard, and .1 coming back is agreed on by both.
    clock.set("+0");
    backends[0].resume();
    assert!(
        wait_until(Duration::from_secs(20), || live(&nodes[0], "ns2")
            && nodes.iter().all(|node| www_addresses(node.dns) == all)),
        "heard again and agreeing: {:#}",
        nodes[0].status()
    );
}
