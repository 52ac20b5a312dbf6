//! The DNS message path: any bytes, over UDP or TCP (the first input byte picks), through the
//! general path and through the answer cache (a miss, then a hit). Never a panic; every
//! response parses; a UDP response fits the client's limit; the cache's bytes equal the
//! general path's (a TSIG-signed response: its length, as its time may differ).
#![no_main]

use healthdns::dns::cache::AnswerCache;
use healthdns::dns::handler::{Answered, Transport};
use hickory_proto::op::Message;
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, packet)) = data.split_first() else {
        return;
    };
    let transport = if selector & 1 == 0 { Transport::Udp } else { Transport::Tcp };
    let handler = common::handler();
    let mut general = Vec::new();
    let answered = handler.answer(packet, common::source(), transport, &mut general);
    if !matches!(answered, Answered::Message) {
        return;
    }
    let response = Message::from_vec(&general).expect("every response parses");
    if transport == Transport::Udp {
        // 512 without EDNS, else max(512, min(the client's size, ours)).
        let limit = match Message::from_vec(packet).ok().and_then(|query| query.edns) {
            Some(edns) => edns.max_payload().clamp(512, 1232),
            None => 512,
        };
        assert!(general.len() <= usize::from(limit), "{} > {limit}", general.len());
    }
    thread_local! {
        static CACHE: std::cell::RefCell<AnswerCache> = std::cell::RefCell::new(AnswerCache::new());
    }
    // A TSIG in the response carries the time it was made: two responses a second apart
    // differ there, so only their length is compared.
    let signed = response.signature().is_some();
    CACHE.with_borrow_mut(|cache| {
        for pass in ["first", "second"] {
            let mut cached = Vec::new();
            let answered =
                handler.answer_cached(cache, packet, common::source(), transport, &mut cached);
            assert!(matches!(answered, Answered::Message), "{pass}");
            if signed {
                assert_eq!(cached.len(), general.len(), "{pass}: signed ({response:?})");
                continue;
            }
            assert_eq!(
                cached, general,
                "{pass}: the cache answers as the general path does ({response:?})"
            );
        }
    });
});
