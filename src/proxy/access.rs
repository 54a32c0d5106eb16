//! Phase 9, log: the per-request access line (`credproxy::access` at info) and what it records
//! about a request, written the same way by both transports.

use tokio::time::Instant;

use super::error::Blame;

/// What the log line needs to know about a request.
pub(super) struct Outcome<'a> {
    pub(super) provider: Option<&'a str>,
    /// The provider's index in the router, for metrics.
    pub(super) index: Option<usize>,
    pub(super) blame: Option<Blame>,
}

/// Whether the per-request access line is on (`credproxy::access` at info).
pub fn access_enabled() -> bool {
    tracing::enabled!(target: "credproxy::access", tracing::Level::INFO)
}

/// The per-request access line.
pub fn access_line(
    method: &str,
    host: &str,
    path: &str,
    status: u16,
    start: Instant,
    provider: Option<&str>,
    blame: Option<Blame>,
) {
    tracing::info!(
        target: "credproxy::access",
        method = %method,
        host = %host,
        path = %path,
        status,
        duration_ms = (start.elapsed().as_micros() as f64) / 1000.0,
        provider = provider.unwrap_or("-"),
        fault = blame.map_or("-", Blame::as_str),
    );
}
