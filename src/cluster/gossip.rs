//! Running chitchat: this instance's votes out, the live peers' votes in.
//!
//! Why this exists: membership, failure detection and dissemination are chitchat's (Quickwit's
//! Scuttlebutt gossip); this module only maps votes onto its key-value node state, over the
//! sealed transport, and hands the peers' votes to the publisher as one value.
//!
//! Documented rules:
//! - Keys: `v/<pool>/<address>` = "up" | "down" (this instance's verdict; no key while it has
//!   none), `f/<pool>/<address>` = "up" | "down" (an admin override, which every instance
//!   applies: see `health`).
//! - Identity: the node name from the config, with a generation of the start time in
//!   milliseconds, so a restarted node has a higher generation. Votes are counted by node
//!   name, from its newest live generation only.
//! - A peer counts while chitchat's failure detector says it is live (phi accrual over
//!   heartbeats, with heartbeats expected every `gossip_interval`); once it is declared dead
//!   its votes stop counting.
//! - Before hearing from any peer, the view is not sent for `STARTUP_GRACE`: the publisher
//!   keeps the last view saved in the state file (or none), so a restart does not flap. After
//!   that, an instance with no live peer is isolated: it logs so, shows it in `/status` and
//!   `healthdns_cluster_isolated`, and (with `min_peers_agree` >= 1 or majority) cannot take
//!   an address out: it serves fail-open.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chitchat::{spawn_chitchat, ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::transport::SealedTransport;
use crate::config::ClusterConfig;
use crate::health::{PeerTally, PeerVotes, SavedOverride};

/// How long changes of the peers' states are gathered before the view is rebuilt.
pub const VIEW_DELAY: Duration = Duration::from_millis(20);

/// How long a starting instance waits to hear from a peer before it decides alone.
pub const STARTUP_GRACE: Duration = Duration::from_secs(5);

/// One cluster member as this instance sees it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Member {
    pub node: String,
    pub generation: u64,
    pub address: SocketAddr,
    pub live: bool,
}

/// What the publisher is told: the peers' votes and who is in the cluster.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PeerView {
    pub votes: PeerVotes,
    /// Every known member but this one: live ones, then dead ones.
    pub members: Vec<Member>,
}

impl PeerView {
    /// True when no peer is live.
    pub fn isolated(&self) -> bool {
        !self.members.iter().any(|member| member.live)
    }
}

/// Why gossip could not start; the message names the fix.
#[derive(Debug, thiserror::Error)]
pub enum GossipError {
    #[error("cannot start gossip on {listen}/UDP ([cluster] listen): {message}")]
    Start { listen: SocketAddr, message: String },
}

/// A running chitchat node.
pub struct Gossip {
    handle: ChitchatHandle,
    node: String,
    /// The keys last published.
    published: BTreeMap<String, String>,
}

impl Gossip {
    /// Binds the gossip socket and starts chitchat with `votes` already published.
    pub async fn start(
        config: &ClusterConfig,
        votes: BTreeMap<String, String>,
    ) -> Result<Self, GossipError> {
        let generation = crate::wall_clock::unix_millis();
        let chitchat_config = ChitchatConfig {
            chitchat_id: ChitchatId::new(config.node.as_str(), generation, config.advertise),
            cluster_id: config.name.clone(),
            gossip_interval: config.gossip_interval,
            listen_addr: config.listen,
            seed_nodes: config.peers.iter().map(ToString::to_string).collect(),
            failure_detector_config: FailureDetectorConfig {
                phi_threshold: 8.0,
                sampling_window_size: 1000,
                max_interval: Duration::from_secs(10),
                initial_interval: config.gossip_interval,
                dead_node_grace_period: Duration::from_secs(3600),
            },
            marked_for_deletion_grace_period: Duration::from_secs(3600),
            catchup_callback: None,
            extra_liveness_predicate: None,
        };
        let transport = SealedTransport::new(&config.key, &config.name);
        let initial = votes.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let handle = spawn_chitchat(chitchat_config, initial, &transport)
            .await
            .map_err(|error| GossipError::Start {
                listen: config.listen,
                message: format!("{error:#}"),
            })?;
        tracing::info!(node = %config.node, generation, listen = %config.listen, peers = ?config.peers, "gossip started");
        Ok(Self {
            handle,
            node: config.node.clone(),
            published: votes,
        })
    }

    /// Publishes this instance's votes as they change and sends the peers' view to `view`,
    /// until `shutdown`.
    pub async fn run(
        mut self,
        mut own: watch::Receiver<Arc<BTreeMap<String, String>>>,
        view: watch::Sender<Arc<PeerView>>,
        shutdown: CancellationToken,
    ) {
        let started = Instant::now();
        let mut live = self
            .handle
            .with_chitchat(|chitchat| chitchat.live_nodes_watcher())
            .await;
        let terminated = self.handle.termination_watcher();
        tokio::pin!(terminated);
        // Liveness changes without a new version (a peer declared dead) come with no
        // notification: look every 500 ms. Version changes are gathered for at most
        // `VIEW_DELAY`, so a burst of them costs one view.
        let mut ticker = tokio::time::interval(Duration::from_millis(500));
        let mut was_isolated: Option<bool> = None;
        let mut cache = ParseCache::default();
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                result = &mut terminated => {
                    if shutdown.is_cancelled() {
                        break;
                    }
                    panic!("the gossip server stopped: {}", result.err().map_or_else(|| "no error".into(), |error| format!("{error:#}")));
                }
                changed = own.changed() => {
                    if changed.is_err() {
                        // The publisher has stopped: shutdown follows.
                        shutdown.cancelled().await;
                        break;
                    }
                    let votes = own.borrow_and_update().clone();
                    self.publish(&votes).await;
                }
                _ = live.changed() => {
                    tokio::time::sleep(VIEW_DELAY).await;
                }
                _ = ticker.tick() => {}
            }
            let dead: Vec<ChitchatId> = self
                .handle
                .with_chitchat(|chitchat| chitchat.dead_nodes().cloned().collect())
                .await;
            let next = view_of(&self.node, &live.borrow_and_update(), &dead, &mut cache);
            let isolated = next.isolated();
            if isolated && started.elapsed() < STARTUP_GRACE {
                continue;
            }
            if was_isolated != Some(isolated) {
                if isolated {
                    tracing::warn!("isolated: no live peer; no address can be taken out by agreement (fail-open)");
                } else {
                    let peers: Vec<&str> = next
                        .members
                        .iter()
                        .filter(|member| member.live)
                        .map(|member| member.node.as_str())
                        .collect();
                    tracing::info!(?peers, "hearing from peers");
                }
                metrics::gauge!("healthdns_cluster_isolated").set(if isolated { 1.0 } else { 0.0 });
                was_isolated = Some(isolated);
            }
            let live_count = next.members.iter().filter(|member| member.live).count();
            metrics::gauge!("healthdns_cluster_members", "state" => "live").set(live_count as f64);
            metrics::gauge!("healthdns_cluster_members", "state" => "dead")
                .set((next.members.len() - live_count) as f64);
            view.send_if_modified(|current| {
                if **current == next {
                    false
                } else {
                    *current = Arc::new(next);
                    true
                }
            });
        }
        let _ = self.handle.shutdown().await;
    }

    /// Sets the keys that changed and deletes those that went.
    async fn publish(&mut self, votes: &BTreeMap<String, String>) {
        let published = &self.published;
        self.handle
            .with_chitchat(|chitchat| {
                let state = chitchat.self_node_state();
                for (key, value) in votes {
                    if published.get(key) != Some(value) {
                        state.set(key, value);
                    }
                }
                for key in published.keys() {
                    if !votes.contains_key(key) {
                        state.delete(key);
                    }
                }
            })
            .await;
        self.published = votes.clone();
    }
}

/// One peer's votes as parsed from its node state: ((pool, address), down), and its overrides.
#[derive(Default)]
struct Parsed {
    votes: Vec<((Arc<str>, IpAddr), bool)>,
    forced: Vec<SavedOverride>,
}

/// Each peer's parsed votes, by node name, with the (generation, max version) they were parsed
/// at: a peer whose state did not change is not parsed again.
#[derive(Default)]
struct ParseCache {
    nodes: BTreeMap<String, ((u64, u64), Arc<Parsed>)>,
}

impl ParseCache {
    fn parsed(&mut self, id: &ChitchatId, state: &chitchat::NodeState) -> Arc<Parsed> {
        let version = (id.generation_id, state.max_version());
        if let Some((at, parsed)) = self.nodes.get(&*id.node_id) {
            if *at == version {
                return parsed.clone();
            }
        }
        let parsed = Arc::new(parse(state));
        self.nodes
            .insert(id.node_id.to_string(), (version, parsed.clone()));
        parsed
    }
}

/// The vote and override keys of one node state.
fn parse(state: &chitchat::NodeState) -> Parsed {
    let mut parsed = Parsed::default();
    let mut pools: BTreeMap<&str, Arc<str>> = BTreeMap::new();
    for (key, value) in state.key_values() {
        let Some((kind, rest)) = key.split_once('/') else {
            continue;
        };
        let Some((pool, address)) = rest.rsplit_once('/') else {
            continue;
        };
        let Ok(address) = address.parse::<IpAddr>() else {
            continue;
        };
        match (kind, value) {
            ("v", "up" | "down") => {
                let pool = pools.entry(pool).or_insert_with(|| Arc::from(pool)).clone();
                parsed.votes.push(((pool, address), value == "down"));
            }
            ("f", "up" | "down") => parsed.forced.push(SavedOverride {
                pool: pool.to_string(),
                address,
                state: value.to_string(),
            }),
            _ => {}
        }
    }
    parsed
}

/// The peers' votes and the members, from chitchat's live nodes (`live`, this node included)
/// and dead ones: each node name counts once, by its newest live generation.
fn view_of(
    node: &str,
    live: &BTreeMap<ChitchatId, chitchat::NodeState>,
    dead: &[ChitchatId],
    cache: &mut ParseCache,
) -> PeerView {
    let mut newest: BTreeMap<&str, (&ChitchatId, &chitchat::NodeState)> = BTreeMap::new();
    for (id, state) in live {
        if &*id.node_id == node {
            continue;
        }
        let entry = newest.entry(&id.node_id).or_insert((id, state));
        if id.generation_id > entry.0.generation_id {
            *entry = (id, state);
        }
    }
    let mut tallies: rustc_hash::FxHashMap<(Arc<str>, IpAddr), (usize, Vec<String>)> =
        rustc_hash::FxHashMap::default();
    let mut forced = Vec::new();
    for (name, (id, state)) in &newest {
        let parsed = cache.parsed(id, state);
        for (key, down) in &parsed.votes {
            let (voters, downs) = tallies.entry(key.clone()).or_default();
            *voters += 1;
            if *down {
                downs.push(name.to_string());
            }
        }
        forced.extend(parsed.forced.iter().cloned());
    }
    cache
        .nodes
        .retain(|name, _| newest.contains_key(name.as_str()));
    let mut members: Vec<Member> = newest
        .values()
        .map(|(id, _)| Member {
            node: id.node_id.to_string(),
            generation: id.generation_id,
            address: id.gossip_advertise_addr,
            live: true,
        })
        .collect();
    // A dead node once, by its newest generation, unless it is live again.
    let mut dead_newest: BTreeMap<&str, &ChitchatId> = BTreeMap::new();
    for id in dead {
        if &*id.node_id == node || newest.contains_key(&*id.node_id) {
            continue;
        }
        let entry = dead_newest.entry(&id.node_id).or_insert(id);
        if id.generation_id > entry.generation_id {
            *entry = id;
        }
    }
    members.extend(dead_newest.values().map(|id| Member {
        node: id.node_id.to_string(),
        generation: id.generation_id,
        address: id.gossip_advertise_addr,
        live: false,
    }));
    let mut votes: Vec<PeerTally> = tallies
        .into_iter()
        .map(|((pool, address), (voters, down))| PeerTally {
            pool: pool.to_string(),
            address,
            voters,
            down,
        })
        .collect();
    votes.sort_by(|left, right| (&left.pool, left.address).cmp(&(&right.pool, right.address)));
    PeerView {
        votes: PeerVotes { votes, forced },
        members,
    }
}
