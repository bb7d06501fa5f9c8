//! Where a topic's queue calls go: each queue's leader, as DescribeTopic (queue → leader broker
//! id) and ClusterStatus (broker id → client endpoint) last said, corrected by the leader hints
//! of NOT_LEADER replies. A queue without a known, live leader has no route: its calls go to
//! the `--broker` endpoint, which forwards them or names the leader.

use std::collections::HashMap;

use proto::raftmq::v1::{BrokerInfo, QueueInfo};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteTable {
    /// Queue id → the leader's client endpoint.
    leaders: HashMap<u32, String>,
}

impl RouteTable {
    /// Routes from a topic's queues and the cluster's brokers. A leader that is not in
    /// `brokers`, has no endpoint, or whose lease is not current gets no route.
    pub fn build(queues: &[QueueInfo], brokers: &[BrokerInfo]) -> Self {
        let endpoints: HashMap<u64, &str> =
            brokers.iter().filter(|b| b.alive && !b.endpoint.is_empty()).map(|b| (b.broker_id, b.endpoint.as_str())).collect();
        let leaders = queues
            .iter()
            .filter(|q| q.leader_broker_id != 0)
            .filter_map(|q| endpoints.get(&q.leader_broker_id).map(|e| (q.queue_id, (*e).to_string())))
            .collect();
        Self { leaders }
    }

    /// The leader's endpoint for `queue_id`, if known.
    pub fn leader(&self, queue_id: u32) -> Option<&str> {
        self.leaders.get(&queue_id).map(String::as_str)
    }

    /// A NOT_LEADER reply named `endpoint` as the queue's leader.
    pub fn learn_leader(&mut self, queue_id: u32, endpoint: &str) {
        self.leaders.insert(queue_id, endpoint.to_string());
    }

    /// The queue's leader is unknown: its calls go to `--broker` until routes are relearned.
    pub fn forget(&mut self, queue_id: u32) {
        self.leaders.remove(&queue_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(queue_id: u32, leader: u64) -> QueueInfo {
        QueueInfo {
            queue_id,
            group_id: u64::from(queue_id) + 100,
            leader_broker_id: leader,
            replica_broker_ids: vec![1, 2, 3],
            end_offset: 0,
        }
    }

    fn broker(id: u64, endpoint: &str, alive: bool) -> BrokerInfo {
        BrokerInfo { broker_id: id, endpoint: endpoint.into(), alive, labels: HashMap::new() }
    }

    #[test]
    fn leaders_with_a_live_endpoint_get_a_route() {
        let queues = [queue(0, 1), queue(1, 2), queue(2, 0), queue(3, 3), queue(4, 4), queue(5, 5)];
        let brokers = [broker(1, "b1:8081", true), broker(2, "b2:8081", true), broker(3, "b3:8081", false), broker(5, "", true)];
        let t = RouteTable::build(&queues, &brokers);
        assert_eq!(t.leader(0), Some("b1:8081"));
        assert_eq!(t.leader(1), Some("b2:8081"));
        assert_eq!(t.leader(2), None, "no leader");
        assert_eq!(t.leader(3), None, "leader's lease expired");
        assert_eq!(t.leader(4), None, "leader not among the brokers");
        assert_eq!(t.leader(5), None, "leader without an endpoint");
        assert_eq!(t.leader(9), None, "no such queue");
    }

    #[test]
    fn hints_replace_and_failures_forget_routes() {
        let brokers = [broker(1, "b1:8081", true), broker(2, "b2:8081", true)];
        let mut t = RouteTable::build(&[queue(0, 1), queue(1, 1)], &brokers);
        t.learn_leader(0, "b2:8081");
        assert_eq!(t.leader(0), Some("b2:8081"));
        t.learn_leader(7, "b1:8081");
        assert_eq!(t.leader(7), Some("b1:8081"));
        assert_eq!(t.leader(1), Some("b1:8081"));
        t.forget(0);
        assert_eq!(t.leader(0), None);
    }
}
