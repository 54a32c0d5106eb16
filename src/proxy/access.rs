//! Phase 9, log: the per-request access line (`credproxy::access` at info) and what it records
//! about a request, written the same way by both transports.

use tokio::time::Instant;

use super::auth::Caller;
use super::error::Blame;

/// What the log line (and the audit record) needs to know about a request.
pub(super) struct Outcome<'a> {
    pub(super) provider: Option<&'a str>,
    /// The provider's index in the router, for metrics.
    pub(super) index: Option<usize>,
    pub(super) blame: Option<Blame>,
    /// Who phase 2 admitted.
    pub(super) caller: Caller,
    /// The generation of the credential attached (none: nothing was).
    pub(super) generation: Option<u64>,
    /// credproxy's error code, when it answered itself.
    pub(super) code: Option<&'static str>,
    /// The client's body as it goes upstream (hyper's transport), for `bytes_in`.
    pub(super) upload: Option<std::sync::Arc<super::upload::Progress>>,
}

impl Outcome<'_> {
    pub(super) fn new() -> Self {
        Outcome {
            provider: None,
            index: None,
            blame: None,
            caller: Caller::Anyone,
            generation: None,
            code: None,
            upload: None,
        }
    }

    /// The audit log's decision for this request.
    pub(super) fn decision(&self) -> crate::audit::Decision {
        use crate::audit::Decision;
        match (self.code, self.generation) {
            (Some(code), _) => Decision::of_error(code),
            (None, Some(_)) => Decision::Injected,
            (None, None) => Decision::Passed,
        }
    }
}

/// Whether the per-request access line is on (`credproxy::access` at info).
pub fn access_enabled() -> bool {
    tracing::enabled!(target: "credproxy::access", tracing::Level::INFO)
}

/// The per-request access line. `caller`: a named caller's name (`[callers.NAME]`).
#[allow(clippy::too_many_arguments)]
pub fn access_line(
    method: &str,
    host: &str,
    path: &str,
    status: u16,
    start: Instant,
    provider: Option<&str>,
    blame: Option<Blame>,
    caller: Option<&str>,
    request_id: &crate::request_id::RequestId,
) {
    tracing::info!(
        target: "credproxy::access",
        method = %method,
        host = %host,
        path = %path,
        status,
        duration_ms = (start.elapsed().as_micros() as f64) / 1000.0,
        provider = provider.unwrap_or("-"),
        caller = caller.unwrap_or("-"),
        request_id = request_id.as_str(),
        fault = blame.map_or("-", Blame::as_str),
    );
}

/// Phase 9 for both transports: the audit record of a request (`None` when the audit log is
/// off). `bytes_out` is left 0 for the transport to fill in: the fast path once the body went
/// down, hyper's `Counted` when the streamed body ends (it then queues the record).
pub(super) fn audit_record(
    shared: &super::Shared,
    info: &super::ListenerInfo,
    outcome: &Outcome<'_>,
    request: AuditRequest<'_>,
) -> Option<crate::audit::RequestRecord> {
    shared.audit.as_ref()?;
    let index = outcome.index;
    Some(crate::audit::RequestRecord {
        time: jiff::Timestamp::now(),
        request_id: request.id,
        caller: shared.gate.name(outcome.caller).cloned(),
        listener: info.listener.clone(),
        provider: index
            .and_then(|i| shared.router.providers.get(i))
            .map(|r| r.name.clone()),
        method: request.method,
        host: request.host.to_owned(),
        path: crate::audit::Path::of(request.path),
        decision: outcome.decision(),
        code: outcome.code,
        status: Some(request.status),
        bytes_in: request.bytes_in,
        bytes_out: 0,
        duration_ms: request.start.elapsed().as_secs_f64() * 1000.0,
        generation: outcome.generation,
    })
}

/// The audit record of a refusal answered before the request core saw the request (an HTTP/2
/// stream's, `h2.rs`): no caller, no provider; `code` is the refusal's, `body` its length.
pub(super) fn audit_refusal(
    shared: &super::Shared,
    info: &super::ListenerInfo,
    code: &'static str,
    request: AuditRequest<'_>,
    body: u64,
) {
    let Some(log) = &shared.audit else { return };
    let mut outcome = Outcome::new();
    outcome.code = Some(code);
    if let Some(mut record) = audit_record(shared, info, &outcome, request) {
        record.bytes_out = body;
        log.request(record);
    }
}

/// What the audit record takes from the request itself.
pub(super) struct AuditRequest<'a> {
    pub(super) id: crate::request_id::RequestId,
    pub(super) method: http::Method,
    pub(super) host: &'a str,
    /// The target's path (a query, if any, is cut off: `audit::Path`).
    pub(super) path: &'a str,
    pub(super) status: u16,
    pub(super) bytes_in: u64,
    pub(super) start: Instant,
}

/// A named caller's request, counted by caller (a bounded label: configured names only).
#[inline]
pub(super) fn count_caller(shared: &super::Shared, outcome: &Outcome<'_>) {
    if let Some(name) = shared.gate.name(outcome.caller) {
        let denied = outcome.code == Some("caller_denied");
        shared.metrics.caller_request(name, denied);
    }
}
