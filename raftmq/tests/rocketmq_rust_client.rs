//! The official RocketMQ 5 Rust client (crates.io `rocketmq`) against a cluster of real brokers,
//! unchanged but for its endpoint; and the bad input it would catch itself, sent as raw
//! `MessagingService` requests so that the broker's own checks answer.

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use proto::apache::rocketmq::v2::messaging_service_client::MessagingServiceClient;
use proto::apache::rocketmq::v2::{
    self as v2, AddressScheme, Code as MqCode, Encoding, FilterExpression, FilterType, GetOffsetRequest, MessageType, Permission,
    PullMessageRequest, QueryOffsetPolicy, QueryOffsetRequest, QueryRouteRequest, ReceiveMessageRequest, SendMessageRequest,
    SystemProperties, UpdateOffsetRequest, pull_message_response, receive_message_response,
};
use proto::raftmq::v1::status::Code;
use proto::raftmq::v1::{FetchRequest, StoredMessage, Topic};
use rocketmq::conf::{ClientOption, ProducerOption, SimpleConsumerOption};
use rocketmq::model::common::{FilterExpression as ClientFilter, FilterType as ClientFilterType};
use rocketmq::model::message::{MessageBuilder, MessageView};
use rocketmq::{Producer, SimpleConsumer};
use support::rocketmq::*;
use support::{Cluster, code, queue_client};
use tonic::Request;
use tonic::transport::Channel;

async fn producer(cluster: &Cluster, topics: &[&str]) -> Producer {
    let mut producer_option = ProducerOption::default();
    producer_option.set_topics(topics.to_vec());
    let mut client_option = ClientOption::default();
    client_option.set_access_url(cluster.brokers[0].client_addr().to_string());
    client_option.set_enable_tls(false);
    client_option.set_timeout(Duration::from_secs(10));
    let mut producer = Producer::new(producer_option, client_option).expect("producer");
    producer.start().await.expect("the producer starts: routes and settings answered");
    producer
}

/// Every message of every queue of `topic`, read through the native API from one replica:
/// queue -> messages.
async fn read_all(cluster: &Cluster, topic: &str, queues: u32) -> BTreeMap<u32, Vec<StoredMessage>> {
    let mut queue = queue_client(cluster.brokers[1].client_addr());
    let mut all = BTreeMap::new();
    for q in 0..queues {
        let req = FetchRequest { topic: topic.into(), queue_id: q, offset: 0, max_messages: 1000, ..Default::default() };
        let r = queue.fetch(req).await.expect("fetch").into_inner();
        assert_eq!(code(&r.status), Code::Ok, "{:?}", r.status);
        all.insert(q, r.messages);
    }
    all
}

/// [`read_all`] once it holds `count` messages: a replica that is a follower applies what was
/// acknowledged a moment later. Panics after a deadline with what it holds.
async fn read_count(cluster: &Cluster, topic: &str, queues: u32, count: usize) -> BTreeMap<u32, Vec<StoredMessage>> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let all = read_all(cluster, topic, queues).await;
        let held = all.values().map(Vec::len).sum::<usize>();
        if held >= count || Instant::now() > deadline {
            assert_eq!(held, count, "messages of {topic} read back");
            return all;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_rust_producer_sends_normal_and_batch_messages_that_read_back_whole() {
    let cluster = Cluster::start(3, FAST_RAFT).await;
    cluster.create_topic(topic("orders", 4, NORMAL)).await;
    let producer = producer(&cluster, &["orders"]).await;

    let mut sent = HashMap::new();
    for i in 0..20 {
        let message = MessageBuilder::builder()
            .set_topic("orders")
            .set_tag(format!("Tag{}", i % 3))
            .set_keys(vec![format!("order-{i}")])
            .set_properties(HashMap::from([("amount", format!("{}", i * 100))]))
            .set_body(format!("order {i}").into_bytes())
            .build()
            .expect("message");
        let receipt = producer.send(message).await.expect("sent");
        sent.insert(receipt.message_id().to_owned(), i);
    }
    let batch: Vec<_> = (20..24)
        .map(|i| MessageBuilder::builder().set_topic("orders").set_body(format!("order {i}").into_bytes()).build().expect("message"))
        .collect();
    for (receipt, i) in producer.batch_send(batch).await.expect("batch sent").iter().zip(20..) {
        sent.insert(receipt.message_id().to_owned(), i);
    }
    assert_eq!(sent.len(), 24, "every receipt has its own message id");

    let stored = read_count(&cluster, "orders", 4, 24).await;
    let mut seen = 0;
    for m in stored.values().flatten() {
        let i = *sent.get(&m.message_id).unwrap_or_else(|| panic!("stored message {} was never sent", m.message_id));
        let body = &m.message.as_ref().expect("message").body;
        assert_eq!(body.as_ref(), format!("order {i}").as_bytes(), "the body of message {i}");
        if i < 20 {
            let message = m.message.as_ref().expect("message");
            assert_eq!(message.tag.as_deref(), Some(format!("Tag{}", i % 3).as_str()));
            assert_eq!(message.keys, vec![format!("order-{i}")]);
            assert_eq!(message.properties.get("amount").map(String::as_str), Some(format!("{}", i * 100).as_str()));
        }
        seen += 1;
    }
    assert_eq!(seen, 24, "every acknowledged message is stored once");
    // The batch went to one queue, at consecutive offsets: one entry.
    let batch_places: Vec<(u32, u64)> = stored
        .iter()
        .flat_map(|(q, ms)| ms.iter().filter(|m| sent.get(&m.message_id).is_some_and(|i| *i >= 20)).map(move |m| (*q, m.offset)))
        .collect();
    assert_eq!(batch_places.len(), 4);
    assert!(batch_places.iter().all(|(q, _)| *q == batch_places[0].0), "one queue: {batch_places:?}");
    assert!(batch_places.windows(2).all(|w| w[1].1 == w[0].1 + 1), "consecutive offsets: {batch_places:?}");
    producer.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifo_messages_of_one_group_land_in_one_queue_in_send_order() {
    let cluster = Cluster::start(3, FAST_RAFT).await;
    cluster.create_topic(topic("ledger", 4, FIFO)).await;
    let producer = producer(&cluster, &["ledger"]).await;
    let groups = ["account-1", "account-2", "account-3", "account-4", "account-5"];
    for seq in 0..10 {
        for g in groups {
            let message = MessageBuilder::fifo_message_builder("ledger", format!("{g}:{seq}").into_bytes(), g).build().expect("message");
            producer.send(message).await.expect("sent");
        }
    }
    let stored = read_count(&cluster, "ledger", 4, 50).await;
    for g in groups {
        let queues: Vec<u32> = stored
            .iter()
            .filter(|(_, ms)| ms.iter().any(|m| m.message.as_ref().and_then(|m| m.message_group.as_deref()) == Some(g)))
            .map(|(q, _)| *q)
            .collect();
        assert_eq!(queues.len(), 1, "group {g} is in queues {queues:?}");
        let bodies: Vec<String> = stored[&queues[0]]
            .iter()
            .filter_map(|m| m.message.as_ref())
            .filter(|m| m.message_group.as_deref() == Some(g))
            .map(|m| String::from_utf8_lossy(&m.body).into_owned())
            .collect();
        let expected: Vec<String> = (0..10).map(|seq| format!("{g}:{seq}")).collect();
        assert_eq!(bodies, expected, "group {g} in send order");
    }
    producer.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn routes_name_every_queue_on_a_reachable_master_broker() {
    let cluster = Cluster::start(3, FAST_RAFT).await;
    cluster.create_topic(topic("routed", 4, FIFO)).await;
    let mut client = raw_client(&cluster, 2).await;
    let r = client.query_route(QueryRouteRequest { topic: resource("routed"), endpoints: None }).await.expect("route").into_inner();
    assert_eq!(r.status.as_ref().map(|s| s.code), Some(MqCode::Ok as i32), "{:?}", r.status);
    let ids: Vec<i32> = r.message_queues.iter().map(|q| q.id).collect();
    assert_eq!(ids, [0, 1, 2, 3]);
    let addresses: Vec<String> = cluster.brokers.iter().map(|b| b.client_addr().ip().to_string()).collect();
    for q in &r.message_queues {
        let broker = q.broker.as_ref().expect("broker");
        assert_eq!((broker.id, q.permission), (0, Permission::ReadWrite as i32), "{q:?}");
        assert_eq!(q.accept_message_types, [MessageType::Fifo as i32]);
        let endpoints = broker.endpoints.as_ref().expect("endpoints");
        assert_eq!(endpoints.scheme, AddressScheme::IPv4 as i32);
        assert!(addresses.contains(&endpoints.addresses[0].host), "{endpoints:?} is not a broker's address");
    }
    // A push consumer is assigned every queue, each where its route says.
    let assign = |group: &str| v2::QueryAssignmentRequest { topic: resource("routed"), group: resource(group), endpoints: None };
    let assigned = client.query_assignment(assign("pushers")).await.expect("assignment").into_inner();
    assert_eq!(assigned.status.as_ref().map(|s| s.code), Some(MqCode::Ok as i32), "{:?}", assigned.status);
    let queues: Vec<_> = assigned.assignments.into_iter().filter_map(|a| a.message_queue).collect();
    // The same queues as the route (their leaders may have moved in between: not compared).
    let ids: Vec<(i32, i32)> = queues.iter().map(|q| (q.id, q.permission)).collect();
    assert_eq!(ids, r.message_queues.iter().map(|q| (q.id, q.permission)).collect::<Vec<_>>(), "the assignment is the route's queues");
    let bad = client.query_assignment(assign("no spaces")).await.expect("assignment").into_inner();
    assert_eq!(bad.status.map(|s| s.code), Some(MqCode::IllegalConsumerGroup as i32));
    let missing = client.query_route(QueryRouteRequest { topic: resource("absent"), endpoints: None }).await.expect("route").into_inner();
    assert_eq!(missing.status.map(|s| s.code), Some(MqCode::TopicNotFound as i32));
    let illegal =
        client.query_route(QueryRouteRequest { topic: resource("bad topic"), endpoints: None }).await.expect("route").into_inner();
    assert_eq!(illegal.status.map(|s| s.code), Some(MqCode::IllegalTopic as i32));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_sends_are_refused_with_their_codes_and_store_nothing() {
    let cluster = cluster_with(&[topic("plain", 1, NORMAL), topic("later", 1, DELAY)]).await;
    let mut client = raw_client(&cluster, 1).await;
    let limit = 4 << 20;
    let with = |f: &dyn Fn(&mut v2::Message)| {
        let mut m = raw_message("plain", "id-bad", b"x".to_vec());
        f(&mut m);
        m
    };
    let cases: Vec<(&str, v2::Message, MqCode)> = vec![
        ("body over the limit", raw_message("plain", "id-big", vec![0; limit + 1]), MqCode::MessageBodyTooLarge),
        ("unknown topic", raw_message("absent", "id-absent", b"x".to_vec()), MqCode::TopicNotFound),
        ("illegal topic", raw_message("no/slash", "id-slash", b"x".to_vec()), MqCode::IllegalTopic),
        ("no message id", with(&|m| m.system_properties.as_mut().unwrap().message_id.clear()), MqCode::IllegalMessageId),
        (
            "tag with a filter's syntax",
            with(&|m| m.system_properties.as_mut().unwrap().tag = Some("a||b".into())),
            MqCode::IllegalMessageTag,
        ),
        (
            "properties over the limit",
            with(&|m| {
                m.user_properties.insert("big".into(), "v".repeat(16 << 10));
            }),
            MqCode::MessagePropertiesTooLarge,
        ),
        (
            "FIFO message on a normal topic",
            with(&|m| {
                let p = m.system_properties.as_mut().unwrap();
                p.message_type = MessageType::Fifo as i32;
                p.message_group = Some("g".into());
            }),
            MqCode::MessagePropertyConflictWithType,
        ),
        (
            "delay message on a delay topic",
            {
                let mut m = raw_message("later", "id-later", b"x".to_vec());
                let p = m.system_properties.as_mut().unwrap();
                p.message_type = MessageType::Delay as i32;
                p.delivery_timestamp = Some(prost_types::Timestamp { seconds: 4_000_000_000, nanos: 0 });
                m
            },
            MqCode::NotImplemented,
        ),
    ];
    for (what, message, expected) in cases {
        let r = client.send_message(SendMessageRequest { messages: vec![message] }).await.expect("answered").into_inner();
        assert_eq!(r.status.as_ref().map(|s| s.code), Some(expected as i32), "{what}: {:?}", r.status);
        assert_eq!(r.entries.len(), 1, "{what}: one entry per message");
        assert_eq!(r.entries[0].status.as_ref().map(|s| s.code), Some(expected as i32), "{what}: the entry says it too");
    }
    assert!(read_all(&cluster, "plain", 1).await[&0].is_empty(), "nothing refused was stored");

    // A full batch: 256 messages (limits.messages_per_send_max) stored, one more refused whole.
    let batch = |n: usize| (0..n).map(|i| raw_message("plain", &format!("id-batch-{n}-{i}"), b"b".to_vec())).collect::<Vec<_>>();
    let over = client.send_message(SendMessageRequest { messages: batch(257) }).await.expect("answered").into_inner();
    assert_eq!(over.status.as_ref().map(|s| s.code), Some(MqCode::BadRequest as i32), "{:?}", over.status);
    assert_eq!(over.entries.len(), 257, "one entry per message");
    assert!(read_all(&cluster, "plain", 1).await[&0].is_empty(), "nothing of the refused batch was stored");

    // At the limit: stored.
    let r = client
        .send_message(SendMessageRequest { messages: vec![raw_message("plain", "id-at-limit", vec![7; limit])] })
        .await
        .expect("answered")
        .into_inner();
    assert_eq!(r.status.as_ref().map(|s| s.code), Some(MqCode::Ok as i32), "{:?}", r.status);
    assert_eq!((r.entries[0].message_id.as_str(), r.entries[0].offset), ("id-at-limit", 0));
    let full = client.send_message(SendMessageRequest { messages: batch(256) }).await.expect("answered").into_inner();
    assert_eq!(full.status.as_ref().map(|s| s.code), Some(MqCode::Ok as i32), "{:?}", full.status);
    let offsets: Vec<i64> = full.entries.iter().map(|e| e.offset).collect();
    assert_eq!(offsets, (1..=256).collect::<Vec<i64>>(), "a full batch, in order, after the body at the limit");
    let stored = read_count(&cluster, "plain", 1, 257).await;
    assert_eq!(stored[&0][0].message.as_ref().map(|m| m.body.len()), Some(limit));
}

/// A pull's stream: its status code, the messages, and where the next pull starts.
async fn pull(client: &mut MessagingServiceClient<Channel>, req: PullMessageRequest) -> (i32, Vec<v2::Message>, Option<i64>) {
    let mut stream = client.pull_message(req).await.expect("pull").into_inner();
    let (mut code, mut messages, mut next) = (0, vec![], None);
    while let Some(item) = stream.message().await.expect("stream") {
        match item.content.expect("content") {
            pull_message_response::Content::Status(s) => code = s.code,
            pull_message_response::Content::Message(m) => messages.push(m),
            pull_message_response::Content::NextOffset(o) => next = Some(o),
        }
    }
    (code, messages, next)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pull_consumer_reads_filters_and_keeps_its_offset() {
    let cluster = Cluster::start(3, FAST_RAFT).await;
    cluster.create_topic(topic("pulled", 1, NORMAL)).await;
    let mut client = raw_client(&cluster, 2).await;
    let mut messages = Vec::new();
    for (i, tag) in ["A", "B", "A", "C", "A"].iter().enumerate() {
        let mut m = raw_message("pulled", &format!("id-{i}"), if i == 0 { b"hello".to_vec() } else { format!("m{i}").into_bytes() });
        m.system_properties.as_mut().unwrap().tag = Some((*tag).into());
        m.user_properties.insert("n".into(), i.to_string());
        messages.push(m);
    }
    let sent = client.send_message(SendMessageRequest { messages }).await.expect("send").into_inner();
    assert_eq!(sent.status.map(|s| s.code), Some(MqCode::Ok as i32));

    let query = |policy: QueryOffsetPolicy| QueryOffsetRequest {
        message_queue: message_queue("pulled", 0),
        query_offset_policy: policy as i32,
        timestamp: None,
    };
    let begin = client.query_offset(query(QueryOffsetPolicy::Beginning)).await.expect("query").into_inner();
    let end = client.query_offset(query(QueryOffsetPolicy::End)).await.expect("query").into_inner();
    assert_eq!((begin.offset, end.offset), (0, 5), "{:?} {:?}", begin.status, end.status);

    let group = resource("pullers");
    let tags_a = Some(FilterExpression { r#type: FilterType::Tag as i32, expression: "A".into() });
    let req = |offset: i64, filter: Option<FilterExpression>, wait_ms: u64| PullMessageRequest {
        group: group.clone(),
        message_queue: message_queue("pulled", 0),
        offset,
        batch_size: 10,
        filter_expression: filter,
        long_polling_timeout: Some(prost_types::Duration { seconds: 0, nanos: (wait_ms * 1_000_000) as i32 }),
    };
    // Any replica serves a pull: every broker gives the same answer.
    for broker in 0..3 {
        let mut c = raw_client(&cluster, broker).await;
        let deadline = Instant::now() + Duration::from_secs(20);
        let (code, pulled, next) = loop {
            let got = pull(&mut c, req(0, tags_a.clone(), 0)).await;
            if got.1.len() == 3 || Instant::now() > deadline {
                break got;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!((code, next), (MqCode::Ok as i32, Some(5)), "broker {broker}");
        let ids: Vec<&str> = pulled.iter().map(|m| m.system_properties.as_ref().unwrap().message_id.as_str()).collect();
        assert_eq!(ids, ["id-0", "id-2", "id-4"], "only tag A, in order, from broker {broker}");
        let first = pulled[0].system_properties.as_ref().unwrap();
        assert_eq!(first.body_digest.as_ref().map(|d| d.checksum.as_str()), Some("5D41402ABC4B2A76B9719D911017C592"), "MD5 of hello");
        assert_eq!((first.queue_offset, first.delivery_attempt, first.body_encoding), (Some(0), Some(1), Encoding::Identity as i32));
        assert_eq!(pulled[0].topic, resource("pulled"));
    }
    // At the end, a pull waits its long-polling time and answers with no message.
    let started = Instant::now();
    let (code, pulled, next) = pull(&mut client, req(5, None, 300)).await;
    assert_eq!((code, pulled.len(), next), (MqCode::Ok as i32, 0, Some(5)));
    assert!(started.elapsed() >= Duration::from_millis(250), "answered after {:?}", started.elapsed());
    // SQL92 over user properties and the tag, evaluated on the broker.
    let sql = Some(FilterExpression { r#type: FilterType::Sql as i32, expression: "n >= 2 AND TAGS IN ('A', 'C')".into() });
    let (code, pulled, next) = pull(&mut client, req(0, sql, 0)).await;
    let ids: Vec<&str> = pulled.iter().map(|m| m.system_properties.as_ref().unwrap().message_id.as_str()).collect();
    assert_eq!((code, ids, next), (MqCode::Ok as i32, vec!["id-2", "id-3", "id-4"], Some(5)));
    let bad = Some(FilterExpression { r#type: FilterType::Sql as i32, expression: "n >= ".into() });
    assert_eq!(pull(&mut client, req(0, bad, 0)).await.0, MqCode::IllegalFilterExpression as i32);

    let get = || GetOffsetRequest { group: group.clone(), message_queue: message_queue("pulled", 0) };
    let none = client.get_offset(get()).await.expect("get").into_inner();
    assert_eq!(none.status.map(|s| s.code), Some(MqCode::OffsetNotFound as i32));
    let update = |offset| UpdateOffsetRequest { group: group.clone(), message_queue: message_queue("pulled", 0), offset };
    let r = client.update_offset(update(3)).await.expect("update").into_inner();
    assert_eq!(r.status.as_ref().map(|s| s.code), Some(MqCode::Ok as i32), "{:?}", r.status);
    let got = client.get_offset(get()).await.expect("get").into_inner();
    assert_eq!((got.status.map(|s| s.code), got.offset), (Some(MqCode::Ok as i32), 3));
    let back = client.update_offset(update(2)).await.expect("update").into_inner();
    assert_eq!(back.status.map(|s| s.code), Some(MqCode::IllegalOffset as i32), "offsets never move back");
    let bad_queue = UpdateOffsetRequest { group: group.clone(), message_queue: message_queue("pulled", 7), offset: 1 };
    let r = client.update_offset(bad_queue).await.expect("update").into_inner();
    assert_eq!(r.status.map(|s| s.code), Some(MqCode::BadRequest as i32));

    // By time: the first offset stored at or after a moment. The leader stamps store times in
    // ms, so the second wave is sent once the clock has passed the moment asked about.
    let since_epoch = |t: std::time::SystemTime| t.duration_since(std::time::UNIX_EPOCH).expect("after 1970");
    let between = since_epoch(std::time::SystemTime::now()) + Duration::from_millis(1);
    while since_epoch(std::time::SystemTime::now()) <= between {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let later = vec![raw_message("pulled", "id-5", b"later".to_vec()), raw_message("pulled", "id-6", b"later".to_vec())];
    let sent = client.send_message(SendMessageRequest { messages: later }).await.expect("send").into_inner();
    assert_eq!(sent.status.map(|s| s.code), Some(MqCode::Ok as i32));
    let at = |d: Duration| QueryOffsetRequest {
        message_queue: message_queue("pulled", 0),
        query_offset_policy: QueryOffsetPolicy::Timestamp as i32,
        timestamp: Some(prost_types::Timestamp { seconds: d.as_secs() as i64, nanos: d.subsec_nanos() as i32 }),
    };
    let offset_at = |r: v2::QueryOffsetResponse| (r.status.map(|s| s.code), r.offset);
    let ok = Some(MqCode::Ok as i32);
    assert_eq!(offset_at(client.query_offset(at(Duration::ZERO)).await.expect("query").into_inner()), (ok, 0));
    assert_eq!(offset_at(client.query_offset(at(between)).await.expect("query").into_inner()), (ok, 5));
    let future = between + Duration::from_secs(3600);
    assert_eq!(offset_at(client.query_offset(at(future)).await.expect("query").into_inner()), (ok, 7), "past the end: the end");
}

/// A batch of normal messages goes to one queue in one entry, even at a broker that leads none
/// of the topic's queues and whatever queue the client named (Node and Python name queue 0).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_of_normal_messages_goes_to_one_queue_at_any_broker() {
    let cluster = Cluster::start(3, FAST_RAFT).await;
    cluster.create_topic(topic("spread", 2, NORMAL)).await;
    let mut leaders = Vec::new();
    for queue in 0..2 {
        let deadline = Instant::now() + Duration::from_secs(30);
        let leader = loop {
            let mut admin = cluster.brokers[0].admin().await;
            let r = admin.describe_topic(proto::raftmq::v1::DescribeTopicRequest { name: "spread".into() }).await.expect("describe");
            let l = r.into_inner().queues.get(queue).map_or(0, |q| q.leader_broker_id);
            if l != 0 || Instant::now() > deadline {
                break l;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        leaders.push(leader);
    }
    // Every broker takes the batch: one leading a queue, and (when there is one) one leading none.
    for broker in 0..3usize {
        let mut client = raw_client(&cluster, broker).await;
        let batch = (0..4).map(|i| raw_message("spread", &format!("b{broker}-{i}"), b"x".to_vec())).collect();
        let r = client.send_message(SendMessageRequest { messages: batch }).await.expect("send").into_inner();
        assert_eq!(r.status.as_ref().map(|s| s.code), Some(MqCode::Ok as i32), "{:?}", r.status);
        let offsets: Vec<i64> = r.entries.iter().map(|e| e.offset).collect();
        assert!(offsets.windows(2).all(|w| w[1] == w[0] + 1), "broker {} (leaders {leaders:?}): offsets {offsets:?}", broker + 1);
        let stored = read_count(&cluster, "spread", 2, 4 * (broker + 1)).await;
        let queues: Vec<u32> =
            stored.iter().filter(|(_, ms)| ms.iter().any(|m| m.message_id.starts_with(&format!("b{broker}-")))).map(|(q, _)| *q).collect();
        assert_eq!(queues.len(), 1, "broker {}'s batch landed in queues {queues:?}", broker + 1);
    }
}

/// `message` with the `x-mq-namespace` header naming `namespace`.
fn in_namespace<T>(namespace: &str, message: T) -> Request<T> {
    let mut r = Request::new(message);
    r.metadata_mut().insert("x-mq-namespace", namespace.parse().expect("header value"));
    r
}

/// Requests whose namespace comes from the `x-mq-namespace` header reach that namespace's topic
/// and consumer group through every broker, the ones that forward to the queue's leader
/// included; the topic of the same name outside the namespace is never touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_in_a_header_namespace_reach_it_through_every_broker() {
    let cluster = cluster_with(&[topic("shop%orders", 1, NORMAL), topic("orders", 1, NORMAL)]).await;
    let group = resource("billing");
    let offset_of = |r: v2::GetOffsetResponse| (r.status.map_or(0, |s| s.code), r.offset);
    for b in 0..3usize {
        let mut client = raw_client(&cluster, b).await;
        let message = raw_message("orders", &format!("via-{b}"), b"x".to_vec());
        let sent = client.send_message(in_namespace("shop", SendMessageRequest { messages: vec![message] })).await.expect("send");
        assert_eq!(sent.into_inner().status.map(|s| s.code), Some(MqCode::Ok as i32), "send via broker {}", b + 1);

        let end = QueryOffsetRequest {
            message_queue: message_queue("orders", 0),
            query_offset_policy: QueryOffsetPolicy::End as i32,
            timestamp: None,
        };
        let r = client.query_offset(in_namespace("shop", end.clone())).await.expect("query").into_inner();
        assert_eq!((r.status.map(|s| s.code), r.offset), (Some(MqCode::Ok as i32), b as i64 + 1), "shop%orders' end via broker {}", b + 1);
        let r = client.query_offset(end).await.expect("query").into_inner();
        assert_eq!((r.status.map(|s| s.code), r.offset), (Some(MqCode::Ok as i32), 0), "orders outside the namespace stays empty");

        let update = UpdateOffsetRequest { group: group.clone(), message_queue: message_queue("orders", 0), offset: b as i64 + 1 };
        let r = client.update_offset(in_namespace("shop", update)).await.expect("update").into_inner();
        assert_eq!(r.status.map(|s| s.code), Some(MqCode::Ok as i32), "offset update via broker {}", b + 1);
        let get = GetOffsetRequest { group: group.clone(), message_queue: message_queue("orders", 0) };
        for reader in 0..3usize {
            let mut other = raw_client(&cluster, reader).await;
            let got = other.get_offset(in_namespace("shop", get.clone())).await.expect("get").into_inner();
            assert_eq!(offset_of(got), (MqCode::Ok as i32, b as i64 + 1), "set via broker {}, read via broker {}", b + 1, reader + 1);
        }
        let outside = client.get_offset(get).await.expect("get").into_inner();
        assert_eq!(offset_of(outside).0, MqCode::OffsetNotFound as i32, "billing has no offset on orders outside the namespace");
    }
    let stored = read_count(&cluster, "shop%orders", 1, 3).await;
    let ids: Vec<&str> = stored[&0].iter().map(|m| m.message_id.as_str()).collect();
    assert_eq!(ids, ["via-0", "via-1", "via-2"]);
}

/// A pull through a broker without a replica of the queue is forwarded, and may wait its whole
/// long-polling time there (longer than a forward's own 10 s deadline).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_forwarded_pull_waits_its_whole_long_poll() {
    let cluster = Cluster::start(3, FAST_RAFT).await;
    cluster.create_topic(Topic { replication_factor: 2, ..topic("pair", 1, NORMAL) }).await;
    let mut admin = cluster.brokers[0].admin().await;
    let described = admin.describe_topic(proto::raftmq::v1::DescribeTopicRequest { name: "pair".into() }).await.expect("describe");
    let replicas = described.into_inner().queues[0].replica_broker_ids.clone();
    let outsider = (1..=3u64).find(|b| !replicas.contains(b)).expect("a broker without a replica");
    // The queue must have a leader first: a pull before it is answered HA_NOT_AVAILABLE.
    cluster.leader_of_first_queue("pair").await;
    let mut client = raw_client(&cluster, usize::try_from(outsider).expect("id") - 1).await;
    let wait = Duration::from_secs(11);
    let req = PullMessageRequest {
        group: resource("waiters"),
        message_queue: message_queue("pair", 0),
        offset: 0,
        batch_size: 10,
        filter_expression: None,
        long_polling_timeout: Some(prost_types::Duration { seconds: wait.as_secs() as i64, nanos: 0 }),
    };
    let started = Instant::now();
    let (code, pulled, next) = pull(&mut client, req).await;
    assert_eq!((code, pulled.len(), next), (MqCode::Ok as i32, 0, Some(0)), "after {:?}", started.elapsed());
    assert!(started.elapsed() >= wait - Duration::from_secs(1), "answered after {:?}", started.elapsed());
}

/// Each bound on what a message carries beside its body: at the limit stored, one byte over
/// refused with its code and nothing stored. Message id 128 bytes, message group 64, born host
/// 255, trace context 1,024; and a filter expression of 4 KiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn message_fields_at_their_limits_are_stored_and_one_byte_over_refused() {
    let cluster = cluster_with(&[topic("bounded", 1, NORMAL), topic("bounded-fifo", 1, FIFO)]).await;
    let mut client = raw_client(&cluster, 0).await;
    let send = |topic: &str, n: usize, set: &dyn Fn(&mut SystemProperties, usize)| {
        let mut m = raw_message(topic, &format!("id-{topic}-{n}"), b"x".to_vec());
        set(m.system_properties.as_mut().unwrap(), n);
        SendMessageRequest { messages: vec![m] }
    };
    type Setter = fn(&mut SystemProperties, usize);
    let cases: [(&str, usize, MqCode, Setter); 4] = [
        ("bounded", 128, MqCode::IllegalMessageId, |p, n| p.message_id = "i".repeat(n)),
        ("bounded-fifo", 64, MqCode::IllegalMessageGroup, |p, n| {
            p.message_type = MessageType::Fifo as i32;
            p.message_group = Some("g".repeat(n));
        }),
        ("bounded", 255, MqCode::BadRequest, |p, n| p.born_host = "h".repeat(n)),
        ("bounded", 1024, MqCode::BadRequest, |p, n| p.trace_context = Some("t".repeat(n))),
    ];
    let mut stored = BTreeMap::<&str, usize>::new();
    for (topic, limit, code, set) in cases {
        let at = client.send_message(send(topic, limit, &set)).await.expect("answered").into_inner();
        assert_eq!(at.status.as_ref().map(|s| s.code), Some(MqCode::Ok as i32), "{topic} at {limit}: {:?}", at.status);
        *stored.entry(topic).or_default() += 1;
        let over = client.send_message(send(topic, limit + 1, &set)).await.expect("answered").into_inner();
        assert_eq!(over.status.as_ref().map(|s| s.code), Some(code as i32), "{topic} at {}: {:?}", limit + 1, over.status);
    }
    assert_eq!(read_count(&cluster, "bounded", 1, stored["bounded"]).await[&0].len(), 3, "only the messages at the limits");
    assert_eq!(read_count(&cluster, "bounded-fifo", 1, 1).await[&0].len(), 1);

    let expression = |len: usize| {
        let text = format!("a = '{}'", "x".repeat(len - 6));
        Some(FilterExpression { r#type: FilterType::Sql as i32, expression: text })
    };
    let pull_with = |filter| PullMessageRequest {
        group: resource("limits"),
        message_queue: message_queue("bounded", 0),
        offset: 0,
        batch_size: 10,
        filter_expression: filter,
        long_polling_timeout: None,
    };
    assert_eq!(pull(&mut client, pull_with(expression(4096))).await.0, MqCode::Ok as i32, "a 4 KiB expression");
    assert_eq!(pull(&mut client, pull_with(expression(4097))).await.0, MqCode::IllegalFilterExpression as i32);
}

async fn simple_consumer(cluster: &Cluster, group: &str, topics: &[&str], long_poll: Duration) -> SimpleConsumer {
    let mut option = SimpleConsumerOption::default();
    option.set_consumer_group(group);
    option.set_topics(topics.to_vec());
    let mut client_option = ClientOption::default();
    client_option.set_access_url(cluster.brokers[0].client_addr().to_string());
    client_option.set_enable_tls(false);
    client_option.set_timeout(Duration::from_secs(10));
    client_option.set_long_polling_timeout(long_poll);
    let mut consumer = SimpleConsumer::new(option, client_option).expect("simple consumer");
    consumer.start().await.expect("the consumer starts: routes and settings answered");
    consumer
}

/// The official SimpleConsumer: every message is received once per consumer group, an
/// acknowledged one never again, and one not acknowledged comes again once its invisible
/// duration is over, its delivery attempt counted; an ack with the handle of an earlier
/// delivery is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_simple_consumer_acks_and_gets_again_what_it_did_not_ack() {
    let cluster = cluster_with(&[topic("simple", 2, NORMAL)]).await;
    let producer = producer(&cluster, &["simple"]).await;
    for i in 0..10 {
        let m = MessageBuilder::builder().set_topic("simple").set_body(format!("m{i}").into_bytes()).build().expect("message");
        producer.send(m).await.expect("sent");
    }
    let all = ClientFilter::new(ClientFilterType::Tag, "*");
    let invisible = Duration::from_secs(3);
    let consumer = simple_consumer(&cluster, "workers", &["simple"], Duration::from_secs(2)).await;
    let mut first: HashMap<String, MessageView> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut kept_at = Instant::now();
    while first.len() < 10 && Instant::now() < deadline {
        for m in consumer.receive_with("simple", &all, 32, invisible).await.expect("receive") {
            assert_eq!(m.delivery_attempt(), 1, "a first delivery: {:?}", m.body());
            let body = String::from_utf8_lossy(m.body()).into_owned();
            assert!(first.insert(body.clone(), m).is_none(), "{body} delivered twice to one group while invisible");
        }
        kept_at = Instant::now();
    }
    let mut bodies: Vec<&String> = first.keys().collect();
    bodies.sort();
    assert_eq!(bodies.len(), 10, "every message received: {bodies:?}");
    for (body, m) in &first {
        if body != "m0" && body != "m1" {
            consumer.ack(m).await.expect("acknowledged");
        }
    }
    // m0 and m1 were not acknowledged: they come again, and only they, after their invisibility.
    let mut again: HashMap<String, MessageView> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while again.len() < 2 && Instant::now() < deadline {
        for m in consumer.receive_with("simple", &all, 32, Duration::from_secs(30)).await.expect("receive") {
            assert!(kept_at.elapsed() >= invisible - Duration::from_millis(500), "redelivered after {:?}", kept_at.elapsed());
            assert_eq!(m.delivery_attempt(), 2);
            again.insert(String::from_utf8_lossy(m.body()).into_owned(), m);
        }
    }
    let mut redelivered: Vec<&String> = again.keys().collect();
    redelivered.sort();
    assert_eq!(redelivered, ["m0", "m1"], "only what was not acknowledged");
    assert!(consumer.ack(&first["m0"]).await.is_err(), "the first delivery's handle is stale");
    for m in again.values() {
        consumer.ack(m).await.expect("the second delivery's handle acknowledges");
    }
    assert!(consumer.receive_with("simple", &all, 32, invisible).await.expect("receive").is_empty(), "nothing left");
    // Another consumer group receives every message, whatever the first one did.
    let others = simple_consumer(&cluster, "auditors", &["simple"], Duration::from_secs(2)).await;
    let mut seen = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.len() < 10 && Instant::now() < deadline {
        for m in others.receive_with("simple", &all, 32, Duration::from_secs(60)).await.expect("receive") {
            seen.insert(String::from_utf8_lossy(m.body()).into_owned());
        }
    }
    assert_eq!(seen.len(), 10);
    producer.shutdown().await.expect("shutdown");
}

/// Receipt handles by raw gRPC, each call at another broker (two of them forward to the
/// queue's leader): a change of invisibility answers a new handle and keeps the message
/// invisible past its first duration; the older handle, a handle of another consumer group and
/// a made-up one are INVALID_RECEIPT_HANDLE; so is a second ack. Bad receives get their codes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn receipt_handles_change_invisibility_and_refuse_stale_or_foreign_use() {
    let cluster = cluster_with(&[topic("handles", 1, NORMAL)]).await;
    cluster.leader_of_first_queue("handles").await;
    let mut clients = [raw_client(&cluster, 0).await, raw_client(&cluster, 1).await, raw_client(&cluster, 2).await];
    let sent = clients[0].send_message(SendMessageRequest { messages: vec![raw_message("handles", "h-1", b"x".to_vec())] }).await;
    assert_eq!(sent.expect("send").into_inner().status.map(|s| s.code), Some(MqCode::Ok as i32));

    let (code, got) = receive(&mut clients[0], receive_request("handles", "g", Some(Duration::from_secs(1)), Duration::from_secs(5))).await;
    assert_eq!((code, got.len()), (MqCode::Ok as i32, 1));
    let props = got[0].system_properties.as_ref().expect("properties");
    assert_eq!((props.message_id.as_str(), props.delivery_attempt, props.queue_offset), ("h-1", Some(1), Some(0)));
    let first = handle(&got[0]);

    let change = |receipt_handle: &str, d: Duration| v2::ChangeInvisibleDurationRequest {
        group: resource("g"),
        topic: resource("handles"),
        receipt_handle: receipt_handle.into(),
        invisible_duration: Some(prost_types::Duration { seconds: d.as_secs() as i64, nanos: d.subsec_nanos() as i32 }),
        message_id: "h-1".into(),
        lite_topic: None,
        suspend: None,
    };
    let changed = clients[1].change_invisible_duration(change(&first, Duration::from_secs(30))).await.expect("change").into_inner();
    assert_eq!(changed.status.as_ref().map(|s| s.code), Some(MqCode::Ok as i32), "{:?}", changed.status);
    let second = changed.receipt_handle;
    assert!(!second.is_empty() && second != first, "a new handle");
    // Past the first second of invisibility, the message stays invisible: a 2 s long poll finds nothing.
    let started = Instant::now();
    let (code, got) = receive(&mut clients[2], receive_request("handles", "g", Some(Duration::from_secs(1)), Duration::from_secs(2))).await;
    assert_eq!((code, got.len()), (MqCode::MessageNotFound as i32, 0));
    assert!(started.elapsed() >= Duration::from_millis(1500), "long-polled {:?}", started.elapsed());

    let invalid = MqCode::InvalidReceiptHandle as i32;
    assert_eq!(ack_code(&mut clients[2], "handles", "g", &first).await, invalid, "the handle before the change is stale");
    let again = clients[0].change_invisible_duration(change(&first, Duration::from_secs(1))).await.expect("change").into_inner();
    assert_eq!(again.status.map(|s| s.code), Some(invalid));
    assert_eq!(ack_code(&mut clients[0], "handles", "other", &second).await, invalid, "another group's handle");
    assert_eq!(ack_code(&mut clients[0], "handles", "g", "made-up").await, invalid);
    assert_eq!(ack_code(&mut clients[1], "handles", "g", &second).await, MqCode::Ok as i32);
    assert_eq!(ack_code(&mut clients[2], "handles", "g", &second).await, invalid, "acknowledged already");
    // A tiny duration is taken as it is (Node's push consumer asks 10 ms for 10 s).
    let tiny = clients[0].change_invisible_duration(change(&second, Duration::from_millis(10))).await.expect("change").into_inner();
    assert_eq!(tiny.status.map(|s| s.code), Some(invalid), "acknowledged: nothing left to change");

    // Bad receives, each with its code.
    let code_of = async |c: &mut MessagingServiceClient<Channel>, req| receive(c, req).await.0;
    let limit = Duration::from_secs(12 * 3600);
    let short = Duration::from_millis(100);
    let at_limit = receive_request("handles", "g", Some(limit), short);
    assert_eq!(code_of(&mut clients[0], at_limit).await, MqCode::MessageNotFound as i32, "12 h is the longest invisibility");
    let over = receive_request("handles", "g", Some(limit + Duration::from_secs(1)), short);
    assert_eq!(code_of(&mut clients[0], over).await, MqCode::IllegalInvisibleTime as i32);
    let missing = receive_request("handles", "g", None, short);
    assert_eq!(code_of(&mut clients[0], missing).await, MqCode::IllegalInvisibleTime as i32);
    let renewing = ReceiveMessageRequest { auto_renew: true, ..receive_request("handles", "g", None, short) };
    assert_eq!(code_of(&mut clients[0], renewing).await, MqCode::MessageNotFound as i32, "a push consumer names no duration");
    let bad_sql = ReceiveMessageRequest {
        filter_expression: Some(FilterExpression { r#type: FilterType::Sql as i32, expression: "a >".into() }),
        ..receive_request("handles", "g", Some(short), short)
    };
    assert_eq!(code_of(&mut clients[0], bad_sql).await, MqCode::IllegalFilterExpression as i32);
    let nowhere = receive_request("nowhere", "g", Some(short), short);
    assert_eq!(code_of(&mut clients[0], nowhere).await, MqCode::TopicNotFound as i32);
    let bad_group = receive_request("handles", "bad group!", Some(short), short);
    assert_eq!(code_of(&mut clients[0], bad_group).await, MqCode::IllegalConsumerGroup as i32);
}

/// Filters decide what a consumer group receives: what does not pass is never delivered to it
/// (tags, and SQL92 over properties), and a receive long-polls until a message comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn receives_filter_on_the_broker_and_long_poll_for_new_messages() {
    let cluster = cluster_with(&[topic("sorted", 1, NORMAL)]).await;
    cluster.leader_of_first_queue("sorted").await;
    let mut client = raw_client(&cluster, 1).await;
    let mut messages = Vec::new();
    for (i, tag) in ["A", "B", "A", "C", "A"].iter().enumerate() {
        let mut m = raw_message("sorted", &format!("id-{i}"), format!("m{i}").into_bytes());
        m.system_properties.as_mut().unwrap().tag = Some((*tag).into());
        m.user_properties.insert("n".into(), i.to_string());
        messages.push(m);
    }
    let sent = client.send_message(SendMessageRequest { messages }).await.expect("send").into_inner();
    assert_eq!(sent.status.map(|s| s.code), Some(MqCode::Ok as i32));
    let ids =
        |got: &[v2::Message]| -> Vec<String> { got.iter().map(|m| m.system_properties.as_ref().unwrap().message_id.clone()).collect() };
    let filtered = |group: &str, kind: FilterType, expression: &str| ReceiveMessageRequest {
        filter_expression: Some(FilterExpression { r#type: kind as i32, expression: expression.into() }),
        ..receive_request("sorted", group, Some(Duration::from_secs(60)), Duration::from_secs(1))
    };
    let (code, got) = receive(&mut client, filtered("tag-a", FilterType::Tag, "A")).await;
    assert_eq!((code, ids(&got)), (MqCode::Ok as i32, vec!["id-0".to_string(), "id-2".into(), "id-4".into()]));
    let (code, got) = receive(&mut client, filtered("tag-a", FilterType::Tag, "A")).await;
    assert_eq!((code, got.len()), (MqCode::MessageNotFound as i32, 0), "B and C are never delivered to this group");
    let (code, got) = receive(&mut client, filtered("by-sql", FilterType::Sql, "n >= 2 AND TAGS IN ('A', 'C')")).await;
    assert_eq!((code, ids(&got)), (MqCode::Ok as i32, vec!["id-2".to_string(), "id-3".into(), "id-4".into()]));

    // Nothing to receive: answered MESSAGE_NOT_FOUND after the long poll, within the deadline.
    let long_poll = Duration::from_secs(1);
    let mut req = Request::new(filtered("tag-a", FilterType::Tag, "A"));
    req.set_timeout(long_poll);
    let started = Instant::now();
    let mut stream = client.receive_message(req).await.expect("answered within the client's deadline").into_inner();
    let mut last = None;
    while let Some(item) = stream.message().await.expect("the stream ends before the deadline") {
        last = item.content;
    }
    assert!(matches!(last, Some(receive_message_response::Content::Status(s)) if s.code == MqCode::MessageNotFound as i32));
    assert!(started.elapsed() >= Duration::from_millis(500), "long-polled {:?}", started.elapsed());
    // A message sent during a long poll is delivered by it.
    let mut waiting = raw_client(&cluster, 2).await;
    let poll = tokio::spawn(async move {
        let req = ReceiveMessageRequest {
            long_polling_timeout: Some(prost_types::Duration { seconds: 20, nanos: 0 }),
            ..receive_request("sorted", "tag-a", Some(Duration::from_secs(60)), Duration::ZERO)
        };
        let started = Instant::now();
        (receive(&mut waiting, req).await, started.elapsed())
    });
    let mut late = raw_message("sorted", "id-late", b"late".to_vec());
    late.system_properties.as_mut().unwrap().tag = Some("A".into());
    let sent = client.send_message(SendMessageRequest { messages: vec![late] }).await.expect("send").into_inner();
    assert_eq!(sent.status.map(|s| s.code), Some(MqCode::Ok as i32));
    let ((code, got), took) = poll.await.expect("poll");
    assert_eq!((code, ids(&got)), (MqCode::Ok as i32, vec!["id-late".to_string()]), "after {took:?}");
    assert!(took < Duration::from_secs(20), "answered when the message came, after {took:?}");
}

/// A message not acknowledged is delivered at most 17 times (RocketMQ's default: the first and
/// 16 retries); then it goes to its consumer group's dead-letter queue, `%DLQ%<group>`, a topic
/// any consumer reads, and is not delivered to the group again. A consumer may also hand a
/// message over itself (ForwardMessageToDeadLetterQueue), once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_message_out_of_attempts_goes_to_the_dead_letter_queue() {
    let cluster = cluster_with(&[topic("doomed", 1, NORMAL)]).await;
    cluster.leader_of_first_queue("doomed").await;
    let mut client = raw_client(&cluster, 0).await;
    let sent = client.send_message(SendMessageRequest { messages: vec![raw_message("doomed", "d-1", b"poison".to_vec())] }).await;
    assert_eq!(sent.expect("send").into_inner().status.map(|s| s.code), Some(MqCode::Ok as i32));
    let quick = Duration::from_millis(50);
    let attempt_of = |m: &v2::Message| m.system_properties.as_ref().and_then(|p| p.delivery_attempt);
    for attempt in 1..=17 {
        let (code, got) = receive(&mut client, receive_request("doomed", "g", Some(quick), Duration::from_secs(5))).await;
        assert_eq!((code, got.len()), (MqCode::Ok as i32, 1), "attempt {attempt}");
        assert_eq!(attempt_of(&got[0]), Some(attempt));
    }
    let (code, got) = receive(&mut client, receive_request("doomed", "g", Some(quick), Duration::from_secs(1))).await;
    assert_eq!((code, got.len()), (MqCode::MessageNotFound as i32, 0), "no 18th delivery");
    let (code, got) =
        receive(&mut client, receive_request("%DLQ%g", "readers", Some(Duration::from_secs(60)), Duration::from_secs(5))).await;
    assert_eq!((code, got.len()), (MqCode::Ok as i32, 1), "in the dead-letter queue");
    let props = got[0].system_properties.as_ref().expect("properties");
    assert_eq!((props.message_id.as_str(), &got[0].body[..], props.delivery_attempt), ("d-1", &b"poison"[..], Some(1)));
    assert_eq!(got[0].topic, resource("%DLQ%g"));
    // Another group still gets the message: its attempts are its own.
    let (code, got) = receive(&mut client, receive_request("doomed", "others", Some(quick), Duration::from_secs(5))).await;
    assert_eq!((code, got.iter().map(attempt_of).collect::<Vec<_>>()), (MqCode::Ok as i32, vec![Some(1)]));

    // A consumer's own hand-off, by receipt handle.
    let forward = |receipt_handle: String| v2::ForwardMessageToDeadLetterQueueRequest {
        group: resource("others"),
        topic: resource("doomed"),
        receipt_handle,
        message_id: "d-1".into(),
        delivery_attempt: 1,
        max_delivery_attempts: 17,
        lite_topic: None,
    };
    let handed = client.forward_message_to_dead_letter_queue(forward(handle(&got[0]))).await.expect("forward").into_inner();
    assert_eq!(handed.status.as_ref().map(|s| s.code), Some(MqCode::Ok as i32), "{:?}", handed.status);
    let again = client.forward_message_to_dead_letter_queue(forward(handle(&got[0]))).await.expect("forward").into_inner();
    assert_eq!(again.status.map(|s| s.code), Some(MqCode::InvalidReceiptHandle as i32), "handed over already");
    let (code, got) =
        receive(&mut client, receive_request("%DLQ%others", "readers", Some(Duration::from_secs(60)), Duration::from_secs(5))).await;
    assert_eq!((code, got.len()), (MqCode::Ok as i32, 1));
    let (code, _) = receive(&mut client, receive_request("doomed", "others", Some(quick), Duration::from_millis(500))).await;
    assert_eq!(code, MqCode::MessageNotFound as i32, "settled in its queue");
}

/// FIFO topics: a consumer group gets a queue's messages in order, and nothing after a message
/// still in flight: the next batch only once the one before is acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fifo_consumer_gets_the_next_message_only_after_acknowledging_the_one_before() {
    let cluster = cluster_with(&[topic("ordered", 1, FIFO)]).await;
    cluster.leader_of_first_queue("ordered").await;
    let mut client = raw_client(&cluster, 1).await;
    let messages: Vec<v2::Message> = (0..5)
        .map(|i| {
            let mut m = raw_message("ordered", &format!("o-{i}"), format!("step {i}").into_bytes());
            let p = m.system_properties.as_mut().unwrap();
            p.message_type = MessageType::Fifo as i32;
            p.message_group = Some("order-1".into());
            m
        })
        .collect();
    let sent = client.send_message(SendMessageRequest { messages }).await.expect("send").into_inner();
    assert_eq!(sent.status.map(|s| s.code), Some(MqCode::Ok as i32));
    let batch_of = |n: i32, wait_ms: u64| ReceiveMessageRequest {
        batch_size: n,
        ..receive_request("ordered", "fifo-readers", Some(Duration::from_secs(60)), Duration::from_millis(wait_ms))
    };
    let ids =
        |got: &[v2::Message]| -> Vec<String> { got.iter().map(|m| m.system_properties.as_ref().unwrap().message_id.clone()).collect() };
    let (code, first) = receive(&mut client, batch_of(2, 2_000)).await;
    assert_eq!((code, ids(&first)), (MqCode::Ok as i32, vec!["o-0".to_string(), "o-1".into()]));
    let (code, _) = receive(&mut client, batch_of(2, 300)).await;
    assert_eq!(code, MqCode::MessageNotFound as i32, "o-2 waits behind o-0 and o-1");
    assert_eq!(ack_code(&mut client, "ordered", "fifo-readers", &handle(&first[0])).await, MqCode::Ok as i32);
    let (code, _) = receive(&mut client, batch_of(2, 300)).await;
    assert_eq!(code, MqCode::MessageNotFound as i32, "o-1 is still in flight");
    assert_eq!(ack_code(&mut client, "ordered", "fifo-readers", &handle(&first[1])).await, MqCode::Ok as i32);
    let (code, next) = receive(&mut client, batch_of(5, 2_000)).await;
    assert_eq!((code, ids(&next)), (MqCode::Ok as i32, vec!["o-2".to_string(), "o-3".into(), "o-4".into()]));
}

/// A receive's queue is advisory: a broker serves every queue of the topic it leads, whichever
/// one the receive names (Node names only queue 0), and none it does not lead.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_receive_serves_every_queue_of_the_topic_its_broker_leads() {
    use proto::raftmq::v1::send_request::Target;
    let cluster = cluster_with(&[topic("advisory", 6, NORMAL)]).await;
    let mut admin = cluster.brokers[0].admin().await;
    // Every queue with a leader, then the queues of each leader.
    let deadline = Instant::now() + Duration::from_secs(30);
    let leaders: Vec<u64> = loop {
        let d = admin.describe_topic(proto::raftmq::v1::DescribeTopicRequest { name: "advisory".into() }).await.expect("describe");
        let leaders: Vec<u64> = d.into_inner().queues.iter().map(|q| q.leader_broker_id).collect();
        if leaders.iter().all(|l| *l != 0) {
            break leaders;
        }
        assert!(Instant::now() < deadline, "queues without a leader: {leaders:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut queue = cluster.brokers[0].queue().await;
    for q in 0..6u32 {
        let req = proto::raftmq::v1::SendRequest {
            topic: "advisory".into(),
            target: Some(Target::QueueId(q)),
            messages: vec![proto::raftmq::v1::Message { body: format!("q{q}").into_bytes().into(), ..Default::default() }],
            producer_id: String::new(),
        };
        assert_eq!(code(&queue.send(req).await.expect("send").into_inner().status), Code::Ok);
    }
    let broker = leaders[0];
    let mine: BTreeSet<String> = (0..6).filter(|q| leaders[*q] == broker).map(|q| format!("q{q}")).collect();
    assert!(mine.contains("q0"));
    let mut client = raw_client(&cluster, (broker - 1) as usize).await;
    let mut got = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.len() < mine.len() && Instant::now() < deadline {
        let (_, messages) =
            receive(&mut client, receive_request("advisory", "node-like", Some(Duration::from_secs(60)), Duration::from_secs(1))).await;
        got.extend(messages.iter().map(|m| String::from_utf8_lossy(&m.body).into_owned()));
    }
    assert_eq!(got, mine, "every queue broker {broker} leads (of {leaders:?}), naming queue 0 only");
    let (code, none) =
        receive(&mut client, receive_request("advisory", "node-like", Some(Duration::from_secs(60)), Duration::from_millis(300))).await;
    assert_eq!((code, none.len()), (MqCode::MessageNotFound as i32, 0), "nothing of the queues other brokers lead");
}

/// An ack holds at most 1,024 entries: at the limit each entry is answered (here each a made-up
/// handle, INVALID_RECEIPT_HANDLE), one more is refused whole with BAD_REQUEST.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_ack_takes_up_to_1024_entries() {
    let cluster = cluster_with(&[topic("acks", 1, NORMAL)]).await;
    let mut client = raw_client(&cluster, 0).await;
    let ack = |n: usize| v2::AckMessageRequest {
        group: resource("g"),
        topic: resource("acks"),
        entries: (0..n)
            .map(|i| v2::AckMessageEntry { message_id: format!("m{i}"), receipt_handle: format!("h{i}"), lite_topic: None })
            .collect(),
    };
    let at_limit = client.ack_message(ack(1024)).await.expect("ack").into_inner();
    assert_eq!(at_limit.entries.len(), 1024);
    assert!(at_limit.entries.iter().all(|e| e.status.as_ref().map(|s| s.code) == Some(MqCode::InvalidReceiptHandle as i32)));
    assert_eq!(at_limit.status.map(|s| s.code), Some(MqCode::InvalidReceiptHandle as i32));
    let over = client.ack_message(ack(1025)).await.expect("ack").into_inner();
    assert_eq!((over.status.map(|s| s.code), over.entries.len()), (Some(MqCode::BadRequest as i32), 0));
    let none = client.ack_message(ack(0)).await.expect("ack").into_inner();
    assert_eq!(none.status.map(|s| s.code), Some(MqCode::BadRequest as i32));
}
