//! openraft's state machine for the metadata group: the [`ClusterMap`] in memory, snapshots on
//! disk.
//!
//! # Guarantees
//!
//! - The map, the last applied log id and the last membership live in memory only; `apply`
//!   writes nothing. What survives a restart is the last snapshot file:
//!   [`MetaStateMachine::open`] starts from it, and openraft re-applies the committed log above
//!   it (the log store persists the committed log id).
//! - Building or installing a snapshot returns only once its file is durable: openraft purges
//!   the Raft log up to a snapshot's index, and after a crash the state below that index exists
//!   only in the file. The file is written whole to `snapshot.tmp`, fsynced, renamed over
//!   `snapshot` and the directory fsynced, so `snapshot` is always one complete snapshot, the
//!   old or the new.
//! - Files are written one at a time, and a built snapshot never replaces a newer file (an
//!   install may finish while an older build is still running).
//! - A snapshot file that is damaged (magic, length, checksum, decoding, or a map that fails
//!   [`ClusterMap::check`]) makes `open` fail naming the file; it is never skipped, since the
//!   log it summarizes may be purged.
//! - Subscribers ([`MetaStateMachine::subscribe`]) see every map the state machine reaches at
//!   the end of an applied batch, after an install and after `open`; a change whose reply goes
//!   to a waiting client is published before the reply is sent, so the client can already
//!   see its effect.
//!
//! # Snapshot layout
//!
//! The snapshot buffer (openraft's `SnapshotData`, sent to followers) and the file are the same
//! bytes:
//!
//! | bytes | field |
//! |---|---|
//! | 0..8 | magic `RMQMETA1` |
//! | 8..12 | body length n, u32 LE |
//! | 12..12+n | body: bincode (fixed-width integers) of ([`SnapshotMeta`](openraft::SnapshotMeta), [`ClusterMap`]) |
//! | 12+n..16+n | CRC32C of bytes 0..12+n, u32 LE |
//!
//! A snapshot is at most [`SNAPSHOT_BYTES_MAX`] (64 MiB); building a larger one fails. Metadata
//! is small (a queue group's record is some 50 bytes plus its topic name, so a million groups
//! fit), and the whole map is held in memory and cloned on change anyway; a cluster outgrowing
//! the bound needs a streamed format first.

use std::fs::{self, File};
use std::io::{self, Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bincode::Options;
use futures::{Stream, TryStreamExt};
use openraft::alias::{CommittedLeaderIdOf, EntryPayloadOf, LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder, RaftTypeConfig};
use tokio::sync::watch;

use crate::apply::apply;
use crate::command::{MetaCommand, MetaReply};
use crate::model::ClusterMap;

/// The largest snapshot, file or buffer, that is built, installed or opened.
pub const SNAPSHOT_BYTES_MAX: u64 = 64 << 20;
/// The snapshot file in the state machine's directory.
pub const SNAPSHOT_FILE: &str = "snapshot";
/// Where a snapshot is written before it is renamed over [`SNAPSHOT_FILE`]; one left by a crash
/// is removed on open.
pub const SNAPSHOT_TMP_FILE: &str = "snapshot.tmp";

const MAGIC: &[u8; 8] = b"RMQMETA1";
/// Magic and body length.
const HEADER_BYTES: usize = 12;
const CHECKSUM_BYTES: usize = 4;

/// The openraft type configs the metadata state machine runs under: [`MetaCommand`] and
/// [`MetaReply`] as the application data, openraft's own entry and payload types (the defaults
/// of `declare_raft_types!`), and any node id and node.
pub trait MetaTypeConfig:
    RaftTypeConfig<
        D = MetaCommand,
        R = MetaReply,
        Payload = EntryPayloadOf<Self>,
        Entry = openraft::Entry<CommittedLeaderIdOf<Self>, EntryPayloadOf<Self>>,
    >
{
}

impl<C> MetaTypeConfig for C where
    C: RaftTypeConfig<
            D = MetaCommand,
            R = MetaReply,
            Payload = EntryPayloadOf<C>,
            Entry = openraft::Entry<CommittedLeaderIdOf<C>, EntryPayloadOf<C>>,
        >
{
}

/// What can go wrong in the state machine. openraft sees it as an `io::Error` and stops the
/// group: going on without the snapshot it asked for could lose metadata once the log is purged.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    /// A file or directory operation failed on `path`.
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The snapshot file on disk is not one this module wrote whole.
    #[error("{}: bad snapshot file: {reason}", .path.display())]
    CorruptSnapshot { path: PathBuf, reason: String },
    /// A snapshot buffer to install is not one this module built, or disagrees with its meta.
    #[error("bad snapshot: {reason}")]
    BadSnapshot { reason: String },
    /// The map does not fit a snapshot of [`SNAPSHOT_BYTES_MAX`].
    #[error("snapshot over {max} bytes")]
    SnapshotTooLarge { max: u64 },
    /// bincode could not encode the snapshot (for a reason other than its size).
    #[error("encoding the snapshot: {reason}")]
    Encode { reason: String },
    /// The blocking task writing a snapshot file panicked or was cancelled.
    #[error("snapshot task failed: {reason}")]
    Task { reason: String },
}

impl From<MetaError> for io::Error {
    fn from(e: MetaError) -> Self {
        let kind = match e {
            MetaError::CorruptSnapshot { .. } | MetaError::BadSnapshot { .. } => io::ErrorKind::InvalidData,
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, e)
    }
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> MetaError + '_ {
    move |source| MetaError::Io { path: path.to_path_buf(), source }
}

/// The state machine of the metadata group.
///
/// `C` is the broker's type config for the group (see [`MetaTypeConfig`]).
pub struct MetaStateMachine<C: MetaTypeConfig> {
    /// Shared with subscribers and snapshot builders, copied on the first change after that.
    map: Arc<ClusterMap>,
    applied: Option<LogIdOf<C>>,
    membership: StoredMembershipOf<C>,
    snapshots: SnapshotFiles<C>,
    published: watch::Sender<Arc<ClusterMap>>,
}

impl<C: MetaTypeConfig> MetaStateMachine<C> {
    /// Opens the state machine kept in `dir` (created if missing): the state of the snapshot
    /// file there, or the empty state when there is none.
    pub fn open(dir: &Path) -> Result<Self, MetaError> {
        create_dir_durably(dir)?;
        let tmp = dir.join(SNAPSHOT_TMP_FILE);
        match fs::remove_file(&tmp) {
            Ok(()) => tracing::warn!(path = %tmp.display(), "removed a snapshot left half-written by a crash"),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_at(&tmp)(e)),
        }
        let snapshots =
            SnapshotFiles::<C> { dir: dir.to_path_buf(), writing: Arc::new(Mutex::new(())), current: Arc::new(Mutex::new(None)) };
        let path = dir.join(SNAPSHOT_FILE);
        let Some(data) = read_snapshot_file(&path)? else {
            tracing::info!(dir = %dir.display(), "no metadata snapshot: starting empty");
            let map = Arc::new(ClusterMap::default());
            let (published, _) = watch::channel(map.clone());
            return Ok(Self { map, applied: None, membership: StoredMembershipOf::<C>::default(), snapshots, published });
        };
        let (meta, map) = decode_snapshot::<C>(&data).map_err(|reason| MetaError::CorruptSnapshot { path: path.clone(), reason })?;
        tracing::info!(
            path = %path.display(),
            last_log_id = ?meta.last_log_id,
            brokers = map.brokers.len(),
            topics = map.topics.len(),
            groups = map.groups.len(),
            "opened metadata snapshot"
        );
        let map = Arc::new(map);
        let (published, _) = watch::channel(map.clone());
        let sm = Self { map, applied: meta.last_log_id.clone(), membership: meta.last_membership.clone(), snapshots, published };
        sm.snapshots.set_current(CurrentSnapshot { meta, data: Arc::new(data) });
        Ok(sm)
    }

    /// The current map, and every later one the state machine publishes. The broker reconciles
    /// its group replicas and routes sends from it; the receiver stays valid after the state
    /// machine moves into openraft.
    pub fn subscribe(&self) -> watch::Receiver<Arc<ClusterMap>> {
        self.published.subscribe()
    }

    fn publish_if_changed(&self) {
        // The version is the log index of the last change, so equal versions are equal maps.
        if self.published.borrow().version != self.map.version {
            self.published.send_replace(self.map.clone());
        }
    }

    async fn apply_entries<S>(&mut self, mut entries: S) -> Result<(), io::Error>
    where
        S: Stream<Item = Result<EntryResponder<C>, io::Error>> + Unpin + OptionalSend,
    {
        while let Some((entry, responder)) = entries.try_next().await? {
            let openraft::Entry { log_id, payload } = entry;
            let reply = match payload {
                EntryPayload::Blank => MetaReply::NoCommand,
                EntryPayload::Normal(command) => apply(Arc::make_mut(&mut self.map), log_id.index, &command),
                EntryPayload::Membership(membership) => {
                    self.membership = StoredMembershipOf::<C>::new(Some(log_id.clone()), membership);
                    MetaReply::NoCommand
                }
            };
            self.applied = Some(log_id);
            if let Some(responder) = responder {
                self.publish_if_changed();
                responder.send(reply);
            }
        }
        Ok(())
    }
}

/// The snapshot file of one state machine and the snapshot it holds. Clones (the state machine's
/// and its builders') share both.
struct SnapshotFiles<C: MetaTypeConfig> {
    dir: PathBuf,
    /// Held while a file is written, so one write never interleaves with another.
    writing: Arc<Mutex<()>>,
    /// The snapshot in the file, once one was opened, built or installed; replaced whole.
    current: Arc<Mutex<Option<CurrentSnapshot<C>>>>,
}

impl<C: MetaTypeConfig> Clone for SnapshotFiles<C> {
    fn clone(&self) -> Self {
        Self { dir: self.dir.clone(), writing: self.writing.clone(), current: self.current.clone() }
    }
}

struct CurrentSnapshot<C: MetaTypeConfig> {
    meta: SnapshotMetaOf<C>,
    data: Arc<Vec<u8>>,
}

impl<C: MetaTypeConfig> Clone for CurrentSnapshot<C> {
    fn clone(&self) -> Self {
        Self { meta: self.meta.clone(), data: self.data.clone() }
    }
}

/// Whether a write may replace a file holding a newer snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IfNewerOnDisk {
    /// A build: the newer file stays (openraft ignores a built snapshot older than its own).
    Keep,
    /// An install: openraft installs only snapshots newer than its state, and the state machine
    /// becomes what it installs, so the file must too.
    Replace,
}

impl<C: MetaTypeConfig> SnapshotFiles<C> {
    fn current(&self) -> Option<CurrentSnapshot<C>> {
        self.current.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set_current(&self, snapshot: CurrentSnapshot<C>) {
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(snapshot);
    }

    /// Makes `snapshot` the file's content, durably, unless `if_newer` keeps a newer one. Runs
    /// on a blocking thread, so a dropped caller never leaves a write half-done under the lock.
    async fn save(&self, snapshot: CurrentSnapshot<C>, if_newer: IfNewerOnDisk) -> Result<(), MetaError> {
        let files = self.clone();
        tokio::task::spawn_blocking(move || {
            let _writing = files.writing.lock().unwrap_or_else(|p| p.into_inner());
            if if_newer == IfNewerOnDisk::Keep
                && let Some(on_disk) = files.current()
                && on_disk.meta.last_log_id >= snapshot.meta.last_log_id
            {
                tracing::debug!(built = ?snapshot.meta.last_log_id, on_disk = ?on_disk.meta.last_log_id, "kept the newer snapshot file");
                return Ok(());
            }
            write_durably(&files.dir, &snapshot.data)?;
            tracing::debug!(last_log_id = ?snapshot.meta.last_log_id, bytes = snapshot.data.len(), "metadata snapshot written");
            files.set_current(snapshot);
            Ok(())
        })
        .await
        .map_err(|e| MetaError::Task { reason: e.to_string() })?
    }
}

/// Creates `dir` and its missing parents, each made durable in its parent: otherwise a crash
/// could take a new directory away with the snapshot written into it after the log was purged.
fn create_dir_durably(dir: &Path) -> Result<(), MetaError> {
    let missing: Vec<&Path> = dir.ancestors().take_while(|d| !d.as_os_str().is_empty() && !d.exists()).collect();
    fs::create_dir_all(dir).map_err(io_at(dir))?;
    for created in missing {
        let parent = created.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        sync_dir(parent)?;
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<(), MetaError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_at(dir))
}

/// Writes `data` to `dir/snapshot` so that the file is either its old content or `data`, and
/// `data` is durable when this returns.
fn write_durably(dir: &Path, data: &[u8]) -> Result<(), MetaError> {
    let tmp = dir.join(SNAPSHOT_TMP_FILE);
    let path = dir.join(SNAPSHOT_FILE);
    let mut file = File::create(&tmp).map_err(io_at(&tmp))?;
    file.write_all(data).map_err(io_at(&tmp))?;
    // The content must be durable before the rename can make it the snapshot.
    file.sync_all().map_err(io_at(&tmp))?;
    drop(file);
    fs::rename(&tmp, &path).map_err(io_at(&path))?;
    // The rename itself is durable only once the directory is.
    sync_dir(dir)
}

/// The snapshot file's bytes, `None` if there is none; a file over the bound is refused unread.
fn read_snapshot_file(path: &Path) -> Result<Option<Vec<u8>>, MetaError> {
    let len = match fs::metadata(path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_at(path)(e)),
    };
    if len > SNAPSHOT_BYTES_MAX {
        return Err(MetaError::CorruptSnapshot {
            path: path.to_path_buf(),
            reason: format!("{len} bytes, over the limit of {SNAPSHOT_BYTES_MAX}"),
        });
    }
    fs::read(path).map(Some).map_err(io_at(path))
}

/// bincode as the body is encoded: fixed-width integers, bounded so that a damaged length inside
/// the body cannot allocate without limit, trailing bytes refused.
fn body_codec() -> impl Options {
    bincode::DefaultOptions::new().with_fixint_encoding().with_limit(SNAPSHOT_BYTES_MAX - (HEADER_BYTES + CHECKSUM_BYTES) as u64)
}

fn encode_snapshot<C: MetaTypeConfig>(meta: &SnapshotMetaOf<C>, map: &ClusterMap) -> Result<Vec<u8>, MetaError> {
    let body = body_codec().serialize(&(meta, map)).map_err(|e| match *e {
        bincode::ErrorKind::SizeLimit => MetaError::SnapshotTooLarge { max: SNAPSHOT_BYTES_MAX },
        e => MetaError::Encode { reason: e.to_string() },
    })?;
    let mut out = Vec::with_capacity(HEADER_BYTES + body.len() + CHECKSUM_BYTES);
    out.extend_from_slice(MAGIC);
    // Fits: the codec's limit is under 64 MiB.
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// The meta and map of a snapshot, once its size, magic, length, checksum and map check out.
fn decode_snapshot<C: MetaTypeConfig>(data: &[u8]) -> Result<(SnapshotMetaOf<C>, ClusterMap), String> {
    if data.len() as u64 > SNAPSHOT_BYTES_MAX {
        return Err(format!("{} bytes, over the limit of {SNAPSHOT_BYTES_MAX}", data.len()));
    }
    let (header, rest) = data.split_at_checked(HEADER_BYTES).ok_or_else(|| format!("{} bytes, shorter than a header", data.len()))?;
    let (magic, len) = header.split_at(MAGIC.len());
    if magic != MAGIC {
        return Err("no snapshot magic".into());
    }
    let body_len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
    if rest.len() != body_len + CHECKSUM_BYTES {
        return Err(format!("body length {body_len} but {} bytes follow the header (body and a 4-byte checksum)", rest.len()));
    }
    let (body, crc) = rest.split_at(body_len);
    let stored = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    if crc32c::crc32c(&data[..HEADER_BYTES + body_len]) != stored {
        return Err("checksum mismatch".into());
    }
    let (meta, map): (SnapshotMetaOf<C>, ClusterMap) = body_codec().deserialize(body).map_err(|e| format!("body: {e}"))?;
    map.check().map_err(|e| format!("inconsistent map: {e}"))?;
    Ok((meta, map))
}

/// A point-in-time view of the state machine that builds a snapshot of it; later applies do not
/// change it.
pub struct MetaSnapshotBuilder<C: MetaTypeConfig> {
    meta: SnapshotMetaOf<C>,
    map: Arc<ClusterMap>,
    snapshots: SnapshotFiles<C>,
}

impl<C: MetaTypeConfig> RaftSnapshotBuilder<C> for MetaSnapshotBuilder<C> {
    type SnapshotData = Cursor<Vec<u8>>;

    /// Encodes the view and writes it durably (see the module doc) before returning it.
    async fn build_snapshot(&mut self) -> Result<SnapshotOf<C, Cursor<Vec<u8>>>, io::Error> {
        let data = Arc::new(encode_snapshot::<C>(&self.meta, &self.map)?);
        self.snapshots.save(CurrentSnapshot { meta: self.meta.clone(), data: data.clone() }, IfNewerOnDisk::Keep).await?;
        Ok(SnapshotOf::<C, Cursor<Vec<u8>>> { meta: self.meta.clone(), snapshot: Cursor::new(data.as_ref().clone()) })
    }
}

impl<C: MetaTypeConfig> RaftStateMachine<C> for MetaStateMachine<C> {
    type SnapshotData = Cursor<Vec<u8>>;
    type SnapshotBuilder = MetaSnapshotBuilder<C>;

    async fn applied_state(&mut self) -> Result<(Option<LogIdOf<C>>, StoredMembershipOf<C>), io::Error> {
        Ok((self.applied.clone(), self.membership.clone()))
    }

    /// Applies each entry in memory and answers its responder at once; subscribers get the map
    /// at the end of the batch, or before a reply whose entry changed it.
    async fn apply<S>(&mut self, entries: S) -> Result<(), io::Error>
    where
        S: Stream<Item = Result<EntryResponder<C>, io::Error>> + Unpin + OptionalSend,
    {
        let applied = self.apply_entries(entries).await;
        self.publish_if_changed();
        applied
    }

    async fn get_snapshot_builder(&mut self) -> MetaSnapshotBuilder<C> {
        let meta = SnapshotMetaOf::<C> { last_log_id: self.applied.clone(), last_membership: self.membership.clone() };
        MetaSnapshotBuilder { meta, map: self.map.clone(), snapshots: self.snapshots.clone() }
    }

    /// Checks the snapshot against `meta`, makes it the durable file, then takes its state.
    async fn install_snapshot(&mut self, meta: &SnapshotMetaOf<C>, snapshot: Cursor<Vec<u8>>) -> Result<(), io::Error> {
        let data = snapshot.into_inner();
        let (snapshot_meta, map) = decode_snapshot::<C>(&data).map_err(|reason| MetaError::BadSnapshot { reason })?;
        if &snapshot_meta != meta {
            return Err(MetaError::BadSnapshot { reason: format!("its meta {snapshot_meta} is not the one given, {meta}") }.into());
        }
        self.snapshots.save(CurrentSnapshot { meta: snapshot_meta, data: Arc::new(data) }, IfNewerOnDisk::Replace).await?;
        self.map = Arc::new(map);
        self.applied = meta.last_log_id.clone();
        self.membership = meta.last_membership.clone();
        self.published.send_replace(self.map.clone());
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<SnapshotOf<C, Cursor<Vec<u8>>>>, io::Error> {
        Ok(self
            .snapshots
            .current()
            .map(|c| SnapshotOf::<C, Cursor<Vec<u8>>> { meta: c.meta, snapshot: Cursor::new(c.data.as_ref().clone()) }))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use openraft::alias::EntryPayloadOf;
    use openraft::{BasicNode, Membership};
    use tempfile::TempDir;

    use super::*;
    use crate::model::MessageType;

    openraft::declare_raft_types!(
        TestConfig:
            D = MetaCommand,
            R = MetaReply,
            NodeId = u64,
            Node = BasicNode,
    );

    type C = TestConfig;
    type Sm = MetaStateMachine<C>;
    type Entry = openraft::Entry<CommittedLeaderIdOf<C>, EntryPayloadOf<C>>;

    fn log_id(index: u64) -> LogIdOf<C> {
        openraft::testing::log_id::<C>(2, 1, index)
    }

    fn entry(index: u64, payload: EntryPayloadOf<C>) -> Entry {
        Entry { log_id: log_id(index), payload }
    }

    fn command(index: u64, command: MetaCommand) -> Entry {
        entry(index, EntryPayload::Normal(command))
    }

    fn register(id: u64) -> MetaCommand {
        MetaCommand::RegisterBroker { id, peer_addr: format!("b{id}:7000"), client_addr: format!("b{id}:8081"), labels: BTreeMap::new() }
    }

    fn create(name: &str, queue_count: u32) -> MetaCommand {
        MetaCommand::CreateTopic {
            name: name.into(),
            queue_count,
            replication_factor: 2,
            message_type: MessageType::Normal,
            group_options: Default::default(),
        }
    }

    fn membership() -> Membership<u64, BasicNode> {
        Membership::new_with_defaults(vec![BTreeSet::from([1, 2, 3])], [])
    }

    async fn apply_all(sm: &mut Sm, entries: Vec<Entry>) {
        sm.apply(futures::stream::iter(entries.into_iter().map(|e| Ok((e, None))))).await.unwrap();
    }

    /// Applies a membership, three brokers and topic "t" of 4 queues (indexes 1..=6).
    async fn populated(dir: &Path) -> Sm {
        let mut sm = Sm::open(dir).unwrap();
        apply_all(
            &mut sm,
            vec![
                entry(1, EntryPayload::Membership(membership())),
                command(2, register(1)),
                command(3, register(2)),
                command(4, register(3)),
                entry(5, EntryPayload::Blank),
                command(6, create("t", 4)),
            ],
        )
        .await;
        sm
    }

    async fn build(sm: &mut Sm) -> SnapshotOf<C, Cursor<Vec<u8>>> {
        sm.get_snapshot_builder().await.build_snapshot().await.unwrap()
    }

    #[tokio::test]
    async fn applies_commands_and_tracks_applied_state() {
        let dir = TempDir::new().unwrap();
        let mut sm = Sm::open(dir.path()).unwrap();
        assert_eq!(sm.applied_state().await.unwrap(), (None, StoredMembershipOf::<C>::default()));
        assert!(sm.get_current_snapshot().await.unwrap().is_none());
        let mut sm = populated(dir.path()).await;
        let (applied, stored) = sm.applied_state().await.unwrap();
        assert_eq!(applied, Some(log_id(6)));
        assert_eq!(stored, StoredMembershipOf::<C>::new(Some(log_id(1)), membership()));
        let map = sm.subscribe().borrow().clone();
        assert_eq!(map.version, 6);
        assert_eq!(map.brokers.len(), 3);
        assert_eq!(map.topics["t"].groups, vec![1, 2, 3, 4]);
        // A refused command and a blank entry advance the applied log id, not the map.
        apply_all(&mut sm, vec![command(7, create("u", 0)), entry(8, EntryPayload::Blank)]).await;
        assert_eq!(sm.applied_state().await.unwrap().0, Some(log_id(8)));
        assert_eq!(*sm.subscribe().borrow().as_ref(), *map);
    }

    #[tokio::test]
    async fn subscribers_see_each_applied_batch_that_changes_the_map() {
        let dir = TempDir::new().unwrap();
        let mut sm = Sm::open(dir.path()).unwrap();
        let mut watch = sm.subscribe();
        assert_eq!(**watch.borrow_and_update(), ClusterMap::default());
        apply_all(&mut sm, vec![command(1, register(1)), command(2, register(2)), command(3, create("t", 2))]).await;
        assert!(watch.has_changed().unwrap());
        let map = watch.borrow_and_update().clone();
        assert_eq!(map.route("t", 1).map(|g| g.id), Some(2));
        // Nothing that changes the map: nothing published.
        apply_all(&mut sm, vec![command(4, register(1)), entry(5, EntryPayload::Blank)]).await;
        assert!(!watch.has_changed().unwrap());
        apply_all(&mut sm, vec![command(6, MetaCommand::MarkGroupBootstrapped { group: 2 })]).await;
        assert!(watch.has_changed().unwrap());
        assert!(watch.borrow_and_update().groups[&2].bootstrapped);
    }

    #[tokio::test]
    async fn a_snapshot_installed_elsewhere_gives_the_same_state() {
        let (dir_a, dir_b) = (TempDir::new().unwrap(), TempDir::new().unwrap());
        let mut a = populated(dir_a.path()).await;
        let snap = build(&mut a).await;
        assert_eq!(snap.meta.last_log_id, Some(log_id(6)));
        assert_eq!(a.get_current_snapshot().await.unwrap().unwrap().meta, snap.meta);
        // A later apply is not in the snapshot already built.
        apply_all(&mut a, vec![command(7, create("later", 1))]).await;

        let mut b = Sm::open(dir_b.path()).unwrap();
        apply_all(&mut b, vec![command(1, register(9))]).await;
        let watch = b.subscribe();
        b.install_snapshot(&snap.meta, snap.snapshot.clone()).await.unwrap();
        assert_eq!(b.applied_state().await.unwrap(), (snap.meta.last_log_id, snap.meta.last_membership.clone()));
        let map = watch.borrow().clone();
        assert_eq!(map.version, 6);
        assert_eq!(map.brokers.keys().copied().collect::<Vec<_>>(), vec![1, 2, 3], "b's own broker 9 is gone");
        assert!(!map.topics.contains_key("later"));
        let current = b.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!((current.meta, current.snapshot.into_inner()), (snap.meta.clone(), snap.snapshot.get_ref().clone()));
        // Installed means durable: b reopens at the snapshot.
        drop(b);
        let mut b = Sm::open(dir_b.path()).unwrap();
        assert_eq!(b.applied_state().await.unwrap().0, Some(log_id(6)));
        assert_eq!(*b.subscribe().borrow(), map);
    }

    #[tokio::test]
    async fn reopening_restores_the_last_built_snapshot() {
        let dir = TempDir::new().unwrap();
        let mut sm = populated(dir.path()).await;
        let snap = build(&mut sm).await;
        let map = sm.subscribe().borrow().clone();
        let state = sm.applied_state().await.unwrap();
        // Applied after the build, so lost on reopen (openraft re-applies it from the log).
        apply_all(&mut sm, vec![command(7, create("later", 1))]).await;
        drop(sm);

        let mut sm = Sm::open(dir.path()).unwrap();
        assert_eq!(sm.applied_state().await.unwrap(), state);
        assert_eq!(*sm.subscribe().borrow(), map);
        assert_eq!(sm.get_current_snapshot().await.unwrap().unwrap().meta, snap.meta);
        // And it goes on from there, as it would when openraft re-applies the log.
        apply_all(&mut sm, vec![command(7, create("later", 1))]).await;
        assert_eq!(sm.subscribe().borrow().topics["later"].groups, vec![5]);
    }

    #[tokio::test]
    async fn an_older_build_never_replaces_a_newer_file() {
        let (dir_a, dir_b) = (TempDir::new().unwrap(), TempDir::new().unwrap());
        let mut a = populated(dir_a.path()).await;
        apply_all(&mut a, vec![command(7, create("u", 1))]).await;
        let newer = build(&mut a).await;

        let mut b = populated(dir_b.path()).await;
        let mut older_builder = b.get_snapshot_builder().await;
        b.install_snapshot(&newer.meta, newer.snapshot).await.unwrap();
        let older = older_builder.build_snapshot().await.unwrap();
        assert_eq!(older.meta.last_log_id, Some(log_id(6)), "the builder keeps its view");
        assert_eq!(b.get_current_snapshot().await.unwrap().unwrap().meta, newer.meta);
        drop(b);
        let mut b = Sm::open(dir_b.path()).unwrap();
        assert_eq!(b.applied_state().await.unwrap().0, Some(log_id(7)));
    }

    #[tokio::test]
    async fn a_bad_snapshot_buffer_is_refused_and_changes_nothing() {
        let (dir_a, dir_b) = (TempDir::new().unwrap(), TempDir::new().unwrap());
        let mut a = populated(dir_a.path()).await;
        let snap = build(&mut a).await;
        let mut b = Sm::open(dir_b.path()).unwrap();
        apply_all(&mut b, vec![command(1, register(9))]).await;
        let before = (b.applied_state().await.unwrap(), b.subscribe().borrow().clone());

        let mut other_meta = snap.meta.clone();
        other_meta.last_log_id = Some(log_id(7));
        let err = b.install_snapshot(&other_meta, snap.snapshot.clone()).await.unwrap_err();
        assert!(err.to_string().contains("is not the one given"), "{err}");
        let mut damaged = snap.snapshot.get_ref().clone();
        damaged[20] ^= 1;
        let err = b.install_snapshot(&snap.meta, Cursor::new(damaged)).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("checksum mismatch"), "{err}");

        assert_eq!((b.applied_state().await.unwrap(), b.subscribe().borrow().clone()), before);
        assert!(b.get_current_snapshot().await.unwrap().is_none());
        assert!(!dir_b.path().join(SNAPSHOT_FILE).exists());
    }

    #[tokio::test]
    async fn a_damaged_snapshot_file_fails_open_naming_the_file() {
        let dir = TempDir::new().unwrap();
        let mut sm = populated(dir.path()).await;
        build(&mut sm).await;
        drop(sm);
        let path = dir.path().join(SNAPSHOT_FILE);
        let good = fs::read(&path).unwrap();
        let mut damages: Vec<Vec<u8>> = (0..good.len())
            .map(|i| {
                let mut bad = good.clone();
                bad[i] ^= 0x10;
                bad
            })
            .collect();
        damages.extend([0, 11, 12, good.len() - 1].map(|len| good[..len].to_vec()));
        damages.push([good.as_slice(), &[0]].concat());
        for (n, bad) in damages.iter().enumerate() {
            fs::write(&path, bad).unwrap();
            let err = Sm::open(dir.path()).err().unwrap_or_else(|| panic!("damage {n} went unnoticed"));
            assert!(matches!(err, MetaError::CorruptSnapshot { .. }), "damage {n}: {err}");
            assert!(err.to_string().starts_with(&path.display().to_string()), "damage {n}: {err}");
        }
        fs::write(&path, &good).unwrap();
        assert_eq!(Sm::open(dir.path()).unwrap().applied.map(|l| l.index), Some(6));
    }

    #[test]
    fn open_starts_empty_without_a_file_and_removes_a_half_written_one() {
        let dir = TempDir::new().unwrap();
        let sm_dir = dir.path().join("meta");
        fs::create_dir(&sm_dir).unwrap();
        fs::write(sm_dir.join(SNAPSHOT_TMP_FILE), b"half").unwrap();
        let sm = Sm::open(&sm_dir).unwrap();
        assert!(!sm_dir.join(SNAPSHOT_TMP_FILE).exists());
        assert_eq!(**sm.subscribe().borrow(), ClusterMap::default());
        // Directories that do not exist yet are made.
        Sm::open(&dir.path().join("new/meta")).unwrap();
        assert!(dir.path().join("new/meta").is_dir());
    }

    #[test]
    fn a_well_checksummed_but_inconsistent_map_is_refused() {
        let mut map = ClusterMap::default();
        map.groups.insert(
            1,
            crate::model::GroupRecord {
                id: 1,
                topic: "t".into(),
                queue: 0,
                replicas: vec![1],
                bootstrapped: false,
                options: Default::default(),
            },
        );
        let data = encode_snapshot::<C>(&SnapshotMetaOf::<C>::default(), &map).unwrap();
        let err = decode_snapshot::<C>(&data).unwrap_err();
        assert!(err.starts_with("inconsistent map: "), "{err}");
    }

    #[test]
    fn a_snapshot_over_the_bound_is_refused() {
        let mut map = ClusterMap::default();
        let labels = BTreeMap::from([("big".to_string(), "x".repeat(SNAPSHOT_BYTES_MAX as usize))]);
        map.brokers.insert(1, crate::model::BrokerRecord { id: 1, peer_addr: "p".into(), client_addr: "c".into(), labels });
        let err = encode_snapshot::<C>(&SnapshotMetaOf::<C>::default(), &map).unwrap_err();
        assert!(matches!(err, MetaError::SnapshotTooLarge { max: SNAPSHOT_BYTES_MAX }), "{err}");
        let too_long = vec![0u8; SNAPSHOT_BYTES_MAX as usize + 1];
        assert!(decode_snapshot::<C>(&too_long).unwrap_err().contains("over the limit"));
    }
}
