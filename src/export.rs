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

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::ZoneConfig;
use crate::render::{body, with_body};
use crate::serial::{digest_with_body, State};
use crate::snapshot::{name_key, Snapshot, Zone};

/// Writes `bytes` to `path` atomically: temporary file, fsync, rename, fsync of the folder.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let folder = match path.parent() {
        Some(folder) if !folder.as_os_str().is_empty() => folder,
        _ => Path::new("."),
    };
    let file_name = path.file_name().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the path has no file name",
        )
    })?;
    let mut temporary_name = std::ffi::OsString::from(".");
    temporary_name.push(file_name);
    temporary_name.push(format!(".tmp{}", std::process::id()));
    let temporary = folder.join(temporary_name);
    std::fs::create_dir_all(folder)?;
    let result = (|| {
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&temporary, path)?;
        std::fs::File::open(folder)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    result
}

/// Removes temporary files `write_atomically` left next to `path` when a process was killed
/// mid-write (each has the writer's PID, so none can belong to a live writer of ours).
pub fn remove_stale_temporaries(path: &Path) {
    let (Some(folder), Some(file_name)) = (path.parent(), path.file_name()) else {
        return;
    };
    let prefix = format!(".{}.tmp", file_name.to_string_lossy());
    let own = format!("{prefix}{}", std::process::id());
    let Ok(entries) = std::fs::read_dir(if folder.as_os_str().is_empty() {
        Path::new(".")
    } else {
        folder
    }) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(&prefix) && name != own {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_writes_replace_whole_files_and_stale_temporaries_go() {
        let folder = tempfile::tempdir().unwrap();
        let path = folder.path().join("sub/zone");
        write_atomically(&path, b"one\n").unwrap();
        write_atomically(&path, b"two\n").unwrap();
        let stale = folder.path().join("sub/.zone.tmp999999999");
        let other = folder.path().join("sub/.other.tmp1");
        std::fs::write(&stale, b"half").unwrap();
        std::fs::write(&other, b"not ours").unwrap();
        remove_stale_temporaries(&path);
        assert!(!stale.exists());
        assert!(other.exists());
        assert_eq!(
            std::fs::read_dir(folder.path().join("sub"))
                .unwrap()
                .count(),
            2
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"two\n");
    }
}
