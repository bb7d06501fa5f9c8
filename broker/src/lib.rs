//! The broker: hosts many Raft groups (queue groups) on one `raft-log` engine, the Raft
//! transport, the queue state machine and the client-facing gRPC services.
//!
//! - [`edge`]: validation of client input (names, sizes, limits), each violation naming its
//!   field.
//! - [`options`]: every option of a broker, its default and its validation, in one place.
//! - [`host`]: [`host::GroupHost`], one broker's many group replicas over one log engine,
//!   one store and one transport.
//! - [`raft`]: the node type, the Raft transport between brokers (client and server) and the
//!   registry of hosted groups.
//! - [`store`]: the queue store, one RocksDB per broker holding every group's derived state
//!   (consume-queue index, queue offsets, consumer offsets, applied index), written with the WAL
//!   off and flushed at known points.
//! - [`filter`]: tag and SQL92 filters a consumer reads through, parsed once, evaluated here.
//! - [`queue`]: the queue state machine: commands, their pure application, openraft's state machine.
//! - [`size_limits`]: how the size bounds of the edge, an entry, a log record and the transport
//!   fit together, and the check that refuses options where they do not.

pub mod edge;
pub mod filter;
pub mod host;
pub mod meta;
pub mod metrics;
pub mod options;
pub mod queue;
pub mod raft;
pub mod read;
pub mod retention;
pub(crate) mod routing;
pub(crate) mod serve;
pub mod server;
pub(crate) mod service;
pub mod size_limits;
pub mod store;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
