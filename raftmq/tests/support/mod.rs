//! A cluster of real `raftmq broker` processes for the multi-process tests: each broker is its
//! own host on loopback (`127.X.Y.N`, one `X.Y` per cluster so that tests running at the same
//! time never share an address), with its own data directory and log file.
//!
//! Every process is killed when the [`Cluster`] is dropped, also when a test fails.

#![allow(dead_code)] // Each test binary uses a different part.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use proto::raftmq::v1::admin_service_client::AdminServiceClient;
use proto::raftmq::v1::queue_service_client::QueueServiceClient;
use proto::raftmq::v1::status::Code;
use proto::raftmq::v1::{ClusterStatusRequest, CreateTopicRequest, DescribeTopicRequest, GroupStatus, ReplicaStatus, Status, Topic};
use tonic::transport::Channel;

pub use jepsen::cluster::{CLIENT_PORT, PEER_PORT};

pub mod rocketmq;
/// How long a cluster may take to come up, or a broker to come back.
pub const READY_DEADLINE: Duration = Duration::from_secs(60);

pub fn code(s: &Option<Status>) -> Code {
    Code::try_from(s.as_ref().map_or(0, |s| s.code)).unwrap_or(Code::Unspecified)
}

pub struct Broker {
    pub id: u64,
    pub ip: Ipv4Addr,
    pub dir: PathBuf,
    pub config: PathBuf,
    child: Option<Child>,
}

impl Broker {
    pub fn client_addr(&self) -> SocketAddr {
        SocketAddr::from((self.ip, CLIENT_PORT))
    }

    pub fn peer_addr(&self) -> SocketAddr {
        SocketAddr::from((self.ip, PEER_PORT))
    }

    pub fn log(&self) -> PathBuf {
        self.dir.join("broker.log")
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "broker {} is already running", self.id);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log()).expect("broker log");
        let child = Command::new(env!("CARGO_BIN_EXE_raftmq"))
            .args(["broker", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("broker log"))
            .stderr(log)
            .spawn()
            .expect("spawning raftmq broker");
        self.child = Some(child);
    }

    /// The exit status once the process has exited by itself (reaping it); `None` while it runs.
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        let status = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
        if status.is_some() {
            self.child = None;
        }
        status
    }

    /// SIGKILL: the process dies at once, without flushing anything.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then wait for the clean stop (SIGKILL after the deadline).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on a pid this process spawned and has not reaped.
            unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
            panic!("broker {} did not stop within 20 s of SIGTERM", self.id);
        }
    }

    pub fn start(&mut self) {
        self.spawn();
    }

    pub async fn queue(&self) -> QueueServiceClient<Channel> {
        queue_client(self.client_addr())
    }

    pub async fn admin(&self) -> AdminServiceClient<Channel> {
        AdminServiceClient::new(channel(self.client_addr()))
    }
}

/// A test client that sends and reads messages of any size the broker may accept: the limits
/// under test are the broker's, not tonic's 4 MiB default on this side.
pub fn queue_client(addr: SocketAddr) -> QueueServiceClient<Channel> {
    QueueServiceClient::new(channel(addr))
        .max_decoding_message_size(TEST_MESSAGE_BYTES_MAX)
        .max_encoding_message_size(TEST_MESSAGE_BYTES_MAX)
}

const TEST_MESSAGE_BYTES_MAX: usize = 256 << 20;

fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(30))
        .connect_lazy()
}

pub struct Cluster {
    pub brokers: Vec<Broker>,
    _root: tempfile::TempDir,
}

/// A `127.X.Y.0` network no other cluster of this machine uses now: every address of it is free
/// on both ports.
fn free_network(n: usize) -> [u8; 2] {
    let seed =
        std::process::id() as u64 ^ std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    jepsen::cluster::free_network(n, seed).unwrap_or_else(|| panic!("no free 127.X.Y.0 network for {n} brokers"))
}

impl Cluster {
    /// Starts `n` brokers; the first three (or all, when fewer) are the metadata group's voters.
    /// `extra` is appended to every broker's configuration file (TOML).
    pub async fn start(n: usize, extra: &str) -> Cluster {
        let root = tempfile::tempdir().expect("temp dir");
        let net = free_network(n);
        let ip = |h: usize| Ipv4Addr::new(127, net[0], net[1], h as u8);
        let mut brokers = Vec::new();
        for h in 1..=n {
            let dir = root.path().join(format!("broker-{h}"));
            std::fs::create_dir_all(&dir).expect("broker dir");
            let config = dir.join("broker.toml");
            std::fs::write(&config, jepsen::cluster::broker_config(net, n, h, &dir.join("data"), extra)).expect("broker config");
            brokers.push(Broker { id: h as u64, ip: ip(h), dir, config, child: None });
        }
        for b in &mut brokers {
            b.spawn();
        }
        let cluster = Cluster { brokers, _root: root };
        cluster.wait_ready().await;
        cluster
    }

    pub fn root(&self) -> &Path {
        self._root.path()
    }

    /// Waits until every broker answers and the metadata lists every broker alive.
    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + READY_DEADLINE;
        for b in &self.brokers {
            let mut admin = b.admin().await;
            loop {
                let ok = match admin.cluster_status(ClusterStatusRequest {}).await {
                    Ok(r) => {
                        let r = r.into_inner();
                        code(&r.status) == Code::Ok && r.brokers.len() == self.brokers.len() && r.brokers.iter().all(|b| b.alive)
                    }
                    Err(_) => false,
                };
                if ok {
                    break;
                }
                assert!(Instant::now() < deadline, "cluster not ready within {READY_DEADLINE:?}; logs under {}", self.root().display());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    /// Creates `topic` through the first broker; anything but OK fails the test.
    pub async fn create_topic(&self, topic: Topic) {
        let mut admin = self.brokers[0].admin().await;
        let r = admin.create_topic(CreateTopicRequest { topic: Some(topic) }).await.expect("create topic").into_inner();
        assert_eq!(code(&r.status), Code::Ok, "{:?}", r.status);
    }

    /// The leader of queue 0 of `topic` (polling until one is known).
    pub async fn leader_of_first_queue(&self, topic: &str) -> u64 {
        let mut admin = self.brokers[0].admin().await;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let r = admin.describe_topic(DescribeTopicRequest { name: topic.into() }).await.expect("describe").into_inner();
            if let Some(q) = r.queues.first().filter(|q| q.leader_broker_id != 0) {
                return q.leader_broker_id;
            }
            assert!(Instant::now() < deadline, "queue 0 of {topic} has no leader");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `group`'s status as broker `via` (an index into `brokers`) reports it, once it names a
    /// leader (polling for 30 s at most).
    pub async fn group_status(&self, via: usize, group: u64) -> GroupStatus {
        let mut admin = self.brokers[via].admin().await;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = admin.cluster_status(ClusterStatusRequest {}).await
                && let Some(g) = r.into_inner().groups.into_iter().find(|g| g.group_id == group && g.leader_broker_id != 0)
            {
                return g;
            }
            assert!(Instant::now() < deadline, "no status with a leader for group {group}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn dump_logs(&self) {
        for b in &self.brokers {
            let text = std::fs::read_to_string(b.log()).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            eprintln!("--- broker {} log (last 40 lines) ---", b.id);
            for l in tail.into_iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
        }
        for b in &mut self.brokers {
            b.kill9();
        }
    }
}

/// The first line `child` writes on its piped stdout, or `None` when no line comes within
/// `within`; the child is left running, for the caller to stop.
pub fn first_stdout_line(child: &mut Child, within: Duration) -> Option<String> {
    use std::io::BufRead;
    let stdout = child.stdout.take()?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    rx.recv_timeout(within).ok().filter(|line| !line.trim().is_empty())
}

/// The replica of `status`'s group on `broker`.
pub fn replica(status: &GroupStatus, broker: u64) -> &ReplicaStatus {
    status.replicas.iter().find(|r| r.broker_id == broker).unwrap_or_else(|| panic!("no replica on broker {broker}: {status:?}"))
}
