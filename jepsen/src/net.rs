//! Network faults between the brokers' loopback hosts, with iptables: one chain per run for
//! partitions (`DROP` per blocked (source, destination) pair of broker addresses), and a second
//! for degraded links (random loss with the `statistic` match, and delay: packets to and from a
//! host are queued to this process with `NFQUEUE`, held, and let through later by
//! [`PacketDelay`]). Both chains are jumped to from `INPUT`, partitions first, so a partition
//! still drops a packet of a slow link. Brokers make their peer connections from their own
//! address, so the rules see broker-to-broker traffic by host; clients connect from 127.0.0.1,
//! so a partition never blocks them, while a degraded link slows the broker's clients too.
//!
//! Why not network namespaces and `tc netem`: the kernels this runs on are built without
//! `sch_netem`, so a namespace's link cannot be given delay or loss; `NFQUEUE` and `statistic`
//! are there, and keep every broker on its loopback host.
//!
//! Everything is removed when the [`Firewall`] is dropped, also on a panic: the rules first,
//! then the held packets are let through. Needs root and the `iptables` command.

use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rand::{RngExt, SeedableRng};
use rand_xorshift::XorShiftRng;

#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    #[error("running iptables {args}: {reason} (the network nemeses need root and iptables: apt-get install iptables)")]
    Iptables { args: String, reason: String },
    #[error("opening a netfilter queue for the link-delay nemesis: {0} (needs root, or CAP_NET_ADMIN)")]
    Queue(std::io::Error),
    #[error("no free netfilter queue number in {first}..{last}")]
    NoQueue { first: u16, last: u16 },
    #[error("loss probability {0} is outside 0..=1")]
    Loss(f64),
}

/// See the module documentation.
#[derive(Debug)]
pub struct Firewall {
    chain: String,
    link_chain: String,
    /// The blocked (source, destination) pairs in force.
    blocked: Vec<(Ipv4Addr, Ipv4Addr)>,
    /// Started by the first delayed link.
    delay: Option<PacketDelay>,
    seed: u64,
}

fn iptables(args: &[&str]) -> Result<(), FirewallError> {
    let fail = |reason: String| FirewallError::Iptables { args: args.join(" "), reason };
    let out = Command::new("iptables").arg("-w").args(args).output().map_err(|e| fail(e.to_string()))?;
    if out.status.success() { Ok(()) } else { Err(fail(String::from_utf8_lossy(&out.stderr).trim().to_string())) }
}

/// Removes `chain` and the jump to it from `INPUT`, if they exist.
fn remove_chain(chain: &str) -> Result<(), FirewallError> {
    let _ = iptables(&["-D", "INPUT", "-j", chain]);
    let _ = iptables(&["-F", chain]);
    iptables(&["-X", chain])
}

impl Firewall {
    /// Creates this run's chains (named after `tag`, at most 20 characters are kept) and jumps
    /// to them from `INPUT`, ahead of any rule already there. `seed` seeds the delay jitter.
    pub fn new(tag: &str, seed: u64) -> Result<Self, FirewallError> {
        let tag: String = tag.chars().filter(|c| c.is_ascii_alphanumeric()).take(20).collect();
        let (chain, link_chain) = (format!("RMQJ-{tag}"), format!("RMQJL-{tag}"));
        // Chains left by a crashed run of the same tag: remove them first.
        let _ = remove_chain(&chain);
        let _ = remove_chain(&link_chain);
        iptables(&["-N", &chain])?;
        // From here on, dropping `fw` removes whatever was made.
        let fw = Firewall { chain, link_chain, blocked: Vec::new(), delay: None, seed };
        iptables(&["-N", &fw.link_chain])?;
        iptables(&["-I", "INPUT", "1", "-j", &fw.chain])?;
        iptables(&["-I", "INPUT", "2", "-j", &fw.link_chain])?;
        Ok(fw)
    }

    /// Drops every packet from `from` to `to`.
    pub fn block(&mut self, from: Ipv4Addr, to: Ipv4Addr) -> Result<(), FirewallError> {
        if from == to || self.blocked.contains(&(from, to)) {
            return Ok(());
        }
        iptables(&["-A", &self.chain, "-s", &from.to_string(), "-d", &to.to_string(), "-j", "DROP"])?;
        self.blocked.push((from, to));
        Ok(())
    }

    /// Blocks both directions between every host of `a` and every host of `b`.
    pub fn cut(&mut self, a: &[Ipv4Addr], b: &[Ipv4Addr]) -> Result<(), FirewallError> {
        for &x in a {
            for &y in b {
                self.block(x, y)?;
                self.block(y, x)?;
            }
        }
        Ok(())
    }

    /// Removes every partition rule: the network is whole again (degraded links stay).
    pub fn heal(&mut self) -> Result<(), FirewallError> {
        iptables(&["-F", &self.chain])?;
        self.blocked.clear();
        Ok(())
    }

    pub fn blocked(&self) -> &[(Ipv4Addr, Ipv4Addr)] {
        &self.blocked
    }

    /// Drops each packet to or from `host` with probability `loss`.
    pub fn lose(&mut self, host: Ipv4Addr, loss: f64) -> Result<(), FirewallError> {
        if !(0.0..=1.0).contains(&loss) {
            return Err(FirewallError::Loss(loss));
        }
        let p = format!("{loss:.4}");
        for dir in ["-s", "-d"] {
            iptables(&[
                "-A",
                &self.link_chain,
                dir,
                &host.to_string(),
                "-m",
                "statistic",
                "--mode",
                "random",
                "--probability",
                &p,
                "-j",
                "DROP",
            ])?;
        }
        Ok(())
    }

    /// Holds each packet to or from `host` for `delay` plus up to `jitter` before letting it
    /// through; packets leave in the order they came, as on one link.
    pub fn slow(&mut self, host: Ipv4Addr, delay: Duration, jitter: Duration) -> Result<(), FirewallError> {
        if self.delay.is_none() {
            self.delay = Some(PacketDelay::start(self.seed)?);
        }
        let Some(d) = &self.delay else { unreachable!("started above") };
        d.set(delay, jitter);
        let queue = d.queue_num.to_string();
        for dir in ["-s", "-d"] {
            // --queue-bypass: were this process gone, packets would pass rather than drop.
            iptables(&["-A", &self.link_chain, dir, &host.to_string(), "-j", "NFQUEUE", "--queue-num", &queue, "--queue-bypass"])?;
        }
        Ok(())
    }

    /// Removes every loss and delay rule; packets already held leave on their schedule.
    pub fn restore_links(&mut self) -> Result<(), FirewallError> {
        iptables(&["-F", &self.link_chain])
    }
}

impl Drop for Firewall {
    fn drop(&mut self) {
        for chain in [&self.chain, &self.link_chain] {
            if let Err(e) = remove_chain(chain) {
                tracing::error!(%chain, error = %e, "could not remove a nemesis chain; remove it by hand");
            }
        }
        // After the rules: nothing more is queued, and what is held is let through.
        self.delay = None;
    }
}

/// Most packets held at once; beyond it a packet passes at once (and the kernel's queue, sized
/// above it, never fills).
const HELD_MAX: usize = 16_384;
const KERNEL_QUEUE_LEN: u32 = 20_000;
/// Queue numbers tried for a run's queue: several runs may share the machine.
const QUEUE_NUMS: std::ops::Range<u16> = 31_000..31_512;
/// How often the holding thread looks for packets to receive and to release.
const POLL_EVERY: Duration = Duration::from_millis(1);

/// The delay, as (base, jitter) in microseconds.
type DelaySetting = Arc<Mutex<(u64, u64)>>;

/// Holds queued packets in a thread of this process: receives them from the kernel's netfilter
/// queue and gives each its verdict (accept) when its delay has passed.
#[derive(Debug)]
pub struct PacketDelay {
    pub queue_num: u16,
    setting: DelaySetting,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl PacketDelay {
    /// Binds the first free queue number of [`QUEUE_NUMS`] and starts the holding thread.
    pub fn start(seed: u64) -> Result<Self, FirewallError> {
        let mut queue = nfq::Queue::open().map_err(FirewallError::Queue)?;
        let queue_num = QUEUE_NUMS
            .clone()
            .find(|&n| queue.bind(n).is_ok())
            .ok_or(FirewallError::NoQueue { first: QUEUE_NUMS.start, last: QUEUE_NUMS.end - 1 })?;
        let configure = |queue: &mut nfq::Queue| -> std::io::Result<()> {
            // Only the verdict is needed, never the payload.
            queue.set_copy_range(queue_num, 0)?;
            queue.set_queue_max_len(queue_num, KERNEL_QUEUE_LEN)?;
            queue.set_fail_open(queue_num, true)?;
            // Loopback packets are large GSO ones; taking them whole spares segmenting them.
            queue.set_recv_gso(queue_num, true)
        };
        configure(&mut queue).map_err(FirewallError::Queue)?;
        queue.set_nonblocking(true);
        let setting: DelaySetting = Arc::new(Mutex::new((0, 0)));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (setting.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("jepsen-packet-delay".into())
            .spawn(move || hold_packets(queue, queue_num, &s, &st, seed))
            .map_err(FirewallError::Queue)?;
        Ok(Self { queue_num, setting, stop, thread: Some(thread) })
    }

    pub fn set(&self, delay: Duration, jitter: Duration) {
        let micros = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        *self.setting.lock().unwrap_or_else(|p| p.into_inner()) = (micros(delay), micros(jitter));
    }
}

impl Drop for PacketDelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The holding thread: until `stop`, receives packets, holds each for the current delay plus a
/// random share of the jitter (never letting one overtake another), and accepts them when due;
/// on `stop`, accepts everything held and unbinds.
fn hold_packets(mut queue: nfq::Queue, queue_num: u16, setting: &DelaySetting, stop: &AtomicBool, seed: u64) {
    let mut rng = XorShiftRng::seed_from_u64(seed ^ 0xDE1A_7000);
    let mut held: VecDeque<(Instant, nfq::Message)> = VecDeque::new();
    let mut last_due = Instant::now();
    let mut receive_failing = false;
    let accept = |queue: &mut nfq::Queue, mut msg: nfq::Message| {
        msg.set_verdict(nfq::Verdict::Accept);
        if let Err(e) = queue.verdict(msg) {
            tracing::warn!(error = %e, "link delay: could not release a packet");
        }
    };
    loop {
        let stopping = stop.load(Ordering::Acquire);
        loop {
            match queue.recv() {
                Ok(msg) if held.len() >= HELD_MAX => accept(&mut queue, msg),
                Ok(msg) => {
                    let (base, jitter) = *setting.lock().unwrap_or_else(|p| p.into_inner());
                    let delay = Duration::from_micros(base + if jitter > 0 { rng.random_range(0..=jitter) } else { 0 });
                    last_due = last_due.max(Instant::now() + delay);
                    held.push_back((last_due, msg));
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    receive_failing = false;
                    break;
                }
                Err(e) => {
                    // Once per run of failures, not once per poll (a thousand times a second).
                    if !receive_failing {
                        tracing::warn!(error = %e, "link delay: receiving from the netfilter queue");
                    }
                    receive_failing = true;
                    break;
                }
            }
        }
        let now = Instant::now();
        while held.front().is_some_and(|(due, _)| stopping || *due <= now) {
            if let Some((_, msg)) = held.pop_front() {
                accept(&mut queue, msg);
            }
        }
        if stopping {
            break;
        }
        std::thread::sleep(POLL_EVERY);
    }
    if let Err(e) = queue.unbind(queue_num) {
        tracing::warn!(error = %e, queue_num, "link delay: unbinding the netfilter queue");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    /// A server on `ip` that echoes one byte per connection; returns its address.
    fn echo_server(ip: Ipv4Addr) -> std::net::SocketAddr {
        let listener = TcpListener::bind((ip, 0)).unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for mut s in listener.incoming().flatten() {
                let mut b = [0u8; 1];
                if s.read_exact(&mut b).is_ok() {
                    let _ = s.write_all(&b);
                }
            }
        });
        addr
    }

    /// One byte there and back on a fresh connection: its round trip, or the error.
    fn round_trip(addr: std::net::SocketAddr, within: Duration) -> std::io::Result<Duration> {
        let start = Instant::now();
        let mut s = TcpStream::connect_timeout(&addr, within)?;
        s.set_read_timeout(Some(within))?;
        s.write_all(b"x")?;
        let mut b = [0u8; 1];
        s.read_exact(&mut b)?;
        Ok(start.elapsed())
    }

    // These need root and iptables, as the network nemeses do; CI runs as root
    // (`scripts/install-deps`). Without them, `Firewall::new` fails and says so.
    #[test]
    fn a_slowed_link_delays_every_packet_and_is_whole_again_after_restore() {
        let host = Ipv4Addr::new(127, 201, 77, 9);
        let addr = echo_server(host);
        let mut fw = Firewall::new(&format!("t{}d", std::process::id()), 1).unwrap();
        fw.slow(host, Duration::from_millis(100), Duration::from_millis(20)).unwrap();
        // Connect (SYN, SYN-ACK) and one byte each way: at least four packets to or from the
        // host, each held 100 ms at least.
        let slowed = round_trip(addr, Duration::from_secs(10)).unwrap();
        assert!(slowed >= Duration::from_millis(400), "round trip took {slowed:?}");
        fw.restore_links().unwrap();
        let whole = round_trip(addr, Duration::from_secs(10)).unwrap();
        assert!(whole < Duration::from_millis(100), "round trip took {whole:?} after restore");
    }

    #[test]
    fn a_lossy_link_drops_packets_and_dropping_the_firewall_removes_its_chains() {
        let host = Ipv4Addr::new(127, 201, 77, 10);
        let addr = echo_server(host);
        let tag = format!("t{}l", std::process::id());
        let mut fw = Firewall::new(&tag, 1).unwrap();
        // Certain loss: no connection can be made.
        fw.lose(host, 1.0).unwrap();
        assert!(round_trip(addr, Duration::from_millis(500)).is_err());
        assert!(fw.lose(host, 1.5).is_err());
        fw.restore_links().unwrap();
        round_trip(addr, Duration::from_secs(5)).unwrap();
        fw.lose(host, 1.0).unwrap();
        drop(fw);
        let rules = Command::new("iptables").args(["-w", "-S"]).output().unwrap();
        let rules = String::from_utf8_lossy(&rules.stdout);
        assert!(!rules.contains(&tag), "{rules}");
        round_trip(addr, Duration::from_secs(5)).unwrap();
    }
}
