//! `bench produce --protocol rocketmq`: the same sends through RocketMQ 5's `MessagingService`,
//! as an official client makes them: the topic's route once (`QueryRoute`), then each send to
//! the broker its queue's route names, with client-made message ids. What the broker does with
//! them is the native send path, so the two protocols' figures side by side measure the adapter.
//!
//! `bench consume --protocol rocketmq` consumes as a SimpleConsumer: `ReceiveMessage` of a
//! batch at the broker a queue's route names, then one `AckMessage` with every receipt of it:
//! two Raft entries per batch, against the native fetch's none.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, bail};
use proto::apache::rocketmq::v2::messaging_service_client::MessagingServiceClient;
use proto::apache::rocketmq::v2::{
    AckMessageEntry, AckMessageRequest, Code, Encoding, Message, MessageQueue, MessageType, QueryRouteRequest, ReceiveMessageRequest,
    Resource, SendMessageRequest, SendMessageResponse, SystemProperties, receive_message_response,
};
use tonic::transport::{Channel, Endpoint};

/// Each queue of a topic and a client of the broker its route names.
pub struct RocketmqRoute {
    topic: Resource,
    clients: HashMap<u32, MessagingServiceClient<Channel>>,
    timeout: Duration,
}

/// What one send came to.
pub enum Outcome {
    Acked,
    /// Refused: nothing was stored.
    Failed(String),
    /// The broker may have stored it (`MASTER_PERSISTENCE_TIMEOUT`, a transport failure).
    Unknown(String),
}

impl RocketmqRoute {
    /// Reads `topic`'s route from the first of `brokers` that answers.
    pub async fn query(brokers: &[String], topic: &str, timeout: Duration) -> anyhow::Result<Self> {
        let resource = Resource { resource_namespace: String::new(), name: topic.to_owned() };
        let mut last_error = None;
        for broker in brokers {
            let mut client = MessagingServiceClient::new(channel(broker)?);
            let mut req = tonic::Request::new(QueryRouteRequest { topic: Some(resource.clone()), endpoints: None });
            req.set_timeout(timeout);
            let route = match client.query_route(req).await {
                Ok(r) => r.into_inner(),
                Err(e) => {
                    last_error = Some(anyhow::anyhow!("{broker}: {e}"));
                    continue;
                }
            };
            let code = route.status.as_ref().map_or(0, |s| s.code);
            if code != Code::Ok as i32 {
                bail!("route of {topic} from {broker}: {:?}", route.status);
            }
            let mut clients = HashMap::new();
            for q in &route.message_queues {
                let address = q.broker.as_ref().and_then(|b| b.endpoints.as_ref()).and_then(|e| e.addresses.first());
                let Some(address) = address else { bail!("queue {} of {topic} has no broker address in its route", q.id) };
                let host = if address.host.contains(':') { format!("[{}]", address.host) } else { address.host.clone() };
                let client = MessagingServiceClient::new(channel(&format!("{host}:{}", address.port))?);
                clients.insert(u32::try_from(q.id).context("queue id")?, client);
            }
            return Ok(Self { topic: resource, clients, timeout });
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("no broker to ask for the route")))
    }

    /// Sends `bodies` (message ids `ids`) to `queue` in one request.
    pub async fn send(&self, queue: u32, ids: Vec<String>, bodies: Vec<Vec<u8>>) -> Outcome {
        let Some(client) = self.clients.get(&queue) else { return Outcome::Failed(format!("queue {queue} is not in the route")) };
        let messages = ids
            .into_iter()
            .zip(bodies)
            .map(|(message_id, body)| Message {
                topic: Some(self.topic.clone()),
                user_properties: HashMap::new(),
                system_properties: Some(SystemProperties {
                    message_id,
                    body_encoding: Encoding::Identity as i32,
                    message_type: MessageType::Normal as i32,
                    queue_id: i32::try_from(queue).unwrap_or(i32::MAX),
                    ..SystemProperties::default()
                }),
                body: body.into(),
            })
            .collect();
        let mut req = tonic::Request::new(SendMessageRequest { messages });
        req.set_timeout(self.timeout);
        match client.clone().send_message(req).await {
            Ok(r) => outcome(r.into_inner()),
            Err(e) => Outcome::Unknown(format!("send to queue {queue}: {e}")),
        }
    }
}

/// What one receive and its ack came to.
pub enum Received {
    /// The messages' body lengths; every one acknowledged.
    Acked(Vec<usize>),
    /// Nothing to receive within the long poll.
    Nothing,
    /// The receive or the ack failed (the messages come again once visible).
    Failed(String),
}

impl RocketmqRoute {
    /// Receives up to `batch` messages of `queue` for `group` (invisible 60 s, long-polling
    /// `wait`), processes them (`pause_per_message` each), then acknowledges all of them in one
    /// request.
    pub async fn receive_and_ack(&self, queue: u32, group: &str, batch: i32, wait: Duration, pause_per_message: Duration) -> Received {
        let Some(client) = self.clients.get(&queue) else { return Received::Failed(format!("queue {queue} is not in the route")) };
        let group = Resource { resource_namespace: String::new(), name: group.to_owned() };
        let duration = |d: Duration| prost_types::Duration { seconds: d.as_secs() as i64, nanos: d.subsec_nanos() as i32 };
        let mut req = tonic::Request::new(ReceiveMessageRequest {
            group: Some(group.clone()),
            message_queue: Some(MessageQueue { topic: Some(self.topic.clone()), id: queue as i32, ..MessageQueue::default() }),
            filter_expression: None,
            batch_size: batch,
            invisible_duration: Some(duration(Duration::from_secs(60))),
            auto_renew: false,
            long_polling_timeout: Some(duration(wait)),
            attempt_id: None,
        });
        req.set_timeout(self.timeout + wait);
        let mut stream = match client.clone().receive_message(req).await {
            Ok(r) => r.into_inner(),
            Err(e) => return Received::Failed(format!("receive from queue {queue}: {e}")),
        };
        let (mut code, mut entries, mut sizes) = (0, Vec::new(), Vec::new());
        loop {
            match stream.message().await {
                Ok(Some(item)) => match item.content {
                    Some(receive_message_response::Content::Status(s)) => code = s.code,
                    Some(receive_message_response::Content::Message(m)) => {
                        let p = m.system_properties.unwrap_or_default();
                        sizes.push(m.body.len());
                        entries.push(AckMessageEntry {
                            message_id: p.message_id,
                            receipt_handle: p.receipt_handle.unwrap_or_default(),
                            lite_topic: None,
                        });
                    }
                    _ => {}
                },
                Ok(None) => break,
                Err(e) => return Received::Failed(format!("receive from queue {queue}: {e}")),
            }
        }
        if code == Code::MessageNotFound as i32 {
            return Received::Nothing;
        }
        if code != Code::Ok as i32 {
            return Received::Failed(format!("receive from queue {queue}: code {code}"));
        }
        if !pause_per_message.is_zero() {
            tokio::time::sleep(pause_per_message.saturating_mul(u32::try_from(entries.len()).unwrap_or(u32::MAX))).await;
        }
        let mut ack = tonic::Request::new(AckMessageRequest { group: Some(group), topic: Some(self.topic.clone()), entries });
        ack.set_timeout(self.timeout);
        match client.clone().ack_message(ack).await {
            Ok(r) if r.get_ref().status.as_ref().is_some_and(|s| s.code == Code::Ok as i32) => Received::Acked(sizes),
            Ok(r) => Received::Failed(format!("ack on queue {queue}: {:?}", r.into_inner().status)),
            Err(e) => Received::Failed(format!("ack on queue {queue}: {e}")),
        }
    }
}

fn outcome(r: SendMessageResponse) -> Outcome {
    let status = r.status.unwrap_or_default();
    match Code::try_from(status.code) {
        Ok(Code::Ok) => Outcome::Acked,
        Ok(Code::MasterPersistenceTimeout | Code::InternalServerError | Code::InternalError) => {
            Outcome::Unknown(format!("{}: {}", status.code, status.message))
        }
        _ => Outcome::Failed(format!("{}: {}", status.code, status.message)),
    }
}

fn channel(host_port: &str) -> anyhow::Result<Channel> {
    Ok(Endpoint::from_shared(format!("http://{host_port}"))
        .with_context(|| format!("endpoint {host_port:?}"))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(2))
        .connect_lazy())
}
