//! The gRPC services, thin adapters over the broker's core: each RPC decodes its request, calls
//! the step of the path it needs (admission in [`crate::edge`], routing in [`crate::routing`],
//! the queue group's send path, reads, consumer offsets), and maps the outcome to the
//! protocol's status ([`status`]).
//!
//! - [`queue_service`]: `raftmq.v1.QueueService`, the native client API.
//! - [`admin_service`]: `raftmq.v1.AdminService`: topics, cluster status, replica checksums.
//! - [`rocketmq`]: `apache.rocketmq.v2.MessagingService`, RocketMQ 5's client protocol.
//! - [`peer_service`]: `raftmq.v1.PeerService`, broker to broker: metadata calls, status,
//!   digests, hibernation.

pub(crate) mod admin_service;
pub(crate) mod peer_service;
pub(crate) mod queue_service;
pub(crate) mod rocketmq;
pub(crate) mod status;
