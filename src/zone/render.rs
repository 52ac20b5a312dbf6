//! A zone version as a BIND master file (RFC 1035 §5).
//!
//! Why this exists: secondaries and operators (edgemanage wrote zone files from cron) want the
//! zone as it is answered now on disk, in a format every DNS server reads. Rendering is pure:
//! a `Zone` in, text out; writing the file safely is `export`'s job.
//!
//! Documented format:
//! - A comment header, then `$ORIGIN <zone>` and `$TTL <SOA TTL>`.
//! - One record per line, tab-separated: absolute owner, TTL, `IN`, type, RDATA. Every name is
//!   absolute, so the file means the same whatever `$ORIGIN` a reader assumes.
//! - Order: the SOA first, then owners in canonical DNS order (RFC 4034 §6.1), RRsets by type
//!   code, records in zone-file order (pool addresses in config order). Two renderings of the
//!   same content are byte-identical.
//! - Character-strings (TXT, HINFO, NAPTR, CAA values) are quoted; `"` and `\` are escaped
//!   with a backslash and bytes outside printable ASCII as `\DDD`. hickory's own `Display` for
//!   these types is not presentation-safe (it prints raw quotes and lossy UTF-8).
//! - Types whose hickory `Display` is not known to round-trip through BIND (SVCB, HTTPS,
//!   OPENPGPKEY, CERT, NULL, CSYNC, unknown types, ...) are written in the generic form of
//!   RFC 3597 (`\# <length> <hex>`), which BIND, NSD and Knot all read.

use std::fmt::Write;

use hickory_proto::rr::{RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder, NameEncoding};

use crate::zone::snapshot::Zone;

/// The whole zone version as master-file text.
pub fn render(zone: &Zone) -> String {
    with_body(zone, &body(zone), SERVED)
}

/// What a snapshot file holds, for its header.
pub const SERVED: &str = "static records and the pools' current answers";

/// Every record after the SOA, one line each: the part of a rendering the serial does not
/// touch (the serial state digests it, so a zone is rendered once per serial).
pub fn body(zone: &Zone) -> String {
    let mut text = String::with_capacity(64 * 1024);
    for record in zone.records().skip(1) {
        write_record(&mut text, &record);
    }
    text
}

/// The master file: a comment header saying it holds `what`, `$ORIGIN`, `$TTL`, the SOA,
/// then `body`.
pub fn with_body(zone: &Zone, body: &str, what: &str) -> String {
    let soa = zone.soa();
    let mut text = String::with_capacity(body.len() + 512);
    let _ = writeln!(
        text,
        "; {} at serial {}, written by healthdns: {what}.",
        zone.origin(),
        zone.serial()
    );
    let _ = writeln!(text, "$ORIGIN {}", zone.origin());
    let _ = writeln!(text, "$TTL {}", soa.ttl);
    write_record(&mut text, soa);
    text.push_str(body);
    text
}

/// One record as a master-file line.
pub fn write_record(text: &mut String, record: &Record) {
    let _ = match record.record_type() {
        RecordType::Unknown(code) => {
            write!(text, "{}\t{}\tIN\tTYPE{code}\t", record.name, record.ttl)
        }
        known => write!(text, "{}\t{}\tIN\t{known}\t", record.name, record.ttl),
    };
    write_rdata(text, &record.data);
    text.push('\n');
}

/// RDATA in presentation format.
fn write_rdata(text: &mut String, data: &RData) {
    match data {
        RData::A(_)
        | RData::AAAA(_)
        | RData::NS(_)
        | RData::CNAME(_)
        | RData::PTR(_)
        | RData::MX(_)
        | RData::SOA(_)
        | RData::SRV(_)
        | RData::SSHFP(_)
        | RData::TLSA(_)
        | RData::DNSSEC(hickory_proto::dnssec::rdata::DNSSECRData::DS(_)) => {
            let _ = write!(text, "{data}");
        }
        RData::TXT(txt) => {
            for (index, string) in txt.txt_data.iter().enumerate() {
                if index > 0 {
                    text.push(' ');
                }
                write_character_string(text, string);
            }
        }
        RData::HINFO(hinfo) => {
            write_character_string(text, &hinfo.cpu);
            text.push(' ');
            write_character_string(text, &hinfo.os);
        }
        RData::NAPTR(naptr) => {
            let _ = write!(text, "{} {} ", naptr.order, naptr.preference);
            for string in [&naptr.flags, &naptr.services, &naptr.regexp] {
                write_character_string(text, string);
                text.push(' ');
            }
            let _ = write!(text, "{}", naptr.replacement);
        }
        RData::CAA(caa) => {
            let _ = write!(text, "{} {} ", caa.flags(), caa.tag);
            write_character_string(text, &caa.value);
        }
        other => write_generic(text, other),
    }
}

/// A quoted character-string (RFC 1035 §5.1).
fn write_character_string(text: &mut String, bytes: &[u8]) {
    text.push('"');
    for &byte in bytes {
        match byte {
            b'"' | b'\\' => {
                text.push('\\');
                text.push(byte as char);
            }
            0x20..=0x7e => text.push(byte as char),
            _ => {
                let _ = write!(text, "\\{byte:03}");
            }
        }
    }
    text.push('"');
}

/// RFC 3597 §5: `\# <length> <hex>`.
fn write_generic(text: &mut String, data: &RData) {
    let mut bytes = Vec::new();
    let mut encoder = BinEncoder::new(&mut bytes);
    encoder.set_name_encoding(NameEncoding::Uncompressed);
    if data.emit(&mut encoder).is_err() {
        bytes.clear();
    }
    let _ = write!(text, "\\# {}", bytes.len());
    if !bytes.is_empty() {
        let _ = write!(text, " {}", hex::encode(&bytes));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn character_strings_are_quoted_and_escaped() {
        let mut text = String::new();
        write_character_string(&mut text, b"a \"q\" \\ ;\x01\xc3\xa9");
        assert_eq!(text, r#""a \"q\" \\ ;\001\195\169""#);
    }

    #[test]
    fn unknown_types_render_in_rfc_3597_form_and_load_back() {
        use crate::zone::snapshot::{name_key, Snapshot};
        let origin = hickory_proto::rr::Name::from_ascii("example.test.").unwrap();
        let text = "$TTL 60\n@ SOA ns h 1 1 1 1 1\n@ NS ns\nns A 192.0.2.1\n\
                    unk TYPE65280 \\# 4 0A000001\ntyped CLASS1 TYPE1 \\# 4 C0000201\n";
        let load = |text: &str| {
            let data = crate::zone::zonefile::parse_zone(text, std::path::Path::new("z"), &origin)
                .unwrap();
            let snapshot = Snapshot::build(&[data], &Default::default());
            render(snapshot.zone(&name_key(&origin)).unwrap())
        };
        let rendered = load(text);
        assert!(
            rendered.contains("unk.example.test.\t60\tIN\tTYPE65280\t\\# 4 0a000001\n"),
            "{rendered}"
        );
        // TYPE1 is A, and is written as one.
        assert!(
            rendered.contains("typed.example.test.\t60\tIN\tA\t192.0.2.1\n"),
            "{rendered}"
        );
        assert_eq!(
            load(&rendered),
            rendered,
            "render(parse(render(z))) == render(z)"
        );
        // An unknown type needs the generic form.
        let error = crate::zone::zonefile::parse_zone(
            "$TTL 60\n@ SOA ns h 1 1 1 1 1\n@ NS ns\nns A 192.0.2.1\nx TYPE65280 abc\n",
            std::path::Path::new("z"),
            &origin,
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("z:5: TYPE65280 has no known text form"),
            "{error}"
        );
    }
}
