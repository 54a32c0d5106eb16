//! One end of a raw TCP connection, read as HTTP/1.1 ([`Wire`]): the downstream client's side
//! (every read has the safety net [`WAIT`]) or an upstream connection's (it waits for requests).
//! Then the raw-socket helpers for what a reader of well-framed messages can't check: closes,
//! bytes that are not a response, and heads too big to be answered before they are sent.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::{Framing, Head, Message, WAIT, assert_status, bad, eof, get};

/// One end of a raw TCP connection with a read buffer.
pub struct Wire {
    pub stream: TcpStream,
    pub buf: Vec<u8>,
    /// Client side: the safety net for each read. Upstream side: none (it waits for requests).
    limit: Option<Duration>,
}

impl Wire {
    pub async fn client(addr: SocketAddr) -> Wire {
        let stream = TcpStream::connect(addr)
            .await
            .expect("connect to credproxy");
        stream.set_nodelay(true).unwrap();
        Wire {
            stream,
            buf: Vec::new(),
            limit: Some(WAIT),
        }
    }

    /// The upstream's side of an accepted connection: reads wait as long as it takes.
    pub fn server(stream: TcpStream) -> Wire {
        Wire {
            stream,
            buf: Vec::new(),
            limit: None,
        }
    }

    pub async fn send(&mut self, bytes: impl AsRef<[u8]>) {
        self.stream
            .write_all(bytes.as_ref())
            .await
            .expect("write to the connection");
    }

    /// One read into the buffer; 0 at EOF. On the client side a read that waits longer than
    /// the safety net fails the test.
    pub async fn fill(&mut self) -> io::Result<usize> {
        let mut chunk = vec![0u8; 64 * 1024];
        let n = match self.limit {
            Some(limit) => tokio::time::timeout(limit, self.stream.read(&mut chunk))
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "nothing read within {limit:?}; buffered: {:?}",
                        String::from_utf8_lossy(&self.buf)
                    )
                })?,
            None => self.stream.read(&mut chunk).await?,
        };
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// The bytes up to and including `pat`. `None` at EOF with nothing buffered.
    async fn until(&mut self, pat: &[u8]) -> io::Result<Option<Vec<u8>>> {
        let mut from = 0;
        loop {
            if let Some(i) = self.buf[from..].windows(pat.len()).position(|w| w == pat) {
                let end = from + i + pat.len();
                return Ok(Some(self.buf.drain(..end).collect()));
            }
            from = self.buf.len().saturating_sub(pat.len() - 1);
            if self.fill().await? == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(eof("inside a line"))
                };
            }
        }
    }

    async fn line(&mut self) -> io::Result<String> {
        let line = self
            .until(b"\r\n")
            .await?
            .ok_or_else(|| eof("before a line"))?;
        String::from_utf8(line[..line.len() - 2].to_vec()).map_err(|_| bad("line is not UTF-8"))
    }

    pub async fn take(&mut self, n: usize) -> io::Result<Vec<u8>> {
        while self.buf.len() < n {
            if self.fill().await? == 0 {
                return Err(eof(&format!("after {} of {n} body bytes", self.buf.len())));
            }
        }
        Ok(self.buf.drain(..n).collect())
    }

    /// Everything until the peer closes (a reset counts as closed).
    pub async fn rest(&mut self) -> Vec<u8> {
        loop {
            match self.fill().await {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => break,
                Err(e) => panic!("reading to EOF: {e}"),
            }
        }
        std::mem::take(&mut self.buf)
    }

    pub async fn head(&mut self) -> io::Result<Option<Head>> {
        match self.until(b"\r\n\r\n").await? {
            Some(raw) => Head::parse(&raw).map(Some),
            None => Ok(None),
        }
    }

    async fn chunked(&mut self) -> io::Result<(Vec<u8>, Vec<(String, String)>)> {
        let mut body = Vec::new();
        loop {
            let line = self.line().await?;
            let size = line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size, 16)
                .map_err(|_| bad(&format!("bad chunk size line {line:?}")))?;
            if size == 0 {
                let mut trailers = Vec::new();
                loop {
                    let line = self.line().await?;
                    if line.is_empty() {
                        return Ok((body, trailers));
                    }
                    let (n, v) = line
                        .split_once(':')
                        .ok_or_else(|| bad(&format!("bad trailer {line:?}")))?;
                    trailers.push((n.to_owned(), v.trim().to_owned()));
                }
            }
            body.extend(self.take(size).await?);
            if !self.line().await?.is_empty() {
                return Err(bad("chunk data not followed by CRLF"));
            }
        }
    }

    pub async fn body(&mut self, head: Head, framing: Framing) -> io::Result<Message> {
        let (body, trailers) = match framing {
            Framing::None => (Vec::new(), Vec::new()),
            Framing::Chunked => self.chunked().await?,
            Framing::Length => {
                let n = head
                    .get("content-length")
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| bad("bad Content-Length"))?;
                (self.take(n).await?, Vec::new())
            }
            Framing::Close => (self.rest().await, Vec::new()),
        };
        Ok(Message {
            head,
            body,
            trailers,
            framing,
        })
    }

    /// The next response, 1xx included. `head_request`: it answers a HEAD (no body).
    pub async fn response(&mut self, head_request: bool) -> io::Result<Message> {
        let head = self.head().await?.ok_or_else(|| eof("before a response"))?;
        if !head.start.starts_with("HTTP/1.1 ") && !head.start.starts_with("HTTP/1.0 ") {
            return Err(bad(&format!("not a status line: {:?}", head.start)));
        }
        let status = head.status().ok_or_else(|| bad("no status code"))?;
        let framing =
            if head_request || (100..200).contains(&status) || status == 204 || status == 304 {
                Framing::None
            } else if head.tokens("transfer-encoding").last().map(String::as_str) == Some("chunked")
            {
                Framing::Chunked
            } else if head.has("content-length") {
                Framing::Length
            } else {
                Framing::Close
            };
        self.body(head, framing).await
    }

    /// The interim (1xx) responses, then the final one.
    pub async fn final_response(
        &mut self,
        head_request: bool,
    ) -> io::Result<(Vec<Message>, Message)> {
        let mut interim = Vec::new();
        loop {
            let m = self.response(head_request).await?;
            if (100..200).contains(&m.status()) {
                interim.push(m);
            } else {
                return Ok((interim, m));
            }
        }
    }

    /// Send `request` and read its final response (the test fails on any framing error).
    pub async fn roundtrip(&mut self, request: impl AsRef<[u8]>) -> Message {
        let request = request.as_ref();
        self.send(request).await;
        let (_, resp) = self
            .final_response(request.starts_with(b"HEAD "))
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "no well-framed response to {:?}: {e}",
                    String::from_utf8_lossy(&request[..request.len().min(200)])
                )
            });
        resp
    }

    /// A GET for `target`, answered by the echoing upstream ([`echo`](super::echo)): a 200 with
    /// `GET TARGET 0`, the proof that this connection still carries requests to the upstream.
    pub async fn get_echoed(&mut self, target: &str) -> Message {
        let r = self.roundtrip(get(target)).await;
        assert_status(&r, 200);
        assert_eq!(r.text(), format!("GET {target} 0"));
        r
    }

    /// A request, as an origin server reads it: the head, `100 Continue` when the client asks
    /// for it, then the body. `None` when the peer closed between requests.
    pub async fn request(&mut self) -> io::Result<Option<Message>> {
        let Some(head) = self.head().await? else {
            return Ok(None);
        };
        let framing =
            if head.tokens("transfer-encoding").last().map(String::as_str) == Some("chunked") {
                Framing::Chunked
            } else if head.has("content-length") {
                Framing::Length
            } else {
                Framing::None
            };
        if framing != Framing::None
            && head
                .get("expect")
                .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
        {
            self.stream
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .await?;
        }
        self.body(head, framing).await.map(Some)
    }

    /// The peer closes the connection next, without sending anything more.
    pub async fn assert_closed(&mut self, what: &str) {
        let more = self.rest().await;
        assert!(
            more.is_empty(),
            "{what}: bytes after the last response: {:?}",
            String::from_utf8_lossy(&more)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Below the reader: closes, unframed bytes, heads sent whole before any answer.

/// Whether a read error means the peer closed (a reset, or a write into a reset socket).
pub fn is_closed(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}

/// Read into `w.buf` until `stop` holds for what was read (`false`), the peer closes (`true`; a
/// reset counts as closed) or `limit` passes (`false`). `limit` only matters when the peer
/// neither sends what `stop` waits for nor closes: a failure.
pub async fn read_until_or_closed(
    w: &mut Wire,
    limit: Duration,
    stop: impl Fn(&[u8]) -> bool,
) -> bool {
    let reads = async {
        loop {
            if stop(&w.buf) {
                return false;
            }
            match w.fill().await {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if is_closed(&e) => return true,
                Err(e) => panic!("reading: {e}"),
            }
        }
    };
    tokio::time::timeout(limit, reads).await.unwrap_or(false)
}

/// `raw`, as a client that got exactly these bytes and then a close reads them: one response,
/// or why it is not a well-framed one.
pub async fn parse_response(raw: Vec<u8>) -> io::Result<Message> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let writer = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await?;
        s.write_all(&raw).await?;
        s.shutdown().await
    });
    let mut w = Wire::client(addr).await;
    let parsed = w.response(false).await;
    writer
        .await
        .expect("writer task")
        .expect("writing the bytes");
    parsed
}

/// Write `bytes` on `stream` while reading from it (a server may answer and close before it
/// read them all, and stop reading so a plain write would block). Returns what was read up to
/// the end of the first response head, or until the server closed (maybe nothing).
pub async fn send_while_reading(stream: TcpStream, bytes: Vec<u8>) -> Vec<u8> {
    let (mut rd, mut wr) = stream.into_split();
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(&bytes).await;
        // Kept open (no FIN) until the reader is done.
        std::future::pending::<()>().await;
    });
    let read = async {
        let mut got = Vec::new();
        let mut chunk = vec![0u8; 64 * 1024];
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            match rd.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&chunk[..n]),
            }
        }
        got
    };
    let got = tokio::time::timeout(WAIT, read)
        .await
        .expect("an answer or a closed connection");
    writer.abort();
    got
}

/// The status code of the response head at the start of `got`; `None` when nothing was read.
pub fn status_of(got: &[u8]) -> Option<u16> {
    if got.is_empty() {
        return None;
    }
    let line = got.split(|&b| b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let code = line
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| line.strip_prefix("HTTP/1.0 "))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|c| c.parse().ok());
    Some(code.unwrap_or_else(|| panic!("not a status line: {line:?}")))
}
