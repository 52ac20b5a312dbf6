//! healthdns: an authoritative DNS server that answers only with healthy addresses.
//!
//! Data flows one way: config -> zone files -> snapshot (swapped atomically with `ArcSwap`)
//! -> DNS answers. Each module owns one step:
//! - [`config`]: the strict TOML file format and the validated runtime `Config`.
//! - [`zonefile`]: BIND master files into checked records, with file:line errors.
//! - [`snapshot`]: the immutable, precomputed view that queries are answered from.
//! - [`answer`]: pure authoritative answering rules over a snapshot.
//! - [`handler`]: request parsing rules, EDNS, truncation and encoding.
//! - [`server`]: sockets (bound by the caller) and the serving loops.

pub mod answer;
pub mod config;
pub mod handler;
pub mod server;
pub mod snapshot;
pub mod zonefile;

use config::Config;
use zonefile::{ZoneData, ZoneErrors};

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
    if errors.is_empty() {
        Ok(zones)
    } else {
        Err(errors)
    }
}
