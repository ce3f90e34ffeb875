//! The wire format of a sync round.
//!
//! One `POST /api/v1/sync` carries both directions. The body is a CBOR map, deflate-compressed;
//! document ids travel as 16 raw bytes and change bytes as CBOR byte strings, so the framing costs
//! a few bytes per change. Every message carries the protocol version `v`.

use flate2::write::{DeflateDecoder, DeflateEncoder};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use std::io::Write;

/// Version of this protocol; the server refuses others with a clear message.
pub const PROTOCOL_VERSION: u16 = 1;
/// Content type of sync bodies.
pub const CONTENT_TYPE: &str = "application/vnd.gridlink.sync+cbor";
/// Largest decompressed body either side accepts.
pub const MAX_BODY_BYTES: usize = 64 << 20;
/// Default bound on the changes one response carries (the rest follow with `more`).
pub const DEFAULT_PAGE_BYTES: u32 = 4 << 20;

/// A document id on the wire: the UUID's 16 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DocId(#[serde(with = "serde_bytes")] pub [u8; 16]);

impl DocId {
    /// Parses the text form of a record id.
    pub fn parse(id: &str) -> Option<Self> {
        uuid::Uuid::parse_str(id).ok().map(|u| Self(*u.as_bytes()))
    }
    /// The text form used everywhere else.
    pub fn to_id(self) -> String {
        uuid::Uuid::from_bytes(self.0).to_string()
    }
}

/// Changes of one document. From the server, a record new to a device that asked for
/// [`SyncRequest::whole_docs`] comes as one saved Automerge document instead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocChanges {
    pub doc: DocId,
    pub changes: Vec<serde_bytes::ByteBuf>,
}

/// What a device sends.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncRequest {
    pub v: u16,
    /// The cursor from the last answer the device fully applied; `None` on a fresh device.
    pub cursor: Option<u64>,
    /// Unacknowledged local changes, grouped by document, in the order they were made.
    pub push: Vec<DocChanges>,
    /// Bound on the response size the device wants (a slow link asks for smaller pages). Left
    /// out when the device takes the server's default (servers always took it as optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_bytes: Option<u32>,
    /// The device takes a record it does not have yet as one whole document (Automerge's
    /// compact saved format, about 30 % smaller than the changes) rather than change by change.
    /// Devices that predate it leave it out and get changes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub whole_docs: bool,
    /// The device takes a record it does not have yet as one whole document *without its id*
    /// ([`SyncResponse::whole`]); it implies [`SyncRequest::whole_docs`], which such a device
    /// leaves out. Each document names its record inside (`id`, checked by the server against
    /// the id it is stored under at every change), and 16 random bytes per record were a tenth
    /// of a fresh device's download that no compression can shrink. A server that predates it
    /// answers with changes, as to a device that takes no whole documents. On the wire as `bare`:
    /// every request carries it, and its key's bytes count in an idle round.
    #[serde(rename = "bare", default, skip_serializing_if = "std::ops::Not::not")]
    pub ids_in_docs: bool,
    /// Personal data of records this device made or edited, which never travels inside the
    /// documents (see [`crate::pii`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub personal: Vec<PersonalData>,
    /// The database epoch the device's cursor belongs to ([`SyncResponse::epoch`]); `None` before
    /// the first answer that named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    /// The device is pushing again, after the server was restored from a backup, the history of
    /// every record it holds: changes the server had acknowledged before it went back.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub recovery: bool,
    /// The device keeps its unit's notices (督办/通知) and holds those up to this one (a notice's
    /// `seq`; 0 while it holds none): the answer that ends the sync brings the newer ones
    /// ([`SyncResponse::notices`]), so a sync needs no request of its own for them. On the wire
    /// as `na`.
    #[serde(rename = "na", default, skip_serializing_if = "Option::is_none")]
    pub notices_after: Option<i64>,
}

/// One record's personal data on the wire (over TLS; never inside a document).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersonalData {
    pub doc: DocId,
    pub data: crate::pii::Personal,
}

/// A pushed change the server refused, with the reason (Chinese, shown to the user).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    pub doc: DocId,
    /// Position of the change within the document's pushed changes.
    pub index: u32,
    pub reason: String,
}

/// What the server answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncResponse {
    pub v: u16,
    /// Pushed changes not accepted; every other pushed change is stored durably.
    pub rejected: Vec<Rejection>,
    /// Changes in the device's scope it does not have yet. A document with a rejected change comes
    /// with its whole history, so the device can replace its copy.
    pub docs: Vec<DocChanges>,
    /// Records new to a device that asked for [`SyncRequest::ids_in_docs`], each as one saved
    /// document that names its record.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub whole: Vec<serde_bytes::ByteBuf>,
    /// Documents that left the device's scope: delete them locally.
    pub removed: Vec<DocId>,
    pub cursor: u64,
    /// More changes wait: sync again right away.
    pub more: bool,
    /// The server's clock (unix ms), the reference for checking received timestamps.
    pub server_time_ms: i64,
    /// Personal data of records in this answer that the device's person needs for their work.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub personal: Vec<PersonalData>,
    /// Uploaded personal data the server kept.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub personal_stored: Vec<DocId>,
    /// Uploaded personal data the server refused, with the reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub personal_refused: Vec<Rejection>,
    /// The server database's epoch, sent when the device's differs from it (or it had none). A
    /// new epoch means the database was restored from a backup: what the server acknowledged
    /// after that backup is gone from it, and the device pushes the history of every record it
    /// holds once more ([`SyncRequest::recovery`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    /// The notices addressed to the device's unit or a unit below it that are newer than
    /// [`SyncRequest::notices_after`], newest first, at most 200: in the answer that ends a
    /// sync (`more` false) to a device that asked. None otherwise, and from a server that
    /// predates them (the device then asks `GET /api/v1/notices`). On the wire as `nt`: an idle
    /// round's answer carries it empty.
    #[serde(rename = "nt", default, skip_serializing_if = "Option::is_none")]
    pub notices: Option<Vec<crate::Notice>>,
}

/// Encoding and decoding failures.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("同步数据过大(超过 {0} 字节)")]
    TooLarge(usize),
    #[error("同步数据无法解压")]
    Compression,
    #[error("同步数据格式错误: {0}")]
    Format(String),
    #[error("同步协议版本 {0} 不受支持,请升级应用")]
    Version(u16),
}

/// Serialises and compresses a message.
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    let mut cbor = Vec::new();
    ciborium::into_writer(msg, &mut cbor).expect("writing to a Vec cannot fail");
    let mut z = ENCODERS.take().unwrap_or_else(|| DeflateEncoder::new(Vec::new(), flate2::Compression::default()));
    z.write_all(&cbor).expect("writing to a Vec cannot fail");
    // `reset` ends the stream and hands back its bytes; the encoder starts afresh for the next
    // body (the same bytes as a new one would give).
    let out = z.reset(Vec::new()).expect("writing to a Vec cannot fail");
    ENCODERS.put(z);
    out
}

/// Decompresses (bounded) and deserialises a message.
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, ProtocolError> {
    from_cbor(&inflate(body)?)
}

fn from_cbor<T: DeserializeOwned>(cbor: &[u8]) -> Result<T, ProtocolError> {
    ciborium::from_reader(cbor).map_err(|e| ProtocolError::Format(e.to_string()))
}

/// Decodes a request and checks its version.
pub fn decode_request(body: &[u8]) -> Result<SyncRequest, ProtocolError> {
    #[derive(Deserialize)]
    struct Versioned {
        v: u16,
    }
    // Inflated once; the version is read first, so a device of another protocol version is told
    // so rather than that its body does not parse.
    let cbor = inflate(body)?;
    let v: Versioned = from_cbor(&cbor)?;
    if v.v != PROTOCOL_VERSION {
        return Err(ProtocolError::Version(v.v));
    }
    from_cbor(&cbor)
}

/// The deflated `body`, inflated up to [`MAX_BODY_BYTES`].
fn inflate(body: &[u8]) -> Result<Vec<u8>, ProtocolError> {
    let mut z = DECODERS.take().unwrap_or_else(|| DeflateDecoder::new(Capped(Vec::new())));
    let result = z.write_all(body).and_then(|()| z.try_finish());
    // Handed back only after a whole body went through: a decoder that failed midway is dropped.
    match result.and_then(|()| z.reset(Capped(Vec::new()))) {
        Ok(Capped(cbor)) => {
            DECODERS.put(z);
            Ok(cbor)
        }
        Err(e) if e.kind() == std::io::ErrorKind::FileTooLarge => Err(ProtocolError::TooLarge(MAX_BODY_BYTES)),
        Err(_) => Err(ProtocolError::Compression),
    }
}

/// A body being inflated: refuses to grow past [`MAX_BODY_BYTES`], so a small deflate bomb
/// cannot take the memory.
struct Capped(Vec<u8>);

impl Write for Capped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.0.len() + buf.len() > MAX_BODY_BYTES {
            return Err(std::io::ErrorKind::FileTooLarge.into());
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Compressors kept between bodies. A new one allocates and zeroes its tables (about 300 KiB for
/// deflate), which cost more than compressing a round's body; a few are kept, for the server's
/// request tasks running at once, and any more are made and dropped as before.
static ENCODERS: Pool<DeflateEncoder<Vec<u8>>> = Pool::new();
static DECODERS: Pool<DeflateDecoder<Capped>> = Pool::new();

struct Pool<T>(std::sync::Mutex<Vec<T>>);

impl<T> Pool<T> {
    /// At most this many are kept.
    const KEPT: usize = 8;

    const fn new() -> Self {
        Self(std::sync::Mutex::new(Vec::new()))
    }
    fn take(&self) -> Option<T> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).pop()
    }
    fn put(&self, item: T) {
        let mut kept = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if kept.len() < Self::KEPT {
            kept.push(item);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_bounds() {
        let req = SyncRequest {
            v: PROTOCOL_VERSION,
            cursor: Some(7),
            push: vec![DocChanges { doc: DocId([7; 16]), changes: vec![serde_bytes::ByteBuf::from(vec![1, 2, 3])] }],
            page_bytes: None,
            whole_docs: true,
            ids_in_docs: true,
            personal: vec![],
            epoch: Some(u64::MAX),
            recovery: true,
            notices_after: Some(12),
        };
        let bytes = encode(&req);
        assert_eq!(decode_request(&bytes).unwrap(), req);
        let empty = encode(&SyncRequest { v: 1, cursor: Some(123456), epoch: Some(u64::MAX), ..Default::default() });
        assert!(empty.len() < 48, "an idle round is tiny: {} bytes", empty.len());
        assert!(matches!(decode_request(&encode(&SyncRequest { v: 9, ..req.clone() })), Err(ProtocolError::Version(9))));
        assert!(matches!(decode_request(b"garbage"), Err(ProtocolError::Compression | ProtocolError::Format(_))));
        assert!(decode_request(&bytes[..bytes.len() / 2]).is_err());
        // A deflate bomb is cut off at the bound.
        let bomb = {
            let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
            z.write_all(&vec![0u8; MAX_BODY_BYTES + 10]).unwrap();
            z.finish().unwrap()
        };
        assert!(matches!(decode_request(&bomb), Err(ProtocolError::TooLarge(_))));
    }

    /// Compressors are kept from body to body: each body is what a new compressor makes of it,
    /// and a body that failed halfway leaves nothing behind for the next one.
    #[test]
    fn kept_compressors_start_each_body_afresh() {
        let fresh = |msg: &SyncRequest| {
            let mut cbor = Vec::new();
            ciborium::into_writer(msg, &mut cbor).unwrap();
            let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
            z.write_all(&cbor).unwrap();
            z.finish().unwrap()
        };
        let msgs: Vec<SyncRequest> = (0..20u8)
            .map(|n| SyncRequest {
                v: PROTOCOL_VERSION,
                cursor: Some(u64::from(n) * 1000),
                push: (0..n)
                    .map(|i| DocChanges {
                        doc: DocId([i; 16]),
                        changes: vec![serde_bytes::ByteBuf::from(vec![n ^ i; 300 * usize::from(i)])],
                    })
                    .collect(),
                ..Default::default()
            })
            .collect();
        let bodies: Vec<Vec<u8>> = msgs.iter().map(encode).collect();
        for (msg, body) in msgs.iter().zip(&bodies) {
            assert_eq!(*body, fresh(msg), "a kept encoder gives the bytes a new one gives");
        }
        let bomb = {
            let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
            z.write_all(&vec![0u8; MAX_BODY_BYTES + 10]).unwrap();
            z.finish().unwrap()
        };
        // Every kind of failure between good bodies, from several threads at once (the server's
        // request tasks share the kept ones).
        std::thread::scope(|s| {
            for t in 0..4 {
                let (msgs, bodies, bomb) = (&msgs, &bodies, &bomb);
                s.spawn(move || {
                    for (i, (msg, body)) in msgs.iter().zip(bodies).enumerate().skip(t) {
                        match i % 4 {
                            0 => assert!(decode_request(&body[..body.len() / 2]).is_err()),
                            1 => assert!(matches!(decode_request(bomb), Err(ProtocolError::TooLarge(_)))),
                            2 => assert!(matches!(decode_request(b"\xff\xfe garbage"), Err(ProtocolError::Compression))),
                            _ => {}
                        }
                        assert_eq!(decode_request(body).unwrap(), *msg);
                        assert_eq!(encode(msg), *body);
                    }
                });
            }
        });
    }
}
