//! The shape of raftmq's own protocol that the broker and clients rely on.

use prost::Message as _;
use prost::bytes::Bytes;

use super::*;
use crate::raftmq::v1::{RaftReply, RaftRequest, SnapshotChunk, raft_reply, status::Code};

const PACKAGE: &str = "raftmq.v1";

fn raftmq() -> FileDescriptorSet {
    decode_set(crate::RAFTMQ_V1_DESCRIPTOR_SET)
}

#[test]
fn services_have_their_rpcs() {
    let set = raftmq();
    let files = package_files(&set, PACKAGE);
    let expected: [(&str, &[&str]); 4] = [
        (
            "RaftTransport",
            &[
                "AppendEntries(RaftRequest) returns (RaftReply)",
                "Vote(RaftRequest) returns (RaftReply)",
                "InstallSnapshot(stream SnapshotChunk) returns (RaftReply)",
                "TransferLeader(RaftRequest) returns (RaftReply)",
                "Batch(HeartbeatBatch) returns (HeartbeatBatchReply)",
            ],
        ),
        (
            "QueueService",
            &[
                "Send(SendRequest) returns (SendReply)",
                "Fetch(FetchRequest) returns (FetchReply)",
                "CommitOffset(CommitOffsetRequest) returns (CommitOffsetReply)",
                "GetOffset(GetOffsetRequest) returns (GetOffsetReply)",
            ],
        ),
        (
            "AdminService",
            &[
                "CreateTopic(CreateTopicRequest) returns (CreateTopicReply)",
                "ListTopics(ListTopicsRequest) returns (ListTopicsReply)",
                "DescribeTopic(DescribeTopicRequest) returns (DescribeTopicReply)",
                "ClusterStatus(ClusterStatusRequest) returns (ClusterStatusReply)",
                "GroupChecksum(GroupChecksumRequest) returns (GroupChecksumReply)",
                "MoveLeader(MoveLeaderRequest) returns (MoveLeaderReply)",
            ],
        ),
        (
            "PeerService",
            &[
                "ProposeMeta(MetaRequest) returns (MetaReply)",
                "ReadMeta(MetaRequest) returns (MetaReply)",
                "LocalStatus(LocalStatusRequest) returns (LocalStatusReply)",
                "GroupDigest(GroupDigestRequest) returns (GroupDigestReply)",
                "Hibernate(HibernateRequest) returns (HibernateReply)",
                "Ping(PingRequest) returns (PingReply)",
            ],
        ),
    ];
    for (name, rpc_list) in expected {
        assert_eq!(rpcs(service(&files, name), PACKAGE), rpc_list, "rpcs of {name}");
    }
    assert_eq!(crate::raftmq::v1::raft_transport_server::SERVICE_NAME, "raftmq.v1.RaftTransport");
}

#[test]
fn every_raft_message_names_its_group() {
    let set = raftmq();
    let raft = file(&set, "raftmq/v1/raft.proto");
    for name in ["RaftRequest", "RaftReply", "SnapshotChunk"] {
        let found = fields(message(&[raft], name), PACKAGE);
        assert_eq!(found[0], "uint64 group_id = 1", "first field of {name}");
    }
}

#[test]
fn an_unset_status_is_not_ok() {
    assert_eq!(Code::default(), Code::Unspecified);
    assert_ne!(Code::Ok as i32, 0);
}

#[test]
fn raft_messages_round_trip() {
    let request = RaftRequest { group_id: 7, target_node_id: 2, payload: Bytes::from_static(b"ae") };
    assert_eq!(request.encode_to_vec(), [0x08, 0x07, 0x10, 0x02, 0x1a, 0x02, b'a', b'e']);

    let reply = RaftReply { group_id: 7, result: Some(raft_reply::Result::Payload(Bytes::new())) };
    // An empty payload is still sent: the oneof records which arm was chosen.
    assert_eq!(reply.encode_to_vec(), [0x08, 0x07, 0x12, 0x00]);
    assert_eq!(RaftReply::decode(&reply.encode_to_vec()[..]).unwrap(), reply);

    let chunk = SnapshotChunk {
        group_id: 7,
        target_node_id: 2,
        meta: Bytes::from_static(b"m"),
        offset: 0,
        data: Bytes::from_static(b"0123"),
        done: true,
    };
    assert_eq!(SnapshotChunk::decode(&chunk.encode_to_vec()[..]).unwrap(), chunk);
}
