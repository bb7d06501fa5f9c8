//! Fault campaigns against a real raftmq cluster: a history recorder, nemeses, a checker and a
//! report. It talks to the cluster only as clients and an operator would.
//!
//! - [`history`]: the recorded operations (`history.jsonl`) and final reads (`final.jsonl`).
//! - [`checker`]: every anomaly a history shows, each with the events involved.
//! - [`availability`]: per fault window, the fraction of operations that succeeded and the time
//!   to the first success after it.
//! - [`cluster`]: broker processes on their own loopback hosts.
//! - [`value`]: the checksummed values producers send.
//! - [`workload`]: producers and consumers that record every operation, and the final reads.
//! - [`rocketmq`]: the same over RocketMQ 5's protocol: SimpleConsumers receiving and acking.
//! - [`nemesis`]: the faults, scheduled from the seed.
//! - [`net`]: partitions between the brokers' hosts (iptables).
//! - [`run`]: one campaign, start to checked history.
//! - [`report`]: the self-contained HTML page of a run.
//! - [`summary`]: the results of several runs as Markdown tables.

pub mod availability;
pub mod checker;
pub mod cluster;
pub mod history;
pub mod nemesis;
pub mod net;
pub mod report;
pub mod rocketmq;
pub mod run;
pub mod summary;
pub mod value;
pub mod workload;

pub use availability::{FaultWindow, WindowStats, by_window};

pub use checker::{Anomaly, AnomalyClass, CheckResult, Outcomes, check};
pub use history::{Event, EventKind, FinalRead, HistoryError, Op};
