//! `raftmq broker --config FILE`: runs one broker until SIGTERM or Ctrl-C, then stops it
//! cleanly (client requests drain, groups stop, the store is flushed).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use broker::host::HostOptions;
use broker::queue::RetentionPolicy;
use broker::server::{BrokerOptions, BrokerServer, HibernationOptions, RetentionOptions, TopicDefaults};
use clap::Args;

use crate::config::BrokerConfig;

#[derive(Args)]
pub struct BrokerArgs {
    /// The broker's TOML configuration; every key has a default but `id` (see
    /// --print-default-config). `RAFTMQ_*` environment variables override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Print the documented default configuration and exit.
    #[arg(long)]
    print_default_config: bool,
}

/// How long a stop may take before the process exits anyway.
const STOP_WAIT: Duration = Duration::from_secs(30);
/// Under the data directory: the slow-fsync test mode's delay (`[testing] fsync_delay_file`).
const FSYNC_DELAY_FILE: &str = jepsen::cluster::FSYNC_DELAY_FILE;

/// The broker's options from its configuration file.
pub fn options(c: &BrokerConfig) -> BrokerOptions {
    let mut host = HostOptions::new(c.id, &c.data_dir);
    host.raft_listen = c.peer_listen;
    host.raft = openraft::Config {
        cluster_name: "raftmq".into(),
        heartbeat_interval: c.raft.heartbeat_interval_ms,
        election_timeout_min: c.raft.election_timeout_min_ms,
        election_timeout_max: c.raft.election_timeout_max_ms,
        // Snapshots and purges are the broker's decision (retention), not a log-size policy.
        snapshot_policy: openraft::SnapshotPolicy::Never,
        max_in_snapshot_log_to_keep: 0,
        ..Default::default()
    };
    host.power_loss_test_mode = c.testing.power_loss;
    host.fsync_delay_file = c.testing.fsync_delay_file.then(|| c.data_dir.join(FSYNC_DELAY_FILE));
    host.torn_pages_test_mode = c.testing.torn_pages;
    host.store_flush_files = c
        .testing
        .store_flush_file
        .then(|| (c.data_dir.join(jepsen::cluster::STORE_FLUSH_FILE), c.data_dir.join(jepsen::cluster::STORE_FLUSHED_FILE)));
    host.log.segment_bytes = c.log.segment_bytes;
    host.log.ack_before_sync = Some(Duration::from_millis(c.testing.ack_before_fsync_ms)).filter(|d| !d.is_zero());
    let mut o = BrokerOptions::new(host);
    o.client_listen = c.listen;
    o.client_advertise = Some(c.advertise.clone()).filter(|a| !a.is_empty());
    o.peer_advertise = Some(c.peer_advertise.clone()).filter(|a| !a.is_empty());
    o.controllers = c.controllers.clone();
    o.limits = c.limits.edge_limits();
    o.fetch_wait_max = Duration::from_millis(c.limits.fetch_wait_ms_max);
    o.in_flight_request_bytes_max = c.limits.in_flight_request_bytes_max;
    o.streams_per_connection_max = u32::try_from(c.limits.in_flight_requests_per_connection).unwrap_or(u32::MAX);
    o.send = c.send.batch_limits();
    o.consumer_groups_per_queue_max = c.limits.consumer_groups_per_queue_max;
    o.retention = RetentionOptions {
        policy: RetentionPolicy {
            max_age_ms: c.retention.max_age_ms,
            max_log_entries: if c.retention.max_log_entries == 0 { u64::MAX } else { c.retention.max_log_entries },
        },
        check_interval: Duration::from_millis(c.retention.check_interval_ms),
        checkpoint_interval: Duration::from_millis(c.retention.checkpoint_interval_ms),
    };
    o.topic_defaults = TopicDefaults {
        queue_count: c.topic_defaults.queue_count,
        replication_factor: c.topic_defaults.replication_factor,
        checkpoint_interval_entries: c.topic_defaults.checkpoint_interval_entries,
    };
    o.hibernation = HibernationOptions { after: Some(Duration::from_millis(c.raft.hibernate_after_ms)).filter(|d| !d.is_zero()) };
    o.store_flush_interval = Duration::from_millis(c.store.flush_interval_ms);
    o.metrics_listen = c.metrics_listen;
    o
}

pub fn run(args: BrokerArgs) -> anyhow::Result<ExitCode> {
    if args.print_default_config {
        std::io::Write::write_all(&mut std::io::stdout().lock(), BrokerConfig::default_toml().as_bytes())?;
        return Ok(ExitCode::SUCCESS);
    }
    let config = BrokerConfig::load(args.config.as_deref())?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the tokio runtime")?;
    runtime.block_on(serve(config))?;
    Ok(ExitCode::SUCCESS)
}

async fn serve(config: BrokerConfig) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let broker = BrokerServer::start(options(&config)).await.with_context(|| format!("starting broker {}", config.id))?;
    tracing::info!(
        broker = config.id,
        client = %broker.client_addr(),
        peer = %broker.node(),
        metrics = ?broker.metrics_addr(),
        "serving"
    );
    let fatal = tokio::select! {
        _ = tokio::signal::ctrl_c() => { tracing::info!("interrupted; stopping"); None }
        _ = terminate.recv() => { tracing::info!("terminated; stopping"); None }
        fatal = broker.fatal() => { tracing::error!(broker = config.id, error = %fatal, "stopping: a hosted group is dead"); Some(fatal) }
    };
    let stopped = tokio::time::timeout(STOP_WAIT, broker.shutdown()).await;
    if let Some(fatal) = fatal {
        // Exit non-zero whatever the stop did: a supervisor restarts the broker, and the group
        // reopens from its log.
        return Err(anyhow::anyhow!(fatal).context(format!("broker {} stopped", config.id)));
    }
    stopped.map_err(|_| anyhow::anyhow!("the broker did not stop within {STOP_WAIT:?}"))?.context("stopping the broker")?;
    tracing::info!(broker = config.id, "stopped");
    Ok(())
}
