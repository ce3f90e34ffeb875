//! The outer framing of Automerge's binary format, checked before Automerge decodes the bytes.
//!
//! Record documents and changes reach this code from other devices and from disk, so their bytes
//! are untrusted. Automerge decodes a chunk in full before it verifies the chunk's checksum, and
//! some chunks can make it allocate without bound: a 638-byte "bundle" chunk found by the
//! `doc_load` fuzz target asked for more than 20 GiB, and a compressed change inflates up to a
//! thousand times its size. Gridlink writes saved documents, plain changes and compressed changes
//! (Automerge compresses a change of more than 256 bytes), so only those kinds are let through,
//! and a compressed change only when it inflates to at most [`MAX_CHANGE_BYTES`].
//!
//! A chunk is: the magic bytes `85 6f 4a 83`, a 4-byte checksum, a type byte, the body length as
//! unsigned LEB128, and the body. Several chunks may follow one another in one byte string.

use std::io::Read;

use automerge::Change;

const MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];
/// The type byte of a saved document.
const DOCUMENT: u8 = 0;
/// The type byte of a plain (uncompressed) change.
const CHANGE: u8 = 1;
/// The type byte of a deflate-compressed change.
const COMPRESSED_CHANGE: u8 = 2;
/// The largest a compressed change may inflate to. One change is one action or one edit of a
/// record whose texts are bounded (a few thousand characters), so real ones stay far below this.
pub const MAX_CHANGE_BYTES: u64 = 8 << 20;

/// The kind of one framed chunk that Gridlink accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkKind {
    /// A whole saved document.
    Document,
    /// One change, plain or compressed.
    Change,
}

/// The kinds of the chunks in `bytes`, in order, or `None` when the framing is broken (bad
/// magic, truncated body, overlong length), a chunk is of a kind Gridlink never writes, or a
/// compressed change inflates past [`MAX_CHANGE_BYTES`].
pub fn kinds(mut bytes: &[u8]) -> Option<Vec<ChunkKind>> {
    let mut kinds = Vec::new();
    if bytes.is_empty() {
        return None;
    }
    while !bytes.is_empty() {
        let (type_byte, body, rest) = split_chunk(bytes)?;
        let kind = match type_byte {
            DOCUMENT => ChunkKind::Document,
            CHANGE => ChunkKind::Change,
            COMPRESSED_CHANGE if inflates_within(body, MAX_CHANGE_BYTES) => ChunkKind::Change,
            _ => return None,
        };
        kinds.push(kind);
        bytes = rest;
    }
    Some(kinds)
}

/// The first chunk framed in `bytes`: its type byte, its body and the bytes after it; `None`
/// when the magic is wrong, the length overlong or the body cut short.
fn split_chunk(bytes: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let header = bytes.get(..9)?;
    if header[..4] != MAGIC {
        return None;
    }
    let (len, used) = uleb128(&bytes[9..])?;
    let body_start = 9 + used;
    let end = body_start.checked_add(usize::try_from(len).ok()?)?;
    Some((header[8], bytes.get(body_start..end)?, &bytes[end..]))
}

/// Whether raw-deflate `body` inflates without error to at most `limit` bytes. Counts the
/// inflated bytes without keeping them.
fn inflates_within(body: &[u8], limit: u64) -> bool {
    let mut inflated = flate2::bufread::DeflateDecoder::new(body).take(limit + 1);
    matches!(std::io::copy(&mut inflated, &mut std::io::sink()), Ok(n) if n <= limit)
}

/// Decodes one change, refusing any other chunk before Automerge parses it.
///
/// Automerge's parser panics on some malformed changes (an operation counter past `u32::MAX`
/// unwraps a failed conversion, found by the `sync_request` fuzz target); such a change is
/// refused like any other that does not decode.
pub fn decode_change(bytes: &[u8]) -> Option<Change> {
    if kinds(bytes)? != [ChunkKind::Change] {
        return None;
    }
    std::panic::catch_unwind(|| Change::from_bytes(bytes.to_vec()).ok()).ok().flatten()
}

/// Whether the change framed in `bytes` depends on no other change, read from the start of its
/// body (the count of its dependencies comes first) without decoding it; `None` when `bytes` does
/// not start with a change chunk. A change that depends on nothing starts a document: a server
/// that sees a push begin with one can judge it as a new record before looking it up, and skips
/// the decode for every other push (an edit, an action on a record it has).
pub fn depends_on_nothing(bytes: &[u8]) -> Option<bool> {
    let (type_byte, body, _) = split_chunk(bytes)?;
    let deps = match type_byte {
        CHANGE => uleb128(body)?.0,
        COMPRESSED_CHANGE => {
            // The count is the inflated body's first number: at most ten bytes of it.
            let mut start = Vec::with_capacity(10);
            flate2::bufread::DeflateDecoder::new(body).take(10).read_to_end(&mut start).ok()?;
            uleb128(&start)?.0
        }
        _ => return None,
    };
    Some(deps == 0)
}

/// An unsigned LEB128 number of at most 64 bits, and how many bytes it took.
fn uleb128(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, &b) in bytes.iter().enumerate().take(10) {
        let low = u64::from(b & 0x7f);
        if i == 9 && low > 1 {
            return None;
        }
        value |= low << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use automerge::transaction::Transactable;
    use automerge::{AutoCommit, ROOT};

    fn doc() -> AutoCommit {
        let mut doc = AutoCommit::new();
        doc.put(ROOT, "title", "村口垃圾堆积").unwrap();
        doc
    }

    #[test]
    fn saved_documents_and_changes_are_recognised() {
        let mut d = doc();
        let saved = d.save();
        assert_eq!(kinds(&saved), Some(vec![ChunkKind::Document]));
        let changes: Vec<u8> = d.save_after(&[]);
        assert_eq!(kinds(&changes), Some(vec![ChunkKind::Change]));
        let mut both = saved.clone();
        both.extend(&changes);
        assert_eq!(kinds(&both), Some(vec![ChunkKind::Document, ChunkKind::Change]));
        assert!(decode_change(&changes).is_some());
        assert!(decode_change(&saved).is_none(), "a document is not a change");
    }

    #[test]
    fn a_first_change_is_told_from_a_later_one_without_decoding_it() {
        let mut d = doc();
        let first = d.get_last_local_change().unwrap().raw_bytes().to_vec();
        assert_eq!(depends_on_nothing(&first), Some(true));
        d.put(ROOT, "status", "已受理").unwrap();
        let second = d.get_last_local_change().unwrap().raw_bytes().to_vec();
        assert_eq!(depends_on_nothing(&second), Some(false));
        // Compressed, both ways: a big first change, and a big one after it.
        let mut big = AutoCommit::new();
        big.put(ROOT, "description", "垃圾".repeat(500)).unwrap();
        let mut change = big.get_last_local_change().unwrap();
        let compressed = change.bytes().into_owned();
        assert_eq!(compressed[8], COMPRESSED_CHANGE);
        assert_eq!(depends_on_nothing(&compressed), Some(true));
        big.put(ROOT, "note", "堆积".repeat(500)).unwrap();
        let mut change = big.get_last_local_change().unwrap();
        let compressed = change.bytes().into_owned();
        assert_eq!(compressed[8], COMPRESSED_CHANGE);
        assert_eq!(depends_on_nothing(&compressed), Some(false));
        // What is not a change says so; it is never taken for a first change.
        assert_eq!(depends_on_nothing(&d.save()), None, "a saved document");
        assert_eq!(depends_on_nothing(&first[..9]), None, "cut short");
        assert_eq!(depends_on_nothing(&[]), None);
    }

    #[test]
    fn other_kinds_and_broken_framing_are_refused() {
        let mut d = doc();
        let change = d.get_last_local_change().unwrap();
        let plain = change.raw_bytes().to_vec();
        assert_eq!(plain[8], CHANGE);
        for kind in [3u8, 4, 0xff] {
            let mut other = plain.clone();
            other[8] = kind;
            assert_eq!(kinds(&other), None, "type byte {kind}");
            assert!(decode_change(&other).is_none());
        }
        assert_eq!(kinds(&[]), None);
        assert_eq!(kinds(&plain[..plain.len() - 1]), None, "truncated body");
        let mut bad_magic = plain.clone();
        bad_magic[0] ^= 1;
        assert_eq!(kinds(&bad_magic), None);
        let mut trailing = plain.clone();
        trailing.push(0);
        assert_eq!(kinds(&trailing), None, "bytes after the last chunk");
        // A length that does not fit in 64 bits.
        let mut huge = plain[..9].to_vec();
        huge.extend([0xff; 10]);
        assert_eq!(kinds(&huge), None);
    }

    #[test]
    fn a_compressed_change_passes_unless_it_inflates_too_far() {
        let mut d = doc();
        d.put(ROOT, "description", "垃圾".repeat(500)).unwrap();
        let mut change = d.get_last_local_change().unwrap();
        let compressed = change.bytes().into_owned();
        assert_eq!(compressed[8], COMPRESSED_CHANGE, "Automerge compresses a change this big");
        assert_eq!(kinds(&compressed), Some(vec![ChunkKind::Change]));
        assert_eq!(decode_change(&compressed).unwrap().hash(), change.hash());

        // A deflate stream of 16 MiB of zeros, framed as a compressed change: refused from its
        // inflated size, before Automerge inflates it.
        let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        std::io::Write::write_all(&mut z, &vec![0u8; 16 << 20]).unwrap();
        let body = z.finish().unwrap();
        assert!(body.len() < 64 * 1024);
        let mut bomb = compressed[..9].to_vec();
        let mut n = body.len();
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                bomb.push(byte);
                break;
            }
            bomb.push(byte | 0x80);
        }
        bomb.extend(&body);
        assert_eq!(kinds(&bomb), None);
        assert!(decode_change(&bomb).is_none());
        assert!(inflates_within(&body, 16 << 20));
        assert!(!inflates_within(b"not deflate at all", 1 << 20));
    }

    #[test]
    fn leb128_reads_what_it_should() {
        assert_eq!(uleb128(&[0x00]), Some((0, 1)));
        assert_eq!(uleb128(&[0xe5, 0x8e, 0x26]), Some((624_485, 3)));
        assert_eq!(uleb128(&[0x80]), None, "unterminated");
        let max = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert_eq!(uleb128(&max), Some((u64::MAX, 10)));
    }

    #[test]
    fn a_change_on_which_automerge_panics_is_refused() {
        // Found by the `sync_request` fuzz target: a pushed change whose operation counter passes
        // u32::MAX makes Automerge's parser unwrap a failed conversion.
        let request = crate::sync::protocol::decode_request(include_bytes!("../../fuzz/seeds/sync_request/counter_overflow.bin")).unwrap();
        let changes: Vec<_> = request.push.iter().flat_map(|d| &d.changes).collect();
        assert!(!changes.is_empty());
        for change in changes {
            assert_eq!(kinds(change), Some(vec![ChunkKind::Change]), "the chunk header is sound; the panic is deeper");
            assert!(decode_change(change).is_none());
        }
    }
}
