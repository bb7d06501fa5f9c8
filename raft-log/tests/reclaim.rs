//! Reclaim: the live entries of a group that pins the oldest segment are rewritten forward so
//! the segment can be deleted. The rewritten copies must read back byte for byte, survive a
//! reopen, and never change what replay makes of the entries around them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use raft_log::{GroupLog, LogEngine, LogOptions, StoredEntry};

const KEEPER: u64 = 7;
const FILLER: u64 = 8;

/// Small segments, reclaim only when the test asks.
fn manual_options() -> LogOptions {
    LogOptions {
        segment_bytes: 1024,
        max_record_bytes: 512,
        reclaim_after_segments: 1,
        reclaim_in_background: false,
        ..LogOptions::default()
    }
}

fn payload(group: u64, index: u64, len: usize) -> Vec<u8> {
    (0..len).map(|i| (group as usize * 31 + index as usize * 7 + i) as u8).collect()
}

fn append(log: &GroupLog, from: u64, to: u64, len: usize) -> Vec<StoredEntry> {
    let entries: Vec<StoredEntry> = (from..=to).map(|i| StoredEntry { index: i, term: 1, payload: payload(log.id(), i, len) }).collect();
    log.append(entries.iter().map(|e| (e.term, e.index, e.payload.as_slice())), Box::new(|_| {})).unwrap();
    entries
}

fn segment_files(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".seg"))
        .collect();
    names.sort();
    names
}

/// A log whose segment 1 only the keeper pins: its entries 1..=3 (`first`) sit there, its
/// entries 4..=6 (`later`) in a later segment, and the filler's entries around them are purged.
struct Pinned {
    engine: LogEngine,
    keeper: GroupLog,
    filler: GroupLog,
    first: Vec<StoredEntry>,
    later: Vec<StoredEntry>,
}

fn keeper_pins_segment_one(dir: &std::path::Path) -> Pinned {
    let (engine, _) = LogEngine::open(dir, manual_options()).unwrap();
    let keeper = engine.group(KEEPER);
    let filler = engine.group(FILLER);
    let first = append(&keeper, 1, 3, 16);
    // Fill segment 1 and roll: a 1 KiB segment holds about a dozen of these.
    append(&filler, 1, 16, 24);
    let later = append(&keeper, 4, 6, 16);
    filler.purge(16, b"p16").unwrap();
    Pinned { engine, keeper, filler, first, later }
}

/// The keeper's entries 1..=3 sit in segment 1, its entries 4..=6 in a later segment; the
/// filler's entries around them are purged. Reclaim copies 1..=3 forward, after 4..=6, and
/// deletes segment 1. Replay then meets 4..=6 first and the copies of 1..=3 after them: were the
/// copies plain entries, the append of index 1 would truncate 4..=6 (Raft overwriting a
/// conflicting suffix), and the reopened log would have lost them.
#[test]
fn a_rewritten_entry_never_truncates_the_entries_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let Pinned { engine, keeper, filler, first, later } = keeper_pins_segment_one(dir.path());
    let kept = [first, later].concat();
    engine.sync().unwrap();
    assert!(segment_files(dir.path()).contains(&"00000000000000000001.seg".to_string()), "the keeper pins segment 1");
    assert!(engine.reclaim_oldest().unwrap(), "segment 1 is reclaimed");
    engine.sync().unwrap();
    assert!(!segment_files(dir.path()).contains(&"00000000000000000001.seg".to_string()), "segment 1 is deleted after the sync");
    assert_eq!(keeper.read(1, 7).unwrap(), kept, "read back before reopening");
    assert_eq!(engine.stats().entries_rewritten.load(Ordering::Relaxed), 3);
    drop((keeper, filler, engine));

    let (engine, _) = LogEngine::open(dir.path(), manual_options()).unwrap();
    let keeper = engine.group(KEEPER);
    assert_eq!(keeper.read(1, 7).unwrap(), kept, "read back after reopening");
    assert_eq!((keeper.state().first_index, keeper.state().last_index), (Some(1), Some(6)));
    assert_eq!(engine.group(FILLER).state().purged.map(|(i, _)| i), Some(16));
    drop((keeper, engine));

    // The offline tools read the new record kind as the engine does.
    let report = raft_log::verify::verify_dir(dir.path()).unwrap();
    let g = report.groups.iter().find(|g| g.group == KEEPER).unwrap();
    assert_eq!((g.first_index, g.last_index), (Some(1), Some(6)));
    let mut rewritten = Vec::new();
    let bad = raft_log::verify::dump_dir(dir.path(), None, None, |line| {
        if line.kind == Some(raft_log::record::RecordKind::Rewrite) {
            rewritten.push((line.group, line.index, line.status.clone()));
        }
        Ok(())
    })
    .unwrap();
    assert_eq!(bad, 0);
    let ok = |i| (Some(KEEPER), Some(i), "ok".to_string());
    assert_eq!(rewritten, vec![ok(1), ok(2), ok(3)]);
}

/// After a rewrite, a truncation and a purge of the keeper hold across a reopen: the copies
/// of entries that were truncated or purged since are not brought back.
#[test]
fn a_truncate_or_purge_after_a_rewrite_is_never_undone() {
    let dir = tempfile::tempdir().unwrap();
    let Pinned { engine, keeper, filler, first: kept, later } = keeper_pins_segment_one(dir.path());
    assert!(engine.reclaim_oldest().unwrap());
    keeper.purge(1, b"p1").unwrap();
    keeper.truncate_from(3).unwrap();
    engine.sync().unwrap();
    drop((keeper, filler, engine));
    let _ = later;

    let (engine, _) = LogEngine::open(dir.path(), manual_options()).unwrap();
    let keeper = engine.group(KEEPER);
    assert_eq!(keeper.read(0, u64::MAX).unwrap(), kept[1..2].to_vec(), "only entry 2 is left");
    assert_eq!(keeper.state().purged.map(|(i, _)| i), Some(1));
    assert_eq!(keeper.state().last_index, Some(2));
}

/// A group that never purges while another writes many segments' worth and purges: the log
/// stays within the reclaim bound (more than `reclaim_after_segments` segments only while the
/// reclaimer catches up), and every entry of the keeper reads back byte for byte, while
/// readers read it throughout the rewrites, and after a reopen.
#[test]
fn a_group_that_never_purges_does_not_pin_segments() {
    const SEGMENT_BYTES: u64 = 16 << 10;
    const RECLAIM_AFTER: usize = 4;
    let dir = tempfile::tempdir().unwrap();
    let options = LogOptions {
        segment_bytes: SEGMENT_BYTES,
        max_record_bytes: 4096,
        reclaim_after_segments: RECLAIM_AFTER,
        rewrite_chunk_bytes: 2048,
        ..LogOptions::default()
    };
    let (engine, _) = LogEngine::open(dir.path(), options.clone()).unwrap();
    let keeper = engine.group(KEEPER);
    let filler = engine.group(FILLER);
    let kept = append(&keeper, 1, 30, 100);

    // Readers take locations under the lock and read without it: a rewrite may move the entry
    // and its old segment may be deleted in between, and the read must still find the bytes.
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (keeper, kept, stop) = (keeper.clone(), kept.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut reads = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    assert_eq!(keeper.read(1, 31).expect("a read during reclaim"), kept);
                    reads += 1;
                }
                reads
            })
        })
        .collect();

    let mut most_segments = 0;
    for round in 0..150u64 {
        let first = round * 20 + 1;
        append(&filler, first, first + 19, 200);
        if round > 0 {
            filler.purge(first - 1, &(first - 1).to_le_bytes()).unwrap();
        }
        most_segments = most_segments.max(engine.segment_count());
    }
    engine.sync().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while engine.segment_count() > RECLAIM_AFTER {
        assert!(Instant::now() < deadline, "still {} segments after the reclaimer had 20 s", engine.segment_count());
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Ordering::Relaxed);
    let reads: u64 = readers.into_iter().map(|r| r.join().expect("reader")).sum();
    assert!(reads > 0);
    engine.sync().unwrap();

    let stats = engine.stats();
    let rewritten = stats.bytes_rewritten.load(Ordering::Relaxed);
    let new = stats.bytes_appended.load(Ordering::Relaxed) - rewritten;
    let created = stats.segments_created.load(Ordering::Relaxed);
    println!("segments created {created}, at most {most_segments} at once; {new} bytes written, {rewritten} rewritten; {reads} reads");
    assert!(created > 40, "the filler wrote many segments' worth ({created})");
    assert!(rewritten > 0, "the keeper was rewritten");
    // Live bytes L ~ 10 KiB, S = 16 KiB, N = 4: a live byte is rewritten at most once per
    // (N - 1) * S - L new bytes, so rewritten <= new * L / ((N - 1) S - L), about a quarter.
    assert!(rewritten * 2 <= new, "write amplification: {rewritten} rewritten for {new} written");
    assert!(segment_files(dir.path()).len() <= RECLAIM_AFTER, "files on disk: {:?}", segment_files(dir.path()));
    assert_eq!(keeper.read(1, 31).unwrap(), kept);
    drop((keeper, filler, engine));

    let (engine, _) = LogEngine::open(dir.path(), options).unwrap();
    assert_eq!(engine.group(KEEPER).read(1, 31).unwrap(), kept, "the keeper after reopening");
    assert_eq!(engine.group(FILLER).read(0, u64::MAX).unwrap().len(), 20);
    assert!(engine.segment_count() <= RECLAIM_AFTER);
}
