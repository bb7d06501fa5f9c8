//! The client side of raftmq's native API (`raftmq.v1` QueueService and AdminService):
//! `raftmq admin`, `raftmq produce`, `raftmq consume`, and what the broker benchmarks
//! (`raftmq bench produce|consume|e2e`) share with them.
//!
//! Every call starts at a broker of the `--broker` list (any one that answers; the others
//! are learned from ClusterStatus) or, for a queue, at the queue's leader as DescribeTopic and
//! ClusterStatus name it; NOT_LEADER hints, BUSY and UNAVAILABLE lead to retries bounded in
//! number ([`retry::RetryPolicy`]) and in time: every call, retries included, ends within
//! `--timeout`. A send that fails after an UNAVAILABLE or a transport failure, or at its
//! deadline, has an unknown outcome, not a failed one: it may be stored.
//! Sends carry a random producer id and increasing sequences, so the broker stores a retried
//! message once.

pub mod admin;
mod cluster;
mod connection;
pub mod consume;
mod endpoints;
pub mod produce;
mod retry;
mod route;
mod status;
mod table;

use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

use clap::Args;

pub use cluster::{CallFailure, Cluster, Router, Target};
pub use connection::{TIMEOUT_DEFAULT, admin_client, queue_client, request};
pub use status::CallError;

/// Exit code when a command ran but what it checks did not hold: replicas disagree
/// (`admin group checksum`), a benchmark did not complete its count.
pub const EXIT_CHECK_FAILED: u8 = 1;
/// Exit code of `produce` when its last send's outcome is unknown: it may or may not be stored.
pub const EXIT_OUTCOME_UNKNOWN: u8 = 3;

/// Where the client connects, and how long a call may take.
#[derive(Args, Debug, Clone)]
pub struct ConnectArgs {
    /// Brokers' client endpoints, HOST:PORT, comma-separated. Any one that answers will do: the
    /// client learns the others from the cluster, and calls for a queue go to its leader.
    #[arg(
        long,
        env = "RAFTMQ_BROKER",
        default_value = "127.0.0.1:8081",
        value_delimiter = ',',
        value_parser = connection::parse_endpoint
    )]
    pub broker: Vec<String>,
    /// Deadline of each call, its retries included: `3s`, `500ms`, `1m` (a bare number is
    /// seconds). A send that is not acknowledged by then ends with an error (exit code 3: it may
    /// still be stored).
    #[arg(long, env = "RAFTMQ_TIMEOUT", default_value = TIMEOUT_DEFAULT, value_parser = connection::parse_timeout)]
    pub timeout: std::time::Duration,
}

impl ConnectArgs {
    pub fn cluster(&self) -> Arc<Cluster> {
        Cluster::new(self.broker.clone(), self.timeout, retry::RetryPolicy::default())
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
