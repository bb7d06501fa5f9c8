//! Retention: what makes a broker's disk usage bounded.
//!
//! Every [`crate::options::RetentionOptions::check_interval_ms`], on each queue group this broker leads, the newest
//! checkpoint that the policy allows to drop everything below is proposed as a `Trim` (a Raft
//! command, so every replica removes the same messages at the same log index). Then, on every
//! replica, once a trim point is applied above the group's last snapshot, a snapshot is built at
//! it; openraft purges the log up to the snapshot (`max_in_snapshot_log_to_keep` is 0), which
//! frees the segments once no group needs them. The snapshot is the checkpoint at the trim point,
//! and building it flushes the store first, so the log is never purged past what the store holds
//! durably.
//!
//! A group reaches checkpoints by entries only if it takes enough of them; a quiet one would
//! never trim. So the leader also proposes a [`GroupCommand::Checkpoint`] when the group had
//! entries since its newest checkpoint and has stayed so for
//! [`crate::options::RetentionOptions::checkpoint_interval_ms`] (see [`super::time_checkpoint_due`]). A
//! group whose last entry is a checkpoint gets no more, so an idle group is woken from
//! hibernation at most once per trim, not forever.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use openraft::ServerState;
use openraft::errors::{ClientWriteError, RaftError};
use openraft::raft::ClientWriteResponse;
use openraft::type_config::async_runtime::watch::WatchReceiver;

use super::time_checkpoint_due;
use crate::host::QueueRaft;
use crate::queue::{GroupCommand, GroupReply, QueueGroupConfig};
use crate::raft::GroupId;
use crate::server::Core;

/// Since when each group led here has had entries after the same newest checkpoint. One entry
/// per group hosted at most: a group is forgotten when it is not led here or has nothing new.
#[derive(Default)]
struct CheckpointWaits {
    since: HashMap<GroupId, (Option<u64>, tokio::time::Instant)>,
}

impl CheckpointWaits {
    /// How long `group` has had entries after `newest` (zero when first seen so).
    fn waited(&mut self, group: GroupId, newest: Option<u64>, now: tokio::time::Instant) -> Duration {
        let entry = self.since.entry(group).or_insert((newest, now));
        if entry.0 != newest {
            *entry = (newest, now);
        }
        now.saturating_duration_since(entry.1)
    }

    fn forget(&mut self, group: GroupId) {
        self.since.remove(&group);
    }
}

pub(crate) async fn run(core: Arc<Core>) {
    let mut stop = core.stop.clone();
    let interval = core.options.retention.check_interval();
    let mut waits = CheckpointWaits::default();
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let groups = core.host.groups();
        let hosted: HashSet<GroupId> = groups.iter().copied().collect();
        waits.since.retain(|g, _| hosted.contains(g));
        for group in groups {
            if core.stopping() {
                return;
            }
            check_group(&core, group, now_ms, &mut waits).await;
        }
    }
}

type TrimResult = Result<ClientWriteResponse<QueueGroupConfig>, RaftError<QueueGroupConfig, ClientWriteError<QueueGroupConfig>>>;

async fn trim(core: &Core, raft: &QueueRaft, group: u64, up_to_log_index: u64) -> TrimResult {
    // A write: a hibernating group must heartbeat again before its followers wake to the entry.
    core.host.wake(group);
    raft.client_write(GroupCommand::Trim { up_to_log_index }).await
}

/// Proposes a checkpoint by time if one is due (see [`time_checkpoint_due`]).
async fn checkpoint_by_time(core: &Core, raft: &QueueRaft, group: GroupId, waits: &mut CheckpointWaits) {
    let retention = &core.options.retention;
    let checkpoints = match core.host.group_checkpoints(group) {
        Ok(Some(c)) if c.entries_since_newest() => c,
        Ok(_) => return waits.forget(group),
        Err(e) => return tracing::warn!(group, error = %e, "reading the group's checkpoints failed"),
    };
    let waited = waits.waited(group, checkpoints.newest, tokio::time::Instant::now());
    if !time_checkpoint_due(&checkpoints, waited, retention.checkpoint_interval(), &retention.policy()) {
        return;
    }
    // A write: a hibernating group must heartbeat again before its followers wake to the entry.
    core.host.wake(group);
    match raft.client_write(GroupCommand::Checkpoint).await {
        Ok(resp) => {
            tracing::debug!(group, reply = ?resp.response(), "checkpoint by time");
            waits.forget(group);
        }
        Err(e) => tracing::info!(group, error = %e, "checkpoint by time not proposed"),
    }
}

async fn check_group(core: &Core, group: GroupId, now_ms: u64, waits: &mut CheckpointWaits) {
    let Some(raft) = core.group(group) else { return };
    let (leads, snapshot) = {
        let m = raft.metrics().borrow_watched().clone();
        (m.state == ServerState::Leader && m.current_leader == Some(core.id), m.snapshot.map(|s| s.index))
    };
    if leads {
        match core.host.trim_candidate(group, now_ms, &core.options.retention.policy()) {
            Ok(Some(up_to_log_index)) => match trim(core, &raft, group, up_to_log_index).await {
                Ok(resp) => match resp.response() {
                    GroupReply::Trimmed { up_to_log_index } => tracing::info!(group, up_to_log_index, "trimmed by retention"),
                    other => tracing::debug!(group, reply = ?other, "trim not applied"),
                },
                Err(e) => tracing::info!(group, error = %e, "trim not proposed"),
            },
            Ok(None) => {}
            Err(e) => tracing::warn!(group, error = %e, "retention check failed"),
        }
        checkpoint_by_time(core, &raft, group, waits).await;
    } else {
        waits.forget(group);
    }
    match core.host.store().trim_point(group) {
        Ok(Some(trim)) if snapshot.is_none_or(|s| s < trim) => {
            if let Err(e) = raft.trigger().snapshot().await {
                tracing::warn!(group, error = %e, "snapshot at the trim point not triggered");
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(group, error = %e, "reading the trim point failed"),
    }
}
