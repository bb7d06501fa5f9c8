//! Calls to a raftmq cluster with bounded retries: [`Cluster::call`] sends one request to a
//! broker of the `--broker` list or to a queue's leader, follows leader hints, backs off on BUSY
//! and UNAVAILABLE, moves on to another broker when one does not answer, and relearns routes
//! when a leader is lost; [`Router`] keeps one topic's routes. Every call, its retries
//! included, ends within the cluster's deadline (`--timeout`).

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use proto::raftmq::v1::{ClusterStatusReply, ClusterStatusRequest, DescribeTopicReply, DescribeTopicRequest};
use tonic::transport::Channel;

use super::connection::{ChannelCache, admin_client, request};
use super::endpoints::Endpoints;
use super::retry::{Next, RetryPolicy};
use super::route::RouteTable;
use super::status::{CallError, Reply, check};

/// A topic's routes are relearned at most this often, however many calls lose their leader at
/// once (every in-flight send of a benchmark does, when a leader fails).
const ROUTE_REFRESH_INTERVAL_MIN: Duration = Duration::from_millis(200);
/// Less time than this left before the deadline is too little to start another attempt.
const ATTEMPT_TIME_MIN: Duration = Duration::from_millis(10);

/// A call that failed for good: the last attempt's error, and whether any attempt may have
/// taken effect (for a send: its outcome is unknown, not failed).
#[derive(Debug, Clone)]
pub struct CallFailure {
    pub error: CallError,
    pub endpoint: String,
    pub attempts: u32,
    pub maybe_applied: bool,
    /// Set when the call's deadline ended it (rather than a final error or the attempt bound).
    pub deadline: Option<Duration>,
}

impl std::fmt::Display for CallFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.deadline {
            Some(d) => write!(
                f,
                "no success within the {} deadline (--timeout) after {} attempt(s); the last, at {}: {}",
                human(d),
                self.attempts,
                self.endpoint,
                self.error
            ),
            None => write!(f, "{} ({} attempt(s), the last at {})", self.error, self.attempts, self.endpoint),
        }
    }
}

impl std::error::Error for CallFailure {}

/// `1.5 s`, `250 ms`: a deadline as a person reads it.
fn human(d: Duration) -> String {
    if d >= Duration::from_secs(1) { format!("{} s", d.as_millis() as f64 / 1000.0) } else { format!("{} ms", d.as_millis()) }
}

/// The brokers as one client sees them: the endpoints to start from, a channel per endpoint,
/// the retry policy and the deadline of each call.
pub struct Cluster {
    endpoints: Endpoints,
    channels: ChannelCache,
    policy: RetryPolicy,
    timeout: Duration,
}

/// Where a call goes first.
pub enum Target<'a> {
    /// A broker of the `--broker` list (admin calls, sends by routing key), or a leader it names.
    Bootstrap,
    /// The queue's leader as the router knows it, else a broker of the `--broker` list.
    Queue(&'a Router, u32),
}

impl Cluster {
    /// `endpoints` (at least one) are tried in turn; every call ends within `timeout`.
    pub fn new(endpoints: Vec<String>, timeout: Duration, policy: RetryPolicy) -> Arc<Self> {
        Arc::new(Self { endpoints: Endpoints::new(endpoints), channels: ChannelCache::default(), policy, timeout })
    }

    /// The broker that calls without a better place start at now.
    pub fn bootstrap(&self) -> String {
        self.endpoints.current()
    }

    /// The deadline of every call (`--timeout`).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Calls `rpc` until its reply is OK, a failure is final, the policy's attempts are used up
    /// or the deadline ([`Self::timeout`]) passes. `rpc` makes one attempt on the channel it is
    /// given and must bound it by the time it is given (the time left: pass it to
    /// [`request`], so the broker knows the deadline too). `rpc` must send the same request
    /// each time: retrying a send is safe only because its producer id and sequences stay the
    /// same.
    pub async fn call<R, F, Fut>(&self, target: Target<'_>, rpc: F) -> Result<R, CallFailure>
    where
        R: Reply,
        F: FnMut(Channel, Duration) -> Fut,
        Fut: Future<Output = Result<tonic::Response<R>, tonic::Status>>,
    {
        self.call_within(target, self.timeout, rpc).await
    }

    /// [`Self::call`] with its own deadline (a long-polling fetch adds its wait to it).
    pub async fn call_within<R, F, Fut>(&self, target: Target<'_>, timeout: Duration, mut rpc: F) -> Result<R, CallFailure>
    where
        R: Reply,
        F: FnMut(Channel, Duration) -> Fut,
        Fut: Future<Output = Result<tonic::Response<R>, tonic::Status>>,
    {
        let deadline = Instant::now() + timeout;
        // Set by a redirect; cleared when the route is relearned.
        let mut pinned: Option<String> = None;
        let mut maybe_applied = false;
        let mut attempts = 0;
        // The failed attempt before this one: what the call ends with when no time is left.
        let mut last: Option<(CallError, String)> = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            // The deadline may pass during a pause or a route refresh: no attempt is started
            // that could only time out (and would make a refused call look maybe applied).
            if left < ATTEMPT_TIME_MIN
                && let Some((error, endpoint)) = last.take()
            {
                return Err(CallFailure { error, endpoint, attempts, maybe_applied, deadline: Some(timeout) });
            }
            attempts += 1;
            let endpoint = match (&pinned, &target) {
                (Some(e), _) => e.clone(),
                (None, Target::Queue(router, queue_id)) => router.leader(*queue_id).unwrap_or_else(|| self.bootstrap()),
                (None, Target::Bootstrap) => self.bootstrap(),
            };
            let error = match self.attempt(&endpoint, left, &mut rpc).await {
                Ok(reply) => return Ok(reply),
                Err(e) => e,
            };
            maybe_applied |= error.maybe_applied();
            let next = self.policy.next(attempts, &error);
            let (Next::Redirect { delay, .. } | Next::Retry { delay, .. }) = next else {
                return Err(CallFailure { error, endpoint, attempts, maybe_applied, deadline: None });
            };
            // No retry that could not even begin before the deadline.
            if Instant::now() + delay >= deadline {
                return Err(CallFailure { error, endpoint, attempts, maybe_applied, deadline: Some(timeout) });
            }
            match next {
                Next::Redirect { endpoint: leader, delay } => {
                    tracing::debug!(from = %endpoint, to = %leader, attempts, "following the leader hint");
                    self.endpoints.learn([leader.as_str()]);
                    if let Target::Queue(router, queue_id) = &target {
                        router.learn_leader(*queue_id, &leader);
                    }
                    pinned = Some(leader);
                    tokio::time::sleep(delay).await;
                }
                Next::Retry { delay, refresh_route } => {
                    tracing::debug!(%endpoint, attempts, %error, ?delay, "retrying");
                    if refresh_route {
                        // The broker may be down: the next call without a route starts elsewhere.
                        self.endpoints.failed(&endpoint);
                    }
                    tokio::time::sleep(delay).await;
                    if refresh_route {
                        pinned = None;
                        if let Target::Queue(router, queue_id) = &target {
                            router.refresh(*queue_id, deadline.saturating_duration_since(Instant::now())).await;
                        }
                    }
                }
                // Returned above.
                Next::Fail => {}
            }
            last = Some((error, endpoint));
        }
    }

    /// One attempt, abandoned after `left` whatever `rpc` does with it (a connection that hangs).
    async fn attempt<R, F, Fut>(&self, endpoint: &str, left: Duration, rpc: &mut F) -> Result<R, CallError>
    where
        R: Reply,
        F: FnMut(Channel, Duration) -> Fut,
        Fut: Future<Output = Result<tonic::Response<R>, tonic::Status>>,
    {
        let channel = self.channels.get(endpoint)?;
        let reply = match tokio::time::timeout(left, rpc(channel, left)).await {
            Ok(reply) => reply?.into_inner(),
            Err(_) => {
                let message = format!("no answer within {}", human(left));
                return Err(CallError::Transport { code: tonic::Code::DeadlineExceeded, message });
            }
        };
        check(reply.status())?;
        Ok(reply)
    }

    pub async fn describe_topic(&self, name: &str) -> Result<DescribeTopicReply, CallFailure> {
        let req = DescribeTopicRequest { name: name.to_string() };
        self.call(Target::Bootstrap, |ch, left| {
            let req = req.clone();
            async move { admin_client(ch).describe_topic(request(req, left)).await }
        })
        .await
    }

    /// The cluster's brokers and groups; the live brokers' endpoints join the ones calls may start at.
    pub async fn cluster_status(&self) -> Result<ClusterStatusReply, CallFailure> {
        let reply =
            self.call(Target::Bootstrap, |ch, left| async move {
                admin_client(ch).cluster_status(request(ClusterStatusRequest {}, left)).await
            })
            .await?;
        self.endpoints.learn(reply.brokers.iter().filter(|b| b.alive).map(|b| b.endpoint.as_str()));
        Ok(reply)
    }

    /// One attempt of DescribeTopic and of ClusterStatus at the current bootstrap endpoint,
    /// within `left`: the routes as it knows them.
    async fn fetch_routes(&self, topic: &str, left: Duration) -> Result<RouteTable, CallError> {
        let endpoint = self.bootstrap();
        let fetched = async {
            let channel = self.channels.get(&endpoint)?;
            let topic =
                admin_client(channel.clone()).describe_topic(request(DescribeTopicRequest { name: topic.to_string() }, left)).await?;
            let topic = topic.into_inner();
            check(topic.status())?;
            let status = admin_client(channel).cluster_status(request(ClusterStatusRequest {}, left)).await?.into_inner();
            check(status.status())?;
            self.endpoints.learn(status.brokers.iter().filter(|b| b.alive).map(|b| b.endpoint.as_str()));
            Ok(RouteTable::build(&topic.queues, &status.brokers))
        };
        let fetched = match tokio::time::timeout(left, fetched).await {
            Ok(r) => r,
            Err(_) => {
                Err(CallError::Transport { code: tonic::Code::DeadlineExceeded, message: format!("no routes within {}", human(left)) })
            }
        };
        if fetched.is_err() {
            self.endpoints.failed(&endpoint);
        }
        fetched
    }
}

/// One topic's routes, shared by every task that calls its queues.
pub struct Router {
    cluster: Arc<Cluster>,
    topic: String,
    table: Mutex<RouteTable>,
    /// When the routes were last relearned; held while relearning, so that concurrent callers
    /// wait for one refresh instead of each making their own.
    refreshed_at: tokio::sync::Mutex<Instant>,
}

impl Router {
    /// Describes `topic` (failing if it does not exist) and learns its queues' leaders. Without
    /// ClusterStatus (an older broker, or one that fails it) every call starts at `--broker`.
    pub async fn open(cluster: Arc<Cluster>, topic: &str) -> Result<(Self, DescribeTopicReply), CallFailure> {
        let described = cluster.describe_topic(topic).await?;
        let table = match cluster.cluster_status().await {
            Ok(status) => RouteTable::build(&described.queues, &status.brokers),
            Err(e) => {
                tracing::warn!(error = %e, broker = cluster.bootstrap(), "no cluster status: every call goes to --broker");
                RouteTable::default()
            }
        };
        let router =
            Self { cluster, topic: topic.to_string(), table: Mutex::new(table), refreshed_at: tokio::sync::Mutex::new(Instant::now()) };
        Ok((router, described))
    }

    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    /// Calls `rpc` on the leader of `queue_id` (see [`Cluster::call`]).
    pub async fn call<R, F, Fut>(&self, queue_id: u32, rpc: F) -> Result<R, CallFailure>
    where
        R: Reply,
        F: FnMut(Channel, Duration) -> Fut,
        Fut: Future<Output = Result<tonic::Response<R>, tonic::Status>>,
    {
        self.cluster.call(Target::Queue(self, queue_id), rpc).await
    }

    /// [`Self::call`] with its own deadline (see [`Cluster::call_within`]).
    pub async fn call_within<R, F, Fut>(&self, queue_id: u32, timeout: Duration, rpc: F) -> Result<R, CallFailure>
    where
        R: Reply,
        F: FnMut(Channel, Duration) -> Fut,
        Fut: Future<Output = Result<tonic::Response<R>, tonic::Status>>,
    {
        self.cluster.call_within(Target::Queue(self, queue_id), timeout, rpc).await
    }

    fn leader(&self, queue_id: u32) -> Option<String> {
        self.table.lock().unwrap_or_else(|p| p.into_inner()).leader(queue_id).map(str::to_string)
    }

    fn learn_leader(&self, queue_id: u32, endpoint: &str) {
        self.table.lock().unwrap_or_else(|p| p.into_inner()).learn_leader(queue_id, endpoint);
    }

    /// Relearns the routes after `queue_id`'s leader was lost, within `left`. When that fails,
    /// the queue's calls go to the `--broker` list until a later refresh succeeds.
    async fn refresh(&self, queue_id: u32, left: Duration) {
        let Ok(mut refreshed_at) = tokio::time::timeout(left, self.refreshed_at.lock()).await else { return };
        if refreshed_at.elapsed() < ROUTE_REFRESH_INTERVAL_MIN {
            return;
        }
        let fresh = self.cluster.fetch_routes(&self.topic, left).await;
        *refreshed_at = Instant::now();
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        match fresh {
            Ok(fresh) => *table = fresh,
            Err(e) => {
                tracing::debug!(topic = %self.topic, error = %e, "relearning routes failed");
                table.forget(queue_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::atomic::{AtomicU32, Ordering};

    use proto::raftmq::v1::queue_service_server::{QueueService, QueueServiceServer};
    use proto::raftmq::v1::status::Code;
    use proto::raftmq::v1::{
        CommitOffsetReply, CommitOffsetRequest, FetchReply, FetchRequest, GetOffsetReply, GetOffsetRequest, LeaderHint, SendReply,
        SendRequest, SendResult, Status,
    };
    use tonic::transport::Server;
    use tonic::transport::server::TcpIncoming;

    use super::*;
    use crate::connection::queue_client;

    /// A QueueService whose sends answer the scripted replies in turn, then `last` for ever.
    struct FakeQueue {
        script: Mutex<VecDeque<SendReply>>,
        last: SendReply,
        sends: AtomicU32,
        /// Never answer a send.
        hang: bool,
    }

    #[tonic::async_trait]
    impl QueueService for FakeQueue {
        async fn send(&self, _: tonic::Request<SendRequest>) -> Result<tonic::Response<SendReply>, tonic::Status> {
            self.sends.fetch_add(1, Ordering::SeqCst);
            if self.hang {
                std::future::pending::<()>().await;
            }
            let next = self.script.lock().expect("script").pop_front();
            Ok(tonic::Response::new(next.unwrap_or_else(|| self.last.clone())))
        }
        async fn fetch(&self, _: tonic::Request<FetchRequest>) -> Result<tonic::Response<FetchReply>, tonic::Status> {
            Err(tonic::Status::unimplemented("fetch"))
        }
        async fn commit_offset(&self, _: tonic::Request<CommitOffsetRequest>) -> Result<tonic::Response<CommitOffsetReply>, tonic::Status> {
            Err(tonic::Status::unimplemented("commit"))
        }
        async fn get_offset(&self, _: tonic::Request<GetOffsetRequest>) -> Result<tonic::Response<GetOffsetReply>, tonic::Status> {
            Err(tonic::Status::unimplemented("get offset"))
        }
    }

    fn status(code: Code) -> Status {
        Status { code: code as i32, message: format!("{code:?}"), ..Default::default() }
    }

    fn reply(code: Code) -> SendReply {
        SendReply { status: Some(status(code)), results: vec![] }
    }

    fn ok_reply() -> SendReply {
        SendReply { status: Some(status(Code::Ok)), results: vec![SendResult { message_id: "m".into(), queue_id: 0, offset: 7 }] }
    }

    fn redirect(to: &str) -> SendReply {
        let hint = LeaderHint { broker_id: 2, endpoint: to.to_string() };
        SendReply { status: Some(Status { leader_hint: Some(hint), ..status(Code::NotLeader) }), results: vec![] }
    }

    /// Serves `fake` on a free loopback port until the test's runtime ends; returns the endpoint.
    fn serve(fake: Arc<FakeQueue>) -> String {
        let incoming = TcpIncoming::bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
        let addr = incoming.local_addr().expect("local addr");
        tokio::spawn(Server::builder().add_service(QueueServiceServer::from_arc(fake)).serve_with_incoming(incoming));
        addr.to_string()
    }

    fn fake(script: Vec<SendReply>, last: SendReply) -> Arc<FakeQueue> {
        Arc::new(FakeQueue { script: Mutex::new(script.into()), last, sends: AtomicU32::new(0), hang: false })
    }

    fn fast_policy() -> RetryPolicy {
        RetryPolicy { attempts_max: 3, backoff_first: Duration::from_millis(1), backoff_max: Duration::from_millis(2) }
    }

    /// A cluster of the one endpoint, with a 10 s deadline.
    fn one(endpoint: String) -> Arc<Cluster> {
        Cluster::new(vec![endpoint], Duration::from_secs(10), fast_policy())
    }

    async fn send(cluster: &Cluster, target: Target<'_>) -> Result<SendReply, CallFailure> {
        cluster.call(target, |ch, left| async move { queue_client(ch).send(request(SendRequest::default(), left)).await }).await
    }

    /// An endpoint where nothing listens (a port that was free a moment ago).
    fn closed_endpoint() -> String {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").to_string()
    }

    #[tokio::test]
    async fn a_call_moves_on_from_a_dead_broker_to_the_next_given_one() {
        let live = fake(vec![], ok_reply());
        let cluster = Cluster::new(vec![closed_endpoint(), serve(live.clone())], Duration::from_secs(10), fast_policy());
        let reply = send(&cluster, Target::Bootstrap).await.expect("the second broker answers");
        assert_eq!(reply.results[0].offset, 7);
        // The next call starts at the broker that answered.
        send(&cluster, Target::Bootstrap).await.expect("sent");
        assert_eq!(live.sends.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn the_deadline_ends_a_call_whatever_the_retries_left() {
        let deadline = Duration::from_millis(300);
        // Without the deadline these calls would go on for 50 s (1,000 attempts): a second of
        // slack tells the two apart on a loaded machine.
        const SLACK: Duration = Duration::from_secs(1);
        let patient = RetryPolicy { attempts_max: 1000, backoff_first: Duration::from_millis(20), backoff_max: Duration::from_millis(50) };
        // Always BUSY: retried until the deadline, then a certain failure.
        let busy = fake(vec![], reply(Code::Busy));
        let cluster = Cluster::new(vec![serve(busy)], deadline, patient);
        let started = Instant::now();
        let f = send(&cluster, Target::Bootstrap).await.expect_err("always busy");
        assert!(started.elapsed() < deadline + SLACK, "took {:?}", started.elapsed());
        assert_eq!((f.deadline, f.maybe_applied), (Some(deadline), false), "{f}");
        assert!(f.to_string().starts_with("no success within the 300 ms deadline (--timeout) after"), "{f}");
        // Never answers: the attempt is abandoned at the deadline, its outcome unknown.
        let silent = Arc::new(FakeQueue { script: Mutex::new(VecDeque::new()), last: ok_reply(), sends: AtomicU32::new(0), hang: true });
        let cluster = Cluster::new(vec![serve(silent)], deadline, patient);
        let started = Instant::now();
        let f = send(&cluster, Target::Bootstrap).await.expect_err("no answer");
        assert!(started.elapsed() < deadline + SLACK, "took {:?}", started.elapsed());
        assert!(f.maybe_applied, "{f}");
        assert!(f.deadline.is_some() && f.attempts == 1, "{f}");
    }

    #[tokio::test]
    async fn a_leader_hint_is_followed_and_remembered_for_the_queue() {
        let leader = fake(vec![], ok_reply());
        let leader_endpoint = serve(leader.clone());
        let follower = fake(vec![], redirect(&leader_endpoint));
        let cluster = one(serve(follower.clone()));
        let router = Router {
            cluster: cluster.clone(),
            topic: "t".into(),
            table: Mutex::new(RouteTable::default()),
            refreshed_at: tokio::sync::Mutex::new(Instant::now()),
        };
        let reply = send(&cluster, Target::Queue(&router, 0)).await.expect("sent");
        assert_eq!(reply.results[0].offset, 7);
        assert_eq!(router.leader(0).as_deref(), Some(leader_endpoint.as_str()));
        // The next send goes straight to the leader.
        send(&cluster, Target::Queue(&router, 0)).await.expect("sent");
        assert_eq!((follower.sends.load(Ordering::SeqCst), leader.sends.load(Ordering::SeqCst)), (1, 2));
    }

    #[tokio::test]
    async fn busy_is_retried_within_the_bound() {
        let broker = fake(vec![reply(Code::Busy), reply(Code::Busy)], ok_reply());
        let cluster = one(serve(broker.clone()));
        send(&cluster, Target::Bootstrap).await.expect("third attempt succeeds");
        assert_eq!(broker.sends.load(Ordering::SeqCst), 3);

        let broker = fake(vec![], reply(Code::Busy));
        let cluster = one(serve(broker.clone()));
        let f = send(&cluster, Target::Bootstrap).await.expect_err("always busy");
        assert!(matches!(f.error, CallError::Busy { .. }));
        assert_eq!((f.attempts, f.maybe_applied, broker.sends.load(Ordering::SeqCst)), (3, false, 3));
    }

    #[tokio::test]
    async fn an_unknown_outcome_stays_unknown_even_when_a_later_attempt_is_refused() {
        let f = refused_after(Code::OutcomeUnknown).await;
        assert!(matches!(f.error, CallError::NotLeader { leader: None, .. }));
        assert!(f.maybe_applied);
    }

    #[tokio::test]
    async fn unavailable_then_refused_is_a_certain_failure() {
        let f = refused_after(Code::Unavailable).await;
        assert!(matches!(f.error, CallError::NotLeader { leader: None, .. }));
        assert!(!f.maybe_applied);
    }

    /// A send to a broker that answers `first`, then refuses every retry as not the leader.
    async fn refused_after(first: Code) -> CallFailure {
        let broker = fake(vec![reply(first)], reply(Code::NotLeader));
        let cluster = one(serve(broker));
        send(&cluster, Target::Bootstrap).await.expect_err("fails")
    }

    #[tokio::test]
    async fn final_errors_are_not_retried() {
        let broker =
            fake(vec![], SendReply { status: Some(Status { field: "topic".into(), ..status(Code::InvalidArgument) }), results: vec![] });
        let cluster = one(serve(broker.clone()));
        let f = send(&cluster, Target::Bootstrap).await.expect_err("invalid");
        assert_eq!((f.attempts, f.maybe_applied), (1, false));
        assert!(f.to_string().starts_with("invalid argument topic: InvalidArgument"), "{f}");
        let broker = fake(vec![], SendReply::default());
        let cluster = one(serve(broker));
        let f = send(&cluster, Target::Bootstrap).await.expect_err("no status");
        assert!(matches!(f.error, CallError::BadStatus { code: 0, .. }));
    }

    #[tokio::test]
    async fn an_unreachable_broker_is_retried_then_reported_unknown() {
        // A port that was free a moment ago: nothing listens there.
        let endpoint = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").to_string()
        };
        let cluster = one(endpoint);
        let f = send(&cluster, Target::Bootstrap).await.expect_err("refused");
        assert!(matches!(f.error, CallError::Transport { code: tonic::Code::Unavailable, .. }), "{f}");
        assert_eq!((f.attempts, f.maybe_applied), (3, true));
    }
}
