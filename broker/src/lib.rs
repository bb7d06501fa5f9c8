//! The broker: hosts many Raft groups (queue groups) on one `raft-log` engine, the Raft
//! transport, the queue state machine and the client-facing gRPC services.
//!
//! Built in issue #4; this crate holds its place in the workspace until then.
