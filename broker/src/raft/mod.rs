//! Raft plumbing of a broker: the node type every group shares, the transport between brokers
//! (one gRPC connection per peer broker, shared by all groups) and the server side that routes
//! each request to its group.

pub mod codec;
pub mod network;
pub mod registry;
pub mod service;

use std::fmt;

use serde::{Deserialize, Serialize};

/// A broker's id, unique in the cluster: the Raft node id of each of its group replicas.
pub type BrokerId = u64;

/// Identifies a Raft group (a queue group, or the metadata group) in the cluster.
pub type GroupId = u64;

/// What the Raft layer knows of a broker: where its Raft transport listens.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerNode {
    /// `host:port` of the broker's `raftmq.v1.RaftTransport` service.
    pub raft_addr: String,
}

impl fmt::Display for BrokerNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raft_addr)
    }
}
