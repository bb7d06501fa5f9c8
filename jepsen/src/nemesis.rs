//! Nemeses: the faults a run injects, scheduled from the run's seed so that a seed replays the
//! same schedule. Each fault is injected, held, then healed; the window from injection to heal
//! is recorded ([`FaultWindow`]) for the availability and recovery report.
//!
//! Kinds so far: `kill` (SIGKILL of a random broker, restarted at heal), `kill-leader` (of the
//! broker leading a random queue's group), `kill-majority`, `pause` (SIGSTOP, SIGCONT at heal)
//! and `power-loss` (SIGKILL of every broker at once, all restarted at heal; the run starts the
//! brokers in power-loss mode, so the kill loses every write not yet fdatasynced, as a
//! coordinated power cut would), the four partitions (iptables, `crate::net`), and `slow-fsync`
//! (every fdatasync of one broker's log waits 50–500 ms; the run starts the brokers in their
//! slow-fsync test mode), and the degraded links `link-delay` (every packet to or from one broker
//! held 20–300 ms) and `link-loss` (5–30 % of them dropped), also in `crate::net`; and
//! `move-leader` (a random queue's leadership handed to another of its replicas through
//! `AdminService.MoveLeader`: a Raft leader transfer under load). Membership change and
//! controller kill slot in as further [`NemesisKind`]s.
//!
//! Two more cut the power in ways the plain power loss does not: `torn-write` (every broker at
//! once, with the brokers' log file layer tearing the last page written of each file: a prefix
//! of what was written there since the last sync survives, the rest is garbage or zeros) and
//! `store-loss` (one broker: its fsync slowed, its queue store flushed at once, then its power
//! cut 0.2–1.5 s later, so the store loses what it applied since and the log what it had not
//! synced, while what the store flushed may be ahead of what the log had synced).

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use proto::raftmq::v1::status::Code;
use proto::raftmq::v1::{DescribeTopicRequest, MoveLeaderRequest, QueueInfo};
use rand::RngExt;
use rand::seq::SliceRandom;
use rand_xorshift::XorShiftRng;

use crate::cluster::{ClusterError, LocalCluster, admin_client};

/// One kind of fault; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NemesisKind {
    Kill,
    KillLeader,
    KillMajority,
    Pause,
    PowerLoss,
    /// The brokers split into two random halves.
    PartitionHalves,
    /// A random queue's leader cut off from every other broker.
    PartitionLeader,
    /// Two halves that cannot talk, and one broker both can (Jepsen's bridge).
    PartitionBridge,
    /// One broker receives nothing from the others, while they still receive from it.
    PartitionOneWay,
    /// Every fdatasync of a random broker's log waits 50–500 ms first.
    SlowFsync,
    /// Every packet to or from a random broker is held 20–300 ms (plus up to a fifth more).
    LinkDelay,
    /// Each packet to or from a random broker is dropped with a probability of 5–30 %.
    LinkLoss,
    /// Power loss of every broker, tearing the last page written of each log file.
    TornWrite,
    /// One broker's fsync slowed, its store flushed, then its power cut.
    StoreLoss,
    /// A random queue's leadership handed to another of its replicas (nothing to heal).
    MoveLeader,
}

impl NemesisKind {
    pub const ALL: [NemesisKind; 15] = [
        NemesisKind::Kill,
        NemesisKind::KillLeader,
        NemesisKind::KillMajority,
        NemesisKind::Pause,
        NemesisKind::PowerLoss,
        NemesisKind::PartitionHalves,
        NemesisKind::PartitionLeader,
        NemesisKind::PartitionBridge,
        NemesisKind::PartitionOneWay,
        NemesisKind::SlowFsync,
        NemesisKind::LinkDelay,
        NemesisKind::LinkLoss,
        NemesisKind::TornWrite,
        NemesisKind::StoreLoss,
        NemesisKind::MoveLeader,
    ];

    /// Whether it needs the firewall (root and iptables).
    pub fn needs_firewall(self) -> bool {
        matches!(
            self,
            NemesisKind::PartitionHalves
                | NemesisKind::PartitionLeader
                | NemesisKind::PartitionBridge
                | NemesisKind::PartitionOneWay
                | NemesisKind::LinkDelay
                | NemesisKind::LinkLoss
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            NemesisKind::Kill => "kill",
            NemesisKind::KillLeader => "kill-leader",
            NemesisKind::KillMajority => "kill-majority",
            NemesisKind::Pause => "pause",
            NemesisKind::PowerLoss => "power-loss",
            NemesisKind::PartitionHalves => "partition-halves",
            NemesisKind::PartitionLeader => "partition-leader",
            NemesisKind::PartitionBridge => "partition-bridge",
            NemesisKind::PartitionOneWay => "partition-one-way",
            NemesisKind::SlowFsync => "slow-fsync",
            NemesisKind::LinkDelay => "link-delay",
            NemesisKind::LinkLoss => "link-loss",
            NemesisKind::TornWrite => "torn-write",
            NemesisKind::StoreLoss => "store-loss",
            NemesisKind::MoveLeader => "move-leader",
        }
    }

    /// Whether the brokers must run in power-loss mode (a SIGKILL loses what was not synced).
    pub fn needs_power_loss_mode(self) -> bool {
        matches!(self, NemesisKind::PowerLoss | NemesisKind::TornWrite | NemesisKind::StoreLoss)
    }

    /// Whether the brokers must read the slow-fsync delay file.
    pub fn needs_fsync_delay_file(self) -> bool {
        matches!(self, NemesisKind::SlowFsync | NemesisKind::StoreLoss)
    }
}

impl FromStr for NemesisKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NemesisKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| format!("unknown nemesis {s:?}; known: {}", NemesisKind::ALL.map(|k| k.name()).join(", ")))
    }
}

/// A fault in force: what was done, to undo at heal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    Killed(Vec<u64>),
    Paused(Vec<u64>),
    /// Every broker, at once.
    PowerLost(Vec<u64>),
    /// Firewall rules in force, as described.
    Partitioned(String),
    /// Every fdatasync of the broker's log waits this long first.
    SlowFsync {
        broker: u64,
        delay_ms: u64,
    },
    /// Loss or delay rules in force, as described.
    LinkDegraded(String),
    /// Every broker's power cut, with torn pages.
    TornPowerLost(Vec<u64>),
    /// One broker's power cut `after_ms` after its store was flushed (`flushed`: it confirmed),
    /// its fsync slowed by `fsync_delay_ms` from before the flush.
    StoreLost {
        broker: u64,
        fsync_delay_ms: u64,
        after_ms: u64,
        flushed: bool,
    },
    /// A leader transfer, as described (its outcome included).
    LeaderMoved(String),
}

impl Fault {
    pub fn describe(&self) -> String {
        let list = |ids: &[u64]| ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
        match self {
            Fault::Killed(ids) => format!("kill -9 broker {}", list(ids)),
            Fault::Paused(ids) => format!("pause broker {}", list(ids)),
            Fault::PowerLost(ids) => format!("power loss of broker {}", list(ids)),
            Fault::Partitioned(what) => what.clone(),
            Fault::SlowFsync { broker, delay_ms } => format!("fsync of broker {broker} slowed by {delay_ms} ms"),
            Fault::LinkDegraded(what) => what.clone(),
            Fault::TornPowerLost(ids) => format!("power loss of broker {} with torn pages", list(ids)),
            Fault::StoreLost { broker, fsync_delay_ms, after_ms, flushed } => format!(
                "store of broker {broker} flushed{}, power cut {after_ms} ms later, fsync slowed by {fsync_delay_ms} ms",
                if *flushed { "" } else { " (not confirmed)" }
            ),
            Fault::LeaderMoved(what) => what.clone(),
        }
    }
}

/// How long faults last and how long the cluster is left alone between them.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    pub fault_min: Duration,
    pub fault_max: Duration,
    pub quiet_min: Duration,
    pub quiet_max: Duration,
}

impl Default for Schedule {
    fn default() -> Self {
        Self {
            fault_min: Duration::from_secs(3),
            fault_max: Duration::from_secs(8),
            quiet_min: Duration::from_secs(3),
            quiet_max: Duration::from_secs(6),
        }
    }
}

pub fn between(rng: &mut XorShiftRng, min: Duration, max: Duration) -> Duration {
    if max <= min {
        return min;
    }
    min + Duration::from_millis(rng.random_range(0..=(max - min).as_millis() as u64))
}

/// `queue` of `topic` as the first broker that answers describes it with a leader, and that
/// broker's client address.
async fn described_queue(cluster: &LocalCluster, topic: &str, queue: u32) -> Option<(QueueInfo, SocketAddr)> {
    for b in &cluster.brokers {
        let mut admin = admin_client(b.client_addr());
        let req = DescribeTopicRequest { name: topic.into() };
        if let Ok(Ok(r)) = tokio::time::timeout(Duration::from_secs(2), admin.describe_topic(req)).await
            && let Some(q) = r.into_inner().queues.into_iter().find(|q| q.queue_id == queue && q.leader_broker_id != 0)
        {
            return Some((q, b.client_addr()));
        }
    }
    None
}

/// The broker leading `queue` of `topic`, as the cluster reports it (any broker that answers).
async fn leader_of(cluster: &LocalCluster, topic: &str, queue: u32) -> Option<u64> {
    described_queue(cluster, topic, queue).await.map(|(q, _)| q.leader_broker_id)
}

/// Injects one fault of `kind`; targets chosen with `rng`.
pub async fn inject(
    kind: NemesisKind,
    cluster: &mut LocalCluster,
    topic: &str,
    queues: u32,
    rng: &mut XorShiftRng,
) -> Result<Fault, ClusterError> {
    let mut ids = cluster.ids();
    ids.shuffle(rng);
    let fault = match kind {
        NemesisKind::Kill => Fault::Killed(ids[..1].to_vec()),
        NemesisKind::KillLeader => {
            let queue = rng.random_range(0..queues.max(1));
            let leader = leader_of(cluster, topic, queue).await.unwrap_or(ids[0]);
            Fault::Killed(vec![leader])
        }
        NemesisKind::KillMajority => Fault::Killed(ids[..ids.len() / 2 + 1].to_vec()),
        NemesisKind::Pause => Fault::Paused(ids[..1].to_vec()),
        NemesisKind::PowerLoss => {
            ids.sort_unstable();
            Fault::PowerLost(ids)
        }
        NemesisKind::TornWrite => {
            ids.sort_unstable();
            Fault::TornPowerLost(ids)
        }
        NemesisKind::StoreLoss => {
            let (broker, fsync_delay_ms, after_ms) = (ids[0], rng.random_range(50..=300u64), rng.random_range(200..=1500u64));
            cluster.set_fsync_delay(broker, fsync_delay_ms)?;
            // The delay file is read every 100 ms: let the slow fsync take hold first.
            tokio::time::sleep(Duration::from_millis(200)).await;
            let flushed = cluster.flush_store(broker, Duration::from_secs(10)).await?;
            tokio::time::sleep(Duration::from_millis(after_ms)).await;
            cluster.kill9(broker)?;
            return Ok(Fault::StoreLost { broker, fsync_delay_ms, after_ms, flushed });
        }
        NemesisKind::MoveLeader => {
            let queue = rng.random_range(0..queues.max(1));
            return Ok(Fault::LeaderMoved(move_leader(cluster, topic, queue, rng).await));
        }
        NemesisKind::SlowFsync => {
            let (broker, delay_ms) = (ids[0], rng.random_range(50..=500u64));
            cluster.set_fsync_delay(broker, delay_ms)?;
            return Ok(Fault::SlowFsync { broker, delay_ms });
        }
        NemesisKind::LinkDelay => {
            let (broker, delay_ms) = (ids[0], rng.random_range(20..=300u64));
            let ip = cluster.broker(broker)?.ip;
            let fw = cluster.firewall.as_mut().ok_or(ClusterError::NoFirewall)?;
            fw.slow(ip, Duration::from_millis(delay_ms), Duration::from_millis(delay_ms / 5))?;
            return Ok(Fault::LinkDegraded(format!("packets of broker {broker} held {delay_ms} ms")));
        }
        NemesisKind::LinkLoss => {
            let (broker, percent) = (ids[0], rng.random_range(5..=30u32));
            let ip = cluster.broker(broker)?.ip;
            let fw = cluster.firewall.as_mut().ok_or(ClusterError::NoFirewall)?;
            fw.lose(ip, f64::from(percent) / 100.0)?;
            return Ok(Fault::LinkDegraded(format!("{percent} % of broker {broker}'s packets lost")));
        }
        NemesisKind::PartitionHalves | NemesisKind::PartitionLeader | NemesisKind::PartitionBridge | NemesisKind::PartitionOneWay => {
            let leader = match kind {
                NemesisKind::PartitionLeader => leader_of(cluster, topic, rng.random_range(0..queues.max(1))).await,
                _ => None,
            };
            return partition(kind, cluster, ids, leader);
        }
    };
    match &fault {
        Fault::Killed(ids) | Fault::PowerLost(ids) | Fault::TornPowerLost(ids) => ids.iter().try_for_each(|&id| cluster.kill9(id))?,
        Fault::Paused(ids) => ids.iter().try_for_each(|&id| cluster.pause(id))?,
        Fault::Partitioned(_) | Fault::SlowFsync { .. } | Fault::LinkDegraded(_) | Fault::StoreLost { .. } | Fault::LeaderMoved(_) => {}
    }
    Ok(fault)
}

/// Hands the leadership of `queue`'s group to one of its other replicas (chosen with `rng`),
/// through the first broker that describes the topic; describes what was asked and how it ended.
/// A refused or unanswered move is a fault too (the group may have been left to elect).
async fn move_leader(cluster: &LocalCluster, topic: &str, queue: u32, rng: &mut XorShiftRng) -> String {
    let Some((q, via)) = described_queue(cluster, topic, queue).await else {
        return format!("move queue {queue}'s leader: no broker named its leader");
    };
    let others: Vec<u64> = q.replica_broker_ids.iter().copied().filter(|&r| r != q.leader_broker_id).collect();
    if others.is_empty() {
        return format!("move queue {queue}'s leader: no other replica");
    }
    let to = others[rng.random_range(0..others.len())];
    let req = MoveLeaderRequest { group_id: q.group_id, to_broker_id: to };
    let outcome = match tokio::time::timeout(Duration::from_secs(12), admin_client(via).move_leader(req)).await {
        Ok(Ok(r)) => match r.into_inner().status {
            Some(s) if s.code == Code::Ok as i32 => "done".to_owned(),
            Some(s) => format!("refused: {}", s.message),
            None => "answered without a status".to_owned(),
        },
        Ok(Err(e)) => format!("failed: {}", e.message()),
        Err(_) => "no answer within 12 s".to_owned(),
    };
    format!("move group {}'s leader from broker {} to {to}: {outcome}", q.group_id, q.leader_broker_id)
}

/// Applies a partition of `kind` over the brokers in `ids` (shuffled); `leader` for
/// [`NemesisKind::PartitionLeader`].
fn partition(kind: NemesisKind, cluster: &mut LocalCluster, mut ids: Vec<u64>, leader: Option<u64>) -> Result<Fault, ClusterError> {
    let ip = |cluster: &LocalCluster, id: u64| cluster.broker(id).map(|b| b.ip);
    let list = |ids: &[u64]| ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
    let ips = |cluster: &LocalCluster, ids: &[u64]| ids.iter().map(|&id| ip(cluster, id)).collect::<Result<Vec<_>, _>>();
    let (a, b, what) = match kind {
        NemesisKind::PartitionLeader => {
            let isolated = leader.unwrap_or(ids[0]);
            ids.retain(|&id| id != isolated);
            (vec![isolated], ids, format!("isolate broker {isolated}"))
        }
        NemesisKind::PartitionBridge => {
            // a | bridge | b: the bridge sees both sides, the sides not each other.
            let bridge = ids.pop().unwrap_or(0);
            let half = ids.len() / 2;
            let (a, b) = (ids[..half].to_vec(), ids[half..].to_vec());
            let what = format!("partition {{{}}} | {{{}}} bridged by broker {bridge}", list(&a), list(&b));
            (a, b, what)
        }
        NemesisKind::PartitionOneWay => {
            let deaf = ids[0];
            let others: Vec<u64> = ids[1..].to_vec();
            let from = ips(cluster, &others)?;
            let to = ip(cluster, deaf)?;
            let fw = cluster.firewall.as_mut().ok_or(ClusterError::NoFirewall)?;
            for f in from {
                fw.block(f, to)?;
            }
            return Ok(Fault::Partitioned(format!("broker {deaf} hears nothing from {}", list(&others))));
        }
        _ => {
            let half = ids.len() / 2;
            let (a, b) = (ids[..half].to_vec(), ids[half..].to_vec());
            let what = format!("partition {{{}}} | {{{}}}", list(&a), list(&b));
            (a, b, what)
        }
    };
    let (a_ips, b_ips) = (ips(cluster, &a)?, ips(cluster, &b)?);
    cluster.firewall.as_mut().ok_or(ClusterError::NoFirewall)?.cut(&a_ips, &b_ips)?;
    Ok(Fault::Partitioned(what))
}

/// Undoes `fault`: restarts killed brokers, resumes paused ones, removes network rules.
pub fn heal(fault: &Fault, cluster: &mut LocalCluster) -> Result<(), ClusterError> {
    match fault {
        Fault::Killed(ids) | Fault::PowerLost(ids) | Fault::TornPowerLost(ids) => ids.iter().try_for_each(|&id| cluster.restart(id)),
        Fault::StoreLost { broker, .. } => {
            cluster.set_fsync_delay(*broker, 0)?;
            cluster.restart(*broker)
        }
        Fault::Paused(ids) => ids.iter().try_for_each(|&id| cluster.resume(id)),
        Fault::Partitioned(_) => Ok(cluster.firewall.as_mut().ok_or(ClusterError::NoFirewall)?.heal()?),
        Fault::SlowFsync { broker, .. } => cluster.set_fsync_delay(*broker, 0),
        Fault::LinkDegraded(_) => Ok(cluster.firewall.as_mut().ok_or(ClusterError::NoFirewall)?.restore_links()?),
        Fault::LeaderMoved(_) => Ok(()),
    }
}
