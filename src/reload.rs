//! Reload: re-reading config.toml and every zone file while serving.
//!
//! Why this exists: an operator adds a pool, removes an address or edits a zone, and must not
//! restart to do it (a restart answers blind for a moment and, without a state file, forgets
//! every verdict; gdnsd#74). SIGHUP, `POST /reload` and `healthdns reload` all come here.
//! The reloader owns the set of running probes: it is the only task that starts or stops
//! them after start-up, and it hands the validated result to the publisher, the only writer
//! of answers, as one request.
//!
//! Documented rules:
//! - All or nothing: the config and every zone file are read and checked first. If anything
//!   is invalid, every error is logged (file, line, key) and returned, and the server keeps
//!   serving its old config, untouched.
//! - What a reload changes: pools, their checks and names, and zones (their records and their
//!   `[[zone]]` settings). `[server]`, `[api]` and `[cluster]` are bound at start: a change to them is
//!   reported as needing a restart and otherwise ignored.
//! - Probes: an (address, check) pair that is still configured keeps its probe, verdict and
//!   history. A new pair is probed once before the swap (the cold-start rule: that first
//!   result decides), then on its interval. A pair no pool uses any more stops.
//! - Zones: a zone whose records are unchanged keeps its serial; a changed zone gets a new
//!   serial (its file's, if newer) and its difference is kept for IXFR, so secondaries follow
//!   by IXFR (or AXFR if they are too far behind), after NOTIFY.
//! - One swap: queries see the old config or the new one, never a mixture, and never fail.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::config::{CheckConfig, Config};
use crate::health::probe::{Checker, ProbeError, Probers};
use crate::health::schedule::{self, Probed, Timing};
use crate::health::TargetId;
use crate::publish::{ControlHandle, Reload};
use crate::supervisor::Spawner;
use crate::zone::snapshot::ZoneChange;

/// Why a reload did not happen; the old config is still served in every case.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// Fix the config or zone files (each error names file, line and key) and reload again.
    #[error("the new config is invalid, still serving the old one:\n{}", .0.join("\n"))]
    Invalid(Vec<String>),
    /// A new probe cannot start (an ICMP socket, a CA file); the message names the fix.
    #[error("cannot start the new probes, still serving the old config: {0}")]
    Probe(#[from] ProbeError),
    /// The server is shutting down.
    #[error("the server is stopping")]
    Stopping,
}

impl ReloadError {
    /// Every error line, for the API's body.
    pub fn errors(&self) -> Vec<String> {
        match self {
            Self::Invalid(errors) => errors.clone(),
            other => vec![other.to_string()],
        }
    }
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ReloadReport {
    /// From reading the files to the swap, cold-start probes of new pairs included.
    pub took_ms: u64,
    pub probes_added: usize,
    pub probes_removed: usize,
    pub probes_kept: usize,
    /// Pool names whose answer changed (added and removed names included).
    pub answers_changed: usize,
    pub zones: Vec<ZoneReload>,
    /// Settings that changed but take effect only after a restart.
    pub restart_needed: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ZoneReload {
    pub origin: String,
    pub serial: u32,
    pub change: ZoneChange,
}

type ReloadReply = oneshot::Sender<Result<ReloadReport, ReloadError>>;

/// Asks the running server to reload; cheap to clone.
#[derive(Clone)]
pub struct ReloadHandle(mpsc::Sender<ReloadReply>);

impl ReloadHandle {
    /// Reloads and waits for the result (reloads are done one at a time, in order).
    pub async fn reload(&self) -> Result<ReloadReport, ReloadError> {
        let (reply, answer) = oneshot::channel();
        self.0
            .send(reply)
            .await
            .map_err(|_| ReloadError::Stopping)?;
        answer.await.map_err(|_| ReloadError::Stopping)?
    }
}

/// A probe the reloader started, and how to stop it.
struct Running {
    retire: CancellationToken,
}

/// Owns the running probes and carries out reloads, one at a time.
pub struct Reloader {
    config: Config,
    probes: HashMap<(IpAddr, CheckConfig), Running>,
    control: ControlHandle,
    spawner: Spawner,
    outcomes: mpsc::Sender<Probed>,
    shutdown: CancellationToken,
    requests: mpsc::Receiver<ReloadReply>,
}

impl Reloader {
    /// A reloader for a server running `config`, and the handle that asks it to reload.
    pub fn new(
        config: Config,
        control: ControlHandle,
        spawner: Spawner,
        outcomes: mpsc::Sender<Probed>,
        shutdown: CancellationToken,
    ) -> (Self, ReloadHandle) {
        let (sender, requests) = mpsc::channel(4);
        let reloader = Self {
            config,
            probes: HashMap::new(),
            control,
            spawner,
            outcomes,
            shutdown,
            requests,
        };
        (reloader, ReloadHandle(sender))
    }

    /// Starts probing `target` every interval under the supervisor, until shutdown or until a
    /// reload removes it.
    pub fn start_probe(
        &mut self,
        target: TargetId,
        checker: Arc<Checker>,
        address: IpAddr,
        check: &CheckConfig,
    ) {
        let retire = self.shutdown.child_token();
        let timing = Timing {
            interval: check.interval,
            timeout: check.timeout,
        };
        self.spawner.spawn(
            format!("probe {address} {}", check.kind),
            retire.clone(),
            schedule::probe_loop(
                target,
                checker,
                timing,
                self.outcomes.clone(),
                retire.clone(),
            ),
        );
        self.probes
            .insert((address, check.clone()), Running { retire });
    }

    /// Serves reload requests until shutdown.
    pub async fn run(mut self) {
        loop {
            let reply = tokio::select! {
                _ = self.shutdown.cancelled() => return,
                reply = self.requests.recv() => reply,
            };
            let Some(reply) = reply else {
                // Nobody can ask any more; wait for shutdown.
                self.shutdown.cancelled().await;
                return;
            };
            let result = self.reload().await;
            match &result {
                Ok(report) => {
                    metrics::counter!("healthdns_reloads_total", "result" => "ok").increment(1);
                    metrics::histogram!("healthdns_reload_seconds")
                        .record(report.took_ms as f64 / 1000.0);
                    for key in &report.restart_needed {
                        tracing::warn!(
                            key,
                            "changed in the config, but takes effect only after a restart"
                        );
                    }
                    tracing::info!(
                        took_ms = report.took_ms,
                        probes_added = report.probes_added,
                        probes_removed = report.probes_removed,
                        probes_kept = report.probes_kept,
                        answers_changed = report.answers_changed,
                        "reloaded"
                    );
                }
                Err(error) => {
                    metrics::counter!("healthdns_reloads_total", "result" => "failed").increment(1);
                    for line in error.errors() {
                        tracing::error!(error = %line, "reload refused, still serving the old config");
                    }
                }
            }
            let _ = reply.send(result);
        }
    }

    /// One reload; see the module rules.
    async fn reload(&mut self) -> Result<ReloadReport, ReloadError> {
        let started = Instant::now();
        let path = self.config.path.clone();
        let (mut config, zones) = tokio::task::spawn_blocking(move || read(path))
            .await
            .map_err(|_| ReloadError::Stopping)??;
        tracing::debug!(
            read_ms = started.elapsed().as_millis() as u64,
            "reload: config and zone files read and checked"
        );
        let restart_needed = restart_needed(&self.config, &config);
        config.server = self.config.server.clone();
        config.api = self.config.api.clone();
        config.cluster = self.config.cluster.clone();

        let pairs = pairs(&config);
        let new: Vec<&(IpAddr, CheckConfig)> = pairs
            .iter()
            .filter(|pair| !self.probes.contains_key(*pair))
            .collect();
        let probers = Probers::new(new.iter().map(|(address, check)| (*address, check)))?;
        let checkers: Vec<Arc<Checker>> = new
            .iter()
            .map(|(address, check)| probers.checker(*address, check).map(Arc::new))
            .collect::<Result<_, _>>()?;
        let outcomes = schedule::first_round(&checkers).await;
        let first = new
            .iter()
            .zip(outcomes)
            .map(|((address, check), outcome)| (*address, check.clone(), outcome))
            .collect();

        let reapplied = self
            .control
            .reload(Reload {
                pools: config.pools.clone(),
                zones,
                settings: config.zones.clone(),
                first,
            })
            .await
            .ok_or(ReloadError::Stopping)?;

        let removed: Vec<(IpAddr, CheckConfig)> = self
            .probes
            .keys()
            .filter(|pair| !pairs.contains(pair))
            .cloned()
            .collect();
        for pair in &removed {
            if let Some(running) = self.probes.remove(pair) {
                running.retire.cancel();
            }
        }
        for (target, definition) in &reapplied.added {
            let index = new
                .iter()
                .position(|(address, check)| {
                    *address == definition.address && *check == definition.check
                })
                .expect("the publisher adds only the new pairs");
            self.start_probe(
                *target,
                checkers[index].clone(),
                definition.address,
                &definition.check,
            );
        }
        self.config = config;
        // The previous zones and the files just read are freed: give the memory back.
        crate::zone::release_freed_memory();
        Ok(ReloadReport {
            took_ms: started.elapsed().as_millis() as u64,
            probes_added: reapplied.added.len(),
            probes_removed: removed.len(),
            probes_kept: self.probes.len() - reapplied.added.len(),
            answers_changed: reapplied.answers_changed,
            zones: reapplied
                .zones
                .into_iter()
                .map(|(origin, serial, change)| ZoneReload {
                    origin: origin.to_string(),
                    serial,
                    change,
                })
                .collect(),
            restart_needed,
        })
    }
}

/// Reads and checks the config at `path` and every zone it names; every error found.
fn read(path: PathBuf) -> Result<(Config, Vec<crate::zone::zonefile::ZoneData>), ReloadError> {
    let config =
        Config::load(&path).map_err(|error| ReloadError::Invalid(vec![error.to_string()]))?;
    let zones = crate::zone::load_zones(&config)
        .map_err(|errors| ReloadError::Invalid(errors.iter().map(ToString::to_string).collect()))?;
    Ok((config, zones))
}

/// Every distinct (address, check) pair `config` probes, in config order: the health
/// table's own targets, so the reloader and the publisher agree on what a pair is.
fn pairs(config: &Config) -> Vec<(IpAddr, CheckConfig)> {
    crate::health::Health::new(&config.pools)
        .targets()
        .iter()
        .map(|target| (target.address, target.check.clone()))
        .collect()
}

/// The `[server]` and `[api]` keys that differ between `old` and `new`.
fn restart_needed(old: &Config, new: &Config) -> Vec<String> {
    let (a, b) = (&old.server, &new.server);
    let mut keys = Vec::new();
    let mut differs = |changed: bool, key: &str| {
        if changed {
            keys.push(key.to_string());
        }
    };
    differs(a.listen != b.listen, "[server] listen");
    differs(
        a.tcp_idle_timeout != b.tcp_idle_timeout,
        "[server] tcp_idle_timeout",
    );
    differs(a.udp_sockets != b.udp_sockets, "[server] udp_sockets");
    differs(
        a.udp_receive_buffer != b.udp_receive_buffer,
        "[server] udp_receive_buffer",
    );
    differs(a.udp_payload != b.udp_payload, "[server] udp_payload");
    differs(
        a.min_serial_interval != b.min_serial_interval,
        "[server] min_serial_interval",
    );
    differs(a.state_file != b.state_file, "[server] state_file");
    differs(a.identity != b.identity, "[server] identity");
    differs(a.nsid != b.nsid, "[server] nsid");
    // A dry run asked for on the command line stays on whatever the file says.
    differs(!a.dry_run && b.dry_run, "[server] dry_run");
    let api = |config: &Config| {
        config
            .api
            .as_ref()
            .map(|api| (api.listen, api.token.clone()))
    };
    differs(api(old) != api(new), "[api]");
    differs(old.cluster != new.cluster, "[cluster]");
    keys
}
