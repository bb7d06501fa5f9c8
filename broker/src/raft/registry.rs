//! The Raft groups this broker hosts, by group id: what the transport routes requests to.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use openraft::storage::RaftStateMachine;
use openraft::{Raft, RaftTypeConfig};

use super::GroupId;

/// See the module documentation. Cheap to clone.
pub struct GroupRegistry<C: RaftTypeConfig, SM: RaftStateMachine<C>> {
    groups: Arc<RwLock<HashMap<GroupId, Raft<C, SM>>>>,
}

impl<C: RaftTypeConfig, SM: RaftStateMachine<C>> Clone for GroupRegistry<C, SM> {
    fn clone(&self) -> Self {
        Self { groups: self.groups.clone() }
    }
}

impl<C: RaftTypeConfig, SM: RaftStateMachine<C>> Default for GroupRegistry<C, SM> {
    fn default() -> Self {
        Self { groups: Arc::new(RwLock::new(HashMap::new())) }
    }
}

impl<C: RaftTypeConfig, SM: RaftStateMachine<C>> GroupRegistry<C, SM> {
    pub fn insert(&self, group: GroupId, raft: Raft<C, SM>) -> Option<Raft<C, SM>> {
        self.groups.write().unwrap_or_else(|p| p.into_inner()).insert(group, raft)
    }

    pub fn remove(&self, group: GroupId) -> Option<Raft<C, SM>> {
        self.groups.write().unwrap_or_else(|p| p.into_inner()).remove(&group)
    }

    pub fn get(&self, group: GroupId) -> Option<Raft<C, SM>> {
        self.groups.read().unwrap_or_else(|p| p.into_inner()).get(&group).cloned()
    }

    pub fn ids(&self) -> Vec<GroupId> {
        let mut ids: Vec<_> = self.groups.read().unwrap_or_else(|p| p.into_inner()).keys().copied().collect();
        ids.sort_unstable();
        ids
    }
}
