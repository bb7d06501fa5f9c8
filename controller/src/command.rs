//! The metadata group's Raft command and the state machine's reply to it (its `D` and `R`).
//! Both travel in Raft entries and RPCs as bincode (serde), so a field once released is never
//! reordered or retyped; new variants go at the end of each enum.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::model::{GroupOptions, MessageType, TopicRecord};
use crate::{BrokerId, GroupId};

/// The most queues one topic may have: each queue is a Raft group, and a broker hosts a bounded
/// number of group replicas.
pub const QUEUES_PER_TOPIC_MAX: u32 = 1024;

/// A change to the cluster metadata, proposed through the metadata group and applied by every
/// replica in log order ([`crate::apply`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaCommand {
    /// Records a broker, or replaces its record: a restarted broker may come back on other
    /// addresses or with other labels.
    RegisterBroker { id: BrokerId, peer_addr: String, client_addr: String, labels: BTreeMap<String, String> },
    /// Creates a topic: allocates `queue_count` groups with consecutive ids and places their
    /// replicas ([`crate::PlacementPlan`]). The name is taken as given: names are validated at
    /// the client edge, before a command is proposed; `group_options` are checked here too
    /// ([`GroupOptions::check`]), since every replica must agree on them.
    CreateTopic { name: String, queue_count: u32, replication_factor: u32, message_type: MessageType, group_options: GroupOptions },
    /// Records that `group`'s Raft membership was initialized, so no broker initializes it again.
    MarkGroupBootstrapped { group: GroupId },
    /// [`Self::CreateTopic`], placing replicas only on `brokers`: the registered brokers that
    /// answered when the create was proposed, so no replica starts on a dead one. (After the
    /// other variants: entries already in logs keep their encoding.)
    CreateTopicOn {
        name: String,
        queue_count: u32,
        replication_factor: u32,
        message_type: MessageType,
        group_options: GroupOptions,
        brokers: BTreeSet<BrokerId>,
    },
}

/// The state machine's answer to one applied entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaReply {
    /// The broker's record is the one given (whether or not it changed).
    BrokerRegistered,
    /// The topic as created, with its groups.
    TopicCreated(TopicRecord),
    /// A topic of that name already exists (as given); nothing changed. A retried create whose
    /// first attempt did commit also gets this, so compare the record to tell.
    TopicExists(TopicRecord),
    /// The group is marked bootstrapped (whether or not it already was).
    GroupBootstrapped,
    /// A valid entry that the state machine refused, the same way on every replica; nothing of
    /// it was applied (the entry still advances the applied log id).
    Rejected { reason: String },
    /// The entry carried no command (a leader's blank entry, a membership change).
    NoCommand,
}

/// openraft logs commands.
impl fmt::Display for MetaCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetaCommand::RegisterBroker { id, peer_addr, client_addr, labels } => {
                write!(f, "register broker {id} (peer {peer_addr}, client {client_addr}, labels {labels:?})")
            }
            MetaCommand::CreateTopic { name, queue_count, replication_factor, message_type, group_options } => write!(
                f,
                "create topic {name:?} ({queue_count} queues, replication factor {replication_factor}, {message_type:?}, checkpoint every {} entries)",
                group_options.checkpoint_interval_entries
            ),
            MetaCommand::MarkGroupBootstrapped { group } => write!(f, "mark group {group} bootstrapped"),
            MetaCommand::CreateTopicOn { name, queue_count, replication_factor, message_type, group_options, brokers } => write!(
                f,
                "create topic {name:?} ({queue_count} queues, replication factor {replication_factor}, {message_type:?}, checkpoint every {} entries) on brokers {brokers:?}",
                group_options.checkpoint_interval_entries
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_and_replies_round_trip_through_bincode() {
        let commands = [
            MetaCommand::RegisterBroker {
                id: 3,
                peer_addr: "10.0.0.3:7000".into(),
                client_addr: "10.0.0.3:8081".into(),
                labels: BTreeMap::from([("zone".into(), "a".into())]),
            },
            MetaCommand::CreateTopic {
                name: "orders".into(),
                queue_count: 8,
                replication_factor: 3,
                message_type: MessageType::Fifo,
                group_options: GroupOptions::DEFAULT,
            },
            MetaCommand::MarkGroupBootstrapped { group: u64::MAX },
            MetaCommand::CreateTopicOn {
                name: "orders".into(),
                queue_count: 8,
                replication_factor: 3,
                message_type: MessageType::Normal,
                group_options: GroupOptions::DEFAULT,
                brokers: BTreeSet::from([1, 2, 4]),
            },
        ];
        for c in commands {
            assert_eq!(bincode::deserialize::<MetaCommand>(&bincode::serialize(&c).unwrap()).unwrap(), c);
        }
        let topic = TopicRecord {
            name: "t".into(),
            queue_count: 1,
            replication_factor: 1,
            message_type: MessageType::Delay,
            groups: vec![4],
            group_options: GroupOptions { checkpoint_interval_entries: 7 },
        };
        let replies = [
            MetaReply::BrokerRegistered,
            MetaReply::TopicCreated(topic.clone()),
            MetaReply::TopicExists(topic),
            MetaReply::GroupBootstrapped,
            MetaReply::Rejected { reason: "no".into() },
            MetaReply::NoCommand,
        ];
        for r in replies {
            assert_eq!(bincode::deserialize::<MetaReply>(&bincode::serialize(&r).unwrap()).unwrap(), r);
        }
    }

    #[test]
    fn display_names_the_command() {
        let c = MetaCommand::CreateTopic {
            name: "t".into(),
            queue_count: 8,
            replication_factor: 3,
            message_type: MessageType::Normal,
            group_options: GroupOptions::DEFAULT,
        };
        assert_eq!(c.to_string(), "create topic \"t\" (8 queues, replication factor 3, Normal, checkpoint every 4096 entries)");
        assert_eq!(MetaCommand::MarkGroupBootstrapped { group: 5 }.to_string(), "mark group 5 bootstrapped");
    }
}
