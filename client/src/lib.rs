//! The Rust client of raftmq's native API (`raftmq.v1` QueueService and AdminService), used
//! alike by the `raftmq` command line, its benchmarks and the jepsen harness: one route table,
//! one retry policy, one reading of what a status promises.
//!
//! Every call starts at a broker of the endpoint list (any one that answers; the others are
//! learned from ClusterStatus) or, for a queue, at the queue's leader as DescribeTopic and
//! ClusterStatus name it; NOT_LEADER hints, BUSY and UNAVAILABLE lead to retries bounded in
//! number ([`RetryPolicy`]) and in time: every call, retries included, ends within the
//! cluster's deadline. A send that fails after an UNAVAILABLE or a transport failure, or at its
//! deadline, has an unknown outcome, not a failed one: it may be stored
//! ([`CallError::maybe_applied`]).
//!
//! - [`Cluster`], [`Router`]: calls with retries over an endpoint list, and a topic's routes.
//! - [`RouteTable`]: each queue's leader endpoint.
//! - [`RetryPolicy`]: the pure retry decision after a failed attempt.
//! - [`CallError`]: what a failed attempt means, from a status or the transport.
//! - [`transport`]: whether a request that failed in transport certainly never left.
//! - [`connection`]: channels, deadlines, endpoint and timeout parsing.

mod cluster;
pub mod connection;
mod endpoints;
pub mod retry;
pub mod route;
pub mod status;
pub mod transport;

use std::hash::{BuildHasher, Hasher};

pub use cluster::{CallFailure, Cluster, Router, Target};
pub use connection::{TIMEOUT_DEFAULT, admin_client, queue_client, request};
pub use endpoints::Endpoints;
pub use retry::RetryPolicy;
pub use route::RouteTable;
pub use status::{CallError, Reply};

/// 64 unpredictable bits from the standard library's randomly keyed hasher (its keys come from
/// the OS), so that no random number crate is needed for the few ids a client makes.
pub fn random_u64() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.finish()
}

/// A producer id unique to this process (128 random bits), for the broker's deduplication of
/// retried sends; `prefix` says which program made it.
pub fn producer_id(prefix: &str) -> String {
    format!("{prefix}-{:016x}{:016x}", random_u64(), random_u64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn producer_ids_differ() {
        let (a, b) = (producer_id("raftmq-cli"), producer_id("raftmq-cli"));
        assert_ne!(a, b);
        assert_eq!(a.len(), "raftmq-cli-".len() + 32);
    }
}
