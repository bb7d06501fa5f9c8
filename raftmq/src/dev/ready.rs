//! When is the local cluster ready: every broker answers `AdminService/ClusterStatus` with OK and
//! lists every broker of the cluster as registered and answering, so that a topic created once
//! `raftmq dev` says ready gets the replication factor it asks for.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use proto::raftmq::v1::admin_service_client::AdminServiceClient;
use proto::raftmq::v1::status::Code;
use proto::raftmq::v1::{ClusterStatusReply, ClusterStatusRequest};
use tonic::transport::Endpoint;

/// A broker that does not accept a connection in this long is not ready yet.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Bound on one ClusterStatus call, connection included.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Whether `reply` shows a ready cluster of the brokers `expected`; else what is missing.
pub fn check_status(reply: &ClusterStatusReply, expected: &BTreeSet<u64>) -> Result<(), String> {
    let Some(status) = &reply.status else {
        return Err("ClusterStatus answered without a status".to_owned());
    };
    if status.code() != Code::Ok {
        return Err(format!("ClusterStatus answered {:?}: {}", status.code(), status.message));
    }
    let listed: BTreeSet<u64> = reply.brokers.iter().map(|b| b.broker_id).collect();
    let missing: Vec<String> = expected.difference(&listed).map(u64::to_string).collect();
    if !missing.is_empty() {
        return Err(format!("ClusterStatus does not list broker {} yet", missing.join(", ")));
    }
    // Registered is not enough: a topic placed on a broker that does not answer yet starts
    // with a replica that cannot vote.
    let silent: Vec<String> =
        reply.brokers.iter().filter(|b| expected.contains(&b.broker_id) && !b.alive).map(|b| b.broker_id.to_string()).collect();
    match silent.len() {
        0 => Ok(()),
        1 => Err(format!("broker {} is registered but does not answer yet", silent[0])),
        _ => Err(format!("broker {} are registered but do not answer yet", silent.join(", "))),
    }
}

/// Asks the broker at `client` for the cluster's status, bounded by [`PROBE_TIMEOUT`].
pub async fn probe(client: SocketAddr, expected: &BTreeSet<u64>) -> Result<(), String> {
    let call = async {
        let endpoint = Endpoint::from_shared(format!("http://{client}")).map_err(|e| e.to_string())?;
        let channel =
            endpoint.connect_timeout(CONNECT_TIMEOUT).timeout(PROBE_TIMEOUT).connect().await.map_err(|e| format!("connecting: {e}"))?;
        let reply = AdminServiceClient::new(channel)
            .cluster_status(ClusterStatusRequest {})
            .await
            .map_err(|s| format!("ClusterStatus failed: {s}"))?;
        check_status(reply.get_ref(), expected)
    };
    match tokio::time::timeout(PROBE_TIMEOUT, call).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer in {} s", PROBE_TIMEOUT.as_secs())),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use proto::raftmq::v1::admin_service_server::{AdminService, AdminServiceServer};
    use proto::raftmq::v1::{
        BrokerInfo, CreateTopicReply, CreateTopicRequest, DescribeTopicReply, DescribeTopicRequest, GroupChecksumReply,
        GroupChecksumRequest, ListTopicsReply, ListTopicsRequest, MoveLeaderReply, MoveLeaderRequest, Status,
    };
    use tonic::transport::Server;
    use tonic::transport::server::TcpIncoming;
    use tonic::{Request, Response};

    use super::*;

    fn reply(code: Code, brokers: &[u64]) -> ClusterStatusReply {
        ClusterStatusReply {
            status: Some(Status { code: code as i32, message: "m".to_owned(), ..Status::default() }),
            brokers: brokers.iter().map(|&broker_id| BrokerInfo { broker_id, alive: true, ..BrokerInfo::default() }).collect(),
            groups: Vec::new(),
        }
    }

    #[test]
    fn ready_needs_ok_and_every_broker() {
        let three = BTreeSet::from([1, 2, 3]);
        assert_eq!(check_status(&reply(Code::Ok, &[1, 2, 3]), &three), Ok(()));
        assert_eq!(check_status(&reply(Code::Ok, &[3, 1, 2, 4]), &three), Ok(()));
        assert_eq!(check_status(&reply(Code::Ok, &[1]), &three), Err("ClusterStatus does not list broker 2, 3 yet".to_owned()));
        assert_eq!(check_status(&reply(Code::Unavailable, &[1, 2, 3]), &three), Err("ClusterStatus answered Unavailable: m".to_owned()));
        // An unset status is not success.
        assert!(check_status(&reply(Code::Unspecified, &[1, 2, 3]), &three).is_err());
        assert!(check_status(&ClusterStatusReply::default(), &three).is_err());
    }

    /// A topic created once `raftmq dev` says ready gets its full replication factor: every
    /// broker is registered and answers, not merely listed.
    #[test]
    fn ready_needs_every_broker_registered_and_answering() {
        let three = BTreeSet::from([1, 2, 3]);
        let mut r = reply(Code::Ok, &[1, 2, 3]);
        r.brokers[1].alive = false;
        assert_eq!(check_status(&r, &three), Err("broker 2 is registered but does not answer yet".to_owned()));
        r.brokers[2].alive = false;
        assert_eq!(check_status(&r, &three), Err("broker 2, 3 are registered but do not answer yet".to_owned()));
        let missing_and_silent = ClusterStatusReply { brokers: r.brokers[..2].to_vec(), ..r };
        assert_eq!(check_status(&missing_and_silent, &three), Err("ClusterStatus does not list broker 3 yet".to_owned()));
    }

    /// Answers ClusterStatus with whatever the test puts in `reply`.
    struct FakeAdmin {
        reply: Arc<Mutex<ClusterStatusReply>>,
    }

    #[tonic::async_trait]
    impl AdminService for FakeAdmin {
        async fn create_topic(&self, _: Request<CreateTopicRequest>) -> Result<Response<CreateTopicReply>, tonic::Status> {
            Err(tonic::Status::unimplemented("fake"))
        }
        async fn list_topics(&self, _: Request<ListTopicsRequest>) -> Result<Response<ListTopicsReply>, tonic::Status> {
            Err(tonic::Status::unimplemented("fake"))
        }
        async fn describe_topic(&self, _: Request<DescribeTopicRequest>) -> Result<Response<DescribeTopicReply>, tonic::Status> {
            Err(tonic::Status::unimplemented("fake"))
        }
        async fn cluster_status(&self, _: Request<ClusterStatusRequest>) -> Result<Response<ClusterStatusReply>, tonic::Status> {
            let reply = self.reply.lock().map_err(|_| tonic::Status::internal("poisoned"))?.clone();
            Ok(Response::new(reply))
        }
        async fn group_checksum(&self, _: Request<GroupChecksumRequest>) -> Result<Response<GroupChecksumReply>, tonic::Status> {
            Err(tonic::Status::unimplemented("fake"))
        }
        async fn move_leader(&self, _: Request<MoveLeaderRequest>) -> Result<Response<MoveLeaderReply>, tonic::Status> {
            Err(tonic::Status::unimplemented("fake"))
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn probe_asks_a_real_endpoint() -> anyhow::Result<()> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Mutex::new(reply(Code::Ok, &[1])));
        let server = Server::builder().add_service(AdminServiceServer::new(FakeAdmin { reply: shared.clone() }));
        let serving = tokio::spawn(server.serve_with_incoming(TcpIncoming::from(listener)));
        let expected = BTreeSet::from([1, 2]);
        assert_eq!(probe(addr, &expected).await, Err("ClusterStatus does not list broker 2 yet".to_owned()));
        *shared.lock().map_err(|_| anyhow::anyhow!("poisoned"))? = reply(Code::Ok, &[1, 2]);
        assert_eq!(probe(addr, &expected).await, Ok(()));
        serving.abort();
        Ok(())
    }

    #[tokio::test(flavor = "current_thread")]
    async fn probe_of_a_closed_port_fails_fast() -> anyhow::Result<()> {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let started = std::time::Instant::now();
        let result = probe(addr, &BTreeSet::from([1])).await;
        assert!(result.as_ref().is_err_and(|e| e.starts_with("connecting")), "{result:?}");
        assert!(started.elapsed() <= PROBE_TIMEOUT + Duration::from_millis(500));
        Ok(())
    }
}
