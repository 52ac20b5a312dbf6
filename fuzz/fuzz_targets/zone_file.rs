//! The zone-file loader: any text. Never a panic; a zone that loads also builds a snapshot,
//! renders and digests.
#![no_main]

use std::path::Path;

use healthdns::health::Answers;
use healthdns::zone::snapshot::Snapshot;
use healthdns::zone::zonefile::parse_zone;
use hickory_proto::rr::Name;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let origin = Name::from_ascii("example.test.").unwrap();
    let Ok(zone) = parse_zone(&text, Path::new("fuzz.zone"), &origin) else {
        return;
    };
    let snapshot = Snapshot::build(&[zone], &Answers::new());
    for zone in snapshot.zones() {
        let rendered = healthdns::zone::render::render(zone);
        assert!(!rendered.is_empty());
        let _ = healthdns::zone::serial::content_digest(zone);
        assert!(zone.records().count() >= 2, "SOA and NS at least");
    }
});
