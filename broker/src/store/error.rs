use super::GroupId;

/// What can go wrong with the queue store. Each variant is something a caller can act on.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// RocksDB failed: an I/O error, or damage it found in its own files (`source.kind()` is
    /// `Corruption` then). The store's state on disk is still the last flushed one.
    #[error("rocksdb {op}: {source}")]
    Db { op: &'static str, source: rocksdb::Error },
    /// A stored key or value fails its format, length or checksum check: the data is damaged
    /// and is never decoded. `key` names the item (group, kind, queue, offset).
    #[error("corrupt store data at {key}: {reason}")]
    Corrupt { key: String, reason: String },
    /// An apply at or below the group's applied index: the caller applied an entry twice or
    /// out of order, and nothing was written.
    #[error("group {group}: log index {index} is not after the applied index {applied}")]
    NotAfterApplied { group: GroupId, applied: u64, index: u64 },
    /// The group is being replaced by an import that has not finished: it takes no applies
    /// and cannot be exported until the import finishes or the group is deleted.
    #[error("group {group} is being imported")]
    Importing { group: GroupId },
    /// The group has no applied index: it was never applied to, or was deleted.
    #[error("group {group} has no state in the store")]
    UnknownGroup { group: GroupId },
    /// An apply batch would hold more operations than the limit.
    #[error("apply batch is full: at most {limit} operations")]
    BatchFull { limit: usize },
    /// A raft state larger than a value may hold; nothing was set.
    #[error("raft state of {len} bytes: at most {max}")]
    RaftStateTooLarge { len: usize, max: usize },
    /// A checkpoint over its bounds or not in canonical order; nothing was set.
    #[error("checkpoint at log index {log_index}: {reason}")]
    InvalidCheckpoint { log_index: u64, reason: String },
    /// A consumer group name the store's keys cannot hold.
    #[error("consumer group name of {len} bytes: must be 1 to {max} bytes")]
    InvalidName { len: usize, max: usize },
    /// Import input that is not a group export (unknown or malformed key, damaged value,
    /// page over the size limit, missing or repeated applied index): nothing of that page was
    /// written, and the group stays marked as being imported.
    #[error("import into group {group}: {reason}")]
    InvalidImport { group: GroupId, reason: String },
}

impl StoreError {
    pub(crate) fn db(op: &'static str) -> impl FnOnce(rocksdb::Error) -> Self {
        move |source| Self::Db { op, source }
    }
}
