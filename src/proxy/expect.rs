//! `Expect: 100-continue` (RFC 9110 §10.1.1): the upstream decides whether the client sends its
//! body.
//!
//! A client that sends `Expect: 100-continue` waits for `100 Continue` before its body, so that a
//! server refusing the request (413, 401) costs it no upload. Answering `100` locally would let a
//! client send megabytes the upstream then refuses. So credproxy forwards `Expect` and holds the
//! client's body back until one of:
//! - the upstream answers `100 Continue`: the body is read, and hyper's server, which sends
//!   `100 Continue` downstream when a request body is first read, relays it;
//! - the upstream gives its final answer first: it goes to the client, the body is never read
//!   (hyper's server then skips its `100`, reads what already came and closes the connection
//!   otherwise, as §10.1.1 allows; the answer says `Connection: close`), and the upstream
//!   connection, left mid-request, is dropped. Not at once: the answer's body is still coming on
//!   it. The request body stays pending until the answer's body is done or dropped
//!   ([`Early`], held by the response body), then fails, so that hyper's client ends that
//!   connection (never parked nor reused) without cutting the answer short;
//! - [`EXPECT_WAIT`] passes with neither (an HTTP/1.0-style upstream that never sends `100`):
//!   credproxy reads the body, which sends `100 Continue` downstream, as curl itself would.
//!
//! Only hyper's transport serves these requests: the fast path declines a request with `Expect`
//! before any byte of it is sent on (`fast.rs`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use http::header::EXPECT;
use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::watch;

use super::upload::Upload;

/// How long the client's body waits for the upstream's `100 Continue` or final answer (curl
/// waits 1 s too before sending anyway).
pub const EXPECT_WAIT: Duration = Duration::from_secs(1);

/// The request asks for `100 Continue` before its body.
pub fn expects_continue(headers: &HeaderMap) -> bool {
    headers.get_all(EXPECT).iter().any(|v| {
        v.as_bytes()
            .trim_ascii()
            .eq_ignore_ascii_case(b"100-continue")
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gate {
    Waiting,
    /// The body may be read (the upstream said `100`, or the wait ran out).
    Open,
    /// The upstream answered without `100`: the body must not be read.
    Answered,
    /// And that answer's body is done (or dropped): the request body fails now.
    Finished,
}

/// The proxy's end of a gated body: what the upstream said.
#[derive(Clone)]
pub struct Continue(Arc<watch::Sender<Gate>>);

impl Continue {
    /// The upstream sent `100 Continue`.
    pub fn proceed(&self) {
        self.0.send_if_modified(|g| {
            let waiting = *g == Gate::Waiting;
            if waiting {
                *g = Gate::Open;
            }
            waiting
        });
    }

    /// The upstream's final answer came: a body not yet released stays unread. When it came
    /// before the body was released (an early answer), the [`Early`] that the answer's body
    /// holds until its end.
    #[must_use = "dropping the Early at once fails the request body before the answer is read"]
    pub fn answered(&self) -> Option<Early> {
        let early = self.0.send_if_modified(|g| {
            let waiting = *g == Gate::Waiting;
            if waiting {
                *g = Gate::Answered;
            }
            waiting
        });
        early.then(|| Early(Arc::clone(&self.0)))
    }
}

/// An early answer's body is under way: dropped when it is done (or dropped), which ends the
/// request body that was never sent with [`AnsweredEarly`].
pub struct Early(Arc<watch::Sender<Gate>>);

impl Drop for Early {
    fn drop(&mut self) {
        self.0.send_replace(Gate::Finished);
    }
}

/// The upstream answered before asking for the body; the request cannot be completed.
#[derive(Debug, thiserror::Error)]
#[error("the upstream answered before the request body was sent")]
pub struct AnsweredEarly;

type Wait = Pin<Box<dyn Future<Output = bool> + Send>>;

/// The client's request body, streamed; with `Expect: 100-continue`, not read until the
/// upstream asks for it ([`gated`]).
pub struct ClientBody {
    inner: Upload,
    wait: Option<Wait>,
}

impl ClientBody {
    pub fn new(inner: Upload) -> Self {
        ClientBody { inner, wait: None }
    }
}

/// `inner`, held back until the returned [`Continue`] says so or [`EXPECT_WAIT`] passes.
pub fn gated(inner: Upload) -> (ClientBody, Continue) {
    let (tx, mut rx) = watch::channel(Gate::Waiting);
    let tx = Arc::new(tx);
    let on_timeout = Arc::clone(&tx);
    let wait: Wait = Box::pin(async move {
        let decided = tokio::time::timeout(EXPECT_WAIT, rx.wait_for(|g| *g != Gate::Waiting))
            .await
            .map(|r| r.map(|g| *g == Gate::Open));
        let open = match decided {
            Ok(Ok(open)) => open,
            // The proxy's end is gone: nothing will read the answer.
            Ok(Err(_)) => false,
            Err(_) => {
                // Nothing from the upstream in time: send `100` ourselves, unless an answer
                // came at this very moment.
                on_timeout.send_if_modified(|g| {
                    let waiting = *g == Gate::Waiting;
                    if waiting {
                        *g = Gate::Open;
                    }
                    waiting
                });
                *on_timeout.borrow() == Gate::Open
            }
        };
        drop(on_timeout);
        if !open {
            // Failing now would make hyper's client end the connection the answer's body is
            // still coming on: pending until that body is done (or every sender is gone).
            let _ = rx.wait_for(|g| *g == Gate::Finished).await;
        }
        open
    });
    (
        ClientBody {
            inner,
            wait: Some(wait),
        },
        Continue(tx),
    )
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Some(wait) = self.wait.as_mut() {
            match wait.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(true) => self.wait = None,
                Poll::Ready(false) => return Poll::Ready(Some(Err(Box::new(AnsweredEarly)))),
            }
        }
        Pin::new(&mut self.inner)
            .poll_frame(cx)
            .map_err(|e| Box::new(e) as Self::Error)
    }

    fn is_end_stream(&self) -> bool {
        self.wait.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
