//! `credproxy run`: the proxy, until SIGTERM or SIGINT; SIGHUP reloads the config.

use std::process::ExitCode;

use anyhow::Context;

use super::logging::{self, LogFormat};
use super::{ConfigArg, EXIT_RUNTIME};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Log format (also CREDPROXY_LOG_FORMAT). The level comes from CREDPROXY_LOG, e.g. "debug".
    #[arg(long, value_enum, env = "CREDPROXY_LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,
    /// Worker threads serving connections (default: one per CPU core). Each has its own
    /// single-threaded runtime and listening socket; token refreshes and the admin listener
    /// run beside them.
    #[arg(long, env = "CREDPROXY_WORKERS", value_name = "N")]
    pub workers: Option<usize>,
}

pub fn main(args: Args) -> ExitCode {
    logging::init(args.log_format);
    let (path, config) = match args.config.load() {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    let workers = args
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    // The main runtime carries the refreshers, the admin listener and signals: light work, one
    // thread. Connections run on the workers.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: can't start the runtime: {e}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    match runtime.block_on(run(config, path, workers.max(1))) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            super::report(&e);
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

async fn run(
    config: crate::config::Config,
    path: std::path::PathBuf,
    workers: usize,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let grace = config.proxy.shutdown_grace;
    let mut term = signal(SignalKind::terminate()).context("can't listen for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("can't listen for SIGINT")?;
    let mut hup = signal(SignalKind::hangup()).context("can't listen for SIGHUP")?;
    let running = crate::app::start_with(
        config,
        crate::app::Options {
            workers,
            ..Default::default()
        },
    )
    .await
    .context("credproxy could not start")?;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => reload(&running, &path).await,
        }
    }
    tracing::info!(?grace, "shutting down: finishing requests in flight");
    if running.shutdown(grace).await {
        tracing::info!("stopped");
    }
    Ok(())
}

/// SIGHUP: validate the file first; on any error the running config stays in force.
async fn reload(running: &crate::app::Running, path: &std::path::Path) {
    tracing::info!(config = %path.display(), "SIGHUP: reloading the config");
    // Log rotation first: the audit log is reopened even if the new config is refused.
    running.reopen_audit();
    // Off the runtime's threads: loading runs each `{ command }` secret (up to 10 s apiece).
    let load = tokio::task::spawn_blocking({
        let path = path.to_owned();
        move || crate::config::load(&path)
    });
    let config = match load.await {
        Ok(Ok(c)) => c,
        Err(e) => {
            tracing::error!(error = %e, "reload refused: the config could not be loaded");
            return;
        }
        Ok(Err(errors)) => {
            tracing::error!(
                "reload refused, the running config stays in force:\n{}",
                errors.report()
            );
            return;
        }
    };
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    match running.reload(config).await {
        Ok(s) => {
            tracing::info!(
                kept = ?s.kept,
                restarted = ?s.restarted,
                added = ?s.added,
                removed = ?s.removed,
                listeners_opened = ?s.listeners_opened,
                listeners_closed = ?s.listeners_closed,
                "config reloaded"
            );
            if !s.needs_restart.is_empty() {
                tracing::warn!(settings = ?s.needs_restart, "these settings take effect after a restart");
            }
        }
        Err(e) => tracing::error!(
            error = %format!("{:#}", anyhow::Error::from(e)),
            "reload refused, the running config stays in force"
        ),
    }
}
