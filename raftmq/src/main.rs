//! The `raftmq` command line: parses arguments and calls into the libraries.
//!
//! Exit codes: 0 success, 1 the log is damaged (`log verify`, `log dump`) or a check failed
//! (`admin group checksum`: replicas disagree; `bench produce|consume|e2e`: the count was not
//! done; `jepsen check`: the history shows an anomaly), 2 any other error (bad arguments, a missing directory, an I/O failure, a refused
//! request), 3 `produce`: a send's outcome is unknown (it may be stored).

mod bench;
mod broker_cmd;
mod cli;
mod config;
mod dev;
mod jepsen_cmd;
mod log_tools;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(name = "raftmq", version, about = "raftmq: a Raft-replicated message store")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Offline tools for a raft-log directory (read-only).
    #[command(subcommand)]
    Log(log_tools::LogCommand),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Run one broker (for real deployments; `raftmq dev` runs a local cluster).
    Broker(broker_cmd::BrokerArgs),
    /// Run a local cluster of brokers until Ctrl-C; a later run with the same --data-dir brings it back.
    Dev(dev::DevArgs),
    /// Operator commands: topics, cluster status, replica checksums.
    #[command(subcommand)]
    Admin(cli::admin::AdminCommand),
    /// Send stdin's lines (or generated messages) to a topic; prints where each was stored.
    Produce(cli::produce::ProduceArgs),
    /// Print a topic's messages, optionally as a consumer group that commits its progress.
    Consume(cli::consume::ConsumeArgs),
    /// Fault campaigns against a cluster and their checker.
    #[command(subcommand)]
    Jepsen(jepsen_cmd::JepsenCommand),
}

/// Exit code for errors other than a damaged log.
const EXIT_ERROR: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Logs go to stderr so that stdout carries only the command's output (text or JSON).
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let result = match cli.command {
        Command::Log(cmd) => log_tools::run(cmd),
        Command::Bench(cmd) => bench::run(cmd),
        Command::Dev(args) => dev::run(args),
        Command::Broker(args) => broker_cmd::run(args),
        Command::Admin(cmd) => cli::admin::run(cmd),
        Command::Produce(args) => cli::produce::run(args),
        Command::Consume(args) => cli::consume::run(args),
        Command::Jepsen(cmd) => jepsen_cmd::run(cmd),
    };
    match result {
        Ok(code) => code,
        // The reader of stdout is gone (`raftmq ... | head`): nothing more can be said to it,
        // and like any Unix tool the command ends quietly. SIGPIPE stays ignored (Rust's
        // default), so a broker's or client's closed socket is an error, never a kill.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

/// Whether `e` comes from a write to a pipe whose reader has closed it (EPIPE).
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_broken_pipe_ends_quietly() {
        let pipe = std::io::Error::from(std::io::ErrorKind::BrokenPipe);
        assert!(is_broken_pipe(&anyhow::Error::new(pipe).context("writing to stdout")));
        let log = raft_log::LogError::Io { path: "<stdout>".into(), source: std::io::Error::from(std::io::ErrorKind::BrokenPipe) };
        assert!(is_broken_pipe(&anyhow::Error::new(log)), "found through a library error's source");
        assert!(!is_broken_pipe(&anyhow::Error::new(std::io::Error::from(std::io::ErrorKind::ConnectionReset))));
        assert!(!is_broken_pipe(&anyhow::anyhow!("broken pipe, in words only")));
    }
}
