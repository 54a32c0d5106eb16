//! Phase 7's clock on hyper's path: whose time it is while a request goes upstream. The upload
//! is the client's time, the answer the upstream's (nginx's `client_body_timeout` and
//! `proxy_read_timeout`):
//! - while the upstream has asked for more of the body and the client has not sent it, the
//!   client has `client_body_timeout`: then the request is refused with 408 `client_timeout`
//!   ([`Upload`] ends the body with [`UploadError::Stalled`]), and the upstream is not blamed;
//! - while the upstream holds what was sent and has not asked for more (it is slow to read, or
//!   the whole body is sent and it is working on the answer), `response_timeout` runs, counted
//!   from the moment it got the last part ([`Progress::deadline`]), then 504.
//!
//! So a slow but steady upload longer than `response_timeout` goes through, and the timeout
//! means what its name says: the time the upstream takes to answer. The fast path sends only
//! bodies it has read whole, so it needs none of this (`fast.rs`: its read of the body has
//! `client_body_timeout` of its own).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use parking_lot::Mutex;
use pin_project_lite::pin_project;
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};

/// Whose turn it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Turn {
    /// The upstream got the last part of the request at this instant (the head, a part of the
    /// body, or its end) and has not asked for more.
    Upstream(Instant),
    /// The upstream asked for more of the body; the client has not sent it.
    Client,
    /// The client's body failed: the request can't complete, and it was the client's doing.
    Failed(Fault),
}

/// How the client's body failed, kept for the send to blame the client: an HTTP/2 upstream's
/// send fails with a stream error of its own and the body's error is lost on the way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Nothing came for `client_body_timeout` while the upstream waited for it (408).
    Stalled(Duration),
    /// It could not be read: a malformed chunk, a hang-up mid-body (400).
    Unreadable,
}

/// One request's turn, shared by its [`Upload`] (which moves it) and the send (which times it).
#[derive(Debug)]
pub struct Progress {
    turn: Mutex<Turn>,
    changed: Notify,
    /// Body bytes read from the client so far (for the audit log's `bytes_in`).
    bytes: std::sync::atomic::AtomicU64,
}

impl Progress {
    /// The upstream's turn from `now` (the request is about to go).
    pub fn new(now: Instant) -> Arc<Self> {
        Arc::new(Progress {
            turn: Mutex::new(Turn::Upstream(now)),
            changed: Notify::new(),
            bytes: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Body bytes read from the client so far.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn set(&self, turn: Turn) {
        let mut t = self.turn.lock();
        if *t != turn {
            *t = turn;
            drop(t);
            // A permit is kept when nobody waits yet: the change is not missed.
            self.changed.notify_one();
        }
    }

    /// When `response_timeout` runs out; `None` while it is the client's turn (or its body
    /// failed: the send ends by itself).
    pub fn deadline(&self, response_timeout: Duration) -> Option<Instant> {
        match *self.turn.lock() {
            Turn::Upstream(since) => Some(since + response_timeout),
            Turn::Client | Turn::Failed(_) => None,
        }
    }

    /// How the client's body failed, if it did.
    pub fn fault(&self) -> Option<Fault> {
        match *self.turn.lock() {
            Turn::Failed(f) => Some(f),
            _ => None,
        }
    }
}

/// Why the client's body did not go up.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// Nothing came for `client_body_timeout` while the upstream waited for it.
    #[error("the request body sent nothing for {0:?} (client_body_timeout)")]
    Stalled(Duration),
    /// It could not be read (a malformed chunk, a hang-up mid-body).
    #[error("the request body could not be read")]
    Client(#[source] hyper::Error),
}

pin_project! {
    /// The client's body on its way upstream, moving [`Progress`] and keeping
    /// `client_body_timeout` (see the module doc).
    pub struct Upload {
        #[pin]
        inner: Incoming,
        // Made the first time the client is waited for (most bodies never are); boxed so the
        // body stays `Unpin`, as hyper's HTTP/2 client needs.
        idle: Option<Pin<Box<Sleep>>>,
        timeout: Duration,
        waiting: bool,
        progress: Arc<Progress>,
    }
}

impl Upload {
    pub fn new(inner: Incoming, timeout: Duration, progress: Arc<Progress>) -> Self {
        Upload {
            inner,
            idle: None,
            timeout,
            waiting: false,
            progress,
        }
    }
}

impl Body for Upload {
    type Data = Bytes;
    type Error = UploadError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, UploadError>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.progress
                        .bytes
                        .fetch_add(data.len() as u64, std::sync::atomic::Ordering::Relaxed);
                }
                *this.waiting = false;
                this.progress.set(Turn::Upstream(Instant::now()));
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.progress.set(Turn::Failed(Fault::Unreadable));
                Poll::Ready(Some(Err(UploadError::Client(e))))
            }
            Poll::Ready(None) => {
                this.progress.set(Turn::Upstream(Instant::now()));
                Poll::Ready(None)
            }
            Poll::Pending => {
                if !*this.waiting {
                    // Counted from when the upstream asked, not from the last byte: time the
                    // upstream spent not reading is not the client's.
                    *this.waiting = true;
                    let until = Instant::now() + *this.timeout;
                    match this.idle {
                        Some(idle) => idle.as_mut().reset(until),
                        None => *this.idle = Some(Box::pin(tokio::time::sleep_until(until))),
                    }
                    this.progress.set(Turn::Client);
                }
                let idle = this.idle.as_mut().expect("set when waiting began");
                match idle.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        this.progress
                            .set(Turn::Failed(Fault::Stalled(*this.timeout)));
                        Poll::Ready(Some(Err(UploadError::Stalled(*this.timeout))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// `answer` (a sent request's response), or `None` when `response_timeout` ran out during the
/// upstream's turn: counted from `start` for a request without an [`Upload`] (`progress`
/// `None`: its body is in memory), else as [`Progress::deadline`] says.
pub async fn within<F: Future>(
    answer: F,
    progress: Option<&Progress>,
    start: Instant,
    response_timeout: Duration,
) -> Option<F::Output> {
    let mut answer = std::pin::pin!(answer);
    loop {
        let deadline = match progress {
            Some(p) => p.deadline(response_timeout),
            None => Some(start + response_timeout),
        };
        let expired = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        let changed = async {
            match progress {
                Some(p) => p.changed.notified().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            out = &mut answer => return Some(out),
            () = expired => {
                // Unless the turn moved at the last moment (the deadline is recomputed).
                let now = Instant::now();
                let deadline = progress.map_or(deadline, |p| p.deadline(response_timeout));
                if deadline.is_some_and(|d| d <= now) {
                    return None;
                }
            }
            () = changed => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RT: Duration = Duration::from_secs(10);

    #[tokio::test(start_paused = true)]
    async fn the_clock_runs_only_in_the_upstreams_turn() {
        let start = Instant::now();
        let progress = Progress::new(start);
        // The client's turn: an answer that takes 10 × response_timeout is still awaited.
        progress.set(Turn::Client);
        let slow = tokio::time::sleep(RT * 10);
        assert!(within(slow, Some(&progress), start, RT).await.is_some());
        // The upstream got the last part at t: it has until t + response_timeout.
        let t = Instant::now();
        progress.set(Turn::Upstream(t));
        assert!(
            within(std::future::pending::<()>(), Some(&progress), start, RT)
                .await
                .is_none()
        );
        assert_eq!(Instant::now(), t + RT);
    }

    #[tokio::test(start_paused = true)]
    async fn a_turn_that_moves_restarts_the_clock() {
        let start = Instant::now();
        let progress = Progress::new(start);
        let p = progress.clone();
        // More of the body goes up at 8 s: the upstream then has until 18 s.
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(8)).await;
            p.set(Turn::Upstream(Instant::now()));
        });
        assert!(
            within(std::future::pending::<()>(), Some(&progress), start, RT)
                .await
                .is_none()
        );
        assert_eq!(Instant::now(), start + Duration::from_secs(18));
        // Without an upload, from `start`.
        let start = Instant::now();
        assert!(
            within(std::future::pending::<()>(), None, start, RT)
                .await
                .is_none()
        );
        assert_eq!(Instant::now(), start + RT);
    }
}
