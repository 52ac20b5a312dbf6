//! The running server: start-up, then every long-running task under one supervisor.
//!
//! Why this exists: `main` and the tests must start the same thing, and no task may die
//! unnoticed. `Service::start` opens the probe sockets and runs the cold-start probe round, so
//! that the first snapshot is already health-checked; the caller binds the DNS sockets first
//! (the tests bind port 0, and a bind error shows before any probing) and then calls `run`,
//! which probes, publishes and serves until the shutdown token is cancelled.
//!
//! Documented rules:
//! - Starting state: before DNS is answered, every target is probed once (all at once,
//!   bounded by the largest timeout) and that one result decides each verdict. Startup fails,
//!   naming the fix, if a needed ICMP socket cannot be opened.
//! - Supervision: `run` owns every task (probes, publisher, snapshot writer, notifier, DNS
//!   listeners). If one of them ends before shutdown, by returning or by panicking, the
//!   failure is logged with the task's name and cause, every other task is stopped, and `run`
//!   returns an error, so the process exits non-zero and systemd or Docker restarts it. A
//!   server that answers from a snapshot nobody updates any more is worse than a restart.
//! - Shutdown: the publisher stops first; the snapshot writer then writes the newest version
//!   and the final serial state, so a clean stop loses nothing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use crate::supervisor::RunError;
use crate::supervisor::Supervisor;

use crate::cluster::gossip::Gossip;
use crate::config::Config;
use crate::dns::handler::DnsHandler;
use crate::dns::server::{serve, Listeners};
use crate::health::probe::{Checker, ProbeError, Probers};
use crate::health::schedule::{self, Probed};
use crate::health::verdict::State;
use crate::health::{self, Health, TargetId};
use crate::publish::Publisher;
use crate::reload::{ReloadHandle, Reloader};
use crate::zone::serial::{State as SerialState, StateError};
use crate::zone::snapshot::{SnapshotReader, SnapshotWriter};
use crate::zone::zonefile::ZoneData;

/// Why the server could not start; the message names the fix.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Probe(#[from] ProbeError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Gossip(#[from] crate::cluster::gossip::GossipError),
}

/// Reads the state file. A damaged one is set aside under another name (never overwritten)
/// and the server starts without it: a lost state costs serial continuity (the snapshot file
/// is then the floor) and the last verdicts, not the service.
fn load_state(path: &std::path::Path) -> Result<SerialState, StateError> {
    match SerialState::load(path) {
        Err(StateError::Damaged { path, message }) => {
            let mut aside = path.clone().into_os_string();
            let stamp = crate::wall_clock::unix_seconds();
            aside.push(format!(".damaged-{stamp}"));
            let aside = std::path::PathBuf::from(aside);
            std::fs::rename(&path, &aside).map_err(|error| StateError::Read {
                path: path.clone(),
                error,
            })?;
            tracing::error!(
                path = %path.display(),
                moved_to = %aside.display(),
                %message,
                "the state file is damaged; set aside, starting without it"
            );
            Ok(SerialState::default())
        }
        other => other,
    }
}

/// A server that has probed once and is ready to serve.
pub struct Service {
    config: Config,
    state: SerialState,
    /// Each target's checker.
    probes: Vec<(TargetId, Arc<Checker>)>,
    publisher: Publisher,
    snapshots: SnapshotReader,
    /// The HTTP API's listener and metrics handle, if `[api]` is configured.
    api: Option<(std::net::TcpListener, Option<PrometheusHandle>)>,
    /// Set once DNS is answered (the API's /readyz).
    ready: Arc<AtomicBool>,
    /// The running gossip node, in a cluster.
    gossip: Option<Gossip>,
}

impl Service {
    /// Opens the probes, runs the cold-start round and builds the first snapshot.
    pub async fn start(config: Config, zones: Vec<ZoneData>) -> Result<Self, StartError> {
        let state = load_state(&config.server.state_file)?;
        let mut health = Health::new(&config.pools);
        if let Some(cluster) = &config.cluster {
            health.enable_cluster(&cluster.node, cluster.agreement);
        }
        let (verdicts, overrides) = health.restore(&state.health);
        let peer_votes = state
            .health
            .peers
            .as_ref()
            .filter(|_| config.cluster.is_some())
            .map_or(0, |peers| peers.votes.len());
        if verdicts + overrides + peer_votes > 0 {
            tracing::info!(
                verdicts,
                overrides,
                peer_votes,
                "health state restored from the state file (peer votes count until peers are heard)"
            );
        }
        let probers = Probers::new(
            health
                .targets()
                .iter()
                .map(|target| (target.address, &target.check)),
        )?;
        let checkers: Vec<Arc<Checker>> = health
            .targets()
            .iter()
            .map(|target| probers.checker(target.address, &target.check).map(Arc::new))
            .collect::<Result<_, _>>()?;

        let started = Instant::now();
        let outcomes = schedule::first_round(&checkers).await;
        for (index, outcome) in outcomes.iter().enumerate() {
            let target = TargetId(index);
            if health.observe(target, outcome) == Some(State::Down) {
                health.log_transition(target, outcome, State::Down, true);
            }
        }
        let now = std::time::SystemTime::now();
        for index in 0..outcomes.len() {
            health.mark_since(TargetId(index), now);
        }
        let up = outcomes.iter().filter(|outcome| outcome.passed).count();
        tracing::info!(
            targets = outcomes.len(),
            up,
            took_ms = started.elapsed().as_millis() as u64,
            "cold-start probe round done"
        );

        let probes = checkers
            .into_iter()
            .enumerate()
            .map(|(index, checker)| (TargetId(index), checker))
            .collect();
        let answers = health.answers();
        let served = if config.server.dry_run {
            tracing::info!("dry run: probing and logging, but answering every configured address");
            health::configured_answers(&config.pools)
        } else {
            answers.clone()
        };
        for (name, answer) in &served {
            let addresses = answer.address_texts();
            tracing::info!(%name, ?addresses, servfail = answer.servfail, "first answer");
        }
        if config.server.dry_run {
            for (name, answer) in &answers {
                let addresses = answer.address_texts();
                tracing::info!(%name, ?addresses, servfail = answer.servfail, "dry run: would answer");
            }
        }
        let snapshot = crate::zone::first_snapshot(&zones, &served, &state, &config.zones);
        for zone in snapshot.zones() {
            tracing::info!(zone = %zone.origin(), serial = zone.serial(), "starting serial");
        }
        let mut state = state;
        crate::export::reserve(&snapshot, &config.server.state_file, &mut state);
        let writer = SnapshotWriter::new(snapshot);
        let snapshots = writer.reader();
        let mut publisher = Publisher::new(health, answers, writer, config.server.dry_run);
        let gossip = match &config.cluster {
            None => None,
            Some(cluster) => {
                publisher.join_cluster(&cluster.node);
                Some(Gossip::start(cluster, publisher.health().own_votes()).await?)
            }
        };
        Ok(Self {
            config,
            state,
            probes,
            publisher,
            snapshots,
            api: None,
            ready: Arc::default(),
            gossip,
        })
    }

    /// Serves the HTTP API on `listener` (bound by the caller) while running; `metrics` is the
    /// installed Prometheus recorder's handle, if any.
    pub fn with_api(
        mut self,
        listener: std::net::TcpListener,
        metrics: Option<PrometheusHandle>,
    ) -> Self {
        self.api = Some((listener, metrics));
        self
    }

    /// The status report, for callers that run the service in-process.
    pub fn status(&self) -> crate::publish::StatusHandle {
        self.publisher.status()
    }

    /// A read handle to the snapshot queries are answered from.
    pub fn snapshots(&self) -> SnapshotReader {
        self.snapshots.clone()
    }

    /// Probes, publishes and serves on `listeners` until `shutdown`, or until a task fails.
    pub async fn run(
        self,
        listeners: Listeners,
        shutdown: CancellationToken,
    ) -> Result<(), RunError> {
        self.run_with_reload(listeners, shutdown, |_| {}).await
    }

    /// `run`, handing `reloads` the handle that reloads the config (main wires it to SIGHUP)
    /// once everything is started.
    pub async fn run_with_reload(
        self,
        listeners: Listeners,
        shutdown: CancellationToken,
        reloads: impl FnOnce(ReloadHandle),
    ) -> Result<(), RunError> {
        let mut supervisor = Supervisor::new(shutdown.clone());
        let status = self.publisher.status();
        let (sender, receiver) = mpsc::channel::<Probed>(4096);
        let (mut reloader, reload) = Reloader::new(
            self.config.clone(),
            self.publisher.control(),
            supervisor.spawner(),
            sender,
            shutdown.clone(),
        );
        {
            let health = self.publisher.health();
            for (target, checker) in self.probes {
                let definition = &health.targets()[target.0];
                reloader.start_probe(target, checker, definition.address, &definition.check);
            }
        }
        supervisor.spawn("reloader".into(), reloader.run());
        let interval = self.config.server.min_serial_interval;
        let write_problems = crate::export::WriteProblems::default();
        let write_problems_reader = write_problems.reader();
        supervisor.spawn(
            "snapshot writer".into(),
            crate::export::run(
                self.publisher.subscribe(),
                self.publisher.subscribe_saved(),
                self.config.server.state_file.clone(),
                self.state,
                interval,
                write_problems,
            ),
        );
        supervisor.spawn(
            "notify".into(),
            crate::dns::notify::run(
                self.publisher.subscribe(),
                listeners.local_addresses(),
                interval,
                shutdown.clone(),
            ),
        );
        if let Some((listener, metrics)) = self.api {
            let api = crate::api::Api::new(
                self.publisher.status(),
                self.publisher.control(),
                Some(reload.clone()),
                metrics,
                self.ready.clone(),
                self.config.api.as_ref().and_then(|api| api.token.clone()),
            )
            .with_write_problems(write_problems_reader);
            let token = shutdown.clone();
            supervisor.spawn("api".into(), async move {
                if let Err(error) = crate::api::serve(listener, api, token).await {
                    panic!("{error}");
                }
            });
        }
        let peers = self.gossip.map(|gossip| {
            let (view, peers) = tokio::sync::watch::channel(Arc::default());
            supervisor.spawn(
                "gossip".into(),
                gossip.run(self.publisher.subscribe_votes(), view, shutdown.clone()),
            );
            peers
        });
        supervisor.spawn(
            "publisher".into(),
            self.publisher
                .run_with_peers(receiver, peers, shutdown.clone()),
        );
        let handler = DnsHandler::new(self.snapshots, self.config.server.udp_payload)
            .with_identity(
                self.config.server.identity.as_deref(),
                self.config.server.nsid.as_deref(),
            );
        let idle = self.config.server.tcp_idle_timeout;
        let rate_limit = self.config.rate_limit;
        let token = shutdown.clone();
        supervisor.spawn("dns listeners".into(), async move {
            if let Err(error) = serve(listeners, handler, idle, rate_limit, token).await {
                panic!("{error}");
            }
        });
        self.ready.store(true, Ordering::Relaxed);
        reloads(reload);
        // systemd (Type=notify): ready now that the first probe round is done and DNS is
        // answered; then watchdog pings while the publisher's loop keeps turning.
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
        let mut watchdog_usec = 0;
        if sd_notify::watchdog_enabled(false, &mut watchdog_usec) && watchdog_usec > 0 {
            let period = std::time::Duration::from_micros(watchdog_usec) / 2;
            supervisor.spawn(
                "watchdog".into(),
                watchdog(status, period, shutdown.clone()),
            );
        }
        let result = supervisor.wait().await;
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
        result
    }
}

/// Pings the systemd watchdog every `period` while the publisher answers within it; a stalled
/// publisher stops the pings, and systemd restarts the process (`WatchdogSec`).
async fn watchdog(
    status: crate::publish::StatusHandle,
    period: std::time::Duration,
    shutdown: CancellationToken,
) {
    let mut ticker = tokio::time::interval(period);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        if status.alive(period).await {
            let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
        } else {
            tracing::error!("the publisher did not answer within {period:?}; no watchdog ping");
        }
    }
}
