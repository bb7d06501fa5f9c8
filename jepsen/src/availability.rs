//! Availability and recovery around each fault: what fraction of the operations that completed
//! while a fault was in force succeeded, and how long after the fault ended the first send
//! succeeded. (Counting by completion, not invocation: an operation begun during a fault and
//! answered after the heal says nothing of the fault.)

use serde::{Deserialize, Serialize};

use crate::history::{Event, EventKind, Op};
use crate::nemesis::NemesisKind;

/// One fault as the nemesis applied it: from `start_ns` until it was healed at `end_ns` (times
/// since the run started, as in the history).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultWindow {
    /// What was done, e.g. `kill -9 broker 2` or `partition {1} | {2,3}`.
    pub name: String,
    /// The nemesis that did it (absent in runs stored before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<NemesisKind>,
    pub start_ns: u64,
    pub end_ns: u64,
}

/// How the workload fared during one fault and after it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowStats {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<NemesisKind>,
    pub start_ns: u64,
    pub end_ns: u64,
    /// Operations that completed (ok, fail or info) during the window, and how many were `ok`.
    pub completed: u64,
    pub ok: u64,
    /// `ok / completed`; 1 when nothing completed.
    pub availability: f64,
    /// From the end of the window to the completion of the first `ok` send invoked after it;
    /// `None` if no send succeeded afterwards.
    pub recovery_ns: Option<u64>,
}

/// One operation's timing.
struct Timed {
    invoked_ns: u64,
    is_send: bool,
    /// When it completed, and whether `ok`.
    completed: Option<(u64, bool)>,
}

/// Statistics for each window, in the order given.
pub fn by_window(events: &[Event], windows: &[FaultWindow]) -> Vec<WindowStats> {
    let mut open: std::collections::HashMap<u64, usize> = std::collections::HashMap::new();
    let mut ops: Vec<Timed> = Vec::new();
    for e in events {
        if e.kind == EventKind::Invoke {
            open.insert(e.process, ops.len());
            ops.push(Timed { invoked_ns: e.time_ns, is_send: matches!(e.op, Op::Send { .. }), completed: None });
        } else if let Some(i) = open.remove(&e.process) {
            ops[i].completed = Some((e.time_ns, e.kind == EventKind::Ok));
        }
    }
    windows
        .iter()
        .map(|w| {
            let during: Vec<bool> =
                ops.iter().filter_map(|o| o.completed).filter(|(t, _)| *t >= w.start_ns && *t < w.end_ns).map(|(_, ok)| ok).collect();
            let completed = during.len() as u64;
            let ok = during.iter().filter(|ok| **ok).count() as u64;
            let recovery_ns = ops
                .iter()
                .filter(|o| o.is_send && o.invoked_ns >= w.end_ns)
                .filter_map(|o| match o.completed {
                    Some((done, true)) => Some(done.saturating_sub(w.end_ns)),
                    _ => None,
                })
                .min();
            WindowStats {
                name: w.name.clone(),
                kind: w.kind,
                start_ns: w.start_ns,
                end_ns: w.end_ns,
                completed,
                ok,
                availability: if completed == 0 { 1.0 } else { ok as f64 / completed as f64 },
                recovery_ns,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(index: u64, process: u64, time_ns: u64, kind: EventKind) -> Event {
        let op = Op::Send { queue: 0, value: format!("v{process}"), message_group: None, offset: None };
        Event { index, process, time_ns, kind, op, error: None }
    }

    #[test]
    fn availability_and_recovery_per_window() {
        // Window 100..200: p1 ok, p2 fails, p3 unknown (all completing inside it; p0 completed
        // before it); after it p4 fails, p5 succeeds at 260.
        let events = vec![
            event(0, 0, 50, EventKind::Invoke),
            event(1, 0, 60, EventKind::Ok),
            event(2, 1, 110, EventKind::Invoke),
            event(3, 2, 120, EventKind::Invoke),
            event(4, 3, 130, EventKind::Invoke),
            event(5, 1, 140, EventKind::Ok),
            event(6, 2, 150, EventKind::Fail),
            event(7, 3, 190, EventKind::Info),
            event(8, 4, 210, EventKind::Invoke),
            event(9, 5, 220, EventKind::Invoke),
            event(10, 4, 230, EventKind::Fail),
            event(11, 5, 260, EventKind::Ok),
        ];
        let windows = vec![
            FaultWindow { name: "kill -9 broker 2".into(), kind: Some(NemesisKind::Kill), start_ns: 100, end_ns: 200 },
            FaultWindow { name: "quiet".into(), kind: None, start_ns: 300, end_ns: 400 },
        ];
        let stats = by_window(&events, &windows);
        assert_eq!((stats[0].completed, stats[0].ok, stats[0].recovery_ns), (3, 1, Some(60)));
        assert!((stats[0].availability - 1.0 / 3.0).abs() < 1e-9);
        assert_eq!((stats[1].completed, stats[1].availability, stats[1].recovery_ns), (0, 1.0, None));
    }
}
