//! `credproxy-request-id` on every answer (DESIGN.md "Round 2 details"): the client's
//! `X-Request-Id` when it sent a usable one (that field also goes upstream, untouched, as any
//! other), else a new one.
//!
//! A new id is a per-process random prefix and a counter (`3f9a1c07e2b4-1a`): unique within the
//! process and, with 48 random bits, across processes sharing a log, without a UUID per request.
//! The id lives inline (no allocation) and is written into heads as bytes by the fast path.
//!
//! A client's id is kept only when it is at most [`MAX_LEN`] bytes of letters, digits and
//! `-._:/+=@` (a UUID, a ULID, a trace id): what is echoed, logged and written to the audit log
//! can then carry no quote, space or control character. Anything else gets a new id (the
//! client's field still goes upstream as it came).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The response field credproxy adds.
pub const HEADER: &str = "credproxy-request-id";
/// The request field a client may send its own id in.
pub const CLIENT_HEADER: &str = "x-request-id";
/// The longest client id kept.
pub const MAX_LEN: usize = 64;

/// A request's id: inline bytes, always a valid header value and JSON string content.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct RequestId {
    buf: [u8; MAX_LEN],
    len: u8,
}

impl std::fmt::Debug for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl RequestId {
    /// The client's id (the raw `X-Request-Id` value) when usable, else a new one.
    #[inline]
    pub fn of(client: Option<&[u8]>) -> Self {
        client
            .and_then(Self::from_client)
            .unwrap_or_else(Self::fresh)
    }

    /// A client's id, when it is one credproxy keeps (see the module doc).
    pub fn from_client(value: &[u8]) -> Option<Self> {
        let value = value.trim_ascii();
        if value.is_empty() || value.len() > MAX_LEN || !value.iter().all(|b| allowed(*b)) {
            return None;
        }
        let mut buf = [0; MAX_LEN];
        buf[..value.len()].copy_from_slice(value);
        Some(RequestId {
            buf,
            len: value.len() as u8,
        })
    }

    /// A new id: this process's prefix and the next count.
    pub fn fresh() -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let mut buf = [0; MAX_LEN];
        let prefix = prefix();
        buf[..prefix.len()].copy_from_slice(prefix);
        let mut len = prefix.len();
        buf[len] = b'-';
        len += 1;
        len += hex(n, &mut buf[len..]);
        RequestId {
            buf,
            len: len as u8,
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..usize::from(self.len)]
    }

    pub fn as_str(&self) -> &str {
        // Only allowed ASCII bytes are ever stored.
        std::str::from_utf8(self.as_bytes()).unwrap_or("-")
    }

    /// As a header value.
    pub fn header_value(&self) -> http::HeaderValue {
        http::HeaderValue::from_bytes(self.as_bytes())
            .unwrap_or_else(|_| http::HeaderValue::from_static("-"))
    }

    /// The field as a line of an HTTP/1.1 head (`credproxy-request-id: ...\r\n`).
    #[inline]
    pub fn put_line(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"credproxy-request-id: ");
        out.extend_from_slice(self.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

fn allowed(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b':' | b'/' | b'+' | b'=' | b'@')
}

/// 12 hex digits of randomness, drawn once per process.
fn prefix() -> &'static [u8] {
    static PREFIX: OnceLock<[u8; 12]> = OnceLock::new();
    PREFIX.get_or_init(|| {
        let r: u64 = rand::random();
        let mut out = [b'0'; 12];
        for (i, b) in out.iter_mut().enumerate() {
            let nibble = (r >> (4 * (11 - i))) & 0xf;
            *b = HEX[nibble as usize];
        }
        out
    })
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// `n` in lowercase hex into `out`; the number of bytes written.
fn hex(mut n: u64, out: &mut [u8]) -> usize {
    let mut tmp = [0u8; 16];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = HEX[(n & 0xf) as usize];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    let digits = &tmp[i..];
    out[..digits.len()].copy_from_slice(digits);
    digits.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_usable_client_id_is_kept() {
        let id = RequestId::of(Some(b"  0f8e-4a1b.c_d:e/f+g=h@i "));
        assert_eq!(id.as_str(), "0f8e-4a1b.c_d:e/f+g=h@i");
        let uuid = "6f1c1e9e-5d9b-4b7e-9a53-1f0f3c2b7a10";
        assert_eq!(RequestId::of(Some(uuid.as_bytes())).as_str(), uuid);
    }

    #[test]
    fn anything_else_gets_a_new_id() {
        let long = "a".repeat(MAX_LEN + 1);
        for bad in [
            &b""[..],
            b"has space",
            b"quote\"d",
            b"back\\slash",
            b"caf\xc3\xa9",
            long.as_bytes(),
        ] {
            let id = RequestId::of(Some(bad));
            assert_ne!(id.as_bytes(), bad.trim_ascii());
            assert!(
                id.as_str()
                    .starts_with(std::str::from_utf8(prefix()).unwrap())
            );
        }
        assert_eq!(
            RequestId::of(Some("a".repeat(MAX_LEN).as_bytes()))
                .as_str()
                .len(),
            MAX_LEN
        );
    }

    #[test]
    fn new_ids_differ_and_are_header_values() {
        let a = RequestId::fresh();
        let b = RequestId::fresh();
        assert_ne!(a, b);
        assert_eq!(a.as_bytes()[12], b'-');
        assert!(a.header_value().to_str().is_ok());
        let mut line = Vec::new();
        a.put_line(&mut line);
        assert_eq!(
            line,
            format!("credproxy-request-id: {}\r\n", a.as_str()).into_bytes()
        );
        let mut out = [0u8; 16];
        let n = hex(0x1a2b, &mut out);
        assert_eq!(&out[..n], b"1a2b");
        let n = hex(0, &mut out);
        assert_eq!(&out[..n], b"0");
        assert_eq!(hex(u64::MAX, &mut out), 16);
    }
}
