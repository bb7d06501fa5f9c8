//! A broker's hosting of many Raft groups in one process: one raft-log engine and one queue
//! store shared by every group replica, one Raft transport (a gRPC server, one channel per peer
//! broker) and the registry that routes each request to its group.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use openraft::{Config, Raft};
use proto::raftmq::v1::raft_transport_server::RaftTransportServer;
use raft_log::{LogEngine, LogError, RaftLogStore};
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

use controller::{META_GROUP_ID, MetaStateMachine};

use crate::meta::{MetaGroupConfig, MetaRaft};
use crate::options::{BrokerOptions, FSYNC_DELAY_FILE, STORE_FLUSH_FILE, STORE_FLUSHED_FILE};
use crate::queue::send_metrics::SendPathMetrics;
use crate::queue::{QueueGroup, QueueGroupConfig, QueueGroupOptions, QueueStateMachine, SendBatchLimits, SendBatcher};
use crate::raft::network::{GroupNetworkFactory, PeerChannels};
use crate::raft::registry::GroupRegistry;
use crate::raft::service::RaftTransportService;
use crate::raft::{BrokerId, BrokerNode, GroupId};
use crate::size_limits::TRANSPORT_MESSAGE_BYTES_MAX;
use crate::store::{QueueStore, StoreError};

/// How long `shutdown` waits for the transport's in-flight requests.
const SERVER_STOP_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

pub use crate::queue::QueueRaft;
pub use crate::read::{READ_MESSAGES_MAX, StoredMessage};

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("raft log: {0}")]
    Log(#[from] LogError),
    #[error("queue store: {0}")]
    Store(#[from] StoreError),
    #[error("raft transport listener on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("raft config: {0}")]
    Config(String),
    #[error("group {group}: {reason}")]
    Group { group: GroupId, reason: String },
    #[error("background task failed: {0}")]
    Task(String),
    #[error("group {group}: reading the log at index {log_index}: {reason}")]
    LogRead { group: GroupId, log_index: u64, reason: String },
}

/// Copies the milliseconds in `file` (absent, empty or unreadable: 0; `fail`:
/// [`raft_log::fault::FAIL_SYNCS`]) into `delay` every 100 ms, until the log that holds `delay`
/// is gone.
fn follow_delay_file(file: PathBuf, delay: std::sync::Weak<std::sync::atomic::AtomicU64>) {
    std::thread::spawn(move || {
        while let Some(delay) = delay.upgrade() {
            // A number of milliseconds, or `fail`: every sync then fails (a dead disk).
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            let ms = match text.trim() {
                "fail" => raft_log::fault::FAIL_SYNCS,
                t => t.parse::<u64>().unwrap_or(0),
            };
            delay.store(ms, std::sync::atomic::Ordering::Relaxed);
            drop(delay);
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    });
}

/// Flushes `store` whenever `request` holds a number other than the last one handled, then
/// writes that number to `done`; polls every 100 ms until the store is gone.
fn follow_store_flush_file(request: PathBuf, done: PathBuf, store: std::sync::Weak<QueueStore>) {
    std::thread::spawn(move || {
        let mut handled: Option<String> = None;
        while let Some(store) = store.upgrade() {
            let asked = std::fs::read_to_string(&request).ok().map(|t| t.trim().to_string()).filter(|t| !t.is_empty());
            if asked.is_some() && asked != handled {
                match store.flush() {
                    Ok(()) => {
                        tracing::info!(request = ?asked, "TEST MODE: queue store flushed on request");
                        if let Err(e) = std::fs::write(&done, asked.as_deref().unwrap_or_default()) {
                            tracing::warn!(error = %e, file = %done.display(), "TEST MODE: could not confirm the store flush");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "TEST MODE: the requested store flush failed"),
                }
                handled = asked;
            }
            drop(store);
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    });
}

/// See the module documentation.
pub struct GroupHost {
    id: BrokerId,
    raft_addr: SocketAddr,
    engine: LogEngine,
    store: Arc<QueueStore>,
    peers: Arc<PeerChannels>,
    /// What the transport routes to: every hosted group, of any kind.
    registry: GroupRegistry,
    /// The queue groups open here, each whole (its Raft and its send path): the one map of them.
    queue_groups: std::sync::RwLock<std::collections::HashMap<GroupId, QueueGroup>>,
    /// The bounds of every group's send path, and what they record into.
    send_limits: SendBatchLimits,
    send_metrics: Arc<SendPathMetrics>,
    raft_config: Arc<Config>,
    /// The metadata group's: [`Self::raft_config`] with its own snapshot policy.
    meta_raft_config: Arc<Config>,
    /// Serializes `open_group`, so one group never gets two Raft instances.
    opening: tokio::sync::Mutex<()>,
    /// Taken by the first `shutdown`.
    server: std::sync::Mutex<Option<(tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<()>)>>,
    /// The first group whose Raft core stopped on its own (see [`Self::fatal`]).
    fatal: tokio::sync::watch::Sender<Option<GroupFatal>>,
}

/// A group whose Raft core stopped by itself (a storage error, a panic), not by a shutdown:
/// it neither replicates nor answers until the broker restarts it from its log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the Raft core of group {group} stopped: {reason}")]
pub struct GroupFatal {
    pub group: GroupId,
    pub reason: String,
}

impl GroupHost {
    /// Opens the log and the store under `options.data_dir` (recovering both) and starts serving
    /// the Raft transport on `options.peer_listen`. Groups are opened with [`Self::open_group`].
    pub async fn start(options: &BrokerOptions) -> Result<Self, HostError> {
        Self::start_with(options, None, Arc::new(SendPathMetrics::new())).await
    }

    /// [`Self::start`], also serving `peer_routes` (the broker's other peer-to-peer services)
    /// on the transport's port, and recording every group's send path into `send_metrics`.
    pub async fn start_with(
        options: &BrokerOptions,
        peer_routes: Option<tonic::service::Routes>,
        send_metrics: Arc<SendPathMetrics>,
    ) -> Result<Self, HostError> {
        let meta_raft_config =
            Arc::new(options.raft.meta_group_config().validate().map_err(|e| HostError::Config(format!("metadata group: {e}")))?);
        let raft_config = Arc::new(options.raft.queue_group_config().validate().map_err(|e| HostError::Config(e.to_string()))?);
        let log_dir = options.data_dir.join("log");
        let log_options = options.log_options();
        if log_options.ack_before_sync.is_some() {
            tracing::warn!("TEST MODE: appends are acknowledged before fdatasync; acknowledged messages can be lost");
        }
        let mut fs: Arc<dyn raft_log::fs::FileSystem> = Arc::new(raft_log::fs::StdFileSystem);
        let testing = &options.testing;
        if testing.power_loss && testing.torn_pages {
            tracing::warn!("TEST MODE: raft-log writes stay in memory until fdatasync, and the last page written is torn on disk");
            let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
            fs = Arc::new(raft_log::fault::PowerLossFileSystem::with_torn_pages(fs, seed ^ u64::from(std::process::id())));
        } else if testing.power_loss {
            tracing::warn!("TEST MODE: raft-log writes stay in memory until fdatasync (power-loss simulation)");
            fs = Arc::new(raft_log::fault::PowerLossFileSystem::new(fs));
        }
        if testing.fsync_delay_file {
            let control = options.testing_file(FSYNC_DELAY_FILE);
            tracing::warn!(file = %control.display(), "TEST MODE: every fdatasync waits for the delay this file names");
            let slow = raft_log::fault::SlowSyncFileSystem::new(fs);
            follow_delay_file(control, Arc::downgrade(&slow.delay_ms()));
            fs = Arc::new(slow);
        }
        let (engine, recovery) = LogEngine::open_with(log_dir, log_options, fs)?;
        let (store, opened) = QueueStore::open(options.data_dir.join("store"), &options.store)?;
        let store = Arc::new(store);
        if testing.store_flush_file {
            let (request, done) = (options.testing_file(STORE_FLUSH_FILE), options.testing_file(STORE_FLUSHED_FILE));
            tracing::warn!(file = %request.display(), "TEST MODE: the queue store is flushed whenever this file names a new request");
            follow_store_flush_file(request, done, Arc::downgrade(&store));
        }
        tracing::info!(
            broker = options.id,
            segments = recovery.segments,
            records = recovery.records,
            groups = opened.groups,
            "opened log and store"
        );
        let registry = GroupRegistry::default();
        let incoming = TcpIncoming::bind(options.peer_listen)
            .map_err(|source| HostError::Listen { addr: options.peer_listen, source })?
            .with_nodelay(Some(true));
        let raft_addr = incoming.local_addr().map_err(|source| HostError::Listen { addr: options.peer_listen, source })?;
        let service = RaftTransportServer::new(RaftTransportService::new(options.id, registry.clone()))
            .max_decoding_message_size(TRANSPORT_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(TRANSPORT_MESSAGE_BYTES_MAX);
        let (stop_server, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            // A graceful stop also closes the connections already accepted: aborting the task
            // would leave them served by the old registry, and peers would keep talking to it.
            let stop = async {
                let _ = stopped.await;
            };
            let mut builder = Server::builder();
            let router = match peer_routes {
                Some(routes) => builder.add_routes(routes).add_service(service),
                None => builder.add_service(service),
            };
            if let Err(e) = router.serve_with_incoming_shutdown(incoming, stop).await {
                tracing::error!(error = %e, "raft transport server stopped");
            }
        });
        Ok(Self {
            id: options.id,
            raft_addr,
            engine,
            store,
            // Calls to peers come from the address this broker listens on (when it listens on
            // one), as peers and firewalls expect of it.
            peers: PeerChannels::from_address(Some(raft_addr.ip()).filter(|ip| !ip.is_unspecified())),
            registry,
            queue_groups: Default::default(),
            send_limits: options.send,
            send_metrics,
            raft_config,
            meta_raft_config,
            opening: tokio::sync::Mutex::new(()),
            server: std::sync::Mutex::new(Some((stop_server, server))),
            fatal: tokio::sync::watch::channel(None).0,
        })
    }

    pub fn id(&self) -> BrokerId {
        self.id
    }

    /// This broker as a Raft member: where its transport listens.
    pub fn node(&self) -> BrokerNode {
        BrokerNode { raft_addr: self.raft_addr.to_string() }
    }

    /// The log engine every group hosted here writes into.
    pub(crate) fn engine(&self) -> &LogEngine {
        &self.engine
    }

    pub fn store(&self) -> &Arc<QueueStore> {
        &self.store
    }

    /// Set once a hosted group's Raft core has stopped by itself: the broker must not go on
    /// looking healthy with a dead group (the broker server stops, loudly).
    pub fn fatal(&self) -> tokio::sync::watch::Receiver<Option<GroupFatal>> {
        self.fatal.subscribe()
    }

    /// The channels to peer brokers, shared with every group's Raft network.
    pub fn peers(&self) -> &Arc<PeerChannels> {
        &self.peers
    }

    /// Opens this broker's replica of the metadata group (group [`META_GROUP_ID`]) over `sm`;
    /// at most once per host.
    pub async fn open_meta_group(&self, sm: MetaStateMachine<MetaGroupConfig>) -> Result<MetaRaft, HostError> {
        let _opening = self.opening.lock().await;
        if self.registry.get(META_GROUP_ID).is_some() {
            return Err(HostError::Group { group: META_GROUP_ID, reason: "the metadata group is open already".into() });
        }
        let network = GroupNetworkFactory::new(META_GROUP_ID, self.peers.clone());
        let log = RaftLogStore::new(self.engine.group(META_GROUP_ID));
        let raft = Raft::new(self.id, self.meta_raft_config.clone(), network, log, sm)
            .await
            .map_err(|e| HostError::Group { group: META_GROUP_ID, reason: e.to_string() })?;
        self.registry.insert(META_GROUP_ID, raft.clone());
        tokio::spawn(report_fatal::<MetaGroupConfig>(META_GROUP_ID, raft.metrics(), self.fatal.clone()));
        Ok(raft)
    }

    /// The replica of `group` hosted here, opening it (recovering from the log and the store)
    /// when it is not open yet.
    ///
    /// `placed_with` are the options the group was created with (from its record in the cluster
    /// map): the first open records them durably here, and every later open checks them. `None`
    /// opens the group with the options recorded here (a broker reopening its groups before it
    /// has the map), or the defaults for a group from before options were recorded.
    pub async fn open_group(&self, group: GroupId, placed_with: Option<QueueGroupOptions>) -> Result<QueueRaft, HostError> {
        let _opening = self.opening.lock().await;
        if let Some(open) = self.queue_group(group) {
            return Ok(open.raft().clone());
        }
        if group == META_GROUP_ID {
            return Err(HostError::Group { group, reason: "is the metadata group, not a queue group".into() });
        }
        let store_error = |e: StoreError| HostError::Group { group, reason: e.to_string() };
        let recorded = self.store.checkpoint_interval(group).map_err(store_error)?;
        let options = match (placed_with, recorded) {
            (Some(placed), Some(recorded)) if placed.checkpoint_interval_entries != recorded => {
                return Err(HostError::Group {
                    group,
                    reason: format!(
                        "its replica here applies with a checkpoint every {recorded} entries, but the group was created with {}",
                        placed.checkpoint_interval_entries
                    ),
                });
            }
            (Some(placed), None) => {
                self.store.record_checkpoint_interval(&[(group, placed.checkpoint_interval_entries)]).map_err(store_error)?;
                placed
            }
            (_, Some(recorded)) => QueueGroupOptions { checkpoint_interval_entries: recorded },
            (None, None) => QueueGroupOptions::default(),
        };
        let network = GroupNetworkFactory::new(group, self.peers.clone());
        let log = RaftLogStore::new(self.engine.group(group));
        let sm = QueueStateMachine::with_options(self.store.clone(), group, options).with_log(log.group_log().clone());
        let raft = Raft::new(self.id, self.raft_config.clone(), network, log, sm)
            .await
            .map_err(|e| HostError::Group { group, reason: e.to_string() })?;
        let batcher = SendBatcher::start_with_metrics(raft.clone(), self.send_limits, self.send_metrics.clone());
        self.queue_groups.write().unwrap_or_else(|p| p.into_inner()).insert(group, QueueGroup::new(raft.clone(), batcher));
        self.registry.insert(group, raft.clone());
        tokio::spawn(report_fatal::<QueueGroupConfig>(group, raft.metrics(), self.fatal.clone()));
        Ok(raft)
    }

    /// The replica of queue group `group` open here, whole.
    pub fn queue_group(&self, group: GroupId) -> Option<QueueGroup> {
        self.queue_groups.read().unwrap_or_else(|p| p.into_inner()).get(&group).cloned()
    }

    /// The Raft of queue group `group`, when open here.
    pub fn group(&self, group: GroupId) -> Option<QueueRaft> {
        self.queue_group(group).map(|g| g.raft().clone())
    }

    /// Parks queue group `group`'s ticker (see [`GroupRegistry::park`]); returns whether it was
    /// awake. The metadata group is never parked.
    pub fn park(&self, group: GroupId) -> bool {
        group != META_GROUP_ID && self.group(group).is_some() && self.registry.park(group)
    }

    /// Starts `group`'s ticker again if it was parked; returns whether it was.
    pub fn wake(&self, group: GroupId) -> bool {
        self.registry.wake(group)
    }

    pub fn is_parked(&self, group: GroupId) -> bool {
        self.registry.is_parked(group)
    }

    /// The parked groups, ascending.
    pub fn parked(&self) -> Vec<GroupId> {
        self.registry.parked()
    }

    /// This host's Raft timing, which every group uses.
    pub fn raft_config(&self) -> &Config {
        &self.raft_config
    }

    /// The queue groups open here.
    pub fn groups(&self) -> Vec<GroupId> {
        let mut ids: Vec<_> = self.queue_groups.read().unwrap_or_else(|p| p.into_inner()).keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// The queue groups with anything on disk here (in the log or the store): what a restarted
    /// broker reopens.
    pub fn groups_on_disk(&self) -> Vec<GroupId> {
        let mut ids = self.engine.group_ids();
        ids.extend(self.store.groups());
        ids.retain(|&g| g != META_GROUP_ID);
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// Stops every queue group and the transport, then flushes the store. Stop the metadata
    /// group, if one is open, first.
    pub async fn shutdown(&self) -> Result<(), HostError> {
        let groups: Vec<_> = self.queue_groups.write().unwrap_or_else(|p| p.into_inner()).drain().collect();
        for (group, open) in groups {
            self.registry.remove(group);
            if let Err(e) = open.raft().shutdown().await {
                tracing::warn!(group, error = %e, "group did not shut down cleanly");
            }
        }
        let server = self.server.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some((stop_server, mut server)) = server {
            let _ = stop_server.send(());
            // In-flight requests finish first; past the bound the server is cut off.
            if tokio::time::timeout(SERVER_STOP_WAIT, &mut server).await.is_err() {
                tracing::warn!(broker = self.id, "raft transport did not stop within {SERVER_STOP_WAIT:?}; cutting it off");
                server.abort();
            }
        }
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.flush()).await.map_err(|e| HostError::Task(e.to_string()))??;
        Ok(())
    }

    /// The log engine's counters, shared by every group hosted here.
    pub fn log_stats(&self) -> &raft_log::engine::EngineStats {
        self.engine.stats()
    }
}

/// Watches one group's Raft metrics until its core stops; a stop that was not asked for
/// (openraft's `Fatal::StorageError` or `Fatal::Panicked`, not `Fatal::Stopped`) is logged and
/// reported in `fatal`, the first one only.
async fn report_fatal<C>(
    group: GroupId,
    mut metrics: openraft::type_config::alias::WatchReceiverOf<C, openraft::RaftMetrics<C>>,
    fatal: tokio::sync::watch::Sender<Option<GroupFatal>>,
) where
    C: openraft::RaftTypeConfig,
{
    use openraft::type_config::async_runtime::watch::WatchReceiver;
    loop {
        let state = metrics.borrow_watched().running_state.clone();
        match state {
            Ok(()) => {}
            Err(openraft::errors::Fatal::Stopped) => return,
            Err(e) => {
                let reason = e.to_string();
                tracing::error!(group, error = %reason, "a group's Raft core stopped by itself; the broker stops");
                fatal.send_if_modified(|first| {
                    if first.is_some() {
                        return false;
                    }
                    *first = Some(GroupFatal { group, reason });
                    true
                });
                return;
            }
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}
