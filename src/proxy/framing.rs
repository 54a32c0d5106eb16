//! Phase 1's framing guard: a thin reader under hyper's HTTP/1.1 parser that refuses the one
//! ambiguous framing hyper accepts.
//!
//! hyper already answers 400 to duplicate differing `Content-Length`, obsolete line folding, a
//! `Transfer-Encoding` whose last coding is not `chunked`, and malformed chunks. But a request
//! carrying *both* `Content-Length` and `Transfer-Encoding: chunked` is accepted: hyper drops the
//! `Content-Length` and reads chunked, as RFC 9112 §6.3 allows a server to. For a proxy that is
//! the shape of request smuggling (a front end and a back end disagreeing on where a request
//! ends), and by the time the service sees the request the `Content-Length` is gone. So this
//! guard watches the bytes as hyper reads them, follows message boundaries (request heads,
//! `Content-Length` bodies, chunked bodies), and when a head carries both fields it overwrites the
//! head's final line feed, which is always in the read that completed the head and not yet seen
//! by hyper, with a NUL. hyper then finds the head malformed, answers 400 and closes the
//! connection, and the request never reaches a service, let alone an upstream.
//!
//! Likewise, when the first chunk of a chunked body is malformed and arrives in the same read as
//! the head (a single write, the usual case), the head is spoiled the same way: hyper would
//! otherwise only fail the body after the request went upstream.
//!
//! The guard never rejects what hyper accepts except these two cases. Where it cannot follow the
//! stream (a `CONNECT` tunnel, an `Upgrade`, a value it does not parse), it stops looking for the
//! rest of the connection and hyper alone decides; hyper still never forwards an ambiguous
//! `Content-Length` (it drops it and closes the connection after the request).
//!
//! Cost: head bytes are scanned once (hyper parses them too), body bytes are skipped by count,
//! only chunk-size lines are scanned.
//!
//! (Over 500 lines with its unit tests, the last 120-odd lines: they test this file's
//! internals, so they stay beside them.)

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A downstream connection's reader with the framing guard in front of hyper.
pub struct Guard<I> {
    io: I,
    scan: Scanner,
}

impl<I> Guard<I> {
    pub fn new(io: I) -> Self {
        Guard {
            io,
            scan: Scanner::default(),
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Guard<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
        if !this.scan.is_off() {
            this.scan.feed(&mut buf.filled_mut()[before..]);
        }
        Poll::Ready(Ok(()))
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Guard<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

const CONTENT_LENGTH: &[u8] = b"content-length:";
const TRANSFER_ENCODING: &[u8] = b"transfer-encoding:";
const UPGRADE: &[u8] = b"upgrade:";
/// Enough of a line to recognise the header names above (and `CONNECT `).
const PREFIX: usize = 18;
/// The longest last transfer coding kept: `chunked` and a little more.
const CODING: usize = 16;

/// Where the scanner is in the byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before a request line: empty lines are skipped (as httparse does).
    Start,
    /// Inside a head's line (`first`: the request line).
    Line {
        first: bool,
    },
    /// `n` more bytes of a `Content-Length` body.
    Body(u64),
    /// Chunked body (RFC 9112 §7.1), following hyper's decoder state for state.
    ChunkStart,
    ChunkSize(u64),
    ChunkSizeLws(u64),
    ChunkExt(u64),
    ChunkSizeLf(u64),
    ChunkData(u64),
    ChunkDataCr,
    ChunkDataLf,
    ChunkEndCr,
    ChunkTrailer,
    ChunkTrailerLf,
    ChunkEndLf,
    /// Not looking any more: a tunnel, an upgrade, or bytes hyper will refuse.
    Off,
}

/// What the current head said so far.
#[derive(Debug, Default, Clone)]
struct Head {
    connect: bool,
    upgrade: bool,
    content_length: Option<u64>,
    transfer_encoding: bool,
    /// The last `Transfer-Encoding` line ends in `chunked`.
    chunked: bool,
    /// Something hyper will refuse or that the scanner doesn't follow: stop after this head.
    lost: bool,
}

/// The line being read: its first bytes (lowercased), and the value of a header of interest.
#[derive(Debug, Default, Clone)]
struct Line {
    prefix: [u8; PREFIX],
    len: usize,
    field: Field,
    /// `Content-Length` digits so far (`None`: not a plain number).
    number: Option<u64>,
    saw_digit: bool,
    /// The last comma-separated coding of a `Transfer-Encoding` value, lowercased.
    coding: [u8; CODING],
    coding_len: usize,
    coding_long: bool,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Field {
    #[default]
    Unknown,
    Other,
    ContentLength,
    TransferEncoding,
}

#[derive(Debug)]
struct Scanner {
    state: State,
    head: Head,
    line: Line,
}

impl Default for Scanner {
    fn default() -> Self {
        Scanner {
            state: State::Start,
            head: Head::default(),
            line: Line::default(),
        }
    }
}

impl Scanner {
    fn is_off(&self) -> bool {
        self.state == State::Off
    }

    /// Follow the bytes just read; spoil a head that must be refused (see the module doc).
    fn feed(&mut self, buf: &mut [u8]) {
        // Where, in this buffer, the current message's head ended.
        let mut head_end: Option<usize> = None;
        let mut i = 0;
        while i < buf.len() {
            let b = buf[i];
            match self.state {
                State::Off => return,
                State::Body(n) => {
                    let take = n.min((buf.len() - i) as u64);
                    i += take as usize;
                    self.state = if take == n {
                        State::Start
                    } else {
                        State::Body(n - take)
                    };
                    continue;
                }
                State::ChunkData(n) => {
                    let take = n.min((buf.len() - i) as u64);
                    i += take as usize;
                    self.state = if take == n {
                        State::ChunkDataCr
                    } else {
                        State::ChunkData(n - take)
                    };
                    continue;
                }
                State::Start => match b {
                    b'\r' | b'\n' => {}
                    _ => {
                        self.head = Head::default();
                        self.line = Line::default();
                        self.line.push(b);
                        self.state = State::Line { first: true };
                    }
                },
                State::Line { first }
                    if b != b'\n'
                        && (self.line.field == Field::Other
                            || first && self.line.len >= PREFIX) =>
                {
                    // The rest of a request line, or of a field that is neither Content-Length nor
                    // Transfer-Encoding, does not matter: skip to the line's end in one step
                    // (most of a head's bytes; byte by byte this guard cost 6% of a request).
                    let rest = &buf[i..];
                    let n = rest.iter().position(|&c| c == b'\n').unwrap_or(rest.len());
                    self.line.len += n;
                    i += n;
                    continue;
                }
                State::Line { first } => {
                    if b != b'\n' {
                        self.line.push(b);
                    } else if first {
                        self.head.connect = self.line.starts_with(b"connect ");
                        self.line = Line::default();
                        self.state = State::Line { first: false };
                    } else if self.line.len == 0
                        || (self.line.len == 1 && self.line.prefix[0] == b'\r')
                    {
                        head_end = Some(i);
                        self.state = self.end_of_head();
                        if self.state == State::Off && self.head.smuggling() {
                            buf[i] = 0;
                            return;
                        }
                    } else {
                        self.end_of_header_line();
                        self.line = Line::default();
                    }
                }
                State::ChunkStart => match hex(b) {
                    Some(d) => self.state = State::ChunkSize(u64::from(d)),
                    None => return self.bad_chunk(buf, head_end),
                },
                State::ChunkSize(size) => {
                    self.state = match (b, hex(b)) {
                        (_, Some(d)) => match size.checked_mul(16) {
                            Some(s) => State::ChunkSize(s + u64::from(d)),
                            None => return self.bad_chunk(buf, head_end),
                        },
                        (b'\t' | b' ', _) => State::ChunkSizeLws(size),
                        (b';', _) => State::ChunkExt(size),
                        (b'\r', _) => State::ChunkSizeLf(size),
                        _ => return self.bad_chunk(buf, head_end),
                    }
                }
                State::ChunkSizeLws(size) => {
                    self.state = match b {
                        b'\t' | b' ' => State::ChunkSizeLws(size),
                        b';' => State::ChunkExt(size),
                        b'\r' => State::ChunkSizeLf(size),
                        _ => return self.bad_chunk(buf, head_end),
                    }
                }
                State::ChunkExt(size) => match b {
                    b'\r' => self.state = State::ChunkSizeLf(size),
                    b'\n' => return self.bad_chunk(buf, head_end),
                    _ => {}
                },
                State::ChunkSizeLf(size) => {
                    self.state = match (b, size) {
                        (b'\n', 0) => State::ChunkEndCr,
                        (b'\n', n) => State::ChunkData(n),
                        _ => return self.bad_chunk(buf, head_end),
                    }
                }
                State::ChunkDataCr => match b {
                    b'\r' => self.state = State::ChunkDataLf,
                    _ => return self.bad_chunk(buf, head_end),
                },
                State::ChunkDataLf => match b {
                    b'\n' => self.state = State::ChunkStart,
                    _ => return self.bad_chunk(buf, head_end),
                },
                State::ChunkEndCr => {
                    self.state = match b {
                        b'\r' => State::ChunkEndLf,
                        _ => State::ChunkTrailer,
                    }
                }
                State::ChunkTrailer => {
                    if b == b'\r' {
                        self.state = State::ChunkTrailerLf;
                    }
                }
                State::ChunkTrailerLf => match b {
                    b'\n' => self.state = State::ChunkEndCr,
                    // hyper refuses the body; nothing more to follow.
                    _ => self.state = State::Off,
                },
                State::ChunkEndLf => match b {
                    b'\n' => self.state = State::Start,
                    _ => self.state = State::Off,
                },
            }
            i += 1;
        }
    }

    /// A malformed chunk: if the head it belongs to ended in this same read, spoil the head so
    /// hyper refuses the request before it is routed; otherwise hyper's decoder fails the body.
    fn bad_chunk(&mut self, buf: &mut [u8], head_end: Option<usize>) {
        if let Some(i) = head_end {
            buf[i] = 0;
        }
        self.state = State::Off;
    }

    fn end_of_header_line(&mut self) {
        let line = &mut self.line;
        match line.field {
            Field::ContentLength => match (line.number, line.saw_digit) {
                (Some(n), true) => match self.head.content_length {
                    // A repeated equal value is fine for hyper; a different one it refuses.
                    Some(prev) if prev != n => self.head.lost = true,
                    _ => self.head.content_length = Some(n),
                },
                _ => self.head.lost = true,
            },
            Field::TransferEncoding => {
                self.head.transfer_encoding = true;
                while line.coding_len > 0
                    && matches!(line.coding[line.coding_len - 1], b' ' | b'\t' | b'\r')
                {
                    line.coding_len -= 1;
                }
                self.head.chunked =
                    !line.coding_long && &line.coding[..line.coding_len] == b"chunked";
            }
            Field::Unknown | Field::Other => {
                if line.starts_with(UPGRADE) {
                    self.head.upgrade = true;
                }
            }
        }
    }

    /// The head is complete: where do the next bytes belong?
    fn end_of_head(&self) -> State {
        let h = &self.head;
        if h.smuggling() || h.lost || h.connect || h.upgrade {
            return State::Off;
        }
        if h.transfer_encoding {
            // Not chunked last: hyper refuses the request.
            return if h.chunked {
                State::ChunkStart
            } else {
                State::Off
            };
        }
        match h.content_length {
            Some(n) if n > 0 => State::Body(n),
            _ => State::Start,
        }
    }
}

impl Head {
    /// Both framings at once (RFC 9112 §6.3 item 3: "ought to be handled as an error").
    fn smuggling(&self) -> bool {
        self.content_length.is_some() && self.transfer_encoding
    }
}

impl Line {
    fn push(&mut self, b: u8) {
        if self.len < PREFIX {
            self.prefix[self.len] = b.to_ascii_lowercase();
        }
        self.len += 1;
        match self.field {
            Field::Unknown if b == b':' => {
                self.field = if self.starts_with(CONTENT_LENGTH) && self.len == CONTENT_LENGTH.len()
                {
                    self.number = Some(0);
                    Field::ContentLength
                } else if self.starts_with(TRANSFER_ENCODING) && self.len == TRANSFER_ENCODING.len()
                {
                    Field::TransferEncoding
                } else {
                    Field::Other
                };
            }
            Field::ContentLength => match b {
                b'0'..=b'9' => {
                    self.saw_digit = true;
                    self.number = self
                        .number
                        .and_then(|n| n.checked_mul(10))
                        .and_then(|n| n.checked_add(u64::from(b - b'0')));
                }
                // httparse trims whitespace around a value; anything else is not a number.
                b' ' | b'\t' | b'\r' => {}
                _ => self.number = None,
            },
            Field::TransferEncoding => match b {
                b',' => {
                    self.coding_len = 0;
                    self.coding_long = false;
                }
                b' ' | b'\t' if self.coding_len == 0 => {}
                _ if self.coding_len < CODING => {
                    self.coding[self.coding_len] = b.to_ascii_lowercase();
                    self.coding_len += 1;
                }
                _ => self.coding_long = true,
            },
            _ => {}
        }
    }

    fn starts_with(&self, p: &[u8]) -> bool {
        self.len >= p.len() && self.prefix.get(..p.len()) == Some(p)
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feed `input` in pieces of `step` bytes; the bytes hyper would see.
    fn scan(input: &[u8], step: usize) -> (Vec<u8>, State) {
        let mut s = Scanner::default();
        let mut out = input.to_vec();
        for piece in out.chunks_mut(step) {
            if s.is_off() {
                break;
            }
            s.feed(piece);
        }
        (out, s.state)
    }

    fn spoiled(input: &[u8]) -> bool {
        // Whatever the read sizes, the verdict is the same.
        let verdicts: Vec<bool> = [1, 2, 3, 7, 64, input.len().max(1)]
            .iter()
            .map(|step| scan(input, *step).0 != input)
            .collect();
        assert!(
            verdicts.iter().all(|v| *v == verdicts[0]),
            "{verdicts:?} for {:?}",
            String::from_utf8_lossy(input)
        );
        verdicts[0]
    }

    #[test]
    fn content_length_with_transfer_encoding_is_spoiled_in_either_order() {
        for head in [
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\ntransfer-encoding: chunked\r\ncontent-length: 5\r\n\r\n",
            "POST / HTTP/1.1\nHost: a\nTRANSFER-ENCODING: chunked\nCONTENT-LENGTH: 5\n\n",
        ] {
            let (out, state) = scan(head.as_bytes(), 1000);
            assert_eq!(state, State::Off);
            assert_eq!(out.last(), Some(&0), "{head:?}");
            assert!(spoiled(head.as_bytes()));
        }
    }

    #[test]
    fn ordinary_requests_pass_untouched_and_are_followed() {
        let stream = concat!(
            "GET /a HTTP/1.1\r\nHost: a\r\n\r\n",
            "\r\n",
            "POST /b HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhello world",
            "POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
            "5;ext=1\r\nhello\r\n6 \r\n world\r\n0\r\nx-trailer: 1\r\n\r\n",
            "GET /d HTTP/1.1\r\nHost: a\r\nX-Content-Length: 5\r\nX-Transfer-Encoding: chunked\r\n\r\n",
        );
        assert!(!spoiled(stream.as_bytes()));
        assert_eq!(scan(stream.as_bytes(), 5).1, State::Start);
        // A later smuggling head on the same connection is still found.
        let more = format!(
            "{stream}POST /e HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        );
        assert!(spoiled(more.as_bytes()));
    }

    #[test]
    fn body_bytes_are_not_mistaken_for_headers() {
        let body = "\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n";
        let req = format!(
            "POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        assert!(!spoiled(req.as_bytes()));
        let chunked = format!(
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
            body.len()
        );
        assert!(!spoiled(chunked.as_bytes()));
    }

    #[test]
    fn a_bad_first_chunk_in_the_same_read_spoils_the_head() {
        let req = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n";
        let (out, state) = scan(req, req.len());
        assert_eq!(state, State::Off);
        assert_ne!(out, req);
        // Arriving in a later read, the head has gone to hyper already: hyper fails the body.
        let head_len = req.len() - "zz\r\nhello\r\n0\r\n\r\n".len();
        let mut s = Scanner::default();
        let mut out = req.to_vec();
        let (head, rest) = out.split_at_mut(head_len);
        s.feed(head);
        s.feed(rest);
        assert_eq!(out, req);
        assert_eq!(s.state, State::Off);
    }

    #[test]
    fn tunnels_upgrades_and_what_hyper_refuses_stop_the_scan() {
        for head in [
            "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
            "GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n",
        ] {
            let (out, state) = scan(head.as_bytes(), 1000);
            assert_eq!(state, State::Off, "{head:?}");
            assert_eq!(out, head.as_bytes(), "not spoiled: {head:?}");
        }
        // After a tunnel, bytes that look like a smuggling head are tunnel data: untouched.
        let tunnel = "CONNECT a:443 HTTP/1.1\r\n\r\nPOST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(!spoiled(tunnel.as_bytes()));
    }

    #[test]
    fn chunk_sizes_that_overflow_are_bad() {
        let req = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1ffffffffffffffff\r\n";
        let (out, state) = scan(req, req.len());
        assert_eq!(state, State::Off);
        assert_ne!(out, req);
        // The largest size that fits is fine.
        let ok = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n";
        assert_eq!(
            scan(ok, ok.len()),
            (ok.to_vec(), State::ChunkData(u64::MAX))
        );
    }
}
