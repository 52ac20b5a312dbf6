//! The one writer of the answer snapshot.
//!
//! Why this exists: probes finish on many tasks, but answers must change in one place, in
//! order, without ever making a query wait. The publisher owns the health table and the
//! `ArcSwap`: it takes batches of probe outcomes, updates verdicts, recomputes the answers of
//! the pools whose verdicts changed, and, only when some name's answer changed, lays the new
//! answers over the zones holding those names (their static parts are shared, not rebuilt)
//! and swaps the new snapshot in. Queries keep reading the old
//! snapshot until the swap, and the next query reads the new one.
//!
//! Every swap that changes a zone's records gives it a new serial, so an SOA query, an AXFR
//! and an IXFR always describe one version. Swaps are never delayed: a verdict change reaches
//! the answers at once, whatever happened just before. Only what secondaries see is paced:
//! each swapped-in snapshot is sent on a watch channel (which keeps just the newest) to the
//! tasks that write snapshot files and send NOTIFY, and they act at most once per
//! `min_serial_interval`, for the newest version (see `export` and `dns::notify`).
//!
//! It logs every verdict transition (address, pools, check, reason) and every answer change,
//! with the time from the verdict change to the swap. In a dry run it logs what it would
//! answer but keeps serving every configured address.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::rr::Name;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::health::probe::Outcome;
use crate::health::schedule::Probed;
use crate::health::verdict::State;
use crate::health::{Answers, Health, NameAnswer, TargetId};
use crate::zone::snapshot::{Snapshot, SnapshotWriter, ZoneChange};

/// What the status API shows: read from the publisher, which owns the health table, on
/// request (nothing is built while nobody asks).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct StatusReport {
    pub dry_run: bool,
    pub pools: Vec<crate::health::PoolReport>,
    /// Each pool name's current answer (in a dry run: what it would answer).
    pub answers: Vec<AnswerReport>,
    pub zones: Vec<ZoneReport>,
    /// In a cluster: this node, its peers and whether it hears from any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterReport>,
    /// Snapshot and state files that cannot be written now (a full disk): answers go on,
    /// and the writes are retried.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub write_errors: Vec<crate::export::WriteProblem>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ClusterReport {
    pub node: String,
    /// No live peer: no address can be taken out by agreement (fail-open).
    pub isolated: bool,
    pub members: Vec<crate::cluster::gossip::Member>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct AnswerReport {
    pub name: String,
    pub addresses: Vec<std::net::IpAddr>,
    pub servfail: bool,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ZoneReport {
    pub origin: String,
    pub serial: u32,
}

/// What the API may ask of the publisher.
enum Request {
    Status(tokio::sync::oneshot::Sender<StatusReport>),
    /// Answered at once: the publisher's loop is turning (the systemd watchdog).
    Ping(tokio::sync::oneshot::Sender<()>),
    /// Sets the probe-age gauges to now, before a metrics scrape; answered when done.
    RefreshAges(tokio::sync::oneshot::Sender<()>),
    Force {
        pool: String,
        address: std::net::IpAddr,
        forced: Option<bool>,
        reply: tokio::sync::oneshot::Sender<Result<(), crate::health::ForceError>>,
    },
    Reload {
        reload: Box<Reload>,
        reply: tokio::sync::oneshot::Sender<Reapplied>,
    },
}

/// A reload the reloader has validated and prepared: the new pools, zones and zone
/// settings, and the cold-start outcome of each new (address, check).
pub struct Reload {
    pub pools: Vec<crate::config::PoolConfig>,
    pub zones: Vec<crate::zone::zonefile::ZoneData>,
    pub settings: Vec<crate::config::ZoneConfig>,
    pub first: Vec<(std::net::IpAddr, crate::config::CheckConfig, Outcome)>,
}

/// What the publisher changed for a reload.
#[derive(Debug, Clone)]
pub struct Reapplied {
    /// New targets, to start probing.
    pub added: Vec<(TargetId, crate::health::Target)>,
    /// Retired targets, whose probes should stop.
    pub removed: Vec<TargetId>,
    /// Each zone's serial and what happened to it.
    pub zones: Vec<(Name, u32, ZoneChange)>,
    /// How many pool names answer differently (added and removed names included).
    pub answers_changed: usize,
}

/// Asks the publisher for a status report; cheap to clone, read-only.
#[derive(Clone)]
pub struct StatusHandle(mpsc::Sender<Request>);

impl StatusHandle {
    /// True when the publisher answers within `limit`: its loop is not stalled.
    pub async fn alive(&self, limit: std::time::Duration) -> bool {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let asked = async {
            self.0.send(Request::Ping(reply)).await.ok()?;
            answer.await.ok()
        };
        matches!(tokio::time::timeout(limit, asked).await, Ok(Some(())))
    }

    /// Brings the `healthdns_probe_age_seconds` gauges up to now (the metrics endpoint asks
    /// before each scrape); false if the publisher has stopped.
    pub async fn refresh_ages(&self) -> bool {
        let (reply, answer) = tokio::sync::oneshot::channel();
        if self.0.send(Request::RefreshAges(reply)).await.is_err() {
            return false;
        }
        answer.await.is_ok()
    }

    /// The current report, or None if the publisher has stopped.
    pub async fn report(&self) -> Option<StatusReport> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.0.send(Request::Status(reply)).await.ok()?;
        answer.await.ok()
    }
}

/// Sets admin overrides through the publisher (the only writer); a separate type from
/// [`StatusHandle`], so code that only reports cannot change anything.
#[derive(Clone)]
pub struct ControlHandle(mpsc::Sender<Request>);

impl ControlHandle {
    /// Forces `address` of `pool` up (Some(true)) or down (Some(false)), or back to its
    /// probes (None); the answers change at once. None if the publisher has stopped.
    pub async fn force(
        &self,
        pool: &str,
        address: std::net::IpAddr,
        forced: Option<bool>,
    ) -> Option<Result<(), crate::health::ForceError>> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.0
            .send(Request::Force {
                pool: pool.to_string(),
                address,
                forced,
                reply,
            })
            .await
            .ok()?;
        answer.await.ok()
    }

    /// Switches to a reloaded config (see [`Publisher::reload`]); None if the publisher has
    /// stopped.
    pub async fn reload(&self, reload: Reload) -> Option<Reapplied> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.0
            .send(Request::Reload {
                reload: Box::new(reload),
                reply,
            })
            .await
            .ok()?;
        answer.await.ok()
    }
}

/// The most outcomes applied in one batch before answers are recomputed.
const MAX_BATCH: usize = 4096;

/// What one batch changed.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Published {
    /// Names whose answer changed, with the new answer.
    pub changed: Vec<(Name, NameAnswer)>,
    /// From the first verdict change of the batch to the swap (None if nothing was swapped).
    pub swap_time: Option<Duration>,
}

/// Owns the health table and the only write handle of the snapshot.
pub struct Publisher {
    health: Health,
    /// What the pools answer now (in a dry run: what they would answer).
    answers: Answers,
    snapshots: SnapshotWriter,
    /// Every swapped-in snapshot, for the snapshot writer and the notifier.
    versions: watch::Sender<Arc<Snapshot>>,
    dry_run: bool,
    requests: mpsc::Receiver<Request>,
    request_sender: mpsc::Sender<Request>,
    /// What the state file should keep of the health table, for the snapshot writer.
    saved: watch::Sender<Arc<crate::health::SavedHealth>>,
    /// This instance's votes as gossip keys, for the gossip task (in a cluster).
    own_votes: watch::Sender<Arc<std::collections::BTreeMap<String, String>>>,
    /// Each (pool, address)'s state as last logged, in a cluster.
    decided: std::collections::HashMap<(String, std::net::IpAddr), State>,
    /// This node's name and the last members seen, in a cluster.
    cluster: Option<(String, Vec<crate::cluster::gossip::Member>)>,
    /// Per target: its probe counters and age gauge, and when its last probe finished.
    probe_metrics: Vec<ProbeMetrics>,
    /// The last serial of each zone a reload removed, so that a zone added back later does
    /// not go back in serials.
    retired: std::collections::HashMap<Name, u32>,
}

impl Publisher {
    /// `answers` must be what the current snapshot serves (or, in a dry run, would serve).
    pub fn new(health: Health, answers: Answers, snapshots: SnapshotWriter, dry_run: bool) -> Self {
        let (versions, _) = watch::channel(snapshots.load_full());
        let (request_sender, requests) = mpsc::channel(16);
        let (saved, _) = watch::channel(Arc::new(health.saved()));
        let health_votes = health.own_votes();
        let publisher = Self {
            health,
            answers,
            snapshots,
            versions,
            dry_run,
            requests,
            request_sender,
            saved,
            retired: std::collections::HashMap::new(),
            probe_metrics: Vec::new(),
            own_votes: watch::channel(Arc::new(health_votes)).0,
            cluster: None,
            decided: std::collections::HashMap::new(),
        };
        let mut publisher = publisher;
        publisher.register_probe_metrics();
        publisher.export_serials(&publisher.snapshots.load_full());
        for target in 0..publisher.health.targets().len() {
            publisher.export_state(crate::health::TargetId(target));
        }
        publisher
    }

    /// A receiver of what the state file should keep of the health table (verdicts,
    /// overrides), updated after every verdict change or override.
    pub fn subscribe_saved(&self) -> watch::Receiver<Arc<crate::health::SavedHealth>> {
        self.saved.subscribe()
    }

    /// Makes this publisher a cluster member named `node`: the report shows the cluster.
    pub fn join_cluster(&mut self, node: &str) {
        self.cluster = Some((node.to_string(), Vec::new()));
        self.log_decisions("start");
        self.share_votes();
    }

    /// A receiver of this instance's votes as gossip keys.
    pub fn subscribe_votes(
        &self,
    ) -> watch::Receiver<Arc<std::collections::BTreeMap<String, String>>> {
        self.own_votes.subscribe()
    }

    /// Sends this instance's votes to the gossip task if they changed.
    fn share_votes(&self) {
        if self.cluster.is_none() {
            return;
        }
        send_if_changed(&self.own_votes, self.health.own_votes());
    }

    /// Takes a new view of the peers: recomputes every answer if their votes changed, and
    /// logs each address whose state that changed, with the votes behind it.
    pub fn apply_peers(&mut self, view: &crate::cluster::gossip::PeerView) -> Published {
        let started = Instant::now();
        if let Some((_, members)) = &mut self.cluster {
            members.clone_from(&view.members);
        }
        if !self.health.set_peer_votes(view.votes.clone()) {
            return Published::default();
        }
        self.log_decisions("peer votes");
        let pools = (0..self.health.pool_count()).collect();
        let published = self.publish_pools(pools, started, "peers");
        self.save_health();
        published
    }

    /// Logs every address whose state changed since the last call, with the votes behind it,
    /// and sets its `healthdns_address_down_votes` gauge (cluster only; called after a change).
    fn log_decisions(&mut self, cause: &str) {
        if self.cluster.is_none() {
            return;
        }
        for (pool, address, state, votes) in self.health.decisions() {
            let previous = self.decided.insert((pool.clone(), address), state);
            let (voters, down) = votes
                .map(|votes| (votes.voters, votes.down))
                .unwrap_or_default();
            metrics::gauge!("healthdns_address_down_votes", "pool" => pool.clone(), "address" => address.to_string())
                .set(down.len() as f64);
            if previous.is_some_and(|previous| previous != state) {
                tracing::info!(%pool, %address, %state, ?down, ?voters, cause, "cluster state changed");
            }
        }
    }

    /// After a verdict, override or reload: this instance's votes to the gossip task, and the
    /// saved form to the snapshot writer, each only if it changed.
    fn health_changed(&self) {
        self.share_votes();
        self.save_health();
    }

    /// Sends the health table's saved form to the snapshot writer if it changed.
    fn save_health(&self) {
        send_if_changed(&self.saved, self.health.saved());
    }

    /// The health table (read-only).
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// A handle to ask for status reports.
    pub fn status(&self) -> StatusHandle {
        StatusHandle(self.request_sender.clone())
    }

    /// A handle to set admin overrides.
    pub fn control(&self) -> ControlHandle {
        ControlHandle(self.request_sender.clone())
    }

    /// Sets or clears an admin override and publishes its effect at once.
    pub fn force(
        &mut self,
        pool: &str,
        address: std::net::IpAddr,
        forced: Option<bool>,
    ) -> Result<Published, crate::health::ForceError> {
        let started = Instant::now();
        let index = self.health.force(pool, address, forced)?;
        let state = match forced {
            Some(true) => "up",
            Some(false) => "down",
            None => "auto",
        };
        tracing::info!(pool, %address, state, "admin override");
        metrics::gauge!("healthdns_override", "pool" => pool.to_string(), "address" => address.to_string())
            .set(match forced {
                Some(true) => 1.0,
                Some(false) => -1.0,
                None => 0.0,
            });
        for (target, _) in self
            .health
            .targets()
            .iter()
            .enumerate()
            .filter(|(_, target)| target.address == address)
        {
            self.export_state(crate::health::TargetId(target));
        }
        let published = self.publish_pools(BTreeSet::from([index]), started, "override");
        self.health_changed();
        Ok(published)
    }

    /// The status report now.
    pub fn report(&self) -> StatusReport {
        StatusReport {
            write_errors: Vec::new(),
            dry_run: self.dry_run,
            pools: self.health.report(),
            answers: self
                .answers
                .iter()
                .map(|(name, answer)| AnswerReport {
                    name: name.to_string(),
                    addresses: answer.addresses.clone(),
                    servfail: answer.servfail,
                })
                .collect(),
            zones: {
                let snapshot = self.snapshots.load();
                let mut zones: Vec<ZoneReport> = snapshot
                    .zones()
                    .map(|zone| ZoneReport {
                        origin: zone.origin().to_string(),
                        serial: zone.serial(),
                    })
                    .collect();
                zones.sort_by(|left, right| left.origin.cmp(&right.origin));
                zones
            },
            cluster: self.cluster.as_ref().map(|(node, members)| ClusterReport {
                node: node.clone(),
                isolated: !members.iter().any(|member| member.live),
                members: members.clone(),
            }),
        }
    }

    /// Registers the probe metrics of every target (at start, and after a reload, which may
    /// change which pools use a target), keeping when each last finished a probe. The
    /// handles are kept, so counting a probe is an atomic add.
    fn register_probe_metrics(&mut self) {
        let now = Instant::now();
        let mut registered = Vec::with_capacity(self.health.targets().len());
        for (id, target) in self.health.targets().iter().enumerate() {
            let pools = self.health.pool_names(TargetId(id));
            let mut metrics = ProbeMetrics::register(
                &pools,
                &target.address.to_string(),
                &target.check.kind.to_string(),
            );
            // A probe finished before this (the cold-start round, or before the reload).
            metrics.last = self
                .probe_metrics
                .get(id)
                .map_or(Some(now), |previous| previous.last);
            registered.push(metrics);
        }
        self.probe_metrics = registered;
    }

    /// Sets each live target's probe-age gauge to the time since its last probe finished.
    fn refresh_ages(&self) {
        let now = Instant::now();
        for (id, metrics) in self.probe_metrics.iter().enumerate() {
            if self.health.is_live(TargetId(id)) {
                metrics.refresh_age(now);
            }
        }
    }

    /// Sets the `healthdns_zone_serial` gauge of every zone in `snapshot`.
    fn export_serials(&self, snapshot: &Snapshot) {
        for zone in snapshot.zones() {
            metrics::gauge!("healthdns_zone_serial", "zone" => zone.origin().to_string())
                .set(zone.serial() as f64);
        }
    }

    /// Swaps `next` in and hands it to the snapshot writer and notifier; `cause` labels
    /// `healthdns_snapshot_swaps_total`.
    fn swap(&self, next: Arc<Snapshot>, cause: &'static str) {
        self.snapshots.store(next.clone());
        metrics::counter!("healthdns_snapshot_swaps_total", "cause" => cause).increment(1);
        self.export_serials(&next);
        self.versions.send_replace(next);
    }

    /// Sets the `healthdns_address_up` gauge (1 up, 0 not) of `target`'s address in every
    /// pool that uses it.
    fn export_state(&self, target: crate::health::TargetId) {
        for (pool, address, up) in self.health.address_states(target) {
            metrics::gauge!(
                "healthdns_address_up",
                "pool" => pool.to_string(),
                "address" => address.to_string()
            )
            .set(if up { 1.0 } else { 0.0 });
        }
    }

    /// A receiver of every snapshot swapped in (starting with the current one). It sees the
    /// channel closed when the publisher has stopped, so no snapshot can follow.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.versions.subscribe()
    }

    /// Applies outcomes until `shutdown`.
    pub async fn run(self, outcomes: mpsc::Receiver<Probed>, shutdown: CancellationToken) {
        self.run_with_peers(outcomes, None, shutdown).await
    }

    /// `run`, also taking the peers' views from the gossip task (in a cluster).
    pub async fn run_with_peers(
        mut self,
        mut outcomes: mpsc::Receiver<Probed>,
        mut peers: Option<watch::Receiver<Arc<crate::cluster::gossip::PeerView>>>,
        shutdown: CancellationToken,
    ) {
        let mut batch = Vec::with_capacity(64);
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => {
                    // Latencies are saved with verdict changes; the last ones at shutdown.
                    self.save_health();
                    return;
                }
                Some(request) = self.requests.recv() => match request {
                    Request::Status(reply) => {
                        let _ = reply.send(self.report());
                    }
                    Request::Ping(reply) => {
                        let _ = reply.send(());
                    }
                    Request::RefreshAges(reply) => {
                        self.refresh_ages();
                        let _ = reply.send(());
                    }
                    Request::Force { pool, address, forced, reply } => {
                        let _ = reply.send(self.force(&pool, address, forced).map(|_| ()));
                    }
                    Request::Reload { reload, reply } => {
                        let _ = reply.send(self.reload(*reload));
                    }
                },
                Ok(()) = async { peers.as_mut().expect("guarded").changed().await }, if peers.is_some() => {
                    let view = peers.as_mut().expect("guarded").borrow_and_update().clone();
                    self.apply_peers(&view);
                }
                received = outcomes.recv_many(&mut batch, MAX_BATCH), if !outcomes.is_closed() || !outcomes.is_empty() => {
                    if received == 0 {
                        // No probes (no pools): only status requests until shutdown.
                        continue;
                    }
                    self.apply(&batch);
                    batch.clear();
                }
            }
        }
    }

    /// Switches to a reloaded config in one swap: verdicts of unchanged (address, check) pairs
    /// are kept, new pairs take their cold-start outcome (the first result decides), retired
    /// pairs are dropped; every pool's answer is recomputed; each zone keeps its serial if its
    /// records are unchanged, else gets a new one with the difference kept for IXFR (see
    /// `Snapshot::reloaded`).
    pub fn reload(&mut self, reload: Reload) -> Reapplied {
        let started = Instant::now();
        let reconfigured = self.health.reconfigure(&reload.pools);
        let now = std::time::SystemTime::now();
        let mut added = Vec::with_capacity(reconfigured.added.len());
        for id in reconfigured.added {
            let target = self.health.targets()[id.0].clone();
            let outcome = reload
                .first
                .iter()
                .find(|(address, check, _)| *address == target.address && *check == target.check)
                .map(|(_, _, outcome)| outcome.clone())
                .unwrap_or_else(|| {
                    crate::health::probe::Outcome::fail(Duration::ZERO, "not probed")
                });
            if let Some(state) = self.health.observe(id, &outcome) {
                self.health.mark_since(id, now);
                self.health.log_transition(id, &outcome, state, true);
            }
            added.push((id, target));
        }
        for id in 0..self.health.targets().len() {
            if self.health.is_live(TargetId(id)) {
                self.export_state(TargetId(id));
            }
        }
        let answers = self.health.answers();
        let mut answers_changed = 0;
        for (name, answer) in &answers {
            if self.answers.get(name) != Some(answer) {
                answers_changed += 1;
                let addresses = answer.address_texts();
                tracing::info!(%name, ?addresses, servfail = answer.servfail, "answer changed (reload)");
            }
        }
        for name in self
            .answers
            .keys()
            .filter(|name| !answers.contains_key(*name))
        {
            answers_changed += 1;
            tracing::info!(%name, "no longer a pool name (reload)");
        }
        let served = if self.dry_run {
            crate::health::configured_answers(&reload.pools)
        } else {
            answers.clone()
        };
        self.answers = answers;
        let previous = self.snapshots.load_full();
        let retired = &self.retired;
        let settings = Arc::new(reload.settings);
        let (next, zones) = previous.reloaded(&reload.zones, &served, settings.clone(), |zone| {
            let snapshot_file = settings
                .iter()
                .find(|config| config.origin == *zone.origin())
                .and_then(|config| config.snapshot.as_deref())
                .and_then(crate::zone::serial::snapshot_file_serial);
            added_zone_serial(zone, snapshot_file, retired.get(zone.origin()).copied())
        });
        for (origin, serial, change) in &zones {
            if *change == ZoneChange::Removed {
                self.retired.insert(origin.clone(), *serial);
            } else {
                self.retired.remove(origin);
            }
            if *change != ZoneChange::Unchanged {
                tracing::info!(zone = %origin, serial, ?change, "zone reloaded");
            }
        }
        self.register_probe_metrics();
        self.swap(Arc::new(next), "reload");
        self.health_changed();
        tracing::info!(
            swap_us = started.elapsed().as_micros() as u64,
            probes_added = added.len(),
            probes_removed = reconfigured.removed.len(),
            answers_changed,
            "reloaded config swapped in"
        );
        Reapplied {
            added,
            removed: reconfigured.removed,
            zones,
            answers_changed,
        }
    }

    /// Applies a batch of outcomes; swaps a new snapshot in at once if an answer changed.
    pub fn apply(&mut self, batch: &[Probed]) -> Published {
        let mut started: Option<Instant> = None;
        let mut pools: BTreeSet<usize> = BTreeSet::new();
        let mut transitions = Vec::new();
        let now = Instant::now();

        for probed in batch {
            if let Some(metrics) = self.probe_metrics.get_mut(probed.target.0) {
                metrics.record(probed.outcome.passed, now);
            }
            let Some(state) = self.health.observe(probed.target, &probed.outcome) else {
                continue;
            };
            started.get_or_insert_with(Instant::now);
            self.health
                .mark_since(probed.target, std::time::SystemTime::now());
            transitions.push((probed, state));
            pools.extend(self.health.pools_using(probed.target));
        }
        let Some(started) = started else {
            return Published::default();
        };
        crate::fault::point("publisher");
        let published = self.publish_pools(pools, started, "health");
        // Metrics and log lines after the swap: they must not delay the new answers.
        for (probed, state) in transitions {
            let up = state == State::Up;
            metrics::counter!("healthdns_transitions_total", "to" => if up { "up" } else { "down" })
                .increment(1);
            self.export_state(probed.target);
            self.health
                .log_transition(probed.target, &probed.outcome, state, false);
        }
        self.log_decisions("own probes");
        self.health_changed();
        published
    }

    /// Recomputes the answers of `pools` and swaps a new snapshot in if one changed;
    /// `started` is when the first change that led here happened, `cause` what it was.
    fn publish_pools(
        &mut self,
        pools: BTreeSet<usize>,
        started: Instant,
        cause: &'static str,
    ) -> Published {
        let mut changed = Vec::new();
        for pool in pools {
            for (name, answer) in self.health.pool_answers(pool) {
                if self.answers.get(&name) != Some(&answer) {
                    changed.push((name, answer));
                }
            }
        }
        if changed.is_empty() {
            return Published::default();
        }
        for (name, answer) in &changed {
            self.answers.insert(name.clone(), answer.clone());
        }
        if self.dry_run {
            for (name, answer) in &changed {
                let addresses = answer.address_texts();
                tracing::info!(%name, ?addresses, servfail = answer.servfail, "dry run: would answer (serving every configured address)");
            }
            return Published {
                changed,
                swap_time: None,
            };
        }
        let names: Vec<&Name> = changed.iter().map(|(name, _)| name).collect();
        let next = Arc::new(self.snapshots.load().with_answers(&names, &self.answers));
        self.swap(next, cause);
        let swap_time = started.elapsed();
        // Logged after the swap: writing log lines must not delay the new answers.
        for (name, answer) in &changed {
            let addresses = answer.address_texts();
            tracing::info!(%name, ?addresses, servfail = answer.servfail, "answer changed");
        }
        metrics::histogram!("healthdns_publish_seconds").record(swap_time.as_secs_f64());
        tracing::info!(
            swap_us = swap_time.as_micros() as u64,
            names = names.len(),
            "new answers swapped in"
        );
        Published {
            changed,
            swap_time: Some(swap_time),
        }
    }
}

/// Sends `value` on `sender` unless it equals the current one (receivers wake only on change).
fn send_if_changed<T: PartialEq>(sender: &watch::Sender<Arc<T>>, value: T) {
    sender.send_if_modified(|current| {
        if **current == value {
            false
        } else {
            *current = Arc::new(value);
            true
        }
    });
}

/// One target's probe metrics: `healthdns_probes_total{pool, address, check, result}` for
/// each pool that uses it, and `healthdns_probe_age_seconds{address, check}`, the time since
/// its last probe finished (the checker's own health: a stalled probe shows as a growing age).
struct ProbeMetrics {
    /// Per pool using the target: (passed, failed).
    counters: Vec<(metrics::Counter, metrics::Counter)>,
    age: metrics::Gauge,
    last: Option<Instant>,
}

impl ProbeMetrics {
    fn register(pools: &[&str], address: &str, check: &str) -> Self {
        let counter = |pool: &str, result: &'static str| {
            metrics::counter!(
                "healthdns_probes_total",
                "pool" => pool.to_string(),
                "address" => address.to_string(),
                "check" => check.to_string(),
                "result" => result
            )
        };
        Self {
            counters: pools
                .iter()
                .map(|pool| (counter(pool, "pass"), counter(pool, "fail")))
                .collect(),
            age: metrics::gauge!(
                "healthdns_probe_age_seconds",
                "address" => address.to_string(),
                "check" => check.to_string()
            ),
            last: None,
        }
    }

    fn record(&mut self, passed: bool, now: Instant) {
        for (pass, fail) in &self.counters {
            if passed { pass } else { fail }.increment(1);
        }
        self.last = Some(now);
    }

    fn refresh_age(&self, now: Instant) {
        if let Some(last) = self.last {
            self.age
                .set(now.saturating_duration_since(last).as_secs_f64());
        }
    }
}

/// The serial a zone added by a reload starts at: its zone file's, unless the serial in its
/// snapshot file (from an earlier run) or its last serial before a reload removed it is as
/// new or newer; then the one after the newest of those.
fn added_zone_serial(
    zone: &crate::zone::snapshot::Zone,
    snapshot_file: Option<u32>,
    retired: Option<u32>,
) -> u32 {
    let mut serial = zone.serial();
    for floor in [snapshot_file, retired].into_iter().flatten() {
        if !crate::zone::serial::serial_greater(serial, floor) {
            serial = crate::zone::snapshot::next_serial(floor);
        }
    }
    serial
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::health::probe::Outcome;
    use crate::health::TargetId;
    use crate::zone::snapshot::SnapshotReader;
    use crate::zone::zonefile::parse_zone;
    use hickory_proto::rr::RecordType;
    use std::path::Path;

    const CONFIG: &str = r#"
[[zone]]
origin = "example.test"
file = "x"
[[pool]]
name = "web"
names = ["www.example.test"]
addresses = ["10.0.0.1", "10.0.0.2"]
[[pool.check]]
kind = "icmp"
fall = 2
rise = 2
"#;

    const ZONE: &str =
        "$TTL 300\n@ SOA ns1 hostmaster 1 3600 600 86400 60\n@ NS ns1\nns1 A 192.0.2.53\n";

    fn probed(target: usize, passed: bool) -> Probed {
        Probed {
            target: TargetId(target),
            outcome: if passed {
                Outcome::pass(Duration::from_millis(1))
            } else {
                Outcome::fail(Duration::from_millis(1), "test")
            },
        }
    }

    fn publisher(dry_run: bool) -> (Publisher, SnapshotReader) {
        let config = Config::parse(CONFIG, Path::new("c.toml")).unwrap();
        let origin = Name::from_ascii("example.test.").unwrap();
        let zones = vec![parse_zone(ZONE, Path::new("z"), &origin).unwrap()];
        let mut health = Health::new(&config.pools);
        health.observe(TargetId(0), &probed(0, true).outcome);
        health.observe(TargetId(1), &probed(1, true).outcome);
        let answers = health.answers();
        let writer = SnapshotWriter::new(Snapshot::build(&zones, &answers));
        let reader = writer.reader();
        (Publisher::new(health, answers, writer, dry_run), reader)
    }

    fn served(snapshots: &SnapshotReader) -> usize {
        let snapshot = snapshots.load();
        let name = Name::from_ascii("www.example.test.").unwrap();
        let question = crate::dns::answer::Question {
            name: &name,
            record_type: RecordType::A,
        };
        let count = crate::dns::answer::resolve(&snapshot, question, 0)
            .answer
            .len();
        count
    }

    #[test]
    fn swaps_only_when_an_answer_changes() {
        let (mut publisher, snapshots) = publisher(false);
        assert_eq!(served(&snapshots), 2);
        // One failure is below fall: nothing changes, nothing is swapped.
        let before = snapshots.load_full();
        assert_eq!(publisher.apply(&[probed(0, false)]), Published::default());
        assert!(Arc::ptr_eq(&before, &snapshots.load_full()));
        // The second failure in one batch with a pass of the other: one swap.
        let published = publisher.apply(&[probed(0, false), probed(1, true)]);
        assert_eq!(published.changed.len(), 1);
        assert!(published.swap_time.is_some());
        assert_eq!(served(&snapshots), 1);
        // Back after rise = 2.
        assert!(publisher.apply(&[probed(0, true)]).changed.is_empty());
        assert_eq!(publisher.apply(&[probed(0, true)]).changed.len(), 1);
        assert_eq!(served(&snapshots), 2);
    }

    fn serial(snapshots: &SnapshotReader) -> u32 {
        let origin = Name::from_ascii("example.test.").unwrap();
        let key = crate::zone::snapshot::name_key(&origin);
        snapshots.load().zone(&key).unwrap().serial()
    }

    #[test]
    fn every_change_is_swapped_in_at_once_under_a_new_serial() {
        let (mut publisher, snapshots) = publisher(false);
        let versions = publisher.subscribe();
        assert_eq!(serial(&snapshots), 1);
        let published = publisher.apply(&[probed(0, false), probed(0, false)]);
        assert!(published.swap_time.is_some());
        assert_eq!((served(&snapshots), serial(&snapshots)), (1, 2));
        let key = crate::zone::snapshot::name_key(&Name::from_ascii("example.test.").unwrap());
        assert_eq!(versions.borrow().zone(&key).unwrap().serial(), 2);
        // A second change right after the first is not held back: swapped, next serial.
        let published = publisher.apply(&[probed(1, false), probed(1, false)]);
        assert!(published.swap_time.is_some());
        // Both down: serve_all answers both addresses again.
        assert_eq!((served(&snapshots), serial(&snapshots)), (2, 3));
        // Back up and down again: each is a swap with its own serial; serials only go up.
        publisher.apply(&[probed(0, true), probed(0, true)]);
        assert_eq!((served(&snapshots), serial(&snapshots)), (1, 4));
        publisher.apply(&[probed(0, false), probed(0, false)]);
        assert_eq!((served(&snapshots), serial(&snapshots)), (2, 5));
        assert_eq!(versions.borrow().zone(&key).unwrap().serial(), 5);
        // Every change is kept for IXFR, from any of the serials to the newest.
        let zone = snapshots.load_full().zone(&key).unwrap().clone();
        for from in 1..5 {
            assert_eq!(zone.changes_since(from).unwrap().len(), (5 - from) as usize);
        }
    }

    #[test]
    fn a_dry_run_computes_but_never_swaps() {
        let (mut publisher, snapshots) = publisher(true);
        let before = snapshots.load_full();
        let published = publisher.apply(&[probed(0, false), probed(0, false)]);
        assert_eq!(published.changed.len(), 1);
        assert_eq!(published.swap_time, None);
        assert_eq!(served(&snapshots), 2);
        assert!(Arc::ptr_eq(&before, &snapshots.load_full()));
    }
}
