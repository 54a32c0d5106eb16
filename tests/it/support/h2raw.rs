//! HTTP/2 frames by hand, for what a real HTTP/2 client refuses to send: connection-specific
//! fields, a body that disagrees with its `content-length`, a flood of resets (RFC 9113 §4, §6;
//! HPACK literals without Huffman coding, RFC 7541 §6.2.2).

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const END_STREAM: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;
pub const ACK: u8 = 0x1;
pub const CANCEL: u32 = 0x8;
pub const ENHANCE_YOUR_CALM: u32 = 0xb;

pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = Vec::with_capacity(9 + payload.len());
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// An HPACK integer with an `n`-bit prefix (RFC 7541 §5.1), the prefix's other bits `first`.
fn integer(out: &mut Vec<u8>, first: u8, n: u32, mut v: usize) {
    let max = (1usize << n) - 1;
    if v < max {
        out.push(first | v as u8);
        return;
    }
    out.push(first | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128 + 128) as u8);
        v /= 128;
    }
    out.push(v as u8);
}

/// A header block of literal fields, never indexed and never Huffman-coded.
pub fn block(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0x00);
        integer(&mut out, 0, 7, name.len());
        out.extend_from_slice(name.as_bytes());
        integer(&mut out, 0, 7, value.len());
        out.extend_from_slice(value.as_bytes());
    }
    out
}

/// A request's HEADERS frame: `:method`, `:scheme`, `:authority`, `:path`, then `extra`.
pub fn request(
    stream: u32,
    method: &str,
    authority: &str,
    path: &str,
    extra: &[(&str, &str)],
    end_stream: bool,
) -> Vec<u8> {
    let mut fields = vec![
        (":method", method),
        (":scheme", "http"),
        (":authority", authority),
        (":path", path),
    ];
    fields.extend_from_slice(extra);
    let flags = END_HEADERS | if end_stream { END_STREAM } else { 0 };
    frame(HEADERS, flags, stream, &block(&fields))
}

pub fn rst(stream: u32, code: u32) -> Vec<u8> {
    frame(RST_STREAM, 0, stream, &code.to_be_bytes())
}

/// One frame as read.
#[derive(Debug)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

impl Frame {
    /// The status of a response HEADERS frame when the server sent it as a static-table index
    /// (hyper does for 200, 204, 206, 304, 400, 404, 500: RFC 7541 Appendix A).
    pub fn indexed_status(&self) -> Option<u16> {
        let first = *self.payload.first()?;
        if first & 0x80 == 0 {
            return None;
        }
        Some(match first & 0x7f {
            8 => 200,
            9 => 204,
            10 => 206,
            11 => 304,
            12 => 400,
            13 => 404,
            14 => 500,
            _ => return None,
        })
    }

    /// RST_STREAM's or GOAWAY's error code.
    pub fn code(&self) -> u32 {
        let at = if self.kind == GOAWAY { 4 } else { 0 };
        u32::from_be_bytes(self.payload[at..at + 4].try_into().unwrap())
    }
}

/// A raw client connection: preface and an empty SETTINGS sent; the server's SETTINGS and
/// PINGs are acknowledged as they are read.
pub struct Raw {
    pub tcp: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    pub async fn connect(addr: std::net::SocketAddr) -> Raw {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(PREFACE).await.unwrap();
        tcp.write_all(&frame(SETTINGS, 0, 0, &[])).await.unwrap();
        Raw {
            tcp,
            buf: Vec::new(),
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.tcp.write_all(bytes).await
    }

    /// The next frame that is not connection housekeeping (SETTINGS, PING, WINDOW_UPDATE);
    /// `None` when the connection closed.
    pub async fn next(&mut self) -> Option<Frame> {
        loop {
            while self.buf.len() < 9
                || self.buf.len()
                    < 9 + u32::from_be_bytes([0, self.buf[0], self.buf[1], self.buf[2]]) as usize
            {
                let mut chunk = [0u8; 16384];
                match self.tcp.read(&mut chunk).await {
                    Ok(0) | Err(_) => return None,
                    Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                }
            }
            let len = u32::from_be_bytes([0, self.buf[0], self.buf[1], self.buf[2]]) as usize;
            let f = Frame {
                kind: self.buf[3],
                flags: self.buf[4],
                stream: u32::from_be_bytes(self.buf[5..9].try_into().unwrap()) & 0x7fff_ffff,
                payload: self.buf[9..9 + len].to_vec(),
            };
            self.buf.drain(..9 + len);
            match f.kind {
                SETTINGS if f.flags & ACK == 0 => {
                    let _ = self.tcp.write_all(&frame(SETTINGS, ACK, 0, &[])).await;
                }
                SETTINGS | 0x8 => {}
                PING if f.flags & ACK == 0 => {
                    let _ = self.tcp.write_all(&frame(PING, ACK, 0, &f.payload)).await;
                }
                _ => return Some(f),
            }
        }
    }

    /// Frames until one on `stream` ends it (RST_STREAM, or END_STREAM) or the connection ends.
    pub async fn outcome(&mut self, stream: u32) -> Vec<Frame> {
        let mut seen = Vec::new();
        while let Some(f) = self.next().await {
            let ends = f.kind == GOAWAY
                || f.stream == stream && (f.kind == RST_STREAM || f.flags & END_STREAM != 0);
            if f.stream == stream || f.kind == GOAWAY {
                seen.push(f);
            }
            if ends {
                break;
            }
        }
        seen
    }
}
