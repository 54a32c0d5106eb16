//! The upstream's response body on hyper's transport, counted: a response cut short after its
//! head went downstream is logged with the side that ended it and the body bytes that went
//! through (`exchange::log_cut`, as the fast path does).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use super::exchange::{Side, log_cut};
use super::expect::Early;

/// `Incoming` from the upstream, with the bytes it yielded and how it ended.
pub struct Counted {
    inner: Incoming,
    provider: Option<String>,
    bytes: u64,
    /// It ended, whole or with the upstream's error (logged then): nothing to log on drop.
    done: bool,
    /// An early answer to `Expect: 100-continue`: let go at the end (or drop) of this body,
    /// which ends the unsent request body and so the upstream connection (`expect.rs`).
    early: Option<Early>,
    /// The request's audit record, queued when the body ends (with its bytes and duration).
    audit: Option<Box<Pending>>,
}

/// An audit record waiting for its body's end.
struct Pending {
    log: std::sync::Arc<crate::audit::Audit>,
    record: crate::audit::RequestRecord,
    start: tokio::time::Instant,
    /// The request body's count (it may still be going up while the answer streams).
    upload: Option<std::sync::Arc<super::upload::Progress>>,
}

impl Counted {
    pub fn new(inner: Incoming, provider: Option<&str>) -> Self {
        let done = inner.is_end_stream();
        Counted {
            inner,
            provider: provider.map(str::to_owned),
            bytes: 0,
            done,
            early: None,
            audit: None,
        }
    }

    /// Queue `record` when this body ends (or is dropped), with the bytes that went through
    /// each way (`upload` counts the request's) and the time since `start`.
    pub fn audited(
        mut self,
        log: std::sync::Arc<crate::audit::Audit>,
        record: crate::audit::RequestRecord,
        start: tokio::time::Instant,
        upload: Option<std::sync::Arc<super::upload::Progress>>,
    ) -> Self {
        self.audit = Some(Box::new(Pending {
            log,
            record,
            start,
            upload,
        }));
        if self.done {
            self.finish_audit();
        }
        self
    }

    fn finish_audit(&mut self) {
        if let Some(p) = self.audit.take() {
            let Pending {
                log,
                mut record,
                start,
                upload,
            } = *p;
            record.bytes_out = self.bytes;
            if let Some(up) = upload {
                record.bytes_in = up.bytes();
            }
            record.duration_ms = start.elapsed().as_secs_f64() * 1000.0;
            log.request(record);
        }
    }

    /// This body answers a request whose body was never sent ([`Early`]).
    pub fn early(mut self, early: Option<Early>) -> Self {
        self.early = early;
        self
    }
}

impl Body for Counted {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.bytes += data.len() as u64;
                }
                this.done |= this.inner.is_end_stream();
                if this.done {
                    this.finish_audit();
                }
            }
            Poll::Ready(Some(Err(_))) => {
                this.done = true;
                this.early = None;
                log_cut(Side::Upstream, this.bytes, this.provider.as_deref());
                this.finish_audit();
            }
            Poll::Ready(None) => {
                this.done = true;
                this.early = None;
                this.finish_audit();
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        // Dropped before its end: hyper's server stopped writing it, the client is gone.
        if !self.done {
            log_cut(Side::Client, self.bytes, self.provider.as_deref());
        }
        self.finish_audit();
    }
}
