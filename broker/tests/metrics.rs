//! One broker serving `GET /metrics`: what it reports after real sends through `QueueService`.

mod common;

use broker::server::BrokerServer;
use common::{code, eventually, sample, scrape};
use proto::raftmq::v1::admin_service_client::AdminServiceClient;
use proto::raftmq::v1::queue_service_client::QueueServiceClient;
use proto::raftmq::v1::send_request::Target;
use proto::raftmq::v1::status::Code;
use proto::raftmq::v1::{DescribeTopicRequest, Message, SendRequest};
use tonic::transport::Channel;

/// Most bytes one scrape may return in this test; a bound, not an expectation.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_broker_reports_sends_syncs_groups_and_requests() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = common::host_options(1, dir.path(), "127.0.0.1:0".parse().unwrap());
    options.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    options.store.flush_interval_ms = 200;
    let broker = BrokerServer::start(options).await.unwrap();
    let metrics_addr = broker.metrics_addr().expect("a metrics server");
    let channel = Channel::from_shared(format!("http://{}", broker.client_addr())).unwrap().connect().await.unwrap();
    let mut admin = AdminServiceClient::new(channel.clone());
    let queue = QueueServiceClient::new(channel);

    common::create_one_queue_topic(&mut admin, "metered").await;
    let described = admin.describe_topic(DescribeTopicRequest { name: "metered".into() }).await.unwrap().into_inner();
    assert_eq!(code(&described.status), Code::Ok, "{:?}", described.status);
    let group = described.queues[0].group_id;

    // Only sends answered OK count as sent; refusals while the group elects its leader do not.
    let mut sent = 0;
    for round in 0..5 {
        let req = SendRequest {
            topic: "metered".into(),
            target: Some(Target::QueueId(0)),
            messages: (0..round + 1).map(|k| Message { body: format!("m{round}-{k}").into_bytes().into(), ..Default::default() }).collect(),
            producer_id: String::new(),
        };
        let reply = common::send_stored(&queue, req).await;
        sent += reply.results.len();
    }
    assert_eq!(sent, 15);

    let text = eventually("the metrics to show the sends and the groups", || async move {
        let (content_type, text) = scrape(metrics_addr).await;
        assert!(content_type.starts_with("application/openmetrics-text"), "{content_type}");
        let ready = sample(&text, "raftmq_send_in_flight_messages") == Some(0.0)
            && text.contains(&format!("raftmq_raft_role{{group=\"{group}\",role=\"leader\"}} 1"))
            && text.contains("raftmq_raft_role{group=\"0\",role=\"leader\"} 1");
        ready.then_some(text)
    })
    .await;

    assert_eq!(sample(&text, "raftmq_send_messages_total"), Some(sent as f64), "\n{text}");
    assert!(sample(&text, "raftmq_send_bytes_total").unwrap() > 0.0);
    assert!(sample(&text, "raftmq_send_entry_messages_count").unwrap() >= 1.0);
    assert!(sample(&text, "raftmq_send_commit_duration_seconds_count").unwrap() >= 1.0);
    assert!(sample(&text, "raftmq_log_fsync_duration_seconds_count").unwrap() > 0.0, "\n{text}");
    assert!(sample(&text, "raftmq_log_fsync_duration_seconds_bucket{le=\"+Inf\"}").unwrap() > 0.0);
    assert!(sample(&text, "raftmq_log_records_appended_total").unwrap() > 0.0);
    assert!(sample(&text, "raftmq_log_segments").unwrap() >= 1.0, "\n{text}");
    assert!(sample(&text, "raftmq_log_live_bytes").unwrap() > 0.0, "\n{text}");
    assert!(sample(&text, "raftmq_log_rewritten_bytes_total").is_some(), "\n{text}");
    assert!(sample(&text, "raftmq_log_rewritten_entries_total").is_some(), "\n{text}");
    for g in [0, group] {
        assert!(sample(&text, &format!("raftmq_raft_term{{group=\"{g}\"}}")).unwrap() >= 1.0, "group {g}\n{text}");
        assert!(sample(&text, &format!("raftmq_raft_applied_index{{group=\"{g}\"}}")).unwrap() >= 1.0, "group {g}\n{text}");
        // Just written to: awake (groups hibernate after 10 quiet seconds by default).
        assert_eq!(sample(&text, &format!("raftmq_raft_hibernating{{group=\"{g}\"}}")), Some(0.0), "group {g}\n{text}");
    }
    assert!(sample(&text, "raftmq_grpc_requests_total{method=\"/raftmq.v1.QueueService/Send\"}").unwrap() >= 5.0, "\n{text}");
    assert!(sample(&text, "raftmq_grpc_request_duration_seconds_count{method=\"/raftmq.v1.AdminService/CreateTopic\"}").unwrap() >= 1.0);
    assert!(text.ends_with("# EOF\n"));

    // The store is flushed periodically, so a restart would re-apply nothing of the sends.
    eventually("the store to hold the group's applied index durably", || async move {
        let (_, text) = scrape(metrics_addr).await;
        let applied = sample(&text, &format!("raftmq_raft_applied_index{{group=\"{group}\"}}"))?;
        let durable = sample(&text, &format!("raftmq_store_durable_applied_index{{group=\"{group}\"}}"))?;
        (durable == applied && durable >= 6.0).then_some(())
    })
    .await;

    broker.shutdown().await.unwrap();
    assert!(tokio::net::TcpStream::connect(metrics_addr).await.is_err(), "the metrics server stops with the broker");
}
