//! Zone snapshot files and the serial state, written safely off the answer path.
//!
//! Why this exists: operators and file-based secondaries read the zone as it is served from
//! disk, and the serials must survive restarts. Files are never written in place: each is
//! written to a temporary file in the same folder, fsynced, renamed over the old one, and the
//! folder is fsynced, so a reader sees the old file or the new one, and a crash (even
//! `kill -9`) mid-write leaves the previous file whole.
//!
//! The writer runs as its own task: the publisher only sends the new snapshot on a watch
//! channel (which keeps just the latest), so a slow disk delays files, never answers. A zone's
//! file and state are written only when its serial changed.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::atomic::{remove_stale_temporaries, write_atomically};
use crate::config::ZoneConfig;
use crate::zone::render::{body, with_body};
use crate::zone::serial::{digest_with_body, State};
use crate::zone::snapshot::{name_key, Snapshot, Zone};

/// A snapshot file could not be written; the previous file, if any, is intact.
#[derive(Debug, thiserror::Error)]
#[error("{path}: cannot write the zone snapshot: {source}")]
pub struct ExportError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

/// Writes `zone` as a master file with its rendered `body` to `path`; `started` is when
/// rendering began (logged as `took_ms`).
fn write_zone(zone: &Zone, body: &str, path: &Path, started: Instant) -> Result<(), ExportError> {
    let text = with_body(zone, body);
    write_atomically(path, text.as_bytes()).map_err(|source| ExportError {
        path: path.to_path_buf(),
        source,
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

/// What the writer keeps between snapshots.
struct Writer {
    zones: Vec<ZoneConfig>,
    state_file: PathBuf,
    state: State,
    /// The serial last written for each zone of `zones`.
    written: Vec<Option<u32>>,
}

impl Writer {
    /// Writes the snapshot file and records the state of each zone whose serial is new; each
    /// such zone is rendered once, for both.
    fn write_new_serials(&mut self, snapshot: &Snapshot) {
        let mut state_changed = false;
        for (config, written) in self.zones.iter().zip(&mut self.written) {
            let Some(zone) = snapshot.zone(&name_key(&config.origin)) else {
                continue;
            };
            if *written == Some(zone.serial()) {
                continue;
            }
            let started = Instant::now();
            let body = body(zone);
            if let Some(path) = &config.snapshot {
                if let Err(error) = write_zone(zone, &body, path, started) {
                    tracing::error!(%error, "zone snapshot not written");
                    continue;
                }
            }
            state_changed |= self.state.record(zone, digest_with_body(zone, &body));
            *written = Some(zone.serial());
        }
        if state_changed {
            if let Err(error) = self.state.save(&self.state_file) {
                tracing::error!(%error, "serial state not saved");
            }
        }
    }
}

/// Writes snapshot files and the state file for every new serial until `shutdown`; the
/// first snapshot on `versions` is written at once.
pub async fn run(
    mut versions: watch::Receiver<Arc<Snapshot>>,
    zones: Vec<ZoneConfig>,
    state_file: PathBuf,
    state: State,
    shutdown: CancellationToken,
) {
    for path in zones
        .iter()
        .filter_map(|zone| zone.snapshot.as_ref())
        .chain([&state_file])
    {
        remove_stale_temporaries(path);
    }
    let mut writer = Writer {
        written: vec![None; zones.len()],
        zones,
        state_file,
        state,
    };
    loop {
        let snapshot = versions.borrow_and_update().clone();
        // Rendering a large zone takes a while: off the async threads.
        writer = match tokio::task::spawn_blocking(move || {
            writer.write_new_serials(&snapshot);
            writer
        })
        .await
        {
            Ok(writer) => writer,
            Err(error) => {
                tracing::error!(%error, "the snapshot writer failed; no more snapshots are written");
                return;
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = versions.changed() => if changed.is_err() { return },
        }
    }
}
