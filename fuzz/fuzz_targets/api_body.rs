//! The HTTP API's request body (`POST .../force`): any bytes give a state or a reason,
//! never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match healthdns::api::parse_force_body(data) {
        Ok(_) => assert!(std::str::from_utf8(data).is_ok()),
        Err(message) => assert!(!message.is_empty()),
    }
});
