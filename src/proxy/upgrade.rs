//! WebSocket (RFC 6455) over HTTP/1.1: the handshake is a request like any other, then the two
//! connections are spliced.
//!
//! A request with `Upgrade: websocket` goes through every phase of [`crate::proxy`] on hyper's
//! path (the fast path declines upgrades): proxy authentication, routing, the browser check, the
//! credential on the handshake, the 401 rule and the access log (written at the `101`). What is
//! particular to it lives here:
//! - phase 6: `Connection: upgrade` and `Upgrade: websocket` are kept, for this case only; every
//!   other hop-by-hop field still goes ([`offer`], [`restore`]);
//! - phase 7: it goes on an upstream connection of its own ([`connect`]): new, HTTP/1.1 only
//!   (TLS offers only `http/1.1` in ALPN), never parked or reused, because after a `101` it
//!   belongs to the WebSocket;
//! - phase 8: a `101 Switching Protocols` hands both connections to a relay ([`switch`]) that
//!   copies bytes both ways until either side closes ([`relay`]: the other direction gets
//!   [`LINGER`] to finish), or the listener shuts down. Any other answer is relayed as any
//!   response is (a `403`, a `401` after the replay rule).
//!
//! `Expect: 100-continue` on a handshake is dropped ([`restore`]): a handshake has no body to
//! hold back, and the upstream's answer is the `101` itself, which would leave the gate
//! (`expect.rs`) closed on a connection that goes on as a WebSocket.
//!
//! The relay and the tunnel of a `CONNECT` to an unclaimed host (`service.rs`) are started by
//! [`start`], as the connection's tunnel: it keeps the connection's slots (`limits.rs`), and
//! shutdown waits for it and cancels it.
//!
//! An `Upgrade` to anything else (`h2c`, which `curl --http2` offers on `http://` URLs; `TLS/1.2`)
//! is declined the way a server declines it (RFC 9110 §7.8): the field is dropped as hop-by-hop
//! and the request is served as plain HTTP/1.1. Downstream HTTP/2 has no `Upgrade` (RFC 9113
//! §8.2.2); RFC 8441's extended `CONNECT` is not supported.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::RespBody;
use super::error::{ErrorKind, ProxyError};
use super::inject;
use super::state::ConnCtx;
use super::upstream::{ConnectError, Connector, H1Sender, UpstreamKey};

/// Whether a field's comma-separated list holds `token` (ASCII case ignored).
fn lists(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// The request asks for a WebSocket (RFC 6455 §4.1): an HTTP/1.1 `GET` whose `Upgrade` lists
/// `websocket` and whose `Connection` lists `upgrade`.
pub fn offer<B>(req: &Request<B>) -> bool {
    req.method() == http::Method::GET
        && req.version() == http::Version::HTTP_11
        && lists(req.headers(), header::UPGRADE, "websocket")
        && lists(req.headers(), header::CONNECTION, "upgrade")
}

/// Phase 6 for a WebSocket handshake, after the hop-by-hop fields were stripped: the two fields
/// put back (`Upgrade` with `websocket` alone), `Expect` dropped (a handshake is a `GET` whose
/// answer is the `101`: nothing to wait for), and the client connection's pending upgrade taken
/// out of the request, for [`switch`].
pub fn restore(parts: &mut http::request::Parts) -> Option<OnUpgrade> {
    parts.headers.remove(header::EXPECT);
    parts
        .headers
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    parts
        .headers
        .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    parts.extensions.remove::<OnUpgrade>()
}

/// A request [`restore`]d for an upgrade (phase 6 drops every other `Upgrade`): phase 7 sends it
/// on a connection of its own ([`connect`]).
pub fn is_handshake<B>(req: &Request<B>) -> bool {
    req.headers().contains_key(header::UPGRADE)
}

/// Phase 7 for a handshake: a new HTTP/1.1 connection to `key`, driven by a task of its own that
/// ends when the upgrade takes its stream, or when a non-`101` answer was read (the sender is
/// dropped after the one request, so the connection closes instead of idling).
pub async fn connect(connector: &Connector, key: &UpstreamKey) -> Result<H1Sender, ConnectError> {
    let stream = connector.connect_for_upgrade(key).await?;
    let (sender, conn) = http1::Builder::new()
        .max_header_size(super::MAX_RESPONSE_HEAD)
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|source| ConnectError::Handshake {
            host: key.host.clone(),
            source,
        })?;
    tokio::spawn(
        async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection for an upgrade ended");
            }
        }
        .instrument(tracing::debug_span!("websocket upstream", host = %key.host)),
    );
    Ok(sender)
}

/// Phase 8 for a `101` from the upstream: the answer for the client (the upstream's head with
/// hop-by-hop fields but `Connection` and `Upgrade` stripped, `Via` added), and a relay, started
/// as this connection's tunnel (`ConnCtx::tunnel`: the connection's task, its connection slots
/// and shutdown's tracker wait for it), copying bytes both ways until either side closes.
///
/// A `101` to a request that did not offer a WebSocket, or to another protocol than the one
/// offered, is the upstream's error (502).
pub fn switch(
    conn: &Arc<ConnCtx>,
    client: Option<OnUpgrade>,
    mut resp: Response<Incoming>,
    provider: Option<&str>,
) -> Result<Response<RespBody>, ProxyError> {
    let (Some(client), true) = (client, lists(resp.headers(), header::UPGRADE, "websocket")) else {
        return Err(ProxyError::new(
            ErrorKind::UpstreamProtocol,
            "the upstream switched protocols (101) to one the client did not ask for",
        ));
    };
    let upstream = hyper::upgrade::on(&mut resp);
    let (mut parts, _) = resp.into_parts();
    inject::response_head(&mut parts.headers);
    parts
        .headers
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    parts
        .headers
        .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    let span = tracing::debug_span!("websocket", provider = provider.unwrap_or("-"));
    start(conn, span, async move {
        let (client, upstream) = match tokio::try_join!(client, upstream) {
            Ok(both) => both,
            Err(e) => {
                tracing::debug!(error = %e, "WebSocket upgrade failed");
                return;
            }
        };
        relay(TokioIo::new(client), TokioIo::new(upstream), LINGER).await;
    });
    Ok(Response::from_parts(
        parts,
        Either::Right(Full::new(Bytes::new())),
    ))
}

/// How long the other direction may go on once one side closed its half: long enough for the
/// answer to a close (RFC 6455 §5.5.1, or any protocol's last words in a tunnel), short enough that
/// a peer that never closes does not hold the connection and its slots.
pub const LINGER: Duration = Duration::from_secs(5);

/// Start `work` (opening a relay and running it) as `conn`'s tunnel, raced against the listener's
/// shutdown from its first step: the connection's task waits for it (`listener.rs`), so the
/// tunnel keeps the connection's slots, and shutdown's tracker waits for it too.
pub(super) fn start<F>(conn: &ConnCtx, span: tracing::Span, work: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    let task = until_cancelled(conn.cancel.clone(), work);
    *conn.tunnel.lock() = Some(tokio::spawn(task.instrument(span)));
}

/// `work`, or the end of it when `cancel` fires first.
async fn until_cancelled(cancel: CancellationToken, work: impl Future<Output = ()>) {
    tokio::select! {
        () = work => {}
        () = cancel.cancelled() => tracing::debug!("shutting down: tunnel closed"),
    }
}

/// Copy bytes both ways between `client` and `upstream` until either side closes: the end of one
/// direction is passed on (the other side's write half is shut down), and the other direction
/// then has `linger` to finish before both are closed. An error on either direction ends both.
pub(super) async fn relay<C, U>(client: C, upstream: U, linger: Duration)
where
    C: AsyncRead + AsyncWrite + Send,
    U: AsyncRead + AsyncWrite + Send,
{
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let (mut upstream_read, mut upstream_write) = tokio::io::split(upstream);
    let to_upstream = async {
        let n = tokio::io::copy(&mut client_read, &mut upstream_write).await?;
        upstream_write.shutdown().await?;
        Ok::<_, io::Error>(n)
    };
    let to_client = async {
        let n = tokio::io::copy(&mut upstream_read, &mut client_write).await?;
        client_write.shutdown().await?;
        Ok::<_, io::Error>(n)
    };
    let mut to_upstream = std::pin::pin!(to_upstream);
    let mut to_client = std::pin::pin!(to_client);
    type Rest<'a> = std::pin::Pin<&'a mut (dyn Future<Output = io::Result<u64>> + Send)>;
    let (first, rest, closed): (_, Rest<'_>, _) = tokio::select! {
        r = &mut to_upstream => (r, to_client.as_mut(), "client"),
        r = &mut to_client => (r, to_upstream.as_mut(), "upstream"),
    };
    let bytes = match first {
        Ok(n) => n,
        Err(e) => {
            tracing::debug!(error = %e, "tunnel ended with an error");
            return;
        }
    };
    match tokio::time::timeout(linger, rest).await {
        Ok(Ok(other)) => tracing::debug!(closed_first = closed, bytes, other, "tunnel closed"),
        Ok(Err(e)) => {
            tracing::debug!(closed_first = closed, error = %e, "tunnel ended with an error")
        }
        Err(_) => tracing::debug!(
            closed_first = closed,
            bytes,
            "tunnel closed: the other side did not close within the linger"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, fields: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder().method(method).uri("/ws");
        for (n, v) in fields {
            b = b.header(*n, *v);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn only_a_get_with_both_fields_offers_a_websocket() {
        let ws = [
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "WebSocket"),
        ];
        assert!(offer(&req("GET", &ws)));
        assert!(!offer(&req("POST", &ws)));
        assert!(!offer(&req("GET", &[("upgrade", "websocket")])));
        assert!(!offer(&req(
            "GET",
            &[("connection", "upgrade"), ("upgrade", "h2c")]
        )));
        let mut h10 = req("GET", &ws);
        *h10.version_mut() = http::Version::HTTP_10;
        assert!(!offer(&h10));
    }

    #[test]
    fn restore_puts_back_websocket_alone() {
        let (mut parts, ()) = req("GET", &[("expect", "100-continue")]).into_parts();
        assert!(restore(&mut parts).is_none());
        assert_eq!(parts.headers["connection"], "upgrade");
        assert_eq!(parts.headers["upgrade"], "websocket");
        assert!(!parts.headers.contains_key("expect"), "nothing to wait for");
        assert!(is_handshake(&Request::from_parts(parts, ())));
    }

    /// Whether `task` ended, after letting every other task run (the clock is paused).
    async fn ended(task: &tokio::task::JoinHandle<()>) -> bool {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        task.is_finished()
    }

    /// One side closes: its end reaches the other side, whose bytes still flow back for the
    /// linger; then both are closed even though that side never closed.
    #[tokio::test(start_paused = true)]
    async fn after_one_side_closes_the_other_direction_gets_the_linger_then_both_close() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut client, client_side) = tokio::io::duplex(1024);
        let (upstream_side, mut upstream) = tokio::io::duplex(1024);
        let relay = tokio::spawn(relay(client_side, upstream_side, LINGER));
        client.write_all(b"close").await.unwrap();
        client.shutdown().await.unwrap();
        let mut got = Vec::new();
        upstream.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"close", "the client's bytes, then its end");

        tokio::time::advance(LINGER - Duration::from_millis(1)).await;
        upstream.write_all(b"bye").await.unwrap();
        let mut bye = [0u8; 3];
        client.read_exact(&mut bye).await.unwrap();
        assert_eq!(&bye, b"bye", "the other direction flows during the linger");
        assert!(!ended(&relay).await, "ended before the linger ran out");

        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(ended(&relay).await, "still open after the linger");
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
        assert_eq!(upstream.write(b"late").await.ok(), None, "closed");
    }

    #[tokio::test(start_paused = true)]
    async fn both_sides_closing_ends_the_relay_at_once() {
        use tokio::io::AsyncWriteExt;
        let (mut client, client_side) = tokio::io::duplex(1024);
        let (upstream_side, mut upstream) = tokio::io::duplex(1024);
        let relay = tokio::spawn(relay(client_side, upstream_side, LINGER));
        client.shutdown().await.unwrap();
        upstream.shutdown().await.unwrap();
        assert!(ended(&relay).await, "both closed: nothing to wait for");
    }

    /// Shutdown ends a tunnel at any step, opening included (an upgrade that never completes).
    #[tokio::test(start_paused = true)]
    async fn cancel_ends_a_tunnel_still_opening() {
        let cancel = CancellationToken::new();
        let task = tokio::spawn(until_cancelled(cancel.clone(), std::future::pending()));
        assert!(!ended(&task).await);
        cancel.cancel();
        assert!(ended(&task).await, "shutdown waited for the upgrade");
    }
}
