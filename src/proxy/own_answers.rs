//! Phase 1's refusals in credproxy's own words: hyper's server answers a request head it can't
//! parse by itself (400, 414, 431 with an empty body, then closes), before any service sees a
//! request. Every answer credproxy makes carries the JSON body and `Proxy-Status` of `error.rs`,
//! so this thin writer under hyper recognises those canned answers as they are written and writes
//! the JSON error in their place.
//!
//! A canned answer is told apart by its shape, which nothing else credproxy writes has: a status
//! line of 400, 414 or 431, then only `content-length: 0`, `date` and `connection` fields, all in
//! one write. Every response the service writes carries `Via` (forwarded) or `Proxy-Status`
//! (credproxy's own). The fast path hands malformed and oversized heads to hyper (`fast.rs`), so
//! this covers both transports; the framing guard's refusals (`framing.rs`) come out this way too.
//!
//! And it is looked for only where hyper can write one: between responses. hyper writes a canned
//! answer only when no response is under way, so [`Turn`] follows the service: a request taken
//! makes the connection busy; the end of its response body (hyper drops it) and the flush that
//! follows (the body's last bytes are then on their way) make it idle again. Bytes of a response
//! body (an upstream's, which may hold anything) and of a tunnel (`CONNECT`, `Upgrade`: busy for
//! good) are never looked at.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::error::{ErrorKind, ProxyError};

/// Whether a response is under way on a connection, shared by its service (which moves it) and
/// its [`OwnAnswers`] (which looks for canned answers only while [`Turn::idle`]).
#[derive(Debug, Default)]
pub struct Turn(AtomicU8);

const IDLE: u8 = 0;
const BUSY: u8 = 1;
/// The response body is done; its last bytes may still be in hyper's buffer.
const ENDING: u8 = 2;
/// A tunnel: bytes that are not HTTP/1.1 responses, to the end.
const TUNNEL: u8 = 3;

impl Turn {
    pub fn new() -> Arc<Self> {
        Arc::new(Turn::default())
    }

    /// The service took a request.
    pub fn begin(&self) {
        let _ = self
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                (t != TUNNEL).then_some(BUSY)
            });
    }

    /// The connection became a tunnel (a `CONNECT` or `Upgrade` was accepted).
    pub fn tunnel(&self) {
        self.0.store(TUNNEL, Ordering::Release);
    }

    fn ended(&self) {
        let _ = self
            .0
            .compare_exchange(BUSY, ENDING, Ordering::AcqRel, Ordering::Acquire);
    }

    fn flushed(&self) {
        let _ = self
            .0
            .compare_exchange(ENDING, IDLE, Ordering::AcqRel, Ordering::Acquire);
    }

    fn idle(&self) -> bool {
        self.0.load(Ordering::Acquire) == IDLE
    }
}

/// A response body that tells the connection's [`Turn`] when hyper is done with it.
pub struct Ends<B> {
    inner: B,
    turn: Arc<Turn>,
}

impl<B> Ends<B> {
    pub fn new(inner: B, turn: Arc<Turn>) -> Self {
        Ends { inner, turn }
    }
}

impl<B> Drop for Ends<B> {
    fn drop(&mut self) {
        self.turn.ended();
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for Ends<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A downstream connection's writer that replaces hyper's canned errors.
pub struct OwnAnswers<I> {
    io: I,
    /// A replacement not yet all written.
    pending: Vec<u8>,
    turn: Arc<Turn>,
}

impl<I> OwnAnswers<I> {
    pub fn new(io: I, turn: Arc<Turn>) -> Self {
        OwnAnswers {
            io,
            pending: Vec::new(),
            turn,
        }
    }
}

/// The error that stands for hyper's canned answer with `status`.
fn replacement(status: u16) -> Option<ProxyError> {
    Some(match status {
        400 => ProxyError::new(
            ErrorKind::BadRequest,
            "the request is not valid HTTP/1.1 (a malformed request line or header field, or an ambiguous Content-Length): fix the client or what builds the request",
        ),
        414 => ProxyError::new(
            ErrorKind::UriTooLong,
            "the request target (URL) is too long",
        ),
        431 => ProxyError::new(
            ErrorKind::HeadersTooLarge,
            "the request's header block is over 64 KiB: send fewer or smaller header fields",
        ),
        _ => return None,
    })
}

/// `buf` is exactly one of hyper's canned error heads: its status.
fn canned(buf: &[u8]) -> Option<u16> {
    if !buf.starts_with(b"HTTP/1.1 4") {
        return None;
    }
    let mut headers = [httparse::EMPTY_HEADER; 4];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) if n == buf.len() => {}
        _ => return None,
    }
    let mut length_zero = false;
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            length_zero = h.value == b"0";
        } else if !(h.name.eq_ignore_ascii_case("date")
            || h.name.eq_ignore_ascii_case("connection"))
        {
            return None;
        }
    }
    let status = resp.code?;
    (length_zero && matches!(status, 400 | 414 | 431)).then_some(status)
}

impl<I: AsyncWrite + Unpin> OwnAnswers<I> {
    /// Write what is left of a replacement.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while !self.pending.is_empty() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.pending))?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            self.pending.drain(..n);
        }
        Poll::Ready(Ok(()))
    }

    /// `buf` is a canned answer: take it, and start writing the JSON one instead.
    fn replace(
        &mut self,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Option<Poll<std::io::Result<usize>>> {
        if !self.turn.idle() {
            return None;
        }
        let error = replacement(canned(buf)?)?;
        tracing::debug!(code = error.kind.code(), message = %error.message, "request refused before routing");
        let id = crate::request_id::RequestId::fresh();
        error.write_http1(&mut self.pending, false, &id);
        // What is not written now is written by the next flush or write (hyper flushes and
        // shuts down after these answers; both finish the replacement first).
        match self.poll_pending(cx) {
            Poll::Ready(Err(e)) => Some(Poll::Ready(Err(e))),
            _ => Some(Poll::Ready(Ok(buf.len()))),
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for OwnAnswers<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for OwnAnswers<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        ready!(this.poll_pending(cx))?;
        if let Some(done) = this.replace(cx, buf) {
            return done;
        }
        Pin::new(&mut this.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        ready!(this.poll_pending(cx))?;
        let mut nonempty = bufs.iter().filter(|b| !b.is_empty());
        if let (Some(only), None) = (nonempty.next(), nonempty.next())
            && let Some(done) = this.replace(cx, only)
        {
            return done;
        }
        Pin::new(&mut this.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        ready!(Pin::new(&mut self.io).poll_flush(cx))?;
        // Everything hyper wrote is out, the last bytes of an ended response body included.
        self.turn.flushed();
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_replacements_keep_hypers_status_and_say_close() {
        for status in [400, 414, 431] {
            let mut out = Vec::new();
            replacement(status).unwrap().write_http1(
                &mut out,
                false,
                &crate::request_id::RequestId::fresh(),
            );
            let text = String::from_utf8(out).unwrap();
            assert!(text.starts_with(&format!("HTTP/1.1 {status} ")), "{text}");
            assert!(text.contains("\r\nconnection: close\r\n"), "{text}");
            assert!(
                text.contains("\"error\":\"bad_request\"") || status == 431,
                "{text}"
            );
        }
    }

    #[test]
    fn only_hypers_canned_heads_are_recognised() {
        let date = "date: Fri, 04 Dec 2026 02:41:27 GMT\r\n";
        let h = |s: &str| format!("HTTP/1.1 {s}\r\ncontent-length: 0\r\n{date}\r\n");
        assert_eq!(
            canned(h("431 Request Header Fields Too Large").as_bytes()),
            Some(431)
        );
        assert_eq!(canned(h("400 Bad Request").as_bytes()), Some(400));
        assert_eq!(
            canned(b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"),
            Some(400)
        );
        // A forwarded 400 (it has Via), credproxy's own (JSON), other statuses, a body after it.
        let via = format!(
            "HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nvia: 1.1 credproxy\r\n{date}\r\n"
        );
        assert_eq!(canned(via.as_bytes()), None);
        assert_eq!(
            canned(b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 0\r\n\r\n"),
            None
        );
        assert_eq!(canned(h("404 Not Found").as_bytes()), None);
        assert_eq!(
            canned(format!("{}x", h("400 Bad Request")).as_bytes()),
            None
        );
        assert_eq!(
            canned(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 5\r\n\r\n"),
            None
        );
    }
}
