//! Phase 1, accept: listeners, connections, and their graceful end.
//!
//! A listener is TCP or a unix socket; a connection is any `AsyncRead + AsyncWrite` stream: a
//! `CONNECT` tunnel's plain or intercepted-TLS stream is served here as one more connection
//! (`tunnel.rs`), and the connection that carried the `CONNECT` waits for it.
//! Each downstream connection is one task that drives both the HTTP/1.1 server connection and its
//! own upstream connection (see `upstream.rs`); a connection that begins with HTTP/2's preface,
//! or whose TLS chose `h2`, is served by `h2.rs` instead. Shutdown: stop accepting, ask every connection to
//! finish its in-flight request, and let the caller wait on the tracker for the grace period.
//!
//! Before hyper sees a connection: a slot under `max_connections` (else the accept loop waits),
//! a slot under the client's `max_connections_per_client` (else 503 and close; `limits.rs`), and
//! the framing guard under the parser (`framing.rs`).

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use crate::net::{Accepted, Bound, Listening};

use super::fast::{Exit, Fast, Rewind};
use super::framing::Guard;
use super::limits::{ConnLimits, TOO_MANY_CONNECTIONS};
use super::own_answers::{Ends, OwnAnswers, Turn};
use super::service::handle;
use super::state::{ConnCtx, ListenerCell, StateCell};
use super::upstream::{LocalSlot, Pool};

/// Accept connections until `cancel`, serving each in a task tracked by `tracker`. Runs on the
/// runtime that will drive the connections (a worker thread's, or the caller's).
pub async fn serve(
    listener: Bound,
    cell: Arc<ListenerCell>,
    pool: Arc<Pool>,
    limits: Arc<ConnLimits>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    let listener = match Listening::adopt(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "can't register the listener with the runtime");
            return;
        }
    };
    let mut accept_errors = crate::net::AcceptErrors::default();
    loop {
        // Take a connection slot first: at the limit we stop accepting (the kernel's backlog
        // holds the rest) instead of accepting and dropping.
        let permit = tokio::select! {
            _ = cancel.cancelled() => break,
            p = limits.global_slot() => match p { Some(p) => p, None => break },
        };
        let accepted = tokio::select! {
            _ = cancel.cancelled() => break,
            a = listener.accept_from() => a,
        };
        let (cell, pool, cancel) = (cell.clone(), pool.clone(), cancel.clone());
        match accepted {
            Ok((Accepted::Tcp(stream), Some(peer))) => {
                let Some(slot) = limits.admit(peer) else {
                    // Over its own limit: told so (best effort, the socket buffer is empty) and
                    // closed at once; the global slot goes straight back.
                    tracing::debug!(%peer, "connection refused: max_connections_per_client reached");
                    let _ = stream.try_write(TOO_MANY_CONNECTIONS);
                    continue;
                };
                let _ = stream.set_nodelay(true);
                tracker.spawn(async move {
                    serve_connection(stream, Some(peer), cell, pool, cancel).await;
                    drop((slot, permit));
                });
            }
            Ok((Accepted::Tcp(stream), None)) => {
                let _ = stream.set_nodelay(true);
                tracker.spawn(async move {
                    serve_connection(stream, None, cell, pool, cancel).await;
                    drop(permit);
                });
            }
            Ok((Accepted::Unix(stream), _)) => {
                tracker.spawn(async move {
                    serve_connection(stream, None, cell, pool, cancel).await;
                    drop(permit);
                });
            }
            Err(e) => {
                accept_errors.failed("proxy", &e).await;
            }
        }
    }
    if let Listening::Unix(_, path) = &listener {
        let _ = std::fs::remove_file(path);
    }
}

fn conn_ctx(
    peer: Option<std::net::IpAddr>,
    cell: impl Into<StateCell>,
    pool: Arc<Pool>,
    cancel: &CancellationToken,
) -> Arc<ConnCtx> {
    Arc::new(ConnCtx {
        cell: cell.into(),
        pool,
        peer,
        slot: LocalSlot::default(),
        cancel: cancel.clone(),
        tunnel: Default::default(),
    })
}

/// Serve one downstream connection that is HTTP/2 from its first byte (ALPN chose `h2`).
pub async fn serve_h2_connection<I>(
    io: I,
    peer: Option<std::net::IpAddr>,
    cell: impl Into<StateCell>,
    pool: Arc<Pool>,
    cancel: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    super::h2::serve(io, conn_ctx(peer, cell, pool, &cancel)).await;
}

/// Serve one downstream connection: HTTP/1.1, with its upstream connection driven alongside, or
/// HTTP/2 when it begins with the preface (`h2.rs`).
pub async fn serve_connection<I>(
    io: I,
    peer: Option<std::net::IpAddr>,
    cell: impl Into<StateCell>,
    pool: Arc<Pool>,
    cancel: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let ctx = conn_ctx(peer, cell, pool, &cancel);
    // The common requests take the fast path; the first one it does not serve hands the
    // connection, from that request on, to hyper (`fast.rs`).
    let mut io = io;
    let mut fast = Fast::default();
    match fast.run(&mut io, &ctx, &cancel).await {
        Exit::Closed => {
            fast.park(&ctx.pool);
            return;
        }
        Exit::Fallback => {}
    }
    let (leftover, up) = fast.into_parts();
    // HTTP/2 with prior knowledge (h2c): the fast path read the preface as a head it does not
    // serve, and hands the connection over as it came.
    if super::h2::is_preface(&leftover) {
        if let Some((key, stream)) = up {
            ctx.pool.park_stream(key, stream);
        }
        super::h2::serve(Rewind::new(leftover, io), ctx).await;
        return;
    }
    if let Some((key, stream)) = up {
        ctx.slot.adopt(key, stream).await;
    }
    let io = Rewind::new(leftover, io);
    let header_timeout = ctx.cell.load_full().info.header_timeout;
    // Whether a response is under way: hyper's canned refusals are replaced only between
    // responses (`own_answers.rs`).
    let turn = Turn::new();
    let svc = {
        let ctx = ctx.clone();
        let turn = turn.clone();
        service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            turn.begin();
            let connect = req.method() == hyper::Method::CONNECT;
            let upgrade = req.headers().contains_key(hyper::header::UPGRADE);
            let turn = turn.clone();
            let answer = handle(ctx.clone(), req);
            async move {
                let resp = answer.await?;
                let status = resp.status();
                // A declined `Upgrade` (answered 200 as plain HTTP) leaves the connection HTTP.
                if connect && status.is_success()
                    || upgrade && status == hyper::StatusCode::SWITCHING_PROTOCOLS
                {
                    turn.tunnel();
                }
                Ok::<_, std::convert::Infallible>(resp.map(|b| Ends::new(b, turn)))
            }
        })
    };
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        // Header blocks over 64 KiB are refused with 431 by hyper's parser.
        .max_header_size(super::MAX_HEADER_BYTES)
        .max_headers(256);
    let conn = builder
        .serve_connection(TokioIo::new(Guard::new(OwnAnswers::new(io, turn))), svc)
        .with_upgrades();
    let mut conn = pin!(conn);
    let mut cancelled = pin!(cancel.cancelled_owned());
    let mut shutting_down = false;
    let result = std::future::poll_fn(|cx| {
        if !shutting_down && cancelled.as_mut().poll(cx).is_ready() {
            // Finish the request in flight, then close (keep-alive off).
            conn.as_mut().graceful_shutdown();
            shutting_down = true;
        }
        ctx.slot.poll_drive(cx);
        match conn.as_mut().poll(cx) {
            Poll::Ready(r) => Poll::Ready(r),
            Poll::Pending => Poll::Pending,
        }
    })
    .await;
    if let Err(e) = result {
        tracing::debug!(error = %e, "downstream connection ended with an error");
    }
    // The upstream connection the last request left idle is no tunnel's: to the pool now (no
    // one polls it from here on), not when a tunnel ends.
    if shutting_down {
        ctx.slot.discard();
    } else {
        ctx.slot.park_into(&ctx.pool);
    }
    // After a `CONNECT` or an `Upgrade` the connection lives on as the tunnel.
    let tunnel = ctx.tunnel.lock().take();
    if let Some(tunnel) = tunnel {
        let _ = tunnel.await;
    }
}
