//! `raftmq jepsen run` end to end: a short campaign on three real broker processes with kill,
//! kill-leader, pause and coordinated power-loss faults must find no anomaly, and must have done
//! real work (sends acknowledged, faults injected, every queue read back on every replica); and
//! the same harness must catch a broker that acknowledges before fdatasync.

use std::process::Command;

#[test]
fn a_short_campaign_with_kills_pauses_and_power_loss_finds_no_anomaly() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let output = Command::new(env!("CARGO_BIN_EXE_raftmq"))
        .args([
            "jepsen",
            "run",
            "--brokers",
            "3",
            "--time",
            "30s",
            "--nemesis",
            "kill,kill-leader,pause,power-loss",
            "--rate",
            "100",
            "--seed",
            "7",
        ])
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
    assert!(sends_ok >= 500, "only {sends_ok} sends acknowledged: {stdout}");
    assert!(results["check"]["polls"]["ok"].as_u64().unwrap() > 0, "{stdout}");
    assert!(!results["faults"].as_array().unwrap().is_empty(), "no fault was injected: {stdout}");
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
