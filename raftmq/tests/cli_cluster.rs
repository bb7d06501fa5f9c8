//! The client commands as a user runs them against `raftmq dev` (three brokers): admin, produce,
//! consume and bench, each with `--json`, checked by what they print and how they exit.

mod support;

use std::io::Write;
use std::net::TcpListener;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const READY_DEADLINE: Duration = Duration::from_secs(90);
const EXIT_DEADLINE: Duration = Duration::from_secs(30);

/// A base port whose three client, peer and metrics ports are all free now.
fn free_base_port() -> u16 {
    for _ in 0..100 {
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("an ephemeral port").port();
        let all = (0..3).flat_map(|i| [port + i, port + 100 + i, port + 200 + i]);
        if port <= u16::MAX - 210 && all.into_iter().all(|p| TcpListener::bind(("127.0.0.1", p)).is_ok()) {
            return port;
        }
    }
    panic!("no free base port found in 100 tries");
}

/// `raftmq dev --brokers 3`, stopped with SIGINT when dropped.
struct Dev(Child);

impl Drop for Dev {
    fn drop(&mut self) {
        let pid = libc::pid_t::try_from(self.0.id()).expect("a pid");
        // SAFETY: kill has no memory preconditions; the child is not reaped yet, so the pid is its.
        unsafe { libc::kill(pid, libc::SIGINT) };
        let deadline = Instant::now() + EXIT_DEADLINE;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_dev(dir: &std::path::Path, base: u16) -> Dev {
    let mut child = Command::new(env!("CARGO_BIN_EXE_raftmq"))
        .args(["dev", "--json", "--brokers", "3", "--base-port", &base.to_string(), "--data-dir"])
        .arg(dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run raftmq dev");
    let ready = support::first_stdout_line(&mut child, READY_DEADLINE).is_some();
    let dev = Dev(child);
    assert!(ready, "raftmq dev was not ready within {READY_DEADLINE:?}");
    dev
}

fn raftmq(broker: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_raftmq"))
        .args(args)
        .args(["--broker", broker, "--json"])
        .env("RUST_LOG", "warn")
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run raftmq");
    if let Some(text) = stdin {
        child.stdin.take().expect("piped stdin").write_all(text.as_bytes()).expect("write stdin");
    }
    child.wait_with_output().expect("raftmq output")
}

/// Runs a command that must succeed; returns its stdout as JSON lines.
fn ok(broker: &str, args: &[&str], stdin: Option<&str>) -> Vec<Value> {
    let out = raftmq(broker, args, stdin);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "raftmq {args:?}: {:?}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("raftmq {args:?}: {e}: {l}"))).collect()
}

#[test]
fn admin_produce_consume_and_bench_work_against_a_dev_cluster() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let base = free_base_port();
    let _dev = start_dev(&tmp.path().join("cluster"), base);
    let broker = format!("127.0.0.1:{base}");
    let b = broker.as_str();

    let created = ok(b, &["admin", "topic", "create", "cli", "--queues", "2"], None);
    assert_eq!((created[0]["name"].as_str(), created[0]["queue_count"].as_u64()), (Some("cli"), Some(2)), "{created:?}");
    assert_eq!(created[0]["replication_factor"].as_u64(), Some(3));

    // Generated messages, then lines from stdin into queue 0: every one acknowledged with an offset.
    let generated = ok(b, &["produce", "--topic", "cli", "--count", "20", "--size", "16"], None);
    assert_eq!(generated.len(), 20);
    assert!(generated.iter().all(|r| r["offset"].is_u64() && r["queue"].as_u64().is_some_and(|q| q < 2)), "{generated:?}");
    let lines = ok(b, &["produce", "--topic", "cli", "--queue", "0"], Some("alpha\nbeta\ngamma\n"));
    let offsets: Vec<u64> = lines.iter().map(|r| r["offset"].as_u64().expect("offset")).collect();
    assert_eq!(offsets.len(), 3);
    assert!(offsets.windows(2).all(|w| w[1] == w[0] + 1), "lines of one producer get consecutive offsets: {offsets:?}");

    // A consumer group reads all 23 and commits; a second run of the group finds nothing new.
    let consumed =
        ok(b, &["consume", "--topic", "cli", "--group", "g1", "--from-beginning", "--max-messages", "23", "--timeout-ms", "10000"], None);
    assert_eq!(consumed.len(), 23, "{consumed:?}");
    let bodies: Vec<String> = consumed.iter().filter_map(|m| m["body_base64"].as_str().map(str::to_owned)).collect();
    for word in ["YWxwaGE=", "YmV0YQ==", "Z2FtbWE="] {
        assert!(bodies.iter().any(|b| b == word), "base64 {word} among the consumed bodies");
    }
    let again = ok(b, &["consume", "--topic", "cli", "--group", "g1", "--timeout-ms", "1000"], None);
    assert!(again.is_empty(), "the group committed its progress: {again:?}");

    let described = ok(b, &["admin", "topic", "describe", "cli"], None);
    let queues = described[0]["queues"].as_array().expect("queues");
    assert_eq!(queues.iter().map(|q| q["end_offset"].as_u64().expect("end offset")).sum::<u64>(), 23);
    // Each queue group's leadership moved to every one of its replicas in turn; a move to a
    // broker without a replica, or of the metadata group, is refused and says why.
    let group = queues[0]["group_id"].as_u64().expect("group id");
    let replicas: Vec<u64> = queues[0]["replica_broker_ids"].as_array().expect("replicas").iter().filter_map(Value::as_u64).collect();
    assert_eq!(replicas.len(), 3, "{queues:?}");
    for to in replicas {
        let moved = ok(b, &["admin", "group", "move-leader", &group.to_string(), "--to", &to.to_string()], None);
        assert_eq!(moved[0]["leader"].as_u64(), Some(to), "{moved:?}");
        let described = ok(b, &["admin", "topic", "describe", "cli"], None);
        assert_eq!(described[0]["queues"][0]["leader_broker_id"].as_u64(), Some(to), "{described:?}");
    }
    for (args, says) in [
        (["admin", "group", "move-leader", &group.to_string(), "--to", "9"], "holds no replica"),
        (["admin", "group", "move-leader", "0", "--to", "1"], "metadata group"),
        (["admin", "group", "move-leader", "999999", "--to", "1"], "does not exist"),
    ] {
        let out = raftmq(b, &args, None);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains(says), "raftmq {args:?}: {:?}: {stderr}", out.status);
    }
    // The moves lost nothing: queue 0's next message takes the offset after its last.
    let after = ok(b, &["produce", "--topic", "cli", "--queue", "0"], Some("delta\n"));
    assert_eq!(after[0]["offset"].as_u64(), Some(offsets[2] + 1), "{after:?}");
    let status = ok(b, &["admin", "cluster", "status"], None);
    let brokers = status[0]["brokers"].as_array().expect("brokers");
    assert_eq!(brokers.len(), 3);
    assert!(brokers.iter().all(|b| b["alive"] == Value::Bool(true)), "{brokers:?}");
    let checksum = ok(b, &["admin", "group", "checksum", "cli"], None);
    assert_eq!(checksum[0]["ok"], Value::Bool(true), "{checksum:?}");

    let produced = ok(b, &["bench", "produce", "--topic", "bench", "--count", "300", "--concurrency", "8", "--size", "64"], None);
    assert_eq!(produced.last().and_then(|r| r["acked"].as_u64()), Some(300), "{produced:?}");
    let read = ok(b, &["bench", "consume", "--topic", "bench", "--count", "300"], None);
    assert_eq!(read.last().and_then(|r| r["consumed"].as_u64()), Some(300), "{read:?}");
    // The native consumer group's counterpart of receive + ack: fetches of 32, each committed;
    // the group then has nothing left to read.
    let args = ["bench", "consume", "--topic", "bench", "--count", "300", "--read-batch", "32", "--commit-group", "bench-g"];
    let committed = ok(b, &args, None);
    let last = committed.last().expect("a report");
    assert_eq!((last["consumed"].as_u64(), last["read_batch"].as_u64()), (Some(300), Some(32)), "{committed:?}");
    let rest = ok(b, &["consume", "--topic", "bench", "--group", "bench-g", "--timeout-ms", "1000"], None);
    assert!(rest.is_empty(), "every fetch's offset was committed: {} left", rest.len());
    let out = raftmq(b, &["bench", "consume", "--topic", "bench", "--commit-group", "g", "--protocol", "rocketmq"], None);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("native consumer's"), "{out:?}");
    // The read batch at its limits: 1,024 per fetch, 32 per receive over rocketmq; one more refused.
    let args = ["bench", "consume", "--topic", "bench", "--count", "300", "--read-batch", "1024"];
    let whole = ok(b, &args, None);
    assert_eq!(whole.last().and_then(|r| r["read_batch"].as_u64()), Some(1024), "{whole:?}");
    for (args, says) in [
        (["bench", "consume", "--topic", "bench", "--read-batch", "1025", "--protocol", "native"], "1..=1024"),
        (["bench", "consume", "--topic", "bench", "--read-batch", "33", "--protocol", "rocketmq"], "at most 32"),
    ] {
        let out = raftmq(b, &args, None);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains(says), "raftmq {args:?}: {:?}: {stderr}", out.status);
    }
    let e2e = ok(b, &["bench", "e2e", "--topic", "bench", "--count", "100", "--concurrency", "4", "--size", "64"], None);
    assert!(e2e.last().is_some_and(|r| r["end_to_end_latency"].is_object()), "{e2e:?}");
    // The same sends through RocketMQ's protocol, stored after the native ones (300 + e2e's 100).
    let args = ["bench", "produce", "--topic", "bench", "--count", "200", "--concurrency", "8", "--size", "64", "--protocol", "rocketmq"];
    let over_rocketmq = ok(b, &args, None);
    let last = over_rocketmq.last().expect("a report");
    assert_eq!((last["acked"].as_u64(), last["protocol"].as_str()), (Some(200), Some("rocketmq")), "{over_rocketmq:?}");
    let read = ok(b, &["bench", "consume", "--topic", "bench", "--count", "600"], None);
    assert_eq!(read.last().and_then(|r| r["consumed"].as_u64()), Some(600), "{read:?}");
    // And all 600 again as a RocketMQ consumer group: received and acknowledged.
    let args =
        ["bench", "consume", "--topic", "bench", "--count", "600", "--concurrency", "4", "--protocol", "rocketmq", "--read-batch", "32"];
    let received = ok(b, &args, None);
    let last = received.last().expect("a report");
    assert_eq!((last["consumed"].as_u64(), last["protocol"].as_str()), (Some(600), Some("rocketmq")), "{received:?}");

    let listed = ok(b, &["admin", "topic", "list"], None);
    let names: Vec<&str> = listed[0]["topics"].as_array().expect("topics").iter().filter_map(|t| t["name"].as_str()).collect();
    assert_eq!(names, ["bench", "cli"]);

    // The seeds' timeliness scenario, small: one round per producer concurrency, each on a topic
    // of its own, ends with every message sent once and processed.
    let args = ["bench", "scenario", "timeliness", "--count", "400", "--producers", "4,16", "--consumers", "4", "--queues", "2"];
    let rounds = ok(b, &args, None);
    assert_eq!(rounds.len(), 2, "{rounds:?}");
    for (round, producers) in rounds.iter().zip([4, 16]) {
        assert_eq!(round["producers"].as_u64(), Some(producers), "{round}");
        assert!(round["seconds"].as_f64().is_some_and(|s| s > 0.0), "{round}");
        assert_eq!(round["sent"].as_u64(), Some(400), "{round}");
        assert!(round["processed"].as_u64().is_some_and(|p| p >= 400), "{round}");
    }
}
