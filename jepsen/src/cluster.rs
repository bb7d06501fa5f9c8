//! A cluster of real `raftmq broker` processes on this machine, each its own host: broker `i`
//! listens on `127.X.Y.i` (one `X.Y` per cluster, chosen free, so that clusters running at the
//! same time never share an address), with its own data directory and log file under the run's
//! directory. The harness controls the processes only as an operator would: start, SIGKILL,
//! SIGSTOP/SIGCONT.
//!
//! Every process is killed when the [`LocalCluster`] is dropped, also on a panic.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use proto::raftmq::v1::ClusterStatusRequest;
use proto::raftmq::v1::admin_service_client::AdminServiceClient;
use proto::raftmq::v1::queue_service_client::QueueServiceClient;
use proto::raftmq::v1::status::Code;
use tonic::transport::Channel;

/// Every broker's client port (each broker has its own address).
pub const CLIENT_PORT: u16 = 8081;
/// Every broker's peer (Raft transport) port.
pub const PEER_PORT: u16 = 9081;
/// Under a broker's data directory: the slow-fsync test mode's delay in milliseconds (the
/// broker's `[testing] fsync_delay_file`).
pub const FSYNC_DELAY_FILE: &str = "testing-fsync-delay-ms";
/// Under a broker's data directory: a request (a number) to flush the queue store, and the last
/// request the broker has carried out (the broker's `[testing] store_flush_file`).
pub const STORE_FLUSH_FILE: &str = "testing-store-flush";
pub const STORE_FLUSHED_FILE: &str = "testing-store-flushed";
/// Most brokers a cluster may have: the host part of `127.X.Y.N`.
pub const BROKERS_MAX: usize = 250;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("{0} brokers: a cluster has 1..={BROKERS_MAX}")]
    Size(usize),
    #[error("no free 127.X.Y.0 network for {0} brokers")]
    NoNetwork(usize),
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("broker {0} does not exist")]
    NoBroker(u64),
    #[error("the cluster was not ready within {0:?}")]
    NotReady(Duration),
    #[error(transparent)]
    Firewall(#[from] crate::net::FirewallError),
    #[error("a network nemesis needs the firewall, which this run did not set up")]
    NoFirewall,
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ClusterError {
    let what = what.into();
    move |source| ClusterError::Io { what, source }
}

/// How to start a cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    pub brokers: usize,
    /// The `raftmq` binary.
    pub binary: PathBuf,
    /// Where each broker's directory (`broker-N`: config, data, log) goes.
    pub dir: PathBuf,
    /// TOML appended to every broker's configuration.
    pub extra_config: String,
}

/// What state the harness left a broker process in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessState {
    Running,
    Paused,
    Down,
}

/// One broker process.
pub struct BrokerProcess {
    pub id: u64,
    pub ip: Ipv4Addr,
    pub dir: PathBuf,
    config: PathBuf,
    binary: PathBuf,
    child: Option<Child>,
    paused: bool,
}

impl BrokerProcess {
    pub fn client_addr(&self) -> SocketAddr {
        SocketAddr::from((self.ip, CLIENT_PORT))
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("broker.log")
    }

    pub fn state(&self) -> ProcessState {
        match (&self.child, self.paused) {
            (None, _) => ProcessState::Down,
            (Some(_), true) => ProcessState::Paused,
            (Some(_), false) => ProcessState::Running,
        }
    }

    fn spawn(&mut self) -> Result<(), ClusterError> {
        if self.child.is_some() {
            return Ok(());
        }
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path()).map_err(io("opening the broker log"))?;
        let log_err = log.try_clone().map_err(io("opening the broker log"))?;
        let child = Command::new(&self.binary)
            .args(["broker", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(io(format!("starting {}", self.binary.display())))?;
        self.child = Some(child);
        self.paused = false;
        Ok(())
    }

    fn signal(&self, signal: libc::c_int) {
        if let Some(c) = &self.child
            && let Ok(pid) = libc::pid_t::try_from(c.id())
        {
            // SAFETY: kill(2) on a child this process spawned and has not reaped, so the pid
            // still names it.
            unsafe { libc::kill(pid, signal) };
        }
    }

    /// SIGKILL: the process dies at once, flushing nothing.
    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.paused = false;
    }
}

/// See the module documentation.
pub struct LocalCluster {
    pub brokers: Vec<BrokerProcess>,
    /// The run's partition rules, when a partition nemesis is in use.
    pub firewall: Option<crate::net::Firewall>,
    /// Store flushes asked for so far (each request names the next number).
    store_flushes: u64,
}

/// A `127.X.Y.0` network on which every one of `n` addresses is free on both ports.
pub fn free_network(n: usize, seed: u64) -> Option<[u8; 2]> {
    (0..1000u64).find_map(|attempt| {
        let v = seed.wrapping_add(attempt.wrapping_mul(0x9E37_79B9_7F4A_7C15)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        let net = [2 + (v % 250) as u8, ((v >> 8) % 256) as u8];
        let free = (1..=n).all(|h| {
            let ip = Ipv4Addr::new(127, net[0], net[1], h as u8);
            TcpListener::bind((ip, CLIENT_PORT)).is_ok() && TcpListener::bind((ip, PEER_PORT)).is_ok()
        });
        free.then_some(net)
    })
}

/// The configuration of broker `h` (1-based) of an `n`-broker cluster on `127.X.Y.0` (`net`):
/// its own address on the standard ports, its data directory, the first three brokers as the
/// metadata group's voters, then `extra`.
pub fn broker_config(net: [u8; 2], n: usize, h: usize, data_dir: &Path, extra: &str) -> String {
    let ip = |h: usize| Ipv4Addr::new(127, net[0], net[1], h as u8);
    let controllers: Vec<String> = (1..=n.min(3)).map(|c| format!("\"{c}@{}:{PEER_PORT}\"", ip(c))).collect();
    format!(
        "id = {h}\ndata_dir = {data_dir:?}\nlisten = \"{ip}:{CLIENT_PORT}\"\npeer_listen = \"{ip}:{PEER_PORT}\"\ncontrollers = [{c}]\n{extra}\n",
        ip = ip(h),
        c = controllers.join(", "),
    )
}

impl LocalCluster {
    /// Writes every broker's configuration and starts them all (the first three are the
    /// metadata group's voters); does not wait for them (see [`Self::wait_ready`]).
    pub fn start(options: &ClusterOptions) -> Result<Self, ClusterError> {
        let n = options.brokers;
        if !(1..=BROKERS_MAX).contains(&n) {
            return Err(ClusterError::Size(n));
        }
        let seed = std::process::id() as u64
            ^ std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        let net = free_network(n, seed).ok_or(ClusterError::NoNetwork(n))?;
        let ip = |h: usize| Ipv4Addr::new(127, net[0], net[1], h as u8);
        let mut brokers = Vec::with_capacity(n);
        for h in 1..=n {
            let dir = options.dir.join(format!("broker-{h}"));
            std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
            let config = dir.join("broker.toml");
            let text = broker_config(net, n, h, &dir.join("data"), &options.extra_config);
            std::fs::write(&config, text).map_err(io(format!("writing {}", config.display())))?;
            brokers.push(BrokerProcess {
                id: h as u64,
                ip: ip(h),
                dir,
                config,
                binary: options.binary.clone(),
                child: None,
                paused: false,
            });
        }
        let mut cluster = LocalCluster { brokers, firewall: None, store_flushes: 0 };
        for b in &mut cluster.brokers {
            b.spawn()?;
        }
        Ok(cluster)
    }

    pub fn broker(&self, id: u64) -> Result<&BrokerProcess, ClusterError> {
        self.brokers.iter().find(|b| b.id == id).ok_or(ClusterError::NoBroker(id))
    }

    fn broker_mut(&mut self, id: u64) -> Result<&mut BrokerProcess, ClusterError> {
        self.brokers.iter_mut().find(|b| b.id == id).ok_or(ClusterError::NoBroker(id))
    }

    pub fn ids(&self) -> Vec<u64> {
        self.brokers.iter().map(|b| b.id).collect()
    }

    /// Every broker's client endpoint, in broker id order (broker 1 first).
    pub fn client_addrs(&self) -> Vec<SocketAddr> {
        self.brokers.iter().map(|b| b.client_addr()).collect()
    }

    /// SIGKILL of broker `id`.
    pub fn kill9(&mut self, id: u64) -> Result<(), ClusterError> {
        self.broker_mut(id)?.kill9();
        Ok(())
    }

    /// Starts broker `id` again on its directory (no-op if it runs).
    pub fn restart(&mut self, id: u64) -> Result<(), ClusterError> {
        self.broker_mut(id)?.spawn()
    }

    /// SIGSTOP of broker `id`: it stays in memory, answering nothing, until resumed.
    pub fn pause(&mut self, id: u64) -> Result<(), ClusterError> {
        let b = self.broker_mut(id)?;
        if b.child.is_some() {
            b.signal(libc::SIGSTOP);
            b.paused = true;
        }
        Ok(())
    }

    /// SIGCONT of broker `id`.
    pub fn resume(&mut self, id: u64) -> Result<(), ClusterError> {
        let b = self.broker_mut(id)?;
        b.signal(libc::SIGCONT);
        b.paused = false;
        Ok(())
    }

    /// Makes every fdatasync of broker `id`'s log wait `delay_ms` first (0: none). The broker
    /// must run with `[testing] fsync_delay_file = true`; it reads the file every 100 ms.
    pub fn set_fsync_delay(&mut self, id: u64, delay_ms: u64) -> Result<(), ClusterError> {
        let path = self.broker(id)?.dir.join("data").join(FSYNC_DELAY_FILE);
        std::fs::write(&path, delay_ms.to_string()).map_err(io(format!("writing {}", path.display())))
    }

    /// Asks broker `id` to flush its queue store (`[testing] store_flush_file = true`) and waits,
    /// up to `within`, until it says it has; false if it did not in time.
    pub async fn flush_store(&mut self, id: u64, within: Duration) -> Result<bool, ClusterError> {
        let data = self.broker(id)?.dir.join("data");
        self.store_flushes += 1;
        let request = self.store_flushes.to_string();
        let path = data.join(STORE_FLUSH_FILE);
        std::fs::write(&path, &request).map_err(io(format!("writing {}", path.display())))?;
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if std::fs::read_to_string(data.join(STORE_FLUSHED_FILE)).is_ok_and(|t| t.trim() == request) {
                return Ok(true);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(false)
    }

    /// Waits until every broker answers `ClusterStatus` and the metadata lists every broker
    /// alive.
    pub async fn wait_ready(&self, within: Duration) -> Result<(), ClusterError> {
        let deadline = Instant::now() + within;
        for b in &self.brokers {
            let mut admin = AdminServiceClient::new(channel(b.client_addr()));
            loop {
                let ready = match admin.cluster_status(ClusterStatusRequest {}).await {
                    Ok(r) => {
                        let r = r.into_inner();
                        let ok = r.status.as_ref().is_some_and(|s| s.code == Code::Ok as i32);
                        ok && r.brokers.len() == self.brokers.len() && r.brokers.iter().all(|b| b.alive)
                    }
                    Err(_) => false,
                };
                if ready {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(ClusterError::NotReady(within));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }

    /// Kills every broker (resuming paused ones first is not needed: SIGKILL ends them too).
    pub fn kill_all(&mut self) {
        for b in &mut self.brokers {
            b.kill9();
        }
    }

    /// The last `lines` lines of every broker's log, for a failure report.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for b in &self.brokers {
            let text = std::fs::read_to_string(b.log_path()).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(lines).collect();
            out.push_str(&format!("--- broker {} ({}) ---\n", b.id, b.log_path().display()));
            for l in tail.into_iter().rev() {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.kill_all();
        // The firewall's own drop removes its rules.
        self.firewall = None;
    }
}

/// A lazily connecting channel to `addr` with short connect and request deadlines, so that a
/// dead or paused broker costs a bounded wait.
pub fn channel(addr: SocketAddr) -> Channel {
    // The address is always a valid authority.
    Channel::from_shared(format!("http://{addr}"))
        .unwrap_or_else(|_| unreachable!("a socket address is a valid URI authority"))
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .connect_lazy()
}

pub fn queue_client(addr: SocketAddr) -> QueueServiceClient<Channel> {
    QueueServiceClient::new(channel(addr))
}

pub fn admin_client(addr: SocketAddr) -> AdminServiceClient<Channel> {
    AdminServiceClient::new(channel(addr))
}

/// The directory of broker `id` under a run directory.
pub fn broker_dir(run_dir: &Path, id: u64) -> PathBuf {
    run_dir.join(format!("broker-{id}"))
}
