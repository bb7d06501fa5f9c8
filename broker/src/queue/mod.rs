//! The queue state machine of a queue group: its Raft command and reply, the pure decision of
//! what each command does, and openraft's state machine over the broker's [`crate::store`].
//!
//! - [`command`]: [`GroupCommand`], [`GroupReply`] and the group's openraft type config.
//! - [`apply`]: [`apply_command`] and [`record_checkpoint`], an entry's effects on a view of the
//!   group (offsets, trims, checkpoints), without IO.
//! - [`group`]: [`QueueGroup`], one replica whole: its Raft and its send path.
//! - [`send_batcher`]: [`SendBatcher`], the leader's send path: concurrent sends batched into
//!   one entry, bounded, `Busy` beyond the bound.
//! - [`state_machine`]: [`QueueStateMachine`], openraft's `RaftStateMachine` over a
//!   [`crate::store::QueueStore`], with the checkpoint at the trim point as its snapshot.

pub mod apply;
pub mod command;
pub mod group;
pub mod send_batcher;
pub mod send_metrics;
pub mod state_machine;

pub use apply::{
    CONSUMER_GROUPS_PER_QUEUE_MAX, EntryEffects, GroupView, IN_FLIGHT_PER_CONSUMER_GROUP_MAX, QueueGroupOptions, ReceiveOutlook,
    apply_command, receive_outlook, record_checkpoint, tag_hash,
};
pub use command::{Delivery, GroupCommand, GroupReply, NewMessage, QueueGroupConfig};
pub use group::{QueueGroup, QueueRaft};
pub use send_batcher::{SendBatchLimits, SendBatcher, SendError};
pub use state_machine::{QueueStateMachine, StateMachineError, StoreView};
