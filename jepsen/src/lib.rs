//! Fault campaigns against a real raftmq cluster: a history recorder, nemeses, a checker and a
//! report.
//!
//! Built in issue #5; this crate holds its place in the workspace until then.
