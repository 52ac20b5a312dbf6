//! healthdns: an authoritative DNS server that answers only with healthy addresses.
//!
//! Data flows one way: config -> probers -> verdicts -> pool answers -> snapshot (swapped
//! atomically with `ArcSwap`) -> DNS answers. Each module owns one step:
//! - [`config`]: the strict TOML file format and the validated runtime `Config`.
//! - [`zonefile`]: BIND master files into checked records, with file:line errors.
//! - [`probe`]: how to check an address (ICMP, TCP, HTTP); stateless checkers.
//! - [`schedule`]: when to check: one task per target, random phase, no pile-up.
//! - [`verdict`]: the pure `fall`/`rise` machine.
//! - [`selection`]: the pure choice of a pool's answer (select, max_answers, all-down, canary).
//! - [`health`]: the table of targets and verdicts joined to the pools.
//! - [`publish`]: the one writer that rebuilds and swaps the snapshot when an answer changes.
//! - [`service`]: cold start, then probes + publisher + listeners until shutdown.
//! - [`snapshot`]: the immutable, precomputed view that queries are answered from.
//! - [`render`]: a zone version as BIND master-file text (snapshots, export).
//! - [`serial`]: serials that only go up, across restarts (the state file).
//! - [`export`]: snapshot files and the state file, written atomically off the answer path.
//! - [`notify`]: NOTIFY to secondaries on every new serial.
//! - [`transfer`]: AXFR/IXFR responses streamed from one snapshot.
//! - [`answer`]: pure authoritative answering rules over a snapshot.
//! - [`handler`]: request parsing rules, EDNS, truncation and encoding.
//! - [`server`]: sockets (bound by the caller) and the serving loops.

pub mod answer;
pub mod config;
pub mod export;
pub mod handler;
pub mod health;
pub mod notify;
pub mod probe;
pub mod publish;
pub mod render;
pub mod schedule;
pub mod selection;
pub mod serial;
pub mod server;
pub mod service;
pub mod snapshot;
pub mod transfer;
pub mod verdict;
pub mod zonefile;

use config::Config;
use zonefile::{ZoneData, ZoneErrors};

/// The first snapshot: `zones` with `answers` laid over them, each zone at its starting serial
/// (see [`serial`]).
pub fn first_snapshot(
    zones: &[ZoneData],
    answers: &health::Answers,
    state: &serial::State,
) -> snapshot::Snapshot {
    let mut snapshot = snapshot::Snapshot::build(zones, answers);
    for data in zones {
        let key = snapshot::name_key(&data.origin);
        let zone = snapshot.zone(&key).expect("built zones are served").clone();
        let serial = state.starting_serial(&zone, &serial::content_digest(&zone));
        if serial != zone.serial() {
            snapshot = snapshot.with_serial(&key, serial);
        }
    }
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
