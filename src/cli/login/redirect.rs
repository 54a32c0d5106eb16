//! The one-shot redirect listener: a tiny HTTP/1.1 server on a loopback address that waits for
//! the browser to come back from the authorization server (RFC 8252 §7.3).
//!
//! A request on the redirect path becomes a [`Callback`]; the browser's answer waits until the
//! login has decided (the code exchanged, or refused) and then says so in a short self-contained
//! page, with `Connection: close`. Any other path (`/favicon.ico`) gets 404 and the flow goes on.
//! [`Listener::close`] stops accepting, lets the answer in flight finish, and frees the port.

use crate::admin::page::escape;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long [`Listener::close`] waits for the last page to reach the browser.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// A browser's request on the redirect path, waiting for the page to answer it with.
pub struct Callback {
    /// The query string, as sent (without `?`). It carries the authorization code.
    pub query: String,
    reply: oneshot::Sender<Page>,
}

/// The query is left out: it carries the authorization code.
impl std::fmt::Debug for Callback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Callback")
            .field("query", &"[redacted]")
            .finish_non_exhaustive()
    }
}

impl Callback {
    /// Answer the browser with `page`.
    pub fn respond(self, page: Page) {
        let _ = self.reply.send(page);
    }
}

/// The page the browser sees: whether it worked, and a line about why (plain text, escaped
/// here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub ok: bool,
    pub title: String,
    pub detail: String,
}

impl Page {
    fn finished() -> Page {
        Page {
            ok: false,
            title: "This credproxy login has already ended".into(),
            detail: "Look at the terminal where `credproxy login` ran.".into(),
        }
    }

    /// A complete HTML document: no scripts, no external resources.
    pub fn html(&self) -> String {
        let (mark, color) = if self.ok {
            ("&#10004;", "#1a7f37")
        } else {
            ("&#10008;", "#cf222e")
        };
        format!(
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <title>credproxy: {title}</title>\
             <style>body{{font-family:system-ui,sans-serif;max-width:36rem;margin:4rem auto;\
             padding:0 1rem;color:#1f2328}}h1{{font-size:1.4rem}}.m{{color:{color}}}\
             p{{line-height:1.5}}</style></head>\n<body><h1><span class=\"m\">{mark}</span> \
             {title}</h1><p>{detail}</p><p>You can close this tab and go back to the \
             terminal.</p></body></html>\n",
            title = escape(&self.title),
            detail = escape(&self.detail),
        )
    }
}

/// A bound redirect listener.
pub struct Listener {
    addr: SocketAddr,
    callbacks: mpsc::Receiver<Callback>,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl Listener {
    /// Listen on `addr` for redirects to `path`.
    pub async fn bind(addr: SocketAddr, path: &str) -> std::io::Result<Listener> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (tx, callbacks) = mpsc::channel(4);
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        tracker.spawn(accept(
            listener,
            Arc::from(path),
            tx,
            cancel.clone(),
            tracker.clone(),
        ));
        Ok(Listener {
            addr,
            callbacks,
            cancel,
            tracker,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The next request on the redirect path.
    pub async fn next(&mut self) -> Callback {
        match self.callbacks.recv().await {
            Some(cb) => cb,
            // The accept loop holds a sender until `close`, which takes `self`.
            None => std::future::pending().await,
        }
    }

    /// Stop listening. Requests still waiting for a page get "already ended"; the page in
    /// flight is given [`CLOSE_GRACE`] to reach the browser.
    pub async fn close(self) {
        drop(self.callbacks);
        self.cancel.cancel();
        self.tracker.close();
        let _ = tokio::time::timeout(CLOSE_GRACE, self.tracker.wait()).await;
    }
}

async fn accept(
    listener: TcpListener,
    path: Arc<str>,
    tx: mpsc::Sender<Callback>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    let mut accept_errors = crate::net::AcceptErrors::default();
    loop {
        let stream = tokio::select! {
            _ = cancel.cancelled() => return,
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(e) => {
                    accept_errors.failed("login redirect", &e).await;
                    continue;
                }
            },
        };
        let (path, tx, cancel) = (path.clone(), tx.clone(), cancel.clone());
        tracker.spawn(async move {
            let service = service_fn(move |req| handle(req, path.clone(), tx.clone()));
            let mut conn = pin!(
                http1::Builder::new()
                    .timer(TokioTimer::new())
                    .serve_connection(TokioIo::new(stream), service)
            );
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = cancel.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
}

async fn handle(
    req: Request<Incoming>,
    path: Arc<str>,
    tx: mpsc::Sender<Callback>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.uri().path() != &*path {
        return Ok(plain(StatusCode::NOT_FOUND, "not found\n"));
    }
    if req.method() != Method::GET {
        return Ok(plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed\n",
        ));
    }
    let (reply, answer) = oneshot::channel();
    let callback = Callback {
        query: req.uri().query().unwrap_or_default().to_owned(),
        reply,
    };
    let page = match tx.send(callback).await {
        Ok(()) => answer.await.unwrap_or_else(|_| Page::finished()),
        Err(_) => Page::finished(),
    };
    let status = if page.ok {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    Ok(Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
        .header(header::CACHE_CONTROL, "no-store")
        // The URL carried the code: don't pass it on, don't run or fetch anything.
        .header(header::REFERRER_POLICY, "no-referrer")
        .header(
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'",
        )
        .header(header::CONNECTION, "close")
        .body(Full::new(Bytes::from(page.html())))
        .expect("a valid response"))
}

fn plain(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .expect("a valid response")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_escapes_what_it_is_given() {
        let page = Page {
            ok: false,
            title: "login to x failed".into(),
            detail: "<script>alert(1)</script> & \"more\"".into(),
        };
        let html = page.html();
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;more&quot;"));
        assert!(html.contains("login to x failed"));
    }
}
