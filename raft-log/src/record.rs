//! Record framing: how one record sits in a segment, byte by byte.
//!
//! ```text
//! offset size field
//!      0    4 crc32c over bytes 4..48 of the header and the payload (Castagnoli)
//!      4    4 payload length in bytes (u32, little-endian)
//!      8    1 kind (1 entry, 2 truncate, 3 purge, 4 vote, 5 committed, 6 rewritten entry)
//!      9    7 reserved, zero
//!     16    8 group id
//!     24    8 term (entries; 0 otherwise)
//!     32    8 index (entry index; truncate: keep-up-to index + 1; purge: purged index)
//!     40    8 durable offset: how far this segment was known durable when the record was written
//!     48    n payload, then zero padding to the next multiple of 8
//! ```
//!
//! A header of all zeros is never valid (kind 0 does not exist), so the zero-filled space of a
//! preallocated segment reads as "no more records".

/// Size of a record header in bytes.
pub const HEADER_LEN: usize = 48;
/// Records start at multiples of this; it also bounds the scan for records after a bad one.
pub const ALIGN: u64 = 8;

/// What a record says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    /// One Raft log entry of a group.
    Entry = 1,
    /// Drops the group's entries from `index` on.
    Truncate = 2,
    /// Drops the group's entries up to and including `index`.
    Purge = 3,
    /// The group's vote.
    Vote = 4,
    /// The group's committed log id.
    Committed = 5,
    /// A live entry copied forward by reclaim so that its old segment can be deleted: at
    /// replay it moves (or, its old segment gone, places) that entry and never truncates the
    /// entries after it, as an append of an index at or below the last one would.
    Rewrite = 6,
}

impl RecordKind {
    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::Entry,
            2 => Self::Truncate,
            3 => Self::Purge,
            4 => Self::Vote,
            5 => Self::Committed,
            6 => Self::Rewrite,
            _ => return None,
        })
    }
}

/// The fixed-size part of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    pub crc: u32,
    pub payload_len: u32,
    pub kind: RecordKind,
    pub group: u64,
    pub term: u64,
    pub index: u64,
    pub durable_offset: u64,
}

impl RecordHeader {
    /// Bytes the whole record takes in the segment, padding included.
    pub fn record_len(&self) -> u64 {
        record_len(self.payload_len as usize)
    }
}

/// Bytes a record with a payload of `payload_len` takes, padding included.
pub fn record_len(payload_len: usize) -> u64 {
    (HEADER_LEN as u64 + payload_len as u64).div_ceil(ALIGN) * ALIGN
}

/// Appends one framed record to `out`.
pub fn encode(out: &mut Vec<u8>, kind: RecordKind, group: u64, term: u64, index: u64, durable_offset: u64, payload: &[u8]) {
    let start = out.len();
    let payload_len = u32::try_from(payload.len()).expect("payload length is bounded by the segment size");
    out.extend_from_slice(&[0u8; 4]);
    out.extend_from_slice(&payload_len.to_le_bytes());
    out.push(kind as u8);
    out.extend_from_slice(&[0u8; 7]);
    out.extend_from_slice(&group.to_le_bytes());
    out.extend_from_slice(&term.to_le_bytes());
    out.extend_from_slice(&index.to_le_bytes());
    out.extend_from_slice(&durable_offset.to_le_bytes());
    out.extend_from_slice(payload);
    let crc = crc32c::crc32c(&out[start + 4..]);
    out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
    let padded = start + record_len(payload.len()) as usize;
    out.resize(padded, 0);
}

/// Why bytes at some offset are not a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadRecord {
    /// The header is all zeros: preallocated space, or a write that never reached the disk.
    Zero,
    /// The header names an unknown kind, or a length that does not fit.
    BadHeader,
    /// The checksum does not match header and payload.
    ChecksumMismatch,
}

impl std::fmt::Display for BadRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Zero => "zero header",
            Self::BadHeader => "malformed header",
            Self::ChecksumMismatch => "checksum mismatch",
        })
    }
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

/// Parses a header, checking only what the header alone can tell. `room` is the number of bytes
/// from the header's start to the end of the segment.
pub fn parse_header(h: &[u8; HEADER_LEN], room: u64) -> Result<RecordHeader, BadRecord> {
    if h.iter().all(|b| *b == 0) {
        return Err(BadRecord::Zero);
    }
    let kind = RecordKind::from_u8(h[8]).ok_or(BadRecord::BadHeader)?;
    let payload_len = u32_at(h, 4);
    if h[9..16].iter().any(|b| *b != 0) || record_len(payload_len as usize) > room {
        return Err(BadRecord::BadHeader);
    }
    Ok(RecordHeader {
        crc: u32_at(h, 0),
        payload_len,
        kind,
        group: u64_at(h, 16),
        term: u64_at(h, 24),
        index: u64_at(h, 32),
        durable_offset: u64_at(h, 40),
    })
}

/// Checks the checksum of a parsed header against its payload.
pub fn check(h_bytes: &[u8; HEADER_LEN], header: &RecordHeader, payload: &[u8]) -> Result<(), BadRecord> {
    let crc = crc32c::crc32c_append(crc32c::crc32c(&h_bytes[4..]), payload);
    if crc == header.crc { Ok(()) } else { Err(BadRecord::ChecksumMismatch) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header_bytes(buf: &[u8]) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h.copy_from_slice(&buf[..HEADER_LEN]);
        h
    }

    #[test]
    fn round_trip_and_padding() {
        let mut buf = Vec::new();
        encode(&mut buf, RecordKind::Entry, 7, 3, 42, 96, b"hello");
        assert_eq!(buf.len(), 56, "48-byte header + 5 bytes padded to 8");
        let h = header_bytes(&buf);
        let header = parse_header(&h, buf.len() as u64).unwrap();
        assert_eq!((header.kind, header.group, header.term, header.index, header.durable_offset), (RecordKind::Entry, 7, 3, 42, 96));
        check(&h, &header, &buf[HEADER_LEN..HEADER_LEN + 5]).unwrap();
    }

    #[test]
    fn every_flipped_bit_is_detected() {
        let mut buf = Vec::new();
        encode(&mut buf, RecordKind::Vote, 1, 2, 3, 0, b"abcdefgh");
        for byte in 0..HEADER_LEN + 8 {
            for bit in 0..8 {
                let mut bad = buf.clone();
                bad[byte] ^= 1 << bit;
                let h = header_bytes(&bad);
                let ok = parse_header(&h, bad.len() as u64)
                    .and_then(|hd| check(&h, &hd, &bad[HEADER_LEN..HEADER_LEN + hd.payload_len as usize]));
                assert!(ok.is_err(), "flip of bit {bit} in byte {byte} went unnoticed");
            }
        }
    }

    #[test]
    fn zero_header_and_oversized_length_are_rejected() {
        assert_eq!(parse_header(&[0u8; HEADER_LEN], 1 << 20), Err(BadRecord::Zero));
        let mut buf = Vec::new();
        encode(&mut buf, RecordKind::Entry, 1, 1, 1, 0, &[9u8; 100]);
        assert_eq!(parse_header(&header_bytes(&buf), 100), Err(BadRecord::BadHeader));
    }
}
