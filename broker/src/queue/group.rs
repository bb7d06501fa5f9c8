//! One queue group's replica on this broker, whole: its Raft (the log, the state machine) and
//! the leader's send path, created together and held in the host's one map of queue groups.

use openraft::Raft;

use super::{QueueGroupConfig, QueueStateMachine, SendBatcher};

/// The Raft of a queue group replica.
pub type QueueRaft = Raft<QueueGroupConfig, QueueStateMachine>;

/// A queue group replica hosted here; cheap to clone.
#[derive(Clone)]
pub struct QueueGroup {
    raft: QueueRaft,
    /// Batches this broker's sends into entries while it leads; refuses them when it does not.
    batcher: SendBatcher,
}

impl QueueGroup {
    pub(crate) fn new(raft: QueueRaft, batcher: SendBatcher) -> Self {
        Self { raft, batcher }
    }

    pub fn raft(&self) -> &QueueRaft {
        &self.raft
    }

    pub fn batcher(&self) -> &SendBatcher {
        &self.batcher
    }
}
