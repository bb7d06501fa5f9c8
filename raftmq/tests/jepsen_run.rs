//! `raftmq jepsen run` end to end: a 60 s campaign on three real broker processes with every
//! nemesis (kills, pauses, coordinated power loss, partitions, slow fsync, slow and lossy links)
//! must find no anomaly,
//! and must have done real work (sends acknowledged, faults injected, every queue read back on
//! every replica); and the same harness must catch a broker that acknowledges before fdatasync.
//! Partitions need root and iptables, as CI has (`scripts/install-deps`).

use std::process::Command;

#[test]
fn a_campaign_with_every_nemesis_finds_no_anomaly() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let output = Command::new(env!("CARGO_BIN_EXE_raftmq"))
        .args(["jepsen", "run", "--brokers", "3", "--time", "60s", "--rate", "100", "--seed", "7"])
        .args(["--nemesis", "kill,kill-leader,pause,power-loss,partition-halves,partition-leader,partition-bridge,partition-one-way,slow-fsync,link-delay,link-loss"])
        .arg("--out")
        .arg(&out)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("valid: no anomalies"), "{stdout}");
    let results: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    assert_eq!(results["valid"], true);
    let sends_ok = results["check"]["sends"]["ok"].as_u64().unwrap();
    // At 100/s for 60 s with faults about half the time, on a machine shared with other tests.
    assert!(sends_ok >= 300, "only {sends_ok} sends acknowledged: {stdout}");
    assert!(results["check"]["polls"]["ok"].as_u64().unwrap() > 0, "{stdout}");
    assert!(results["faults"].as_array().unwrap().len() >= 4, "too few faults injected: {stdout}");
    // Every queue was read back on each of its three replicas.
    let finals = std::fs::read_to_string(out.join("final.jsonl")).unwrap();
    assert_eq!(finals.lines().count(), 4 * 3, "{finals}");
    // The stored run checks the same again.
    let again = Command::new(env!("CARGO_BIN_EXE_raftmq")).args(["jepsen", "check"]).arg(&out).output().unwrap();
    assert_eq!(again.status.code(), Some(0), "{}", String::from_utf8_lossy(&again.stdout));
}

/// The checker must be able to fail: brokers that acknowledge before fdatasync (syncing every
/// 2 s), under coordinated power loss, lose acknowledged writes, and the run reports them.
#[test]
fn a_broker_acknowledging_before_fsync_is_caught_losing_writes() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let output = Command::new(env!("CARGO_BIN_EXE_raftmq"))
        .args(["jepsen", "run", "--brokers", "3", "--time", "20s", "--nemesis", "power-loss", "--rate", "100", "--seed", "3"])
        .args(["--unsafe-ack-before-fsync-ms", "2000"])
        .arg("--out")
        .arg(&out)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "stdout:\n{stdout}\nstderr:\n{}", String::from_utf8_lossy(&output.stderr));
    let results: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    assert_eq!(results["valid"], false);
    let lost = results["anomaly_counts"]["lost-write"].as_u64().unwrap() + results["anomaly_counts"]["unseen-at-end"].as_u64().unwrap();
    assert!(lost > 0, "acknowledged writes were lost but not reported: {stdout}");
    assert!(stdout.contains("power loss of broker 1,2,3"), "{stdout}");
}
