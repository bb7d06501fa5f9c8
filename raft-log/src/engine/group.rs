//! One group's view of the engine ([`GroupLog`]): appends, vote, committed index, truncation,
//! purge and reads, each with the durability promise the module above states.

use super::*;

/// The log of one Raft group inside a [`LogEngine`]; cheap to clone.
#[derive(Clone, Debug)]
pub struct GroupLog {
    pub(super) engine: LogEngine,
    pub(super) id: GroupId,
    pub(super) durable: Arc<DurableIndex>,
}

/// A group's log state, as `get_log_state` needs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupState {
    pub first_index: Option<u64>,
    pub last_index: Option<u64>,
    pub purged: Option<(u64, Vec<u8>)>,
    pub vote: Option<Vec<u8>>,
    pub committed: Option<(u64, Vec<u8>)>,
}

impl GroupLog {
    pub fn id(&self) -> GroupId {
        self.id
    }

    pub fn engine(&self) -> &LogEngine {
        &self.engine
    }

    /// Writes `entries` (term, index, payload), consecutive, after the group's last entry or
    /// replacing a suffix; `on_durable` is called once all of them are durable. When this
    /// returns they are readable.
    pub fn append<'a>(&self, entries: impl IntoIterator<Item = (u64, u64, &'a [u8])>, on_durable: OnDurable) -> Result<(), LogError> {
        match self.append_with(entries, on_durable, Wait::Always)? {
            None => Ok(()),
            Some(_) => unreachable!("an append that may wait is always made"),
        }
    }

    /// [`Self::append`] if it can be done now without waiting for anything but a write into the
    /// page cache: the writer lock is free and the entries fit in the active segment (no roll,
    /// whose fdatasync runs under the lock). Otherwise nothing is written and `on_durable` comes
    /// back, for the caller to append from a thread that may block.
    pub fn try_append_now(&self, entries: &[(u64, u64, &[u8])], on_durable: OnDurable) -> Result<Option<OnDurable>, LogError> {
        self.append_with(entries.iter().copied(), on_durable, Wait::Never)
    }

    fn append_with<'a>(
        &self,
        entries: impl IntoIterator<Item = (u64, u64, &'a [u8])>,
        on_durable: OnDurable,
        wait: Wait,
    ) -> Result<Option<OnDurable>, LogError> {
        let shared = &self.engine.shared;
        let batch = {
            let Some(mut w) = shared.writable_with(wait)? else { return Ok(Some(on_durable)) };
            let mut expected: Option<u64> = None;
            let mut buffered: Vec<(u64, u64, &[u8])> = Vec::new();
            let max = shared.max_payload();
            for (term, index, payload) in entries {
                if let Some(e) = expected
                    && index != e
                {
                    return Err(LogError::Invalid(format!("entries not consecutive: {index} after {}", e - 1)));
                }
                if payload.len() as u64 > max {
                    return Err(LogError::Invalid(format!("entry {index} has {} bytes, over the limit of {max}", payload.len())));
                }
                expected = Some(index + 1);
                buffered.push((term, index, payload));
            }
            let (Some(&(_, first, _)), Some(&(_, last, _))) = (buffered.first(), buffered.last()) else {
                drop(w);
                return shared.enqueue_waiter(on_durable).map(|_| None);
            };
            if matches!(wait, Wait::Never) {
                let needed: u64 = buffered.iter().map(|(_, _, p)| record::record_len(p.len())).sum();
                if !w.fits(needed) {
                    return Ok(Some(on_durable));
                }
            }
            w.groups.entry(self.id).or_default().check_append(first).map_err(LogError::Invalid)?;
            let mut locations = Vec::with_capacity(buffered.len());
            for (term, index, payload) in buffered {
                locations.push((index, shared.write_record(&mut w, RecordKind::Entry, self.id, term, index, payload)?));
            }
            shared.write_out(&mut w)?;
            // The index learns of the entries only once their bytes are written.
            let w = &mut *w;
            for (index, location) in locations {
                let removed = w.groups.entry(self.id).or_default().push(index, location);
                shared.note_removed(&mut w.segments, &removed);
                shared.note_added(&mut w.segments, &location);
            }
            self.durable.appended(first, last)
        };
        let durable = self.durable.clone();
        // The caller hears first: whoever waits on the group's durable index may rely on it.
        let on_durable: OnDurable = Box::new(move |r| {
            let outcome = r.as_ref().map(|_| ()).map_err(|e| LogError::Failed(e.to_string()));
            on_durable(r);
            durable.completed(batch, &outcome);
        });
        if shared.options.ack_before_sync.is_some() {
            // The broken test mode: acknowledged before it is durable (see `LogOptions`).
            on_durable(Ok(()));
            return Ok(None);
        }
        shared.enqueue_waiter(on_durable).inspect_err(|e| self.durable.completed(batch, &Err(LogError::Failed(e.to_string()))))?;
        Ok(None)
    }

    /// Resolves once the entry at `index` is durable in this log (or purged): a state machine
    /// applies an entry only then, so it is never ahead of its own log after a power cut (the
    /// apply-versus-durable rule, `docs/ARCHITECTURE.md`). An entry not yet appended is waited
    /// for too.
    pub fn durable(&self, index: u64) -> DurableAt {
        self.durable.wait(index)
    }

    /// Saves the vote; returns once it is durable.
    pub fn save_vote(&self, vote: &[u8]) -> Result<(), LogError> {
        self.save_vote_then(vote, None)?.wait()
    }

    /// Saves the vote; the returned [`DurableWait`] resolves once it is durable. `notify` (if
    /// given) is called instead when it is.
    pub fn save_vote_then(&self, vote: &[u8], notify: Option<OnDurable>) -> Result<DurableWait, LogError> {
        let shared = &self.engine.shared;
        {
            let mut w = shared.writable()?;
            let loc = shared.write_record(&mut w, RecordKind::Vote, self.id, 0, 0, vote)?;
            shared.write_out(&mut w)?;
            let g = w.groups.entry(self.id).or_default();
            g.vote = Some(vote.to_vec());
            g.state_segments.vote = Some(loc.segment);
        }
        DurableWait::enqueue(shared, notify)
    }

    /// Saves the committed index (with the caller's encoding of its log id); durable with the
    /// next sync round.
    pub fn save_committed(&self, index: u64, log_id: &[u8]) -> Result<(), LogError> {
        self.save_committed_with(index, log_id, Wait::Always).map(|_| ())
    }

    /// [`Self::save_committed`] if it can be done now (see [`Self::try_append_now`]); `false`:
    /// nothing was written.
    pub fn try_save_committed_now(&self, index: u64, log_id: &[u8]) -> Result<bool, LogError> {
        self.save_committed_with(index, log_id, Wait::Never)
    }

    fn save_committed_with(&self, index: u64, log_id: &[u8], wait: Wait) -> Result<bool, LogError> {
        let shared = &self.engine.shared;
        let Some(mut w) = shared.writable_with(wait)? else { return Ok(false) };
        if matches!(wait, Wait::Never) && !w.fits(record::record_len(log_id.len())) {
            return Ok(false);
        }
        let loc = shared.write_record(&mut w, RecordKind::Committed, self.id, 0, index, log_id)?;
        shared.write_out(&mut w)?;
        let g = w.groups.entry(self.id).or_default();
        g.committed = Some((index, log_id.to_vec()));
        g.state_segments.committed = Some(loc.segment);
        Ok(true)
    }

    /// Drops the entries from `index` on. Durable with the next sync round.
    pub fn truncate_from(&self, index: u64) -> Result<(), LogError> {
        let shared = &self.engine.shared;
        let mut w = shared.writable()?;
        if w.groups.get(&self.id).and_then(|g| g.last_index()).is_none_or(|last| index > last) {
            return Ok(());
        }
        if let Some(p) = w.groups.get(&self.id).and_then(|g| g.purged_index())
            && index <= p
        {
            return Err(LogError::Invalid(format!("truncate from {index} at or below the purge point {p}")));
        }
        shared.write_record(&mut w, RecordKind::Truncate, self.id, 0, index, &[])?;
        shared.write_out(&mut w)?;
        let w = &mut *w;
        let removed = w.groups.entry(self.id).or_default().truncate_from(index);
        self.durable.truncated_from(index);
        shared.note_removed(&mut w.segments, &removed);
        shared.collect_garbage(w)?;
        shared.want_reclaim();
        Ok(())
    }

    /// Drops the entries up to and including `index` and records the purge point (with the
    /// caller's encoding of its log id). Durable with the next sync round; segments that no
    /// longer hold a live entry are deleted once that round is done.
    pub fn purge(&self, index: u64, log_id: &[u8]) -> Result<(), LogError> {
        let shared = &self.engine.shared;
        let mut w = shared.writable()?;
        if w.groups.get(&self.id).and_then(|g| g.purged_index()).is_some_and(|p| p >= index) {
            return Ok(());
        }
        let loc = shared.write_record(&mut w, RecordKind::Purge, self.id, 0, index, log_id)?;
        shared.write_out(&mut w)?;
        let w = &mut *w;
        let g = w.groups.entry(self.id).or_default();
        let removed = g.purge_upto(index, log_id.to_vec());
        g.state_segments.purge = Some(loc.segment);
        self.durable.purged_upto(index);
        shared.note_removed(&mut w.segments, &removed);
        shared.collect_garbage(w)?;
        shared.want_reclaim();
        Ok(())
    }

    /// The group's log state.
    pub fn state(&self) -> GroupState {
        let w = lock(&self.engine.shared.writer);
        match w.groups.get(&self.id) {
            None => GroupState::default(),
            Some(g) => GroupState {
                first_index: g.first_index(),
                last_index: g.last_index(),
                purged: g.purged.clone(),
                vote: g.vote.clone(),
                committed: g.committed.clone(),
            },
        }
    }

    /// The term of the entry at `index`, if present.
    pub fn term_of(&self, index: u64) -> Option<u64> {
        lock(&self.engine.shared.writer).groups.get(&self.id)?.location(index).map(|l| l.term)
    }

    /// Reads the entries in `[from, to)` that are present, verifying each checksum. Present
    /// entries are consecutive, so the result is too.
    pub fn read(&self, from: u64, to: u64) -> Result<Vec<StoredEntry>, LogError> {
        self.read_with(from, to, Wait::Always).map(|r| r.unwrap_or_default())
    }

    /// [`Self::read`] if it can be done now: the writer lock is free and every entry is in the
    /// active segment, written moments ago and so in the page cache. `None`: nothing was read.
    pub fn try_read_now(&self, from: u64, to: u64) -> Result<Option<Vec<StoredEntry>>, LogError> {
        self.read_with(from, to, Wait::Never)
    }

    fn read_with(&self, from: u64, to: u64, wait: Wait) -> Result<Option<Vec<StoredEntry>>, LogError> {
        let shared = &self.engine.shared;
        let (locations, files) = {
            let Some(w) = shared.writer_with(wait) else { return Ok(None) };
            let Some(g) = w.groups.get(&self.id) else { return Ok(Some(Vec::new())) };
            let locations = g.locations(from, to);
            if matches!(wait, Wait::Never) && locations.iter().any(|(_, l)| l.segment != w.active.seq) {
                return Ok(None);
            }
            let mut files: HashMap<u64, Arc<dyn LogFile>> = HashMap::new();
            for (_, l) in &locations {
                if let std::collections::hash_map::Entry::Vacant(v) = files.entry(l.segment) {
                    let meta = w
                        .segments
                        .get(&l.segment)
                        .ok_or_else(|| LogError::Failed(format!("segment {} of a live entry is gone", l.segment)))?;
                    v.insert(meta.file.clone());
                }
            }
            (locations, files)
        };
        // Records never move or change once written, so they can be read without the lock.
        let mut out = Vec::with_capacity(locations.len());
        let mut run_start = 0;
        while run_start < locations.len() {
            let mut run_end = run_start + 1;
            while run_end < locations.len() && is_next_record(&locations[run_end - 1].1, &locations[run_end].1) {
                run_end += 1;
            }
            let run = &locations[run_start..run_end];
            let first = run[0].1;
            let last = run[run.len() - 1].1;
            let end = last.offset + record::record_len(last.payload_len as usize);
            let mut buf = vec![0u8; (end - first.offset) as usize];
            let path = join(&shared.dir, &segment::segment_name(first.segment));
            files[&first.segment].read_exact_at(&mut buf, first.offset).map_err(|e| LogError::io(&path, e))?;
            for (index, l) in run {
                let at = (l.offset - first.offset) as usize;
                out.push(decode_entry(&buf[at..], *index, l, &path)?);
            }
            run_start = run_end;
        }
        Ok(Some(out))
    }
}

pub(super) fn is_next_record(a: &EntryLocation, b: &EntryLocation) -> bool {
    a.segment == b.segment && a.offset + record::record_len(a.payload_len as usize) == b.offset
}

pub(super) fn decode_entry(bytes: &[u8], index: u64, l: &EntryLocation, path: &Path) -> Result<StoredEntry, LogError> {
    let corrupt = |reason: String| LogError::Corrupt { file: path.to_path_buf(), offset: l.offset, reason };
    let mut h = [0u8; HEADER_LEN];
    h.copy_from_slice(&bytes[..HEADER_LEN]);
    let header = record::parse_header(&h, bytes.len() as u64).map_err(|e| corrupt(e.to_string()))?;
    let payload = &bytes[HEADER_LEN..HEADER_LEN + header.payload_len as usize];
    record::check(&h, &header, payload).map_err(|e| corrupt(e.to_string()))?;
    if header.index != index || !matches!(header.kind, RecordKind::Entry | RecordKind::Rewrite) {
        return Err(corrupt(format!("expected entry {index}, found {:?} {}", header.kind, header.index)));
    }
    Ok(StoredEntry { index, term: header.term, payload: payload.to_vec() })
}

/// Waits for a sync round; see [`GroupLog::save_vote_then`].
pub struct DurableWait(Option<std::sync::mpsc::Receiver<Result<(), LogError>>>);

impl DurableWait {
    fn enqueue(shared: &Shared, notify: Option<OnDurable>) -> Result<Self, LogError> {
        match notify {
            Some(cb) => {
                shared.enqueue_waiter(cb)?;
                Ok(Self(None))
            }
            None => {
                let (tx, rx) = std::sync::mpsc::channel();
                shared.enqueue_waiter(Box::new(move |r| {
                    let _ = tx.send(r);
                }))?;
                Ok(Self(Some(rx)))
            }
        }
    }

    /// Blocks until durable (returns at once if a callback was given instead).
    pub fn wait(self) -> Result<(), LogError> {
        match self.0 {
            None => Ok(()),
            Some(rx) => rx.recv().map_err(|_| LogError::Closed)?,
        }
    }
}
