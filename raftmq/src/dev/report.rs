//! What `raftmq dev` prints once the cluster is ready: every broker's endpoints and files, and
//! the commands to try next, as text or as one JSON object.

use std::fmt::Write;

use serde::Serialize;

/// The client endpoint that the client commands use when given none.
const CLIENT_ENDPOINT_DEFAULT: &str = "127.0.0.1:8081";

#[derive(Debug, Serialize)]
pub struct ClusterReport {
    pub data_dir: String,
    pub brokers: Vec<BrokerReport>,
    /// `ID@PEER` of the metadata group's voters.
    pub controllers: Vec<String>,
    pub next_commands: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct BrokerReport {
    pub id: u64,
    pub pid: u32,
    /// What clients connect to (`advertise`).
    pub client: String,
    /// What brokers connect to (`peer_advertise`).
    pub peer: String,
    /// The Prometheus scrape URL.
    pub metrics: String,
    pub data_dir: String,
    pub config: String,
    pub log: String,
}

/// The commands to try on a fresh cluster; they name the first broker unless it is the default.
pub fn next_commands(first_client: &str) -> Vec<String> {
    let suffix = if first_client == CLIENT_ENDPOINT_DEFAULT { String::new() } else { format!(" --broker {first_client}") };
    [
        "raftmq admin topic create demo",
        "echo hello | raftmq produce --topic demo",
        "raftmq consume --topic demo --from-beginning",
        "raftmq admin cluster status",
    ]
    .iter()
    .map(|c| format!("{c}{suffix}"))
    .collect()
}

impl ClusterReport {
    pub fn text(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = writeln!(out, "raftmq dev: {} brokers ready, data in {}\n", self.brokers.len(), self.data_dir);
        for b in &self.brokers {
            let _ = writeln!(out, "broker {} (pid {})", b.id, b.pid);
            for (what, value) in [
                ("client", &b.client),
                ("peer", &b.peer),
                ("metrics", &b.metrics),
                ("data", &b.data_dir),
                ("config", &b.config),
                ("log", &b.log),
            ] {
                let _ = writeln!(out, "  {what:<8} {value}");
            }
        }
        let _ = writeln!(out, "\nmetadata group: {}\n\nTry:", self.controllers.join(", "));
        for c in &self.next_commands {
            let _ = writeln!(out, "  {c}");
        }
        let _ = writeln!(out, "\nCtrl-C stops the cluster; `raftmq dev` with the same --data-dir starts it again on its data.");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> ClusterReport {
        ClusterReport {
            data_dir: "/d".to_owned(),
            brokers: vec![BrokerReport {
                id: 1,
                pid: 42,
                client: "127.0.0.1:8081".to_owned(),
                peer: "127.0.0.1:8181".to_owned(),
                metrics: "http://127.0.0.1:8281/metrics".to_owned(),
                data_dir: "/d/broker-1".to_owned(),
                config: "/d/broker-1/broker.toml".to_owned(),
                log: "/d/broker-1/broker.log".to_owned(),
            }],
            controllers: vec!["1@127.0.0.1:8181".to_owned()],
            next_commands: next_commands("127.0.0.1:8081"),
        }
    }

    #[test]
    fn text_lists_endpoints_files_and_commands() {
        let text = report().text();
        for expected in [
            "1 brokers ready, data in /d",
            "broker 1 (pid 42)",
            "  client   127.0.0.1:8081",
            "  metrics  http://127.0.0.1:8281/metrics",
            "  log      /d/broker-1/broker.log",
            "metadata group: 1@127.0.0.1:8181",
            "  raftmq admin topic create demo\n",
            "  raftmq consume --topic demo --from-beginning\n",
        ] {
            assert!(text.contains(expected), "{expected:?} missing from:\n{text}");
        }
    }

    #[test]
    fn json_is_one_object_with_the_same_facts() -> anyhow::Result<()> {
        let value: serde_json::Value = serde_json::from_str(&serde_json::to_string(&report())?)?;
        assert_eq!(value["brokers"][0]["client"], "127.0.0.1:8081");
        assert_eq!(value["brokers"][0]["pid"], 42);
        assert_eq!(value["next_commands"][3], "raftmq admin cluster status");
        Ok(())
    }

    #[test]
    fn commands_name_a_broker_off_the_default_port() {
        assert_eq!(next_commands("127.0.0.1:8081")[0], "raftmq admin topic create demo");
        assert_eq!(next_commands("127.0.0.1:9000")[1], "echo hello | raftmq produce --topic demo --broker 127.0.0.1:9000");
    }
}
