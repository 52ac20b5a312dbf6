//! The zone renderer against golden files, and every snapshot through `named-checkzone`.
//!
//! Each `tests/golden/source/<zone>.zone` is served with a pool over `www` and `upper.case`
//! (all addresses healthy, as `healthdns export` renders them) and rendered; the text must
//! equal `tests/golden/<zone>.zone` byte for byte. `UPDATE_GOLDEN=1 cargo test golden`
//! rewrites the golden files after a deliberate format change (review the diff).

use std::path::Path;
use std::process::Command;

use healthdns::config::Config;
use healthdns::health::configured_answers;
use healthdns::zone::render::render;
use healthdns::zone::snapshot::{name_key, Snapshot};

use crate::support::require_tool;

const POOL: &str = r#"
[[pool]]
name = "web"
names = ["www.full.test", "upper.case.full.test"]
addresses = ["192.0.2.10", "2001:db8::10", "192.0.2.11"]
[[pool.check]]
kind = "icmp"
"#;

/// Renders `tests/golden/source/<file>` served as `origin` with the test pool.
fn rendered(origin: &str, file: &str) -> String {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/source");
    let text = format!("[[zone]]\norigin = \"{origin}\"\nfile = \"{file}\"\n{POOL}");
    let config = Config::parse(&text, &source.join("config.toml")).expect("config");
    let zones = healthdns::zone::load_zones(&config).expect("golden source zone loads");
    let snapshot = Snapshot::build(&zones, &configured_answers(&config.pools));
    let zone = snapshot
        .zone(&name_key(&zones[0].origin))
        .expect("zone served");
    render(zone)
}

/// Fails with the output if `named-checkzone` rejects `text` or warns about it.
pub fn assert_checkzone_clean(origin: &str, text: &str) {
    let checkzone = require_tool("named-checkzone", "bind9-utils");
    let folder = tempfile::tempdir().unwrap();
    let path = folder.path().join("zone");
    std::fs::write(&path, text).unwrap();
    // -k/-n/-m/-M/-S fail: every integrity check is an error. -i local: check in-zone names
    // and glue; "full" would also look names below a delegation up through the network.
    let output = Command::new(checkzone)
        .args([
            "-k", "fail", "-n", "fail", "-m", "fail", "-M", "fail", "-S", "fail", "-i", "local",
        ])
        .arg(origin)
        .arg(&path)
        .output()
        .expect("run named-checkzone");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "named-checkzone failed:\n{stdout}{stderr}\n--- zone:\n{text}"
    );
    let noise: Vec<&str> = stdout
        .lines()
        .chain(stderr.lines())
        .filter(|line| !(line.contains("/IN: loaded serial ") || *line == "OK"))
        .collect();
    assert!(
        noise.is_empty(),
        "named-checkzone warned: {noise:?}\n--- zone:\n{text}"
    );
}

#[test]
fn every_record_type_renders_as_the_golden_file() {
    let text = rendered("full.test", "full.test.zone");
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/full.test.zone");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &text).unwrap();
    }
    let expected =
        std::fs::read_to_string(&golden).expect("golden file (UPDATE_GOLDEN=1 writes it)");
    assert_eq!(
        text,
        expected,
        "rendering differs from {}",
        golden.display()
    );
    assert_checkzone_clean("full.test", &text);
}

#[test]
fn a_rendered_zone_loads_back_to_the_same_records() {
    let text = rendered("full.test", "full.test.zone");
    let folder = tempfile::tempdir().unwrap();
    std::fs::write(folder.path().join("again.zone"), &text).unwrap();
    let config = Config::parse(
        "[[zone]]\norigin = \"full.test\"\nfile = \"again.zone\"\n",
        &folder.path().join("config.toml"),
    )
    .unwrap();
    let zones = healthdns::zone::load_zones(&config).expect("the snapshot parses");
    let snapshot = Snapshot::build(&zones, &Default::default());
    let again = render(snapshot.zone(&name_key(&zones[0].origin)).unwrap());
    assert_eq!(again, text, "render(parse(render(z))) == render(z)");
}

/// The shipped demo zone is what users copy: it must pass named-checkzone with every check
/// strict, and `check` must accept it with the shipped config (no static records a pool hides).
#[test]
fn the_shipped_zone_is_clean() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/zones/example.test.zone"
    ))
    .unwrap();
    assert_checkzone_clean("example.test", &text);
}
