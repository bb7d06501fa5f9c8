use std::io;
use std::path::{Path, PathBuf};

/// What can go wrong with the log. Each variant is something a caller can act on.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    /// A record before the tail fails its checksum, or the log contradicts itself: the log
    /// refuses to open rather than read damaged data as good.
    #[error("corrupt log: {file} at byte {offset}: {reason}")]
    Corrupt { file: PathBuf, offset: u64, reason: String },
    /// An earlier write or sync failed; after a failed `fdatasync` the page cache can no longer
    /// be trusted, so the engine accepts no more writes until it is reopened.
    #[error("log engine stopped after an I/O failure: {0}")]
    Failed(String),
    /// The call breaks the log's rules (a hole, an index at or below the purge point, a record
    /// too large): a bug in the caller, nothing was written.
    #[error("invalid log operation: {0}")]
    Invalid(String),
    /// The engine has been shut down.
    #[error("log engine is closed")]
    Closed,
}

impl LogError {
    pub(crate) fn io(path: &Path, source: io::Error) -> Self {
        Self::Io { path: path.to_path_buf(), source }
    }
}

impl From<LogError> for io::Error {
    fn from(e: LogError) -> Self {
        match e {
            LogError::Io { source, .. } => source,
            LogError::Corrupt { .. } => io::Error::new(io::ErrorKind::InvalidData, e.to_string()),
            LogError::Invalid(_) => io::Error::new(io::ErrorKind::InvalidInput, e.to_string()),
            _ => io::Error::other(e.to_string()),
        }
    }
}
