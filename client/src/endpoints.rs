//! The brokers a client may start a call at: the endpoints it was given (`--broker`, a
//! comma-separated list, like Kafka's bootstrap servers or RocketMQ's name-server list), then
//! those it learned from the cluster (ClusterStatus, leader hints). Calls go to the current one;
//! when it fails, the next one in turn becomes current, so a client given any live broker
//! reaches the cluster whichever broker is down.

use std::sync::Mutex;

/// Endpoints kept at once: a cluster has few brokers, so more means hints from many clusters
/// or a bug; endpoints learned beyond it are dropped (the given ones are always kept).
const ENDPOINTS_MAX: usize = 256;

#[derive(Debug)]
pub struct Endpoints {
    inner: Mutex<List>,
}

#[derive(Debug)]
struct List {
    /// Given first, in the order given, then learned; never empty, no duplicates.
    endpoints: Vec<String>,
    current: usize,
}

impl Endpoints {
    /// `given` must not be empty (the command line requires at least one); duplicates are
    /// dropped.
    pub fn new(given: Vec<String>) -> Self {
        assert!(!given.is_empty(), "a client needs at least one broker endpoint");
        let mut endpoints: Vec<String> = Vec::with_capacity(given.len());
        for e in given {
            if !endpoints.contains(&e) {
                endpoints.push(e);
            }
        }
        Self { inner: Mutex::new(List { endpoints, current: 0 }) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, List> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Where the next call that has no better place starts.
    pub fn current(&self) -> String {
        let list = self.lock();
        list.endpoints[list.current].clone()
    }

    /// A call at `endpoint` failed in a way another broker might not: the next endpoint becomes
    /// current, unless another caller moved on already.
    pub fn failed(&self, endpoint: &str) {
        let mut list = self.lock();
        if list.endpoints[list.current] == endpoint {
            list.current = (list.current + 1) % list.endpoints.len();
        }
    }

    /// Endpoints the cluster named (empty ones are skipped).
    pub fn learn<'a>(&self, learned: impl IntoIterator<Item = &'a str>) {
        let mut list = self.lock();
        for e in learned {
            if !e.is_empty() && list.endpoints.len() < ENDPOINTS_MAX && !list.endpoints.iter().any(|k| k == e) {
                list.endpoints.push(e.to_string());
            }
        }
    }

    #[cfg(test)]
    pub fn all(&self) -> Vec<String> {
        self.lock().endpoints.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn given(list: &[&str]) -> Endpoints {
        Endpoints::new(list.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn a_failed_endpoint_hands_over_to_the_next_in_turn() {
        let e = given(&["b1:1", "b2:1", "b1:1", "b3:1"]);
        assert_eq!(e.all(), ["b1:1", "b2:1", "b3:1"], "duplicates dropped, order kept");
        assert_eq!(e.current(), "b1:1");
        e.failed("b1:1");
        assert_eq!(e.current(), "b2:1");
        // A late report about an endpoint already left behind changes nothing.
        e.failed("b1:1");
        assert_eq!(e.current(), "b2:1");
        e.failed("b2:1");
        e.failed("b3:1");
        assert_eq!(e.current(), "b1:1", "wraps around");
    }

    #[test]
    fn learned_endpoints_join_the_turn_within_the_bound() {
        let e = given(&["b1:1"]);
        e.learn(["b1:1", "", "b2:1"]);
        assert_eq!(e.all(), ["b1:1", "b2:1"]);
        e.failed("b1:1");
        assert_eq!(e.current(), "b2:1");
        let many: Vec<String> = (0..2 * ENDPOINTS_MAX).map(|i| format!("h{i}:1")).collect();
        e.learn(many.iter().map(String::as_str));
        assert_eq!(e.all().len(), ENDPOINTS_MAX);
        assert_eq!(e.all()[..2], ["b1:1", "b2:1"], "the given endpoints stay");
    }
}
