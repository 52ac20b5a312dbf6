//! Zone transfers: AXFR (RFC 5936) and IXFR (RFC 1995) responses, streamed over TCP.
//!
//! Why this exists: hickory-server sends a whole zone in one message (which breaks past about
//! 1,800 records) and has no IXFR. Here a transfer holds one zone version (`Arc<Zone>`), so it
//! is consistent even if the healthy set changes mid-transfer, and is cut into messages of at
//! most `MAX_MESSAGE` bytes, written one after another with backpressure from the socket.
//!
//! Documented rules:
//! - AXFR: SOA, every record (the order of `Zone::records`), SOA. The question is echoed in
//!   the first message only; every message has AA set.
//! - IXFR: if the client's serial (the SOA in its authority section) is the current one, a
//!   single SOA. If the last `HISTORY_LENGTH` changes reach back to it, the incremental form:
//!   current SOA, then per change the old SOA, the removed records, the new SOA, the added
//!   records, and the current SOA at the end. Otherwise (older serial, restart since, or no
//!   SOA in the request) the whole zone in AXFR form, which RFC 1995 §4 allows.
//! - Who may transfer, and over which transport, is decided by the handler.

use std::sync::Arc;

use hickory_proto::op::{Header, HeaderCounts, MessageType, Metadata, OpCode, Query, ResponseCode};
use hickory_proto::rr::Record;
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};
use hickory_proto::ProtoError;

use crate::zone::snapshot::{with_serial, Change, Zone};

/// The largest transfer message written; well under the 65,535-byte TCP limit.
pub const MAX_MESSAGE: u16 = 16 * 1024;

/// What part of a zone a transfer sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The whole zone (AXFR, or IXFR falling back to it).
    Full,
    /// The changes since this serial (IXFR), which the zone still has.
    Since(u32),
}

/// One transfer's responses, not yet encoded.
pub struct Transfer {
    zone: Arc<Zone>,
    query: Query,
    id: u16,
    kind: Kind,
}

/// One entry of the record stream: a zone record, or the zone's SOA at some serial.
#[derive(Clone, Copy)]
enum Item<'a> {
    Record(&'a Record),
    Soa(u32),
}

impl Transfer {
    /// An AXFR of `zone` answering the request with `id` and `query`.
    pub fn axfr(zone: Arc<Zone>, id: u16, query: Query) -> Self {
        Self {
            zone,
            query,
            id,
            kind: Kind::Full,
        }
    }

    /// An IXFR from `client_serial` (None: the client sent no SOA): incremental when the
    /// zone's history allows, else the full zone.
    pub fn ixfr(zone: Arc<Zone>, id: u16, query: Query, client_serial: Option<u32>) -> Self {
        let kind = match client_serial {
            Some(serial) if zone.changes_since(serial).is_some() => Kind::Since(serial),
            _ => Kind::Full,
        };
        Self {
            zone,
            query,
            id,
            kind,
        }
    }

    /// What this transfer sends.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The zone version being sent.
    pub fn zone(&self) -> &Arc<Zone> {
        &self.zone
    }

    fn items(&self) -> Vec<Item<'_>> {
        let serial = self.zone.serial();
        match self.kind {
            Kind::Full => {
                let mut items: Vec<Item<'_>> = self.zone.records().map(Item::Record).collect();
                items.push(Item::Soa(serial));
                items
            }
            Kind::Since(client) => {
                let changes: &[Arc<Change>] = self
                    .zone
                    .changes_since(client)
                    .expect("checked at creation");
                if changes.is_empty() {
                    return vec![Item::Soa(serial)];
                }
                let mut items = vec![Item::Soa(serial)];
                for change in changes {
                    items.push(Item::Soa(change.from_serial));
                    items.extend(change.removed.iter().map(Item::Record));
                    items.push(Item::Soa(change.to_serial));
                    items.extend(change.added.iter().map(Item::Record));
                }
                items.push(Item::Soa(serial));
                items
            }
        }
    }

    /// Writes every response message to `stream`, each with its TCP length prefix; each
    /// write must finish within `write_timeout` (a client that stops reading is dropped).
    pub async fn send(
        &self,
        stream: &mut (impl tokio::io::AsyncWrite + Unpin),
        write_timeout: std::time::Duration,
    ) -> Result<TransferStats, TransferError> {
        use tokio::io::AsyncWriteExt;
        let items = self.items();
        let mut stats = TransferStats {
            records: items.len(),
            messages: 0,
            bytes: 0,
        };
        let mut position = 0;
        let mut buffer = Vec::with_capacity(usize::from(MAX_MESSAGE) + 2);
        while position < items.len() || stats.messages == 0 {
            let written = self
                .encode(&items[position..], stats.messages == 0, &mut buffer)
                .map_err(TransferError::Encode)?;
            position += written;
            stats.messages += 1;
            stats.bytes += buffer.len();
            let length = (buffer.len() as u16).to_be_bytes();
            let write = async {
                stream.write_all(&length).await?;
                stream.write_all(&buffer).await
            };
            match tokio::time::timeout(write_timeout, write).await {
                Ok(result) => result.map_err(TransferError::Write)?,
                Err(_) => return Err(TransferError::Stalled(write_timeout)),
            }
        }
        stream.flush().await.map_err(TransferError::Write)?;
        Ok(stats)
    }

    /// Encodes one message with as many of `items` as fit; returns how many.
    fn encode(
        &self,
        items: &[Item<'_>],
        first: bool,
        out: &mut Vec<u8>,
    ) -> Result<usize, ProtoError> {
        out.clear();
        let mut encoder = BinEncoder::new(out);
        encoder.set_max_size(MAX_MESSAGE);
        let mut metadata = Metadata::new(self.id, MessageType::Response, OpCode::Query);
        metadata.authoritative = true;
        metadata.response_code = ResponseCode::NoError;
        let header = Header {
            metadata,
            counts: HeaderCounts::default(),
        };
        header.emit(&mut encoder)?;
        if first {
            self.query.emit(&mut encoder)?;
        }
        let mut count = 0usize;
        // Where the last whole record ends: a record that does not fit leaves part of itself
        // in the buffer, which must not be sent (Knot refuses "trailing data").
        let mut end = encoder.offset();
        for item in items {
            let soa;
            let record = match item {
                Item::Record(record) => *record,
                Item::Soa(serial) => {
                    soa = with_serial(self.zone.soa(), *serial);
                    &soa
                }
            };
            match encoder.emit_all(std::iter::once(record)) {
                Ok(_) => {
                    count += 1;
                    end = encoder.offset();
                }
                Err(ProtoError::NotAllRecordsWritten { .. }) => break,
                Err(error) => return Err(error),
            }
        }
        if count == 0 && !items.is_empty() {
            return Err(ProtoError::from(
                "a record does not fit in a transfer message",
            ));
        }
        out.truncate(end);
        out[4..6].copy_from_slice(&u16::from(first).to_be_bytes());
        out[6..8].copy_from_slice(&(count as u16).to_be_bytes());
        Ok(count)
    }
}

/// What a transfer sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransferStats {
    pub records: usize,
    pub messages: usize,
    pub bytes: usize,
}

/// Why a transfer stopped.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error("cannot encode: {0}")]
    Encode(ProtoError),
    #[error("cannot send: {0}")]
    Write(std::io::Error),
    #[error("the client read nothing for {0:?}")]
    Stalled(std::time::Duration),
}

/// The serial in the SOA of an IXFR request's authority section, if there is one.
pub fn client_serial(authorities: &[Record]) -> Option<u32> {
    authorities.iter().find_map(|record| match &record.data {
        hickory_proto::rr::RData::SOA(soa) => Some(soa.serial),
        _ => None,
    })
}
