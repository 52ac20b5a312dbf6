//! What the server believes about every probed address, and what each pool name answers.
//!
//! Why this exists: it joins the probers' raw outcomes to the pools' answers. It owns the
//! table of probe targets (each distinct (address, check) once, however many pools share it),
//! one verdict machine and smoothed latency per target, and the selection memory of each pool.
//! It is pure: the publisher feeds it outcomes and asks for answers; tests do the same
//! without sockets or clocks.
//!
//! The folder holds the health side of the data flow, each step in its own module:
//! - [`probe`]: how to check an address (ICMP, TCP, HTTP); stateless checkers.
//! - [`schedule`]: when to check: one task per target, random phase, bounded overlap.
//! - [`verdict`]: the pure `fall`/`rise` machine.
//! - [`agreement`]: the pure cluster rule (how many peer votes take an address out).
//! - [`selection`]: the pure choice of a pool's answer (select, max_answers, all-down, canary).
//!
//! It depends only on `config`; `zone`, `publish` and `service` depend on it.
//!
//! Documented rules:
//! - An address is up only while every check of its pool says up (the worst wins); before a
//!   check's first result it is not up.
//! - Latency is an exponentially weighted average (weight 0.3 for the newest) of passing
//!   probes; an address's latency is the largest of its checks'. It is saved in the state file
//!   with the verdicts (at every verdict change and at shutdown) and restored with them.
//! - Answers are recomputed only for pools that use a target whose verdict changed, so a
//!   latency wiggle costs nothing and never changes an answer.

pub mod agreement;
pub mod probe;
pub mod schedule;
pub mod selection;
pub mod verdict;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use hickory_proto::rr::Name;
use rustc_hash::FxHashMap;

use crate::config::{CheckConfig, PoolConfig};
use crate::health::probe::Outcome;
use crate::health::selection::{Candidate, Policy, PoolAnswer, SelectionMemory};
use crate::health::verdict::{State, Verdict};

/// Index of a probe target in `Health::targets`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TargetId(pub usize);

/// One distinct (address, check) to probe.
#[derive(Debug, Clone)]
pub struct Target {
    pub address: IpAddr,
    pub check: CheckConfig,
}

/// What one name answers for A/AAAA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAnswer {
    pub ttl: u32,
    /// IPv4 answer A, IPv6 answer AAAA; in config order.
    pub addresses: Vec<IpAddr>,
    /// SERVFAIL for A and AAAA (the `servfail` all-down policy).
    pub servfail: bool,
    /// The address families the pool has addresses for, [IPv4, IPv6]: it answers (and
    /// replaces the zone file's) A only if it has an IPv4 address, AAAA only with an IPv6 one.
    pub families: [bool; 2],
}

impl NameAnswer {
    /// The addresses as text, for logs.
    pub fn address_texts(&self) -> Vec<String> {
        self.addresses.iter().map(ToString::to_string).collect()
    }
}

/// Every pool name's answer.
pub type Answers = BTreeMap<Name, NameAnswer>;

/// An override names a pool or address that is not configured.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ForceError {
    #[error("no pool named {0:?}")]
    NoPool(String),
    #[error("pool {0:?} has no address {1}")]
    NoAddress(String, IpAddr),
}

/// What the state file keeps of the health table, so a restarted server starts from what it
/// last believed: each target's verdict (by address and check) and the admin overrides.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedHealth {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verdicts: Vec<SavedVerdict>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<SavedOverride>,
    /// In a cluster: the last peers' votes seen, used at the next start until peers are heard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peers: Option<PeerVotes>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedVerdict {
    pub address: IpAddr,
    /// The check as text (`CheckKind`'s display: "http http://{address}:8080/").
    pub check: String,
    pub up: bool,
    /// The smoothed latency of passing probes, in microseconds (what `select = "fastest"`
    /// ranks by), so a restarted server ranks as before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_us: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedOverride {
    pub pool: String,
    pub address: IpAddr,
    /// "up" or "down".
    pub state: String,
}

/// One pool in the status report.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PoolReport {
    pub name: String,
    pub names: Vec<String>,
    /// Config order, then the canary (if any).
    pub addresses: Vec<AddressReport>,
}

/// One address: up only while every check says up.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct AddressReport {
    pub address: IpAddr,
    pub state: State,
    pub canary: bool,
    /// An admin override: up or down whatever the probes say; None when automatic.
    #[serde(rename = "override")]
    pub forced: Option<State>,
    /// When one of its checks last changed verdict.
    #[serde(with = "rfc3339")]
    pub since: Option<std::time::SystemTime>,
    pub checks: Vec<CheckReport>,
    /// In a cluster: the votes behind `state`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub votes: Option<VotesReport>,
}

impl AddressReport {
    /// The address's latency in milliseconds: the largest smoothed latency of its checks (the
    /// same rule selection uses).
    pub fn latency_ms(&self) -> Option<f64> {
        self.checks
            .iter()
            .filter_map(|check| check.smoothed_latency_ms)
            .reduce(f64::max)
    }
}

/// One check of one address.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct CheckReport {
    /// The check as text ("http http://{address}:8080/", "icmp", "tcp port 443").
    pub check: String,
    pub state: State,
    #[serde(with = "rfc3339")]
    pub since: Option<std::time::SystemTime>,
    pub last_passed: Option<bool>,
    pub last_latency_ms: Option<f64>,
    /// Exponentially weighted over passing probes (what `select = "fastest"` uses).
    pub smoothed_latency_ms: Option<f64>,
    /// Why the last probe failed.
    pub reason: Option<String>,
}

/// What an address is in a pool: down if any of its checks says down, up only while every
/// check says up, else unknown; an admin override wins over all of it. The one rule behind
/// answers, the status report and the `healthdns_address_up` gauge.
fn address_state(status: &[TargetStatus], ids: &[TargetId], forced: Option<bool>) -> State {
    match forced {
        Some(true) => State::Up,
        Some(false) => State::Down,
        None => {
            let mut state = State::Up;
            for id in ids {
                match status[id.0].verdict.state() {
                    State::Down => return State::Down,
                    State::Unknown => state = State::Unknown,
                    State::Up => {}
                }
            }
            state
        }
    }
}

/// What the other live instances of the cluster say (see `cluster`), by (pool, address).
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerVotes {
    /// Each (pool, address) some peer voted on: who voted, and who of them says down.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub votes: Vec<PeerTally>,
    /// Overrides published by peers; down wins over up.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forced: Vec<SavedOverride>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerTally {
    pub pool: String,
    pub address: IpAddr,
    /// How many peers voted.
    pub voters: usize,
    /// Those of them that say down, sorted.
    pub down: Vec<String>,
}

/// The cluster side of the health table: this node's name, the rule, and the peers' votes.
#[derive(Debug, Clone)]
struct ClusterRule {
    node: String,
    agreement: crate::health::agreement::Agreement,
    /// By (pool, address): (how many peers voted, those that say down).
    tallies: FxHashMap<(String, IpAddr), (usize, Vec<String>)>,
    /// By (pool, address): forced up (true) or down (false) by some peer.
    forced: FxHashMap<(String, IpAddr), bool>,
    peers: PeerVotes,
}

/// The votes behind an address's state in a cluster (the status report and the logs).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VotesReport {
    /// How many live instances have a verdict on it, this one included.
    pub voters: usize,
    /// Those that say down.
    pub down: Vec<String>,
}

/// An address's state in a pool, and the votes behind it.
struct Decision {
    state: State,
    votes: Option<VotesReport>,
}

/// The one rule behind answers, the status report and the `healthdns_address_up` gauge.
/// Alone: the address's own state (see [`address_state`]). In a cluster: this instance's own
/// state is its vote, and the address is down only when the cluster agrees (see
/// `agreement`); while it does not, a locally down address stays in. An admin
/// override, this instance's or a peer's (down wins), decides over both.
fn decide(
    status: &[TargetStatus],
    cluster: Option<&ClusterRule>,
    pool: &str,
    address: IpAddr,
    ids: &[TargetId],
    forced: Option<bool>,
) -> Decision {
    let own = address_state(status, ids, None);
    let Some(cluster) = cluster else {
        return Decision {
            state: address_state(status, ids, forced),
            votes: None,
        };
    };
    let key = (pool.to_string(), address);
    let (mut voters, mut down) = cluster.tallies.get(&key).cloned().unwrap_or_default();
    if own != State::Unknown {
        voters += 1;
        if own == State::Down {
            down.push(cluster.node.clone());
        }
    }
    down.sort();
    let forced = forced.or_else(|| cluster.forced.get(&key).copied());
    let state = match forced {
        Some(true) => State::Up,
        Some(false) => State::Down,
        None if crate::health::agreement::cluster_down(cluster.agreement, down.len(), voters) => {
            State::Down
        }
        None if voters == 0 => State::Unknown,
        None => State::Up,
    };
    Decision {
        state,
        votes: Some(VotesReport { voters, down }),
    }
}

/// Times in reports as RFC 3339 text ("2026-12-02T01:02:03.456Z").
mod rfc3339 {
    use std::time::SystemTime;

    pub fn serialize<S: serde::Serializer>(
        time: &Option<SystemTime>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match time {
            Some(time) => serializer.collect_str(&humantime::format_rfc3339_millis(*time)),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<SystemTime>, D::Error> {
        let text: Option<String> = serde::Deserialize::deserialize(deserializer)?;
        text.map(|text| humantime::parse_rfc3339(&text).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[derive(Debug, Clone, Default)]
struct TargetStatus {
    verdict: Verdict,
    latency: Option<Duration>,
    /// The newest probe's outcome.
    last: Option<Outcome>,
    /// When the verdict last changed (wall clock, set by the caller: this module has no clock).
    since: Option<std::time::SystemTime>,
}

#[derive(Debug)]
struct PoolState {
    config: PoolConfig,
    /// Per configured address (config order): its targets, one per check.
    address_targets: Vec<Vec<TargetId>>,
    /// The canary's targets, one per check.
    canary_targets: Vec<TargetId>,
    memory: SelectionMemory,
    /// Admin overrides by address (config order index): forced up (true) or down (false).
    forced: BTreeMap<usize, bool>,
}

/// The health table of every pool.
#[derive(Debug)]
pub struct Health {
    targets: Vec<Target>,
    status: Vec<TargetStatus>,
    /// For each target, the pools (indexes) that use it.
    users: Vec<Vec<usize>>,
    pools: Vec<PoolState>,
    /// Set when this instance is part of a cluster.
    cluster: Option<ClusterRule>,
}

/// What a reconfiguration changed in the probe targets.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reconfigured {
    /// New (address, check) pairs: no verdict yet (the cold-start rule applies).
    pub added: Vec<TargetId>,
    /// Pairs no pool uses any more: their probes should stop.
    pub removed: Vec<TargetId>,
}

impl Health {
    pub fn new(pools: &[PoolConfig]) -> Self {
        let mut health = Self {
            targets: Vec::new(),
            status: Vec::new(),
            users: Vec::new(),
            pools: Vec::new(),
            cluster: None,
        };
        health.reconfigure(pools);
        health
    }

    /// Switches to `pools` (a reload). An (address, check) pair that is still used keeps its
    /// target id, verdict, latency and history; a new pair gets a new id (ids are never
    /// reused, so a late outcome of a stopped probe cannot land on another target); a pair no
    /// pool uses any more is retired, and outcomes for it are ignored from then on. A pool
    /// keeps its overrides (for addresses it still has) and, if its addresses are unchanged,
    /// its selection memory.
    pub fn reconfigure(&mut self, pools: &[PoolConfig]) -> Reconfigured {
        let old_pools = std::mem::take(&mut self.pools);
        let old_users = std::mem::replace(&mut self.users, vec![Vec::new(); self.targets.len()]);
        let mut index: FxHashMap<(IpAddr, CheckConfig), TargetId> = self
            .targets
            .iter()
            .enumerate()
            .filter(|(id, _)| !old_users[*id].is_empty())
            .map(|(id, target)| ((target.address, target.check.clone()), TargetId(id)))
            .collect();
        let mut added = Vec::new();
        for (pool_index, pool) in pools.iter().enumerate() {
            let mut target_of = |address: IpAddr| -> Vec<TargetId> {
                pool.checks
                    .iter()
                    .map(|check| {
                        let id = *index.entry((address, check.clone())).or_insert_with(|| {
                            self.targets.push(Target {
                                address,
                                check: check.clone(),
                            });
                            self.status.push(TargetStatus::default());
                            self.users.push(Vec::new());
                            added.push(TargetId(self.targets.len() - 1));
                            TargetId(self.targets.len() - 1)
                        });
                        if !self.users[id.0].contains(&pool_index) {
                            self.users[id.0].push(pool_index);
                        }
                        id
                    })
                    .collect()
            };
            let address_targets = pool.addresses.iter().map(|a| target_of(*a)).collect();
            let canary_targets = pool
                .canary
                .as_ref()
                .map_or_else(Vec::new, |canary| target_of(canary.address));
            let previous = old_pools
                .iter()
                .find(|state| state.config.name == pool.name);
            let memory = previous
                .filter(|state| state.config.addresses == pool.addresses)
                .map(|state| state.memory.clone())
                .unwrap_or_default();
            let forced = previous
                .map(|state| {
                    state
                        .forced
                        .iter()
                        .filter_map(|(old, up)| {
                            let address = state.config.addresses[*old];
                            let new = pool.addresses.iter().position(|a| *a == address)?;
                            Some((new, *up))
                        })
                        .collect()
                })
                .unwrap_or_default();
            self.pools.push(PoolState {
                config: pool.clone(),
                address_targets,
                canary_targets,
                memory,
                forced,
            });
        }
        let removed: Vec<TargetId> = (0..old_users.len())
            .filter(|id| !old_users[*id].is_empty() && self.users[*id].is_empty())
            .map(TargetId)
            .collect();
        for id in &removed {
            self.status[id.0] = TargetStatus::default();
        }
        Reconfigured { added, removed }
    }

    /// Makes this table a cluster member named `node`: from now on an address is down only
    /// when the cluster agrees (see [`decide`]).
    pub fn enable_cluster(&mut self, node: &str, agreement: crate::health::agreement::Agreement) {
        self.cluster = Some(ClusterRule {
            node: node.to_string(),
            agreement,
            tallies: FxHashMap::default(),
            forced: FxHashMap::default(),
            peers: PeerVotes::default(),
        });
    }

    /// Takes the peers' current votes; true if they changed (answers must be recomputed).
    pub fn set_peer_votes(&mut self, peers: PeerVotes) -> bool {
        let Some(cluster) = &mut self.cluster else {
            return false;
        };
        if cluster.peers == peers {
            return false;
        }
        cluster.tallies = peers
            .votes
            .iter()
            .map(|tally| {
                (
                    (tally.pool.clone(), tally.address),
                    (tally.voters, tally.down.clone()),
                )
            })
            .collect();
        cluster.forced.clear();
        for forced in &peers.forced {
            let up = forced.state == "up";
            let entry = cluster
                .forced
                .entry((forced.pool.clone(), forced.address))
                .or_insert(up);
            *entry &= up;
        }
        cluster.peers = peers;
        true
    }

    /// The peers' votes as last set (what the state file keeps of the cluster view).
    pub fn peer_votes(&self) -> Option<&PeerVotes> {
        self.cluster.as_ref().map(|cluster| &cluster.peers)
    }

    /// This instance's own votes and overrides, as gossip keys: `v/<pool>/<address>` =
    /// "up" | "down" (addresses with a verdict), `f/<pool>/<address>` = "up" | "down".
    pub fn own_votes(&self) -> BTreeMap<String, String> {
        let mut votes = BTreeMap::new();
        for pool in &self.pools {
            let name = &pool.config.name;
            let canary = pool
                .config
                .canary
                .as_ref()
                .map(|canary| (canary.address, &pool.canary_targets));
            let addresses = pool
                .config
                .addresses
                .iter()
                .copied()
                .zip(&pool.address_targets)
                .chain(canary);
            for (address, ids) in addresses {
                match address_state(&self.status, ids, None) {
                    State::Up => votes.insert(format!("v/{name}/{address}"), "up".into()),
                    State::Down => votes.insert(format!("v/{name}/{address}"), "down".into()),
                    State::Unknown => None,
                };
            }
            for (index, up) in &pool.forced {
                let address = pool.config.addresses[*index];
                let state = if *up { "up" } else { "down" };
                votes.insert(format!("f/{name}/{address}"), state.into());
            }
        }
        votes
    }

    /// Every (pool, address) with its state and the votes behind it, for logging what a
    /// change of votes did.
    pub fn decisions(&self) -> Vec<(String, IpAddr, State, Option<VotesReport>)> {
        let mut decisions = Vec::new();
        for pool in &self.pools {
            let canary = pool
                .config
                .canary
                .as_ref()
                .map(|canary| (canary.address, &pool.canary_targets, None));
            let addresses = pool
                .config
                .addresses
                .iter()
                .zip(&pool.address_targets)
                .enumerate()
                .map(|(index, (address, ids))| (*address, ids, pool.forced.get(&index).copied()))
                .chain(canary);
            for (address, ids, forced) in addresses {
                let decision = decide(
                    &self.status,
                    self.cluster.as_ref(),
                    &pool.config.name,
                    address,
                    ids,
                    forced,
                );
                decisions.push((
                    pool.config.name.clone(),
                    address,
                    decision.state,
                    decision.votes,
                ));
            }
        }
        decisions
    }

    /// True while some pool uses `target` (it has not been retired by a reload).
    pub fn is_live(&self, target: TargetId) -> bool {
        !self.users[target.0].is_empty()
    }

    /// Every distinct probe target, including those retired by a reload (see
    /// [`Health::is_live`]).
    pub fn targets(&self) -> &[Target] {
        &self.targets
    }

    /// Records one outcome; returns the target's new state when its verdict changed.
    pub fn observe(&mut self, target: TargetId, outcome: &Outcome) -> Option<State> {
        if !self.is_live(target) {
            // A late outcome of a probe stopped by a reload.
            return None;
        }
        let check = &self.targets[target.0].check;
        let (fall, rise) = (check.fall, check.rise);
        let status = &mut self.status[target.0];
        if outcome.passed {
            status.latency = Some(match status.latency {
                None => outcome.latency,
                Some(previous) => previous.mul_f64(0.7) + outcome.latency.mul_f64(0.3),
            });
        }
        status.last = Some(outcome.clone());
        status.verdict.observe(outcome.passed, fall, rise)
    }

    /// For each pool using `target`: the pool's name, the target's address, and whether that
    /// address is up (every check of it up) in that pool.
    pub fn address_states(&self, target: TargetId) -> Vec<(&str, IpAddr, bool)> {
        let address = self.targets[target.0].address;
        self.users[target.0]
            .iter()
            .map(|pool| {
                let state = &self.pools[*pool];
                let index = state
                    .config
                    .addresses
                    .iter()
                    .position(|candidate| *candidate == address);
                let ids = index
                    .map(|index| &state.address_targets[index])
                    .unwrap_or(&state.canary_targets);
                let forced = index.and_then(|index| state.forced.get(&index).copied());
                let decision = decide(
                    &self.status,
                    self.cluster.as_ref(),
                    &state.config.name,
                    address,
                    ids,
                    forced,
                );
                (
                    state.config.name.as_str(),
                    address,
                    decision.state == State::Up,
                )
            })
            .collect()
    }

    /// Records when `target`'s verdict changed (for the status report).
    pub fn mark_since(&mut self, target: TargetId, at: std::time::SystemTime) {
        self.status[target.0].since = Some(at);
    }

    /// What every pool and address looks like now, for the status API: pure, built on demand.
    pub fn report(&self) -> Vec<PoolReport> {
        let check_report = |id: &TargetId| {
            let status = &self.status[id.0];
            let target = &self.targets[id.0];
            CheckReport {
                check: target.check.kind.to_string(),
                state: status.verdict.state(),
                since: status.since,
                last_passed: status.last.as_ref().map(|outcome| outcome.passed),
                last_latency_ms: status
                    .last
                    .as_ref()
                    .map(|outcome| outcome.latency.as_secs_f64() * 1000.0),
                smoothed_latency_ms: status.latency.map(|latency| latency.as_secs_f64() * 1000.0),
                reason: status
                    .last
                    .as_ref()
                    .map(|outcome| outcome.reason.clone())
                    .filter(|reason| !reason.is_empty()),
            }
        };
        let address_report =
            |pool: &str, address: IpAddr, ids: &[TargetId], canary: bool, forced: Option<bool>| {
                let checks: Vec<CheckReport> = ids.iter().map(check_report).collect();
                let decision = decide(
                    &self.status,
                    self.cluster.as_ref(),
                    pool,
                    address,
                    ids,
                    forced,
                );
                AddressReport {
                    address,
                    state: decision.state,
                    canary,
                    forced: forced.map(|up| if up { State::Up } else { State::Down }),
                    since: checks.iter().filter_map(|check| check.since).max(),
                    checks,
                    votes: decision.votes,
                }
            };
        self.pools
            .iter()
            .map(|pool| {
                let mut addresses: Vec<AddressReport> = pool
                    .config
                    .addresses
                    .iter()
                    .zip(&pool.address_targets)
                    .enumerate()
                    .map(|(index, (address, ids))| {
                        address_report(
                            &pool.config.name,
                            *address,
                            ids,
                            false,
                            pool.forced.get(&index).copied(),
                        )
                    })
                    .collect();
                if let Some(canary) = &pool.config.canary {
                    addresses.push(address_report(
                        &pool.config.name,
                        canary.address,
                        &pool.canary_targets,
                        true,
                        None,
                    ));
                }
                PoolReport {
                    name: pool.config.name.clone(),
                    names: pool.config.names.iter().map(ToString::to_string).collect(),
                    addresses,
                }
            })
            .collect()
    }

    /// The names of the pools that use `target` (for logs).
    pub fn pool_names(&self, target: TargetId) -> Vec<&str> {
        self.users[target.0]
            .iter()
            .map(|pool| self.pools[*pool].config.name.as_str())
            .collect()
    }

    /// Logs a verdict change of `target`; `at_start` marks the cold-start round.
    pub fn log_transition(
        &self,
        target: TargetId,
        outcome: &Outcome,
        state: State,
        at_start: bool,
    ) {
        let address = self.targets[target.0].address;
        let check = &self.targets[target.0].check.kind;
        let pools = self.pool_names(target);
        match (state, at_start) {
            (State::Up, _) => {
                tracing::info!(%address, ?pools, %check, latency = ?outcome.latency, "address up")
            }
            (_, true) => {
                tracing::warn!(%address, ?pools, %check, reason = %outcome.reason, "address down at start")
            }
            (_, false) => {
                tracing::warn!(%address, ?pools, %check, reason = %outcome.reason, "address down")
            }
        }
    }

    /// How many pools there are.
    pub fn pool_count(&self) -> usize {
        self.pools.len()
    }

    /// The pools (indexes) whose answers depend on `target`.
    pub fn pools_using(&self, target: TargetId) -> &[usize] {
        &self.users[target.0]
    }

    /// Recomputes one pool's answers (and its selection memory) from the current verdicts.
    pub fn pool_answers(&mut self, pool: usize) -> Vec<(Name, NameAnswer)> {
        let cluster = self.cluster.as_ref();
        let name = self.pools[pool].config.name.clone();
        let up = |ids: &[TargetId], status: &[TargetStatus], forced: Option<bool>, address| {
            decide(status, cluster, &name, address, ids, forced).state == State::Up
        };
        let state = &mut self.pools[pool];
        let candidates: Vec<Candidate> = state
            .config
            .addresses
            .iter()
            .zip(&state.address_targets)
            .enumerate()
            .map(|(index, (address, ids))| Candidate {
                address: *address,
                up: up(
                    ids,
                    &self.status,
                    state.forced.get(&index).copied(),
                    *address,
                ),
                latency: ids.iter().filter_map(|id| self.status[id.0].latency).max(),
            })
            .collect();
        let policy = Policy {
            select: state.config.select,
            max_answers: state.config.max_answers,
            all_down: state.config.all_down,
        };
        let answer = selection::choose(policy, &candidates, &mut state.memory);
        let canary = state
            .config
            .canary
            .as_ref()
            .filter(|canary| up(&state.canary_targets, &self.status, None, canary.address));
        name_answers(
            &state.config,
            &answer,
            canary.map(|canary| (&canary.name, canary.address)),
        )
    }

    /// Sets (Some) or clears (None) an admin override of `address` in the pool named `pool`:
    /// forced up or down whatever its probes say (maintenance). Returns the pool's index.
    pub fn force(
        &mut self,
        pool: &str,
        address: IpAddr,
        forced: Option<bool>,
    ) -> Result<usize, ForceError> {
        let index = self
            .pools
            .iter()
            .position(|state| state.config.name == pool)
            .ok_or_else(|| ForceError::NoPool(pool.to_string()))?;
        let state = &mut self.pools[index];
        let position = state
            .config
            .addresses
            .iter()
            .position(|candidate| *candidate == address)
            .ok_or_else(|| ForceError::NoAddress(pool.to_string(), address))?;
        match forced {
            Some(up) => state.forced.insert(position, up),
            None => state.forced.remove(&position),
        };
        Ok(index)
    }

    /// What to save in the state file.
    pub fn saved(&self) -> SavedHealth {
        SavedHealth {
            verdicts: self
                .targets
                .iter()
                .zip(&self.status)
                .zip(&self.users)
                .filter(|(_, users)| !users.is_empty())
                .filter_map(|((target, status), _)| {
                    let up = match status.verdict.state() {
                        State::Up => true,
                        State::Down => false,
                        State::Unknown => return None,
                    };
                    Some(SavedVerdict {
                        address: target.address,
                        check: target.check.kind.to_string(),
                        up,
                        latency_us: status.latency.map(|latency| latency.as_micros() as u64),
                    })
                })
                .collect(),
            overrides: self
                .overrides()
                .into_iter()
                .map(|(pool, address, up)| SavedOverride {
                    pool,
                    address,
                    state: if up { "up" } else { "down" }.into(),
                })
                .collect(),
            peers: self
                .peer_votes()
                .filter(|peers| **peers != PeerVotes::default())
                .cloned(),
        }
    }

    /// Starts from `saved` (the state file): verdicts of targets that are still configured,
    /// and overrides of pools and addresses that still exist. Returns how many of each were
    /// restored; the rest no longer applies and is dropped.
    pub fn restore(&mut self, saved: &SavedHealth) -> (usize, usize) {
        let mut verdicts = 0;
        for (target, status) in self.targets.iter().zip(&mut self.status) {
            let check = target.check.kind.to_string();
            if let Some(found) = saved
                .verdicts
                .iter()
                .find(|verdict| verdict.address == target.address && verdict.check == check)
            {
                status.verdict = Verdict::starting(if found.up { State::Up } else { State::Down });
                status.latency = found.latency_us.map(Duration::from_micros);
                verdicts += 1;
            }
        }
        let mut overrides = 0;
        for saved in &saved.overrides {
            let forced = match saved.state.as_str() {
                "up" => Some(true),
                "down" => Some(false),
                _ => continue,
            };
            if self.force(&saved.pool, saved.address, forced).is_ok() {
                overrides += 1;
            }
        }
        if let Some(peers) = &saved.peers {
            // Kept until this instance hears from its peers (see `cluster::gossip`).
            self.set_peer_votes(peers.clone());
        }
        (verdicts, overrides)
    }

    /// Every override, as (pool, address, forced up).
    pub fn overrides(&self) -> Vec<(String, IpAddr, bool)> {
        self.pools
            .iter()
            .flat_map(|state| {
                state.forced.iter().map(|(index, up)| {
                    (
                        state.config.name.clone(),
                        state.config.addresses[*index],
                        *up,
                    )
                })
            })
            .collect()
    }

    /// Every pool's answers from the current verdicts.
    pub fn answers(&mut self) -> Answers {
        (0..self.pools.len())
            .flat_map(|pool| self.pool_answers(pool))
            .collect()
    }
}

/// Every pool answering every configured address (canaries left out): what a dry run serves,
/// and what is served with no health information.
pub fn configured_answers(pools: &[PoolConfig]) -> Answers {
    pools
        .iter()
        .flat_map(|pool| {
            let answer = PoolAnswer {
                addresses: pool.addresses.clone(),
                servfail: false,
            };
            name_answers(pool, &answer, None)
        })
        .collect()
}

fn name_answers(
    pool: &PoolConfig,
    answer: &PoolAnswer,
    canary: Option<(&Name, IpAddr)>,
) -> Vec<(Name, NameAnswer)> {
    pool.names
        .iter()
        .map(|name| {
            let name_canary = canary.filter(|(canary_name, _)| *canary_name == name);
            let answer = selection::with_canary(answer, name_canary.map(|(_, address)| address));
            (
                name.clone(),
                NameAnswer {
                    ttl: pool.ttl,
                    addresses: answer.addresses,
                    servfail: answer.servfail,
                    families: [
                        pool.addresses.iter().any(IpAddr::is_ipv4),
                        pool.addresses.iter().any(IpAddr::is_ipv6),
                    ],
                },
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::path::Path;

    const CONFIG: &str = r#"
[[zone]]
origin = "example.test"
file = "x"

[[pool]]
name = "web"
names = ["www.example.test", "example.test"]
addresses = ["10.0.0.1", "10.0.0.2", "2001:db8::1"]
canary = { name = "www.example.test", address = "10.0.0.9" }
[[pool.check]]
kind = "icmp"
fall = 2
rise = 2
[[pool.check]]
kind = "tcp"
port = 80
fall = 1
rise = 1

[[pool]]
name = "api"
names = ["api.example.test"]
addresses = ["10.0.0.2"]
all_down = "servfail"
[[pool.check]]
kind = "icmp"
fall = 2
rise = 2
"#;

    fn outcome(passed: bool) -> Outcome {
        Outcome {
            passed,
            latency: Duration::from_millis(5),
            reason: if passed { String::new() } else { "test".into() },
        }
    }

    fn find(health: &Health, address: &str, icmp: bool) -> TargetId {
        let address: IpAddr = address.parse().unwrap();
        let index = health
            .targets()
            .iter()
            .position(|target| {
                target.address == address
                    && matches!(target.check.kind, crate::config::CheckKind::Icmp) == icmp
            })
            .unwrap();
        TargetId(index)
    }

    fn answer_of(answers: &Answers, name: &str) -> (Vec<String>, bool) {
        let answer = &answers[&Name::from_ascii(name).unwrap()];
        (
            answer.addresses.iter().map(ToString::to_string).collect(),
            answer.servfail,
        )
    }

    #[test]
    fn identical_checks_on_one_address_are_probed_once() {
        let config = Config::parse(CONFIG, Path::new("c.toml")).unwrap();
        let health = Health::new(&config.pools);
        // web: 4 addresses (with the canary) x 2 checks; api's icmp on 10.0.0.2 is shared.
        assert_eq!(health.targets().len(), 8);
        let shared = find(&health, "10.0.0.2", true);
        assert_eq!(health.pools_using(shared), &[0, 1]);
        assert_eq!(health.pool_names(shared), ["web", "api"]);
    }

    #[test]
    fn every_check_must_pass_and_answers_follow_verdicts() {
        let config = Config::parse(CONFIG, Path::new("c.toml")).unwrap();
        let mut health = Health::new(&config.pools);
        for index in 0..health.targets().len() {
            health.observe(TargetId(index), &outcome(true));
        }
        let answers = health.answers();
        assert_eq!(
            answer_of(&answers, "www.example.test."),
            (
                vec!["10.0.0.1".into(), "10.0.0.9".into(), "2001:db8::1".into()],
                false
            )
        );
        assert_eq!(
            answer_of(&answers, "example.test."),
            (
                vec!["10.0.0.1".into(), "10.0.0.2".into(), "2001:db8::1".into()],
                false
            )
        );

        // The tcp check (fall = 1) of 10.0.0.1 fails: the address is down although icmp passes.
        let tcp = find(&health, "10.0.0.1", false);
        assert_eq!(health.observe(tcp, &outcome(false)), Some(State::Down));
        assert_eq!(health.pools_using(tcp), &[0]);
        let answers: Answers = health.pool_answers(0).into_iter().collect();
        assert_eq!(
            answer_of(&answers, "example.test."),
            (vec!["10.0.0.2".into(), "2001:db8::1".into()], false)
        );
        // One IPv4 address left: the canary is added beside it, not in its place.
        assert_eq!(
            answer_of(&answers, "www.example.test."),
            (
                vec!["10.0.0.2".into(), "2001:db8::1".into(), "10.0.0.9".into()],
                false
            )
        );
    }

    #[test]
    fn a_shared_target_moves_both_pools_and_all_down_applies() {
        let config = Config::parse(CONFIG, Path::new("c.toml")).unwrap();
        let mut health = Health::new(&config.pools);
        for index in 0..health.targets().len() {
            health.observe(TargetId(index), &outcome(true));
        }
        let shared = find(&health, "10.0.0.2", true);
        assert_eq!(health.observe(shared, &outcome(false)), None);
        assert_eq!(health.observe(shared, &outcome(false)), Some(State::Down));
        let answers = health.answers();
        assert_eq!(answer_of(&answers, "api.example.test."), (vec![], true));
        assert_eq!(
            answer_of(&answers, "example.test."),
            (vec!["10.0.0.1".into(), "2001:db8::1".into()], false)
        );
    }

    #[test]
    fn configured_answers_leave_canaries_out() {
        let config = Config::parse(CONFIG, Path::new("c.toml")).unwrap();
        let answers = configured_answers(&config.pools);
        assert_eq!(
            answer_of(&answers, "www.example.test."),
            (
                vec!["10.0.0.1".into(), "10.0.0.2".into(), "2001:db8::1".into()],
                false
            )
        );
        assert_eq!(answers.len(), 3);
    }

    #[test]
    fn a_reconfiguration_keeps_what_is_unchanged_and_retires_the_rest() {
        let config = Config::parse(CONFIG, Path::new("c.toml")).unwrap();
        let mut health = Health::new(&config.pools);
        let kept = find(&health, "10.0.0.1", true);
        let dropped = find(&health, "10.0.0.9", true);
        for id in 0..health.targets().len() {
            health.observe(TargetId(id), &outcome(true));
        }
        // 10.0.0.1 icmp goes down (fall 2) and is forced down in web.
        health.observe(kept, &outcome(false));
        assert_eq!(health.observe(kept, &outcome(false)), Some(State::Down));
        health
            .force("web", "10.0.0.2".parse().unwrap(), Some(false))
            .unwrap();

        // web loses its canary and 2001:db8::1 and gains 10.0.0.3; api is unchanged.
        let changed = CONFIG.replace(
            r#"addresses = ["10.0.0.1", "10.0.0.2", "2001:db8::1"]
canary = { name = "www.example.test", address = "10.0.0.9" }"#,
            r#"addresses = ["10.0.0.3", "10.0.0.1", "10.0.0.2"]"#,
        );
        let changed = Config::parse(&changed, Path::new("c.toml")).unwrap();
        let reconfigured = health.reconfigure(&changed.pools);
        // Two checks each: 10.0.0.3 is new; 10.0.0.9 and 2001:db8::1 are retired.
        assert_eq!(reconfigured.added.len(), 2);
        assert_eq!(reconfigured.removed.len(), 4);
        assert!(reconfigured.removed.contains(&dropped));
        assert!(!health.is_live(dropped));
        // A late outcome of a retired probe changes nothing.
        assert_eq!(health.observe(dropped, &outcome(false)), None);
        // The kept target keeps its id and its verdict; the override follows the address.
        assert_eq!(find(&health, "10.0.0.1", true), kept);
        assert_eq!(health.status[kept.0].verdict.state(), State::Down);
        assert_eq!(
            health.overrides(),
            vec![("web".to_string(), "10.0.0.2".parse().unwrap(), false)]
        );
        // The new address has no verdict yet: not answered until its first probe.
        let answers = health.answers();
        assert_eq!(answer_of(&answers, "api.example.test.").0, ["10.0.0.2"]);
        assert_eq!(
            answer_of(&answers, "www.example.test.").0,
            ["10.0.0.3", "10.0.0.1", "10.0.0.2"],
            "nothing up in web: all-down serves every address"
        );
        for id in &reconfigured.added {
            health.observe(*id, &outcome(true));
        }
        let answers = health.answers();
        assert_eq!(answer_of(&answers, "www.example.test.").0, ["10.0.0.3"]);
        // Retired targets are not saved.
        let saved = health.saved();
        assert!(saved
            .verdicts
            .iter()
            .all(|verdict| verdict.address.to_string() != "10.0.0.9"));
    }

    #[test]
    fn verdicts_and_latencies_are_saved_and_restored() {
        let config = Config::parse(CONFIG, Path::new("c.toml")).unwrap();
        let mut health = Health::new(&config.pools);
        let target = find(&health, "10.0.0.1", true);
        health.observe(target, &outcome(true));
        let saved = health.saved();
        let text = toml::to_string(&saved).unwrap();
        assert!(text.contains("latency_us = 5000"), "{text}");
        let mut restarted = Health::new(&config.pools);
        assert_eq!(restarted.restore(&toml::from_str(&text).unwrap()), (1, 0));
        assert_eq!(restarted.status[target.0].verdict.state(), State::Up);
        assert_eq!(
            restarted.status[target.0].latency,
            Some(Duration::from_millis(5))
        );
    }
}
