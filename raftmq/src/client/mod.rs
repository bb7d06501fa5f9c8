//! The client side of raftmq's native API (`raftmq.v1` QueueService and AdminService):
//! `raftmq admin`, `raftmq produce`, `raftmq consume`, and what the broker benchmarks
//! (`raftmq bench produce|consume|e2e`) share with them.
//!
//! Every call starts at the `--broker` endpoint or, for a queue, at the queue's leader as
//! DescribeTopic and ClusterStatus name it; NOT_LEADER hints, BUSY and UNAVAILABLE lead to a
//! bounded number of retries ([`retry::RetryPolicy`]). A send whose retries run out after an
//! UNAVAILABLE or a transport failure has an unknown outcome, not a failed one: it may be stored.
//! Sends carry a random producer id and increasing sequences, so the broker stores a retried
//! message once.

pub mod admin;
mod cluster;
mod connection;
pub mod consume;
pub mod produce;
mod retry;
mod route;
mod status;
mod table;

use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

use clap::Args;

pub use cluster::{CallFailure, Cluster, Router, Target};
pub use connection::{CALL_TIMEOUT, admin_client, queue_client, request};
pub use status::CallError;

/// Exit code when a command ran but what it checks did not hold: replicas disagree
/// (`admin group checksum`), a benchmark did not complete its count.
pub const EXIT_CHECK_FAILED: u8 = 1;
/// Exit code of `produce` when its last send's outcome is unknown: it may or may not be stored.
pub const EXIT_OUTCOME_UNKNOWN: u8 = 3;

/// Where the client connects.
#[derive(Args, Debug, Clone)]
pub struct ConnectArgs {
    /// Any broker's client endpoint, HOST:PORT. Calls for a queue then go to its leader.
    #[arg(long, env = "RAFTMQ_BROKER", default_value = "127.0.0.1:8081", value_parser = connection::parse_endpoint)]
    pub broker: String,
}

impl ConnectArgs {
    pub fn cluster(&self) -> Arc<Cluster> {
        Cluster::new(self.broker.clone(), retry::RetryPolicy::default())
    }
}

/// The options of commands that only need a broker and an output format.
#[derive(Args, Debug, Clone)]
pub struct CommonArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Print JSON on stdout instead of text: one object per message (produce, consume), else one
    /// object in all.
    #[arg(long)]
    pub json: bool,
}

/// The runtime of one client command.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

/// 64 unpredictable bits from the standard library's randomly keyed hasher (its keys come from
/// the OS), so that no random number crate is needed for the few ids a client makes.
pub fn random_u64() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.finish()
}

/// A producer id unique to this process (128 random bits), for the broker's deduplication of
/// retried sends.
pub fn producer_id() -> String {
    format!("raftmq-cli-{:016x}{:016x}", random_u64(), random_u64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn producer_ids_differ() {
        let (a, b) = (producer_id(), producer_id());
        assert_ne!(a, b);
        assert_eq!(a.len(), "raftmq-cli-".len() + 32);
    }
}
