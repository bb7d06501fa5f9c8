//! Export and import of one group's data. A Raft snapshot of the group is the records of
//! [`checkpoint_export`] (the checkpoint at the trim point, not the whole group: see
//! `crate::queue::state_machine`), installed with an import; a whole export moves a group
//! between stores.
//!
//! An export reads the group through a RocksDB snapshot, so its pages are one consistent view
//! even while the group keeps applying; each page is bounded in bytes. Keys in an export leave
//! out the group id (the importer puts its own in front), values are the stored values, checked.

use rocksdb::{DB, ReadOptions, SnapshotWithThreadMode, WriteBatch};

use super::keys::{self, Item};
use super::value::{self, Checkpoint, IndexEntry};
use super::{GroupId, QueueStore, StoreError, decode_checkpoint, lock};

/// Largest page [`QueueStore::export_group`] makes and [`GroupImport::write_page`] takes.
pub const EXPORT_PAGE_BYTES_MAX: usize = 16 << 20;

/// One stored item of a group: its key without the group id, and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRecord {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

/// A bounded run of a group's records, in key order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportPage {
    pub records: Vec<GroupRecord>,
}

impl ExportPage {
    /// Key and value bytes of all records.
    pub fn bytes(&self) -> usize {
        self.records.iter().map(|r| r.key.len() + r.value.len()).sum()
    }
}

/// The pages of one group's export; see [`QueueStore::export_group`].
pub struct GroupExport<'a> {
    snapshot: SnapshotWithThreadMode<'a, DB>,
    group: GroupId,
    /// The key to read from next; `None` once the group is read or after an error.
    cursor: Option<Vec<u8>>,
    page_bytes_max: usize,
}

impl QueueStore {
    /// The data of `group` as of now, as pages of at most `page_bytes_max` bytes (at least one
    /// record per page, at most [`EXPORT_PAGE_BYTES_MAX`]). Every value is checked on the way out.
    /// Fails for a group with no state or one being imported.
    pub fn export_group(&self, group: GroupId, page_bytes_max: usize) -> Result<GroupExport<'_>, StoreError> {
        let snapshot = self.db.snapshot();
        if snapshot.get_pinned(Item::Importing.key(group)).map_err(StoreError::db("export"))?.is_some() {
            return Err(StoreError::Importing { group });
        }
        if snapshot.get_pinned(Item::Applied.key(group)).map_err(StoreError::db("export"))?.is_none() {
            return Err(StoreError::UnknownGroup { group });
        }
        Ok(GroupExport {
            snapshot,
            group,
            cursor: Some(keys::group_start(group).to_vec()),
            page_bytes_max: page_bytes_max.clamp(1, EXPORT_PAGE_BYTES_MAX),
        })
    }

    /// Starts replacing `group`'s data with an export: deletes the group's data and marks the
    /// group as being imported, in one write batch. Until [`GroupImport::finish`] the group
    /// takes no applies and has no applied index; the caller must not serve it meanwhile.
    ///
    /// Crash safety: as every write here, the import is durable only with a flush. A crash
    /// leaves the group either as it was last flushed before the import, or complete, or (when
    /// a flush came mid-import) marked, in which case opening the store deletes it and reports
    /// it in [`super::OpenReport::interrupted_imports`].
    pub fn begin_import(&self, group: GroupId) -> Result<GroupImport<'_>, StoreError> {
        let mut wb = WriteBatch::default();
        wb.delete_range(keys::group_start(group).to_vec(), keys::group_end(group));
        wb.put(Item::Importing.key(group), value::encode_marker());
        let mut progress = lock(&self.progress);
        self.db.write_opt(wb, &self.write_options).map_err(StoreError::db("begin import"))?;
        progress.applied.remove(&group);
        progress.importing.insert(group);
        Ok(GroupImport { store: self, group, applied: None })
    }

    /// Replaces `group`'s data with the records of `pages` (see [`Self::begin_import`]).
    pub fn import_group(&self, group: GroupId, pages: impl IntoIterator<Item = ExportPage>) -> Result<(), StoreError> {
        let mut import = self.begin_import(group)?;
        for page in pages {
            import.write_page(&page)?;
        }
        import.finish()
    }
}

impl Iterator for GroupExport<'_> {
    type Item = Result<ExportPage, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        let from = self.cursor.take()?;
        let result = self.read_page(&from);
        if let Ok((_, next)) = &result {
            self.cursor = next.clone();
        }
        Some(result.map(|(page, _)| page))
    }
}

impl GroupExport<'_> {
    /// The group's raft state (see [`QueueStore::raft_state`]) as of this export: the same
    /// point in the write order as its pages, so it describes exactly what they hold.
    pub fn raft_state(&self) -> Result<Option<Vec<u8>>, StoreError> {
        let key = Item::RaftState.key(self.group);
        match self.snapshot.get_pinned(&key).map_err(StoreError::db("export"))? {
            None => Ok(None),
            Some(v) => value::decode_blob(&v).map(Some).map_err(|reason| StoreError::Corrupt { key: keys::describe(&key), reason }),
        }
    }

    /// Reads one page from `from`; returns it and where the next one starts, if anywhere.
    fn read_page(&self, from: &[u8]) -> Result<(ExportPage, Option<Vec<u8>>), StoreError> {
        let mut ro = ReadOptions::default();
        ro.set_iterate_upper_bound(keys::group_end(self.group));
        let mut it = self.snapshot.raw_iterator_opt(ro);
        it.seek(from);
        let mut page = ExportPage::default();
        let mut bytes = 0;
        // Ends at the page bound or the end of the group's range.
        while let Some((k, v)) = it.item() {
            if !page.records.is_empty() && bytes + k.len() + v.len() > self.page_bytes_max {
                return Ok((page, Some(k.to_vec())));
            }
            let item = match keys::parse(k) {
                Ok((g, item)) if g == self.group => item,
                Ok(_) => {
                    return Err(StoreError::Corrupt {
                        key: keys::describe(k),
                        reason: format!("found inside group {}'s range", self.group),
                    });
                }
                Err(reason) => return Err(StoreError::Corrupt { key: keys::describe(k), reason }),
            };
            check_value(&item, v).map_err(|reason| StoreError::Corrupt { key: keys::describe(k), reason })?;
            bytes += k.len() + v.len();
            page.records.push(GroupRecord { key: k[keys::GROUP_LEN..].to_vec(), value: v.to_vec() });
            it.next();
        }
        it.status().map_err(StoreError::db("export"))?;
        Ok((page, None))
    }
}

/// An import in progress; see [`QueueStore::begin_import`]. Dropped without
/// [`Self::finish`], it leaves the group marked as being imported (empty, taking no applies)
/// until a new import finishes or the group is deleted.
pub struct GroupImport<'a> {
    store: &'a QueueStore,
    group: GroupId,
    /// The export's applied index, written last by `finish`.
    applied: Option<u64>,
}

impl GroupImport<'_> {
    /// Checks every record of `page` and writes them in one write batch; nothing of a page with
    /// a bad record is written.
    pub fn write_page(&mut self, page: &ExportPage) -> Result<(), StoreError> {
        let invalid = |reason: String| StoreError::InvalidImport { group: self.group, reason };
        if page.bytes() > EXPORT_PAGE_BYTES_MAX {
            return Err(invalid(format!("page of {} bytes is over the limit of {EXPORT_PAGE_BYTES_MAX}", page.bytes())));
        }
        let mut wb = WriteBatch::default();
        let mut applied = self.applied;
        for r in &page.records {
            let item = Item::parse_suffix(&r.key).map_err(|e| invalid(format!("key {}: {e}", keys::hex(&r.key))))?;
            check_value(&item, &r.value).map_err(|e| invalid(format!("{item}: {e}")))?;
            match item {
                Item::Importing => return Err(invalid("an export holds no import marker".into())),
                // Held back to the last batch: it is what makes the group whole again.
                Item::Applied if applied.is_some() => return Err(invalid("applied index appears twice".into())),
                Item::Applied => applied = Some(value::decode_u64(&r.value).map_err(invalid)?),
                other => wb.put(other.key(self.group), &r.value),
            }
        }
        self.write(wb)?;
        self.applied = applied;
        Ok(())
    }

    /// Writes the applied index and removes the import marker, in one write batch: the group
    /// takes applies again from the export's applied index.
    pub fn finish(self) -> Result<(), StoreError> {
        let applied = self
            .applied
            .ok_or_else(|| StoreError::InvalidImport { group: self.group, reason: "the pages hold no applied index".into() })?;
        let mut wb = WriteBatch::default();
        wb.put(Item::Applied.key(self.group), value::encode_u64(applied));
        wb.delete(Item::Importing.key(self.group));
        let store = self.store;
        let mut progress = lock(&store.progress);
        if !progress.importing.contains(&self.group) {
            return Err(StoreError::InvalidImport { group: self.group, reason: "the group was deleted during the import".into() });
        }
        store.db.write_opt(wb, &store.write_options).map_err(StoreError::db("finish import"))?;
        progress.importing.remove(&self.group);
        progress.applied.insert(self.group, applied);
        Ok(())
    }

    fn write(&self, wb: WriteBatch) -> Result<(), StoreError> {
        let store = self.store;
        let progress = lock(&store.progress);
        // A delete_group during the import ends it: writing on would bring back part of a group.
        if !progress.importing.contains(&self.group) {
            return Err(StoreError::InvalidImport { group: self.group, reason: "the group was deleted during the import".into() });
        }
        store.db.write_opt(wb, &store.write_options).map_err(StoreError::db("import"))
    }
}

/// Checks that `value` is a well-formed value for `item`.
fn check_value(item: &Item, value: &[u8]) -> Result<(), String> {
    match item {
        Item::Importing => value::decode_marker(value),
        Item::Applied
        | Item::NextOffset { .. }
        | Item::ConsumerOffset { .. }
        | Item::StartOffset { .. }
        | Item::TrimPoint
        | Item::PopCursor { .. }
        | Item::ReceiveFloor { .. }
        | Item::ReceiveItems => value::decode_u64(value).map(|_| ()),
        Item::InFlight { .. } => value::InFlight::decode(value).map(|_| ()),
        Item::InFlightTally { .. } => value::InFlightTally::decode(value).map(|_| ()),
        Item::Index { .. } => IndexEntry::decode(value).map(|_| ()),
        Item::RaftState => value::decode_blob(value).map(|_| ()),
        Item::Checkpoint { log_index } => decode_checkpoint(*log_index, value).map(|_| ()),
    }
}

/// The records of a group whose whole state is `checkpoint`, trimmed at it: applied index and
/// raft state as of the checkpoint, its next and consumer offsets, every queue's start offset at
/// its next offset (nothing below the checkpoint is held), the trim point, the checkpoint
/// itself (so the importer can serve the same snapshot), and its receive cursors and in-flight
/// records. No index entry: a trim at the
/// checkpoint removed them all. In key order, one page (a checkpoint is bounded well below
/// [`EXPORT_PAGE_BYTES_MAX`]). The caller has checked the checkpoint
/// ([`Checkpoint::check`]; stored checkpoints are).
pub fn checkpoint_export(checkpoint: &Checkpoint) -> ExportPage {
    let record = |item: Item, value: Vec<u8>| GroupRecord { key: item.key(0)[keys::GROUP_LEN..].to_vec(), value };
    let k = checkpoint.log_index;
    let mut records = Vec::with_capacity(4 + 2 * checkpoint.next_offsets.len() + checkpoint.consumer_offsets.len());
    records.push(record(Item::Applied, value::encode_u64(k)));
    records.extend(checkpoint.next_offsets.iter().map(|&(queue, next)| record(Item::NextOffset { queue }, value::encode_u64(next))));
    records.extend(
        checkpoint.consumer_offsets.iter().map(|(cg, queue, offset)| {
            record(Item::ConsumerOffset { consumer_group: cg.clone(), queue: *queue }, value::encode_u64(*offset))
        }),
    );
    records.push(record(Item::RaftState, value::encode_blob(&checkpoint.raft_state)));
    records.extend(checkpoint.next_offsets.iter().map(|&(queue, next)| record(Item::StartOffset { queue }, value::encode_u64(next))));
    records.push(record(Item::TrimPoint, value::encode_u64(k)));
    records.push(record(Item::Checkpoint { log_index: k }, checkpoint.encode()));
    records.extend(
        checkpoint
            .pop_cursors
            .iter()
            .map(|(cg, queue, cursor)| record(Item::PopCursor { consumer_group: cg.clone(), queue: *queue }, value::encode_u64(*cursor))),
    );
    records.extend(
        checkpoint.in_flight.iter().map(|(cg, queue, offset, r)| {
            record(Item::InFlight { consumer_group: cg.clone(), queue: *queue, offset: *offset }, r.encode())
        }),
    );
    ExportPage { records }
}

#[cfg(test)]
mod tests {
    use tempfile::TempDir;

    use super::super::tests::{crash_image, entry, open, send};
    use super::super::{ApplyBatch, OpenReport, QueueStore};
    use super::*;

    /// Every read of one group, for comparing two stores.
    #[derive(Debug, PartialEq)]
    struct GroupView {
        applied: Option<u64>,
        index: Vec<Vec<(u64, IndexEntry)>>,
        next_offsets: Vec<u64>,
        consumer_offsets: Vec<Option<u64>>,
    }

    fn view(store: &QueueStore, group: GroupId) -> GroupView {
        let queues = 0..4u32;
        GroupView {
            applied: store.applied_index(group),
            index: queues.clone().map(|q| store.index_range(group, q, 0, usize::MAX).unwrap()).collect(),
            next_offsets: queues.clone().map(|q| store.next_offset(group, q).unwrap()).collect(),
            consumer_offsets: queues
                .flat_map(|q| ["cg-a", "cg-b", "cg-c"].map(|cg| store.consumer_offset(group, cg, q).unwrap()))
                .collect(),
        }
    }

    /// Group `group` with 3 queues of 1,000 messages and three consumer groups.
    fn fill(store: &QueueStore, group: GroupId) {
        let mut log_index = 0;
        for queue in 0..3 {
            for cg in ["cg-a", "cg-b", "cg-c"] {
                log_index += 1;
                let from = store.next_offset(group, queue).unwrap();
                store.apply(group, &send(log_index, queue, from, 1000 / 3 + 1, cg, from)).unwrap();
            }
        }
    }

    fn records(export: GroupExport<'_>) -> Vec<GroupRecord> {
        export.flat_map(|page| page.unwrap().records).collect()
    }

    #[test]
    fn export_then_import_into_another_store_reads_the_same() {
        let (dir_a, dir_b) = (TempDir::new().unwrap(), TempDir::new().unwrap());
        let ((a, _), (b, _)) = (open(dir_a.path()), open(dir_b.path()));
        for g in [41, 42, 43] {
            fill(&a, g);
        }
        // B holds an older, different state of group 42 (a queue A never had) and group 41.
        b.apply(42, &send(1, 3, 0, 50, "cg-a", 7)).unwrap();
        fill(&b, 41);
        let b41 = view(&b, 41);

        let export = a.export_group(42, 4096).unwrap();
        // Applied after the export began: not in it, the export reads a snapshot.
        a.apply(42, &send(100, 0, 1002, 1, "cg-a", 5)).unwrap();
        let pages: Vec<ExportPage> = export.map(|p| p.unwrap()).collect();
        assert!(pages.len() > 10, "{} pages", pages.len());
        assert!(pages.iter().all(|p| p.bytes() <= 4096 && !p.records.is_empty()));
        let exported: Vec<GroupRecord> = pages.iter().flat_map(|p| p.records.clone()).collect();
        assert_eq!(exported.len(), 1 + 3 + 9 + 3 * (1000 / 3 + 1) * 3, "applied, next offsets, consumer offsets, index entries");

        b.import_group(42, pages).unwrap();
        let mut want = view(&a, 42);
        // The apply after the export began is the only difference.
        want.applied = Some(9);
        want.index[0].pop();
        want.next_offsets[0] = 1002;
        want.consumer_offsets[0] = Some(0);
        assert_eq!(view(&b, 42), want);
        assert_eq!(b.index_range(42, 3, 0, 100).unwrap(), vec![], "B's older data of group 42 is gone");
        assert_eq!(view(&b, 41), b41, "other groups are untouched");
        assert_eq!(records(b.export_group(42, 1 << 20).unwrap()), exported);

        // The imported group takes applies from the export's applied index on.
        b.apply(42, &send(10, 0, 1002, 1, "cg-a", 1)).unwrap();
        assert_eq!(b.applied_index(42), Some(10));
    }

    #[test]
    fn a_group_with_no_state_or_mid_import_is_not_exported() {
        let dir = TempDir::new().unwrap();
        let (store, _) = open(dir.path());
        assert!(matches!(store.export_group(1, 1024), Err(StoreError::UnknownGroup { group: 1 })));
        store.apply(1, &ApplyBatch::new(1)).unwrap();
        let _import = store.begin_import(1).unwrap();
        assert!(matches!(store.export_group(1, 1024), Err(StoreError::Importing { group: 1 })));
    }

    #[test]
    fn an_import_refuses_bad_input_and_leaves_the_group_marked() {
        let dir = TempDir::new().unwrap();
        let (store, _) = open(dir.path());
        fill(&store, 1);
        let pages: Vec<ExportPage> = store.export_group(1, 1 << 20).unwrap().map(|p| p.unwrap()).collect();
        let good = pages[0].records[1].clone();
        let bad_pages = [
            (GroupRecord { key: vec![0x0E], value: good.value.clone() }, "unknown kind"),
            (GroupRecord { key: good.key.clone(), value: good.value[..4].to_vec() }, "bytes"),
            (GroupRecord { key: Item::Importing.key(0)[keys::GROUP_LEN..].to_vec(), value: value::encode_marker() }, "import marker"),
        ];
        for (bad, reason) in bad_pages {
            let mut import = store.begin_import(2).unwrap();
            let err = import.write_page(&ExportPage { records: vec![good.clone(), bad] }).unwrap_err();
            assert!(matches!(&err, StoreError::InvalidImport { group: 2, reason: r } if r.contains(reason)), "{err}");
        }
        let mut import = store.begin_import(2).unwrap();
        let big = ExportPage { records: vec![GroupRecord { key: good.key.clone(), value: vec![0; EXPORT_PAGE_BYTES_MAX] }] };
        assert!(matches!(import.write_page(&big), Err(StoreError::InvalidImport { .. })));
        import.write_page(&ExportPage { records: vec![good.clone()] }).unwrap();
        assert!(matches!(import.finish(), Err(StoreError::InvalidImport { .. })), "no applied index");
        // Nothing of the bad pages was written; the group is marked and takes no applies.
        assert_eq!(store.applied_index(2), None);
        assert!(matches!(store.apply(2, &ApplyBatch::new(1)), Err(StoreError::Importing { group: 2 })));
        // A twice-given applied index is refused too.
        let mut import = store.begin_import(2).unwrap();
        import.write_page(&pages[0]).unwrap();
        assert!(matches!(import.write_page(&pages[0]), Err(StoreError::InvalidImport { .. })));
        // Deleting the group ends the import.
        store.delete_group(2).unwrap();
        store.apply(2, &ApplyBatch::new(1)).unwrap();
        assert_eq!(store.applied_index(1), Some(9), "the exported group is untouched");
    }

    #[test]
    fn an_import_cut_off_by_a_crash_is_deleted_on_open() {
        let dir = TempDir::new().unwrap();
        let (store, _) = open(dir.path());
        fill(&store, 5);
        fill(&store, 6);
        store.flush().unwrap();
        let pages: Vec<ExportPage> = store.export_group(6, 4096).unwrap().map(|p| p.unwrap()).collect();
        let mut import = store.begin_import(5).unwrap();
        import.write_page(&pages[0]).unwrap();
        import.write_page(&pages[1]).unwrap();

        // Crash before any flush: group 5 is as it was flushed.
        let (crashed, report) = open(crash_image(dir.path()).path());
        assert!(report.interrupted_imports.is_empty());
        assert_eq!(crashed.applied_index(5), Some(9));
        assert_eq!(crashed.index_range(5, 0, 0, usize::MAX).unwrap().len(), 334 * 3);
        drop(crashed);

        // A flush mid-import (RocksDB flushes on its own when a memtable fills), then a crash.
        store.flush().unwrap();
        assert_eq!(store.durable_applied_index(5), None);
        let (crashed, report) = open(crash_image(dir.path()).path());
        let OpenReport { groups, interrupted_imports } = report;
        assert_eq!((groups, interrupted_imports), (1, vec![5]));
        assert_eq!(crashed.groups(), vec![6]);
        assert_eq!(crashed.index_range(5, 0, 0, usize::MAX).unwrap(), vec![]);
        assert_eq!(crashed.next_offset(5, 0).unwrap(), 0);
        crashed.apply(5, &ApplyBatch::new(1)).unwrap();

        // Finished and flushed: the import survives a crash whole.
        for page in &pages[2..] {
            import.write_page(page).unwrap();
        }
        import.finish().unwrap();
        store.flush().unwrap();
        assert_eq!(store.durable_applied_index(5), Some(9));
        let (crashed, report) = open(crash_image(dir.path()).path());
        assert!(report.interrupted_imports.is_empty());
        assert_eq!(crashed.index_range(5, 0, 0, usize::MAX).unwrap(), store.index_range(6, 0, 0, usize::MAX).unwrap());
        assert_eq!(crashed.index_range(5, 0, 0, 1).unwrap(), vec![(0, entry(1, 0))]);
    }
}
