//! Routing and forwarding, step 2 of a message's path: which queue group a request is for
//! ([`Core::route`]), where that group's leader is ([`Core::leader_target`]), and taking the
//! request there ([`at_leader`]): served here when this broker leads, else forwarded once to the
//! leader over the client channel ([`forward`]). Every RPC of every client protocol makes this
//! decision here, written once.
//!
//! - A forwarded request is never forwarded again, but answered NOT_LEADER with a hint, so a
//!   request crosses at most one extra hop.
//! - A forward that certainly never left ([`client::transport::never_sent`]), or any failed
//!   forward of a read, is tried once more at the leader the group names next
//!   ([`Core::retarget`]); any other failure of a write may have taken effect, and is answered
//!   so (OUTCOME_UNKNOWN).

pub mod forward;

use std::sync::Arc;
use std::time::Duration;

use controller::{ClusterMap, GroupRecord, TopicRecord};
use openraft::Instant as _;
use openraft::ServerState;
use openraft::type_config::async_runtime::watch::WatchReceiver;
use proto::raftmq::v1::Status;
use tonic::{Request, Response};

use crate::edge::{self, at_most, left};
use crate::host::QueueRaft;
use crate::raft::BrokerId;
use crate::server::Core;
use crate::service::status;
use forward::{FORWARD_TIMEOUT, FORWARDED_HEADER};

/// How long a new leader may take to confirm its lease before a write is answered NOT_LEADER.
const LEADER_READY_WAIT: Duration = Duration::from_secs(2);

/// Where a request for one group is served.
pub(crate) enum Serve {
    /// This broker leads the group, and its lease is confirmed.
    Leader(QueueRaft),
    /// Forward to this client endpoint.
    Forward(String),
    /// Answer with this status (a forwarded request whose target is not here, no leader known).
    Refuse(Status),
}

pub(crate) fn is_forwarded<T>(request: &Request<T>) -> bool {
    request.metadata().contains_key(FORWARDED_HEADER)
}

/// `message` forwarded by this broker, due within `within` (the client's deadline, if any).
pub(crate) fn forward_request<T>(core: &Core, message: T, within: Option<Duration>) -> Request<T> {
    let mut req = Request::new(message);
    if let Ok(v) = core.id.to_string().parse() {
        req.metadata_mut().insert(FORWARDED_HEADER, v);
    }
    req.set_timeout(at_most(FORWARD_TIMEOUT, within));
    req
}

/// What a forwarded request's failure is answered with: a write may have been applied by the
/// leader unless the connection was never made; a read changed nothing either way.
#[derive(Clone, Copy)]
pub(crate) enum Effect {
    Write,
    Read,
}

/// Where [`at_leader`] left a request.
pub(crate) enum AtLeader<R> {
    /// This broker leads the group: serve the request here.
    Here(QueueRaft),
    /// The leader it was forwarded to answered this.
    Answered(R),
    /// Neither: answer with this status.
    Refused(Status),
}

/// Takes a request for `group` to its leader: this broker, or the one it is forwarded to
/// (through `call`). A forward that could not even connect (nothing was sent) goes
/// once more to the leader the group names next; any other failure is answered as `effect`
/// says. The one place where every RPC's resolve / forward / serve decision is made.
pub(crate) async fn at_leader<C, R, F, Fut>(
    core: &Core,
    group: &GroupRecord,
    mut serve: Serve,
    forwarded: bool,
    due: Option<tokio::time::Instant>,
    effect: Effect,
    mut call: F,
) -> AtLeader<R>
where
    C: forward::ForwardClient,
    F: FnMut(C, Option<Duration>) -> Fut,
    Fut: std::future::Future<Output = Result<Response<R>, tonic::Status>>,
{
    let failed = |endpoint: &str, e: &tonic::Status| match effect {
        Effect::Write => status::forwarded_write_failed(endpoint, e),
        Effect::Read => status::unavailable(format!("forwarded to {endpoint}: {e}")),
    };
    let mut retargeted = false;
    loop {
        let endpoint = match serve {
            Serve::Refuse(s) => return AtLeader::Refused(s),
            Serve::Leader(raft) => return AtLeader::Here(raft),
            Serve::Forward(endpoint) => endpoint,
        };
        let client = match core.forward.client::<C>(&endpoint) {
            Ok(c) => c,
            Err(e) => return AtLeader::Refused(status::unavailable(e)),
        };
        match call(client, left(due)).await {
            Ok(r) => return AtLeader::Answered(r.into_inner()),
            // A read changes nothing, so whatever became of the forward (a connection the dead
            // leader closed mid-call included) it may go to the new leader; a write only when it
            // was never sent. Answers come inside the reply: an `Err` is the transport's.
            Err(e) if !retargeted && (matches!(effect, Effect::Read) || client::transport::never_sent(&e)) => {
                retargeted = true;
                match core.retarget(group, &endpoint, forwarded, left(due)).await {
                    Some(next) => serve = next,
                    None => return AtLeader::Refused(failed(&endpoint, &e)),
                }
            }
            Err(e) => return AtLeader::Refused(failed(&endpoint, &e)),
        }
    }
}

impl Core {
    /// The group of `queue` in `topic`: from the local map, or after a linearizable read of the
    /// metadata when the local copy does not have the topic yet (it was just created).
    pub(crate) async fn route(&self, topic: &str, queue: Option<u32>, routing_key: Option<&str>) -> Result<GroupRecord, Status> {
        let (map, t) = self.map_with_topic(topic).await?;
        let queue = match (queue, routing_key) {
            (Some(q), _) if q < t.queue_count => q,
            (Some(q), _) => {
                return Err(status::invalid("queue_id", format!("queue {q} is out of range; topic {topic:?} has {}", t.queue_count)));
            }
            // A fixed hash, so a key maps to the same queue on every broker and every release.
            (None, Some(key)) => crc32c::crc32c(key.as_bytes()) % t.queue_count.max(1),
            (None, None) => return Err(status::invalid("target", "set queue_id or routing_key")),
        };
        map.route(topic, queue).cloned().ok_or_else(|| status::internal(format!("topic {topic:?} queue {queue} has no group in the map")))
    }

    /// `topic` and a cluster map that holds it: the local copy, or after a linearizable read of
    /// the metadata when the local copy does not have it yet (it was just created). NOT_FOUND
    /// when the topic does not exist.
    pub(crate) async fn map_with_topic(&self, topic: &str) -> Result<(Arc<ClusterMap>, TopicRecord), Status> {
        let mut map: Arc<ClusterMap> = self.local_map();
        if !map.topics.contains_key(topic) {
            map = self.read_meta().await.map_err(|e| status::unavailable(e.to_string()))?;
        }
        let Some(record) = map.topics.get(topic).cloned() else {
            return Err(status::not_found(format!("topic {topic:?} does not exist")));
        };
        Ok((map, record))
    }

    /// The broker that leads `group` as far as this broker knows: its own replica's view, else
    /// the group's preferred leader.
    pub(crate) fn known_leader(&self, group: &GroupRecord) -> Option<BrokerId> {
        let seen = self.group(group.id).and_then(|raft| raft.metrics().borrow_watched().current_leader);
        seen.or_else(|| group.replicas.first().copied())
    }

    /// Where a consumer-offset request (`CommitOffset`, `GetOffset`) is served, after checking
    /// its names: the queue's group, and how to serve it there.
    pub(crate) async fn consumer_offset_target(
        &self,
        consumer_group: &str,
        topic: &str,
        queue: u32,
        forwarded: bool,
        within: Option<Duration>,
    ) -> Result<(GroupRecord, Serve), Status> {
        let limits = &self.options.limits;
        edge::check_name("consumer_group", consumer_group, limits).and_then(|_| edge::check_name("topic", topic, limits))?;
        let group = self.route(topic, Some(queue), None).await?;
        let serve = self.leader_target(&group, forwarded, within).await;
        Ok((group, serve))
    }

    pub(crate) fn endpoint_of(&self, broker: BrokerId) -> Option<(BrokerId, String)> {
        self.client_endpoint(broker).map(|e| (broker, e))
    }

    /// Where a leader-only request for `group` goes (see [`Serve`]); a leader not ready within
    /// [`LEADER_READY_WAIT`], or the request's own deadline when sooner, is UNAVAILABLE.
    pub(crate) async fn leader_target(&self, group: &GroupRecord, forwarded: bool, within: Option<Duration>) -> Serve {
        let Some(raft) = self.group(group.id) else {
            let preferred = group.replicas.first().copied();
            return match preferred.and_then(|b| self.endpoint_of(b)) {
                Some((_, endpoint)) if !forwarded => Serve::Forward(endpoint),
                hint => Serve::Refuse(status::not_leader(hint, format!("group {} has no replica on broker {}", group.id, self.id))),
            };
        };
        let ready_wait = at_most(LEADER_READY_WAIT, within);
        let deadline = tokio::time::Instant::now() + ready_wait;
        // openraft refuses writes once the leader's lease (a quorum's ack within the election
        // timeout) has run out, as it has after the group hibernated: such a leader is woken
        // and served only once a heartbeat round renewed it. One heartbeat of margin, so the
        // lease still holds when the write reaches the Raft core.
        let config = self.host.raft_config();
        let heartbeat = Duration::from_millis(config.heartbeat_interval);
        let lease = Duration::from_millis(config.election_timeout_max).saturating_sub(heartbeat);
        let mut metrics = raft.metrics();
        loop {
            let (leader, leading, lease_held) = {
                let m = metrics.borrow_watched();
                // A group whose only voter is this replica has no quorum to renew a lease with
                // and no one who could lead instead: its leader always holds it.
                let sole_voter = m.membership_config.membership().voter_ids().eq([self.id]);
                let lease_held = sole_voter || m.last_quorum_acked.as_ref().is_some_and(|acked| acked.elapsed() < lease);
                (m.current_leader, m.state == ServerState::Leader, lease_held)
            };
            match leader {
                Some(l) if l == self.id && leading => {
                    // Every request served here as leader writes or reads through the group:
                    // it heartbeats again (see `hibernation`).
                    self.host.wake(group.id);
                    if lease_held {
                        return Serve::Leader(raft);
                    }
                }
                Some(l) if l != self.id => {
                    let hint = self.endpoint_of(l);
                    return match hint {
                        Some((_, endpoint)) if !forwarded => Serve::Forward(endpoint),
                        hint => Serve::Refuse(status::not_leader(hint, format!("broker {} does not lead group {}", self.id, group.id))),
                    };
                }
                // No leader yet, or this replica was just elected and awaits its quorum's ack.
                _ => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return Serve::Refuse(status::unavailable(format!("group {} has no leader ready within {ready_wait:?}", group.id)));
            }
            // A renewed lease may not change the metrics: look again after a heartbeat at most.
            let next_look = deadline.min(tokio::time::Instant::now() + heartbeat);
            if let Ok(Err(_)) = tokio::time::timeout_at(next_look, metrics.changed()).await {
                return Serve::Refuse(status::unavailable(format!("group {} stopped on broker {}", group.id, self.id)));
            }
        }
    }

    /// Where to go after a forward to `unreachable` could not even connect (nothing was sent,
    /// so one more try is safe): once this broker's replica of `group` names another leader,
    /// within [`LEADER_READY_WAIT`] or the request's deadline, wherever [`Self::leader_target`]
    /// then says. `None` when it names no other in time: the first leader just died and no
    /// election has ended yet, or this broker holds no replica to learn from.
    pub(crate) async fn retarget(
        &self,
        group: &GroupRecord,
        unreachable: &str,
        forwarded: bool,
        within: Option<Duration>,
    ) -> Option<Serve> {
        let raft = self.group(group.id)?;
        let due = within.map(|w| tokio::time::Instant::now() + w);
        let deadline = tokio::time::Instant::now() + at_most(LEADER_READY_WAIT, within);
        let mut metrics = raft.metrics();
        let moved = |m: &openraft::RaftMetrics<_>| match m.current_leader {
            Some(l) if l == self.id => true,
            Some(l) => self.client_endpoint(l).is_some_and(|e| e != unreachable),
            None => false,
        };
        while !moved(&metrics.borrow_watched()) {
            if !matches!(tokio::time::timeout_at(deadline, metrics.changed()).await, Ok(Ok(()))) {
                return None;
            }
        }
        match self.leader_target(group, forwarded, left(due)).await {
            Serve::Forward(e) if e == unreachable => None,
            serve => Some(serve),
        }
    }
}
