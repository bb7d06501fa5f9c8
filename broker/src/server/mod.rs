//! A whole broker process: the group host, its replica of the metadata group, the client
//! services (`QueueService`, `AdminService`) and the peer service, and the background work that
//! keeps it in step with the cluster map.
//!
//! Start-up, in order: the host recovers the log and the store and serves the peer port; the
//! metadata group and every queue group found on disk are reopened; the lowest-id controller
//! initializes the metadata group if it never was; the broker registers itself (through the
//! metadata leader); then `reconcile` opens the groups the map places here and initializes
//! those whose first replica this broker is.

pub(crate) mod hibernation;
mod reconcile;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use controller::{ClusterMap, MetaCommand, MetaReply, MetaStateMachine};
use openraft::ServerState;
use openraft::errors::{ClientWriteError, RaftError};
use openraft::type_config::async_runtime::watch::WatchReceiver;
use proto::apache::rocketmq::v2::messaging_service_server::MessagingServiceServer;
use proto::raftmq::v1::admin_service_server::AdminServiceServer;
use proto::raftmq::v1::peer_service_server::PeerServiceServer;
use proto::raftmq::v1::queue_service_server::QueueServiceServer;
use tokio::sync::watch;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

use crate::host::{GroupFatal, GroupHost, HostError, QueueRaft};
use crate::meta::{MetaGroupConfig, MetaRaft};
use crate::metrics::{BrokerMetrics, MetricsServer, MetricsSource, OffsetCommitMetrics, ReplicaState};
use crate::options::BrokerOptions;
use crate::queue::QueueGroup;
use crate::raft::{BrokerId, BrokerNode, GroupId};
use crate::size_limits::{GRPC_MESSAGE_HEADER_BYTES, TRANSPORT_MESSAGE_BYTES_MAX, client_request_bytes_max};

use crate::edge::request_bytes;
use crate::routing::forward;
pub use crate::routing::forward::ForwardClients;
use crate::service::{admin_service, peer_service, queue_service};

/// Largest reply (a fetch of up to 64 MiB of bodies, with framing).
const REPLY_BYTES_MAX: usize = 80 << 20;
/// How long `shutdown` waits for the client server's in-flight requests.
const SERVER_STOP_WAIT: Duration = Duration::from_secs(5);
/// Deadline of one metadata proposal or read, retries included.
const META_CALL_DEADLINE: Duration = Duration::from_secs(10);
/// Most attempts of one metadata call (each a different leader guess, or a wait for one).
const META_CALL_ATTEMPTS_MAX: usize = 20;

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error(transparent)]
    Host(#[from] HostError),
    #[error("metadata state machine: {0}")]
    Meta(#[from] controller::MetaError),
    #[error("client listener on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("metrics listener on {addr}: {source}")]
    MetricsListen { addr: SocketAddr, source: std::io::Error },
    #[error("invalid options: {0}")]
    Options(String),
}

/// Why a metadata call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MetaCallError {
    /// No leader answered within the deadline.
    #[error("metadata group unavailable: {0}")]
    Unavailable(String),
    /// The proposal may or may not have been applied (leadership changed while it was in
    /// flight). Every metadata command is safe to retry: registering and marking are
    /// idempotent, and a retried create finds the topic.
    #[error("metadata outcome unknown: {0}")]
    Unknown(String),
}

/// The state every service of one broker shares.
pub(crate) struct Core {
    pub(crate) id: BrokerId,
    pub(crate) options: BrokerOptions,
    pub(crate) host: GroupHost,
    pub(crate) meta: MetaRaft,
    pub(crate) map: watch::Receiver<Arc<ClusterMap>>,
    /// What offset commits record into.
    pub(crate) commit_metrics: Arc<OffsetCommitMetrics>,
    pub(crate) client_addr: String,
    pub(crate) peer_addr: String,
    pub(crate) forward: ForwardClients,
    pub(crate) stop: watch::Receiver<bool>,
}

impl Core {
    fn controllers(&self) -> Vec<(BrokerId, String)> {
        self.options.controller_voters(&self.peer_addr)
    }

    pub(crate) fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// The cluster map as this broker's replica of the metadata group last applied it.
    pub(crate) fn local_map(&self) -> Arc<ClusterMap> {
        self.map.borrow().clone()
    }

    pub(crate) fn group(&self, group: GroupId) -> Option<QueueRaft> {
        self.host.group(group)
    }

    /// The replica of queue group `group` open here, whole (its Raft and its send path).
    pub(crate) fn queue_group(&self, group: GroupId) -> Option<QueueGroup> {
        self.host.queue_group(group)
    }

    /// The client endpoint of `broker`, from the map.
    pub(crate) fn client_endpoint(&self, broker: BrokerId) -> Option<String> {
        self.local_map().brokers.get(&broker).map(|b| b.client_addr.clone())
    }

    /// Who leads the metadata group as this replica knows it, and its peer address.
    pub(crate) fn meta_leader(&self) -> Option<(BrokerId, String)> {
        let m = self.meta.metrics().borrow_watched().clone();
        let leader = m.current_leader?;
        let node = m.membership_config.membership().get_node(&leader).cloned();
        let addr = node.map(|n| n.raft_addr).or_else(|| self.controllers().into_iter().find(|(id, _)| *id == leader).map(|(_, a)| a))?;
        Some((leader, addr))
    }

    pub(crate) fn meta_is_leader(&self) -> bool {
        let m = self.meta.metrics().borrow_watched().clone();
        m.state == ServerState::Leader && m.current_leader == Some(self.id)
    }

    /// Proposes `cmd` to the metadata group: locally when this replica leads it, else at the
    /// leader through its peer service, following leader hints, within [`META_CALL_DEADLINE`].
    pub(crate) async fn propose_meta(&self, cmd: MetaCommand) -> Result<MetaReply, MetaCallError> {
        let local = || async {
            match self.meta.client_write(cmd.clone()).await {
                Ok(resp) => LocalAttempt::Done(resp.response().clone()),
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => LocalAttempt::Retry {
                    reason: format!("local replica refused: {f}"),
                    hint: f.leader_id.filter(|&l| l != self.id).zip(f.leader_node.map(|n| n.raft_addr)),
                },
                Err(e) => LocalAttempt::Failed(MetaCallError::Unknown(e.to_string())),
            }
        };
        let remote = |addr: String| {
            let cmd = &cmd;
            async move { self.forward.propose_meta(&addr, cmd).await }
        };
        self.on_meta_leader(local, remote).await
    }

    /// The cluster map as of a linearizable read on the metadata leader (invariant 6).
    pub(crate) async fn read_meta(&self) -> Result<Arc<ClusterMap>, MetaCallError> {
        let local = || async {
            match self.meta.ensure_linearizable(openraft::raft::ReadPolicy::ReadIndex).await {
                // ensure_linearizable returns once this replica applied the read index, so the
                // map it publishes is at least that fresh.
                Ok(_) => LocalAttempt::Done(self.local_map()),
                Err(e) => LocalAttempt::Retry { reason: format!("linearizable read: {e}"), hint: None },
            }
        };
        let remote = |addr: String| async move { self.forward.read_meta(&addr).await.map(Arc::new) };
        self.on_meta_leader(local, remote).await
    }

    /// Runs a metadata call where the metadata group's leader is: `local` when this replica
    /// leads, else `remote` at the leader's peer address (the known leader, a hint, or each
    /// controller in turn), backing off while no leader answers; bounded by
    /// [`META_CALL_ATTEMPTS_MAX`] attempts and [`META_CALL_DEADLINE`].
    async fn on_meta_leader<T, L, LF, R, RF>(&self, mut local: L, mut remote: R) -> Result<T, MetaCallError>
    where
        L: FnMut() -> LF,
        LF: Future<Output = LocalAttempt<T>>,
        R: FnMut(String) -> RF,
        RF: Future<Output = Result<T, forward::PeerCallError>>,
    {
        let deadline = tokio::time::Instant::now() + META_CALL_DEADLINE;
        let controllers = self.controllers();
        let mut hint: Option<(BrokerId, String)> = None;
        let mut last_error = String::from("no attempt made");
        for attempt in 0..META_CALL_ATTEMPTS_MAX {
            if tokio::time::Instant::now() >= deadline {
                break;
            }
            if self.meta_is_leader() {
                match local().await {
                    LocalAttempt::Done(v) => return Ok(v),
                    LocalAttempt::Retry { reason, hint: next } => {
                        last_error = reason;
                        hint = next;
                    }
                    LocalAttempt::Failed(e) => return Err(e),
                }
            } else {
                let target = hint.take().or_else(|| self.meta_leader()).or_else(|| controllers.get(attempt % controllers.len()).cloned());
                if let Some((id, addr)) = target.filter(|(id, _)| *id != self.id) {
                    match remote(addr.clone()).await {
                        Ok(v) => return Ok(v),
                        Err(forward::PeerCallError::NotLeader(next)) => {
                            last_error = format!("broker {id} is not the metadata leader");
                            hint = next;
                            continue;
                        }
                        Err(e) => last_error = format!("broker {id} at {addr}: {e}"),
                    }
                }
            }
            // No leader known, or it just changed: wait for the metadata group to settle.
            let backoff = Duration::from_millis(20 << attempt.min(5));
            tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + backoff)).await;
        }
        Err(MetaCallError::Unavailable(last_error))
    }
}

/// One attempt of a metadata call on this broker's own replica, while it leads.
enum LocalAttempt<T> {
    Done(T),
    /// Not done; try again (at `hint`, when the replica named a newer leader).
    Retry {
        reason: String,
        hint: Option<(BrokerId, String)>,
    },
    Failed(MetaCallError),
}

/// Flushes the queue store every [`crate::store::StoreOptions::flush_interval_ms`] (see there).
async fn flush_store_periodically(core: Arc<Core>) {
    let mut stop = core.stop.clone();
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(core.options.store.flush_interval()) => {}
        }
        let store = core.host.store().clone();
        match tokio::task::spawn_blocking(move || store.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "flushing the queue store failed"),
            Err(e) => tracing::warn!(error = %e, "the store flush task failed"),
        }
    }
}

impl MetricsSource for Core {
    fn log_stats(&self) -> &raft_log::engine::EngineStats {
        self.host.log_stats()
    }

    fn replicas(&self) -> Vec<ReplicaState> {
        self.hosted_groups().filter_map(|id| self.replica_state(id)).collect()
    }
}

impl Core {
    /// Every group with a replica here: the metadata group first, then the queue groups.
    pub(crate) fn hosted_groups(&self) -> impl Iterator<Item = GroupId> + '_ {
        std::iter::once(controller::META_GROUP_ID).chain(self.host.groups())
    }

    /// This broker's replica of `group` (the metadata group included) as its Raft metrics and,
    /// for a queue group, the host and store describe it; `None` when it has none.
    pub(crate) fn replica_state(&self, group: GroupId) -> Option<ReplicaState> {
        if group == controller::META_GROUP_ID {
            return Some(ReplicaState::from_raft(group, &self.meta.metrics().borrow_watched()));
        }
        let raft = self.host.group(group)?;
        let mut state = ReplicaState::from_raft(group, &raft.metrics().borrow_watched());
        state.hibernating = self.host.is_parked(group);
        state.durable_applied_index = self.host.store().durable_applied_index(group);
        Some(state)
    }
}

/// A running broker; see the module documentation.
pub struct BrokerServer {
    core: Arc<Core>,
    client_addr: SocketAddr,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    client_server: tokio::task::JoinHandle<()>,
    metrics_server: Option<MetricsServer>,
}

impl BrokerServer {
    pub async fn start(options: BrokerOptions) -> Result<Self, BrokerError> {
        let id = options.id;
        if let Err(problems) = options.validate() {
            let problems: Vec<String> = problems.iter().map(ToString::to_string).collect();
            return Err(BrokerError::Options(problems.join("; ")));
        }
        // The peer service answers from `Core`, which needs the host that serves it: it is
        // handed the core once built, and answers UNAVAILABLE until then.
        let core_cell: Arc<OnceLock<Arc<Core>>> = Arc::new(OnceLock::new());
        let peer_routes = tonic::service::Routes::new(
            PeerServiceServer::new(peer_service::PeerSvc::new(core_cell.clone()))
                .max_decoding_message_size(TRANSPORT_MESSAGE_BYTES_MAX)
                .max_encoding_message_size(TRANSPORT_MESSAGE_BYTES_MAX),
        );
        let meta_dir = options.meta_dir();
        let mut metrics = BrokerMetrics::new();
        let host = GroupHost::start_with(&options, Some(peer_routes), metrics.send_path()).await?;
        let peer_addr = Some(options.peer_advertise.clone()).filter(|a| !a.is_empty()).unwrap_or_else(|| host.node().raft_addr);
        let meta_sm = MetaStateMachine::<MetaGroupConfig>::open(&meta_dir)?;
        let map = meta_sm.subscribe();
        let meta = host.open_meta_group(meta_sm).await?;

        let incoming = TcpIncoming::bind(options.listen)
            .map_err(|source| BrokerError::Listen { addr: options.listen, source })?
            .with_nodelay(Some(true));
        let client_addr = incoming.local_addr().map_err(|source| BrokerError::Listen { addr: options.listen, source })?;
        let metrics_listener = match options.metrics_listen {
            Some(addr) => Some(MetricsServer::bind(addr).await.map_err(|source| BrokerError::MetricsListen { addr, source })?),
            None => None,
        };
        let (stop, stop_rx) = watch::channel(false);
        let core = Arc::new(Core {
            id,
            client_addr: Some(options.advertise.clone()).filter(|a| !a.is_empty()).unwrap_or_else(|| client_addr.to_string()),
            peer_addr,
            forward: ForwardClients::new(host.peers().clone(), client_request_bytes_max(&options.send).max(REPLY_BYTES_MAX)),
            options,
            host,
            meta,
            map,
            commit_metrics: metrics.offset_commits(),
            stop: stop_rx,
        });
        let _ = core_cell.set(core.clone());
        metrics.collect_from(Arc::downgrade(&core));
        let request_layer = metrics.request_layer();
        let request_bytes_max = client_request_bytes_max(&core.options.send);
        let request_budget =
            request_bytes::RequestBudget::new(core.options.limits.in_flight_request_bytes_max, request_bytes_max, metrics.request_budget());
        let metrics_server = metrics_listener.map(|listener| MetricsServer::start(listener, metrics));
        // Before the metadata group has caught up: each group opens with the options recorded
        // with its replica.
        for group in core.host.groups_on_disk() {
            core.host.open_group(group, None).await?;
        }
        tracing::info!(broker = id, client = %core.client_addr, peer = %core.peer_addr, "broker started");

        let tasks = vec![
            tokio::spawn(reconcile::bootstrap_and_register(core.clone())),
            tokio::spawn(reconcile::place_groups(core.clone())),
            tokio::spawn(reconcile::meta_learners(core.clone())),
            tokio::spawn(crate::retention::task::run(core.clone())),
            tokio::spawn(hibernation::run(core.clone())),
            tokio::spawn(flush_store_periodically(core.clone())),
        ];
        // At most u32::MAX: `validate` refuses more.
        let streams = u32::try_from(core.options.limits.in_flight_requests_per_connection).unwrap_or(u32::MAX);
        // A request larger than one Raft entry (plus framing) could never be stored whole; the
        // request budget refuses its body at its header, before buffering more (and tonic would).
        let queue = QueueServiceServer::new(queue_service::QueueSvc::new(core.clone()))
            .max_decoding_message_size(request_bytes_max - GRPC_MESSAGE_HEADER_BYTES)
            .max_encoding_message_size(REPLY_BYTES_MAX);
        let admin = AdminServiceServer::new(admin_service::AdminSvc::new(core.clone()));
        let rocketmq = MessagingServiceServer::new(crate::service::rocketmq::MessagingSvc::new(core.clone()))
            .max_decoding_message_size(request_bytes_max - GRPC_MESSAGE_HEADER_BYTES)
            .max_encoding_message_size(REPLY_BYTES_MAX);
        let mut stopped = core.stop.clone();
        let client_server = tokio::spawn(async move {
            let stop = async move {
                let _ = stopped.wait_for(|s| *s).await;
            };
            // At most `streams` requests of one connection are read and served at once; the
            // rest wait unread, held back by HTTP/2 flow control. Over all connections, the
            // bytes of requests being read, decoded and served are held against one budget
            // before tonic decodes them (`request_bytes`).
            let served = Server::builder()
                .max_concurrent_streams(streams)
                .concurrency_limit_per_connection(streams as usize)
                .layer(request_layer)
                .layer(request_budget.layer())
                .add_service(queue)
                .add_service(admin)
                .add_service(rocketmq)
                .serve_with_incoming_shutdown(incoming, stop)
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "client server stopped");
            }
        });
        Ok(Self { core, client_addr, stop, tasks, client_server, metrics_server })
    }

    pub fn id(&self) -> BrokerId {
        self.core.id
    }

    /// Where the client services listen.
    pub fn client_addr(&self) -> SocketAddr {
        self.client_addr
    }

    /// Where `GET /metrics` is served, when it is.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_server.as_ref().map(MetricsServer::local_addr)
    }

    /// Resolves once a group hosted here has stopped by itself (its Raft core hit a storage
    /// error or panicked). The broker must then stop: a dead group behind a broker that still
    /// answers would look healthy while none of its sends can commit. A restart reopens the
    /// group from its log.
    pub async fn fatal(&self) -> GroupFatal {
        let mut fatal = self.core.host.fatal();
        loop {
            if let Some(f) = fatal.borrow_and_update().clone() {
                return f;
            }
            if fatal.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }

    /// This broker as a Raft member (its peer address).
    pub fn node(&self) -> BrokerNode {
        BrokerNode { raft_addr: self.core.peer_addr.clone() }
    }

    /// Stops the client services, the background tasks, every group and the transport, then
    /// flushes the store.
    pub async fn shutdown(self) -> Result<(), BrokerError> {
        let _ = self.stop.send(true);
        let mut server = self.client_server;
        if tokio::time::timeout(SERVER_STOP_WAIT, &mut server).await.is_err() {
            tracing::warn!("client server did not stop within {SERVER_STOP_WAIT:?}; cutting it off");
            server.abort();
        }
        if let Some(metrics_server) = self.metrics_server {
            metrics_server.shutdown().await;
        }
        for task in self.tasks {
            task.abort();
            let _ = task.await;
        }
        if let Err(e) = self.core.meta.shutdown().await {
            tracing::warn!(error = %e, "metadata group did not shut down cleanly");
        }
        self.core.host.shutdown().await?;
        Ok(())
    }
}
