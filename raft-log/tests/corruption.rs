//! Damage on disk: what opening the log (and `verify_dir`) does with a flipped byte, a torn
//! tail, a cut file, a damaged sealed segment and a missing segment.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use raft_log::verify::{DumpLine, dump_dir, verify_dir};
use raft_log::{LogEngine, LogError, LogOptions};

const SEGMENT: u64 = 8 * 1024;

fn options() -> LogOptions {
    LogOptions { segment_bytes: SEGMENT, ..LogOptions::default() }
}

fn payload(index: u64) -> Vec<u8> {
    (0..100 + index % 50).map(|i| (index * 131 + i) as u8).collect()
}

/// Writes `count` entries to group 1, syncing after each, so every record is known durable by
/// the records after it.
fn write_log(dir: &Path, count: u64) {
    let (engine, _) = LogEngine::open(dir, options()).expect("open");
    let log = engine.group(1);
    for i in 1..=count {
        log.append([(1, i, payload(i).as_slice())], Box::new(|_| {})).expect("append");
        engine.sync().expect("sync");
    }
}

fn records(dir: &Path) -> Vec<DumpLine> {
    let mut lines = Vec::new();
    dump_dir(dir, None, None, |l| {
        lines.push(l.clone());
        Ok(())
    })
    .expect("dump");
    lines
}

/// A log of entries 1..=`count`: the dump line of its last entry, and the file that holds it.
fn log_ending_at(dir: &Path, count: u64) -> (DumpLine, std::path::PathBuf) {
    write_log(dir, count);
    let last = entry(dir, count);
    let path = dir.join(&last.file);
    (last, path)
}

fn entry(dir: &Path, index: u64) -> DumpLine {
    records(dir).into_iter().find(|l| l.index == Some(index) && l.kind.is_some()).expect("entry record")
}

fn poke(path: &Path, offset: u64, bytes: &[u8]) {
    let f = OpenOptions::new().write(true).open(path).expect("open segment");
    f.write_all_at(bytes, offset).expect("write");
    f.sync_all().expect("sync");
}

fn peek(path: &Path, offset: u64) -> u8 {
    let f = OpenOptions::new().read(true).open(path).expect("open segment");
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, offset).expect("read");
    b[0]
}

fn expect_corrupt(result: Result<impl std::fmt::Debug, LogError>, file: &Path, offset: u64) {
    match result {
        Err(LogError::Corrupt { file: f, offset: o, .. }) => assert_eq!((f.as_path(), o), (file, offset), "names the file and offset"),
        other => panic!("expected corruption at {} offset {offset}, got {other:?}", file.display()),
    }
}

fn read_all(dir: &Path) -> Vec<(u64, Vec<u8>)> {
    let (engine, _) = LogEngine::open(dir, options()).expect("open");
    engine.group(1).read(0, u64::MAX).expect("read").into_iter().map(|e| (e.index, e.payload)).collect()
}

#[test]
fn flipped_byte_in_a_middle_record_refuses_to_open_naming_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 30);
    let victim = entry(dir.path(), 5);
    let path: PathBuf = dir.path().join(&victim.file);
    let at = victim.offset + 48 + 10; // a payload byte
    poke(&path, at, &[peek(&path, at) ^ 0x01]);

    expect_corrupt(verify_dir(dir.path()), &path, victim.offset);
    expect_corrupt(LogEngine::open(dir.path(), options()).map(|_| ()), &path, victim.offset);
}

#[test]
fn flipped_byte_in_the_last_record_of_a_sealed_segment_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 200);
    let lines = records(dir.path());
    let first_file = &lines[0].file;
    let last_in_first = lines.iter().rfind(|l| &l.file == first_file).unwrap();
    assert!(lines.iter().any(|l| &l.file != first_file), "the log must span segments");
    let path = dir.path().join(first_file);
    poke(&path, last_in_first.offset + 20, &[peek(&path, last_in_first.offset + 20) ^ 0x80]);
    expect_corrupt(LogEngine::open(dir.path(), options()).map(|_| ()), &path, last_in_first.offset);
}

#[test]
fn torn_last_record_is_cut_and_nothing_before_it_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let (last, path) = log_ending_at(dir.path(), 30);
    // The record's second half never reached the disk: its bytes read as zeros.
    poke(&path, last.offset + 48 + last.size / 2, &vec![0u8; (last.size / 2 + 8) as usize]);

    let report = verify_dir(dir.path()).expect("a torn tail is recoverable");
    let torn = report.torn_tail.expect("reported");
    assert_eq!((torn.file, torn.offset), (path.clone(), last.offset));
    let mut torn_lines = Vec::new();
    let bad = dump_dir(dir.path(), None, None, |l| {
        if l.status.starts_with("torn tail") {
            torn_lines.push(l.offset);
        }
        Ok(())
    })
    .unwrap();
    assert_eq!((bad, torn_lines), (0, vec![last.offset]), "dump reports the torn tail, not damage");

    let (engine, recovery) = LogEngine::open(dir.path(), options()).expect("opens");
    assert_eq!(recovery.torn_tail, Some((path.clone(), last.offset)));
    let log = engine.group(1);
    let entries = log.read(0, u64::MAX).unwrap();
    assert_eq!(entries.len(), 29);
    for e in &entries {
        assert_eq!(e.payload, payload(e.index), "entry {} intact", e.index);
    }
    // The log goes on from there, and the cut is durable: no torn tail on the next open.
    log.append([(2, 30, b"again".as_slice())], Box::new(|_| {})).unwrap();
    engine.sync().unwrap();
    drop((log, engine));
    assert!(verify_dir(dir.path()).unwrap().torn_tail.is_none());
    let back = read_all(dir.path());
    assert_eq!(back.len(), 30);
    assert_eq!(back[29], (30, b"again".to_vec()));
}

#[test]
fn file_cut_inside_the_last_record_is_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let (last, path) = log_ending_at(dir.path(), 10);
    OpenOptions::new().write(true).open(&path).unwrap().set_len(last.offset + 30).unwrap();

    let report = verify_dir(dir.path()).expect("recoverable");
    assert_eq!(report.torn_tail.map(|t| t.offset), Some(last.offset));
    let back = read_all(dir.path());
    assert_eq!(back.iter().map(|(i, _)| *i).collect::<Vec<_>>(), (1..=9).collect::<Vec<_>>());
}

#[test]
fn garbage_after_the_durable_point_is_a_torn_tail_but_zeros_inside_it_are_corruption() {
    // Records 1..5 synced one by one; 6..8 written together and synced once. A write lost from
    // inside the last batch (record 6 zeroed, 7 and 8 present) is what a power cut with
    // out-of-order writeback leaves: cut at 6. The same loss at record 3, which records after
    // it prove was durable, is corruption.
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 5);
    {
        let (engine, _) = LogEngine::open(dir.path(), options()).unwrap();
        let batch: Vec<(u64, u64, Vec<u8>)> = (6..=8).map(|i| (1, i, payload(i))).collect();
        engine.group(1).append(batch.iter().map(|(t, i, p)| (*t, *i, p.as_slice())), Box::new(|_| {})).unwrap();
        engine.sync().unwrap();
    }
    let sixth = entry(dir.path(), 6);
    let path = dir.path().join(&sixth.file);
    let copy = tempfile::tempdir().unwrap();
    copy_dir(dir.path(), copy.path());

    poke(&path, sixth.offset, &[0u8; 48]);
    let report = verify_dir(dir.path()).expect("torn tail");
    assert_eq!(report.torn_tail.map(|t| t.offset), Some(sixth.offset));
    assert_eq!(read_all(dir.path()).len(), 5);

    let third = entry(copy.path(), 3);
    let copy_path = copy.path().join(&third.file);
    poke(&copy_path, third.offset, &[0u8; 48]);
    expect_corrupt(verify_dir(copy.path()), &copy_path, third.offset);
}

#[test]
fn missing_segment_between_others_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 200);
    let mut files: Vec<String> = records(dir.path()).into_iter().map(|l| l.file).collect();
    files.dedup();
    assert!(files.len() >= 3, "need three segments, have {}", files.len());
    let missing = dir.path().join(&files[1]);
    std::fs::remove_file(&missing).unwrap();
    expect_corrupt(LogEngine::open(dir.path(), options()).map(|_| ()), &missing, 0);
}

#[test]
fn bad_segment_header_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 3);
    let path = dir.path().join(&entry(dir.path(), 1).file);
    poke(&path, 2, b"X");
    expect_corrupt(LogEngine::open(dir.path(), options()).map(|_| ()), &path, 0);
}

fn copy_dir(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn segment_installed_at_a_crash_but_never_used_is_removed_on_open() {
    for header in [Vec::new(), vec![0u8; 32 + 4096]] {
        let dir = tempfile::tempdir().unwrap();
        write_log(dir.path(), 3);
        let mut files: Vec<String> = records(dir.path()).into_iter().map(|l| l.file).collect();
        files.dedup();
        let last: u64 = files.last().unwrap().trim_end_matches(".seg").parse().unwrap();
        let unused = dir.path().join(format!("{:020}.seg", last + 1));
        std::fs::write(&unused, &header).unwrap();

        let report = verify_dir(dir.path()).expect("verify accepts it");
        let lines = records(dir.path());
        assert!(lines.last().unwrap().status.starts_with("segment never used"), "{:?}", lines.last());
        assert_eq!(report.records, lines.iter().filter(|l| l.kind.is_some()).count() as u64);
        assert_eq!(read_all(dir.path()).len(), 3);
        assert!(!unused.exists(), "open removes the unused segment file");
    }
}
