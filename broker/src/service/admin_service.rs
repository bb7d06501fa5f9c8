//! `raftmq.v1.AdminService`: topics and the state of the cluster's Raft groups.
//!
//! Topic reads are linearizable reads of the metadata group. Group state comes from each
//! broker's own view (`PeerService.LocalStatus`), gathered in parallel with a short deadline: a
//! broker that does not answer is reported not alive rather than holding the reply up.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use controller::{ClusterMap, GroupOptions, META_GROUP_ID, MessageType, MetaCommand, MetaReply, TopicRecord};
use openraft::type_config::async_runtime::watch::WatchReceiver;
use proto::raftmq::v1::admin_service_client::AdminServiceClient;
use proto::raftmq::v1::admin_service_server::AdminService;
use proto::raftmq::v1::{
    BrokerInfo, ClusterStatusReply, ClusterStatusRequest, CreateTopicReply, CreateTopicRequest, DescribeTopicReply, DescribeTopicRequest,
    GroupChecksumReply, GroupChecksumRequest, GroupDigestRequest, GroupStatus, ListTopicsReply, ListTopicsRequest, LocalGroupStatus,
    LocalStatusReply, MoveLeaderReply, MoveLeaderRequest, QueueInfo, ReplicaChecksum, ReplicaRole, ReplicaStatus, Status, Topic,
};
use tonic::transport::Channel;
use tonic::{Request, Response};

use super::status;
use crate::edge::{self, answer_by, at_most, left};
use crate::host::QueueRaft;
use crate::raft::BrokerId;
use crate::routing::{AtLeader, Effect, at_leader, forward_request, is_forwarded};
use crate::server::Core;

/// Deadline of one broker's status answer.
const STATUS_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a create waits for its groups to be initialized before answering.
const CREATE_READY_WAIT: Duration = Duration::from_secs(10);
/// Topics per page when the request leaves it at 0, and the most per page.
const TOPICS_PAGE_DEFAULT: usize = 100;
const TOPICS_PAGE_MAX: usize = 1000;
/// How long each replica may take to apply up to the checksum's index.
const DIGEST_WAIT_MS: u32 = 10_000;
/// How long a leader move may take before it is answered UNAVAILABLE (less when the request's
/// deadline leaves less).
const MOVE_LEADER_WAIT: Duration = Duration::from_secs(10);
/// The most entries a move's target may lack of the leader's log: the group takes no writes
/// from the start of a move until the target has caught up and won its election, so a target
/// further behind is refused rather than stalling the group.
const MOVE_LEADER_LAG_MAX: u64 = 1_000;

pub(crate) struct AdminSvc {
    core: Arc<Core>,
}

impl AdminSvc {
    pub(crate) fn new(core: Arc<Core>) -> Self {
        Self { core }
    }
}

fn message_type_from_wire(t: i32) -> Option<MessageType> {
    use proto::raftmq::v1::MessageType as W;
    match W::try_from(t).ok()? {
        W::Unspecified | W::Normal => Some(MessageType::Normal),
        W::Fifo => Some(MessageType::Fifo),
        W::Delay => Some(MessageType::Delay),
        W::Transaction => Some(MessageType::Transaction),
    }
}

fn message_type_to_wire(t: MessageType) -> i32 {
    use proto::raftmq::v1::MessageType as W;
    (match t {
        MessageType::Normal => W::Normal,
        MessageType::Fifo => W::Fifo,
        MessageType::Delay => W::Delay,
        MessageType::Transaction => W::Transaction,
    }) as i32
}

fn topic_to_wire(t: &TopicRecord) -> Topic {
    Topic {
        name: t.name.clone(),
        queue_count: t.queue_count,
        replication_factor: t.replication_factor,
        message_type: message_type_to_wire(t.message_type),
        checkpoint_interval_entries: t.group_options.checkpoint_interval_entries,
    }
}

impl Core {
    /// Every listed broker's own status of `groups` (all of its groups when empty), by broker;
    /// brokers that did not answer within [`STATUS_TIMEOUT`] are absent.
    async fn gather_status(&self, map: &ClusterMap, brokers: &BTreeSet<BrokerId>, groups: &[u64]) -> BTreeMap<BrokerId, LocalStatusReply> {
        let calls = brokers.iter().filter_map(|b| map.brokers.get(b)).map(|b| async move {
            let reply = self.forward.local_status(&b.peer_addr, groups.to_vec(), STATUS_TIMEOUT).await;
            (b.id, reply)
        });
        futures::future::join_all(calls)
            .await
            .into_iter()
            .filter_map(|(id, r)| match r {
                Ok(reply) => Some((id, reply)),
                Err(e) => {
                    tracing::debug!(broker = id, error = %e, "no status from broker");
                    None
                }
            })
            .collect()
    }
}

/// One group's status merged from its replicas' own views: the leader's report with the
/// highest term wins; each replica's applied index is its own.
fn merge_group(group: u64, reports: &[(BrokerId, &LocalGroupStatus)]) -> GroupStatus {
    let leader = reports.iter().filter(|(_, s)| s.role == ReplicaRole::Leader as i32).max_by_key(|(_, s)| s.term);
    let mut out = GroupStatus { group_id: group, ..Default::default() };
    if let Some((id, s)) = leader {
        out.leader_broker_id = *id;
        out.term = s.term;
        out.commit_index = s.commit_index;
        out.applied_index = s.applied_index;
        out.replicas = s.replicas.clone();
    } else if let Some((_, s)) = reports.iter().max_by_key(|(_, s)| s.term) {
        out.term = s.term;
        out.leader_broker_id = s.leader_broker_id;
    }
    for (id, s) in reports {
        let replica = match out.replicas.iter_mut().find(|r| r.broker_id == *id) {
            Some(r) => r,
            None => {
                out.replicas.push(ReplicaStatus { broker_id: *id, role: s.role, matched_index: s.last_log_index, ..Default::default() });
                out.replicas.last_mut().expect("just pushed")
            }
        };
        replica.applied_index = s.applied_index;
        replica.snapshot_index = s.snapshot_index;
        replica.purged_index = s.purged_index;
        replica.hibernating = s.hibernating;
    }
    out.replicas.sort_by_key(|r| r.broker_id);
    out
}

/// FAILED_PRECONDITION when `replication_factor` needs more brokers than are `registered`
/// (Kafka's `InvalidReplicationFactor`): the request is sound, the cluster too small for it now.
/// Brokers only join the map, so a factor that passes here still fits when the create applies.
fn check_replication_factor(replication_factor: u32, registered: usize) -> Result<(), Status> {
    if usize::try_from(replication_factor).is_ok_and(|rf| rf <= registered) {
        return Ok(());
    }
    Err(status::failed_precondition(format!(
        "replication factor {replication_factor} needs {replication_factor} brokers, {registered} are registered"
    )))
}

/// FAILED_PRECONDITION when fewer of the `registered` brokers answer (`live`) than
/// `replication_factor` needs.
fn check_live_brokers(replication_factor: u32, live: usize, registered: usize) -> Result<(), Status> {
    if usize::try_from(replication_factor).is_ok_and(|rf| rf <= live) {
        return Ok(());
    }
    Err(status::failed_precondition(format!(
        "replication factor {replication_factor} needs {replication_factor} live brokers; {live} of the {registered} registered answer"
    )))
}

#[tonic::async_trait]
impl AdminService for AdminSvc {
    #[tracing::instrument(level = "info", skip_all)]
    async fn create_topic(&self, request: Request<CreateTopicRequest>) -> Result<Response<CreateTopicReply>, tonic::Status> {
        let Some(topic) = request.into_inner().topic else {
            return Ok(Response::new(CreateTopicReply { status: Some(status::invalid("topic", "missing")), topic: None }));
        };
        let reply = match create_topic(&self.core, topic).await {
            Ok(Created::New(t)) => CreateTopicReply { status: Some(status::ok()), topic: Some(topic_to_wire(&t)) },
            Ok(Created::Exists(t)) => CreateTopicReply {
                status: Some(status::already_exists(format!("topic {:?} exists", t.name))),
                topic: Some(topic_to_wire(&t)),
            },
            Err(s) => CreateTopicReply { status: Some(s), topic: None },
        };
        Ok(Response::new(reply))
    }

    async fn list_topics(&self, request: Request<ListTopicsRequest>) -> Result<Response<ListTopicsReply>, tonic::Status> {
        let req = request.into_inner();
        let map = match self.core.read_meta().await {
            Ok(m) => m,
            Err(e) => return Ok(Response::new(ListTopicsReply { status: Some(status::unavailable(e.to_string())), ..Default::default() })),
        };
        let page = match req.page_size as usize {
            0 => TOPICS_PAGE_DEFAULT,
            n => n.min(TOPICS_PAGE_MAX),
        };
        let after = req.page_token;
        let topics: Vec<Topic> = map
            .topics
            .range::<String, _>((std::ops::Bound::Excluded(&after), std::ops::Bound::Unbounded))
            .take(page)
            .map(|(_, t)| topic_to_wire(t))
            .collect();
        let next_page_token = match topics.last() {
            Some(last)
                if map.topics.range::<String, _>((std::ops::Bound::Excluded(&last.name), std::ops::Bound::Unbounded)).next().is_some() =>
            {
                last.name.clone()
            }
            _ => String::new(),
        };
        Ok(Response::new(ListTopicsReply { status: Some(status::ok()), topics, next_page_token }))
    }

    async fn describe_topic(&self, request: Request<DescribeTopicRequest>) -> Result<Response<DescribeTopicReply>, tonic::Status> {
        let refuse = |status: Status| Ok(Response::new(DescribeTopicReply { status: Some(status), ..Default::default() }));
        let core = &self.core;
        let name = request.into_inner().name;
        if let Err(e) = edge::check_name("name", &name, &core.options.limits) {
            return refuse(e.into());
        }
        let map = match core.read_meta().await {
            Ok(m) => m,
            Err(e) => return refuse(status::unavailable(e.to_string())),
        };
        let Some(topic) = map.topics.get(&name) else {
            return refuse(status::not_found(format!("topic {name:?} does not exist")));
        };
        let records: Vec<_> = topic.groups.iter().filter_map(|g| map.groups.get(g)).collect();
        let brokers: BTreeSet<BrokerId> = records.iter().flat_map(|g| g.replicas.iter().copied()).collect();
        let reports = core.gather_status(&map, &brokers, &topic.groups).await;
        let queues = records
            .iter()
            .map(|g| {
                let views: Vec<(BrokerId, &LocalGroupStatus)> =
                    reports.iter().flat_map(|(b, r)| r.groups.iter().filter(|s| s.group_id == g.id).map(move |s| (*b, s))).collect();
                let merged = merge_group(g.id, &views);
                let leader_view = views.iter().find(|(b, _)| *b == merged.leader_broker_id);
                let end_offset = leader_view
                    .or_else(|| views.iter().max_by_key(|(_, s)| s.applied_index))
                    .and_then(|(_, s)| s.queue_end_offsets.get(&g.queue).copied())
                    .unwrap_or(0);
                QueueInfo {
                    queue_id: g.queue,
                    group_id: g.id,
                    leader_broker_id: merged.leader_broker_id,
                    replica_broker_ids: g.replicas.clone(),
                    end_offset,
                }
            })
            .collect();
        Ok(Response::new(DescribeTopicReply { status: Some(status::ok()), topic: Some(topic_to_wire(topic)), queues }))
    }

    async fn cluster_status(&self, _request: Request<ClusterStatusRequest>) -> Result<Response<ClusterStatusReply>, tonic::Status> {
        let core = &self.core;
        let map = match core.read_meta().await {
            Ok(m) => m,
            Err(e) => {
                return Ok(Response::new(ClusterStatusReply { status: Some(status::unavailable(e.to_string())), ..Default::default() }));
            }
        };
        let all: BTreeSet<BrokerId> = map.brokers.keys().copied().collect();
        let reports = core.gather_status(&map, &all, &[]).await;
        let brokers = map
            .brokers
            .values()
            .map(|b| BrokerInfo {
                broker_id: b.id,
                endpoint: b.client_addr.clone(),
                alive: reports.contains_key(&b.id),
                labels: b.labels.clone().into_iter().collect(),
            })
            .collect();
        let mut by_group: BTreeMap<u64, Vec<(BrokerId, &LocalGroupStatus)>> = BTreeMap::new();
        for (b, r) in &reports {
            for s in &r.groups {
                by_group.entry(s.group_id).or_default().push((*b, s));
            }
        }
        let groups = by_group.iter().map(|(g, views)| merge_group(*g, views)).collect();
        Ok(Response::new(ClusterStatusReply { status: Some(status::ok()), brokers, groups }))
    }

    #[tracing::instrument(level = "info", skip_all, fields(group = request.get_ref().group_id))]
    async fn group_checksum(&self, request: Request<GroupChecksumRequest>) -> Result<Response<GroupChecksumReply>, tonic::Status> {
        let refuse = |status: Status| Ok(Response::new(GroupChecksumReply { status: Some(status), ..Default::default() }));
        let core = &self.core;
        let req = request.into_inner();
        let map = match core.read_meta().await {
            Ok(m) => m,
            Err(e) => return refuse(status::unavailable(e.to_string())),
        };
        let Some(group) = map.groups.get(&req.group_id) else {
            return refuse(status::not_found(format!("group {} does not exist", req.group_id)));
        };
        let replicas: BTreeSet<BrokerId> = group.replicas.iter().copied().collect();
        let mut index = req.applied_index;
        if index == 0 {
            // The highest index every answering replica has applied.
            let reports = core.gather_status(&map, &replicas, &[group.id]).await;
            index = reports
                .values()
                .flat_map(|r| r.groups.iter().filter(|s| s.group_id == group.id))
                .map(|s| s.applied_index)
                .min()
                .unwrap_or(0);
        }
        let calls = group.replicas.iter().map(|&b| {
            let addr = map.brokers.get(&b).map(|r| r.peer_addr.clone());
            async move {
                let result = match addr {
                    Some(addr) => core
                        .forward
                        .group_digest(&addr, GroupDigestRequest { group_id: req.group_id, applied_index: index, wait_ms: DIGEST_WAIT_MS })
                        .await
                        .map_err(|e| status::unavailable(e.to_string())),
                    None => Err(status::internal(format!("broker {b} is not registered"))),
                };
                match result {
                    Ok(r) if status::is_ok(&r.status) => ReplicaChecksum { broker_id: b, digest: r.digest, error: None },
                    Ok(r) => ReplicaChecksum { broker_id: b, digest: Default::default(), error: r.status },
                    Err(s) => ReplicaChecksum { broker_id: b, digest: Default::default(), error: Some(s) },
                }
            }
        });
        let replicas = futures::future::join_all(calls).await;
        Ok(Response::new(GroupChecksumReply { status: Some(status::ok()), applied_index: index, replicas }))
    }

    #[tracing::instrument(level = "info", skip_all, fields(group = request.get_ref().group_id, to = request.get_ref().to_broker_id))]
    async fn move_leader(&self, request: Request<MoveLeaderRequest>) -> Result<Response<MoveLeaderReply>, tonic::Status> {
        let refuse = |status: Status| Ok(Response::new(MoveLeaderReply { status: Some(status), ..Default::default() }));
        let core = &self.core;
        let forwarded = is_forwarded(&request);
        let due = answer_by(&request);
        let req = request.into_inner();
        if req.group_id == META_GROUP_ID {
            return refuse(status::invalid(
                "group_id",
                format!("group {META_GROUP_ID} is the metadata group: only queue groups are moved"),
            ));
        }
        let map = match core.read_meta().await {
            Ok(m) => m,
            Err(e) => return refuse(status::unavailable(e.to_string())),
        };
        let Some(group) = map.groups.get(&req.group_id) else {
            return refuse(status::not_found(format!("group {} does not exist", req.group_id)));
        };
        if !group.replicas.contains(&req.to_broker_id) {
            return refuse(status::invalid(
                "to_broker_id",
                format!("broker {} holds no replica of group {} (its replicas: {:?})", req.to_broker_id, group.id, group.replicas),
            ));
        }
        let serve = core.leader_target(group, forwarded, left(due)).await;
        let call = |mut client: AdminServiceClient<Channel>, within| {
            let forward = forward_request(core, req, within);
            async move { client.move_leader(forward).await }
        };
        let raft = match at_leader(core, group, serve, forwarded, due, Effect::Write, call).await {
            AtLeader::Here(raft) => raft,
            AtLeader::Answered(reply) => return Ok(Response::new(reply)),
            AtLeader::Refused(s) => return refuse(s),
        };
        Ok(Response::new(move_leader_here(core, &raft, group.id, req.to_broker_id, at_most(MOVE_LEADER_WAIT, left(due))).await))
    }
}

/// Why a move to broker `to`, whose replica holds the leader's log up to `matched` of `last`,
/// is refused: it lacks more than [`MOVE_LEADER_LAG_MAX`] entries.
fn lag_refusal(group: u64, to: BrokerId, last: u64, matched: u64) -> Option<String> {
    let lacks = last.saturating_sub(matched);
    (lacks > MOVE_LEADER_LAG_MAX).then(|| {
        format!(
            "broker {to}'s replica of group {group} lacks {lacks} of the leader's entries (at most {MOVE_LEADER_LAG_MAX} for a move): \
             moving leadership now would stall the group until it caught up"
        )
    })
}

/// On `group`'s leader (this broker): hands leadership to broker `to` and waits, up to `wait`,
/// until this replica sees `to` lead.
async fn move_leader_here(core: &Core, raft: &QueueRaft, group: u64, to: BrokerId, wait: Duration) -> MoveLeaderReply {
    let answer = |status: Status, m: &openraft::RaftMetrics<_>| MoveLeaderReply {
        status: Some(status),
        leader_broker_id: m.current_leader.unwrap_or(0),
        term: m.current_term,
    };
    let metrics = raft.metrics().borrow_watched().clone();
    if to == core.id {
        return answer(status::ok(), &metrics);
    }
    let last = metrics.last_log_index.unwrap_or(0);
    let matched = metrics.replication.as_ref().and_then(|r| r.get(&to)).and_then(|m| m.as_ref()).map_or(0, |l| l.index);
    if let Some(refusal) = lag_refusal(group, to, last, matched) {
        return answer(status::unavailable(refusal), &metrics);
    }
    tracing::info!(group, to, term = metrics.current_term, "moving the group's leadership");
    if let Err(e) = raft.trigger().transfer_leader(to).await {
        return answer(status::unavailable(format!("group {group} stopped on broker {}: {e}", core.id)), &metrics);
    }
    let term = metrics.current_term;
    let moved = raft.wait(Some(wait)).metrics(|m| m.current_leader == Some(to) && m.current_term > term, "the target leads").await;
    match moved {
        Ok(m) => answer(status::ok(), &m),
        Err(_) => {
            let now = raft.metrics().borrow_watched().clone();
            let leader = now.current_leader.map_or_else(|| "none known".to_owned(), |l| format!("broker {l}"));
            // The transfer was started and may still end: whether `to` leads is not known.
            answer(
                status::outcome_unknown(format!(
                    "broker {to} did not take group {group}'s lead within {wait:?} (the transfer may still end); its leader now: {leader}"
                )),
                &now,
            )
        }
    }
}

/// What [`create_topic`] ended in.
pub(crate) enum Created {
    New(TopicRecord),
    /// A topic of that name exists (this one): nothing was created.
    Exists(TopicRecord),
}

/// Creates `topic` through the metadata group, its unset fields taking the broker's topic
/// defaults, and waits (a while) for every group of it to be initialized. What the admin API's
/// `CreateTopic` does, and what a broker does to create a topic it needs itself (a consumer
/// group's dead-letter queue).
pub(crate) async fn create_topic(core: &Core, topic: Topic) -> Result<Created, Status> {
    let refuse = Err;
    if let Err(e) = edge::check_name("topic.name", &topic.name, &core.options.limits) {
        return refuse(e.into());
    }
    let Some(message_type) = message_type_from_wire(topic.message_type) else {
        return refuse(status::invalid("topic.message_type", format!("unknown message type {}", topic.message_type)));
    };
    let map = match core.read_meta().await {
        Ok(m) => m,
        Err(e) => return refuse(status::unavailable(e.to_string())),
    };
    let defaults = core.options.topic_defaults;
    let queue_count = if topic.queue_count == 0 { defaults.queue_count } else { topic.queue_count };
    // Invariant 11: never fewer copies than asked for, the default factor included. A
    // cluster smaller than the default asks explicitly (`raftmq dev --brokers 1` configures
    // a default of 1).
    let replication_factor = if topic.replication_factor == 0 { defaults.replication_factor } else { topic.replication_factor };
    if let Err(refusal) = check_replication_factor(replication_factor, map.brokers.len()) {
        return refuse(refusal);
    }
    // Registered is not alive: a replica placed on a dead broker leaves the group one
    // failure from unavailability from its first entry. Live here is "answers its peers
    // now" (a status call, at most STATUS_TIMEOUT), and replicas go only to those brokers;
    // leases that say so continuously are the controller's (issue #14).
    let all: BTreeSet<BrokerId> = map.brokers.keys().copied().collect();
    // A topic that exists is answered ALREADY_EXISTS by the command, whoever answers now: a
    // retried create must not depend on liveness (the command still goes through Raft).
    let answering = if map.topics.contains_key(&topic.name) {
        all
    } else {
        let answering: BTreeSet<BrokerId> = core.gather_status(&map, &all, &[META_GROUP_ID]).await.into_keys().collect();
        if let Err(refusal) = check_live_brokers(replication_factor, answering.len(), map.brokers.len()) {
            return refuse(refusal);
        }
        answering
    };
    let checkpoint_interval_entries =
        if topic.checkpoint_interval_entries == 0 { defaults.checkpoint_interval_entries } else { topic.checkpoint_interval_entries };
    let group_options = GroupOptions { checkpoint_interval_entries };
    if let Err(e) = group_options.check() {
        return refuse(status::invalid("topic.checkpoint_interval_entries", e));
    }
    let cmd = MetaCommand::CreateTopicOn {
        name: topic.name.clone(),
        queue_count,
        replication_factor,
        message_type,
        group_options,
        brokers: answering,
    };
    let created = match core.propose_meta(cmd).await {
        Ok(MetaReply::TopicCreated(t)) => t,
        Ok(MetaReply::TopicExists(t)) => return Ok(Created::Exists(t)),
        Ok(MetaReply::Rejected { reason }) => return refuse(status::invalid("topic", reason)),
        Ok(other) => return refuse(status::internal(format!("unexpected reply {other:?}"))),
        // An attempt forwarded to the metadata leader may have been applied without an
        // answer; a retried create finds the topic (ALREADY_EXISTS).
        Err(e) => return refuse(status::outcome_unknown(e.to_string())),
    };
    // Answer once every group of the topic is started (a leader recorded it once its membership
    // was committed), so the first send finds a group with a leader.
    let mut watch = core.map.clone();
    let ready = tokio::time::timeout(
        CREATE_READY_WAIT,
        watch.wait_for(|m| created.groups.iter().all(|g| m.groups.get(g).is_some_and(|g| g.bootstrapped))),
    )
    .await;
    if !matches!(ready, Ok(Ok(_))) {
        tracing::warn!(topic = %created.name, "topic created; its groups were not all initialized within {CREATE_READY_WAIT:?}");
    }
    Ok(Created::New(created))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_move_to_a_replica_at_most_1000_entries_behind_is_allowed_and_one_more_refused() {
        assert_eq!(lag_refusal(7, 2, 5_000, 4_000), None, "exactly the limit");
        assert_eq!(lag_refusal(7, 2, 5_000, 5_000), None, "caught up");
        assert_eq!(lag_refusal(7, 2, 0, 0), None, "an empty log");
        let refused = lag_refusal(7, 2, 5_001, 4_000).expect("one entry over the limit");
        assert!(refused.contains("broker 2's replica of group 7 lacks 1001") && refused.contains("at most 1000"), "{refused}");
        assert!(lag_refusal(7, 2, 5_000, 0).is_some(), "a replica never matched counts from 0");
    }
}
