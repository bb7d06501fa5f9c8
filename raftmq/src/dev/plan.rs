//! The local cluster as data: which ports and directories each broker gets, the `broker.toml`
//! written for it, and the checks that an existing directory holds this same cluster. No IO.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use broker::options::BrokerOptions;

use crate::config::ENV_PREFIX;

/// Broker `N`'s peer port is `base + PEER_PORT_OFFSET + N - 1`.
pub const PEER_PORT_OFFSET: u16 = 100;
/// Broker `N`'s metrics port is `base + METRICS_PORT_OFFSET + N - 1`.
pub const METRICS_PORT_OFFSET: u16 = 200;
/// More brokers would make the client ports run into the peer ports.
pub const BROKERS_MAX: u64 = PEER_PORT_OFFSET as u64;
/// The metadata group is the first brokers, up to this many: 3 voters survive one failure, and
/// more would only slow metadata commits on one machine.
pub const CONTROLLERS_MAX: u64 = 3;
/// Replicas per queue group in the generated configs, capped by the broker count so that
/// `raftmq admin topic create` works on a one- or two-broker cluster.
pub const REPLICATION_FACTOR_MAX: u64 = 3;

const CONFIG_FILE: &str = "broker.toml";
const LOG_FILE: &str = "broker.log";

/// Keys that `raftmq dev` sets for each broker: a `RAFTMQ_*` variable for one of them would
/// give every broker the same value, so `raftmq dev` refuses to start under one.
const PLANNED_ENV_KEYS: [&str; 8] =
    ["ID", "DATA_DIR", "LISTEN", "ADVERTISE", "PEER_LISTEN", "PEER_ADVERTISE", "METRICS_LISTEN", "CONTROLLERS"];

/// One broker of the local cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerPlan {
    pub id: u64,
    /// Its `data_dir`, holding `broker.toml` and `broker.log` too.
    pub dir: PathBuf,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
    pub client: SocketAddr,
    pub peer: SocketAddr,
    pub metrics: SocketAddr,
}

/// The whole local cluster under one directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterPlan {
    pub dir: PathBuf,
    pub brokers: Vec<BrokerPlan>,
    /// `ID@PEER` of the metadata group's voters: the first brokers.
    pub controllers: Vec<String>,
    pub replication_factor: u64,
}

impl ClusterPlan {
    /// Plans `brokers` brokers under `dir` (absolute, so that the configs do not depend on the
    /// working directory) with ports from `base_port`.
    pub fn new(dir: &Path, brokers: u64, base_port: u16) -> Result<ClusterPlan, String> {
        if !(1..=BROKERS_MAX).contains(&brokers) {
            return Err(format!("--brokers {brokers}: must be 1 to {BROKERS_MAX}"));
        }
        let last_port = u64::from(base_port) + u64::from(METRICS_PORT_OFFSET) + brokers - 1;
        if base_port == 0 || last_port > u64::from(u16::MAX) {
            let base_max = u64::from(u16::MAX) - u64::from(METRICS_PORT_OFFSET) - (brokers - 1);
            return Err(format!(
                "--base-port {base_port}: with {brokers} brokers it must be 1 to {base_max} (metrics ports reach base + {})",
                METRICS_PORT_OFFSET
            ));
        }
        let addr = |offset: u16, i: u16| SocketAddr::from((Ipv4Addr::LOCALHOST, base_port + offset + i));
        let brokers: Vec<BrokerPlan> = (1..=brokers)
            .map(|id| {
                // `last_port` fits in u16, so every offset below does.
                let i = (id - 1) as u16;
                let dir = dir.join(format!("broker-{id}"));
                BrokerPlan {
                    id,
                    config_path: dir.join(CONFIG_FILE),
                    log_path: dir.join(LOG_FILE),
                    dir,
                    client: addr(0, i),
                    peer: addr(PEER_PORT_OFFSET, i),
                    metrics: addr(METRICS_PORT_OFFSET, i),
                }
            })
            .collect();
        let controllers = brokers.iter().take(CONTROLLERS_MAX as usize).map(|b| format!("{}@{}", b.id, b.peer)).collect();
        let replication_factor = (brokers.len() as u64).min(REPLICATION_FACTOR_MAX);
        Ok(ClusterPlan { dir: dir.to_path_buf(), brokers, controllers, replication_factor })
    }

    /// Every port the cluster will listen on, with what it is for.
    pub fn ports(&self) -> Vec<(SocketAddr, String)> {
        let mut ports = Vec::with_capacity(self.brokers.len() * 3);
        for b in &self.brokers {
            ports.push((b.client, format!("broker {} client", b.id)));
            ports.push((b.peer, format!("broker {} peer", b.id)));
            ports.push((b.metrics, format!("broker {} metrics", b.id)));
        }
        ports
    }

    /// The `broker.toml` for `broker`: the documented default file with this cluster's values in.
    pub fn broker_toml(&self, broker: &BrokerPlan) -> Result<String, String> {
        let data_dir =
            broker.dir.to_str().ok_or_else(|| format!("{} is not UTF-8, which a TOML file cannot hold", broker.dir.display()))?;
        let controllers: Vec<String> = self.controllers.iter().map(|c| toml_string(c)).collect();
        let values = [
            ("", "id", broker.id.to_string()),
            ("", "data_dir", toml_string(data_dir)),
            ("", "listen", toml_string(&broker.client.to_string())),
            ("", "peer_listen", toml_string(&broker.peer.to_string())),
            ("", "metrics_listen", toml_string(&broker.metrics.to_string())),
            ("", "controllers", format!("[{}]", controllers.join(", "))),
            ("topic_defaults", "replication_factor", self.replication_factor.to_string()),
        ];
        let header = format!(
            "# Written by `raftmq dev` for broker {} of {} in {}.\n\
             # Each start checks id, data_dir, listen, peer_listen, metrics_listen and controllers against\n\
             # --brokers and --base-port; the other keys may be edited.\n\n",
            broker.id,
            self.brokers.len(),
            self.dir.display()
        );
        Ok(header + &set_values(broker::options::DEFAULT_TOML, &values)?)
    }

    /// Checks that the `broker-N` directories found in the cluster directory are this plan's:
    /// `Ok(true)` when there are none (a first run), `Ok(false)` when they are exactly 1..=N.
    pub fn check_broker_dirs(&self, found: &BTreeSet<u64>) -> Result<bool, String> {
        if found.is_empty() {
            return Ok(true);
        }
        let planned: BTreeSet<u64> = self.brokers.iter().map(|b| b.id).collect();
        if *found == planned {
            return Ok(false);
        }
        let found_list: Vec<String> = found.iter().map(|id| format!("broker-{id}")).collect();
        Err(format!(
            "{} holds {} (a cluster of {}) but --brokers {} was asked: starting would orphan or mix their data. \
             Run with --brokers {}, use another --data-dir, or remove {} to start afresh",
            self.dir.display(),
            found_list.join(", "),
            found.len(),
            self.brokers.len(),
            found.len(),
            self.dir.display()
        ))
    }

    /// The differences between `config` (loaded from `broker`'s file) and the plan, one line each.
    pub fn config_mismatches(&self, broker: &BrokerPlan, config: &BrokerOptions) -> Vec<String> {
        let mut out = Vec::new();
        let mut compare = |key: &str, found: String, planned: String| {
            if found != planned {
                out.push(format!("{key} is {found} but this run plans {planned}"));
            }
        };
        compare("id", config.id.to_string(), broker.id.to_string());
        compare("data_dir", config.data_dir.display().to_string(), broker.dir.display().to_string());
        compare("listen", config.listen.to_string(), broker.client.to_string());
        compare("peer_listen", config.peer_listen.to_string(), broker.peer.to_string());
        compare("metrics_listen", config.metrics_listen.map(|a| a.to_string()).unwrap_or_default(), broker.metrics.to_string());
        compare("controllers", config.controllers.join(","), self.controllers.join(","));
        out
    }
}

/// The ids of the `broker-N` entries among a directory's entry names.
pub fn broker_dir_ids<'a>(names: impl IntoIterator<Item = &'a OsStr>) -> BTreeSet<u64> {
    names
        .into_iter()
        .filter_map(|name| {
            name.to_str()?.strip_prefix("broker-")?.parse::<u64>().ok().filter(|id| name.to_str() == Some(&format!("broker-{id}")))
        })
        .collect()
}

/// The `RAFTMQ_*` variables among `vars` that would override a key `raftmq dev` sets per broker.
pub fn conflicting_env_vars<'a>(vars: impl IntoIterator<Item = &'a OsStr>) -> Vec<String> {
    vars.into_iter()
        .filter_map(OsStr::to_str)
        .filter(|var| var.strip_prefix(ENV_PREFIX).is_some_and(|rest| PLANNED_ENV_KEYS.contains(&rest.to_ascii_uppercase().as_str())))
        .map(str::to_owned)
        .collect()
}

/// A TOML basic string holding `s`.
fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Replaces the value of each `(section, key)` line `key = value` in `template` ("" is the top
/// level). Each must be found exactly once, so a change to the template cannot silently drop one.
fn set_values(template: &str, values: &[(&str, &str, String)]) -> Result<String, String> {
    let mut applied = vec![0usize; values.len()];
    let mut section = "";
    let mut out = String::with_capacity(template.len() + 256);
    for line in template.lines() {
        let trimmed = line.trim();
        if let Some(name) = trimmed.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
            section = name.trim();
        }
        let key = trimmed.split_once('=').map(|(k, _)| k.trim()).filter(|_| !trimmed.starts_with('#'));
        let found = values.iter().position(|(s, k, _)| *s == section && Some(*k) == key);
        match found {
            Some(i) => {
                applied[i] += 1;
                out.push_str(&format!("{} = {}", values[i].1, values[i].2));
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    match values.iter().zip(&applied).find(|(_, n)| **n != 1) {
        Some(((section, key, _), n)) => Err(format!("the default config has {key} in [{section}] {n} times, not once")),
        None => Ok(out),
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::OsString;

    use figment::Figment;
    use figment::providers::{Format, Toml};

    use super::*;

    fn plan(brokers: u64, base_port: u16) -> ClusterPlan {
        match ClusterPlan::new(Path::new("/tmp/dev"), brokers, base_port) {
            Ok(p) => p,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn ports_follow_the_documented_layout() {
        let p = plan(3, 8081);
        let b2 = &p.brokers[1];
        assert_eq!((b2.id, b2.client.port(), b2.peer.port(), b2.metrics.port()), (2, 8082, 8182, 8282));
        assert_eq!(b2.dir, PathBuf::from("/tmp/dev/broker-2"));
        assert_eq!(b2.config_path, PathBuf::from("/tmp/dev/broker-2/broker.toml"));
        assert_eq!(b2.log_path, PathBuf::from("/tmp/dev/broker-2/broker.log"));
        assert_eq!(p.controllers, ["1@127.0.0.1:8181", "2@127.0.0.1:8182", "3@127.0.0.1:8183"]);
        assert_eq!(p.replication_factor, 3);
    }

    #[test]
    fn small_and_large_clusters_cap_controllers_and_replicas() {
        let one = plan(1, 8081);
        assert_eq!((one.controllers.len(), one.replication_factor), (1, 1));
        let two = plan(2, 8081);
        assert_eq!((two.controllers.len(), two.replication_factor), (2, 2));
        let five = plan(5, 8081);
        assert_eq!((five.controllers.len(), five.replication_factor), (3, 3));
    }

    #[test]
    fn every_port_is_distinct_at_the_largest_cluster() {
        let p = plan(BROKERS_MAX, 1000);
        let ports: BTreeSet<u16> = p.ports().iter().map(|(a, _)| a.port()).collect();
        assert_eq!(ports.len() as u64, 3 * BROKERS_MAX);
    }

    #[test]
    fn out_of_range_plans_are_refused() {
        assert!(ClusterPlan::new(Path::new("/d"), 0, 8081).is_err());
        assert!(ClusterPlan::new(Path::new("/d"), BROKERS_MAX + 1, 8081).is_err());
        assert!(ClusterPlan::new(Path::new("/d"), 1, 0).is_err());
        assert!(ClusterPlan::new(Path::new("/d"), 3, 65535 - 201).is_err());
        assert!(ClusterPlan::new(Path::new("/d"), 3, 65535 - 202).is_ok());
    }

    #[test]
    fn generated_configs_load_as_planned() -> anyhow::Result<()> {
        let p = plan(3, 8081);
        for b in &p.brokers {
            let text = p.broker_toml(b).map_err(anyhow::Error::msg)?;
            let dir = tempfile::tempdir()?;
            let path = dir.path().join("broker.toml");
            std::fs::write(&path, &text)?;
            let config = crate::config::load_from(Some(&path), Vec::new())?;
            assert_eq!(p.config_mismatches(b, &config), Vec::<String>::new());
            assert_eq!(config.topic_defaults.replication_factor, 3);
            // Everything else keeps its default.
            assert_eq!(config.raft, broker::options::RaftOptions::default());
        }
        Ok(())
    }

    #[test]
    fn paths_are_escaped_in_the_toml() -> anyhow::Result<()> {
        let p = ClusterPlan::new(Path::new("/tmp/we\"ird\\dir\tx"), 1, 8081).map_err(anyhow::Error::msg)?;
        let text = p.broker_toml(&p.brokers[0]).map_err(anyhow::Error::msg)?;
        let data_dir: PathBuf = Figment::from(Toml::string(&text)).extract_inner("data_dir")?;
        assert_eq!(data_dir, PathBuf::from("/tmp/we\"ird\\dir\tx/broker-1"));
        Ok(())
    }

    #[test]
    fn set_values_requires_each_key_exactly_once() {
        let template = "a = 1\n# a = 3\n[s]\na = 2\n";
        assert_eq!(set_values(template, &[("s", "a", "9".into())]), Ok("a = 1\n# a = 3\n[s]\na = 9\n".to_owned()));
        assert!(set_values(template, &[("", "b", "9".into())]).is_err());
        assert!(set_values("a = 1\na = 2\n", &[("", "a", "9".into())]).is_err());
    }

    #[test]
    fn broker_dirs_are_recognised_by_exact_name() {
        let names = ["broker-1", "broker-2", "broker-03", "broker-", "broker-x", "brokers", "notes.txt", "broker-10"];
        let names: Vec<OsString> = names.iter().map(OsString::from).collect();
        assert_eq!(broker_dir_ids(names.iter().map(OsString::as_os_str)), BTreeSet::from([1, 2, 10]));
    }

    #[test]
    fn an_existing_cluster_must_have_the_asked_broker_count() {
        let p = plan(3, 8081);
        assert_eq!(p.check_broker_dirs(&BTreeSet::new()), Ok(true));
        assert_eq!(p.check_broker_dirs(&BTreeSet::from([1, 2, 3])), Ok(false));
        let fewer = p.check_broker_dirs(&BTreeSet::from([1, 2])).err().unwrap_or_default();
        assert!(fewer.contains("broker-1, broker-2 (a cluster of 2) but --brokers 3") && fewer.contains("--brokers 2"), "{fewer}");
        assert!(p.check_broker_dirs(&BTreeSet::from([1, 2, 3, 4])).is_err());
        assert!(p.check_broker_dirs(&BTreeSet::from([1, 2, 4])).is_err());
    }

    #[test]
    fn existing_configs_on_other_ports_are_reported() -> anyhow::Result<()> {
        let old = plan(3, 8081);
        let new = plan(3, 9000);
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("broker.toml");
        std::fs::write(&path, old.broker_toml(&old.brokers[1]).map_err(anyhow::Error::msg)?)?;
        let config = crate::config::load_from(Some(&path), Vec::new())?;
        let mismatches = new.config_mismatches(&new.brokers[1], &config);
        assert_eq!(
            mismatches,
            [
                "listen is 127.0.0.1:8082 but this run plans 127.0.0.1:9001",
                "peer_listen is 127.0.0.1:8182 but this run plans 127.0.0.1:9101",
                "metrics_listen is 127.0.0.1:8282 but this run plans 127.0.0.1:9201",
                concat!(
                    "controllers is 1@127.0.0.1:8181,2@127.0.0.1:8182,3@127.0.0.1:8183",
                    " but this run plans 1@127.0.0.1:9100,2@127.0.0.1:9101,3@127.0.0.1:9102"
                ),
            ]
        );
        // The same broker under the same plan matches, and another broker's file does not.
        assert!(old.config_mismatches(&old.brokers[1], &config).is_empty());
        assert!(old.config_mismatches(&old.brokers[0], &config).iter().any(|m| m.starts_with("id is 2")));
        Ok(())
    }

    #[test]
    fn per_broker_environment_overrides_are_found() {
        let vars: Vec<OsString> =
            ["RAFTMQ_LISTEN", "RAFTMQ_data_dir", "RAFTMQ_RAFT__HEARTBEAT_INTERVAL_MS", "RAFTMQ_ENDPOINT", "LISTEN", "RAFTMQ_CONTROLLERS"]
                .iter()
                .map(OsString::from)
                .collect();
        assert_eq!(conflicting_env_vars(vars.iter().map(OsString::as_os_str)), ["RAFTMQ_LISTEN", "RAFTMQ_data_dir", "RAFTMQ_CONTROLLERS"]);
    }
}
