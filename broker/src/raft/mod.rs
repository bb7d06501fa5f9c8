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

/// Declares the openraft types of a group that brokers host: its command and reply over the
/// node id and node every group shares, so one transport and one registry serve them all.
///
/// `broker::group_types!(pub QueueGroupConfig: GroupCommand => GroupReply);`
#[macro_export]
macro_rules! group_types {
    ($(#[$attr:meta])* $vis:vis $name:ident: $command:ty => $reply:ty) => {
        openraft::declare_raft_types!(
            $(#[$attr])*
            $vis $name: D = $command, R = $reply, NodeId = $crate::raft::BrokerId, Node = $crate::raft::BrokerNode,
        );
    };
}

impl fmt::Display for BrokerNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raft_addr)
    }
}
