//! HTTP/2 downstream: h2c with prior knowledge on every plain listener, and `h2` chosen by ALPN
//! on intercepted TLS (`tunnel.rs` offers it only when the provider's upstream speaks HTTP/2).
//!
//! A connection is HTTP/2 when its first bytes are the preface (RFC 9113 §3.4): the fast path
//! reads them as a request head it does not serve (a preface is not HTTP/1.1) and hands the
//! connection back untouched; the listener sees the preface and serves it here. HTTP/1.1 costs
//! nothing more: the check runs only on a connection the fast path gave up.
//!
//! Every stream's request goes through the same request core as HTTP/1.1's (`service.rs`:
//! routing, injection, the 401 rule, `proxy_auth`, the browser check, the access log), after
//! [`to_origin_form`] (`h2/translate.rs`) makes it the request an HTTP/1.1 client would have
//! sent, strictly (RFC 9113 §8.2.2 and §8.3.1; the mitmproxy HTTP/2→1 smuggling advisory
//! GHSA-847f-9342-265h): the h2 crate already resets a stream carrying a connection-specific
//! field, `te` other than `trailers`, or a body longer or shorter than its `content-length`;
//! what it lets through and an HTTP/1.1 upstream would read differently is refused with 400.
//! An idle connection (no stream open for `header_timeout`) is closed.
//!
//! Upstream connections: a stream to an HTTP/1.1 upstream needs one of its own (HTTP/1.1 does
//! one request at a time), so each stream gets a request context whose upstream slot takes a
//! connection under this connection's cap (`h2_upstream_connections`, [`Gate`]: an idle one
//! another stream finished with, a new one, or a wait for either), drives that slot from its own
//! task while its answer is produced and while its body streams ([`Driven`]), and gives the
//! connection back when the body is done, or when the stream is reset before its answer
//! ([`Lent`]). HTTP/2 upstreams are shared as for HTTP/1.1 clients (`upstream.rs`), under no
//! cap: their streams multiplex.
//!
//! Limits ([`crate::config::H2Limits`], `[proxy] h2_*`) are set on hyper's server, with its
//! protections against the reset floods: a client resetting streams faster than they are
//! accepted ("rapid reset", CVE-2023-44487) or making the server reset them ("MadeYouReset",
//! CVE-2025-8671) gets GOAWAY `ENHANCE_YOUR_CALM`; header blocks (and their CONTINUATION frames)
//! are bounded by `h2_max_header_list_size`.

use std::convert::Infallible;
use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

use super::RespBody;
use super::access::{access_enabled, access_line};
use super::error::ProxyError;
use super::service::handle;
use super::state::ConnCtx;
use super::upstream::{Gate, LocalSlot};

mod translate;

pub use translate::{TeTrailers, to_origin_form};

/// The preface's first line (RFC 9113 §3.4): no HTTP/1.1 request starts with it.
pub const PREFACE_LINE: &[u8] = b"PRI * HTTP/2.0\r\n";

/// Streams a client may reset before the server has accepted them, and streams the server may
/// reset for a client's errors, before the connection is closed with `ENHANCE_YOUR_CALM`. The
/// h2 crate's defaults (20 and 1024), written here so they are set on purpose, not by accident.
const MAX_PENDING_ACCEPT_RESETS: usize = 20;
const MAX_LOCAL_ERROR_RESETS: usize = 1024;

/// Response bytes hyper buffers per stream ahead of what the client's flow-control window lets
/// it send (a slow client sizes that window): hyper's default is about 400 KiB per stream; 64
/// KiB keeps one connection's at 100 streams × 64 KiB at most.
const MAX_SEND_BUF_SIZE: usize = 64 * 1024;

/// Whether a connection's first bytes are HTTP/2's preface.
pub fn is_preface(first: &[u8]) -> bool {
    first.starts_with(PREFACE_LINE)
}

/// Serve one downstream HTTP/2 connection (the preface not yet read) until it ends or `conn`'s
/// listener shuts down (GOAWAY, then the streams in flight finish).
pub async fn serve<I>(io: I, conn: Arc<ConnCtx>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (limits, idle_timeout) = {
        let state = conn.cell.load_full();
        (state.shared.h2, state.info.header_timeout)
    };
    let streams = Arc::new(Streams {
        conn: conn.clone(),
        gate: Gate::new(limits.max_upstream_connections as usize),
        activity: Mutex::new(Activity {
            open: 0,
            since: Instant::now(),
        }),
    });
    let svc = {
        let streams = streams.clone();
        service_fn(move |req| answer(streams.clone(), req))
    };
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_header_list_size(limits.max_header_list_size)
        .initial_stream_window_size(limits.initial_stream_window)
        .initial_connection_window_size(limits.initial_connection_window)
        .max_pending_accept_reset_streams(MAX_PENDING_ACCEPT_RESETS)
        .max_local_error_reset_streams(MAX_LOCAL_ERROR_RESETS)
        .max_send_buf_size(MAX_SEND_BUF_SIZE);
    let connection = builder.serve_connection(TokioIo::new(io), svc);
    let mut connection = pin!(connection);
    let mut cancelled = pin!(conn.cancel.clone().cancelled_owned());
    let mut idle = pin!(tokio::time::sleep(idle_timeout));
    let mut shutting_down = false;
    let mut closing_idle = false;
    let result = std::future::poll_fn(|cx| {
        if !shutting_down && cancelled.as_mut().poll(cx).is_ready() {
            connection.as_mut().graceful_shutdown();
            shutting_down = true;
        }
        // A connection with no stream open for `header_timeout` is closed, as an idle HTTP/1.1
        // connection is: it holds a connection slot. GOAWAY first; one still there (or still
        // in its preface, where hyper defers GOAWAY until the handshake is done) a second
        // `header_timeout` later, with no stream open, is dropped.
        while idle.as_mut().poll(cx).is_ready() {
            // Drop the upstream connections idle here as long as a parked one may be.
            streams.gate.sweep(conn.pool.idle_timeout());
            let a = *streams.activity.lock();
            if a.open == 0 && a.since.elapsed() >= idle_timeout {
                if closing_idle {
                    tracing::debug!(
                        "idle HTTP/2 connection did not close after GOAWAY; dropping it"
                    );
                    return Poll::Ready(Ok(()));
                }
                tracing::debug!("HTTP/2 connection idle for header_timeout; closing");
                connection.as_mut().graceful_shutdown();
                closing_idle = true;
                idle.as_mut().reset(Instant::now() + idle_timeout);
            } else {
                let from = if a.open == 0 { a.since } else { Instant::now() };
                idle.as_mut().reset(from + idle_timeout);
            }
        }
        connection.as_mut().poll(cx)
    })
    .await;
    if let Err(e) = result {
        tracing::debug!(error = %e, "downstream HTTP/2 connection ended with an error");
    }
    if !shutting_down {
        streams.gate.park_all(&conn.pool);
    }
}

/// One connection's streams: their upstream connections' cap, and whether any is open.
struct Streams {
    conn: Arc<ConnCtx>,
    gate: Arc<Gate>,
    activity: Mutex<Activity>,
}

/// Streams open now, and when the count last changed: for the idle rule.
#[derive(Clone, Copy)]
struct Activity {
    open: usize,
    since: Instant,
}

impl Streams {
    /// A stream's request context: its slot starts empty and takes an upstream connection
    /// under the gate's cap when the request core asks for one.
    fn lend(&self) -> Lent {
        let c = &self.conn;
        Lent(Arc::new(ConnCtx {
            cell: c.cell.clone(),
            pool: c.pool.clone(),
            peer: c.peer,
            slot: LocalSlot::gated(self.gate.clone()),
            cancel: c.cancel.clone(),
            tunnel: Default::default(),
        }))
    }
}

/// A stream's request context, which gives its upstream connection back to the gate when
/// dropped: after the answer's body ([`Driven`]), or with the answer's future when the client
/// resets the stream before the answer (a connection mid-request is then not ready to send,
/// and the next stream to take it drops it).
struct Lent(Arc<ConnCtx>);

impl Drop for Lent {
    fn drop(&mut self) {
        self.0.slot.release();
    }
}

/// A stream counted open from its request until its answer's body is dropped (or the request
/// is, when the client resets the stream first).
struct Open(Arc<Streams>);

impl Open {
    fn new(streams: Arc<Streams>) -> Open {
        let mut a = streams.activity.lock();
        a.open += 1;
        a.since = Instant::now();
        drop(a);
        Open(streams)
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        let mut a = self.0.activity.lock();
        a.open = a.open.saturating_sub(1);
        a.since = Instant::now();
    }
}

/// One stream: checked and made origin-form, then served by the request core.
async fn answer(
    streams: Arc<Streams>,
    req: Request<Incoming>,
) -> Result<Response<Driven>, Infallible> {
    let start = Instant::now();
    let open = Open::new(streams);
    let lent = open.0.lend();
    let ctx = &lent.0;
    let resp = match to_origin_form(req) {
        Ok(req) => {
            let mut answer = pin!(handle(ctx.clone(), req));
            // The stream's upstream slot is driven by the stream's own task (hyper spawns one
            // per stream), as `listener.rs` drives an HTTP/1.1 connection's.
            std::future::poll_fn(|cx| {
                ctx.slot.poll_drive(cx);
                answer.as_mut().poll(cx)
            })
            .await?
        }
        Err((e, method, path)) => refused(ctx.as_ref(), e, &method, &path, start),
    };
    Ok(resp.map(|body| Driven {
        body,
        lent,
        _open: open,
        done: false,
    }))
}

/// A refusal before the request core saw the request: built, counted and logged as the core
/// does its own.
fn refused(
    ctx: &ConnCtx,
    e: ProxyError,
    method: &Method,
    path: &str,
    start: Instant,
) -> Response<RespBody> {
    tracing::debug!(code = e.kind.code(), message = %e.message, "HTTP/2 request refused");
    let blame = e.kind.blame();
    let code = e.kind.code();
    let mut resp = e.into_response().map(http_body_util::Either::Right);
    // The stream's own `x-request-id` went with the refused request: a new id.
    let id = crate::request_id::RequestId::fresh();
    resp.headers_mut()
        .insert(crate::request_id::HEADER, id.header_value());
    let state = ctx.cell.load_full();
    state.shared.metrics.request(None, resp.status());
    let body = resp.body().size_hint().exact().unwrap_or(0);
    super::access::audit_refusal(
        &state.shared,
        &state.info,
        code,
        super::access::AuditRequest {
            id,
            method: method.clone(),
            host: "-",
            path,
            status: resp.status().as_u16(),
            bytes_in: 0,
            start,
        },
        body,
    );
    if access_enabled() {
        access_line(
            method.as_str(),
            "",
            path,
            resp.status().as_u16(),
            start,
            None,
            Some(blame),
            None,
            &id,
        );
    }
    resp
}

/// A stream's response body, which also drives the stream's upstream slot (the body of an
/// HTTP/1.1 upstream's answer comes through it), and gives the slot back when done.
pub struct Driven {
    body: RespBody,
    lent: Lent,
    /// Counts the stream open until the body is dropped.
    _open: Open,
    /// The body was read to its end: the upstream connection is between requests.
    done: bool,
}

impl Body for Driven {
    type Data = Bytes;
    type Error = <RespBody as Body>::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        this.lent.0.slot.poll_drive(cx);
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            this.done = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Driven {
    fn drop(&mut self) {
        if !self.done && !self.body.is_end_stream() {
            // Cut short (the client reset the stream): the upstream connection may be mid-body.
            self.lent.0.slot.discard();
        }
        // `lent` gives the connection back next.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_preface_is_recognized() {
        assert!(is_preface(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"));
        assert!(!is_preface(b"GET / HTTP/1.1\r\n"));
        assert!(!is_preface(b"PRI * HTTP/1.1\r\n"));
    }
}
