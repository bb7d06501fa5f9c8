//! `raftmq log verify|dump` and `raftmq bench log`, run as the built binary against real log
//! directories written by `raft_log::LogEngine` and then damaged byte by byte.

use std::ffi::OsStr;
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use raft_log::record::{HEADER_LEN, record_len};
use raft_log::segment::SEGMENT_HEADER_LEN;
use raft_log::{LogEngine, LogOptions};
use serde_json::Value;

const SEGMENT_BYTES: u64 = 64 * 1024;
const GROUPS: [u64; 3] = [1, 2, 3];
const ENTRIES: u64 = 300;
const PAYLOAD_LEN: usize = 200;
/// Group 1 saves this committed index once its entry is written.
const COMMITTED: u64 = 50;
/// Rounds of appends (one entry per group) between syncs, so that later records carry a durable
/// offset past earlier ones: that is how recovery tells damage from a torn tail.
const SYNC_EVERY: u64 = 10;
/// Byte 40 of a record header: how far its segment was durable when it was written.
const DURABLE_OFFSET_AT: u64 = 40;

fn raftmq<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Command::new(env!("CARGO_BIN_EXE_raftmq")).args(args).env("RUST_LOG", "warn").output().expect("run raftmq")
}

fn describe(out: &Output) -> String {
    format!("status {:?}\nstdout:\n{}\nstderr:\n{}", out.status, String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn assert_exit(out: &Output, code: i32) {
    assert_eq!(out.status.code(), Some(code), "{}", describe(out));
}

fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("stdout is not one JSON object ({e}): {}", describe(out)))
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A log of `GROUPS` groups with `ENTRIES` entries each over several 64 KiB segments, written
/// round-robin across groups and synced every `SYNC_EVERY` rounds, then closed.
struct TestLog {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
}

fn payload(group: u64, index: u64) -> Vec<u8> {
    // Never zero, so that zeroing part of a record always changes it.
    vec![0x80 | ((group * 31 + index) % 128) as u8; PAYLOAD_LEN]
}

fn good_log() -> TestLog {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("log");
    let (engine, _) = LogEngine::open(&dir, LogOptions { segment_bytes: SEGMENT_BYTES, ..LogOptions::default() }).expect("open log");
    let logs: Vec<_> = GROUPS.iter().map(|g| engine.group(*g)).collect();
    for index in 1..=ENTRIES {
        for log in &logs {
            let p = payload(log.id(), index);
            log.append([(1, index, p.as_slice())], Box::new(|_| {})).expect("append");
        }
        if index == COMMITTED {
            logs[0].save_committed(COMMITTED, b"committed").expect("save committed");
        }
        if index % SYNC_EVERY == 0 {
            engine.sync().expect("sync");
        }
    }
    engine.sync().expect("sync");
    drop(logs);
    drop(engine);
    TestLog { _tmp: tmp, dir }
}

fn segment_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("dir entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".seg"))
        .collect();
    names.sort();
    names
}

/// `raftmq log dump --json DIR EXTRA...`: its output and one parsed object per line.
fn dump(dir: &Path, extra: &[&str]) -> (Output, Vec<Value>) {
    let mut args: Vec<&OsStr> = vec!["log".as_ref(), "dump".as_ref(), "--json".as_ref(), dir.as_os_str()];
    args.extend(extra.iter().map(OsStr::new));
    let out = raftmq(args);
    let lines = stdout(&out).lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}"))).collect();
    (out, lines)
}

/// One record as `dump` reported it.
#[derive(Debug, Clone)]
struct Rec {
    file: String,
    offset: u64,
    size: u64,
}

fn rec(v: &Value) -> Rec {
    Rec {
        file: v["file"].as_str().expect("file").to_string(),
        offset: v["offset"].as_u64().expect("offset"),
        size: v["size"].as_u64().expect("size"),
    }
}

fn records_in(dir: &Path, file: &str) -> Vec<Rec> {
    let (out, lines) = dump(dir, &[]);
    assert_exit(&out, 0);
    lines.iter().map(rec).filter(|r| r.file == file).collect()
}

fn xor_byte(path: &Path, offset: u64, mask: u8) {
    let f = OpenOptions::new().read(true).write(true).open(path).expect("open segment");
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, offset).expect("read byte");
    f.write_all_at(&[b[0] ^ mask], offset).expect("write byte");
}

fn read_u64(path: &Path, offset: u64) -> u64 {
    let f = OpenOptions::new().read(true).open(path).expect("open segment");
    let mut b = [0u8; 8];
    f.read_exact_at(&mut b, offset).expect("read u64");
    u64::from_le_bytes(b)
}

fn verify_json(dir: &Path) -> (Output, Value) {
    let out = raftmq([OsStr::new("log"), OsStr::new("verify"), OsStr::new("--json"), dir.as_os_str()]);
    let v = json_of(&out);
    (out, v)
}

fn verify_text(dir: &Path) -> Output {
    raftmq([OsStr::new("log"), OsStr::new("verify"), dir.as_os_str()])
}

fn group_summary(report: &Value, group: u64) -> &Value {
    report["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .find(|g| g["group"] == group)
        .unwrap_or_else(|| panic!("group {group} missing: {report}"))
}

#[test]
fn verify_summarises_a_good_log() {
    let log = good_log();
    let (out, v) = verify_json(&log.dir);
    assert_exit(&out, 0);
    assert_eq!(v["status"], "ok");
    assert_eq!(v["records"], GROUPS.len() as u64 * ENTRIES + 1, "every entry and the committed record");
    assert_eq!(v["groups"].as_array().expect("groups").len(), GROUPS.len());
    for g in GROUPS {
        let s = group_summary(&v, g);
        assert_eq!((s["first_index"].as_u64(), s["last_index"].as_u64()), (Some(1), Some(ENTRIES)), "group {g}");
        assert_eq!(s["committed_index"].as_u64(), (g == 1).then_some(COMMITTED), "group {g}");
        assert!(s["purged_index"].is_null());
    }
    assert_eq!((v["first_index"].as_u64(), v["last_index"].as_u64()), (Some(1), Some(ENTRIES)));
    assert!(v["torn_tail"].is_null());
    let segments = v["segments"].as_array().expect("segments");
    assert_eq!(segments.len(), segment_files(&log.dir).len());
    assert!(segments.len() >= 3, "the log spans several segments: {v}");
    let seg_records: u64 = segments.iter().map(|s| s["records"].as_u64().expect("records")).sum();
    assert_eq!(v["records"].as_u64(), Some(seg_records));
    let entry_bytes = GROUPS.len() as u64 * ENTRIES * record_len(PAYLOAD_LEN);
    let committed_bytes = record_len(b"committed".len());
    assert_eq!(v["bytes"].as_u64(), Some(entry_bytes + committed_bytes + segments.len() as u64 * SEGMENT_HEADER_LEN));

    let out = verify_text(&log.dir);
    assert_exit(&out, 0);
    let text = stdout(&out);
    assert!(text.contains(": ok\n"), "{text}");
    assert!(text.contains("group 1  first 1  last 300  purged -  committed 50"), "{text}");
    assert!(text.contains("index: first 1, last 300"), "{text}");
    assert!(!text.contains("recoverable"), "{text}");
}

/// Checks that `verify` refuses the log with exit 1, naming `file` and `offset`, in JSON and text.
fn assert_corrupt_at(dir: &Path, file: &str, offset: u64) {
    let (out, v) = verify_json(dir);
    assert_exit(&out, 1);
    assert_eq!(v["kind"], "corrupt", "{v}");
    assert_eq!(v["offset"].as_u64(), Some(offset), "{v}");
    assert_eq!(v["file"].as_str(), Some(dir.join(file).to_str().expect("utf-8 path")), "{v}");
    let out = verify_text(dir);
    assert_exit(&out, 1);
    let err = stderr(&out);
    assert!(err.contains(file) && err.contains(&format!("at byte {offset}:")), "{err}");
    assert!(stdout(&out).is_empty(), "{}", describe(&out));
}

#[test]
fn verify_names_the_file_and_offset_of_a_flipped_byte_in_a_sealed_segment() {
    let log = good_log();
    let file = &segment_files(&log.dir)[0];
    let recs = records_in(&log.dir, file);
    let target = recs[recs.len() / 2].clone();
    xor_byte(&log.dir.join(file), target.offset + HEADER_LEN as u64 + 17, 0x04);
    assert_corrupt_at(&log.dir, file, target.offset);
}

#[test]
fn verify_names_the_file_and_offset_of_a_flipped_byte_in_the_last_segment() {
    let log = good_log();
    let files = segment_files(&log.dir);
    let file = files.last().expect("a segment");
    let recs = records_in(&log.dir, file);
    let target = recs[recs.len() / 3].clone();
    let tail = recs.last().expect("records in the last segment");
    let path = log.dir.join(file);
    // Without this the damage would be indistinguishable from a torn tail.
    let durable = read_u64(&path, tail.offset + DURABLE_OFFSET_AT);
    assert!(
        durable > target.offset + record_len(PAYLOAD_LEN),
        "the last record ({tail:?}, durable {durable}) was written after {target:?} was durable"
    );
    xor_byte(&path, target.offset + HEADER_LEN as u64 + 3, 0x80);
    assert_corrupt_at(&log.dir, file, target.offset);
}

/// Damages the last record of the log with `damage(path, record offset)` and checks that
/// `verify` reports a recoverable torn tail there, changing nothing on disk.
fn assert_torn_tail_after(damage: impl Fn(&Path, u64)) {
    let log = good_log();
    let (_, lines) = dump(&log.dir, &[]);
    let last = lines.last().expect("records");
    assert_eq!((last["kind"].as_str(), last["group"].as_u64(), last["index"].as_u64()), (Some("entry"), Some(3), Some(ENTRIES)));
    let last = rec(last);
    let path = log.dir.join(&last.file);
    damage(&path, last.offset);
    let damaged = std::fs::read(&path).expect("read segment");

    let (out, v) = verify_json(&log.dir);
    assert_exit(&out, 0);
    assert_eq!(v["status"], "recoverable");
    assert_eq!(v["torn_tail"]["offset"].as_u64(), Some(last.offset), "{v}");
    assert_eq!(v["torn_tail"]["file"].as_str(), path.to_str());
    assert_eq!(v["records"], GROUPS.len() as u64 * ENTRIES, "the torn record is not counted");
    assert_eq!(group_summary(&v, 3)["last_index"].as_u64(), Some(ENTRIES - 1));
    assert_eq!(group_summary(&v, 2)["last_index"].as_u64(), Some(ENTRIES));

    let out = verify_text(&log.dir);
    assert_exit(&out, 0);
    let want = format!("recoverable: torn tail at {} offset {} (cut on next open)", path.display(), last.offset);
    assert!(stdout(&out).contains(&want), "{}", describe(&out));
    assert!(std::fs::read(&path).expect("read segment") == damaged, "verify must not change the log");
}

#[test]
fn verify_reports_a_zeroed_tail_as_recoverable() {
    assert_torn_tail_after(|path, offset| {
        let cut = offset + HEADER_LEN as u64 + PAYLOAD_LEN as u64 / 2;
        let f = OpenOptions::new().write(true).open(path).expect("open segment");
        let len = f.metadata().expect("metadata").len();
        f.write_all_at(&vec![0u8; (len - cut) as usize], cut).expect("zero the tail");
    });
}

#[test]
fn verify_reports_a_garbled_last_record_as_recoverable() {
    assert_torn_tail_after(|path, offset| {
        let f = OpenOptions::new().write(true).open(path).expect("open segment");
        f.write_all_at(&[0x3c; 16], offset + HEADER_LEN as u64 + 64).expect("garble");
    });
}

#[test]
fn dump_lists_every_record_and_filters_by_index() {
    let log = good_log();
    let (out, lines) = dump(&log.dir, &[]);
    assert_exit(&out, 0);
    assert_eq!(lines.len() as u64, GROUPS.len() as u64 * ENTRIES + 1);
    assert!(lines.iter().all(|l| l["status"] == "ok"), "all ok");
    assert_eq!(lines.iter().filter(|l| l["kind"] == "entry").count() as u64, GROUPS.len() as u64 * ENTRIES);
    let committed: Vec<_> = lines.iter().filter(|l| l["kind"] == "committed").collect();
    assert_eq!(committed.len(), 1);
    assert_eq!((committed[0]["group"].as_u64(), committed[0]["index"].as_u64()), (Some(1), Some(COMMITTED)));
    // Records follow each other without gaps, from the end of each segment header.
    for pair in lines.windows(2) {
        let (a, b) = (rec(&pair[0]), rec(&pair[1]));
        if a.file == b.file {
            assert_eq!(b.offset, a.offset + record_len(a.size as usize), "{a:?} then {b:?}");
        } else {
            assert_eq!(b.offset, SEGMENT_HEADER_LEN, "{b:?}");
        }
    }

    let (out, lines) = dump(&log.dir, &["--from", "10", "--to", "20"]);
    assert_exit(&out, 0);
    assert_eq!(lines.len(), GROUPS.len() * 11);
    for l in &lines {
        assert_eq!(l["kind"], "entry");
        assert!((10..=20).contains(&l["index"].as_u64().expect("index")), "{l}");
    }
    for g in GROUPS {
        assert_eq!(lines.iter().filter(|l| l["group"] == g).count(), 11, "group {g}");
    }

    let out = raftmq([OsStr::new("log"), OsStr::new("dump"), log.dir.as_os_str(), OsStr::new("--to"), OsStr::new("1")]);
    assert_exit(&out, 0);
    let text = stdout(&out);
    let want = format!("file: {} offset: 32 kind: entry group: 1 index: 1 term: 1 size: 200 status: ok", segment_files(&log.dir)[0]);
    assert_eq!(text.lines().next(), Some(want.as_str()), "{text}");
    assert_eq!(text.lines().count(), GROUPS.len());
}

#[test]
fn dump_shows_the_bad_record_and_exits_1() {
    let log = good_log();
    let file = segment_files(&log.dir)[1].clone();
    let recs = records_in(&log.dir, &file);
    let target = recs[recs.len() / 2].clone();
    xor_byte(&log.dir.join(&file), target.offset + HEADER_LEN as u64 + 100, 0x01);

    let (out, lines) = dump(&log.dir, &[]);
    assert_exit(&out, 1);
    let bad: Vec<_> = lines.iter().filter(|l| l["status"] != "ok").collect();
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert_eq!((bad[0]["file"].as_str(), bad[0]["offset"].as_u64()), (Some(file.as_str()), Some(target.offset)));
    assert!(bad[0]["status"].as_str().expect("status").starts_with("checksum mismatch"), "{}", bad[0]);
    assert_eq!(bad[0]["size"].as_u64(), Some(record_len(PAYLOAD_LEN)), "exactly the one record is unreadable");
    assert_eq!(lines.len() as u64, GROUPS.len() as u64 * ENTRIES + 1, "dump resumes after the bad record");

    // A bad stretch is shown even when the range filters out every entry.
    let (out, lines) = dump(&log.dir, &["--from", "1000"]);
    assert_exit(&out, 1);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["offset"].as_u64(), Some(target.offset));

    let out = raftmq([OsStr::new("log"), OsStr::new("dump"), log.dir.as_os_str()]);
    assert_exit(&out, 1);
    let text = stdout(&out);
    let want = format!("file: {file} offset: {} kind: - group: - index: - term: - size: 248 status: checksum mismatch", target.offset);
    assert!(text.lines().any(|l| l.starts_with(&want)), "{text}");
}

#[test]
fn missing_directory_and_bad_arguments_exit_2() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let missing = tmp.path().join("missing");
    let (out, v) = verify_json(&missing);
    assert_exit(&out, 2);
    assert_eq!(v["kind"], "io", "{v}");
    assert_exit(&raftmq([OsStr::new("log"), OsStr::new("dump"), missing.as_os_str()]), 2);
    assert_exit(
        &raftmq([
            OsStr::new("log"),
            OsStr::new("dump"),
            tmp.path().as_os_str(),
            OsStr::new("--from"),
            OsStr::new("5"),
            OsStr::new("--to"),
            OsStr::new("4"),
        ]),
        2,
    );
    assert_exit(&raftmq(["bench", "log", "--matrix", "--size", "100"]), 2);
    assert_exit(&raftmq(["bench", "log", "--appenders", "0"]), 2);
}

fn bench(dir: &Path, extra: &[&str]) -> Value {
    let mut args: Vec<&OsStr> = ["bench", "log", "--json", "--probe-seconds", "0.2", "--dir"].iter().map(OsStr::new).collect();
    args.push(dir.as_os_str());
    args.extend(extra.iter().map(OsStr::new));
    let out = raftmq(args);
    assert_exit(&out, 0);
    let v = json_of(&out);
    assert_eq!(std::fs::read_dir(dir).expect("read_dir").count(), 0, "the benchmark removes its directory: {v}");
    v
}

#[test]
fn bench_log_appends_exactly_the_record_bound() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let v = bench(tmp.path(), &["--records", "200", "--appenders", "4", "--groups", "8"]);
    let e = &v["engine"];
    assert_eq!(e["records"], 200, "{v}");
    assert_eq!((e["appenders"].as_u64(), e["groups"].as_u64()), (Some(4), Some(8)));
    let rounds = e["sync_rounds"].as_u64().expect("sync_rounds");
    assert!((1..=200).contains(&rounds), "{v}");
    assert!(e["latency"]["p99_us"].as_f64() >= e["latency"]["p50_us"].as_f64() && e["latency"]["p50_us"].as_f64() > Some(0.0), "{v}");
    for mode in ["append", "overwrite"] {
        assert!(v["raw_sync"][mode]["ops"].as_u64() > Some(0), "{v}");
    }
    assert!(e["ratios"]["rate_vs_raw_append"].as_f64().is_some_and(|r| r.is_finite() && r > 0.0), "{v}");
}

#[test]
fn bench_log_stops_at_the_time_bound() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let v = bench(tmp.path(), &["--records", "100000000", "--seconds", "0.3", "--size", "64", "--appenders", "2"]);
    let records = v["engine"]["records"].as_u64().expect("records");
    assert!(records > 0 && records < 100_000_000, "{v}");
    assert!(v["engine"]["seconds"].as_f64().is_some_and(|s| (0.3..10.0).contains(&s)), "{v}");
}
