//! `raftmq dev` as a user runs it: a one-broker cluster started, stopped with Ctrl-C, refused
//! when asked for another shape on the same directory, and started again on its data.

mod support;

use std::io::Read;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// Start-up of one broker took about 1 s on the project's 2-core machine; the rest is slack.
const READY_DEADLINE: Duration = Duration::from_secs(60);
/// `raftmq dev` gives each broker 10 s after SIGTERM, then kills it.
const EXIT_DEADLINE: Duration = Duration::from_secs(20);

fn dev(dir: &Path, brokers: u64, base_port: u16) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_raftmq"));
    c.args(["dev", "--json", "--brokers", &brokers.to_string(), "--base-port", &base_port.to_string(), "--data-dir"])
        .arg(dir)
        .env("RUST_LOG", "warn");
    c
}

/// A base port whose client, peer and metrics ports (base, base+100, base+200) are free now.
fn free_base_port() -> u16 {
    for _ in 0..100 {
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("an ephemeral port").port();
        if port <= u16::MAX - 200 && [port + 100, port + 200].iter().all(|p| TcpListener::bind(("127.0.0.1", *p)).is_ok()) {
            return port;
        }
    }
    panic!("no free base port found in 100 tries");
}

fn describe(out: &Output) -> String {
    format!("status {:?}\nstdout:\n{}\nstderr:\n{}", out.status, String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Runs `raftmq dev` until its JSON line says the cluster is ready; returns it parsed.
fn start(dir: &Path, base_port: u16) -> (Child, serde_json::Value) {
    let mut child = dev(dir, 1, base_port).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("run raftmq dev");
    match support::first_stdout_line(&mut child, READY_DEADLINE) {
        Some(line) => (child, serde_json::from_str(&line).expect("one JSON object")),
        None => {
            let _ = child.kill();
            let mut stderr = String::new();
            let _ = child.stderr.take().map(|mut e| e.read_to_string(&mut stderr));
            panic!("raftmq dev was not ready in {READY_DEADLINE:?}; stderr:\n{stderr}");
        }
    }
}

/// Ctrl-C, then the exit status (bounded).
fn interrupt(child: &mut Child) -> ExitStatus {
    let pid = libc::pid_t::try_from(child.id()).expect("a pid");
    // SAFETY: kill has no memory preconditions; `child` is not reaped yet, so the pid is still its.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0, "SIGINT to raftmq dev");
    let deadline = Instant::now() + EXIT_DEADLINE;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().expect("wait for raftmq dev") {
            return status;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    panic!("raftmq dev did not exit within {EXIT_DEADLINE:?} of SIGINT");
}

#[test]
fn dev_starts_stops_and_comes_back_on_its_data() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().join("cluster");
    let base = free_base_port();

    let (mut child, ready) = start(&dir, base);
    let broker = &ready["brokers"][0];
    assert_eq!(broker["client"], format!("127.0.0.1:{base}"));
    assert_eq!(broker["peer"], format!("127.0.0.1:{}", base + 100));
    assert_eq!(broker["metrics"], format!("http://127.0.0.1:{}/metrics", base + 200));
    assert_eq!(ready["controllers"][0], format!("1@127.0.0.1:{}", base + 100));
    // The commands it prints run as printed, in a shell that has no `raftmq` on its PATH.
    let commands: Vec<&str> = ready["next_commands"].as_array().expect("next commands").iter().filter_map(|c| c.as_str()).collect();
    assert_eq!(commands.len(), 4, "{ready}");
    assert!(commands[0].ends_with(&format!(" admin topic create demo --broker 127.0.0.1:{base}")), "{ready}");
    for line in &commands {
        // A consumer waits for new messages until Ctrl-C: bounded here by --timeout-ms.
        let line = if line.contains(" consume ") { format!("{line} --timeout-ms 500") } else { line.to_string() };
        let out = Command::new("sh").args(["-c", &line]).env("PATH", "/usr/bin:/bin").env("RUST_LOG", "warn").output().expect("run sh");
        assert!(out.status.success(), "{line}: {}", describe(&out));
    }
    assert_eq!(ready["broker_env"], format!("export RAFTMQ_BROKER=127.0.0.1:{base}"));
    let broker_dir = dir.join("broker-1");
    assert_eq!(broker["data_dir"], broker_dir.canonicalize().expect("broker dir").display().to_string());
    let status = interrupt(&mut child);
    assert_eq!(status.code(), Some(0), "{status:?}");
    // The broker's data is there to come back to.
    let written: Vec<String> =
        std::fs::read_dir(&broker_dir).expect("broker dir").map(|e| e.expect("entry").file_name().to_string_lossy().into_owned()).collect();
    assert!(written.len() > 2, "only {written:?} in {}", broker_dir.display());

    // Another shape on the same directory is refused before anything starts.
    let out = dev(&dir, 2, base).output().expect("run raftmq dev");
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("holds broker-1 (a cluster of 1) but --brokers 2 was asked"),
        "{}",
        describe(&out)
    );
    let out = dev(&dir, 1, base + 1).output().expect("run raftmq dev");
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("suggests --base-port {base}")), "{}", describe(&out));

    let (mut child, ready) = start(&dir, base);
    assert_eq!(ready["brokers"][0]["client"], format!("127.0.0.1:{base}"));
    assert_eq!(interrupt(&mut child).code(), Some(0));
}

/// `scripts/raftmq` (what README's first line runs) lets cargo show the build's progress, then
/// runs the binary it built with the arguments given. A stand-in `cargo` on the PATH records
/// how it was called; the "built" binary is this test's raftmq.
#[test]
fn scripts_raftmq_shows_the_build_then_runs_the_binary() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().expect("temp dir");
    let bin = tmp.path().join("bin");
    std::fs::create_dir_all(&bin).expect("bin dir");
    let calls = tmp.path().join("cargo-calls");
    let fake_cargo = bin.join("cargo");
    std::fs::write(&fake_cargo, format!("#!/bin/sh\necho \"$@\" >> {}\n", calls.display())).expect("fake cargo");
    std::fs::set_permissions(&fake_cargo, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let target = tmp.path().join("target");
    std::fs::create_dir_all(target.join("release")).expect("target dir");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_raftmq"), target.join("release").join("raftmq")).expect("symlink");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/raftmq");
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let out =
        Command::new(&script).arg("--version").env("PATH", path).env("CARGO_TARGET_DIR", &target).output().expect("run scripts/raftmq");
    let calls = std::fs::read_to_string(&calls).expect("cargo was called");
    assert_eq!(calls.trim(), "build --release -p raftmq", "cargo's progress must not be hidden");
    assert!(out.status.success(), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("raftmq "), "{}", describe(&out));
}
