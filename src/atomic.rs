//! Whole-file writes that readers and crashes never see half done.
//!
//! Why this exists: snapshot files and the state file are read by secondaries, operators and the
//! next start of this server. Each is written to a temporary file in the same folder, fsynced,
//! renamed over the old one, and the folder is fsynced: a reader sees the old file or the new
//! one, and a crash (even `kill -9`) mid-write leaves the previous file whole. It depends on
//! nothing else in the crate. (The `atomic-write-file` crate does the same, but it does not
//! remove the temporaries a killed writer leaves, which a long-running server needs; this is
//! forty lines.)

use std::io::Write;
use std::path::Path;

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
