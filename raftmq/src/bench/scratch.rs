//! The benchmark's own temporary directory: made new, and removed afterwards, also when the
//! benchmark fails or panics.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;

pub struct ScratchDir {
    path: PathBuf,
    removed: bool,
}

impl ScratchDir {
    /// Makes a new directory inside `parent`, which must exist.
    pub fn create(parent: &Path) -> anyhow::Result<Self> {
        anyhow::ensure!(parent.is_dir(), "{}: not a directory", parent.display());
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let path = parent.join(format!("raftmq-bench-{}-{nanos}", std::process::id()));
        // create_dir, not create_dir_all: never adopt (and later delete) a directory that exists.
        std::fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self { path, removed: false })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the directory, reporting failure (dropping removes it too, but silently).
    pub fn remove(mut self) -> anyhow::Result<()> {
        self.removed = true;
        std::fs::remove_dir_all(&self.path).with_context(|| format!("removing {}", self.path.display()))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if !self.removed
            && let Err(e) = std::fs::remove_dir_all(&self.path)
        {
            tracing::warn!(dir = %self.path.display(), error = %e, "could not remove the benchmark directory");
        }
    }
}
