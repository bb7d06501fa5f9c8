//! What the broker's multi-replica tests share.

use std::net::SocketAddr;

use broker::host::HostOptions;
use broker::raft::BrokerId;
use openraft::{Config, SnapshotPolicy};

/// Raft timing for tests on loopback: elections in well under a second. Snapshots (and the
/// purges after them) only when a test asks for one.
pub fn fast_raft_config() -> Config {
    Config {
        heartbeat_interval: 100,
        election_timeout_min: 400,
        election_timeout_max: 800,
        snapshot_policy: SnapshotPolicy::Never,
        max_in_snapshot_log_to_keep: 0,
        ..Default::default()
    }
}

/// A host on loopback (`listen`, port 0 for any) with [`fast_raft_config`].
#[allow(dead_code)] // Not every test binary that includes this module uses hosts.
pub fn host_options(id: BrokerId, dir: &std::path::Path, listen: SocketAddr) -> HostOptions {
    let mut o = HostOptions::new(id, dir);
    o.raft_listen = listen;
    o.raft = fast_raft_config();
    o
}
