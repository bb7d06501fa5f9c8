//! The controller: cluster metadata as its own Raft group (the metadata group, hosted by the
//! brokers). It records brokers, topics and the queue groups holding their queues, and decides
//! where each group's replicas go.
//!
//! - [`model`]: [`ClusterMap`], the metadata every replica folds the log into.
//! - [`command`]: [`MetaCommand`], [`MetaReply`], the metadata group's Raft data.
//! - [`apply`]: [`apply()`](apply::apply), what a command does to the map, without IO.
//! - [`placement`]: [`PlacementPlan`], deterministic replica and preferred-leader placement.
//! - [`state_machine`]: [`MetaStateMachine`], openraft's state machine over the map, with
//!   durable snapshot files and a watch of the map for the broker.

pub mod apply;
pub mod command;
pub mod model;
pub mod placement;
pub mod state_machine;

/// Identifies a broker; it is the broker's Raft node id in every group.
pub type BrokerId = u64;

/// Identifies a Raft group in the cluster: [`META_GROUP_ID`] for the metadata group, 1 and up
/// for queue groups.
pub type GroupId = u64;

/// The metadata group's id.
pub const META_GROUP_ID: GroupId = 0;

pub use command::{MetaCommand, MetaReply, QUEUES_PER_TOPIC_MAX};
pub use model::{BrokerRecord, CHECKPOINT_INTERVAL_ENTRIES_MAX, ClusterMap, GroupOptions, GroupRecord, MessageType, TopicRecord};
pub use placement::{PlacementError, PlacementPlan, ZONE_LABEL};
pub use state_machine::{MetaError, MetaSnapshotBuilder, MetaStateMachine, MetaTypeConfig, SNAPSHOT_BYTES_MAX};
