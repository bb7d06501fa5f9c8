//! Hibernation: quiet queue groups park their Raft tickers, so that a broker hosting many idle
//! groups does no work per group (no heartbeats, no election timers).
//!
//! A group is *quiet* when its leader has seen no new entry for [`crate::options::RaftOptions::hibernate_after_ms`],
//! has applied its last entry, and every replica has matched it. The leader then parks its own
//! ticker (no more heartbeats) and asks each follower's broker to park the group's replica too
//! ([`park_followers`]). A follower parks only if it follows that leader in that term and holds
//! exactly the leader's last entry, so it misses nothing. If any follower does not park, the
//! leader wakes again and keeps sending heartbeats, so that follower's election timer never
//! fires for want of them.
//!
//! A parked replica wakes when:
//! - this broker is about to write to the group as its leader (a send, a consumer offset commit
//!   or read, a retention trim): every write path calls [`GroupHost::wake`] first, and this task
//!   also wakes a parked leader whose log grew;
//! - an AppendEntries carrying entries, or a vote request, arrives for it (the transport, see
//!   `crate::raft::registry`);
//! - the broker of its leader stops answering pings for an election timeout: the group must
//!   then elect a new leader, which a parked follower would never start.
//!
//! Safety never depends on a ticker: a parked group only stops doing timed work. Liveness after
//! a leader's broker dies comes from the pings: one call per peer broker per heartbeat
//! interval, whatever the number of groups.
//!
//! [`GroupHost::wake`]: crate::host::GroupHost::wake

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use openraft::ServerState;
use openraft::type_config::async_runtime::watch::WatchReceiver;
use proto::raftmq::v1::{HibernateRequest, QuietGroup};
use tokio::time::Instant;

use super::Core;
use crate::raft::{BrokerId, GroupId};

/// Most groups one `Hibernate` call names (the server refuses more).
pub(crate) const QUIET_GROUPS_PER_CALL_MAX: usize = 10_000;

/// Parks, among `groups` (quiet groups that `leader` leads and has parked), each replica here
/// that follows `leader` in the group's term, holds exactly its last entry and has applied it
/// (so readers of this replica see every committed message while it sleeps: a follower learns
/// of a commit only from the leader's next message); returns the groups parked here (including
/// those parked already).
pub(crate) fn park_followers(core: &Core, leader: BrokerId, groups: &[QuietGroup]) -> Vec<GroupId> {
    let mut parked = Vec::new();
    for q in groups {
        let Some(raft) = core.group(q.group_id) else { continue };
        let in_step = {
            let m = raft.metrics().borrow_watched().clone();
            m.state == ServerState::Follower
                && m.current_leader == Some(leader)
                && m.current_term == q.term
                && m.last_log_index == Some(q.last_log_index)
                && m.last_applied.as_ref().map(|l| l.index) == Some(q.last_log_index)
        };
        if in_step {
            core.host.park(q.group_id);
            parked.push(q.group_id);
        }
    }
    parked
}

/// A group led here, as of when its last log index was last seen to change.
struct Activity {
    last_log_index: u64,
    since: Instant,
}

/// The task: pings peer brokers every heartbeat interval, wakes parked groups whose leader's
/// broker stopped answering or whose log grew, and parks quiet groups.
pub(super) async fn run(core: Arc<Core>) {
    let Some(after) = core.options.raft.hibernate_after() else { return };
    let raft = core.host.raft_config();
    let ping_every = Duration::from_millis(raft.heartbeat_interval.max(1));
    let dead_after = Duration::from_millis(raft.election_timeout_max);
    let check_every = (after / 2).clamp(ping_every, Duration::from_secs(1));
    let mut activity: HashMap<GroupId, Activity> = HashMap::new();
    // Leaders parked here, with their last log index when parked.
    let mut parked_leaders: HashMap<GroupId, u64> = HashMap::new();
    let mut answered: HashMap<BrokerId, Instant> = HashMap::new();
    let mut next_check = Instant::now() + check_every;
    let mut stop = core.stop.clone();
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(ping_every) => {}
        }
        ping_peers(&core, &mut answered, ping_every).await;
        wake_orphans(&core, &answered, dead_after, &mut parked_leaders);
        if Instant::now() >= next_check {
            park_quiet(&core, &mut activity, &mut parked_leaders, after).await;
            next_check = Instant::now() + check_every;
        }
    }
}

/// Pings every other registered broker at once; records when each last answered (a broker seen
/// for the first time counts as answering now, so it gets a full timeout).
async fn ping_peers(core: &Core, answered: &mut HashMap<BrokerId, Instant>, timeout: Duration) {
    let map = core.local_map();
    let peers: Vec<(BrokerId, String)> = map.brokers.values().filter(|b| b.id != core.id).map(|b| (b.id, b.peer_addr.clone())).collect();
    let now = Instant::now();
    answered.retain(|b, _| map.brokers.contains_key(b));
    for (b, _) in &peers {
        answered.entry(*b).or_insert(now);
    }
    let calls = peers.iter().map(|(b, addr)| async move { (*b, core.forward.ping(addr, core.id, timeout).await.is_ok()) });
    for (b, ok) in futures::future::join_all(calls).await {
        if ok {
            answered.insert(b, Instant::now());
        }
    }
}

/// Wakes every parked group here whose leader is unknown or on a broker that has not answered
/// for `dead_after`, and every parked leader whose log grew since it parked.
fn wake_orphans(core: &Core, answered: &HashMap<BrokerId, Instant>, dead_after: Duration, parked_leaders: &mut HashMap<GroupId, u64>) {
    parked_leaders.retain(|g, _| core.host.is_parked(*g));
    for group in core.host.parked() {
        let Some(raft) = core.group(group) else { continue };
        let (leader, last_log_index) = {
            let m = raft.metrics().borrow_watched().clone();
            (m.current_leader, m.last_log_index.unwrap_or(0))
        };
        let reason = match leader {
            None => Some("no known leader".to_string()),
            Some(l) if l == core.id => {
                // Every write path wakes the leader first; this catches one that did not.
                parked_leaders
                    .get(&group)
                    .filter(|&&at| last_log_index != at)
                    .map(|at| format!("its log grew from {at} to {last_log_index}"))
            }
            Some(l) => answered
                .get(&l)
                .is_none_or(|t| t.elapsed() >= dead_after)
                .then(|| format!("its leader's broker {l} has not answered for {dead_after:?}")),
        };
        if let Some(reason) = reason {
            if core.host.wake(group) {
                tracing::info!(group, %reason, "woke a hibernating group");
            }
            parked_leaders.remove(&group);
        }
    }
}

/// A quiet group led here: what its followers must match to park.
struct Quiet {
    group: GroupId,
    term: u64,
    last_log_index: u64,
    followers: Vec<BrokerId>,
}

/// Parks every quiet group led here, and asks its followers to park too; wakes the groups that
/// some follower did not park.
async fn park_quiet(core: &Core, activity: &mut HashMap<GroupId, Activity>, parked_leaders: &mut HashMap<GroupId, u64>, after: Duration) {
    let now = Instant::now();
    let mut quiet = Vec::new();
    let groups = core.host.groups();
    activity.retain(|g, _| groups.binary_search(g).is_ok());
    for group in groups {
        if core.host.is_parked(group) {
            continue;
        }
        let Some(raft) = core.group(group) else { continue };
        let m = raft.metrics().borrow_watched().clone();
        if m.state != ServerState::Leader || m.current_leader != Some(core.id) {
            activity.remove(&group);
            continue;
        }
        let last = m.last_log_index.unwrap_or(0);
        let seen = activity.entry(group).or_insert(Activity { last_log_index: last, since: now });
        if seen.last_log_index != last {
            *seen = Activity { last_log_index: last, since: now };
            continue;
        }
        if now.duration_since(seen.since) < after {
            continue;
        }
        let membership = m.membership_config.membership();
        let voters: Vec<BrokerId> = membership.voter_ids().collect();
        let all_matched = m
            .replication
            .as_ref()
            .is_some_and(|r| voters.iter().all(|v| r.get(v).is_some_and(|matched| matched.as_ref().map(|l| l.index) == Some(last))));
        let settled = membership.learner_ids().next().is_none() && m.last_applied.as_ref().map(|l| l.index) == Some(last);
        if all_matched && settled {
            let followers = voters.into_iter().filter(|&v| v != core.id).collect();
            quiet.push(Quiet { group, term: m.current_term, last_log_index: last, followers });
        }
    }
    if quiet.is_empty() {
        return;
    }
    // The leader first: from here on it sends no heartbeats. Its followers' election timers
    // still run until they park, well within an election timeout.
    let mut asks: BTreeMap<BrokerId, Vec<QuietGroup>> = BTreeMap::new();
    for q in &quiet {
        core.host.park(q.group);
        parked_leaders.insert(q.group, q.last_log_index);
        for &f in &q.followers {
            asks.entry(f).or_default().push(QuietGroup { group_id: q.group, term: q.term, last_log_index: q.last_log_index });
        }
    }
    let map = core.local_map();
    let calls = asks.into_iter().map(|(follower, groups)| {
        let addr = map.brokers.get(&follower).map(|b| b.peer_addr.clone());
        async move {
            let mut parked = HashSet::new();
            let Some(addr) = addr else { return (follower, parked) };
            for chunk in groups.chunks(QUIET_GROUPS_PER_CALL_MAX) {
                let req = HibernateRequest { leader_broker_id: core.id, groups: chunk.to_vec() };
                match core.forward.hibernate(&addr, req).await {
                    Ok(reply) => parked.extend(reply.parked),
                    Err(e) => tracing::debug!(broker = follower, error = %e, "hibernate call failed"),
                }
            }
            (follower, parked)
        }
    });
    let parked_by: HashMap<BrokerId, HashSet<GroupId>> = futures::future::join_all(calls).await.into_iter().collect();
    let mut hibernated = 0usize;
    for q in quiet {
        let everywhere = q.followers.iter().all(|f| parked_by.get(f).is_some_and(|p| p.contains(&q.group)));
        if everywhere {
            hibernated += 1;
        } else {
            // A follower still runs its election timer: keep it fed, and try again later.
            core.host.wake(q.group);
            parked_leaders.remove(&q.group);
            activity.insert(q.group, Activity { last_log_index: q.last_log_index, since: Instant::now() });
        }
    }
    if hibernated > 0 {
        tracing::debug!(groups = hibernated, "quiet groups hibernating");
    }
}
