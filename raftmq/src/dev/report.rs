//! What `raftmq dev` prints once the cluster is ready: every broker's endpoints and files, and
//! the commands to try next, as text or as one JSON object.

use std::fmt::Write;
use std::path::Path;

use serde::Serialize;

/// The client endpoint that the client commands use when given none.
const CLIENT_ENDPOINT_DEFAULT: &str = "127.0.0.1:8081";

#[derive(Debug, Serialize)]
pub struct ClusterReport {
    pub data_dir: String,
    pub brokers: Vec<BrokerReport>,
    /// `ID@PEER` of the metadata group's voters.
    pub controllers: Vec<String>,
    /// The shell line that points every later client command at all the brokers.
    pub broker_env: String,
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

/// The commands to try on a fresh cluster, each runnable as printed: they name this program by
/// its absolute path (`raftmq` need not be on the PATH, as `scripts/raftmq dev` leaves it), and
/// every broker unless the first is at the default endpoint.
pub fn next_commands(exe: &Path, clients: &[String]) -> Vec<String> {
    let exe = shell_word(&exe.display().to_string());
    let suffix = match clients.first() {
        Some(first) if first != CLIENT_ENDPOINT_DEFAULT => format!(" --broker {}", clients.join(",")),
        _ => String::new(),
    };
    [
        format!("{exe} admin topic create demo"),
        format!("echo hello | {exe} produce --topic demo"),
        format!("{exe} consume --topic demo --from-beginning"),
        format!("{exe} admin cluster status"),
    ]
    .into_iter()
    .map(|c| format!("{c}{suffix}"))
    .collect()
}

/// `export RAFTMQ_BROKER=...` naming every broker: a client given them all keeps working
/// whichever broker is down.
pub fn broker_env(clients: &[String]) -> String {
    format!("export RAFTMQ_BROKER={}", shell_word(&clients.join(",")))
}

/// `word` as one word for a POSIX shell: as is when it holds only characters no shell treats
/// specially, else single-quoted.
fn shell_word(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-+:,@%=".contains(c);
    if !word.is_empty() && word.chars().all(plain) { word.to_string() } else { format!("'{}'", word.replace('\'', "'\\''")) }
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
        let _ = writeln!(
            out,
            "\nmetadata group: {}\n\nPoint later commands at every broker:\n  {}\n\nTry:",
            self.controllers.join(", "),
            self.broker_env
        );
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
            broker_env: broker_env(&["127.0.0.1:8081".to_owned()]),
            next_commands: next_commands(Path::new("/opt/raftmq/bin/raftmq"), &["127.0.0.1:8081".to_owned()]),
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
            "Point later commands at every broker:\n  export RAFTMQ_BROKER=127.0.0.1:8081\n",
            "  /opt/raftmq/bin/raftmq admin topic create demo\n",
            "  /opt/raftmq/bin/raftmq consume --topic demo --from-beginning\n",
        ] {
            assert!(text.contains(expected), "{expected:?} missing from:\n{text}");
        }
    }

    #[test]
    fn json_is_one_object_with_the_same_facts() -> anyhow::Result<()> {
        let value: serde_json::Value = serde_json::from_str(&serde_json::to_string(&report())?)?;
        assert_eq!(value["brokers"][0]["client"], "127.0.0.1:8081");
        assert_eq!(value["brokers"][0]["pid"], 42);
        assert_eq!(value["next_commands"][3], "/opt/raftmq/bin/raftmq admin cluster status");
        assert_eq!(value["broker_env"], "export RAFTMQ_BROKER=127.0.0.1:8081");
        Ok(())
    }

    #[test]
    fn commands_name_every_broker_off_the_default_port() {
        let exe = Path::new("/r/raftmq");
        let three: Vec<String> = (0..3).map(|i| format!("127.0.0.1:{}", 8081 + i)).collect();
        assert_eq!(next_commands(exe, &three)[0], "/r/raftmq admin topic create demo");
        let moved: Vec<String> = (0..3).map(|i| format!("127.0.0.1:{}", 9000 + i)).collect();
        assert_eq!(
            next_commands(exe, &moved)[1],
            "echo hello | /r/raftmq produce --topic demo --broker 127.0.0.1:9000,127.0.0.1:9001,127.0.0.1:9002"
        );
        assert_eq!(broker_env(&three), "export RAFTMQ_BROKER=127.0.0.1:8081,127.0.0.1:8082,127.0.0.1:8083");
    }

    #[test]
    fn a_path_a_shell_would_split_is_quoted() {
        assert_eq!(next_commands(Path::new("/home/a b/raftmq"), &[])[3], "'/home/a b/raftmq' admin cluster status");
        assert_eq!(shell_word("it's"), "'it'\\''s'");
        assert_eq!(shell_word(""), "''");
    }
}
