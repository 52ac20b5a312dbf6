//! Zone snapshot files and the serial state, written safely off the answer path.
//!
//! Why this exists: operators and file-based secondaries read the zone as it is served from
//! disk, and the serials must survive restarts. Files are never written in place: each is
//! written to a temporary file in the same folder, fsynced, renamed over the old one, and the
//! folder is fsynced, so a reader sees the old file or the new one, and a crash (even
//! `kill -9`) mid-write leaves the previous file whole.
//!
//! The writer runs as its own task: the publisher only sends the new snapshot on a watch
//! channel (which keeps just the latest), so a slow disk delays files, never answers. Files
//! are paced: at most one write per `min_serial_interval`, always of the newest version, so a
//! flapping backend cannot make the disk (or file-based secondaries) churn. A zone's file is
//! written only when its serial changed; its serial is recorded in the state file even when
//! the file cannot be written.
//!
//! Documented rules for a write that fails (a full disk, a read-only folder): answers go on
//! from memory; the previous file stays whole; the failure is logged once (again when its
//! error changes), counted (`healthdns_snapshot_write_failures_total`,
//! `healthdns_state_write_failures_total`), shown in `/status` and on the status page with
//! its first time and count (`healthdns_files_failing` is how many files fail now), and the
//! write is retried every `RETRY_EVERY` (or `min_serial_interval`, if longer) until it
//! succeeds, which is logged too.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::atomic::{remove_stale_temporaries, write_atomically};
use crate::health::SavedHealth;
use crate::zone::render::{body, with_body};
use crate::zone::serial::{content_digest, State};
use crate::zone::snapshot::{name_key, Snapshot, Zone};
use hickory_proto::rr::Name;
use std::collections::{BTreeMap, HashMap};

/// How soon a failed write is tried again.
pub const RETRY_EVERY: Duration = Duration::from_secs(1);

/// One file that cannot be written now.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WriteProblem {
    pub file: PathBuf,
    /// The last error.
    pub error: String,
    /// When it first failed (seconds since 1970).
    pub since: u64,
    /// Failed writes so far.
    pub failures: u64,
}

/// The files the writer cannot write now. Only the writer changes it; the API reads it
/// through a [`WriteProblemsReader`].
#[derive(Debug, Default)]
pub struct WriteProblems(Arc<std::sync::Mutex<BTreeMap<PathBuf, WriteProblem>>>);

/// Read access to [`WriteProblems`], for the status report.
#[derive(Debug, Clone, Default)]
pub struct WriteProblemsReader(Arc<std::sync::Mutex<BTreeMap<PathBuf, WriteProblem>>>);

impl WriteProblemsReader {
    /// Every file failing now, by path.
    pub fn problems(&self) -> Vec<WriteProblem> {
        self.0
            .lock()
            .expect("never poisoned: no panics while held")
            .values()
            .cloned()
            .collect()
    }
}

impl WriteProblems {
    pub fn reader(&self) -> WriteProblemsReader {
        WriteProblemsReader(self.0.clone())
    }

    /// Records a failed write of `file`; logs it when it is new or its error changed.
    fn failed(&self, file: &Path, what: &str, error: String) {
        let mut problems = self.0.lock().expect("never poisoned");
        let problem = problems
            .entry(file.to_path_buf())
            .or_insert_with(|| WriteProblem {
                file: file.to_path_buf(),
                error: String::new(),
                since: crate::wall_clock::unix_seconds(),
                failures: 0,
            });
        problem.failures += 1;
        if problem.error != error {
            tracing::error!(file = %file.display(), %error, failures = problem.failures, "{what} not written; answers go on from memory, the previous file is intact, and the write is retried");
            problem.error = error;
        }
        metrics::gauge!("healthdns_files_failing").set(problems.len() as f64);
    }

    /// Records a successful write of `file`, logging the recovery if it had failed.
    fn written(&self, file: &Path, what: &str) {
        let mut problems = self.0.lock().expect("never poisoned");
        if let Some(problem) = problems.remove(file) {
            tracing::info!(file = %file.display(), failures = problem.failures, "{what} written again");
            metrics::gauge!("healthdns_files_failing").set(problems.len() as f64);
        }
    }

    fn any(&self) -> bool {
        !self.0.lock().expect("never poisoned").is_empty()
    }
}

/// A snapshot file could not be written; the previous file, if any, is intact.
#[derive(Debug, thiserror::Error)]
#[error("{path}: cannot write the zone snapshot: {error}")]
pub struct ExportError {
    pub path: PathBuf,
    /// Named `error`, not `source`: the message prints it, so it is not also a cause.
    pub error: std::io::Error,
}

/// Writes `zone` as a master file with its rendered `body` to `path`; `started` is when
/// rendering began (logged as `took_ms`).
fn write_zone(zone: &Zone, body: &str, path: &Path, started: Instant) -> Result<(), ExportError> {
    let text = with_body(zone, body, crate::zone::render::SERVED);
    write_atomically(path, text.as_bytes()).map_err(|error| ExportError {
        path: path.to_path_buf(),
        error,
    })?;
    tracing::info!(
        zone = %zone.origin(),
        serial = zone.serial(),
        path = %path.display(),
        bytes = text.len(),
        took_ms = started.elapsed().as_millis() as u64,
        "zone snapshot written"
    );
    Ok(())
}

/// Whether a zone's snapshot command is running, and whether a newer write came meanwhile.
#[derive(Default)]
struct CommandState {
    running: bool,
    again: bool,
    /// The newest serial written, which the next run follows.
    serial: u32,
}

/// Runs `command` (no shell) after zone `zone`'s snapshot was written, on its own thread so
/// the writer goes on; each run is killed after `timeout`. A write that comes while a run is
/// going does not start a second one: the run is repeated once it ends, so the last write is
/// always followed by a run.
fn run_snapshot_command(
    command: &[String],
    timeout: std::time::Duration,
    zone: String,
    serial: u32,
    state: Arc<std::sync::Mutex<CommandState>>,
) {
    {
        let mut state = state.lock().expect("not poisoned");
        state.serial = serial;
        if state.running {
            state.again = true;
            return;
        }
        state.running = true;
    }
    let command = command.to_vec();
    std::thread::spawn(move || {
        let mut serial = serial;
        loop {
            run_command_once(&command, timeout, &zone, serial);
            let mut state = state.lock().expect("not poisoned");
            if !std::mem::take(&mut state.again) {
                state.running = false;
                return;
            }
            serial = state.serial;
        }
    });
}

/// One run of a snapshot command, logged and counted.
fn run_command_once(command: &[String], timeout: std::time::Duration, zone: &str, serial: u32) {
    let started = Instant::now();
    let finished = (|| -> std::io::Result<Option<std::process::ExitStatus>> {
        let mut child = std::process::Command::new(&command[0])
            .args(&command[1..])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .spawn()?;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(Some(status));
            }
            if started.elapsed() >= timeout {
                let _ = child.kill();
                let _ = child.wait();
                return Ok(None);
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    })();
    let took_ms = started.elapsed().as_millis() as u64;
    let result = match &finished {
        Ok(Some(status)) if status.success() => {
            tracing::info!(zone, serial, ?command, took_ms, "snapshot command done");
            "ok"
        }
        Ok(Some(status)) => {
            tracing::error!(zone, serial, ?command, %status, took_ms, "snapshot command failed");
            "failed"
        }
        Ok(None) => {
            tracing::error!(
                zone,
                serial,
                ?command,
                ?timeout,
                "snapshot command killed: it ran over its timeout"
            );
            "timeout"
        }
        Err(error) => {
            tracing::error!(zone, serial, ?command, %error, "snapshot command cannot run");
            "failed"
        }
    };
    metrics::counter!("healthdns_snapshot_commands_total", "result" => result).increment(1);
}

/// What the writer keeps between snapshots.
struct Writer {
    state_file: PathBuf,
    state: State,
    /// The serial last written for each zone (by origin).
    written: HashMap<Name, u32>,
    /// Each zone's snapshot command state (by origin).
    commands: HashMap<Name, Arc<std::sync::Mutex<CommandState>>>,
    /// The state changed since it was last saved (a save failed).
    state_unsaved: bool,
    problems: WriteProblems,
}

impl Writer {
    fn new(state_file: PathBuf, state: State, problems: WriteProblems) -> Self {
        Self {
            state_file,
            state,
            written: HashMap::new(),
            commands: HashMap::new(),
            state_unsaved: false,
            problems,
        }
    }

    /// Saves the state file, recording how it went.
    fn save_state(&mut self) {
        match self.state.save(&self.state_file) {
            Ok(()) => {
                self.state_unsaved = false;
                self.problems.written(&self.state_file, "serial state");
            }
            Err(error) => {
                self.state_unsaved = true;
                metrics::counter!("healthdns_state_write_failures_total").increment(1);
                self.problems
                    .failed(&self.state_file, "serial state", error.to_string());
            }
        }
    }

    /// Writes the snapshot file and records the state of each zone whose serial is new (every
    /// zone when `last`); a zone is rendered as text only for its snapshot file. The zones and their
    /// settings are the snapshot's own, so a reload changes them with the records. While
    /// running, the state reserves serials ahead (`serial::RESERVE`); the `last` write, after
    /// the publisher has stopped, records the exact final serials.
    fn write(&mut self, snapshot: &Snapshot, health: &SavedHealth, last: bool) {
        // First the reservation, which is quick: serials up to it may be served while the
        // slow part below runs, and a crash at any point must not let them be reissued.
        if !last && reserve_only(snapshot, &mut self.state) {
            self.save_state();
        }
        let mut state_changed = self.state_unsaved;
        for config in snapshot.settings() {
            let Some(zone) = snapshot.zone(&name_key(&config.origin)) else {
                continue;
            };
            let written = self.written.get(&config.origin).copied();
            if written == Some(zone.serial()) && !last {
                continue;
            }
            let started = Instant::now();
            if written != Some(zone.serial()) {
                if let Some(path) = &config.snapshot {
                    let body = body(zone);
                    // The serial is recorded below even when the file cannot be written, so
                    // serials never go back after a restart.
                    match write_zone(zone, &body, path, started) {
                        Err(error) => {
                            metrics::counter!("healthdns_snapshot_write_failures_total")
                                .increment(1);
                            self.problems
                                .failed(path, "zone snapshot", error.error.to_string());
                            // Not marked written: the next round tries again.
                            state_changed |= self.state.record(zone, content_digest(zone), !last);
                            continue;
                        }
                        Ok(()) => {
                            self.problems.written(path, "zone snapshot");
                            if let Some(command) = &config.snapshot_command {
                                let busy = self.commands.entry(config.origin.clone()).or_default();
                                run_snapshot_command(
                                    command,
                                    config.snapshot_command_timeout,
                                    zone.origin().to_string(),
                                    zone.serial(),
                                    busy.clone(),
                                );
                            }
                        }
                    }
                }
            }
            state_changed |= self.state.record(zone, content_digest(zone), !last);
            self.written.insert(config.origin.clone(), zone.serial());
        }
        if self.state.health != *health {
            self.state.health = health.clone();
            state_changed = true;
        }
        if state_changed {
            self.save_state();
        }
    }
}

/// Records a reservation covering every zone's serial in `snapshot` in `state`, and saves
/// the state file if that changed it (see `zone::serial`). Called at start, before the first
/// answer, and before each write's slow part, so a crash at any point cannot let served
/// serials be reissued.
pub fn reserve(snapshot: &Snapshot, state_file: &Path, state: &mut State) {
    if reserve_only(snapshot, state) {
        if let Err(error) = state.save(state_file) {
            tracing::error!(%error, "serial reservation not saved");
        }
    }
}

/// Records the reservation in `state`; true if that changed it.
fn reserve_only(snapshot: &Snapshot, state: &mut State) -> bool {
    let mut changed = false;
    for zone in snapshot.zones() {
        changed |= state.reserve(zone);
    }
    changed
}

/// Writes snapshot files and the state file for new serials, at most once per `interval`
/// and always for the newest version, until the publisher stops (the channel closes); then
/// writes the final version and state. The first snapshot on `versions` is written at once.
pub async fn run(
    mut versions: watch::Receiver<Arc<Snapshot>>,
    mut health: watch::Receiver<Arc<SavedHealth>>,
    state_file: PathBuf,
    state: State,
    interval: Duration,
    problems: WriteProblems,
) {
    let first = versions.borrow().clone();
    for path in first
        .settings()
        .iter()
        .filter_map(|zone| zone.snapshot.as_ref())
        .chain([&state_file])
    {
        remove_stale_temporaries(path);
    }
    let mut writer = Writer::new(state_file, state, problems);
    loop {
        let snapshot = versions.borrow_and_update().clone();
        let saved = health.borrow_and_update().clone();
        writer = write_off_thread(writer, snapshot, saved, false).await;
        let next_write = tokio::time::Instant::now() + interval;
        // Wait for a new version (of the zones or of the health table), or the retry of a
        // failed write, then for the end of the interval; stop when the publisher has stopped.
        let retry = writer.problems.any().then(|| interval.max(RETRY_EVERY));
        let mut open = tokio::select! {
            changed = versions.changed() => changed.is_ok(),
            changed = health.changed() => changed.is_ok(),
            _ = tokio::time::sleep(retry.unwrap_or_default()), if retry.is_some() => true,
        };
        if open {
            let pause = tokio::time::sleep_until(next_write);
            tokio::pin!(pause);
            while open {
                tokio::select! {
                    _ = &mut pause => break,
                    changed = versions.changed() => open = changed.is_ok(),
                    changed = health.changed() => open = changed.is_ok(),
                }
            }
        }
        if !open {
            let snapshot = versions.borrow().clone();
            let saved = health.borrow().clone();
            write_off_thread(writer, snapshot, saved, true).await;
            return;
        }
    }
}

/// Runs one write on a blocking thread (rendering a large zone takes a while); a panic in it
/// goes on to the supervisor.
async fn write_off_thread(
    mut writer: Writer,
    snapshot: Arc<Snapshot>,
    health: Arc<SavedHealth>,
    last: bool,
) -> Writer {
    match tokio::task::spawn_blocking(move || {
        crate::fault::point("snapshot writer");
        writer.write(&snapshot, &health, last);
        writer
    })
    .await
    {
        Ok(writer) => writer,
        Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
        Err(error) => panic!("the snapshot writer was cancelled: {error}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zone::snapshot::SnapshotWriter;

    /// The serial state is recorded even when a snapshot file cannot be written, so serials
    /// never go back after a restart.
    #[test]
    fn the_state_is_recorded_when_the_snapshot_file_cannot_be_written() {
        let folder = tempfile::tempdir().unwrap();
        // The snapshot's folder is a regular file: the write fails.
        std::fs::write(folder.path().join("blocked"), "a file, not a folder").unwrap();
        let config = crate::config::Config::parse(
            "[[zone]]\norigin = \"example.test\"\nfile = \"z\"\nsnapshot = \"blocked/zone\"\n",
            &folder.path().join("config.toml"),
        )
        .unwrap();
        let origin = config.zones[0].origin.clone();
        let data = crate::zone::zonefile::parse_zone(
            "$TTL 60\n@ SOA ns h 7 1 1 1 1\n@ NS ns\nns A 192.0.2.1\n",
            Path::new("z"),
            &origin,
        )
        .unwrap();
        let snapshot = SnapshotWriter::new(
            Snapshot::build(&[data], &Default::default())
                .with_settings(Arc::new(config.zones.clone())),
        )
        .load_full()
        .with_serial(&name_key(&origin), 42);
        let state_file = folder.path().join("state");
        let problems = WriteProblems::default();
        let reader = problems.reader();
        let mut writer = Writer::new(state_file.clone(), State::default(), problems);
        writer.write(&snapshot, &SavedHealth::default(), false);
        assert!(!folder.path().join("blocked/zone").exists());
        let state = State::load(&state_file).unwrap();
        let zone = &state.zones["example.test."];
        assert_eq!(zone.serial, 42);
        assert_eq!(zone.reserved, Some(42 + crate::zone::serial::RESERVE));
        let reported = reader.problems();
        assert_eq!(reported.len(), 1, "{reported:?}");
        assert!(reported[0].file.ends_with("blocked/zone") && reported[0].failures == 1);
        // The same version again (the retry): still failing, counted.
        writer.write(&snapshot, &SavedHealth::default(), false);
        assert_eq!(reader.problems()[0].failures, 2);
        // The folder becomes writable: the retry writes the file and the problem is gone.
        std::fs::remove_file(folder.path().join("blocked")).unwrap();
        std::fs::create_dir(folder.path().join("blocked")).unwrap();
        writer.write(&snapshot, &SavedHealth::default(), false);
        assert!(folder.path().join("blocked/zone").exists());
        assert_eq!(reader.problems(), []);
        // The clean stop records the exact serial and drops the reservation.
        writer.write(&snapshot, &SavedHealth::default(), true);
        let state = State::load(&state_file).unwrap();
        assert_eq!(state.zones["example.test."].reserved, None);
        assert!(!state.reserved());
    }
}
