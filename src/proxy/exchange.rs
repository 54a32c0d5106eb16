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

/// Which side ended a response that was under way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The upstream closed (or broke) its connection, or sent a body that could not be framed.
    Upstream,
    /// The client closed its connection before the whole response was written to it.
    Client,
}

/// A response cut short after its head went downstream: one line on the access log's target,
/// saying which side ended it and after how many bytes of the body, the same for both
/// transports.
#[cold]
pub fn log_cut(side: Side, body_bytes: u64, provider: Option<&str>) {
    let who = match side {
        Side::Upstream => "the upstream closed the connection",
        Side::Client => "the client closed the connection",
    };
    tracing::info!(
        target: "credproxy::access",
        provider = provider.unwrap_or("-"),
        side = match side {
            Side::Upstream => "upstream",
            Side::Client => "client",
        },
        body_bytes,
        "response cut short: {who} after {body_bytes} bytes of the body"
    );
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
    if let C::Tls { host, source } = &e
        && let Some(tls) = source
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        return ProxyError::new(
            kind,
            format!("TLS with {host} failed: {}", tls_words(host, tls)),
        );
    }
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    ProxyError::new(kind, msg)
}

/// What went wrong in a TLS handshake with `host`, in words: rustls's own `Display` shows
/// its enum variants (`invalid peer certificate: UnknownIssuer`), which say little to a user.
pub fn tls_words(host: &str, e: &rustls::Error) -> String {
    use rustls::{CertificateError as Cert, Error as E};
    let cert = match e {
        E::InvalidCertificate(c) => c,
        E::AlertReceived(alert) => {
            return format!(
                "{host} refused the handshake (TLS alert {}): it may need a client certificate, or share no protocol version or cipher with credproxy",
                u8::from(*alert)
            );
        }
        E::NoCertificatesPresented => return format!("{host} presented no certificate"),
        E::PeerIncompatible(_) => {
            return format!(
                "{host} shares no TLS version or cipher suite with credproxy (TLS 1.2 and 1.3 are supported)"
            );
        }
        E::InvalidMessage(_) | E::PeerMisbehaved(_) | E::InappropriateMessage { .. } => {
            return format!(
                "{host} did not answer with a valid TLS handshake (is it plain HTTP? then use http:// in upstream)"
            );
        }
        E::DecryptError => return format!("{host}'s TLS messages could not be decrypted"),
        _ => return format!("the TLS handshake with {host} failed"),
    };
    let fix = "add its CA to [proxy] ca_file, or fix the server's certificate";
    match cert {
        Cert::Expired => format!("the certificate for {host} has expired"),
        Cert::ExpiredContext { not_after, .. } => format!(
            "the certificate for {host} expired on {}",
            date(not_after.as_secs())
        ),
        Cert::NotValidYet => format!("the certificate for {host} is not valid yet"),
        Cert::NotValidYetContext { not_before, .. } => format!(
            "the certificate for {host} is not valid until {} (is this machine's clock right?)",
            date(not_before.as_secs())
        ),
        Cert::UnknownIssuer => format!(
            "the certificate for {host} was issued by an unknown issuer (not in the system roots or ca_file): {fix}"
        ),
        Cert::NotValidForName => format!("the certificate is not for {host}"),
        Cert::NotValidForNameContext { presented, .. } => {
            // webpki writes each name as `DnsName("api.example")`: the quoted part is the name.
            let names: Vec<&str> = presented
                .iter()
                .map(|p| match (p.find('"'), p.rfind('"')) {
                    (Some(a), Some(b)) if a < b => &p[a + 1..b],
                    _ => p.as_str(),
                })
                .collect();
            if names.is_empty() {
                format!("the certificate has no name, so it is not for {host}")
            } else {
                format!("the certificate is for {}, not {host}", names.join(", "))
            }
        }
        Cert::Revoked => format!("the certificate for {host} has been revoked"),
        Cert::BadSignature => format!("the certificate for {host} has a bad signature"),
        Cert::BadEncoding => format!("the certificate for {host} could not be parsed"),
        Cert::InvalidPurpose | Cert::InvalidPurposeContext { .. } => {
            format!("the certificate for {host} is not meant for a TLS server")
        }
        _ => format!("the certificate for {host} was refused: {fix}"),
    }
}

/// `YYYY-MM-DD` (UTC) of a Unix time (Howard Hinnant's `civil_from_days`).
fn date(secs: u64) -> String {
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
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
    let origin = up.origin();
    if e.is_parse_too_large() {
        return ProxyError::new(
            ErrorKind::UpstreamProtocol,
            format!("{origin} failed: it sent a response head over 64 KiB"),
        );
    }
    if e.is_incomplete_message() {
        return ProxyError::new(
            ErrorKind::UpstreamUnreachable,
            format!("{origin} closed the connection before its response head was complete"),
        );
    }
    let kind = if e.is_timeout() {
        ErrorKind::UpstreamTimeout
    } else if e.is_parse() {
        ErrorKind::UpstreamProtocol
    } else {
        ErrorKind::UpstreamUnreachable
    };
    ProxyError::new(kind, format!("{origin} failed: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(date(1_793_491_200), "2026-11-01");
        assert_eq!(date(951_782_400), "2000-02-29");
    }

    #[test]
    fn tls_failures_in_words() {
        use rustls::CertificateError as C;
        let words = |c: C| tls_words("api.example.com", &rustls::Error::InvalidCertificate(c));
        assert_eq!(
            words(C::ExpiredContext {
                time: rustls::pki_types::UnixTime::since_unix_epoch(
                    std::time::Duration::from_secs(1_800_000_000)
                ),
                not_after: rustls::pki_types::UnixTime::since_unix_epoch(
                    std::time::Duration::from_secs(1_793_491_200)
                ),
            }),
            "the certificate for api.example.com expired on 2026-11-01"
        );
        assert_eq!(
            words(C::NotValidForNameContext {
                expected: rustls::pki_types::ServerName::try_from("api.example.com").unwrap(),
                presented: vec!["DnsName(\"other.example\")".into()],
            }),
            "the certificate is for other.example, not api.example.com"
        );
        assert!(words(C::UnknownIssuer).contains("unknown issuer"));
    }
}
