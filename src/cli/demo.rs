//! `credproxy demo`: a token server, an API and credproxy in front, all in this process; prints
//! what is running and a curl line to try, logs each token refresh, stops on Ctrl-C or SIGTERM.
//!
//! The pieces live in [`crate::demo`]; this file is the command: flags, output, signals.

use std::net::SocketAddr;
use std::pin::pin;
use std::process::ExitCode;
use std::time::Duration;

use tokio::signal::unix::{Signal, SignalKind, signal};

use super::logging::{self, LogFormat};
use super::{EXIT_RUNTIME, report};
use crate::demo::{self, DemoError};

/// Requests in flight get this long at Ctrl-C: the demo API answers at once.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// Say that we are waiting when starting takes longer than this.
const SLOW_START: Duration = Duration::from_secs(2);

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address of credproxy's listener for the demo API (a loopback address; port 0 picks a free
    /// port).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0", value_parser = parse_listen)]
    pub listen: SocketAddr,
    /// How long each token from the demo token server lives (whole seconds, at least 1s).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_lifetime)]
    pub token_lifetime: Duration,
}

fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    let addr: SocketAddr = s
        .parse()
        .map_err(|_| format!("`{s}` is not an address such as 127.0.0.1:7001"))?;
    if !addr.ip().is_loopback() {
        return Err(format!(
            "the demo listens on loopback only: try 127.0.0.1:{}",
            addr.port()
        ));
    }
    Ok(addr)
}

fn parse_lifetime(s: &str) -> Result<Duration, String> {
    let d = crate::config::validate::parse_duration(s)?;
    if d < Duration::from_secs(1) || d.subsec_nanos() != 0 {
        return Err(format!(
            "`{s}`: a token lifetime is whole seconds, at least 1s (such as \"30s\" or \"2m\")"
        ));
    }
    Ok(d)
}

pub fn main(args: Args) -> ExitCode {
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
    runtime.block_on(run(args))
}

async fn run(args: Args) -> ExitCode {
    // Listen for signals before anything starts: a Ctrl-C during start must stop us cleanly too.
    let mut signals = match Signals::new() {
        Ok(s) => s,
        Err(e) => {
            report(&e);
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    // Logs start after the banner (below), unless asked for: then from the start, to see why it
    // might not.
    if std::env::var_os("CREDPROXY_LOG").is_some() {
        logging::init(LogFormat::Text);
    }
    let opts = demo::Options {
        listen: args.listen,
        token_lifetime: args.token_lifetime,
    };
    let start = demo::start(opts);
    let mut start = pin!(start);
    // Start takes milliseconds; if it takes seconds, say what we are waiting for.
    let mut slow = pin!(tokio::time::sleep(SLOW_START));
    let mut said_slow = false;
    let demo = loop {
        tokio::select! {
            started = &mut start => match started {
                Ok(d) => break d,
                Err(e) => {
                    let hint = hint(&e);
                    report(&anyhow::Error::new(e));
                    if let Some(hint) = hint {
                        eprintln!("hint: {hint}");
                    }
                    return ExitCode::from(EXIT_RUNTIME);
                }
            },
            _ = &mut slow, if !said_slow => {
                said_slow = true;
                eprintln!("credproxy demo: waiting for credproxy's first token from the demo token server...");
            }
            // Dropping the half-started demo stops its tasks with the runtime.
            _ = signals.recv() => return ExitCode::SUCCESS,
        }
    };
    println!("{}", demo.banner());
    // The banner is the first thing on the screen; the log below it is the story from there:
    // each refresh, each token issued. (A no-op when logging already started.)
    logging::init(LogFormat::Text);
    signals.recv().await;
    tracing::info!("stopping the demo");
    if demo.shutdown(SHUTDOWN_GRACE).await {
        tracing::info!("stopped");
    }
    ExitCode::SUCCESS
}

fn hint(e: &DemoError) -> Option<&'static str> {
    match e {
        DemoError::App(crate::app::AppError::Bind { .. }) => {
            Some("is the port in use? pick another with --listen 127.0.0.1:PORT, or omit --listen")
        }
        DemoError::NoToken { .. } => Some("run with CREDPROXY_LOG=debug to see the token requests"),
        _ => None,
    }
}

/// SIGINT (Ctrl-C) and SIGTERM.
struct Signals {
    int: Signal,
    term: Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Self> {
        use anyhow::Context;
        Ok(Signals {
            int: signal(SignalKind::interrupt()).context("can't listen for SIGINT")?,
            term: signal(SignalKind::terminate()).context("can't listen for SIGTERM")?,
        })
    }

    async fn recv(&mut self) {
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
    }
}
