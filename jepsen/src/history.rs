//! A recorded history: every operation the workload clients made, as an invocation and a
//! completion, plus what the final read phase found. Stored as JSON lines (`history.jsonl`: one
//! [`Event`] per line; `final.jsonl`: one [`FinalRead`] per line; `replicas.jsonl`: one
//! [`QueueReplicas`] per queue) so that `raftmq jepsen check` can check a stored run again.
//!
//! Conventions (Jepsen's): a *process* runs one operation at a time, so an invocation is
//! completed by the next completion of the same process. A completion is `ok` (it happened),
//! `fail` (it certainly did not happen) or `info` (unknown: a timeout, a lost connection). A
//! process whose operation ended `info` is never used again: its operation may still take
//! effect at any later time.

use std::io::{BufRead, Write};

use serde::{Deserialize, Serialize};

/// How an event relates to its operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    Invoke,
    Ok,
    Fail,
    Info,
}

/// What an operation does, and (on an `ok` completion) what it returned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "f", rename_all = "snake_case")]
pub enum Op {
    /// Sends one unique value to `queue`, in FIFO message group `message_group` if any. On `ok`,
    /// `offset` is the acknowledged offset.
    Send {
        queue: u32,
        value: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message_group: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        offset: Option<u64>,
    },
    /// A consumer session's fetch of `queue` from `from`. On `ok`, `messages` are the
    /// `(offset, value)` pairs delivered, in order.
    Poll {
        session: u64,
        queue: u32,
        from: u64,
        #[serde(default)]
        messages: Vec<(u64, String)>,
    },
    /// Commits `offset` as `consumer_group`'s next offset on `queue`.
    Commit { consumer_group: String, queue: u32, offset: u64 },
    /// Reads `consumer_group`'s committed offset on `queue`; on `ok`, `offset` (none if never
    /// committed).
    ReadOffset {
        consumer_group: String,
        queue: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        offset: Option<u64>,
    },
    /// A RocketMQ `ReceiveMessage` of `consumer_group` naming `queue` (advisory: the broker may
    /// serve other queues it leads), each message invisible for `invisible_ms` once delivered.
    /// On `ok`, the messages delivered.
    Receive {
        consumer_group: String,
        queue: u32,
        invisible_ms: u64,
        #[serde(default)]
        messages: Vec<Delivered>,
    },
    /// A RocketMQ `AckMessage` of one delivered message by `consumer_group`, by the receipt
    /// handle of its delivery `attempt`.
    Ack { consumer_group: String, queue: u32, offset: u64, value: String, attempt: u32 },
}

/// One message a [`Op::Receive`] delivered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivered {
    pub queue: u32,
    pub offset: u64,
    pub value: String,
    /// Which delivery of the message to the consumer group this is, from 1.
    pub attempt: u32,
}

/// The queue of an [`Op::Send`] whose queue the broker chooses (RocketMQ's answer names only
/// the offset): the checker learns it from where the value was seen at that offset.
pub const QUEUE_CHOSEN_BY_BROKER: u32 = u32::MAX;

/// One line of `history.jsonl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Position in the history, from 0, dense.
    pub index: u64,
    pub process: u64,
    /// Nanoseconds since the run started.
    pub time_ns: u64,
    pub kind: EventKind,
    #[serde(flatten)]
    pub op: Op,
    /// For `fail` and `info`: why, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One line of `final.jsonl`: after the faults were healed, everything one replica (`broker`)
/// held of `queue`, read from offset 0. Messages below `start_offset` were removed by
/// retention.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalRead {
    pub broker: u64,
    pub queue: u32,
    pub start_offset: u64,
    /// The queue's end (next offset) as the replica reported it when the read finished.
    pub end_offset: u64,
    pub messages: Vec<(u64, String)>,
}

/// One line of `replicas.jsonl`: the replicas of `queue`'s group as the cluster reported them
/// before the final reads, each of which must be read for the history to be checked in full,
/// and why any of them could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueReplicas {
    pub queue: u32,
    pub replicas: Vec<u64>,
    /// Broker id → why its final read of this queue failed.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub read_errors: std::collections::BTreeMap<u64, String>,
}

/// Why a history file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("reading {what}: {source}")]
    Io { what: &'static str, source: std::io::Error },
    #[error("{what} line {line}: {source}")]
    Parse { what: &'static str, line: usize, source: serde_json::Error },
}

/// Writes `items` as JSON lines.
pub fn write_jsonl<T: Serialize>(out: &mut impl Write, items: &[T]) -> std::io::Result<()> {
    for item in items {
        serde_json::to_writer(&mut *out, item)?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

/// Reads JSON lines (blank lines skipped); `what` names the file in errors.
pub fn read_jsonl<T: for<'de> Deserialize<'de>>(input: impl BufRead, what: &'static str) -> Result<Vec<T>, HistoryError> {
    let mut out = Vec::new();
    for (n, line) in input.lines().enumerate() {
        let line = line.map_err(|source| HistoryError::Io { what, source })?;
        if line.trim().is_empty() {
            continue;
        }
        out.push(serde_json::from_str(&line).map_err(|source| HistoryError::Parse { what, line: n + 1, source })?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_as_json_lines() {
        let events = vec![
            Event {
                index: 0,
                process: 3,
                time_ns: 10,
                kind: EventKind::Invoke,
                op: Op::Send { queue: 1, value: "v1".into(), message_group: Some("g".into()), offset: None },
                error: None,
            },
            Event {
                index: 1,
                process: 3,
                time_ns: 20,
                kind: EventKind::Ok,
                op: Op::Send { queue: 1, value: "v1".into(), message_group: Some("g".into()), offset: Some(7) },
                error: None,
            },
            Event {
                index: 2,
                process: 4,
                time_ns: 30,
                kind: EventKind::Info,
                op: Op::Poll { session: 1, queue: 0, from: 0, messages: vec![] },
                error: Some("deadline exceeded".into()),
            },
        ];
        let mut buf = Vec::new();
        write_jsonl(&mut buf, &events).unwrap();
        let text = String::from_utf8(buf.clone()).unwrap();
        assert!(text.lines().next().unwrap().contains(r#""f":"send""#), "{text}");
        assert_eq!(read_jsonl::<Event>(buf.as_slice(), "history").unwrap(), events);
    }

    #[test]
    fn a_damaged_line_is_reported_with_its_number() {
        let text = "{\"index\":0,\"process\":1,\"time_ns\":0,\"kind\":\"invoke\",\"f\":\"commit\",\"consumer_group\":\"c\",\"queue\":0,\"offset\":1}\n\n{oops\n";
        match read_jsonl::<Event>(text.as_bytes(), "history") {
            Err(HistoryError::Parse { what: "history", line: 3, .. }) => {}
            other => panic!("{other:?}"),
        }
    }
}
