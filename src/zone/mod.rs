//! Zones: from BIND master files to the immutable snapshot that answers, and back to text.
//!
//! Why this exists: everything about a zone's content lives here, apart from where the pool
//! answers come from (`health`) and how it reaches the wire (`dns`). It may depend on `config`
//! and on the answer types of `health`; `publish`, `export` and `dns` depend on it.
//! - [`zonefile`]: BIND master files into checked records, with file:line errors.
//! - [`snapshot`]: the immutable, precomputed view that queries are answered from, with each
//!   zone's serial and change history.
//! - [`render`]: a zone version as BIND master-file text (snapshot files, export).
//! - [`serial`]: serials that only go up, across restarts (the state file).

pub mod render;
pub mod serial;
pub mod snapshot;
pub mod zonefile;

use crate::config::Config;
use zonefile::{ZoneData, ZoneErrors};

/// The first snapshot: `zones` with `answers` laid over them and their `configs`, each zone at
/// its starting serial (see [`serial`]).
pub fn first_snapshot(
    zones: &[ZoneData],
    answers: &crate::health::Answers,
    state: &serial::State,
    configs: &[crate::config::ZoneConfig],
) -> snapshot::Snapshot {
    let started = std::time::Instant::now();
    let mut snapshot = snapshot::Snapshot::build(zones, answers)
        .with_settings(std::sync::Arc::new(configs.to_vec()));
    let built_ms = started.elapsed().as_millis() as u64;
    for data in zones {
        let key = snapshot::name_key(&data.origin);
        let zone = snapshot.zone(&key).expect("built zones are served").clone();
        let snapshot_serial = configs
            .iter()
            .find(|config| config.origin == data.origin)
            .and_then(|config| config.snapshot.as_deref())
            .and_then(serial::snapshot_file_serial);
        let serial = state.starting_serial(&zone, &serial::content_digest(&zone), snapshot_serial);
        if serial != zone.serial() {
            snapshot = snapshot.with_serial(&key, serial);
        }
    }
    tracing::debug!(
        built_ms,
        digested_ms = started.elapsed().as_millis() as u64 - built_ms,
        "first snapshot built"
    );
    snapshot
}

/// Loads every configured zone, returning all zones or every error in every zone.
pub fn load_zones(config: &Config) -> Result<Vec<ZoneData>, Vec<ZoneErrors>> {
    let mut zones = Vec::with_capacity(config.zones.len());
    let mut errors = Vec::new();
    for zone in &config.zones {
        match zonefile::load_zone_file(&zone.file, &zone.origin) {
            Ok(data) => zones.push(data),
            Err(zone_errors) => errors.push(zone_errors),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let pool_errors = check_pool_names(config, &zones);
    if !pool_errors.is_empty() {
        return Err(vec![ZoneErrors(pool_errors)]);
    }
    Ok(zones)
}

/// A pool name must be a name the zone can answer A/AAAA for: not a CNAME owner and not at or
/// below a delegation. (That it lies inside a served zone is checked with the config.)
fn check_pool_names(config: &Config, zones: &[ZoneData]) -> Vec<zonefile::ZoneError> {
    use hickory_proto::rr::RecordType;
    let origins: Vec<&hickory_proto::rr::Name> = zones.iter().map(|zone| &zone.origin).collect();
    let mut errors = Vec::new();
    for pool in &config.pools {
        for name in &pool.names {
            let Some(index) = snapshot::zone_index_of(name, &origins) else {
                continue;
            };
            let zone = &zones[index];
            let file = config.zones[index].file.display();
            let conflict = zone.records.iter().find_map(|sourced| {
                let record = &sourced.record;
                let owner = &record.name;
                if record.record_type() == RecordType::CNAME && owner == name {
                    Some(format!("{name} is a CNAME at {file}:{}; a pool name cannot be an alias", sourced.line))
                } else if record.record_type() == RecordType::NS && owner != &zone.origin && owner.zone_of(name) {
                    Some(format!("{name} is at or below the delegation {owner} ({file}:{}); its addresses belong to the child zone", sourced.line))
                } else {
                    None
                }
            });
            if let Some(message) = conflict {
                errors.push(zonefile::ZoneError {
                    path: config.path.clone(),
                    line: Some(pool.line as u32),
                    message: format!("pool {:?}: {message}", pool.name),
                });
            }
        }
    }
    errors
}

/// Returns memory freed inside the allocator to the system (glibc keeps it otherwise, so a
/// large zone's load-time peak would stay in the RSS for good). Called after start-up and
/// after each reload, never per query.
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}
