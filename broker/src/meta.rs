//! The metadata group as a broker hosts it: the controller's state machine
//! ([`controller::MetaStateMachine`]) under openraft types whose nodes are brokers, so it shares
//! the log engine and the Raft transport with the queue groups.
//!
//! Its voters are the configured controllers (the first three brokers by default); every other
//! registered broker is a learner, so each broker holds an up-to-date copy of the cluster map to
//! route by, and only linearizable reads go to the leader.

use controller::{MetaCommand, MetaReply, MetaStateMachine};
use openraft::Raft;

crate::group_types!(
    /// The openraft types of the metadata group.
    pub MetaGroupConfig: MetaCommand => MetaReply
);

/// The metadata group's replica on this broker.
pub type MetaRaft = Raft<MetaGroupConfig, MetaStateMachine<MetaGroupConfig>>;
