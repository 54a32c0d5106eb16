//! `credproxy run`: the proxy, until SIGTERM or SIGINT.

use std::process::ExitCode;

use anyhow::Context;

use super::logging::{self, LogFormat};
use super::{ConfigArg, EXIT_CONFIG, EXIT_RUNTIME};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Log format (also CREDPROXY_LOG_FORMAT). The level comes from CREDPROXY_LOG, e.g. "debug".
    #[arg(long, value_enum, env = "CREDPROXY_LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,
}

pub fn main(args: Args) -> ExitCode {
    logging::init(args.log_format);
    let path = match crate::config::locate(args.config.config.as_deref()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let config = match crate::config::load(&path) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!(
                "error: {errors}\n(run `credproxy check --config {}` for details)",
                path.display()
            );
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: can't start the runtime: {e}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            super::report(&e);
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

async fn run(config: crate::config::Config) -> anyhow::Result<()> {
    let grace = config.proxy.shutdown_grace;
    let running = crate::app::start(config)
        .await
        .context("credproxy could not start")?;
    wait_for_signal().await?;
    tracing::info!(?grace, "shutting down: finishing requests in flight");
    if running.shutdown(grace).await {
        tracing::info!("stopped");
    }
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("can't listen for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("can't listen for SIGINT")?;
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
    Ok(())
}
