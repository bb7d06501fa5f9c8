//! Wire protocols (apache.rocketmq.v2 and raftmq.v1); generated code lands with the proto crate.
