//! The wire-level HTTP/1.1 machinery of `tests/proxy_wire*.rs`: raw bytes on both sides of
//! credproxy.
//!
//! - this file: the messages ([`Head`], [`Message`], [`Framing`]) and the bytes the tests write
//!   ([`request`], [`get`], [`response`], [`echo`]);
//! - [`conn`]: one end of a raw TCP connection with a small HTTP/1.1 reader ([`Wire`]), and the
//!   raw-socket helpers for what a reader can't frame (closes, oversized heads);
//! - [`upstream`]: the scripted raw upstream ([`Upstream`]), which records every request it reads;
//! - [`setup`]: credproxy in front of it ([`Setup`]), the shared assertions and waits.
//!
//! ```ignore
//! let s = Setup::echoing().await; // an upstream that answers `echo` to every request
//! let mut c = s.client().await;
//! let r = c.get_echoed("/a").await;
//! assert!(!r.closes());
//! assert_eq!(s.up.targets(), ["/a"]);
//! ```
//!
//! Nothing waits on timing: each step waits for the bytes or the signal it needs, and every
//! client read has a safety net of [`WAIT`] so a hang fails instead of blocking the suite.

use std::io;
use std::time::Duration;

use serde_json::Value;

pub mod conn;
pub mod setup;
pub mod upstream;

pub use self::conn::*;
pub use self::setup::*;
pub use self::upstream::*;

/// The safety net around every client read.
pub const WAIT: Duration = Duration::from_secs(10);
/// How long a client waits for a close that should come at once (shorter than [`WAIT`], so a
/// connection left open fails the test's own assertion, not the read's safety net).
pub const CLOSE_WAIT: Duration = Duration::from_secs(3);
/// The host the provider claims; requests reach it by `Host` on the main listener.
pub const HOST: &str = "api.wire.test";
pub const TOKEN: &str = "wire-static-token-0123";

// ---------------------------------------------------------------------------------------------
// Messages as they were on the wire.

/// A start line and its field lines, as they were on the wire (names keep their case).
#[derive(Clone, Debug)]
pub struct Head {
    pub start: String,
    pub fields: Vec<(String, String)>,
}

impl Head {
    pub fn parse(raw: &[u8]) -> io::Result<Head> {
        let text = std::str::from_utf8(raw).map_err(|_| bad("the head is not UTF-8"))?;
        let mut lines = text.split("\r\n");
        let start = lines.next().unwrap_or_default().to_owned();
        let mut fields = Vec::new();
        for line in lines.filter(|l| !l.is_empty()) {
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| bad(&format!("not a field line: {line:?}")))?;
            fields.push((name.to_owned(), value.trim().to_owned()));
        }
        Ok(Head { start, fields })
    }

    /// The status code of a response head.
    pub fn status(&self) -> Option<u16> {
        self.start.split(' ').nth(1).and_then(|s| s.parse().ok())
    }

    /// Every value of `name`, in order.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.fields
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.all(name).first().copied()
    }

    pub fn has(&self, name: &str) -> bool {
        !self.all(name).is_empty()
    }

    /// The members of a list field (`Connection`, `Transfer-Encoding`), lowercased.
    pub fn tokens(&self, name: &str) -> Vec<String> {
        self.all(name)
            .iter()
            .flat_map(|v| v.split(','))
            .map(|t| t.trim().to_ascii_lowercase())
            .filter(|t| !t.is_empty())
            .collect()
    }

    /// The field's values combined as RFC 9110 §5.3 allows (`a, b`): the same whether a hop
    /// sends them on one line or on several.
    pub fn joined(&self, name: &str) -> String {
        self.all(name).join(", ")
    }
}

fn bad(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_owned())
}

fn eof(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, format!("EOF {what}"))
}

/// How a message's body was delimited on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body by definition (HEAD, 1xx, 204, 304, a request with neither length nor chunks).
    None,
    Length,
    Chunked,
    /// A response read until the connection closed.
    Close,
}

/// One request or response: its head and its body, de-chunked.
#[derive(Clone, Debug)]
pub struct Message {
    pub head: Head,
    pub body: Vec<u8>,
    pub trailers: Vec<(String, String)>,
    pub framing: Framing,
}

impl Message {
    pub fn method(&self) -> &str {
        self.head.start.split(' ').next().unwrap_or_default()
    }

    pub fn target(&self) -> &str {
        self.head.start.split(' ').nth(1).unwrap_or_default()
    }

    pub fn status(&self) -> u16 {
        self.head.status().unwrap_or(0)
    }

    pub fn reason(&self) -> &str {
        self.head.start.splitn(3, ' ').nth(2).unwrap_or_default()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON ({}): {}", self.head.start, self.text()))
    }

    /// The bearer token in the (single) `Authorization` field.
    pub fn bearer(&self) -> String {
        let all = self.head.all("authorization");
        assert_eq!(all.len(), 1, "exactly one Authorization: {:?}", self.head);
        all[0]
            .strip_prefix("Bearer ")
            .unwrap_or_else(|| panic!("not a bearer: {:?}", all[0]))
            .to_owned()
    }

    /// Whether the message says the connection ends after it.
    pub fn closes(&self) -> bool {
        self.head.tokens("connection").iter().any(|t| t == "close")
    }
}

// ---------------------------------------------------------------------------------------------
// Building messages.

/// A start line, whole field lines, `Content-Length` when `length` says so, then the body.
pub fn message(start: &str, fields: &[&str], length: bool, body: &[u8]) -> Vec<u8> {
    let mut out = format!("{start}\r\n");
    for f in fields {
        out.push_str(f);
        out.push_str("\r\n");
    }
    if length {
        out.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

/// A request for the claimed host: `fields` are whole field lines; a body gets `Content-Length`.
pub fn request(method: &str, target: &str, fields: &[&str], body: &[u8]) -> Vec<u8> {
    let host = format!("Host: {HOST}");
    let fields: Vec<&str> = [host.as_str()]
        .into_iter()
        .chain(fields.iter().copied())
        .collect();
    let start = format!("{method} {target} HTTP/1.1");
    message(&start, &fields, !body.is_empty(), body)
}

pub fn get(target: &str) -> Vec<u8> {
    request("GET", target, &[], b"")
}

/// A response with `Content-Length`: `status` is e.g. `200 OK`, `fields` whole field lines.
pub fn response(status: &str, fields: &[&str], body: &[u8]) -> Vec<u8> {
    message(&format!("HTTP/1.1 {status}"), fields, true, body)
}

/// What the echoing upstream answers: `METHOD TARGET BODY-LENGTH`.
pub fn echo(req: &Message) -> Vec<u8> {
    let body = format!("{} {} {}", req.method(), req.target(), req.body.len());
    response("200 OK", &["Content-Type: text/plain"], body.as_bytes())
}

/// `n` bytes that are not all alike, so a dropped or shifted block shows.
pub fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}
