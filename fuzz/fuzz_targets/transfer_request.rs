//! The AXFR/IXFR request path: any bytes over TCP from an allowed address. A transfer is
//! streamed into memory; every message must parse, and the stream must start and end with
//! the zone's SOA.
#![no_main]

use healthdns::dns::handler::{Answered, Transport};
use hickory_proto::op::Message;
use hickory_proto::rr::RecordType;
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|packet: &[u8]| {
    let handler = common::handler();
    let mut out = Vec::new();
    match handler.answer(packet, common::source(), Transport::Tcp, &mut out) {
        Answered::Nothing => {}
        Answered::Message => {
            Message::from_vec(&out).expect("every response parses");
        }
        Answered::Transfer(transfer) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .unwrap();
            let mut stream = Vec::new();
            let stats = runtime
                .block_on(transfer.send(&mut stream, std::time::Duration::from_secs(5)))
                .expect("a transfer into memory cannot fail");
            let mut rest = &stream[..];
            let mut records = Vec::new();
            while let Some((length, tail)) = rest.split_first_chunk::<2>() {
                let (message, tail) = tail.split_at(usize::from(u16::from_be_bytes(*length)));
                let message = Message::from_vec(message).expect("every transfer message parses");
                records.extend(message.answers.into_iter().map(|record| record.record_type()));
                rest = tail;
            }
            assert!(rest.is_empty());
            assert_eq!(records.len(), stats.records);
            assert_eq!(records.first(), Some(&RecordType::SOA));
            assert_eq!(records.last(), Some(&RecordType::SOA));
        }
    }
});
