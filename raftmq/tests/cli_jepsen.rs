//! `raftmq jepsen check DIR` on stored runs: a clean one passes, one with a lost write fails with
//! exit code 1 and names it, one missing a replica's final read is invalid (exit code 3), and
//! all leave `results.json`; `raftmq jepsen report DIR` writes the
//! page; `raftmq jepsen summary DIR...` tabulates them.

use std::path::Path;
use std::process::Command;

use jepsen::history::{QueueReplicas, write_jsonl};
use jepsen::{Event, EventKind, FaultWindow, FinalRead, Op};

fn send(index: u64, process: u64, kind: EventKind, value: &str, offset: Option<u64>) -> Event {
    let op = Op::Send { queue: 0, value: value.into(), message_group: None, offset };
    Event { index, process, time_ns: index * 1_000_000, kind, op, error: None }
}

/// Two acknowledged sends at offsets 0 and 1; the final reads of brokers 1..=3, the queue's
/// replicas, hold `held`.
fn store_run(dir: &Path, held: &[(u64, &str)]) {
    store_run_read_by(dir, held, 3);
}

/// [`store_run`], with final reads from brokers 1..=`read` only.
fn store_run_read_by(dir: &Path, held: &[(u64, &str)], read: u64) {
    let events = vec![
        send(0, 1, EventKind::Invoke, "a", None),
        send(1, 1, EventKind::Ok, "a", Some(0)),
        send(2, 1, EventKind::Invoke, "b", None),
        send(3, 1, EventKind::Ok, "b", Some(1)),
    ];
    let messages: Vec<(u64, String)> = held.iter().map(|(o, v)| (*o, v.to_string())).collect();
    let finals: Vec<FinalRead> =
        (1..=read).map(|broker| FinalRead { broker, queue: 0, start_offset: 0, end_offset: 2, messages: messages.clone() }).collect();
    let replicas = vec![QueueReplicas { queue: 0, replicas: vec![1, 2, 3], read_errors: Default::default() }];
    let faults = vec![FaultWindow { name: "kill -9 broker 2".into(), kind: None, start_ns: 0, end_ns: 1_500_000 }];
    let write = |name: &str, f: &dyn Fn(&mut Vec<u8>) -> std::io::Result<()>| {
        let mut buf = Vec::new();
        f(&mut buf).unwrap();
        std::fs::write(dir.join(name), buf).unwrap();
    };
    write("history.jsonl", &|b| write_jsonl(b, &events));
    write("final.jsonl", &|b| write_jsonl(b, &finals));
    write("replicas.jsonl", &|b| write_jsonl(b, &replicas));
    write("faults.jsonl", &|b| write_jsonl(b, &faults));
}

fn check(dir: &Path) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_raftmq")).args(["jepsen", "check"]).arg(dir).output().unwrap();
    (out.status.code(), String::from_utf8(out.stdout).unwrap())
}

fn results(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("results.json")).unwrap()).unwrap()
}

#[test]
fn a_clean_run_passes_and_a_lost_write_fails() {
    let clean = tempfile::tempdir().unwrap();
    store_run(clean.path(), &[(0, "a"), (1, "b")]);
    let (code, text) = check(clean.path());
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("valid: no anomalies"), "{text}");
    assert!(text.contains("fault \"kill -9 broker 2\": availability 1.000 of 1 ops, recovered after 0.002 s"), "{text}");
    assert_eq!(results(clean.path())["valid"], true);
    let report = Command::new(env!("CARGO_BIN_EXE_raftmq")).args(["jepsen", "report"]).arg(clean.path()).output().unwrap();
    assert_eq!(report.status.code(), Some(0), "{}", String::from_utf8_lossy(&report.stderr));
    let page = std::fs::read_to_string(clean.path().join("index.html")).unwrap();
    assert!(page.contains("Valid: no anomalies") && page.matches("<svg").count() == 2, "{page}");
    assert!(page.contains("kill -9 broker 2"), "the fault is in the schedule: {page}");

    let lost = tempfile::tempdir().unwrap();
    store_run(lost.path(), &[(0, "a")]);
    let (code, text) = check(lost.path());
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("ANOMALY LostWrite: \"b\" acknowledged at queue 0 offset 1"), "{text}");
    let r = results(lost.path());
    assert_eq!(r["valid"], false);
    assert_eq!(r["anomaly_counts"]["lost-write"], 1);
    // Every replica's read also stops below the end it reported.
    assert_eq!(r["anomaly_counts"]["replica-gap"], 3);
    assert_eq!(r["verdict"], "anomalies");
    assert_eq!(r["check"]["anomalies"][0]["events"], serde_json::json!([2, 3]));

    // Both runs summarized: a row each, the fault kind over both; not all valid, so exit 1.
    let summary = |dirs: &[&Path]| Command::new(env!("CARGO_BIN_EXE_raftmq")).args(["jepsen", "summary"]).args(dirs).output().unwrap();
    let both = summary(&[clean.path(), lost.path()]);
    let text = String::from_utf8_lossy(&both.stdout);
    assert_eq!(both.status.code(), Some(1), "{text}");
    assert!(text.contains("| 2 | 2 | 2 | 0 | 1 | 0 | 1.000 | 0.0 s |"), "the clean run's row: {text}");
    assert!(text.contains("| 2 | 2 | 2 | 0 | 1 | 4 | 1.000 | 0.0 s |"), "the lost write's row: {text}");
    assert!(text.contains("| kill or kill-leader | 2 | 1.000 |"), "{text}");
    assert_eq!(summary(&[clean.path()]).status.code(), Some(0));
}

#[test]
fn a_missing_history_is_an_error_not_a_pass() {
    let empty = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_raftmq")).args(["jepsen", "check"]).arg(empty.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("history.jsonl"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_run_missing_a_replicas_final_read_is_invalid_not_passed() {
    let dir = tempfile::tempdir().unwrap();
    store_run_read_by(dir.path(), &[(0, "a"), (1, "b")], 2);
    let (code, text) = check(dir.path());
    assert_eq!(code, Some(3), "{text}");
    assert!(text.contains("INCOMPLETE: queue 0: no final read from broker 3, one of its replicas (1, 2, 3): no read recorded"), "{text}");
    assert!(text.contains("INVALID: no anomaly in what could be checked, but the history is incomplete"), "{text}");
    let r = results(dir.path());
    assert_eq!((r["valid"].clone(), r["verdict"].clone()), (serde_json::json!(false), serde_json::json!("invalid")));
    // A run stored without its replica list cannot show that every replica was read.
    store_run(dir.path(), &[(0, "a"), (1, "b")]);
    std::fs::remove_file(dir.path().join("replicas.jsonl")).unwrap();
    let (code, text) = check(dir.path());
    assert_eq!(code, Some(3), "{text}");
    assert!(text.contains("INCOMPLETE: no queue's replicas are known"), "{text}");
    // The summary counts it as not valid and says why.
    let out = Command::new(env!("CARGO_BIN_EXE_raftmq")).args(["jepsen", "summary"]).arg(dir.path()).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("| 0 (invalid: no queue's replicas are known"), "{text}");
}
