//! Offline checks of a log directory, for `raftmq log verify` and `raftmq log dump`. Neither
//! changes anything on disk: a torn tail is reported (it would be cut on the next open), not cut.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::LogError;
use crate::engine::scan_dir;
use crate::fs::{FileSystem, StdFileSystem};
use crate::record::{ALIGN, BadRecord, HEADER_LEN, RecordKind};
use crate::segment::{self, SEGMENT_HEADER_LEN, SegmentEnd};

/// What `verify` found in a good (or recoverable) log.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub dir: PathBuf,
    pub segments: Vec<SegmentSummary>,
    pub records: u64,
    /// Bytes of records (headers, payloads, padding), segment headers included.
    pub bytes: u64,
    pub groups: Vec<GroupSummary>,
    /// A partly written last record, cut off on the next open: recoverable.
    pub torn_tail: Option<TornTail>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SegmentSummary {
    pub file: PathBuf,
    pub records: u64,
    pub bytes: u64,
    pub capacity: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct GroupSummary {
    pub group: u64,
    pub first_index: Option<u64>,
    pub last_index: Option<u64>,
    pub purged_index: Option<u64>,
    pub committed_index: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TornTail {
    pub file: PathBuf,
    pub offset: u64,
    pub reason: String,
}

/// Checks every record of the log in `dir`; an `Err(LogError::Corrupt)` names the file and byte
/// offset of the first bad record.
pub fn verify_dir(dir: &Path) -> Result<VerifyReport, LogError> {
    verify_dir_with(dir, &StdFileSystem)
}

pub fn verify_dir_with(dir: &Path, fs: &dyn FileSystem) -> Result<VerifyReport, LogError> {
    if !dir.is_dir() {
        return Err(LogError::io(dir, std::io::Error::new(std::io::ErrorKind::NotFound, "not a directory")));
    }
    let scan = scan_dir(dir, fs, false)?;
    let mut report =
        VerifyReport { dir: dir.to_path_buf(), segments: Vec::new(), records: 0, bytes: 0, groups: Vec::new(), torn_tail: None };
    for s in &scan.segments {
        let used = match s.scan.end {
            SegmentEnd::Clean { offset } => offset,
            SegmentEnd::TornTail { offset, reason } => {
                report.torn_tail = Some(TornTail { file: s.path.clone(), offset, reason: reason.to_string() });
                offset
            }
        };
        report.records += s.scan.records.len() as u64;
        report.bytes += used;
        report.segments.push(SegmentSummary {
            file: s.path.clone(),
            records: s.scan.records.len() as u64,
            bytes: used,
            capacity: s.scan.file_len,
        });
    }
    let groups: BTreeMap<_, _> = scan.groups.iter().collect();
    for (id, g) in groups {
        report.groups.push(GroupSummary {
            group: *id,
            first_index: g.first_index(),
            last_index: g.last_index(),
            purged_index: g.purged_index(),
            committed_index: g.committed.as_ref().map(|(i, _)| *i),
        });
    }
    Ok(report)
}

/// One record, or one stretch of unreadable bytes, as `dump` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct DumpLine {
    pub file: String,
    pub offset: u64,
    pub kind: Option<RecordKind>,
    pub group: Option<u64>,
    pub index: Option<u64>,
    pub term: Option<u64>,
    /// Payload bytes (for unreadable stretches: their length).
    pub size: u64,
    /// `ok`, or why the bytes are not a good record.
    pub status: String,
}

/// Walks every segment of `dir` and reports each record with its checksum status, resuming
/// after a bad stretch at the next valid record; returns the number of bad stretches. A torn
/// tail of the newest segment is reported as such and not counted. With `from`/`to` (inclusive), only entries
/// with an index in range are reported (and bad stretches, always).
pub fn dump_dir(
    dir: &Path,
    from: Option<u64>,
    to: Option<u64>,
    mut out: impl FnMut(&DumpLine) -> std::io::Result<()>,
) -> Result<u64, LogError> {
    let fs = StdFileSystem;
    let mut seqs: Vec<u64> =
        fs.list(dir).map_err(|e| LogError::io(dir, e))?.iter().filter_map(|n| segment::parse_segment_name(n)).collect();
    seqs.sort_unstable();
    let mut bad = 0;
    let emit = |line: &DumpLine, out: &mut dyn FnMut(&DumpLine) -> std::io::Result<()>| {
        out(line).map_err(|e| LogError::io(Path::new("<stdout>"), e))
    };
    let last_seq = seqs.last().copied();
    for seq in seqs {
        let path = dir.join(segment::segment_name(seq));
        let file = fs.open_read_only(&path).map_err(|e| LogError::io(&path, e))?;
        let bytes = segment::read_all(&file, &path)?;
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let bad_line = |offset: u64, size: u64, status: String| DumpLine {
            file: name.clone(),
            offset,
            kind: None,
            group: None,
            index: None,
            term: None,
            size,
            status,
        };
        if Some(seq) == last_seq && segment::header_never_written(&file).map_err(|e| LogError::io(&path, e))? {
            emit(&bad_line(0, bytes.len() as u64, "segment never used: removed on next open".into()), &mut out)?;
            continue;
        }
        if bytes.len() < SEGMENT_HEADER_LEN as usize || bytes[..SEGMENT_HEADER_LEN as usize] != segment::encode_segment_header(seq) {
            bad += 1;
            emit(&bad_line(0, SEGMENT_HEADER_LEN, "bad segment header".into()), &mut out)?;
            continue;
        }
        // Where recovery would cut a torn tail of the newest segment: reported, not counted bad.
        let torn_at = if Some(seq) == last_seq {
            segment::scan_bytes(&bytes, &path, seq, true, false).ok().and_then(|s| match s.end {
                SegmentEnd::TornTail { offset, .. } => Some(offset),
                SegmentEnd::Clean { .. } => None,
            })
        } else {
            None
        };
        let mut offset = SEGMENT_HEADER_LEN;
        while offset < bytes.len() as u64 {
            match segment::record_at(&bytes, offset) {
                Ok((h, _)) => {
                    let in_range = matches!(h.kind, RecordKind::Entry | RecordKind::Rewrite)
                        && from.is_none_or(|f| h.index >= f)
                        && to.is_none_or(|t| h.index <= t);
                    if in_range || (from.is_none() && to.is_none()) {
                        let line = DumpLine {
                            file: name.clone(),
                            offset,
                            kind: Some(h.kind),
                            group: Some(h.group),
                            index: Some(h.index),
                            term: Some(h.term),
                            size: u64::from(h.payload_len),
                            status: "ok".into(),
                        };
                        emit(&line, &mut out)?;
                    }
                    offset += h.record_len();
                }
                Err(BadRecord::Zero) if bytes[offset as usize..].iter().all(|b| *b == 0) => break,
                Err(reason) if torn_at == Some(offset) => {
                    let end = bytes.iter().rposition(|b| *b != 0).map_or(offset, |p| (p as u64 + 1).max(offset));
                    let status = format!("torn tail ({reason}): {} bytes, recoverable, cut on next open", end - offset);
                    emit(&bad_line(offset, end - offset, status), &mut out)?;
                    break;
                }
                Err(reason) => {
                    bad += 1;
                    let next = next_valid_record(&bytes, offset + ALIGN);
                    let end = next.unwrap_or(bytes.len() as u64);
                    emit(&bad_line(offset, end - offset, format!("{reason}: {} bytes unreadable", end - offset)), &mut out)?;
                    match next {
                        Some(n) => offset = n,
                        None => break,
                    }
                }
            }
        }
    }
    Ok(bad)
}

fn next_valid_record(bytes: &[u8], mut probe: u64) -> Option<u64> {
    while probe + HEADER_LEN as u64 <= bytes.len() as u64 {
        if segment::record_at(bytes, probe).is_ok() {
            return Some(probe);
        }
        probe += ALIGN;
    }
    None
}
