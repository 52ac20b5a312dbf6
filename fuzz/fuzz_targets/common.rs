//! What the DNS targets share: one handler over a zone with every kind of answer.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use healthdns::config::Config;
use healthdns::dns::handler::DnsHandler;
use healthdns::health::{Answers, NameAnswer};
use healthdns::zone::snapshot::{Snapshot, SnapshotWriter};
use healthdns::zone::zonefile::parse_zone;
use hickory_proto::rr::Name;

/// Every A/AAAA RRset holds one record, so that rotation cannot make two answers differ.
pub const ZONE: &str = "$TTL 300\n\
@ SOA ns1 hostmaster 7 3600 600 1209600 60\n\
@ NS ns1\n@ NS ns2.other.test.\n@ MX 10 mail\n@ TXT \"v=spf1 -all\"\n\
ns1 A 192.0.2.1\nns1 AAAA 2001:db8::1\nmail A 192.0.2.2\n\
www A 192.0.2.10\nalias CNAME www\nchain CNAME alias\nloop1 CNAME loop2\nloop2 CNAME loop1\n\
out CNAME www.other.test.\n*.wild A 192.0.2.20\n*.wild TXT \"wild\"\nx.y.ent A 192.0.2.21\n\
sub NS ns.sub\nsub NS ns.other.test.\nns.sub A 192.0.2.30\n_sip._tcp SRV 1 2 5060 www\n\
big TXT \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\" \"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\"\n\
big TXT \"cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc\"\n\
unk TYPE65400 \\# 3 010203\n";

/// The TSIG key of the fuzz config (seed-tsig-* requests are signed with it).
pub const KEY: &str = "key \"fuzz\" { algorithm hmac-sha256; secret \"ZnV6ei1rZXktZnV6ei1rZXktZnV6ei1rZXktZnV6eiE=\"; };\n";

/// Transfers from loopback unsigned, and from 10/8 signed with the key; NOTIFY signed.
const CONFIG: &str = "[server]\nlisten = [\"127.0.0.1:53\"]\nkey_files = [\"fuzz.key\"]\n\
[[zone]]\norigin = \"example.test\"\nfile = \"unused.zone\"\n\
allow_transfer = [\"127.0.0.0/8\", \"10.0.0.0/8 key fuzz\"]\nalso_notify = [\"192.0.2.1 key fuzz\"]\n";

pub fn source() -> SocketAddr {
    "127.0.0.1:5300".parse().unwrap()
}

/// The handler, built once per process; `pool.example.test` is a pool with one address.
pub fn handler() -> &'static DnsHandler {
    static HANDLER: OnceLock<(SnapshotWriter, DnsHandler)> = OnceLock::new();
    &HANDLER
        .get_or_init(|| {
            let origin = Name::from_ascii("example.test.").unwrap();
            let data = parse_zone(ZONE, Path::new("fuzz.zone"), &origin).expect("the zone loads");
            let folder = std::env::temp_dir().join(format!("healthdns-fuzz-{}", std::process::id()));
            std::fs::create_dir_all(&folder).expect("a temporary folder");
            std::fs::write(folder.join("fuzz.key"), KEY).expect("the key file");
            let config =
                Config::parse(CONFIG, &folder.join("fuzz.toml")).expect("the config loads");
            let mut answers = Answers::new();
            answers.insert(
                Name::from_ascii("pool.example.test.").unwrap(),
                NameAnswer {
                    ttl: 30,
                    addresses: vec!["192.0.2.99".parse().unwrap()],
                    servfail: false,
                    families: [true, false],
                },
            );
            let snapshot =
                Snapshot::build(&[data], &answers).with_settings(Arc::new(config.zones.clone()));
            let writer = SnapshotWriter::new(snapshot);
            let handler = DnsHandler::new(writer.reader(), 1232).with_identity(Some("fuzz"), Some("fuzz-nsid"));
            (writer, handler)
        })
        .1
}
