//! Retention: what makes a broker's disk usage bounded.
//!
//! Every [`RetentionOptions::check_interval`], on each queue group this broker leads, the newest
//! checkpoint that the policy allows to drop everything below is proposed as a `Trim` (a Raft
//! command, so every replica removes the same messages at the same log index). Then, on every
//! replica, once a trim point is applied above the group's last snapshot, a snapshot is built at
//! it; openraft purges the log up to the snapshot (`max_in_snapshot_log_to_keep` is 0), which
//! frees the segments once no group needs them. The snapshot is the checkpoint at the trim point,
//! and building it flushes the store first, so the log is never purged past what the store holds
//! durably.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use openraft::ServerState;
use openraft::errors::{ClientWriteError, RaftError};
use openraft::raft::ClientWriteResponse;
use openraft::type_config::async_runtime::watch::WatchReceiver;

use super::Core;
use crate::host::QueueRaft;
use crate::queue::{GroupCommand, GroupReply, QueueGroupConfig, RetentionPolicy};

/// How much a broker keeps, and how often it checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionOptions {
    pub policy: RetentionPolicy,
    /// Default 60 s.
    pub check_interval: Duration,
}

impl Default for RetentionOptions {
    fn default() -> Self {
        Self { policy: RetentionPolicy::default(), check_interval: Duration::from_secs(60) }
    }
}

pub(super) async fn run(core: Arc<Core>) {
    let mut stop = core.stop.clone();
    let interval = core.options.retention.check_interval;
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        for group in core.host.groups() {
            if core.stopping() {
                return;
            }
            check_group(&core, group, now_ms).await;
        }
    }
}

type TrimResult = Result<ClientWriteResponse<QueueGroupConfig>, RaftError<QueueGroupConfig, ClientWriteError<QueueGroupConfig>>>;

async fn trim(core: &Core, raft: &QueueRaft, group: u64, up_to_log_index: u64) -> TrimResult {
    // A write: a hibernating group must heartbeat again before its followers wake to the entry.
    core.host.wake(group);
    raft.client_write(GroupCommand::Trim { up_to_log_index }).await
}

async fn check_group(core: &Core, group: u64, now_ms: u64) {
    let Some(raft) = core.group(group) else { return };
    let (leads, snapshot) = {
        let m = raft.metrics().borrow_watched().clone();
        (m.state == ServerState::Leader && m.current_leader == Some(core.id), m.snapshot.map(|s| s.index))
    };
    if leads {
        match core.host.trim_candidate(group, now_ms, &core.options.retention.policy) {
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
