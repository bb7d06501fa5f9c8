//! Measures what idle Raft groups cost: three brokers in this process, each hosting `GROUPS`
//! replicas (one raft-log engine per broker, the real gRPC transport on loopback), all groups
//! elected and then idle; prints the process's CPU time over a quiet window.
//!
//!     cargo run --release -p broker --example idle_groups -- [GROUPS] [HEARTBEAT_MS] [SECONDS]
//!
//! A measurement, not a test: the number goes into docs/benchmarks.md. The test-only in-memory
//! state machine stands in for the queue state machine (idle groups apply nothing).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use broker::raft::network::{GroupNetworkFactory, PeerChannels};
use broker::raft::registry::GroupRegistry;
use broker::raft::service::RaftTransportService;
use broker::raft::{BrokerId, BrokerNode};
use openraft::{Config, Raft};
use proto::raftmq::v1::raft_transport_server::RaftTransportServer;
use raft_log::testing::MapStateMachine;
use raft_log::{LogEngine, LogOptions, RaftLogStore};
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

broker::group_types!(pub IdleGroup: String => String);

/// CPU time (user + system) of this whole process so far, in seconds: fields 14 and 15 of
/// /proc/self/stat, in USER_HZ ticks, which Linux fixes at 100 for user space.
fn cpu_seconds() -> f64 {
    const USER_HZ: f64 = 100.0;
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_name = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / USER_HZ
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<u64> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let groups = args.first().copied().unwrap_or(100);
    let heartbeat_ms = args.get(1).copied().unwrap_or(500);
    let seconds = args.get(2).copied().unwrap_or(10);
    let config = Arc::new(
        Config {
            heartbeat_interval: heartbeat_ms,
            election_timeout_min: heartbeat_ms * 4,
            election_timeout_max: heartbeat_ms * 8,
            ..Default::default()
        }
        .validate()?,
    );
    let mut dirs = Vec::new();
    let mut brokers = Vec::new();
    for id in 1..=3u64 {
        let dir = tempfile::tempdir()?;
        let (engine, _) = LogEngine::open(dir.path(), LogOptions::default())?;
        let registry = GroupRegistry::default();
        let peers = PeerChannels::new();
        let incoming = TcpIncoming::bind("127.0.0.1:0".parse()?)?.with_nodelay(Some(true));
        let addr = incoming.local_addr()?;
        let service = RaftTransportServer::new(RaftTransportService::new(id, registry.clone()));
        tokio::spawn(async move { Server::builder().add_service(service).serve_with_incoming(incoming).await });
        let mut rafts = Vec::new();
        for g in 0..groups {
            let raft = Raft::new(
                id,
                config.clone(),
                GroupNetworkFactory::new(g, peers.clone()),
                RaftLogStore::new(engine.group(g)),
                MapStateMachine::<IdleGroup>::default(),
            )
            .await?;
            registry.insert(g, raft.clone());
            rafts.push(raft);
        }
        dirs.push(dir);
        brokers.push((id, addr, rafts, engine));
    }
    let members: BTreeMap<BrokerId, BrokerNode> =
        brokers.iter().map(|(id, addr, _, _)| (*id, BrokerNode { raft_addr: addr.to_string() })).collect();
    let started = Instant::now();
    for g in 0..groups as usize {
        // Spread the initial leaders over the brokers.
        brokers[g % 3].2[g].initialize(members.clone()).await?;
    }
    for g in 0..groups as usize {
        brokers[0].2[g]
            .wait(Some(Duration::from_secs(60)))
            .metrics(|m| m.current_leader.is_some() && m.last_applied.is_some(), "leader")
            .await?;
    }
    println!("{groups} groups x 3 replicas elected in {:.1} s", started.elapsed().as_secs_f64());
    // Let the elections' traffic settle, then measure an idle window.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (cpu0, t0) = (cpu_seconds(), Instant::now());
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let cpu = cpu_seconds() - cpu0;
    let wall = t0.elapsed().as_secs_f64();
    let per_broker = 100.0 * cpu / wall / 3.0;
    println!(
        "idle {wall:.0} s: {groups} group replicas per broker, heartbeat {heartbeat_ms} ms: {per_broker:.2} % of one core per broker ({:.1} % scaled to 1,000 replicas)",
        per_broker / groups as f64 * 1000.0
    );
    Ok(())
}
