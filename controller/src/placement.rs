//! Where a new topic's queue groups go: which brokers hold each group's replicas, and which of
//! them is the preferred leader.
//!
//! Placement is a pure function of the [`ClusterMap`] and the topic's shape, and runs inside
//! [`crate::apply`] on every replica of the metadata group, so it must decide the same on all of
//! them: it iterates only `BTreeMap`s and breaks every tie by broker id.
//!
//! # Rules
//!
//! Groups are placed in queue order; each counts the ones placed before it.
//!
//! 1. **Preferred leader.** The candidates are the brokers that can take a replica without
//!    unbalancing replica counts: those holding the fewest replicas, or every broker when fewer
//!    than `replication_factor` hold the fewest (all of those get a replica anyway). Of them,
//!    the one with the fewest preferred leaderships; ties go to the one with more replicas, then
//!    to the lower id.
//! 2. **Other replicas**, one at a time: the broker whose zone holds the fewest of this group's
//!    replicas so far, then the one with the fewest replicas, then the one with the most
//!    preferred leaderships, then the lower id.
//!
//! The tie-breaks keep brokers that are short of leaderships among the least loaded, where
//! rule 1 can still pick them. Choosing the replicas first and the leader among them second
//! (the obvious order) lets leaderships drift 2 apart: 7 brokers, one topic of 9 queues with 3
//! replicas ends with leaderships 2, 2, 1, 2, 1, 1, 0.
//!
//! # Guarantees
//!
//! - A group's replicas are distinct brokers.
//! - A group spreads over `min(replication_factor, zones)` zones. A broker's zone is its
//!   [`ZONE_LABEL`] label; a broker without one is a zone of its own.
//! - Without zone labels, when every broker registered before the topics were created, replica
//!   counts and preferred leadership counts per broker each stay within 1 of each other (the
//!   property test checks it for random clusters and topic sequences). With zones, spreading
//!   over zones comes first: a zone of few brokers gets more replicas per broker. A broker
//!   registered later starts empty and gets new groups first; existing groups are not moved.

use std::cmp::Reverse;

use crate::BrokerId;
use crate::model::ClusterMap;

/// The broker label naming its zone (rack, availability zone): the failure domain that replicas
/// of a group are spread over.
pub const ZONE_LABEL: &str = "zone";

/// Where the groups of one new topic go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacementPlan {
    /// `replicas[q]`: the brokers of queue `q`'s group, distinct, the preferred leader first.
    pub replicas: Vec<Vec<BrokerId>>,
}

/// Why a topic cannot be placed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    #[error("replication factor must be at least 1")]
    NoReplicas,
    #[error("replication factor {replication_factor} needs as many brokers, but {registered} are registered")]
    TooFewBrokers { replication_factor: u32, registered: usize },
}

/// A broker's zone: its label, or the broker alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Zone<'a> {
    Labelled(&'a str),
    Unlabelled(BrokerId),
}

/// A registered broker and its load so far, the groups being placed included.
#[derive(Debug)]
struct Candidate<'a> {
    id: BrokerId,
    zone: Zone<'a>,
    replicas: usize,
    leaderships: usize,
}

impl PlacementPlan {
    /// Places `queue_count` groups of `replication_factor` replicas each on the brokers
    /// registered in `map`, following the rules of the module doc.
    pub fn for_topic(map: &ClusterMap, queue_count: u32, replication_factor: u32) -> Result<Self, PlacementError> {
        Self::for_topic_on(map, queue_count, replication_factor, None)
    }

    /// [`Self::for_topic`] on the registered brokers in `on` only (all of them if `None`):
    /// the ones known to be alive, so that no replica starts on a dead broker.
    pub fn for_topic_on(
        map: &ClusterMap,
        queue_count: u32,
        replication_factor: u32,
        on: Option<&std::collections::BTreeSet<BrokerId>>,
    ) -> Result<Self, PlacementError> {
        let rf = replication_factor as usize;
        if rf == 0 {
            return Err(PlacementError::NoReplicas);
        }
        let eligible = map.brokers.keys().filter(|b| on.is_none_or(|on| on.contains(b))).count();
        if rf > eligible {
            return Err(PlacementError::TooFewBrokers { replication_factor, registered: eligible });
        }
        let replicas = map.replica_counts();
        let leaderships = map.preferred_leader_counts();
        // In id order, so position order is id order.
        let mut candidates: Vec<Candidate<'_>> = map
            .brokers
            .values()
            .filter(|b| on.is_none_or(|on| on.contains(&b.id)))
            .map(|b| Candidate {
                id: b.id,
                zone: b.labels.get(ZONE_LABEL).map_or(Zone::Unlabelled(b.id), |z| Zone::Labelled(z)),
                replicas: replicas.get(&b.id).copied().unwrap_or(0),
                leaderships: leaderships.get(&b.id).copied().unwrap_or(0),
            })
            .collect();
        let replicas = (0..queue_count).map(|_| place_group(&mut candidates, rf)).collect();
        Ok(Self { replicas })
    }
}

/// Chooses one group's replicas (preferred leader first) and counts them into the candidates.
/// `candidates` holds at least `rf` brokers, `rf >= 1`.
fn place_group(candidates: &mut [Candidate<'_>], rf: usize) -> Vec<BrokerId> {
    let fewest = candidates.iter().map(|c| c.replicas).min().unwrap_or(0);
    let at_fewest = candidates.iter().filter(|c| c.replicas == fewest).count();
    let may_lead = |c: &Candidate<'_>| at_fewest < rf || c.replicas == fewest;
    // Positions into `candidates`; a broker's position is unique, so every key below is too.
    let mut chosen: Vec<usize> = Vec::with_capacity(rf);
    let leader = (0..candidates.len()).filter(|&i| may_lead(&candidates[i])).min_by_key(|&i| {
        let c = &candidates[i];
        (c.leaderships, Reverse(c.replicas), c.id)
    });
    chosen.extend(leader);
    while chosen.len() < rf {
        let next = (0..candidates.len()).filter(|i| !chosen.contains(i)).min_by_key(|&i| {
            let c = &candidates[i];
            let same_zone = chosen.iter().filter(|&&j| candidates[j].zone == c.zone).count();
            (same_zone, c.replicas, Reverse(c.leaderships), c.id)
        });
        match next {
            Some(i) => chosen.push(i),
            // Unreachable while rf <= candidates.len(), which the caller checked.
            None => break,
        }
    }
    for (n, &i) in chosen.iter().enumerate() {
        candidates[i].replicas += 1;
        if n == 0 {
            candidates[i].leaderships += 1;
        }
    }
    chosen.iter().map(|&i| candidates[i].id).collect()
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use proptest::prelude::*;

    use super::*;
    use crate::apply::apply;
    use crate::command::{MetaCommand, MetaReply};
    use crate::model::MessageType;

    /// A map with brokers `ids`, each in the zone given (or none), registered at indexes 1...
    fn cluster(brokers: &[(BrokerId, Option<&str>)]) -> ClusterMap {
        let mut map = ClusterMap::default();
        for (n, &(id, zone)) in brokers.iter().enumerate() {
            let labels = zone.map(|z| BTreeMap::from([(ZONE_LABEL.to_string(), z.to_string())])).unwrap_or_default();
            let cmd = MetaCommand::RegisterBroker { id, peer_addr: format!("p{id}"), client_addr: format!("c{id}"), labels };
            assert_eq!(apply(&mut map, n as u64 + 1, &cmd), MetaReply::BrokerRegistered);
        }
        map
    }

    fn plain(ids: impl IntoIterator<Item = BrokerId>) -> ClusterMap {
        cluster(&ids.into_iter().map(|id| (id, None)).collect::<Vec<_>>())
    }

    /// Creates topic `name` through [`apply`], so its placement counts in the next one.
    fn create(map: &mut ClusterMap, name: &str, queue_count: u32, replication_factor: u32) {
        let cmd = MetaCommand::CreateTopic {
            name: name.into(),
            queue_count,
            replication_factor,
            message_type: MessageType::Normal,
            group_options: Default::default(),
        };
        let reply = apply(map, map.version + 1, &cmd);
        assert!(matches!(reply, MetaReply::TopicCreated(_)), "{reply:?}");
    }

    fn counts(counts: BTreeMap<BrokerId, usize>) -> Vec<usize> {
        counts.into_values().collect()
    }

    fn spread(counts: &[usize]) -> usize {
        counts.iter().max().unwrap_or(&0) - counts.iter().min().unwrap_or(&0)
    }

    #[test]
    fn spreads_replicas_and_leaderships_evenly() {
        struct Case {
            brokers: u64,
            /// (queue count, replication factor) of each topic, in creation order.
            topics: &'static [(u32, u32)],
            replicas: &'static [usize],
            leaderships: &'static [usize],
        }
        let cases = [
            Case { brokers: 3, topics: &[(8, 3)], replicas: &[8, 8, 8], leaderships: &[3, 3, 2] },
            Case { brokers: 3, topics: &[(8, 3), (1, 3)], replicas: &[9, 9, 9], leaderships: &[3, 3, 3] },
            Case { brokers: 5, topics: &[(4, 3)], replicas: &[3, 2, 2, 3, 2], leaderships: &[1, 1, 1, 1, 0] },
            Case { brokers: 5, topics: &[(4, 3), (7, 3), (2, 3)], replicas: &[8, 8, 8, 8, 7], leaderships: &[3, 3, 3, 2, 2] },
            Case { brokers: 5, topics: &[(5, 3), (5, 3)], replicas: &[6, 6, 6, 6, 6], leaderships: &[2, 2, 2, 2, 2] },
            // Where choosing replicas first and the leader among them leaves leaderships 2 apart.
            Case { brokers: 7, topics: &[(9, 3)], replicas: &[4, 4, 4, 4, 4, 4, 3], leaderships: &[2, 1, 1, 2, 1, 1, 1] },
            Case { brokers: 4, topics: &[(3, 1), (2, 4), (5, 2)], replicas: &[6, 5, 5, 5], leaderships: &[3, 3, 2, 2] },
        ];
        for (n, case) in cases.iter().enumerate() {
            let mut map = plain(1..=case.brokers);
            for (t, &(queues, rf)) in case.topics.iter().enumerate() {
                create(&mut map, &format!("t{t}"), queues, rf);
            }
            assert_eq!(counts(map.replica_counts()), case.replicas, "case {n} replicas");
            assert_eq!(counts(map.preferred_leader_counts()), case.leaderships, "case {n} leaderships");
            for g in map.groups.values() {
                assert_eq!(g.replicas.iter().collect::<BTreeSet<_>>().len(), g.replicas.len(), "case {n}: {g:?}");
            }
        }
    }

    #[test]
    fn the_plan_names_brokers_in_order_preferred_leader_first() {
        let map = plain([10, 20, 30]);
        let plan = PlacementPlan::for_topic(&map, 4, 2).unwrap();
        assert_eq!(plan.replicas, vec![vec![10, 20], vec![20, 30], vec![30, 10], vec![10, 20]]);
        // The same map always gives the same plan.
        assert_eq!(PlacementPlan::for_topic(&map, 4, 2).unwrap(), plan);
    }

    #[test]
    fn spreads_each_group_over_zones_first() {
        // Zone a has brokers 1, 2, 3; zone b has 4; zone c has 5 and 6.
        let map = cluster(&[(1, Some("a")), (2, Some("a")), (3, Some("a")), (4, Some("b")), (5, Some("c")), (6, Some("c"))]);
        let zone_of = |b: BrokerId| map.brokers[&b].labels[ZONE_LABEL].clone();
        let plan = PlacementPlan::for_topic(&map, 12, 3).unwrap();
        for replicas in &plan.replicas {
            let zones: BTreeSet<String> = replicas.iter().map(|&b| zone_of(b)).collect();
            assert_eq!(zones.len(), 3, "{replicas:?}");
        }
        // Zone b's only broker is in every group.
        let mut map = map.clone();
        create(&mut map, "t", 12, 3);
        assert_eq!(map.replica_counts()[&4], 12);
        // Four replicas over three zones: two zones hold one each, one zone two.
        let plan = PlacementPlan::for_topic(&map, 6, 4).unwrap();
        for replicas in &plan.replicas {
            let zones: BTreeSet<String> = replicas.iter().map(|&b| zone_of(b)).collect();
            assert_eq!(zones.len(), 3, "{replicas:?}");
        }
    }

    #[test]
    fn an_unlabelled_broker_is_a_zone_of_its_own() {
        // Brokers 1 and 2 share zone a; 3 and 4 have no zone.
        let map = cluster(&[(1, Some("a")), (2, Some("a")), (3, None), (4, None)]);
        let plan = PlacementPlan::for_topic(&map, 8, 3).unwrap();
        for replicas in &plan.replicas {
            let in_a = replicas.iter().filter(|&&b| b <= 2).count();
            assert_eq!(in_a, 1, "{replicas:?}");
        }
    }

    #[test]
    fn a_broker_registered_later_gets_new_groups_first() {
        let mut map = plain(1..=3);
        create(&mut map, "old", 6, 3);
        let cmd = MetaCommand::RegisterBroker { id: 4, peer_addr: "p".into(), client_addr: "c".into(), labels: BTreeMap::new() };
        let index = map.version + 1;
        apply(&mut map, index, &cmd);
        let plan = PlacementPlan::for_topic(&map, 3, 3).unwrap();
        assert!(plan.replicas.iter().all(|r| r.contains(&4)), "{plan:?}");
        // It leads until its leaderships catch up with the others' (2 each), then the rotation goes on.
        assert_eq!(plan.replicas.iter().map(|r| r[0]).collect::<Vec<_>>(), vec![4, 4, 1], "{plan:?}");
    }

    #[test]
    fn refuses_impossible_replication_factors() {
        let map = plain(1..=2);
        assert_eq!(PlacementPlan::for_topic(&map, 1, 0), Err(PlacementError::NoReplicas));
        let on: std::collections::BTreeSet<BrokerId> = map.brokers.keys().copied().take(1).collect();
        assert_eq!(
            PlacementPlan::for_topic_on(&map, 1, 2, Some(&on)),
            Err(PlacementError::TooFewBrokers { replication_factor: 2, registered: 1 }),
            "only the brokers allowed count"
        );
        assert_eq!(PlacementPlan::for_topic(&map, 1, 3), Err(PlacementError::TooFewBrokers { replication_factor: 3, registered: 2 }));
        assert_eq!(
            PlacementPlan::for_topic(&ClusterMap::default(), 1, 1),
            Err(PlacementError::TooFewBrokers { replication_factor: 1, registered: 0 })
        );
        assert_eq!(PlacementPlan::for_topic(&map, 0, 2).unwrap().replicas, Vec::<Vec<BrokerId>>::new());
    }

    /// A cluster of 1 to 12 brokers (ids spread out, not 1..n, so ties by id are exercised on
    /// arbitrary ids), then a sequence of topics, each as (queue count, replication factor
    /// chosen from 1..=brokers).
    fn cluster_and_topics() -> impl Strategy<Value = (Vec<BrokerId>, Vec<(u32, u32)>)> {
        (proptest::collection::btree_set(0u64..1_000, 1..=12)).prop_flat_map(|ids| {
            let n = ids.len() as u32;
            let topics = proptest::collection::vec((1u32..=24, 1u32..=n), 1..=8);
            (Just(ids.into_iter().collect::<Vec<_>>()), topics)
        })
    }

    proptest! {
        #[test]
        fn placement_stays_balanced_without_zones((brokers, topics) in cluster_and_topics()) {
            let mut map = plain(brokers.iter().copied());
            for (t, &(queues, rf)) in topics.iter().enumerate() {
                create(&mut map, &format!("t{t}"), queues, rf);
                prop_assert_eq!(map.check(), Ok(()));
                let replicas = counts(map.replica_counts());
                let leaderships = counts(map.preferred_leader_counts());
                prop_assert!(spread(&replicas) <= 1, "replicas per broker {:?} after topic {}", replicas, t);
                prop_assert!(spread(&leaderships) <= 1, "leaderships per broker {:?} after topic {}", leaderships, t);
            }
        }

        #[test]
        fn placement_spreads_over_zones(
            zones in proptest::collection::vec(proptest::option::of(0u8..4), 1..=10),
            topics in proptest::collection::vec((1u32..=16, 1u32..=10), 1..=5),
        ) {
            let labels: Vec<String> = zones.iter().map(|z| z.map(|z| format!("z{z}")).unwrap_or_default()).collect();
            let brokers: Vec<(BrokerId, Option<&str>)> =
                zones.iter().zip(&labels).enumerate().map(|(i, (z, l))| (i as BrokerId, z.map(|_| l.as_str()))).collect();
            let zone_of = |b: BrokerId| match zones[b as usize] {
                Some(z) => format!("z{z}"),
                None => format!("broker {b}"),
            };
            let zone_count = (0..brokers.len() as BrokerId).map(zone_of).collect::<BTreeSet<_>>().len();
            let mut map = cluster(&brokers);
            for &(queues, rf) in &topics {
                let rf = rf.min(brokers.len() as u32);
                let plan = PlacementPlan::for_topic(&map, queues, rf).unwrap();
                for replicas in &plan.replicas {
                    prop_assert_eq!(replicas.len(), rf as usize);
                    prop_assert_eq!(replicas.iter().collect::<BTreeSet<_>>().len(), replicas.len(), "{:?}", replicas);
                    let spanned = replicas.iter().map(|&b| zone_of(b)).collect::<BTreeSet<_>>().len();
                    prop_assert_eq!(spanned, zone_count.min(rf as usize), "{:?}", replicas);
                }
                let name = format!("t{}", map.topics.len());
                create(&mut map, &name, queues, rf);
            }
        }
    }
}
