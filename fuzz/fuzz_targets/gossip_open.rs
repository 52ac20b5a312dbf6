//! The sealed gossip datagram opener: any datagram is rejected without a panic; any payload
//! sealed with the key opens to itself once, and a replay is refused.
#![no_main]

use healthdns::cluster::seal::{ReplayGuard, Sealer};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let sealer = Sealer::new(&[7; 32], "fuzz");
    let now = 1_000_000;
    let mut replays = ReplayGuard::new(60_000);
    let _ = sealer.open(data, now, &mut replays);
    let mut nonce = [0u8; 24];
    for (slot, byte) in nonce.iter_mut().zip(data.iter().rev()) {
        *slot = *byte;
    }
    nonce[0] ^= 0x55;
    let sealed = sealer.seal(data, now, nonce);
    let mut replays = ReplayGuard::new(60_000);
    assert_eq!(sealer.open(&sealed, now, &mut replays).as_deref(), Ok(data));
    assert!(sealer.open(&sealed, now, &mut replays).is_err(), "a replay is refused");
});
