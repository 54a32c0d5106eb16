//! Phase 1, accept: listeners, connections, and their graceful end.
//!
//! A listener is TCP or a unix socket; a connection is any `AsyncRead + AsyncWrite` stream, so a
//! TLS-terminating listener (HTTPS_PROXY interception, later) slots in without touching the rest.
//! Each downstream connection is one task that drives both the HTTP/1.1 server connection and its
//! own upstream connection (see `upstream.rs`). Shutdown: stop accepting, ask every connection to
//! finish its in-flight request, and let the caller wait on the tracker for the grace period.

use std::future::Future;
use std::path::PathBuf;
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::route::Role;
use super::service::{ConnCtx, Shared, handle};
use super::upstream::LocalSlot;

/// What a listener is, as requests see it.
#[derive(Debug, Clone)]
pub struct ListenerInfo {
    pub role: Role,
    /// Whether `proxy_auth` applies here (`require_auth = false` opts a route out).
    pub require_auth: bool,
    /// Bound to a loopback address (the DNS-rebinding `Host` check applies).
    pub loopback: bool,
    /// `http://127.0.0.1:7001`: where a rewritten `Location` points.
    pub local_origin: Option<String>,
    pub header_timeout: Duration,
}

/// A bound listener.
pub enum Bound {
    Tcp(TcpListener),
    Unix(UnixListener, PathBuf),
}

/// Accept connections until `cancel`, serving each in a task tracked by `tracker`.
pub async fn serve(
    listener: Bound,
    shared: Arc<Shared>,
    info: Arc<ListenerInfo>,
    limit: Arc<Semaphore>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        // Take a connection slot first: at the limit we stop accepting (the kernel's backlog
        // holds the rest) instead of accepting and dropping.
        let permit = tokio::select! {
            _ = cancel.cancelled() => break,
            p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let accepted = tokio::select! {
            _ = cancel.cancelled() => break,
            a = accept(&listener) => a,
        };
        match accepted {
            Ok(Accepted::Tcp(stream)) => {
                let _ = stream.set_nodelay(true);
                let (shared, info, cancel) = (shared.clone(), info.clone(), cancel.clone());
                tracker.spawn(async move {
                    serve_connection(stream, shared, info, cancel).await;
                    drop(permit);
                });
            }
            Ok(Accepted::Unix(stream)) => {
                let (shared, info, cancel) = (shared.clone(), info.clone(), cancel.clone());
                tracker.spawn(async move {
                    serve_connection(stream, shared, info, cancel).await;
                    drop(permit);
                });
            }
            Err(e) => {
                // EMFILE and friends: back off briefly rather than spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    if let Bound::Unix(_, path) = &listener {
        let _ = std::fs::remove_file(path);
    }
}

enum Accepted {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

async fn accept(l: &Bound) -> std::io::Result<Accepted> {
    match l {
        Bound::Tcp(t) => t.accept().await.map(|(s, _)| Accepted::Tcp(s)),
        Bound::Unix(u, _) => u.accept().await.map(|(s, _)| Accepted::Unix(s)),
    }
}

/// Serve one downstream connection: HTTP/1.1, with its upstream connection driven alongside.
pub async fn serve_connection<I>(
    io: I,
    shared: Arc<Shared>,
    info: Arc<ListenerInfo>,
    cancel: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let ctx = Arc::new(ConnCtx {
        shared,
        info,
        slot: LocalSlot::default(),
    });
    let svc = {
        let ctx = ctx.clone();
        service_fn(move |req| handle(ctx.clone(), req))
    };
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(ctx.info.header_timeout)
        // Header blocks over 64 KiB are refused with 431 by hyper's parser.
        .max_header_size(super::MAX_HEADER_BYTES)
        .max_headers(256);
    let conn = builder
        .serve_connection(TokioIo::new(io), svc)
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
    if !shutting_down {
        ctx.slot.park_into(&ctx.shared.pool);
    }
}
