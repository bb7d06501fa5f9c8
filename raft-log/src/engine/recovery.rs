//! Recovery: reads every segment of a log directory, replays its records into the group
//! indexes, cuts a torn tail and refuses, naming the file and offset, any other damage.

use super::*;

/// What reading a whole log directory found: each segment's scan and the groups it replays to.
pub(crate) struct DirScan {
    pub segments: Vec<ScannedSegment>,
    pub groups: HashMap<GroupId, GroupIndex>,
    /// The newest segment file, when it was created but its header never became durable: no
    /// record was ever written to it. Not in `segments`; opening the log removes it.
    pub never_used: Option<PathBuf>,
}

pub(crate) struct ScannedSegment {
    pub path: PathBuf,
    pub file: Arc<dyn LogFile>,
    pub scan: segment::SegmentScan,
    pub live_entries: u64,
    pub live_bytes: u64,
}

/// Reads every segment of `dir` and replays its records, changing nothing on disk. Fails, with
/// the file and offset, on damage that is not a torn tail, on a missing segment, and when a
/// group's committed entries are not all present.
pub(crate) fn scan_dir(dir: &Path, fs: &dyn FileSystem, writable: bool) -> Result<DirScan, LogError> {
    let names = fs.list(dir).map_err(|e| LogError::io(dir, e))?;
    let mut seqs: Vec<u64> = names.iter().filter_map(|n| segment::parse_segment_name(n)).collect();
    seqs.sort_unstable();
    for pair in seqs.windows(2) {
        if pair[1] != pair[0] + 1 {
            let missing = join(dir, &segment::segment_name(pair[0] + 1));
            return Err(LogError::Corrupt { file: missing, offset: 0, reason: "segment file missing between its neighbours".into() });
        }
    }
    let mut groups: HashMap<GroupId, GroupIndex> = HashMap::new();
    let mut live: BTreeMap<u64, Live> = BTreeMap::new();
    let mut segments = Vec::with_capacity(seqs.len());
    let open = |path: &Path| if writable { fs.open(path, false) } else { fs.open_read_only(path) }.map_err(|e| LogError::io(path, e));
    let mut never_used = None;
    if let Some(&last) = seqs.last() {
        let path = join(dir, &segment::segment_name(last));
        if segment::header_never_written(&open(&path)?).map_err(|e| LogError::io(&path, e))? {
            never_used = Some(path);
            seqs.pop();
        }
    }
    for (i, &seq) in seqs.iter().enumerate() {
        let path = join(dir, &segment::segment_name(seq));
        let file = open(&path)?;
        let scan = segment::scan(&file, &path, seq, i + 1 == seqs.len(), false)?;
        segments.push(ScannedSegment { path, file, scan, live_entries: 0, live_bytes: 0 });
    }
    for s in &segments {
        let seq = s.scan.seq;
        live.insert(seq, Live::default());
        for r in &s.scan.records {
            replay(&mut groups, &mut live, seq, r).map_err(|reason| LogError::Corrupt {
                file: s.path.clone(),
                offset: r.offset,
                reason,
            })?;
        }
    }
    for s in &mut segments {
        let l = live.get(&s.scan.seq).copied().unwrap_or_default();
        (s.live_entries, s.live_bytes) = (l.entries, l.bytes);
    }
    if let Some(last) = segments.last() {
        let end = match last.scan.end {
            SegmentEnd::Clean { offset } | SegmentEnd::TornTail { offset, .. } => offset,
        };
        let mut ids: Vec<_> = groups.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            let g = &groups[&id];
            g.finish_replay().map_err(|reason| LogError::Corrupt {
                file: last.path.clone(),
                offset: end,
                reason: format!("group {id}: {reason}"),
            })?;
            if let Some((c, _)) = &g.committed
                && g.last_index().is_none_or(|l| l < *c)
            {
                return Err(LogError::Corrupt {
                    file: last.path.clone(),
                    offset: end,
                    reason: format!(
                        "group {id}: committed index {c} is past the last entry {:?}: committed entries are missing",
                        g.last_index()
                    ),
                });
            }
        }
    }
    Ok(DirScan { segments, groups, never_used })
}

/// Opens the segments in `dir`, replays every record into the group indexes and cuts a torn
/// tail; creates the first segment of an empty log.
pub(super) fn recover(dir: &Path, options: &LogOptions, fs: &dyn FileSystem) -> Result<(WriterState, RecoveryReport), LogError> {
    let names = fs.list(dir).map_err(|e| LogError::io(dir, e))?;
    if names.iter().any(|n| n == SPARE_NAME) {
        fs.remove(&join(dir, SPARE_NAME)).map_err(|e| LogError::io(dir, e))?;
    }
    let scan = scan_dir(dir, fs, true)?;
    if let Some(unused) = &scan.never_used {
        tracing::info!(file = %unused.display(), "removing a segment file that was created but never used");
        fs.remove(unused).map_err(|e| LogError::io(unused, e))?;
        fs.sync_dir(dir).map_err(|e| LogError::io(dir, e))?;
    }
    let DirScan { segments: mut scanned, groups, .. } = scan;
    if scanned.is_empty() {
        let seq = 1;
        prepare_spare(fs, dir, options.segment_bytes)?;
        let path = join(dir, &segment::segment_name(seq));
        let file = install_segment(fs, dir, seq, true)?;
        let file_len = file.len().map_err(|e| LogError::io(&path, e))?;
        let scan = segment::SegmentScan { seq, file_len, records: Vec::new(), end: SegmentEnd::Clean { offset: SEGMENT_HEADER_LEN } };
        scanned.push(ScannedSegment { path, file, scan, live_entries: 0, live_bytes: 0 });
    }
    let mut report = RecoveryReport { segments: scanned.len(), groups: groups.len(), ..Default::default() };
    let mut segments = BTreeMap::new();
    let mut active = None;
    let count = scanned.len();
    for (i, s) in scanned.into_iter().enumerate() {
        report.records += s.scan.records.len() as u64;
        let end = match s.scan.end {
            SegmentEnd::Clean { offset } => offset,
            SegmentEnd::TornTail { offset, reason } => {
                tracing::warn!(file = %s.path.display(), offset, %reason, "cutting a torn tail");
                // Zero the torn bytes so they can never be mistaken for records again.
                let zeros = vec![0u8; (s.scan.file_len - offset) as usize];
                s.file.write_all_at(&zeros, offset).and_then(|_| s.file.sync_data()).map_err(|e| LogError::io(&s.path, e))?;
                report.torn_tail = Some((s.path.clone(), offset));
                offset
            }
        };
        segments.insert(s.scan.seq, SegmentMeta { file: s.file.clone(), live_entries: s.live_entries, live_bytes: s.live_bytes });
        if i + 1 == count {
            // A segment made when no spare was ready grows as it is written, up to the segment size.
            let capacity = s.scan.file_len.max(options.segment_bytes);
            active = Some(ActiveSegment { seq: s.scan.seq, file: s.file, write_offset: end, capacity });
        }
    }
    let active = active.ok_or_else(|| LogError::Invalid("no segment".into()))?;
    // What was read may be in the page cache only: written by a process that died before its
    // fdatasync. The log is about to vouch for it (openraft acknowledges it to the leader as
    // stored), so it must be durable first, or a later power cut takes what was acknowledged.
    for (seq, meta) in &segments {
        meta.file.sync_data().map_err(|e| LogError::io(&join(dir, &segment::segment_name(*seq)), e))?;
    }
    fs.sync_dir(dir).map_err(|e| LogError::io(dir, e))?;
    let durable = Position { segment: active.seq, offset: active.write_offset };
    Ok((WriterState { active, segments, groups, durable, scratch: Vec::new() }, report))
}

/// Live entries of one segment while replaying: their count and record bytes.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Live {
    pub(super) entries: u64,
    pub(super) bytes: u64,
}

pub(super) fn replay(
    groups: &mut HashMap<GroupId, GroupIndex>,
    live: &mut BTreeMap<u64, Live>,
    seq: u64,
    r: &segment::ScannedRecord,
) -> Result<(), String> {
    let h = &r.header;
    let g = groups.entry(h.group).or_default();
    let here = EntryLocation { segment: seq, offset: r.offset, payload_len: h.payload_len, term: h.term };
    let mut removed = Vec::new();
    match h.kind {
        RecordKind::Entry => {
            removed = g.replay_entry(h.index, here)?;
            add_live(live, &here);
        }
        RecordKind::Rewrite => {
            removed.extend(g.replay_rewrite(h.index, here)?);
            add_live(live, &here);
        }
        RecordKind::Truncate => removed = g.truncate_from(h.index),
        RecordKind::Purge => {
            removed = g.purge_upto(h.index, r.payload.clone());
            g.state_segments.purge = Some(seq);
        }
        RecordKind::Vote => {
            g.vote = Some(r.payload.clone());
            g.state_segments.vote = Some(seq);
        }
        RecordKind::Committed => {
            g.committed = Some((h.index, r.payload.clone()));
            g.state_segments.committed = Some(seq);
        }
    }
    for l in removed {
        if let Some(n) = live.get_mut(&l.segment) {
            // Replay removes only what it placed: a count below zero is a log that contradicts
            // itself, refused as corrupt rather than wrapped around.
            match (n.entries.checked_sub(1), n.bytes.checked_sub(entry_bytes(&l))) {
                (Some(entries), Some(bytes)) => (n.entries, n.bytes) = (entries, bytes),
                _ => return Err(format!("segment {}: an entry removed that was never live", l.segment)),
            }
        }
    }
    Ok(())
}

pub(super) fn add_live(live: &mut BTreeMap<u64, Live>, l: &EntryLocation) {
    let n = live.entry(l.segment).or_default();
    n.entries += 1;
    n.bytes += entry_bytes(l);
}
