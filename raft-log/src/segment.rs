//! Segment files: naming, the segment header, and reading a segment back record by record.
//!
//! A segment is created at its full size, zero-filled and synced ahead of the writer (so an
//! append overwrites allocated blocks and `fdatasync` need not commit file-size metadata).
//! Its header (32 bytes) is followed by records (see [`crate::record`]):
//!
//! ```text
//! offset size field
//!      0    8 magic "RAFTMQLG"
//!      8    4 format version (1)
//!     12    4 reserved, zero
//!     16    8 segment sequence number (also in the file name: {seq:020}.seg)
//!     24    4 crc32c of bytes 0..24
//!     28    4 reserved, zero
//! ```

use std::path::Path;
use std::sync::Arc;

use crate::LogError;
use crate::fs::LogFile;
use crate::record::{self, ALIGN, BadRecord, HEADER_LEN, RecordHeader};

/// Bytes before the first record of a segment.
pub const SEGMENT_HEADER_LEN: u64 = 32;
const MAGIC: &[u8; 8] = b"RAFTMQLG";
const VERSION: u32 = 1;
/// Name of the preallocated segment waiting to become the next one.
pub const SPARE_NAME: &str = "spare.tmp";

/// The file name of segment `seq`.
pub fn segment_name(seq: u64) -> String {
    format!("{seq:020}.seg")
}

/// The sequence number named by a segment file name, if it is one.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    if digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()) { digits.parse().ok() } else { None }
}

/// The 32-byte header of segment `seq`.
pub fn encode_segment_header(seq: u64) -> [u8; SEGMENT_HEADER_LEN as usize] {
    let mut h = [0u8; SEGMENT_HEADER_LEN as usize];
    h[..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h[16..24].copy_from_slice(&seq.to_le_bytes());
    let crc = crc32c::crc32c(&h[..24]);
    h[24..28].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Whether a segment file's header was never written: shorter than a header, or a header of
/// zeros. Such a file was being installed at a crash and never held a record.
pub fn header_never_written(file: &Arc<dyn LogFile>) -> std::io::Result<bool> {
    if file.len()? < SEGMENT_HEADER_LEN {
        return Ok(true);
    }
    let mut h = [0u8; SEGMENT_HEADER_LEN as usize];
    file.read_exact_at(&mut h, 0)?;
    Ok(h.iter().all(|b| *b == 0))
}

/// One record found in a segment.
#[derive(Debug, Clone)]
pub struct ScannedRecord {
    pub offset: u64,
    pub header: RecordHeader,
    /// The payload; empty for entries (and rewritten entries) unless the scan was asked to keep them.
    pub payload: Vec<u8>,
}

/// How the records of a segment end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentEnd {
    /// After the last record only zeros follow (or the end of the file).
    Clean { offset: u64 },
    /// A partly written record at the tail of the last segment: from `offset` on the bytes are
    /// not records, and nothing after them was known durable when it was written. Recoverable.
    TornTail { offset: u64, reason: BadRecord },
}

/// A whole segment, read and checked.
#[derive(Debug)]
pub struct SegmentScan {
    pub seq: u64,
    pub file_len: u64,
    pub records: Vec<ScannedRecord>,
    pub end: SegmentEnd,
}

fn corrupt(path: &Path, offset: u64, reason: impl Into<String>) -> LogError {
    LogError::Corrupt { file: path.to_path_buf(), offset, reason: reason.into() }
}

/// Reads the whole of `file` into memory, in bounded chunks.
pub(crate) fn read_all(file: &Arc<dyn LogFile>, path: &Path) -> Result<Vec<u8>, LogError> {
    const CHUNK: usize = 4 << 20;
    let len = file.len().map_err(|e| LogError::io(path, e))?;
    let len = usize::try_from(len).map_err(|_| corrupt(path, 0, "file too large"))?;
    let mut buf = vec![0u8; len];
    let mut at = 0;
    while at < len {
        let n = CHUNK.min(len - at);
        file.read_exact_at(&mut buf[at..at + n], at as u64).map_err(|e| LogError::io(path, e))?;
        at += n;
    }
    Ok(buf)
}

/// Tries to read a valid record at `offset` of `bytes`.
pub(crate) fn record_at(bytes: &[u8], offset: u64) -> Result<(RecordHeader, &[u8]), BadRecord> {
    let at = offset as usize;
    let room = bytes.len() as u64 - offset;
    if room < HEADER_LEN as u64 {
        return if bytes[at..].iter().all(|b| *b == 0) { Err(BadRecord::Zero) } else { Err(BadRecord::BadHeader) };
    }
    let mut h = [0u8; HEADER_LEN];
    h.copy_from_slice(&bytes[at..at + HEADER_LEN]);
    let header = record::parse_header(&h, room)?;
    let payload = &bytes[at + HEADER_LEN..at + HEADER_LEN + header.payload_len as usize];
    record::check(&h, &header, payload)?;
    Ok((header, payload))
}

/// Reads and checks every record of a segment.
///
/// `is_last` says whether this is the newest segment, the only one that can have a torn tail:
/// a segment is synced completely before the next one receives its first record. In the last
/// segment, bytes that are not a record at offset X are a torn tail only if no valid record
/// after X says (by its durable offset) that X was already durable when it was written;
/// otherwise, and anywhere in an older segment, they are corruption, reported with the file and
/// offset.
pub fn scan(
    file: &Arc<dyn LogFile>,
    path: &Path,
    expected_seq: u64,
    is_last: bool,
    keep_entry_payloads: bool,
) -> Result<SegmentScan, LogError> {
    scan_bytes(&read_all(file, path)?, path, expected_seq, is_last, keep_entry_payloads)
}

/// [`scan`] of a segment already read into memory.
pub fn scan_bytes(bytes: &[u8], path: &Path, expected_seq: u64, is_last: bool, keep_entry_payloads: bool) -> Result<SegmentScan, LogError> {
    let file_len = bytes.len() as u64;
    if file_len < SEGMENT_HEADER_LEN {
        return Err(corrupt(path, 0, format!("segment shorter than its {SEGMENT_HEADER_LEN}-byte header")));
    }
    let expected = encode_segment_header(expected_seq);
    if bytes[..SEGMENT_HEADER_LEN as usize] != expected {
        return Err(corrupt(path, 0, format!("bad segment header (expected magic, version 1 and sequence {expected_seq})")));
    }
    let mut records = Vec::new();
    let mut offset = SEGMENT_HEADER_LEN;
    while offset < file_len {
        match record_at(bytes, offset) {
            Ok((header, payload)) => {
                let keep = keep_entry_payloads || !matches!(header.kind, record::RecordKind::Entry | record::RecordKind::Rewrite);
                records.push(ScannedRecord { offset, header, payload: if keep { payload.to_vec() } else { Vec::new() } });
                offset += header.record_len();
            }
            Err(reason) => {
                let end = classify_end(bytes, path, offset, reason, is_last)?;
                return Ok(SegmentScan { seq: expected_seq, file_len, records, end });
            }
        }
    }
    Ok(SegmentScan { seq: expected_seq, file_len, records, end: SegmentEnd::Clean { offset } })
}

fn classify_end(bytes: &[u8], path: &Path, offset: u64, reason: BadRecord, is_last: bool) -> Result<SegmentEnd, LogError> {
    if bytes[offset as usize..].iter().all(|b| *b == 0) {
        return Ok(SegmentEnd::Clean { offset });
    }
    if !is_last {
        return Err(corrupt(path, offset, format!("{reason} in a sealed segment")));
    }
    let mut probe = offset + ALIGN;
    while probe < bytes.len() as u64 {
        if let Ok((header, _)) = record_at(bytes, probe)
            && header.durable_offset > offset
        {
            return Err(corrupt(path, offset, format!("{reason}; the record at offset {probe} was written after this one was durable")));
        }
        probe += ALIGN;
    }
    Ok(SegmentEnd::TornTail { offset, reason })
}
