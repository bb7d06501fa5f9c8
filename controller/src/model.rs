//! The cluster metadata: registered brokers, topics, and the queue groups that hold their queues.
//!
//! A [`ClusterMap`] is what the metadata Raft group's log folds into ([`crate::apply`]); every
//! replica holds the same one at the same log index. It is serialized with bincode into
//! snapshots, so a field once released is never reordered or retyped.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{BrokerId, GroupId, META_GROUP_ID};

/// The cluster's metadata as of log index [`version`](Self::version).
///
/// Only `BTreeMap`s: iteration order is the key order on every replica, so anything derived by
/// iterating (placement, routes) is the same everywhere.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMap {
    /// The Raft log index of the last entry that changed the map; 0 for the empty map. Two maps
    /// of one cluster with the same version are equal.
    pub version: u64,
    pub brokers: BTreeMap<BrokerId, BrokerRecord>,
    pub topics: BTreeMap<String, TopicRecord>,
    pub groups: BTreeMap<GroupId, GroupRecord>,
    /// The id the next queue group gets. Ids are never reused, so a group id names one queue
    /// forever (a replica of a deleted group can never be taken for a new one).
    pub next_group_id: GroupId,
}

impl Default for ClusterMap {
    fn default() -> Self {
        Self {
            version: 0,
            brokers: BTreeMap::new(),
            topics: BTreeMap::new(),
            groups: BTreeMap::new(),
            // 0 is the metadata group.
            next_group_id: META_GROUP_ID + 1,
        }
    }
}

/// A broker as it registered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerRecord {
    pub id: BrokerId,
    /// `host:port` of the broker's Raft transport and internal services.
    pub peer_addr: String,
    /// `host:port` of the broker's client gRPC service.
    pub client_addr: String,
    /// Free-form labels; [`ZONE_LABEL`](crate::ZONE_LABEL) is the one placement reads.
    pub labels: BTreeMap<String, String>,
}

/// What a message of a topic may carry and how it is delivered (RocketMQ's message types).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MessageType {
    Normal,
    Fifo,
    Delay,
    Transaction,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicRecord {
    pub name: String,
    pub queue_count: u32,
    pub replication_factor: u32,
    pub message_type: MessageType,
    /// `groups[q]` is the Raft group holding queue `q`: one group per queue, so
    /// `groups.len() == queue_count`.
    pub groups: Vec<GroupId>,
    /// The options every group of the topic was created with.
    pub group_options: GroupOptions,
}

/// One queue group: a Raft group holding one queue of one topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRecord {
    pub id: GroupId,
    pub topic: String,
    pub queue: u32,
    /// Distinct brokers holding a replica; `replicas[0]` is the preferred leader, toward which
    /// leadership is balanced.
    pub replicas: Vec<BrokerId>,
    /// Whether the group's Raft membership was initialized. The broker holding `replicas[0]`
    /// initializes it once, then records it here, so that it never initializes it again (not
    /// even after losing its disk, which would otherwise start a second, divergent group).
    pub bootstrapped: bool,
    /// Fixed at creation: every replica applies with these.
    pub options: GroupOptions,
}

/// The options of a queue group that decide its replicated state. Every replica must apply the
/// group's log with the same ones (a replica recording checkpoints at other indexes would
/// accept other trims), so they are chosen once, when the group is created, and carried in its
/// record; a broker never takes them from its own configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupOptions {
    /// The group records a checkpoint (a possible trim point and snapshot) at every log index
    /// that is a multiple of this; within 1..=[`CHECKPOINT_INTERVAL_ENTRIES_MAX`].
    pub checkpoint_interval_entries: u64,
}

/// The largest checkpoint interval: a trim can free nothing until a checkpoint passes, so a
/// larger one would hold that many entries' bodies on disk past their retention.
pub const CHECKPOINT_INTERVAL_ENTRIES_MAX: u64 = 1 << 20;

impl GroupOptions {
    /// A checkpoint every 4,096 entries: a trim point every few seconds under load, for a few
    /// hundred bytes each.
    pub const DEFAULT: GroupOptions = GroupOptions { checkpoint_interval_entries: 4096 };

    /// Why these options cannot be a group's, if they cannot.
    pub fn check(&self) -> Result<(), String> {
        if !(1..=CHECKPOINT_INTERVAL_ENTRIES_MAX).contains(&self.checkpoint_interval_entries) {
            return Err(format!(
                "checkpoint interval {} is not within 1..={CHECKPOINT_INTERVAL_ENTRIES_MAX} entries",
                self.checkpoint_interval_entries
            ));
        }
        Ok(())
    }
}

impl Default for GroupOptions {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl ClusterMap {
    /// The group holding `queue` of `topic`.
    pub fn route(&self, topic: &str, queue: u32) -> Option<&GroupRecord> {
        let id = self.topics.get(topic)?.groups.get(usize::try_from(queue).ok()?)?;
        self.groups.get(id)
    }

    /// The groups with a replica on `broker`, by group id.
    pub fn groups_on(&self, broker: BrokerId) -> impl Iterator<Item = &GroupRecord> {
        self.groups.values().filter(move |g| g.replicas.contains(&broker))
    }

    /// Replicas per broker: every registered broker (0 if it holds none) and any broker a group
    /// names.
    pub fn replica_counts(&self) -> BTreeMap<BrokerId, usize> {
        self.count_per_broker(|g| &g.replicas)
    }

    /// Preferred leaderships (`replicas[0]`) per broker, over the same brokers as
    /// [`replica_counts`](Self::replica_counts).
    pub fn preferred_leader_counts(&self) -> BTreeMap<BrokerId, usize> {
        self.count_per_broker(|g| g.replicas.get(..1).unwrap_or(&[]))
    }

    fn count_per_broker(&self, brokers_of: impl Fn(&GroupRecord) -> &[BrokerId]) -> BTreeMap<BrokerId, usize> {
        let mut counts: BTreeMap<BrokerId, usize> = self.brokers.keys().map(|&b| (b, 0)).collect();
        for group in self.groups.values() {
            for &b in brokers_of(group) {
                *counts.entry(b).or_default() += 1;
            }
        }
        counts
    }

    /// Checks what [`crate::apply`] maintains: records keyed by their own ids and names, every
    /// topic's groups existing and pointing back at it, one group per queue, replicas distinct
    /// and registered, and group ids below `next_group_id`. Snapshots are checked with it before
    /// they are taken in, so a map that decodes but is inconsistent is refused.
    pub fn check(&self) -> Result<(), String> {
        for (id, broker) in &self.brokers {
            if broker.id != *id {
                return Err(format!("broker {id} is recorded as {}", broker.id));
            }
        }
        for (name, topic) in &self.topics {
            if topic.name != *name {
                return Err(format!("topic {name:?} is recorded as {:?}", topic.name));
            }
            if topic.groups.len() != topic.queue_count as usize {
                return Err(format!("topic {name:?} has {} queues but {} groups", topic.queue_count, topic.groups.len()));
            }
            for (queue, id) in topic.groups.iter().enumerate() {
                let group = self.groups.get(id).ok_or_else(|| format!("topic {name:?} queue {queue}: group {id} does not exist"))?;
                if group.topic != *name || group.queue as usize != queue {
                    return Err(format!("topic {name:?} queue {queue}: group {id} holds {:?} queue {}", group.topic, group.queue));
                }
                if group.options != topic.group_options {
                    return Err(format!("topic {name:?} queue {queue}: group {id} has options {:?}", group.options));
                }
            }
        }
        for (id, group) in &self.groups {
            if group.id != *id {
                return Err(format!("group {id} is recorded as {}", group.id));
            }
            if *id == META_GROUP_ID || *id >= self.next_group_id {
                return Err(format!("group {id} outside the allocated ids 1..{}", self.next_group_id));
            }
            if self.topics.get(&group.topic).and_then(|t| t.groups.get(group.queue as usize)) != Some(id) {
                return Err(format!("group {id} is not queue {} of topic {:?}", group.queue, group.topic));
            }
            group.options.check().map_err(|e| format!("group {id}: {e}"))?;
            if group.replicas.is_empty() {
                return Err(format!("group {id} has no replicas"));
            }
            for (i, b) in group.replicas.iter().enumerate() {
                if group.replicas[..i].contains(b) {
                    return Err(format!("group {id} names broker {b} twice"));
                }
                if !self.brokers.contains_key(b) {
                    return Err(format!("group {id} has a replica on unregistered broker {b}"));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker(id: BrokerId) -> BrokerRecord {
        BrokerRecord { id, peer_addr: format!("b{id}:1"), client_addr: format!("b{id}:2"), labels: BTreeMap::new() }
    }

    /// Brokers 1..=3, topic "t" with two queues in groups 1 (on 1, 2) and 2 (on 2, 3).
    fn small_map() -> ClusterMap {
        let mut map = ClusterMap { version: 7, next_group_id: 3, ..ClusterMap::default() };
        for id in 1..=3 {
            map.brokers.insert(id, broker(id));
        }
        map.topics.insert(
            "t".into(),
            TopicRecord {
                name: "t".into(),
                queue_count: 2,
                replication_factor: 2,
                message_type: MessageType::Normal,
                groups: vec![1, 2],
                group_options: GroupOptions::DEFAULT,
            },
        );
        map.groups.insert(
            1,
            GroupRecord { id: 1, topic: "t".into(), queue: 0, replicas: vec![1, 2], bootstrapped: false, options: GroupOptions::DEFAULT },
        );
        map.groups.insert(
            2,
            GroupRecord { id: 2, topic: "t".into(), queue: 1, replicas: vec![2, 3], bootstrapped: true, options: GroupOptions::DEFAULT },
        );
        map
    }

    #[test]
    fn routes_and_counts() {
        let map = small_map();
        assert_eq!(map.check(), Ok(()));
        assert_eq!(map.route("t", 1).map(|g| g.id), Some(2));
        assert_eq!(map.route("t", 2), None);
        assert_eq!(map.route("u", 0), None);
        assert_eq!(map.groups_on(2).map(|g| g.id).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(map.groups_on(3).map(|g| g.id).collect::<Vec<_>>(), vec![2]);
        assert_eq!(map.groups_on(4).count(), 0);
        assert_eq!(map.replica_counts(), BTreeMap::from([(1, 1), (2, 2), (3, 1)]));
        assert_eq!(map.preferred_leader_counts(), BTreeMap::from([(1, 1), (2, 1), (3, 0)]));
        assert_eq!(ClusterMap::default().next_group_id, 1);
        assert_eq!(ClusterMap::default().check(), Ok(()));
    }

    #[test]
    fn check_finds_each_inconsistency() {
        type Damage = fn(&mut ClusterMap);
        let damages: [(Damage, &str); 10] = [
            (|m| m.groups.get_mut(&2).unwrap().options.checkpoint_interval_entries = 8, "group 2 has options"),
            (
                |m| {
                    m.topics.get_mut("t").unwrap().group_options.checkpoint_interval_entries = 0;
                    m.groups.values_mut().for_each(|g| g.options.checkpoint_interval_entries = 0);
                },
                "group 1: checkpoint interval 0 is not within",
            ),
            (|m| m.brokers.get_mut(&1).unwrap().id = 9, "broker 1 is recorded as 9"),
            (|m| m.topics.get_mut("t").unwrap().queue_count = 3, "3 queues but 2 groups"),
            (|m| m.topics.get_mut("t").unwrap().groups = vec![2, 1], "group 2 holds"),
            (|m| m.next_group_id = 2, "outside the allocated ids"),
            (|m| m.groups.get_mut(&1).unwrap().replicas = vec![], "no replicas"),
            (|m| m.groups.get_mut(&1).unwrap().replicas = vec![1, 1], "twice"),
            (|m| m.groups.get_mut(&1).unwrap().replicas = vec![1, 4], "unregistered broker 4"),
            (|m| m.topics.get_mut("t").unwrap().groups = vec![1, 5], "group 5 does not exist"),
        ];
        for (damage, want) in damages {
            let mut map = small_map();
            damage(&mut map);
            let err = map.check().unwrap_err();
            assert!(err.contains(want), "{err:?} does not say {want:?}");
        }
    }
}
