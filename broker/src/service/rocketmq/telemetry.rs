//! `Telemetry`: the stream on which a client announces its settings and the broker answers with
//! the settings it is to use. Every client created with topics waits for that answer before it
//! starts (Node without a timeout), so every Settings command gets one, of the client's own kind
//! (`../shared/rocketmq-clients.md`, 1-9): an exponential backoff (Node asserts it), the largest
//! body the broker takes (0 would make every send fail in the client), the receive batch and
//! long-polling time consumers use, and metrics off. The stream stays open until the client ends
//! it or the broker stops.

use std::time::Duration;

use futures::StreamExt;
use proto::apache::rocketmq::v2::settings::PubSub;
use proto::apache::rocketmq::v2::{
    ClientType, Code, ExponentialBackoff, Metric, Publishing, RetryPolicy, Settings, Subscription, TelemetryCommand, retry_policy,
    telemetry_command,
};
use tonic::Streaming;

use super::{ResponseStream, ok, status};
use crate::server::Core;

/// Answers a client may have waiting before the stream's reader catches up.
const ANSWERS_QUEUED_MAX: usize = 16;
/// What a consumer asks for at once, and how long its receive waits for messages.
pub(super) const RECEIVE_BATCH_SIZE: i32 = 32;
pub(super) const LONG_POLLING_TIMEOUT: Duration = Duration::from_secs(20);
/// Deliveries of one message before it goes to its consumer group's dead-letter queue:
/// RocketMQ's default, the first and 16 retries.
pub(super) const MAX_DELIVERY_ATTEMPTS: i32 = 17;

pub(super) fn serve(core: &std::sync::Arc<Core>, mut commands: Streaming<TelemetryCommand>) -> ResponseStream<TelemetryCommand> {
    let (answers, answered) = tokio::sync::mpsc::channel(ANSWERS_QUEUED_MAX);
    let core = core.clone();
    tokio::spawn(async move {
        let mut stopping = core.stop.clone();
        loop {
            let command = tokio::select! {
                c = commands.next() => c,
                _ = stopping.wait_for(|s| *s) => None,
            };
            let Some(Ok(command)) = command else { break };
            let Some(answer) = answer(&core, command) else { continue };
            if answers.send(Ok(answer)).await.is_err() {
                break;
            }
        }
    });
    Box::pin(futures::stream::unfold(answered, |mut answered| async move { answered.recv().await.map(|a| (a, answered)) }))
}

/// The answer to one command from a client: its settings as the broker has them; nothing for
/// what answers something the broker sent (none yet).
fn answer(core: &Core, command: TelemetryCommand) -> Option<TelemetryCommand> {
    let telemetry_command::Command::Settings(asked) = command.command? else { return None };
    let kind = asked.client_type.and_then(|t| ClientType::try_from(t).ok()).unwrap_or(ClientType::Unspecified);
    let pub_sub = match kind {
        ClientType::Producer => PubSub::Publishing(Publishing {
            topics: match &asked.pub_sub {
                Some(PubSub::Publishing(p)) => p.topics.clone(),
                _ => vec![],
            },
            max_body_size: i32::try_from(core.options.limits.body_bytes_max).unwrap_or(i32::MAX),
            validate_message_type: true,
        }),
        ClientType::PushConsumer | ClientType::SimpleConsumer | ClientType::PullConsumer => {
            let asked_subscription = match &asked.pub_sub {
                Some(PubSub::Subscription(s)) => s.clone(),
                _ => Subscription::default(),
            };
            PubSub::Subscription(Subscription {
                receive_batch_size: Some(RECEIVE_BATCH_SIZE),
                long_polling_timeout: Some(duration(LONG_POLLING_TIMEOUT)),
                fifo: Some(false),
                ..asked_subscription
            })
        }
        _ => {
            let refused = status(Code::UnrecognizedClientType, format!("client type {:?} is not served", asked.client_type));
            return Some(TelemetryCommand { status: Some(refused), command: None });
        }
    };
    let settings = Settings {
        backoff_policy: Some(backoff(kind, asked.backoff_policy.as_ref())),
        pub_sub: Some(pub_sub),
        metric: Some(Metric { on: false, endpoints: None }),
        client_properties: Default::default(),
        ..asked
    };
    Some(TelemetryCommand { status: Some(ok()), command: Some(telemetry_command::Command::Settings(settings)) })
}

/// A producer keeps its own retries when they are exponential (the only kind Node accepts);
/// a consumer's redeliveries follow the broker's: RocketMQ's attempts, from 10 s doubling to 2 h.
fn backoff(kind: ClientType, asked: Option<&RetryPolicy>) -> RetryPolicy {
    if kind == ClientType::Producer {
        if let Some(p) = asked.filter(|p| matches!(p.strategy, Some(retry_policy::Strategy::ExponentialBackoff(_)))) {
            return p.clone();
        }
        let attempts = asked.map_or(3, |p| p.max_attempts.max(1));
        return exponential(attempts, Duration::from_millis(10), Duration::from_secs(1));
    }
    exponential(MAX_DELIVERY_ATTEMPTS, Duration::from_secs(10), Duration::from_secs(2 * 3600))
}

fn exponential(max_attempts: i32, initial: Duration, max: Duration) -> RetryPolicy {
    let strategy = ExponentialBackoff { initial: Some(duration(initial)), max: Some(duration(max)), multiplier: 2.0 };
    RetryPolicy { max_attempts, strategy: Some(retry_policy::Strategy::ExponentialBackoff(strategy)) }
}

pub(super) fn duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration { seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX), nanos: d.subsec_nanos() as i32 }
}
