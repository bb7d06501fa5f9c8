//! `QueryRoute`: each queue of a topic, on the broker that leads its group as far as this broker
//! knows (a broker that turns out not to lead forwards once, so a stale route costs a hop, not a
//! failure). What the official clients need of a route (`../shared/rocketmq-clients.md`): every
//! queue's broker has id 0 (Python keeps only RocketMQ's master id) and a name of its own, queue
//! 0 exists and is writable (Node uses no other), endpoints carry their address scheme, and each
//! queue lists the message type its topic accepts.

use controller::MessageType as TopicType;
use proto::apache::rocketmq::v2::{
    Address, AddressScheme, Assignment, Broker, Code, Endpoints, MessageQueue, MessageType, Permission, QueryAssignmentResponse,
    QueryRouteResponse, Resource, Status,
};

use super::{check_group, ok, status, topic_record};
use crate::server::Core;

/// RocketMQ's id of a master broker: the only one clients send to.
const MASTER_BROKER_ID: i32 = 0;

/// The route of `topic`, raftmq's name of `resource`.
pub(super) async fn query_route(core: &Core, resource: &Resource, topic: &str) -> QueryRouteResponse {
    match message_queues(core, resource, topic).await {
        Ok(message_queues) => QueryRouteResponse { status: Some(ok()), message_queues },
        Err(s) => QueryRouteResponse { status: Some(s), message_queues: vec![] },
    }
}

/// `QueryAssignment`: every queue of the topic, each on the broker that leads it, for a push
/// consumer of `group` to receive from. Receives are served by the queue's leader whichever
/// consumer asks, so every consumer is assigned every queue.
pub(super) async fn query_assignment(core: &Core, resource: &Resource, topic: &str, group: &str) -> QueryAssignmentResponse {
    if let Err(s) = check_group(core, group) {
        return QueryAssignmentResponse { status: Some(s), assignments: vec![] };
    }
    match message_queues(core, resource, topic).await {
        Ok(queues) => QueryAssignmentResponse {
            status: Some(ok()),
            assignments: queues.into_iter().map(|q| Assignment { message_queue: Some(q) }).collect(),
        },
        Err(s) => QueryAssignmentResponse { status: Some(s), assignments: vec![] },
    }
}

/// Each queue of `topic` on the broker that leads it as far as this broker knows.
async fn message_queues(core: &Core, resource: &Resource, topic: &str) -> Result<Vec<MessageQueue>, Status> {
    let (map, record) = topic_record(core, topic).await?;
    let mut message_queues = Vec::with_capacity(record.groups.len());
    for (queue, group_id) in record.groups.iter().enumerate() {
        let Some(group) = map.groups.get(group_id) else {
            return Err(status(Code::InternalServerError, format!("topic {topic:?} queue {queue} has no group in the map")));
        };
        let leader = core.known_leader(group);
        let candidates = leader.into_iter().chain(group.replicas.iter().copied());
        let Some((broker, endpoint)) = candidates.filter_map(|b| core.endpoint_of(b)).next() else {
            let reason = format!("no broker of topic {topic:?} queue {queue} is registered with an address yet");
            return Err(status(Code::HaNotAvailable, reason));
        };
        message_queues.push(MessageQueue {
            topic: Some(resource.clone()),
            id: queue as i32,
            permission: Permission::ReadWrite as i32,
            broker: Some(Broker { name: format!("broker-{broker}"), id: MASTER_BROKER_ID, endpoints: Some(endpoints(&endpoint)) }),
            accept_message_types: vec![message_type(record.message_type) as i32],
        });
    }
    Ok(message_queues)
}

pub(super) fn message_type(t: TopicType) -> MessageType {
    match t {
        TopicType::Normal => MessageType::Normal,
        TopicType::Fifo => MessageType::Fifo,
        TopicType::Delay => MessageType::Delay,
        TopicType::Transaction => MessageType::Transaction,
    }
}

/// A broker's advertised `host:port` as RocketMQ endpoints, with the scheme clients build their
/// target from (Python's is empty without one).
pub(super) fn endpoints(host_port: &str) -> Endpoints {
    let (host, port) = host_port.rsplit_once(':').unwrap_or((host_port, "0"));
    let port = port.parse::<i32>().unwrap_or(0);
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let scheme = match bare.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => AddressScheme::IPv4,
        Ok(std::net::IpAddr::V6(_)) => AddressScheme::IPv6,
        Err(_) => AddressScheme::DomainName,
    };
    Endpoints { scheme: scheme as i32, addresses: vec![Address { host: bare.to_owned(), port }] }
}
