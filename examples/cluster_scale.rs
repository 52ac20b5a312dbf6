//! Gossip at scale, simulated in one process on loopback (run by `bench/cluster.sh`): N
//! instances, each voting on the same addresses, over the real sealed chitchat transport,
//! without probing. Reports the time for every instance to see a flip agreed (two "down"
//! votes, `min_peers_agree = 1`) and the gossip traffic per instance, steady and while
//! flipping.
//!
//! Usage: cargo run --release --example cluster_scale -- [NODES] [ADDRESSES] [GOSSIP_MS] [TRIALS]

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use healthdns::cluster::gossip::{Gossip, PeerView};
use healthdns::cluster::transport::SENT_BYTES;
use healthdns::config::{Agreement, ClusterConfig};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

fn argument(index: usize, default: u64) -> u64 {
    std::env::args()
        .nth(index)
        .and_then(|text| text.parse().ok())
        .unwrap_or(default)
}

fn key(address: u64) -> String {
    format!("v/web/10.0.{}.{}", address >> 8, address & 255)
}

/// Down votes for `address` that node `index` counts: its peers' and its own.
fn down_votes(view: &PeerView, own: &BTreeMap<String, String>, address: u64) -> usize {
    let target: IpAddr = format!("10.0.{}.{}", address >> 8, address & 255)
        .parse()
        .unwrap();
    let peers = view
        .votes
        .votes
        .iter()
        .find(|tally| tally.address == target)
        .map_or(0, |tally| tally.down.len());
    peers + usize::from(own.get(&key(address)).is_some_and(|vote| vote == "down"))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let nodes = argument(1, 25) as usize;
    let addresses = argument(2, 1000);
    let gossip = Duration::from_millis(argument(3, 200));
    let trials = argument(4, 10) as usize;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        let ports: Vec<u16> = (0..nodes)
            .map(|_| {
                std::net::UdpSocket::bind("127.0.0.1:0")
                    .unwrap()
                    .local_addr()
                    .unwrap()
                    .port()
            })
            .collect();
        let address = |port: u16| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
        let votes: BTreeMap<String, String> =
            (0..addresses).map(|a| (key(a), "up".to_string())).collect();
        let mut owns = Vec::new();
        let mut views = Vec::new();
        for index in 0..nodes {
            let config = ClusterConfig {
                node: format!("n{index}"),
                listen: address(ports[index]),
                advertise: address(ports[index]),
                peers: (0..3.min(nodes))
                    .filter(|seed| *seed != index)
                    .map(|seed| address(ports[seed]))
                    .collect(),
                agreement: Agreement::MinPeersAgree(1),
                key: [7; 32],
                gossip_interval: gossip,
                name: "bench".into(),
            };
            let node = Gossip::start(&config, votes.clone()).await.unwrap();
            let (own, own_receiver) = watch::channel(Arc::new(votes.clone()));
            let (view, view_receiver) = watch::channel(Arc::new(PeerView::default()));
            tokio::spawn(node.run(own_receiver, view, shutdown.clone()));
            owns.push(own);
            views.push(view_receiver);
        }
        // Converged: every node sees every other live, with every vote.
        let started = Instant::now();
        let converged = |views: &[watch::Receiver<Arc<PeerView>>]| {
            views.iter().all(|view| {
                let view = view.borrow();
                view.members.iter().filter(|member| member.live).count() == nodes - 1
                    && view.votes.votes.len() == addresses as usize
                    && view
                        .votes
                        .votes
                        .iter()
                        .all(|tally| tally.voters == nodes - 1)
            })
        };
        while !converged(&views) {
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "no convergence in 120 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        println!(
            "{nodes} nodes x {addresses} addresses, gossip every {gossip:?}: converged in {:.2} s",
            started.elapsed().as_secs_f64()
        );
        let window = Duration::from_secs(5);
        let before = SENT_BYTES.load(Ordering::Relaxed);
        tokio::time::sleep(window).await;
        let steady = (SENT_BYTES.load(Ordering::Relaxed) - before) as f64
            / window.as_secs_f64()
            / nodes as f64;
        println!("  steady state: {steady:.0} bytes/s sent per node");

        let mut agree_times = Vec::new();
        let flips_started = Instant::now();
        let before = SENT_BYTES.load(Ordering::Relaxed);
        for trial in 0..trials {
            let flipped = (trial as u64 * 37) % addresses;
            for (down, expected) in [("down", 2), ("up", 0)] {
                let t0 = Instant::now();
                for own in &owns[..2] {
                    own.send_modify(|votes| {
                        Arc::make_mut(votes).insert(key(flipped), down.to_string());
                    });
                }
                loop {
                    let all = views.iter().zip(&owns).all(|(view, own)| {
                        down_votes(&view.borrow(), &own.borrow(), flipped) == expected
                    });
                    if all {
                        break;
                    }
                    assert!(
                        t0.elapsed() < Duration::from_secs(60),
                        "no agreement in 60 s"
                    );
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                if down == "down" {
                    agree_times.push(t0.elapsed().as_secs_f64() * 1000.0);
                }
                tokio::time::sleep(gossip * 2).await;
            }
        }
        let flipping = (SENT_BYTES.load(Ordering::Relaxed) - before) as f64
            / flips_started.elapsed().as_secs_f64()
            / nodes as f64;
        let max = agree_times.iter().copied().fold(0.0, f64::max);
        println!(
            "  flip to agreement on every node: median {:.0} ms, max {max:.0} ms ({trials} trials)",
            median(agree_times.clone())
        );
        println!("  while flipping: {flipping:.0} bytes/s sent per node");
        shutdown.cancel();
    });
}
