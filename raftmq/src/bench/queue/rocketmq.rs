//! `bench produce --protocol rocketmq`: the same sends through RocketMQ 5's `MessagingService`,
//! as an official client makes them: the topic's route once (`QueryRoute`), then each send to
//! the broker its queue's route names, with client-made message ids. What the broker does with
//! them is the native send path, so the two protocols' figures side by side measure the adapter.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, bail};
use proto::apache::rocketmq::v2::messaging_service_client::MessagingServiceClient;
use proto::apache::rocketmq::v2::{
    Code, Encoding, Message, MessageType, QueryRouteRequest, Resource, SendMessageRequest, SendMessageResponse, SystemProperties,
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
