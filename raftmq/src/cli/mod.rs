//! The client commands over the [`client`] crate: `raftmq admin`, `raftmq produce`, `raftmq
//! consume`, and what the broker benchmarks (`raftmq bench produce|consume|e2e`) share with
//! them: the `--broker` and `--timeout` arguments, exit codes, output. Sends carry a random
//! producer id and increasing sequences, so the broker stores a retried message once.

pub mod admin;
pub mod consume;
pub mod produce;
mod table;

use std::sync::Arc;

use clap::Args;
use client::Cluster;
use client::connection;

/// Exit code when a command ran but what it checks did not hold: replicas disagree
/// (`admin group checksum`), a benchmark did not complete its count.
pub const EXIT_CHECK_FAILED: u8 = 1;
/// Exit code of `produce` when its last send's outcome is unknown: it may or may not be stored.
pub const EXIT_OUTCOME_UNKNOWN: u8 = 3;

/// Where the client connects, and how long a call may take.
#[derive(Args, Debug, Clone)]
pub struct ConnectArgs {
    /// Brokers' client endpoints, HOST:PORT, comma-separated. Any one that answers will do: the
    /// client learns the others from the cluster, and calls for a queue go to its leader.
    #[arg(
        long,
        env = "RAFTMQ_BROKER",
        default_value = "127.0.0.1:8081",
        value_delimiter = ',',
        value_parser = connection::parse_endpoint
    )]
    pub broker: Vec<String>,
    /// Deadline of each call, its retries included: `3s`, `500ms`, `1m` (a bare number is
    /// seconds). A send that is not acknowledged by then ends with an error (exit code 3: it may
    /// still be stored).
    #[arg(long, env = "RAFTMQ_TIMEOUT", default_value = client::TIMEOUT_DEFAULT, value_parser = connection::parse_timeout)]
    pub timeout: std::time::Duration,
}

impl ConnectArgs {
    pub fn cluster(&self) -> Arc<Cluster> {
        Cluster::new(self.broker.clone(), self.timeout, client::RetryPolicy::default())
    }
}

/// The options of commands that only need a broker and an output format.
#[derive(Args, Debug, Clone)]
pub struct CommonArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Print JSON on stdout instead of text: one object per message (produce, consume), else one
    /// object in all.
    #[arg(long)]
    pub json: bool,
}

/// The runtime of one client command.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

/// A producer id unique to this process, for the broker's deduplication of retried sends.
/// One JSON object on a line of its own: the `--json` output of every command.
pub fn write_json_line(out: &mut impl std::io::Write, value: &impl serde::Serialize) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, value)?;
    writeln!(out)
}

pub fn producer_id() -> String {
    client::producer_id("raftmq-cli")
}

/// Parsing one command's arguments in tests, as the binary would: `name ARGS...`, after clap's
/// own check of the definition.
#[cfg(test)]
pub(crate) mod args_in_tests {
    use clap::{CommandFactory, Parser};

    #[derive(Parser)]
    struct Flattened<T: clap::Args> {
        #[command(flatten)]
        args: T,
    }

    #[derive(Parser)]
    struct Subcommands<T: clap::Subcommand> {
        #[command(subcommand)]
        command: T,
    }

    /// Arguments of type `T` (flattened into a command called `name`), from `args`.
    pub(crate) fn parse<T: clap::Args>(name: &str, args: &[&str]) -> Result<T, clap::Error> {
        Flattened::<T>::command().debug_assert();
        Flattened::<T>::try_parse_from(std::iter::once(name).chain(args.iter().copied())).map(|c| c.args)
    }

    /// `T::from_test_args(&["--topic", "t"])`: [`parse`] under the binary's name.
    pub(crate) trait FromTestArgs: clap::Args + Sized {
        fn from_test_args(args: &[&str]) -> Result<Self, clap::Error> {
            parse("raftmq", args)
        }
    }

    impl<T: clap::Args> FromTestArgs for T {}

    /// clap's own check of a subcommand tree's definition (it panics on an inconsistency).
    pub(crate) fn check_subcommand<T: clap::Subcommand>() {
        Subcommands::<T>::command().debug_assert();
    }

    /// A subcommand tree `T` under a command called `name`, from `args`.
    pub(crate) fn parse_subcommand<T: clap::Subcommand>(name: &str, args: &[&str]) -> Result<T, clap::Error> {
        check_subcommand::<T>();
        Subcommands::<T>::try_parse_from(std::iter::once(name).chain(args.iter().copied())).map(|c| c.command)
    }
}
