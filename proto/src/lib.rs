//! raftmq's wire protocols, generated from the `.proto` files under `proto/`.
//!
//! - [`apache::rocketmq::v2`]: the RocketMQ 5 gRPC client protocol
//!   (`MessagingService`, RocketMQ's `Admin`), identical in every name and
//!   number to the published apache/rocketmq-apis, so the official clients
//!   talk to raftmq unchanged.
//! - [`raftmq::v1`]: raftmq's own protocol: `RaftTransport` between brokers,
//!   `QueueService` (the native client API), `AdminService` and `PeerService`
//!   (calls between brokers).
//! - [`ROCKETMQ_V2_DESCRIPTOR_SET`], [`RAFTMQ_V1_DESCRIPTOR_SET`]: encoded
//!   `FileDescriptorSet`s of each package (imports included), for gRPC
//!   reflection.
//!
//! Each service has a client (`*_client`) and a server (`*_server`) module.
//! `bytes` fields are `prost::bytes::Bytes`, sliced from the received buffer.

// The allowances on the generated modules below keep stricter workspace lints
// (pedantic, missing_docs) off code that is not ours to edit, and only there.

pub mod apache {
    pub mod rocketmq {
        #[allow(clippy::all, clippy::pedantic, missing_docs)]
        pub mod v2 {
            tonic::include_proto!("apache.rocketmq.v2");
        }
    }
}

pub mod raftmq {
    #[allow(clippy::all, clippy::pedantic, missing_docs)]
    pub mod v1 {
        tonic::include_proto!("raftmq.v1");
    }
}

/// Encoded `google.protobuf.FileDescriptorSet` of `apache.rocketmq.v2` and the
/// well-known types it imports.
pub const ROCKETMQ_V2_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/apache.rocketmq.v2.bin"));

/// Encoded `google.protobuf.FileDescriptorSet` of `raftmq.v1`.
pub const RAFTMQ_V1_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/raftmq.v1.bin"));

#[cfg(test)]
mod tests;
