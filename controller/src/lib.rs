//! The controller: cluster metadata as its own Raft group (brokers, liveness, topics, queue
//! groups, replica and leader placement, failover, routes).
//!
//! Built from issue #4 on; this crate holds its place in the workspace until then.
