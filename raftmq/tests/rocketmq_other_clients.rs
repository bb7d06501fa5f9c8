//! The official RocketMQ 5 Python and Node.js clients, unchanged, against a cluster of real
//! brokers: each runs its smoke script (`clients/python/smoke.py`, `clients/node/smoke.js`): a
//! producer, a simple consumer (acks, nothing twice), a FIFO consumer (order per message group)
//! and a push consumer. The clients are installed by `scripts/install-client-deps` (which
//! `scripts/test` runs first) into `clients/.deps`.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use support::rocketmq::*;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace").to_path_buf()
}

/// Runs `program args` to its end, at most `within`; its output, and whether it succeeded.
fn run(mut command: Command, within: Duration) -> (bool, String) {
    let out_path = tempfile::NamedTempFile::new().expect("temp file");
    let out = out_path.reopen().expect("reopen");
    let err = out.try_clone().expect("clone");
    let mut child = command.stdout(out).stderr(err).spawn().expect("the client starts");
    let deadline = Instant::now() + within;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = std::fs::read_to_string(out_path.path()).unwrap_or_default();
    (status.is_some_and(|s| s.success()), output)
}

/// A fresh cluster with a normal topic of 4 queues and a FIFO topic of one queue (the Node
/// client receives only from queue 0's broker: `docs/rocketmq-compat.md`), and the endpoint.
async fn cluster_for(client: &str) -> (support::Cluster, String) {
    let cluster = cluster_with(&[topic(&format!("{client}-normal"), 4, NORMAL), topic(&format!("{client}-fifo"), 1, FIFO)]).await;
    cluster.leader_of_first_queue(&format!("{client}-fifo")).await;
    let endpoint = cluster.brokers[0].client_addr().to_string();
    (cluster, endpoint)
}

fn assert_held(client: &str, (ok, output): (bool, String)) {
    assert!(ok, "the {client} client's smoke script failed:\n{output}");
    assert!(output.contains("every check held"), "{output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_python_client_produces_and_consumes() {
    let python = repo().join("clients/.deps/venv/bin/python");
    assert!(python.exists(), "{} is missing: run scripts/install-client-deps", python.display());
    let (_cluster, endpoint) = cluster_for("python").await;
    let mut command = Command::new(python);
    command.arg(repo().join("clients/python/smoke.py")).args([&endpoint, "python-normal", "python-fifo"]);
    let result = tokio::task::spawn_blocking(move || run(command, Duration::from_secs(240))).await.expect("run");
    assert_held("Python", result);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_node_client_produces_and_consumes() {
    let modules = repo().join("clients/.deps/node/node_modules");
    assert!(modules.join("rocketmq-client-nodejs").exists(), "{} is missing: run scripts/install-client-deps", modules.display());
    let (_cluster, endpoint) = cluster_for("node").await;
    let mut command = Command::new("node");
    command.env("NODE_PATH", &modules).arg(repo().join("clients/node/smoke.js")).args([&endpoint, "node-normal", "node-fifo"]);
    let result = tokio::task::spawn_blocking(move || run(command, Duration::from_secs(240))).await.expect("run");
    assert_held("Node.js", result);
}
