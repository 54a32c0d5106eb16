//! Phases 7 and 8 as decisions both transports make the same way: the keep-alive retry, the 401
//! rule, what a request body must be to be kept for a replay, and how an upstream failure becomes
//! a [`ProxyError`]. Plain functions over a few values: the transports keep the I/O.

use std::time::Duration;

use super::error::{ErrorKind, ProxyError};
use super::upload::UploadError;
use super::upstream::ConnectError;
use crate::config::{Preset, Upstream};
use crate::credential::Rejection;

/// A request body up to this size is kept so the request can be replayed after a 401.
pub const REPLAY_BODY_LIMIT: u64 = 64 * 1024;

/// A body of `len` bytes can be kept for a replay after a 401.
#[inline]
pub fn fits_replay(len: u64) -> bool {
    len <= REPLAY_BODY_LIMIT
}

/// A provider's credential can be refreshed (so a 401 is worth reporting, and a body worth
/// keeping); a static one can't.
#[inline]
pub fn refreshable(preset: Preset) -> bool {
    preset != Preset::Static
}

/// The 401 rule's first half: an answer to report to the credential's reader
/// (`report_rejected`, which decides whether a refresh follows), and what it said:
/// `invalid_token` is asked (the `WWW-Authenticate` fields, `challenge.rs`) only for such a 401.
/// A replay follows only when the request's body was kept and a newer credential came within
/// `wait_for_token`.
#[inline]
pub fn rejection(
    status: u16,
    refreshable: bool,
    invalid_token: impl FnOnce() -> bool,
) -> Option<Rejection> {
    if status != 401 || !refreshable {
        None
    } else if invalid_token() {
        Some(Rejection::InvalidToken)
    } else {
        Some(Rejection::Plain)
    }
}

/// How far a failed attempt on an upstream connection got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failed {
    /// The request did not (all) go out.
    Unsent,
    /// It went out, and the connection ended before a byte of an answer came back.
    Unanswered,
}

/// The keep-alive race: the upstream closed a reused connection as the request went out. The
/// first attempt is sent again on a new connection when it was not sent, or when nothing at all
/// came back and sending it twice is harmless (`idempotent`, RFC 9110 §9.2.2).
#[inline]
pub fn retry(failed: Failed, reused: bool, attempt: u32, idempotent: bool) -> bool {
    reused
        && attempt == 0
        && match failed {
            Failed::Unsent => true,
            Failed::Unanswered => idempotent,
        }
}

/// The `response_timeout` a provider's requests have: its own, else `[proxy]`'s (`proxy`).
#[inline]
pub fn response_timeout(proxy: Duration, provider: &crate::config::ProviderConfig) -> Duration {
    provider.response_timeout.unwrap_or(proxy)
}

/// 408: the request body sent nothing for `client_body_timeout` (`upload.rs`; the fast path's
/// read of a body). The client's fault; the upstream is not blamed.
#[cold]
pub fn client_timeout(client_body_timeout: Duration) -> ProxyError {
    ProxyError::new(
        ErrorKind::ClientTimeout,
        format!(
            "the request body sent nothing for {client_body_timeout:?}: send it without pauses, or raise [proxy] client_body_timeout"
        ),
    )
}

/// No answer within `response_timeout` (`what`: "accept a connection", "answer").
#[cold]
pub fn timeout_error(up: &Upstream, response_timeout: Duration, what: &str) -> ProxyError {
    ProxyError::new(
        ErrorKind::UpstreamTimeout,
        format!("{} did not {what} within {response_timeout:?}", up.origin()),
    )
}

/// Both attempts ended with the connection closed before an answer.
#[cold]
pub fn closed_error(up: &Upstream) -> ProxyError {
    ProxyError::new(
        ErrorKind::UpstreamUnreachable,
        format!("{} closed the connection before answering", up.origin()),
    )
}

/// A connection that could not be made: TLS, timeout, or unreachable, with its causes.
#[cold]
pub fn connect_error(up: &Upstream, e: ConnectError) -> ProxyError {
    let _ = up;
    connect_failed(e)
}

/// [`connect_error`] for a connection with no configured upstream (pass-through, `CONNECT`).
#[cold]
pub fn connect_failed(e: ConnectError) -> ProxyError {
    use ConnectError as C;
    let kind = match &e {
        C::Tls { .. } | C::ServerName { .. } => ErrorKind::UpstreamTls,
        C::Timeout { .. } => ErrorKind::UpstreamTimeout,
        C::Tcp { .. } | C::Handshake { .. } | C::Resolve { .. } => ErrorKind::UpstreamUnreachable,
    };
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    ProxyError::new(kind, msg)
}

/// A hyper exchange that failed: the client's body (400), a timeout, a bad answer, or the
/// connection.
#[cold]
pub fn upstream_error(up: &Upstream, e: &hyper::Error) -> ProxyError {
    // The client's own body failed (a malformed chunk, a hang-up mid-body): its fault, and the
    // upstream never got a complete request.
    let source = std::error::Error::source(e);
    if e.is_user()
        && let Some(UploadError::Stalled(t)) = source.and_then(|s| s.downcast_ref::<UploadError>())
    {
        return client_timeout(*t);
    }
    if e.is_user()
        && let Some(cause) = source
            .and_then(|s| s.downcast_ref::<UploadError>())
            .and_then(|u| std::error::Error::source(u))
            .or(source)
            .filter(|s| s.is::<hyper::Error>())
    {
        let mut msg = format!("the request body could not be read: {cause}");
        let mut src = cause.source();
        while let Some(s) = src {
            msg.push_str(": ");
            msg.push_str(&s.to_string());
            src = s.source();
        }
        return ProxyError::new(ErrorKind::BadRequest, msg);
    }
    let kind = if e.is_timeout() {
        ErrorKind::UpstreamTimeout
    } else if e.is_parse() {
        ErrorKind::UpstreamProtocol
    } else {
        ErrorKind::UpstreamUnreachable
    };
    ProxyError::new(kind, format!("{} failed: {e}", up.origin()))
}
