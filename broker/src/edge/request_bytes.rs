//! The client server's bound on request memory, in bytes, before tonic decodes anything.
//!
//! tonic buffers a request's whole message before any handler runs, so a bound applied by a
//! handler comes too late: many connections, each with many large requests, would all be read
//! and decoded first. This layer wraps every request body and holds its bytes against one
//! broker-wide budget ([`RequestBudget`], `limits.in_flight_request_bytes_max`) as they are read:
//!
//! - **Whole messages, reserved at their header.** When the 5-byte gRPC header of a message
//!   arrives, the message's whole length is reserved at once, before the frame is handed on;
//!   its further frames are already covered. Reserving frame by frame instead could deadlock:
//!   requests each holding part of the budget, all waiting for more. A request holds at most
//!   [`crate::size_limits::client_request_bytes_max`] (a longer body is refused, OUT_OF_RANGE,
//!   without waiting), and the budget is at least that (`size_limits::check`), so every request
//!   is admitted once the requests before it finish.
//! - **A full budget makes the request wait (back-pressure)**, as Kafka's
//!   `queued.max.request.bytes` does: its frame is held back, the body is not read further, and
//!   HTTP/2 flow control stops the client once the stream's window is used. Waiters are admitted
//!   in arrival order (tokio's semaphore is fair: room that frees up is set aside for the first
//!   waiter until it has all it asked for, so only one waiter holds room it cannot use yet).
//! - **The wait is bounded by the client's deadline**: a little before its `grpc-timeout` runs
//!   out the request is answered RESOURCE_EXHAUSTED. Nothing was done: no handler ran.
//! - **Held until the answer**: the reservation lasts until both the response future (decoding
//!   and the handler) and the body are done, or dropped (a cancelled request gives it back).
//!
//! What this does not bound: the bytes a connection has received but not yet handed to this
//! layer (HTTP/2 flow control: at most its connection window, hyper's 1 MiB) and one held-back
//! frame (at most 16 KiB) per waiting request; replies, which a fetch bounds by its `max_bytes`.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::{AcquireError, OwnedSemaphorePermit, Semaphore, TryAcquireError};
use tokio::time::Instant;
use tonic::codegen::{Bytes, http};

use super::deadline::{GRPC_TIMEOUT, answer_within_timeout};
use crate::metrics::RequestBudgetMetrics;
use crate::size_limits::GRPC_MESSAGE_HEADER_BYTES;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The broker-wide budget of client request bytes in flight; one per client server.
#[derive(Debug)]
pub(crate) struct RequestBudget {
    /// One permit per byte.
    permits: Arc<Semaphore>,
    bytes_max: usize,
    /// The most one request may hold: the largest request body the server takes.
    request_bytes_max: usize,
    metrics: Arc<RequestBudgetMetrics>,
}

impl RequestBudget {
    /// A budget of `bytes_max` bytes for requests of at most `request_bytes_max` each; the
    /// budget must hold the largest request (checked where options are made), and is clamped to
    /// what a semaphore holds.
    pub(crate) fn new(bytes_max: usize, request_bytes_max: usize, metrics: Arc<RequestBudgetMetrics>) -> Arc<Self> {
        debug_assert!(bytes_max >= request_bytes_max, "a request of {request_bytes_max} bytes would wait for ever");
        let bytes_max = bytes_max.min(Semaphore::MAX_PERMITS);
        metrics.budget_bytes.set(i64::try_from(bytes_max).unwrap_or(i64::MAX));
        Arc::new(Self { permits: Arc::new(Semaphore::new(bytes_max)), bytes_max, request_bytes_max, metrics })
    }

    /// A tower layer holding the bytes of every request of the server it wraps against this budget.
    pub(crate) fn layer(self: &Arc<Self>) -> RequestBytesLayer {
        RequestBytesLayer { budget: self.clone() }
    }
}

/// Counts the bytes of a request body to hold as its frames arrive: each message's whole
/// length at its gRPC header (one byte per header byte as they come, then the rest of the
/// message at once when the header is complete), nothing for bytes a reservation covers.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct MessageFraming {
    /// Bytes of the current message reserved but not arrived yet.
    message_left: u64,
    header: [u8; GRPC_MESSAGE_HEADER_BYTES],
    header_len: usize,
}

impl MessageFraming {
    /// The bytes to reserve before `chunk`, the next data of the body, is handed on.
    fn bytes_to_hold(&mut self, chunk: &[u8]) -> u64 {
        let mut hold = 0;
        let mut rest = chunk;
        while !rest.is_empty() {
            if self.message_left > 0 {
                let covered = rest.len().min(usize::try_from(self.message_left).unwrap_or(usize::MAX));
                self.message_left -= covered as u64;
                rest = &rest[covered..];
                continue;
            }
            self.header[self.header_len] = rest[0];
            self.header_len += 1;
            rest = &rest[1..];
            hold += 1;
            if self.header_len == GRPC_MESSAGE_HEADER_BYTES {
                let length = u32::from_be_bytes([self.header[1], self.header[2], self.header[3], self.header[4]]);
                self.message_left = u64::from(length);
                self.header_len = 0;
                hold += u64::from(length);
            }
        }
        hold
    }
}

/// The budget one request holds; given back when the last holder (the body, the response
/// future) is dropped.
#[derive(Debug)]
struct Held {
    permit: Mutex<Option<OwnedSemaphorePermit>>,
    metrics: Arc<RequestBudgetMetrics>,
}

impl Held {
    fn new(metrics: Arc<RequestBudgetMetrics>) -> Arc<Self> {
        Arc::new(Self { permit: Mutex::new(None), metrics })
    }

    fn bytes(&self) -> usize {
        self.permit.lock().unwrap_or_else(|p| p.into_inner()).as_ref().map_or(0, OwnedSemaphorePermit::num_permits)
    }

    fn add(&self, more: OwnedSemaphorePermit) {
        self.metrics.in_flight_bytes.inc_by(i64::try_from(more.num_permits()).unwrap_or(i64::MAX));
        let mut permit = self.permit.lock().unwrap_or_else(|p| p.into_inner());
        match permit.as_mut() {
            Some(p) => p.merge(more),
            None => *permit = Some(more),
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        // Before the permits go back, so the gauge never shows more than the budget holds.
        self.metrics.in_flight_bytes.dec_by(i64::try_from(self.bytes()).unwrap_or(i64::MAX));
    }
}

type Acquire = Pin<Box<dyn Future<Output = Option<Result<OwnedSemaphorePermit, AcquireError>>> + Send>>;

/// A frame held back until its bytes are reserved.
struct Waiting {
    frame: Frame<Bytes>,
    bytes: u64,
    acquire: Acquire,
    since: Instant,
}

/// A request body whose bytes are held against the budget before they are handed on (see the
/// module documentation). Errors of the body it wraps pass through unchanged.
pub struct BudgetedBody<B> {
    inner: B,
    budget: Arc<RequestBudget>,
    held: Arc<Held>,
    framing: MessageFraming,
    /// When the wait for room ends: a little before the client's deadline.
    due: Option<Instant>,
    waiting: Option<Waiting>,
    /// Refused: the body ends.
    refused: bool,
}

impl<B> BudgetedBody<B> {
    fn refuse(&mut self, status: tonic::Status) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.refused = true;
        self.waiting = None;
        Poll::Ready(Some(Err(Box::new(status))))
    }
}

impl<B> Body for BudgetedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.refused {
            return Poll::Ready(None);
        }
        loop {
            if let Some(waiting) = this.waiting.as_mut() {
                let acquired = std::task::ready!(waiting.acquire.as_mut().poll(cx));
                let Some(Waiting { frame, bytes, since, .. }) = this.waiting.take() else { unreachable!("polled above") };
                let waited = since.elapsed();
                this.budget.metrics.record_wait(waited, matches!(acquired, Some(Ok(_))));
                return match acquired {
                    Some(Ok(permit)) => {
                        this.held.add(permit);
                        Poll::Ready(Some(Ok(frame)))
                    }
                    None => {
                        tracing::debug!(
                            bytes,
                            waited_ms = waited.as_millis() as u64,
                            "request refused: no room in the request budget before its deadline"
                        );
                        let status = tonic::Status::resource_exhausted(format!(
                            "{bytes} bytes of request not admitted within {waited:?}, before the request's deadline: {} bytes of \
                             requests in flight on this broker (limits.in_flight_request_bytes_max); nothing was done",
                            this.budget.bytes_max
                        ));
                        this.refuse(status)
                    }
                    Some(Err(_)) => this.refuse(tonic::Status::unavailable("the broker is stopping; nothing was done")),
                };
            }
            let frame = match std::task::ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                None => return Poll::Ready(None),
                Some(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
                Some(Ok(frame)) => frame,
            };
            let bytes = frame.data_ref().map_or(0, |data| this.framing.bytes_to_hold(data));
            if bytes == 0 {
                return Poll::Ready(Some(Ok(frame)));
            }
            let request_max = this.budget.request_bytes_max;
            let total = (this.held.bytes() as u64).saturating_add(bytes);
            let Some(permits) = u32::try_from(bytes).ok().filter(|_| total <= request_max as u64) else {
                return this.refuse(tonic::Status::out_of_range(format!(
                    "request of at least {total} bytes, above the largest the broker takes ({request_max} bytes)"
                )));
            };
            match this.budget.permits.clone().try_acquire_many_owned(permits) {
                Ok(permit) => {
                    this.held.add(permit);
                    return Poll::Ready(Some(Ok(frame)));
                }
                Err(TryAcquireError::Closed) => return this.refuse(tonic::Status::unavailable("the broker is stopping; nothing was done")),
                Err(TryAcquireError::NoPermits) => {
                    let (semaphore, due) = (this.budget.permits.clone(), this.due);
                    let acquire: Acquire = Box::pin(async move {
                        let acquire = semaphore.acquire_many_owned(permits);
                        match due {
                            Some(due) => tokio::time::timeout_at(due, acquire).await.ok(),
                            None => Some(acquire.await),
                        }
                    });
                    this.waiting = Some(Waiting { frame, bytes, acquire, since: Instant::now() });
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.refused || (self.waiting.is_none() && self.inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        match &self.waiting {
            None => self.inner.size_hint(),
            Some(_) => SizeHint::default(),
        }
    }
}

/// Holds every request's bytes against a [`RequestBudget`]; see the module documentation.
#[derive(Debug, Clone)]
pub(crate) struct RequestBytesLayer {
    budget: Arc<RequestBudget>,
}

impl<S> tower_layer::Layer<S> for RequestBytesLayer {
    type Service = RequestBytesService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestBytesService { inner, budget: self.budget.clone() }
    }
}

/// See [`RequestBytesLayer`].
#[derive(Debug, Clone)]
pub(crate) struct RequestBytesService<S> {
    inner: S,
    budget: Arc<RequestBudget>,
}

impl<S, B> tower_service::Service<http::Request<B>> for RequestBytesService<S>
where
    S: tower_service::Service<http::Request<BudgetedBody<B>>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let within: Option<Duration> = request.headers().get(GRPC_TIMEOUT).and_then(|v| v.to_str().ok()).and_then(answer_within_timeout);
        let held = Held::new(self.budget.metrics.clone());
        let body_held = held.clone();
        let budget = self.budget.clone();
        let request = request.map(move |inner| BudgetedBody {
            inner,
            budget,
            held: body_held,
            framing: MessageFraming::default(),
            due: within.map(|w| Instant::now() + w),
            waiting: None,
            refused: false,
        });
        let answer = self.inner.call(request);
        Box::pin(async move {
            let response = answer.await;
            // The decoded request and the handler's state lived until here.
            drop(held);
            response
        })
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use futures::FutureExt;
    use http_body_util::{BodyExt, StreamBody};

    use super::*;
    use crate::metrics::BrokerMetrics;

    type TestFrame = Result<Frame<Bytes>, tonic::Status>;

    /// One gRPC message of `len` payload bytes, framed.
    fn message(len: usize) -> Vec<u8> {
        let mut m = vec![0u8];
        m.extend_from_slice(&(len as u32).to_be_bytes());
        m.extend(std::iter::repeat_n(7u8, len));
        m
    }

    fn body_of(frames: Vec<TestFrame>) -> StreamBody<futures::stream::Iter<std::vec::IntoIter<TestFrame>>> {
        StreamBody::new(futures::stream::iter(frames))
    }

    fn data(bytes: &[u8]) -> TestFrame {
        Ok(Frame::data(Bytes::copy_from_slice(bytes)))
    }

    /// A budget, its metrics, and the registry they are exported from.
    fn budget(bytes_max: usize, request_bytes_max: usize) -> (Arc<RequestBudget>, Arc<RequestBudgetMetrics>, BrokerMetrics) {
        let registry = BrokerMetrics::new();
        let metrics = registry.request_budget();
        (RequestBudget::new(bytes_max, request_bytes_max, metrics.clone()), metrics, registry)
    }

    /// The value of the sample named exactly `series`.
    fn sample(registry: &BrokerMetrics, series: &str) -> Option<String> {
        let text = registry.encode().expect("encode");
        text.lines().find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')).map(str::to_owned))
    }

    fn budgeted<B>(inner: B, budget: &Arc<RequestBudget>, due: Option<Instant>) -> (BudgetedBody<B>, Arc<Held>) {
        let held = Held::new(budget.metrics.clone());
        let body = BudgetedBody {
            inner,
            budget: budget.clone(),
            held: held.clone(),
            framing: MessageFraming::default(),
            due,
            waiting: None,
            refused: false,
        };
        (body, held)
    }

    /// Every frame of `body`, or the first error (as the status it carries).
    async fn frames<B: Body<Data = Bytes, Error = BoxError> + Unpin>(body: &mut B) -> Result<Vec<u8>, tonic::Status> {
        let mut out = Vec::new();
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => out.extend_from_slice(f.data_ref().map_or(&[][..], |d| &d[..])),
                Err(e) => return Err(*e.downcast::<tonic::Status>().expect("a status")),
            }
        }
        Ok(out)
    }

    #[test]
    fn each_message_is_held_whole_however_its_frames_split_it() {
        let body: Vec<u8> = [message(10), message(0), message(300)].concat();
        let whole = body.len() as u64;
        for cut in 0..=body.len() {
            for second in cut..=body.len() {
                let mut framing = MessageFraming::default();
                let held: Vec<u64> = [&body[..cut], &body[cut..second], &body[second..]].iter().map(|c| framing.bytes_to_hold(c)).collect();
                assert_eq!(held.iter().sum::<u64>(), whole, "cut at {cut} and {second}: {held:?}");
                // The first message is held whole once its header is in.
                if cut >= GRPC_MESSAGE_HEADER_BYTES {
                    assert!(held[0] >= 15, "cut at {cut}: {held:?}");
                }
            }
        }
        // A header announces the whole message before its bytes arrive.
        let mut framing = MessageFraming::default();
        assert_eq!(framing.bytes_to_hold(&message(1 << 20)[..5]), 5 + (1 << 20));
        assert_eq!(framing.bytes_to_hold(&[7; 1000]), 0);
    }

    #[tokio::test]
    async fn a_body_is_counted_exactly_and_given_back_when_done() {
        let (budget, metrics, registry) = budget(1000, 500);
        let m = message(200);
        let (mut body, held) = budgeted(body_of(vec![data(&m[..3]), data(&m[3..100]), data(&m[100..])]), &budget, None);
        assert_eq!(frames(&mut body).await.expect("frames"), m);
        assert_eq!(held.bytes(), 205);
        assert_eq!(metrics.in_flight_bytes.get(), 205);
        assert_eq!(sample(&registry, "raftmq_grpc_request_in_flight_bytes").as_deref(), Some("205"));
        assert_eq!(sample(&registry, "raftmq_grpc_request_budget_bytes").as_deref(), Some("1000"));
        assert_eq!(budget.permits.available_permits(), 795);
        drop(body);
        assert_eq!(budget.permits.available_permits(), 795, "the answer holds it too");
        drop(held);
        assert_eq!(budget.permits.available_permits(), 1000);
        assert_eq!(metrics.in_flight_bytes.get(), 0);
    }

    #[tokio::test]
    async fn a_full_budget_makes_a_request_wait_and_a_dropped_waiter_gives_all_back() {
        let (budget, metrics, registry) = budget(300, 300);
        let (mut first, first_held) = budgeted(body_of(vec![data(&message(195))]), &budget, None);
        assert_eq!(frames(&mut first).await.expect("frames").len(), 200);

        // 200 of 300 held: a second request of 200 waits, unread past its first frame.
        let m = message(195);
        let (mut second, second_held) = budgeted(body_of(vec![data(&m[..50]), data(&m[50..])]), &budget, None);
        assert!(second.frame().now_or_never().is_none(), "admitted beyond the budget");
        assert!(!second.is_end_stream());
        // The semaphore sets the free 100 aside for the first waiter; no request holds them.
        assert_eq!(metrics.in_flight_bytes.get(), 200);
        assert_eq!(second_held.bytes(), 0);

        // A third waits behind it; the client cancels it (the body and its answer are dropped).
        let (mut third, third_held) = budgeted(body_of(vec![data(&message(50))]), &budget, None);
        assert!(third.frame().now_or_never().is_none(), "went ahead of an earlier waiter");
        drop((third, third_held));

        drop((first, first_held));
        assert_eq!(frames(&mut second).await.expect("frames"), m);
        assert_eq!(second_held.bytes(), 200);
        drop((second, second_held));
        assert_eq!(budget.permits.available_permits(), 300);
        assert_eq!(metrics.in_flight_bytes.get(), 0);
        // The second waited; the third was dropped before it got room.
        assert_eq!(sample(&registry, "raftmq_grpc_request_budget_wait_duration_seconds_count").as_deref(), Some("1"));
        assert_eq!(sample(&registry, "raftmq_grpc_request_budget_refused_total").as_deref(), Some("0"));
    }

    #[tokio::test]
    async fn a_request_dropped_halfway_gives_back_what_it_held() {
        let (budget, _, _registry) = budget(1000, 1000);
        let m = [message(100), message(100)].concat();
        let (mut body, held) = budgeted(body_of(vec![data(&m[..50]), data(&m[50..])]), &budget, None);
        assert!(body.frame().await.expect("a frame").is_ok());
        assert_eq!(held.bytes(), 105);
        drop((body, held));
        assert_eq!(budget.permits.available_permits(), 1000);
    }

    #[tokio::test]
    async fn a_wait_ends_before_the_deadline_with_resource_exhausted() {
        let (budget, _, registry) = budget(100, 100);
        let (mut first, _first_held) = budgeted(body_of(vec![data(&message(95))]), &budget, None);
        frames(&mut first).await.expect("frames");
        let due = Instant::now() + Duration::from_millis(200);
        let (mut late, late_held) = budgeted(body_of(vec![data(&message(10))]), &budget, Some(due));
        let refused = frames(&mut late).await.expect_err("refused");
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted, "{refused:?}");
        assert!(refused.message().contains("limits.in_flight_request_bytes_max") && refused.message().contains("nothing was done"));
        assert!(Instant::now() >= due && Instant::now() < due + Duration::from_secs(5), "ended at the deadline");
        assert_eq!(late_held.bytes(), 0);
        assert!(late.frame().await.is_none(), "a refused body ends");
        assert_eq!(sample(&registry, "raftmq_grpc_request_budget_refused_total").as_deref(), Some("1"));
        assert_eq!(sample(&registry, "raftmq_grpc_request_budget_wait_duration_seconds_count").as_deref(), Some("1"));
    }

    #[tokio::test]
    async fn a_request_above_the_largest_is_refused_without_waiting() {
        let (budget, _, _registry) = budget(1000, 105);
        let (mut exact, held) = budgeted(body_of(vec![data(&message(100))]), &budget, None);
        assert_eq!(frames(&mut exact).await.expect("the largest request").len(), 105);
        drop((exact, held));
        let (mut over, held) = budgeted(body_of(vec![data(&message(101)[..5])]), &budget, None);
        let refused = frames(&mut over).await.expect_err("refused");
        assert_eq!(refused.code(), tonic::Code::OutOfRange, "{refused:?}");
        assert!(refused.message().contains("106") && refused.message().contains("105"), "{refused:?}");
        // A second message in one body counts towards the same bound.
        drop((over, held));
        let (mut two, _held) = budgeted(body_of(vec![data(&message(50)), data(&message(50))]), &budget, None);
        assert_eq!(frames(&mut two).await.expect_err("refused").code(), tonic::Code::OutOfRange);
        assert_eq!(budget.permits.available_permits(), 1000 - 55);
    }

    #[tokio::test]
    async fn an_error_of_the_body_passes_through() {
        let (budget, _, _registry) = budget(1000, 1000);
        let m = message(100);
        let (mut body, _held) =
            budgeted(body_of(vec![data(&m[..20]), Err(tonic::Status::data_loss("connection reset")), data(&m[20..])]), &budget, None);
        let e = frames(&mut body).await.expect_err("the error");
        assert_eq!((e.code(), e.message()), (tonic::Code::DataLoss, "connection reset"));
    }

    /// A handler that reads the whole body (as tonic decodes it), drops it, then answers with
    /// the bytes read once told to.
    struct ReadThenWait {
        answer: Option<tokio::sync::oneshot::Receiver<()>>,
    }

    impl<B: Body<Data = Bytes, Error = BoxError> + Unpin + Send + 'static> tower_service::Service<http::Request<B>> for ReadThenWait {
        type Response = usize;
        type Error = Infallible;
        type Future = BoxFuture<'static, Result<usize, Infallible>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: http::Request<B>) -> Self::Future {
            let answer = self.answer.take();
            Box::pin(async move {
                let mut body = request.into_body();
                let read = frames(&mut body).await.expect("frames").len();
                drop(body);
                if let Some(answer) = answer {
                    let _ = answer.await;
                }
                Ok(read)
            })
        }
    }

    /// The layer holds a request's bytes until its answer is complete, after the body is gone.
    #[tokio::test]
    async fn the_layer_holds_the_bytes_until_the_answer() {
        use tower_layer::Layer;
        use tower_service::Service;

        let (budget, metrics, _registry) = budget(1000, 1000);
        let (answer_tx, answer_rx) = tokio::sync::oneshot::channel::<()>();
        let mut service = budget.layer().layer(ReadThenWait { answer: Some(answer_rx) });
        let request = http::Request::builder().header(GRPC_TIMEOUT, "10S").body(body_of(vec![data(&message(300))])).unwrap();
        let answer = tokio::spawn(service.call(request));
        let held = tokio::time::timeout(Duration::from_secs(10), async {
            while metrics.in_flight_bytes.get() != 305 {
                tokio::task::yield_now().await;
            }
        })
        .await;
        assert!(held.is_ok(), "the bytes were never held");
        tokio::task::yield_now().await;
        assert_eq!(budget.permits.available_permits(), 695, "given back before the answer");
        answer_tx.send(()).unwrap();
        assert_eq!(answer.await.unwrap().unwrap(), 305);
        assert_eq!(budget.permits.available_permits(), 1000);
        assert_eq!(metrics.in_flight_bytes.get(), 0);
    }
}
