//! `raftmq broker --config FILE`: runs one broker until SIGTERM or Ctrl-C, then stops it
//! cleanly (client requests drain, groups stop, the store is flushed).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use broker::server::BrokerServer;
use clap::Args;

use broker::options::BrokerOptions;

use crate::config;

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

pub fn run(args: BrokerArgs) -> anyhow::Result<ExitCode> {
    if args.print_default_config {
        std::io::Write::write_all(&mut std::io::stdout().lock(), broker::options::DEFAULT_TOML.as_bytes())?;
        return Ok(ExitCode::SUCCESS);
    }
    let config = config::load(args.config.as_deref())?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the tokio runtime")?;
    runtime.block_on(serve(config))?;
    Ok(ExitCode::SUCCESS)
}

async fn serve(config: BrokerOptions) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let id = config.id;
    let broker = BrokerServer::start(config).await.with_context(|| format!("starting broker {id}"))?;
    tracing::info!(
        broker = id,
        client = %broker.client_addr(),
        peer = %broker.node(),
        metrics = ?broker.metrics_addr(),
        "serving"
    );
    let fatal = tokio::select! {
        _ = tokio::signal::ctrl_c() => { tracing::info!("interrupted; stopping"); None }
        _ = terminate.recv() => { tracing::info!("terminated; stopping"); None }
        fatal = broker.fatal() => { tracing::error!(broker = id, error = %fatal, "stopping: a hosted group is dead"); Some(fatal) }
    };
    let stopped = tokio::time::timeout(STOP_WAIT, broker.shutdown()).await;
    if let Some(fatal) = fatal {
        // Exit non-zero whatever the stop did: a supervisor restarts the broker, and the group
        // reopens from its log.
        return Err(anyhow::anyhow!(fatal).context(format!("broker {} stopped", id)));
    }
    stopped.map_err(|_| anyhow::anyhow!("the broker did not stop within {STOP_WAIT:?}"))?.context("stopping the broker")?;
    tracing::info!(broker = id, "stopped");
    Ok(())
}
