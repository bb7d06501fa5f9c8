//! raftmq's commit log.
//!
//! Every Raft group of a process writes its log into one [`LogEngine`]: a directory of
//! preallocated segment files holding checksummed records (see [`record`] for the byte
//! layout). One flusher makes the appends of all groups durable with one `fdatasync` per round
//! (group commit). Opening the log verifies every checksum, cuts a torn tail and refuses, naming
//! the file and byte offset, to read past damage anywhere else.
//!
//! - [`LogEngine`], [`GroupLog`]: the engine and one group's view of it, with the durability
//!   contract in [`engine`].
//! - [`RaftLogStore`]: openraft's log storage traits over a [`GroupLog`].
//! - [`fs`], [`fault`]: the file layer, and one that loses unsynced writes on a simulated crash.
//! - [`verify`]: offline verification and dump of a log directory (`raftmq log verify|dump`).

mod durable_index;
pub mod engine;
mod error;
pub mod fault;
pub mod fs;
mod group_index;
mod raft;
pub mod record;
pub mod segment;
#[cfg(feature = "testing")]
pub mod testing;
pub mod verify;

pub use durable_index::DurableAt;
pub use engine::{GroupId, GroupLog, GroupState, LogEngine, LogOptions, OnDurable, Position, RecoveryReport, StoredEntry};
pub use error::LogError;
pub use raft::{PAYLOAD_BYTES_MAX, RaftLogStore, StoredTypes};
