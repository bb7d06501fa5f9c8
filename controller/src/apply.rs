//! What each [`MetaCommand`] does to the [`ClusterMap`].
//!
//! [`apply`] runs on every replica of the metadata group, for every committed command, in log
//! order, so it must decide identically everywhere: no clocks, no randomness, no iteration over
//! hashed collections, no reads of anything but the map and the command. A refusal is a
//! [`MetaReply::Rejected`] that leaves the map unchanged, never an error: an error would stop the
//! group.

use crate::GroupId;
use crate::command::{MetaCommand, MetaReply, QUEUES_PER_TOPIC_MAX};
use crate::model::{BrokerRecord, ClusterMap, GroupOptions, GroupRecord, MessageType, TopicRecord};
use crate::placement::PlacementPlan;

/// Applies `cmd`, the command of the entry at `log_index`, to `map`. When the map changes, its
/// version becomes `log_index`; a reply that changes nothing leaves the map as it was.
pub fn apply(map: &mut ClusterMap, log_index: u64, cmd: &MetaCommand) -> MetaReply {
    let reply = match cmd {
        MetaCommand::RegisterBroker { id, peer_addr, client_addr, labels } => {
            let record = BrokerRecord { id: *id, peer_addr: peer_addr.clone(), client_addr: client_addr.clone(), labels: labels.clone() };
            register_broker(map, log_index, record)
        }
        MetaCommand::CreateTopic { name, queue_count, replication_factor, message_type, group_options } => {
            let shape = TopicShape { queue_count: *queue_count, replication_factor: *replication_factor, message_type: *message_type };
            create_topic(map, log_index, name, shape, *group_options, None)
        }
        MetaCommand::MarkGroupBootstrapped { group } => mark_group_bootstrapped(map, log_index, *group),
        MetaCommand::CreateTopicOn { name, queue_count, replication_factor, message_type, group_options, brokers } => {
            let shape = TopicShape { queue_count: *queue_count, replication_factor: *replication_factor, message_type: *message_type };
            create_topic(map, log_index, name, shape, *group_options, Some(brokers))
        }
    };
    debug_assert_eq!(map.check(), Ok(()), "after {cmd} at {log_index}");
    reply
}

fn rejected(reason: String) -> MetaReply {
    MetaReply::Rejected { reason }
}

fn register_broker(map: &mut ClusterMap, log_index: u64, record: BrokerRecord) -> MetaReply {
    if map.brokers.get(&record.id) != Some(&record) {
        map.brokers.insert(record.id, record);
        map.version = log_index;
    }
    MetaReply::BrokerRegistered
}

/// What a created topic is made of, as its create command gives it.
struct TopicShape {
    queue_count: u32,
    replication_factor: u32,
    message_type: MessageType,
}

/// `on`: the brokers replicas may go to (all registered ones if `None`).
fn create_topic(
    map: &mut ClusterMap,
    log_index: u64,
    name: &str,
    shape: TopicShape,
    options: GroupOptions,
    on: Option<&std::collections::BTreeSet<crate::BrokerId>>,
) -> MetaReply {
    let TopicShape { queue_count, replication_factor, message_type } = shape;
    // First, so that a retried create that did commit is told it exists, not refused.
    if let Some(topic) = map.topics.get(name) {
        return MetaReply::TopicExists(topic.clone());
    }
    if queue_count == 0 || queue_count > QUEUES_PER_TOPIC_MAX {
        return rejected(format!("topic {name:?}: queue count {queue_count} is not within 1..={QUEUES_PER_TOPIC_MAX}"));
    }
    if let Err(e) = options.check() {
        return rejected(format!("topic {name:?}: {e}"));
    }
    let plan = match PlacementPlan::for_topic_on(map, queue_count, replication_factor, on) {
        Ok(plan) => plan,
        Err(e) => return rejected(format!("topic {name:?}: {e}")),
    };
    let first: GroupId = map.next_group_id;
    let Some(next_group_id) = first.checked_add(u64::from(queue_count)) else {
        return rejected(format!("topic {name:?}: group ids exhausted"));
    };
    let groups: Vec<GroupId> = (first..next_group_id).collect();
    for ((queue, &id), replicas) in (0u32..).zip(&groups).zip(plan.replicas) {
        map.groups.insert(id, GroupRecord { id, topic: name.to_string(), queue, replicas, bootstrapped: false, options });
    }
    let topic = TopicRecord { name: name.to_string(), queue_count, replication_factor, message_type, groups, group_options: options };
    map.topics.insert(name.to_string(), topic.clone());
    map.next_group_id = next_group_id;
    map.version = log_index;
    MetaReply::TopicCreated(topic)
}

fn mark_group_bootstrapped(map: &mut ClusterMap, log_index: u64, group: GroupId) -> MetaReply {
    let Some(record) = map.groups.get_mut(&group) else {
        return rejected(format!("group {group} does not exist"));
    };
    if !record.bootstrapped {
        record.bootstrapped = true;
        map.version = log_index;
    }
    MetaReply::GroupBootstrapped
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::BrokerId;
    use crate::model::CHECKPOINT_INTERVAL_ENTRIES_MAX;

    fn register(id: BrokerId, peer_addr: &str) -> MetaCommand {
        MetaCommand::RegisterBroker { id, peer_addr: peer_addr.into(), client_addr: format!("client-{id}:8081"), labels: BTreeMap::new() }
    }

    fn create(name: &str, queue_count: u32, replication_factor: u32) -> MetaCommand {
        create_with(name, queue_count, replication_factor, GroupOptions::DEFAULT)
    }

    fn create_with(name: &str, queue_count: u32, replication_factor: u32, group_options: GroupOptions) -> MetaCommand {
        MetaCommand::CreateTopic { name: name.into(), queue_count, replication_factor, message_type: MessageType::Fifo, group_options }
    }

    fn every(checkpoint_interval_entries: u64) -> GroupOptions {
        GroupOptions { checkpoint_interval_entries }
    }

    /// Brokers 1..=3 registered at indexes 1..=3.
    fn three_brokers() -> ClusterMap {
        let mut map = ClusterMap::default();
        for id in 1..=3 {
            assert_eq!(apply(&mut map, id, &register(id, &format!("peer-{id}:7000"))), MetaReply::BrokerRegistered);
        }
        map
    }

    #[test]
    fn register_broker_inserts_then_updates_in_place() {
        let mut map = three_brokers();
        assert_eq!(map.version, 3);
        assert_eq!(map.brokers[&2].peer_addr, "peer-2:7000");
        // The same record again changes nothing.
        assert_eq!(apply(&mut map, 4, &register(2, "peer-2:7000")), MetaReply::BrokerRegistered);
        assert_eq!(map.version, 3);
        // New addresses replace the old ones.
        assert_eq!(apply(&mut map, 5, &register(2, "moved:7001")), MetaReply::BrokerRegistered);
        assert_eq!(map.version, 5);
        assert_eq!(map.brokers[&2].peer_addr, "moved:7001");
        assert_eq!(map.brokers.len(), 3);
    }

    #[test]
    fn create_topic_allocates_consecutive_groups_one_per_queue() {
        let mut map = three_brokers();
        let MetaReply::TopicCreated(a) = apply(&mut map, 10, &create("a", 2, 3)) else { panic!("not created") };
        assert_eq!(
            a,
            TopicRecord {
                name: "a".into(),
                queue_count: 2,
                replication_factor: 3,
                message_type: MessageType::Fifo,
                groups: vec![1, 2],
                group_options: GroupOptions::DEFAULT
            }
        );
        let MetaReply::TopicCreated(b) = apply(&mut map, 11, &create("b", 3, 1)) else { panic!("not created") };
        assert_eq!(b.groups, vec![3, 4, 5]);
        assert_eq!(map.next_group_id, 6);
        assert_eq!(map.version, 11);
        for (queue, id) in (0u32..).zip(&b.groups) {
            let group = map.route("b", queue).unwrap();
            assert_eq!(
                (group.id, group.topic.as_str(), group.queue, group.replicas.len(), group.bootstrapped),
                (*id, "b", queue, 1, false)
            );
        }
        assert_eq!(map.check(), Ok(()));
    }

    #[test]
    fn every_group_of_a_topic_carries_the_options_it_was_created_with() {
        let mut map = three_brokers();
        let MetaReply::TopicCreated(t) = apply(&mut map, 10, &create_with("t", 3, 2, every(64))) else { panic!("not created") };
        let MetaReply::TopicCreated(u) = apply(&mut map, 11, &create("u", 1, 2)) else { panic!("not created") };
        assert_eq!(t.group_options, every(64));
        for id in &t.groups {
            assert_eq!(map.groups[id].options, every(64));
        }
        assert_eq!(map.groups[&u.groups[0]].options, GroupOptions::DEFAULT);
    }

    #[test]
    fn create_topic_refusals_change_nothing() {
        let mut map = three_brokers();
        let MetaReply::TopicCreated(existing) = apply(&mut map, 4, &create("t", 2, 2)) else { panic!("not created") };
        let before = map.clone();
        let cases: [(MetaCommand, &str); 7] = [
            (create("u", 0, 1), "queue count 0 is not within 1..=1024"),
            (create_with("u", 1, 1, every(0)), "checkpoint interval 0 is not within 1..=1048576 entries"),
            (create_with("u", 1, 1, every(CHECKPOINT_INTERVAL_ENTRIES_MAX + 1)), "checkpoint interval 1048577 is not"),
            (create("u", QUEUES_PER_TOPIC_MAX + 1, 1), "queue count 1025 is not within 1..=1024"),
            (create("u", 1, 0), "replication factor must be at least 1"),
            (create("u", 1, 4), "replication factor 4 needs as many brokers, but 3 are registered"),
            (create("u", QUEUES_PER_TOPIC_MAX, 4), "but 3 are registered"),
        ];
        for (cmd, want) in cases {
            match apply(&mut map, 9, &cmd) {
                MetaReply::Rejected { reason } => assert!(reason.contains(want), "{cmd}: {reason:?} does not say {want:?}"),
                other => panic!("{cmd}: {other:?}"),
            }
            assert_eq!(map, before, "{cmd}");
        }
        // An existing topic is answered with its record, whatever shape was asked for.
        assert_eq!(apply(&mut map, 9, &create("t", 5, 1)), MetaReply::TopicExists(existing));
        assert_eq!(map, before);
    }

    #[test]
    fn create_topic_refuses_when_group_ids_run_out() {
        let mut map = three_brokers();
        map.next_group_id = u64::MAX - 1;
        let before = map.clone();
        assert_eq!(apply(&mut map, 9, &create("t", 2, 1)), MetaReply::Rejected { reason: "topic \"t\": group ids exhausted".into() });
        assert_eq!(map, before);
    }

    #[test]
    fn mark_group_bootstrapped_sets_the_flag_once() {
        let mut map = three_brokers();
        apply(&mut map, 4, &create("t", 2, 3));
        assert_eq!(apply(&mut map, 5, &MetaCommand::MarkGroupBootstrapped { group: 2 }), MetaReply::GroupBootstrapped);
        assert!(map.groups[&2].bootstrapped);
        assert!(!map.groups[&1].bootstrapped);
        assert_eq!(map.version, 5);
        // Again: the same answer, no change.
        assert_eq!(apply(&mut map, 6, &MetaCommand::MarkGroupBootstrapped { group: 2 }), MetaReply::GroupBootstrapped);
        assert_eq!(map.version, 5);
        let before = map.clone();
        for group in [0, 3, u64::MAX] {
            let reply = apply(&mut map, 7, &MetaCommand::MarkGroupBootstrapped { group });
            assert_eq!(reply, MetaReply::Rejected { reason: format!("group {group} does not exist") });
        }
        assert_eq!(map, before);
    }
}
