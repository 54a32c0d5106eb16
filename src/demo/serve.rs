//! Plain HTTP/1.1 plumbing shared by the demo's token server and API: an accept loop on
//! 127.0.0.1 that stops on a cancellation token, and small JSON replies.
//!
//! The servers set no hyper timer: they arm no timeouts of their own, so a test that pauses
//! tokio's clock decides alone when time moves.

use std::convert::Infallible;
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub type Reply = Response<Full<Bytes>>;

/// A JSON reply, never cached (RFC 6749 §5.1 asks it of token replies; the API's say who is
/// authorized, so they must not be cached either).
pub fn json(status: StatusCode, body: &serde_json::Value) -> Reply {
    let mut reply = Response::new(Full::new(Bytes::from(body.to_string())));
    *reply.status_mut() = status;
    let h = reply.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    reply
}

/// `{"error": code, "message": message}` with `status`.
pub fn error(status: StatusCode, code: &str, message: &str) -> Reply {
    json(
        status,
        &serde_json::json!({ "error": code, "message": message }),
    )
}

/// 405 with the methods this path allows (RFC 9110 §15.5.6).
pub fn method_not_allowed(allow: &'static str) -> Reply {
    let mut reply = error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        &format!("use {allow}"),
    );
    reply
        .headers_mut()
        .insert(http::header::ALLOW, HeaderValue::from_static(allow));
    reply
}

/// Accept connections on `listener` until `cancel`, answering each request with `handler`.
pub async fn serve<H, F>(
    listener: TcpListener,
    handler: Arc<H>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) where
    H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = Reply> + Send + 'static,
{
    let mut accept_errors = crate::net::AcceptErrors::default();
    loop {
        let (stream, _) = tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    accept_errors.failed("demo", &e).await;
                    continue;
                }
            },
        };
        let handler = handler.clone();
        let cancel = cancel.clone();
        tracker.spawn(async move {
            let svc = service_fn(move |req| {
                let reply = handler(req);
                async move { Ok::<_, Infallible>(reply.await) }
            });
            let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), svc);
            let mut conn = pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = cancel.cancelled() => {
                    // Finish the request in flight, then close.
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
}
