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
//! - A signed request (TSIG) gets every message signed, each chained to the one before.

use std::sync::Arc;

use hickory_proto::op::{Header, HeaderCounts, MessageType, Metadata, OpCode, Query, ResponseCode};
use hickory_proto::rr::Record;
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};
use hickory_proto::ProtoError;

use crate::dns::tsig::Signing;
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
    /// How each message is signed, when the request was (TSIG).
    signing: Option<Signing>,
}

/// The records a transfer sends, in order, built as they are sent: a million-name zone is
/// never held as records at once.
type Items<'a> = std::iter::Peekable<Box<dyn Iterator<Item = Record> + Send + 'a>>;

impl Transfer {
    /// An AXFR of `zone` answering the request with `id` and `query`.
    pub fn axfr(zone: Arc<Zone>, id: u16, query: Query) -> Self {
        Self {
            zone,
            query,
            id,
            kind: Kind::Full,
            signing: None,
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
            signing: None,
        }
    }

    /// This transfer with every message signed (RFC 8945 §5.3.1), when `signing` is given.
    pub fn signed(mut self, signing: Option<Signing>) -> Self {
        self.signing = signing;
        self
    }

    /// What this transfer sends.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The zone version being sent.
    pub fn zone(&self) -> &Arc<Zone> {
        &self.zone
    }

    fn items(&self) -> Items<'_> {
        let serial = self.zone.serial();
        let soa = move |serial: u32| with_serial(self.zone.soa(), serial);
        let items: Box<dyn Iterator<Item = Record> + Send + '_> = match self.kind {
            Kind::Full => Box::new(self.zone.records().chain([soa(serial)])),
            Kind::Since(client) => {
                let changes: &[Arc<Change>] = self
                    .zone
                    .changes_since(client)
                    .expect("checked at creation");
                if changes.is_empty() {
                    Box::new(std::iter::once(soa(serial)))
                } else {
                    Box::new(
                        std::iter::once(soa(serial))
                            .chain(changes.iter().flat_map(move |change| {
                                std::iter::once(soa(change.from_serial))
                                    .chain(change.removed.iter().cloned())
                                    .chain([soa(change.to_serial)])
                                    .chain(change.added.iter().cloned())
                            }))
                            .chain([soa(serial)]),
                    )
                }
            }
        };
        items.peekable()
    }

    /// Writes every response message to `stream`, each with its TCP length prefix; each
    /// write must finish within `write_timeout` (a client that stops reading is dropped).
    pub async fn send(
        &self,
        stream: &mut (impl tokio::io::AsyncWrite + Unpin),
        write_timeout: std::time::Duration,
    ) -> Result<TransferStats, TransferError> {
        use tokio::io::AsyncWriteExt;
        let mut items = self.items();
        let mut stats = TransferStats {
            records: 0,
            messages: 0,
            bytes: 0,
        };
        let mut buffer = Vec::with_capacity(usize::from(MAX_MESSAGE) + 2);
        let mut signing = self.signing.clone();
        let room = signing
            .as_ref()
            .map_or(0, |signing| signing.key().record_length() as u16);
        while items.peek().is_some() || stats.messages == 0 {
            let written = self
                .encode(
                    &mut items,
                    stats.messages == 0,
                    MAX_MESSAGE - room,
                    &mut buffer,
                )
                .map_err(TransferError::Encode)?;
            if let Some(signing) = signing.as_mut() {
                signing.sign(&mut buffer, crate::dns::tsig::now());
            }
            stats.records += written;
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

    /// Encodes one message with as many of `items` as fit, taking them; returns how many.
    fn encode(
        &self,
        items: &mut Items<'_>,
        first: bool,
        max_size: u16,
        out: &mut Vec<u8>,
    ) -> Result<usize, ProtoError> {
        out.clear();
        let mut encoder = BinEncoder::new(out);
        encoder.set_max_size(max_size);
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
        while let Some(record) = items.peek() {
            match encoder.emit_all(std::iter::once(record)) {
                Ok(_) => {
                    count += 1;
                    end = encoder.offset();
                    items.next();
                }
                Err(ProtoError::NotAllRecordsWritten { .. }) => break,
                Err(error) => return Err(error),
            }
        }
        if count == 0 && items.peek().is_some() {
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
