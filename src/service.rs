//! The running server: probes, publisher and DNS listeners wired together.
//!
//! Why this exists: `main` and the tests must start the same thing. `Service::start` opens
//! the probe sockets and runs the cold-start probe round, so that the first snapshot is already
//! health-checked; the caller then binds the DNS sockets (the tests bind port 0) and calls
//! `run`, which probes, publishes and serves until the shutdown token is cancelled.
//!
//! Documented starting state: before the DNS sockets open, every target is probed once (all at
//! once, bounded by the largest timeout) and that one result decides each verdict. Startup
//! fails, naming the fix, if a needed ICMP socket cannot be opened.

use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::dns::handler::DnsHandler;
use crate::dns::server::{serve, Listeners};
use crate::health::probe::{Checker, ProbeError, Probers};
use crate::health::schedule::{self, Probed, Timing};
use crate::health::verdict::State;
use crate::health::{self, Health, TargetId};
use crate::publish::Publisher;
use crate::zone::serial::{State as SerialState, StateError};
use crate::zone::snapshot::Snapshot;
use crate::zone::zonefile::ZoneData;

/// Why the server could not start; the message names the fix.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Probe(#[from] ProbeError),
    #[error(transparent)]
    State(#[from] StateError),
}

/// A server that has probed once and is ready to serve.
pub struct Service {
    config: Config,
    state: SerialState,
    /// Each target's checker and timing.
    probes: Vec<(TargetId, Arc<Checker>, Timing)>,
    publisher: Publisher,
    snapshots: Arc<ArcSwap<Snapshot>>,
}

impl Service {
    /// Opens the probes, runs the cold-start round and builds the first snapshot.
    pub async fn start(config: Config, zones: Vec<ZoneData>) -> Result<Self, StartError> {
        let state = SerialState::load(&config.server.state_file)?;
        let mut health = Health::new(&config.pools);
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
            .map(|(index, checker)| {
                let check = &health.targets()[index].check;
                let timing = Timing {
                    interval: check.interval,
                    timeout: check.timeout,
                };
                (TargetId(index), checker, timing)
            })
            .collect();
        let answers = health.answers();
        let served = if config.server.dry_run {
            tracing::info!("dry run: probing and logging, but answering every configured address");
            health::configured_answers(&config.pools)
        } else {
            answers.clone()
        };
        for (name, answer) in &answers {
            let addresses = answer.address_texts();
            tracing::info!(%name, ?addresses, servfail = answer.servfail, "first answer");
        }
        let snapshot = crate::zone::first_snapshot(&zones, &served, &state);
        for zone in snapshot.zones() {
            tracing::info!(zone = %zone.origin(), serial = zone.serial(), "starting serial");
        }
        let snapshots = Arc::new(ArcSwap::from_pointee(snapshot));
        let publisher = Publisher::new(
            health,
            answers,
            snapshots.clone(),
            config.server.dry_run,
            config.server.min_serial_interval,
        );
        Ok(Self {
            config,
            state,
            probes,
            publisher,
            snapshots,
        })
    }

    /// The snapshot queries are answered from.
    pub fn snapshots(&self) -> Arc<ArcSwap<Snapshot>> {
        self.snapshots.clone()
    }

    /// Probes, publishes and serves on `listeners` until `shutdown`.
    pub async fn run(
        self,
        listeners: Listeners,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        let (sender, receiver) = mpsc::channel::<Probed>(4096);
        let mut tasks = JoinSet::new();
        schedule::spawn_probes(self.probes, sender, shutdown.clone(), &mut tasks);
        tasks.spawn(crate::export::run(
            self.publisher.subscribe(),
            self.config.zones.clone(),
            self.config.server.state_file.clone(),
            self.state,
            shutdown.clone(),
        ));
        tasks.spawn(crate::dns::notify::run(
            self.publisher.subscribe(),
            self.config.zones.clone(),
            listeners.local_addresses(),
            shutdown.clone(),
        ));
        tasks.spawn(self.publisher.run(receiver, shutdown.clone()));
        let handler = DnsHandler::new(
            self.snapshots,
            self.config.server.udp_payload,
            Arc::new(self.config.zones.clone()),
        );
        let served = serve(
            listeners,
            handler,
            self.config.server.tcp_idle_timeout,
            shutdown,
        )
        .await;
        while tasks.join_next().await.is_some() {}
        served
    }
}
