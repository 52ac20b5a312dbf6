//! The config loader: any text. Never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = healthdns::config::Config::parse(&text, std::path::Path::new("fuzz.toml"));
});
