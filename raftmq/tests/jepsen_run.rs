//! `raftmq jepsen run` end to end: a 60 s campaign on three real broker processes with every
//! nemesis (kills, pauses, coordinated power loss with and without torn pages, store loss,
//! partitions, slow fsync, slow and lossy links, leader transfers)
//! must find no anomaly,
//! and must have done real work (sends acknowledged, faults injected, every queue read back on
//! every replica); and the same harness must catch a broker that acknowledges before fdatasync.
//! A run interrupted with Ctrl-C leaves no broker process and no firewall rule behind.
//! The network nemeses need root and iptables, as CI has (`scripts/install-deps`).

use std::path::Path;
use std::process::Command;

/// `raftmq jepsen run ARGS --out OUT`, quiet but for warnings.
fn jepsen_run(out: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_raftmq"));
    command.args(["jepsen", "run"]).args(args).arg("--out").arg(out).env("RUST_LOG", "warn");
    command
}

fn results(out: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap()
}

#[test]
fn a_campaign_with_every_nemesis_finds_no_anomaly() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let nemeses = "kill,kill-leader,pause,power-loss,torn-write,store-loss,partition-halves,partition-leader,partition-bridge,partition-one-way,slow-fsync,link-delay,link-loss,move-leader";
    let output =
        jepsen_run(&out, &["--brokers", "3", "--time", "60s", "--rate", "100", "--seed", "7", "--nemesis", nemeses]).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("valid: no anomalies"), "{stdout}");
    let results = results(&out);
    assert_eq!(results["valid"], true);
    let sends_ok = results["check"]["sends"]["ok"].as_u64().unwrap();
    // At 100/s for 60 s with faults about half the time, on a machine shared with other tests.
    assert!(sends_ok >= 300, "only {sends_ok} sends acknowledged: {stdout}");
    assert!(results["check"]["polls"]["ok"].as_u64().unwrap() > 0, "{stdout}");
    assert!(results["faults"].as_array().unwrap().len() >= 4, "too few faults injected: {stdout}");
    // Every queue was read back on each of its three replicas.
    let finals = std::fs::read_to_string(out.join("final.jsonl")).unwrap();
    assert_eq!(finals.lines().count(), 4 * 3, "{finals}");
    // ... and those were all of its replicas, as the cluster listed them.
    let replicas = std::fs::read_to_string(out.join("replicas.jsonl")).unwrap();
    assert_eq!(replicas.lines().count(), 4, "{replicas}");
    assert_eq!(results["verdict"], "passed");
    // The stored run checks the same again.
    let again = Command::new(env!("CARGO_BIN_EXE_raftmq")).args(["jepsen", "check"]).arg(&out).output().unwrap();
    assert_eq!(again.status.code(), Some(0), "{}", String::from_utf8_lossy(&again.stdout));
}

/// A RocketMQ campaign (`workload`) of 30 s on three brokers under kills, pauses, a
/// partitioned leader and leader transfers, which must pass: no acknowledged send lost or never received, nothing
/// delivered after its ack, no early redelivery, FIFO order kept. Returns the deliveries of a
/// second or later attempt.
fn rocketmq_campaign(workload: &str, seed: &str) -> usize {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let args = ["--brokers", "3", "--time", "30s", "--rate", "100", "--seed", seed, "--workload", workload];
    let output = jepsen_run(&out, &args).args(["--nemesis", "kill,kill-leader,pause,partition-leader,move-leader"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "stdout:\n{stdout}\nstderr:\n{}", String::from_utf8_lossy(&output.stderr));
    let results = results(&out);
    assert_eq!(results["verdict"], "passed", "{stdout}");
    let check = &results["check"];
    assert!(check["sends"]["ok"].as_u64().unwrap() >= 300, "{stdout}");
    assert!(check["acks"]["ok"].as_u64().unwrap() >= 300, "{stdout}");
    assert!(results["faults"].as_array().unwrap().len() >= 2, "too few faults injected: {stdout}");
    let history = std::fs::read_to_string(out.join("history.jsonl")).unwrap();
    history
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["f"] == "receive" && e["kind"] == "ok")
        .flat_map(|e| e["messages"].as_array().cloned().unwrap_or_default())
        .filter(|m| m["attempt"].as_u64().unwrap() >= 2)
        .count()
}

/// SimpleConsumers of a normal topic leave one delivery in ten unacknowledged: those come again,
/// and the invisibility checks see real redeliveries.
#[test]
fn a_rocketmq_campaign_finds_no_anomaly() {
    let redelivered = rocketmq_campaign("rocketmq", "5");
    assert!(redelivered > 0, "nothing was delivered a second time: the invisibility checks saw no redelivery");
}

/// Producers in FIFO message groups; every group's order holds for the consumer group.
#[test]
fn a_rocketmq_fifo_campaign_finds_no_anomaly() {
    rocketmq_campaign("rocketmq-fifo", "6");
}

/// The checker must be able to fail: brokers that acknowledge before fdatasync (syncing every
/// 2 s), under coordinated power loss, lose acknowledged writes, and the run reports them.
#[test]
fn a_broker_acknowledging_before_fsync_is_caught_losing_writes() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let args = ["--brokers", "3", "--time", "20s", "--nemesis", "power-loss", "--rate", "100", "--seed", "3"];
    let output = jepsen_run(&out, &args).args(["--unsafe-ack-before-fsync-ms", "2000"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "stdout:\n{stdout}\nstderr:\n{}", String::from_utf8_lossy(&output.stderr));
    let results = results(&out);
    assert_eq!(results["valid"], false);
    let lost = results["anomaly_counts"]["lost-write"].as_u64().unwrap() + results["anomaly_counts"]["unseen-at-end"].as_u64().unwrap();
    assert!(lost > 0, "acknowledged writes were lost but not reported: {stdout}");
    assert!(stdout.contains("power loss of broker 1,2,3"), "{stdout}");
}

/// The processes whose command line names `dir`: the brokers of the run stored there.
fn processes_naming(dir: &Path) -> Vec<u32> {
    let needle = dir.to_string_lossy().into_owned();
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| String::from_utf8_lossy(&c).replace('\0', " ").contains(&needle))
        })
        .collect()
}

fn iptables_rules() -> String {
    let out = Command::new("iptables").args(["-w", "-S"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Ctrl-C in the middle of a run, with a delayed link in force, leaves nothing behind: no broker
/// process, no iptables chain, no packet held.
#[test]
fn an_interrupted_run_stops_its_brokers_and_removes_its_rules() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let mut child = jepsen_run(&out, &["--brokers", "3", "--time", "300s", "--rate", "50", "--seed", "5", "--nemesis", "link-delay"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The run's chains are named after its process id and seed.
    let tag = format!("{}s5", child.id());
    // Wait for the first delay to be in force: an NFQUEUE rule in the run's link chain.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    loop {
        let rules = iptables_rules();
        if rules.lines().any(|l| l.starts_with(&format!("-A RMQJL-{tag} ")) && l.contains("NFQUEUE")) {
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            let output = child.wait_with_output().unwrap();
            panic!("the run ended ({status}) before a delay was in force: {}", String::from_utf8_lossy(&output.stderr));
        }
        assert!(std::time::Instant::now() < deadline, "no delay in force within 90 s:\n{rules}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let brokers: Vec<u32> = processes_naming(&out).into_iter().filter(|&pid| pid != child.id()).collect();
    assert_eq!(brokers.len(), 3, "the three brokers run: {brokers:?}");
    // SAFETY: kill(2) with a valid signal on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) }, 0);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        assert!(std::time::Instant::now() < deadline, "the run did not stop within 30 s of Ctrl-C");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_ne!(output.status.code(), Some(0));
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert!(!iptables_rules().contains(&tag), "the run's chains are left:\n{}", iptables_rules());
    // The brokers were SIGKILLed and reaped before the run exited.
    assert_eq!(processes_naming(&out), Vec::<u32>::new(), "broker processes are left");
}
