//! The broker's background work toward the cluster map: initializing the metadata group,
//! registering, opening and initializing the queue groups placed here, and (on the metadata
//! leader) making every registered broker a learner of the metadata group.
//!
//! Each loop wakes on a change of what it watches or on a [`RETRY_TICK`] (a step that failed is
//! retried then), and ends when the broker stops.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use controller::{GroupId, GroupRecord, MetaCommand, MetaReply};
use openraft::errors::{InitializeError, RaftError};
use openraft::type_config::async_runtime::watch::WatchReceiver;

use super::Core;
use crate::raft::BrokerNode;

/// How often a loop retries what failed, when nothing it watches changes.
const RETRY_TICK: Duration = Duration::from_secs(1);

/// Waits for the next map change, a retry tick, or the stop signal; `false` once stopping.
async fn next_round(core: &Core, map: &mut tokio::sync::watch::Receiver<Arc<controller::ClusterMap>>) -> bool {
    let mut stop = core.stop.clone();
    tokio::select! {
        _ = stop.wait_for(|s| *s) => false,
        _ = map.changed() => true,
        _ = tokio::time::sleep(RETRY_TICK) => true,
    }
}

/// Initializes the metadata group if this broker is its lowest-id voter and it never was, then
/// registers this broker's addresses in the map (retrying until it succeeds or the broker stops).
pub(super) async fn bootstrap_and_register(core: Arc<Core>) {
    let controllers = core.controllers();
    let first = controllers.iter().map(|(id, _)| *id).min();
    if first == Some(core.id) {
        match core.meta.is_initialized().await {
            Ok(false) => {
                let members: BTreeMap<_, _> = controllers.iter().map(|(id, addr)| (*id, BrokerNode { raft_addr: addr.clone() })).collect();
                match core.meta.initialize(members).await {
                    Ok(()) => tracing::info!(voters = ?controllers, "initialized the metadata group"),
                    Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
                    Err(e) => tracing::error!(error = %e, "initializing the metadata group failed"),
                }
            }
            Ok(true) => {}
            Err(e) => tracing::error!(error = %e, "metadata group stopped"),
        }
    }
    let cmd = MetaCommand::RegisterBroker {
        id: core.id,
        peer_addr: core.peer_addr.clone(),
        client_addr: core.client_addr.clone(),
        labels: core.options.labels.clone(),
    };
    let mut stop = core.stop.clone();
    loop {
        match core.propose_meta(cmd.clone()).await {
            Ok(MetaReply::BrokerRegistered) => {
                tracing::info!(broker = core.id, "registered with the metadata group");
                return;
            }
            Ok(other) => tracing::error!(reply = ?other, "registration refused"),
            Err(e) => tracing::info!(error = %e, "registration not done yet; retrying"),
        }
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(RETRY_TICK) => {}
        }
    }
}

/// Opens every group the map places on this broker and starts those not yet recorded started:
/// the first replica initializes a new group at once; every other replica too once the group
/// has waited [`INITIALIZE_GRACE_ELECTIONS`] election timeouts here unstarted, so that a group
/// whose first replica died before replicating its membership still elects a leader. (Replicas
/// initializing with the same membership is safe in Raft, the vote picks one leader; waiting
/// first only spares a new group's election the split votes of three candidates.)
pub(super) async fn place_groups(core: Arc<Core>) {
    let mut map = core.map.clone();
    let grace = Duration::from_millis(core.options.raft.election_timeout_max_ms).saturating_mul(INITIALIZE_GRACE_ELECTIONS);
    // When each unstarted group placed here was first seen: at most one per group placed here.
    let mut unstarted_since: HashMap<GroupId, Instant> = HashMap::new();
    loop {
        let current = map.borrow_and_update().clone();
        unstarted_since.retain(|g, _| current.groups.get(g).is_some_and(|r| !r.bootstrapped && r.replicas.contains(&core.id)));
        for group in current.groups_on(core.id) {
            // Most rounds find every group open and started: skip them without touching the
            // host, so an idle broker with many groups does no work per group per round.
            if core.queue_group(group.id).is_some() && group.bootstrapped {
                continue;
            }
            if let Err(e) = core.host.open_group(group.id, Some(group.options.into())).await {
                tracing::error!(group = group.id, error = %e, "opening a placed group failed");
                continue;
            }
            if !group.bootstrapped {
                let since = *unstarted_since.entry(group.id).or_insert_with(Instant::now);
                let initialize = group.replicas.first() == Some(&core.id) || since.elapsed() >= grace;
                bootstrap_group(&core, &current, group, initialize).await;
            }
        }
        if !next_round(&core, &mut map).await {
            return;
        }
    }
}

/// Election timeouts a replica other than the first waits for a new group to start before it
/// initializes the group itself.
const INITIALIZE_GRACE_ELECTIONS: u32 = 3;

/// Initializes `group`'s membership (its replicas, at the peer addresses they registered) if
/// `initialize` (refused by openraft, harmlessly, once the group holds one), and, on the group's
/// leader, records the group started in the map once its membership is committed (a majority
/// holds it, so the group elects leaders without any one replica).
async fn bootstrap_group(core: &Core, map: &controller::ClusterMap, group: &GroupRecord, initialize: bool) {
    let Some(raft) = core.group(group.id) else { return };
    if initialize {
        let mut members = BTreeMap::new();
        for b in &group.replicas {
            match map.brokers.get(b) {
                Some(r) => members.insert(*b, BrokerNode { raft_addr: r.peer_addr.clone() }),
                None => {
                    tracing::error!(group = group.id, broker = b, "replica on an unregistered broker; not initializing");
                    return;
                }
            };
        }
        match raft.initialize(members).await {
            Ok(()) => tracing::info!(group = group.id, replicas = ?group.replicas, "initialized queue group"),
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
            Err(e) => {
                tracing::warn!(group = group.id, error = %e, "initializing queue group failed; will retry");
                return;
            }
        }
    }
    // Recorded by the group's leader alone (one metadata entry per group, not one per replica).
    let metrics = raft.metrics().borrow_watched().clone();
    let membership = metrics.membership_config.log_id().as_ref().map(|id| id.index);
    let applied = metrics.last_applied.as_ref().map(|id| id.index);
    if metrics.current_leader != Some(core.id) || membership.is_none() || applied < membership {
        return;
    }
    match core.propose_meta(MetaCommand::MarkGroupBootstrapped { group: group.id }).await {
        Ok(MetaReply::GroupBootstrapped) => {}
        Ok(other) => tracing::error!(group = group.id, reply = ?other, "marking group bootstrapped refused"),
        Err(e) => tracing::info!(group = group.id, error = %e, "marking group bootstrapped failed; will retry"),
    }
}

/// On the metadata leader: adds every registered broker that is not a member of the metadata
/// group as a learner, so its copy of the map stays current.
pub(super) async fn meta_learners(core: Arc<Core>) {
    let mut map = core.map.clone();
    loop {
        if core.meta_is_leader() {
            let current = map.borrow_and_update().clone();
            let membership = core.meta.metrics().borrow_watched().membership_config.clone();
            for broker in current.brokers.values() {
                if membership.membership().get_node(&broker.id).is_some() {
                    continue;
                }
                let node = BrokerNode { raft_addr: broker.peer_addr.clone() };
                match core.meta.add_learner(broker.id, node, false).await {
                    Ok(_) => tracing::info!(broker = broker.id, "added broker as a learner of the metadata group"),
                    Err(e) => tracing::warn!(broker = broker.id, error = %e, "adding learner failed; will retry"),
                }
            }
        }
        if !next_round(&core, &mut map).await {
            return;
        }
    }
}
