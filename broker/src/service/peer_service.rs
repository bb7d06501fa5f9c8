//! `raftmq.v1.PeerService`: what other brokers ask of this one (see `peer.proto`).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use controller::MetaCommand;
use openraft::ServerState;
use openraft::errors::{ClientWriteError, RaftError};
use openraft::raft::ReadPolicy;
use openraft::type_config::async_runtime::watch::WatchReceiver;
use proto::raftmq::v1::peer_service_server::PeerService;
use proto::raftmq::v1::{
    GroupDigestReply, GroupDigestRequest, HibernateReply, HibernateRequest, LocalGroupStatus, LocalStatusReply, LocalStatusRequest,
    MetaReply, MetaRequest, PingReply, PingRequest, ReplicaRole, ReplicaStatus,
};
use tonic::{Request, Response};

use super::status;
use crate::metrics::ReplicaState;
use crate::raft::codec;
use crate::server::Core;

/// Longest a digest request waits for the replica to apply far enough.
const DIGEST_WAIT_MAX: Duration = Duration::from_secs(30);

pub(crate) struct PeerSvc {
    core: Arc<OnceLock<Arc<Core>>>,
}

impl PeerSvc {
    pub(crate) fn new(core: Arc<OnceLock<Arc<Core>>>) -> Self {
        Self { core }
    }

    fn core(&self) -> Result<&Arc<Core>, proto::raftmq::v1::Status> {
        self.core.get().ok_or_else(|| status::unavailable("broker is starting"))
    }
}

/// NOT_LEADER for the metadata group, hinting its leader's peer address.
fn meta_not_leader(core: &Core) -> proto::raftmq::v1::Status {
    status::not_leader(core.meta_leader(), "not the metadata group's leader")
}

fn role(state: ServerState) -> ReplicaRole {
    match state {
        ServerState::Leader => ReplicaRole::Leader,
        ServerState::Follower => ReplicaRole::Follower,
        ServerState::Candidate => ReplicaRole::Candidate,
        ServerState::Learner => ReplicaRole::Learner,
        ServerState::Shutdown => ReplicaRole::Unspecified,
    }
}

/// The status of one hosted group as its Raft metrics describe it.
fn group_status(r: &ReplicaState) -> LocalGroupStatus {
    let replicas = r
        .replication
        .iter()
        .map(|p| {
            let role = if p.broker == r.broker {
                ReplicaRole::Leader
            } else if p.voter {
                ReplicaRole::Follower
            } else {
                ReplicaRole::Learner
            };
            let lag = r.last_log_index.saturating_sub(p.matched_index);
            ReplicaStatus {
                broker_id: p.broker,
                role: role as i32,
                matched_index: p.matched_index,
                applied_index: 0,
                lag,
                ..Default::default()
            }
        })
        .collect();
    LocalGroupStatus {
        group_id: r.group,
        role: role(r.role) as i32,
        term: r.term,
        leader_broker_id: r.leader.unwrap_or(0),
        last_log_index: r.last_log_index,
        commit_index: r.committed_index,
        applied_index: r.applied_index,
        replicas,
        queue_end_offsets: Default::default(),
        snapshot_index: r.snapshot_index,
        purged_index: r.purged_index,
        hibernating: r.hibernating,
    }
}

#[tonic::async_trait]
impl PeerService for PeerSvc {
    #[tracing::instrument(level = "debug", skip_all)]
    async fn propose_meta(&self, request: Request<MetaRequest>) -> Result<Response<MetaReply>, tonic::Status> {
        let core = match self.core() {
            Ok(c) => c,
            Err(s) => return Ok(Response::new(MetaReply { status: Some(s), payload: Default::default() })),
        };
        let reply = |status, payload: Vec<u8>| Ok(Response::new(MetaReply { status: Some(status), payload: payload.into() }));
        let cmd: MetaCommand = match codec::decode(&request.get_ref().payload) {
            Ok(c) => c,
            Err(e) => return reply(status::invalid("payload", e.to_string()), vec![]),
        };
        if !core.meta_is_leader() {
            return reply(meta_not_leader(core), vec![]);
        }
        match core.meta.client_write(cmd).await {
            Ok(resp) => match codec::encode(resp.response()) {
                Ok(p) => reply(status::ok(), p),
                Err(e) => reply(status::internal(e.to_string()), vec![]),
            },
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => reply(meta_not_leader(core), vec![]),
            Err(e) => reply(status::outcome_unknown(format!("outcome unknown: {e}")), vec![]),
        }
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn read_meta(&self, _request: Request<MetaRequest>) -> Result<Response<MetaReply>, tonic::Status> {
        let reply = |status, payload: Vec<u8>| Ok(Response::new(MetaReply { status: Some(status), payload: payload.into() }));
        let core = match self.core() {
            Ok(c) => c,
            Err(s) => return reply(s, vec![]),
        };
        if !core.meta_is_leader() {
            return reply(meta_not_leader(core), vec![]);
        }
        if let Err(e) = core.meta.ensure_linearizable(ReadPolicy::ReadIndex).await {
            return reply(status::not_leader(core.meta_leader(), format!("linearizable read failed: {e}")), vec![]);
        }
        match codec::encode(&*core.local_map()) {
            Ok(p) => reply(status::ok(), p),
            Err(e) => reply(status::internal(e.to_string()), vec![]),
        }
    }

    async fn local_status(&self, request: Request<LocalStatusRequest>) -> Result<Response<LocalStatusReply>, tonic::Status> {
        let core = match self.core() {
            Ok(c) => c,
            Err(s) => return Ok(Response::new(LocalStatusReply { status: Some(s), ..Default::default() })),
        };
        let wanted = request.into_inner().group_ids;
        let map = core.local_map();
        let mut groups = Vec::new();
        let asked = core.hosted_groups().filter(|id| wanted.is_empty() || wanted.contains(id));
        for replica in asked.filter_map(|id| core.replica_state(id)) {
            let mut s = group_status(&replica);
            if let Some(record) = map.groups.get(&replica.group) {
                match core.host.store().next_offset(replica.group, record.queue) {
                    Ok(end) => {
                        s.queue_end_offsets.insert(record.queue, end);
                    }
                    Err(e) => tracing::warn!(group = replica.group, error = %e, "reading a queue's end offset failed"),
                }
            }
            groups.push(s);
        }
        Ok(Response::new(LocalStatusReply { status: Some(status::ok()), broker_id: core.id, groups }))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(leader = request.get_ref().leader_broker_id))]
    async fn hibernate(&self, request: Request<HibernateRequest>) -> Result<Response<HibernateReply>, tonic::Status> {
        let core = match self.core() {
            Ok(c) => c,
            Err(s) => return Ok(Response::new(HibernateReply { status: Some(s), parked: vec![] })),
        };
        let req = request.into_inner();
        if req.groups.len() > crate::server::hibernation::QUIET_GROUPS_PER_CALL_MAX {
            let s = status::invalid(
                "groups",
                format!("{} groups, over {}", req.groups.len(), crate::server::hibernation::QUIET_GROUPS_PER_CALL_MAX),
            );
            return Ok(Response::new(HibernateReply { status: Some(s), parked: vec![] }));
        }
        let parked = crate::server::hibernation::park_followers(core, req.leader_broker_id, &req.groups);
        Ok(Response::new(HibernateReply { status: Some(status::ok()), parked }))
    }

    async fn ping(&self, _request: Request<PingRequest>) -> Result<Response<PingReply>, tonic::Status> {
        let core = self.core().map_err(|s| tonic::Status::unavailable(s.message))?;
        Ok(Response::new(PingReply { broker_id: core.id }))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(group = request.get_ref().group_id))]
    async fn group_digest(&self, request: Request<GroupDigestRequest>) -> Result<Response<GroupDigestReply>, tonic::Status> {
        let reply = |status| Ok(Response::new(GroupDigestReply { status: Some(status), ..Default::default() }));
        let core = match self.core() {
            Ok(c) => c,
            Err(s) => return reply(s),
        };
        let req = request.into_inner();
        let Some(raft) = core.group(req.group_id) else {
            return reply(status::not_found(format!("group {} is not hosted on broker {}", req.group_id, core.id)));
        };
        let Some(queue) = core.local_map().groups.get(&req.group_id).map(|g| g.queue) else {
            return reply(status::not_found(format!("group {} is not in broker {}'s cluster map", req.group_id, core.id)));
        };
        let applied = |m: &openraft::RaftMetrics<_>| m.last_applied.as_ref().map_or(0, |l| l.index());
        let mut target = req.applied_index;
        if target == 0 {
            target = applied(&raft.metrics().borrow_watched());
        }
        let wait = Duration::from_millis(u64::from(req.wait_ms)).min(DIGEST_WAIT_MAX);
        if raft.wait(Some(wait)).metrics(|m| applied(m) >= target, "applied up to the digest index").await.is_err() {
            return reply(status::unavailable(format!(
                "broker {} has not applied group {} up to index {target} within {wait:?}",
                core.id, req.group_id
            )));
        }
        match core.host.queue_digest(req.group_id, queue, target).await {
            Ok((messages, digest)) => Ok(Response::new(GroupDigestReply {
                status: Some(status::ok()),
                applied_index: target,
                digest: digest.to_vec().into(),
                messages,
            })),
            Err(e) => reply(status::internal(e.to_string())),
        }
    }
}
