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
//!   copies bytes both ways until either side closes, or the listener shuts down. Any other
//!   answer is relayed as any response is (a `403`, a `401` after the replay rule).
//!
//! An `Upgrade` to anything else (`h2c`, which `curl --http2` offers on `http://` URLs; `TLS/1.2`)
//! is declined the way a server declines it (RFC 9110 §7.8): the field is dropped as hop-by-hop
//! and the request is served as plain HTTP/1.1. Downstream HTTP/2 has no `Upgrade` (RFC 9113
//! §8.2.2); RFC 8441's extended `CONNECT` is not supported.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
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
/// put back (`Upgrade` with `websocket` alone), and the client connection's pending upgrade taken
/// out of the request, for [`switch`].
pub fn restore(parts: &mut http::request::Parts) -> Option<OnUpgrade> {
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
    let cancel = conn.cancel.clone();
    let span = tracing::debug_span!("websocket", provider = provider.unwrap_or("-"));
    let relay = async move {
        let (client, upstream) = match tokio::try_join!(client, upstream) {
            Ok(both) => both,
            Err(e) => {
                tracing::debug!(error = %e, "WebSocket upgrade failed");
                return;
            }
        };
        let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
        tokio::select! {
            r = tokio::io::copy_bidirectional(&mut client, &mut upstream) => match r {
                Ok((up, down)) => tracing::debug!(
                    bytes_to_upstream = up,
                    bytes_to_client = down,
                    "WebSocket closed"
                ),
                Err(e) => tracing::debug!(error = %e, "WebSocket ended with an error"),
            },
            () = cancel.cancelled() => tracing::debug!("shutting down: WebSocket closed"),
        }
    };
    *conn.tunnel.lock() = Some(tokio::spawn(relay.instrument(span)));
    Ok(Response::from_parts(
        parts,
        Either::Right(Full::new(Bytes::new())),
    ))
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
        let (mut parts, ()) = req("GET", &[]).into_parts();
        assert!(restore(&mut parts).is_none());
        assert_eq!(parts.headers["connection"], "upgrade");
        assert_eq!(parts.headers["upgrade"], "websocket");
        assert!(is_handshake(&Request::from_parts(parts, ())));
    }
}
