//! Sockets on the ground floor: a bound listener, its registration with a runtime, and what
//! it accepts. Imports nothing from the rest of the crate, so `proxy` and `admin` both build on
//! it without depending on each other.

use std::net::IpAddr;
use std::path::PathBuf;

use tokio::net::{TcpListener, UnixListener};

/// A bound listener, not yet registered with a runtime (so a worker thread can adopt it).
pub enum Bound {
    Tcp(std::net::TcpListener),
    Unix(std::os::unix::net::UnixListener, PathBuf),
}

/// A listener registered with the current runtime.
pub enum Listening {
    Tcp(TcpListener),
    Unix(UnixListener, PathBuf),
}

pub enum Accepted {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

impl Listening {
    /// Register `b` with the current runtime.
    pub fn adopt(b: Bound) -> std::io::Result<Self> {
        Ok(match b {
            Bound::Tcp(l) => {
                l.set_nonblocking(true)?;
                Listening::Tcp(TcpListener::from_std(l)?)
            }
            Bound::Unix(l, path) => {
                l.set_nonblocking(true)?;
                Listening::Unix(UnixListener::from_std(l)?, path)
            }
        })
    }

    pub async fn accept(&self) -> std::io::Result<Accepted> {
        match self {
            Listening::Tcp(t) => t.accept().await.map(|(s, _)| Accepted::Tcp(s)),
            Listening::Unix(u, _) => u.accept().await.map(|(s, _)| Accepted::Unix(s)),
        }
    }

    /// Like [`Listening::accept`], with the peer's address (TCP only), for per-client limits.
    pub async fn accept_from(&self) -> std::io::Result<(Accepted, Option<IpAddr>)> {
        match self {
            Listening::Tcp(t) => t
                .accept()
                .await
                .map(|(s, a)| (Accepted::Tcp(s), Some(a.ip()))),
            Listening::Unix(u, _) => u.accept().await.map(|(s, _)| (Accepted::Unix(s), None)),
        }
    }
}

/// What an accept loop does when `accept` fails (`EMFILE`, `ENFILE`, `ENOBUFS`, ...): pause
/// briefly rather than spin, and warn at most once per [`AcceptErrors::WARN_EVERY`] (with the
/// count of failures in between) rather than every few milliseconds into the log.
#[derive(Debug, Default)]
pub struct AcceptErrors {
    last_warned: Option<tokio::time::Instant>,
    since: u64,
}

impl AcceptErrors {
    pub const WARN_EVERY: std::time::Duration = std::time::Duration::from_secs(10);
    /// Accepting pauses this long after a failure: long enough for connections to close and give
    /// descriptors back, short enough not to be noticed.
    pub const PAUSE: std::time::Duration = std::time::Duration::from_millis(100);

    /// Record a failure of `listener`'s accept, warn if due, and pause. Returns whether it warned.
    pub async fn failed(&mut self, listener: &str, error: &std::io::Error) -> bool {
        let now = tokio::time::Instant::now();
        self.since += 1;
        let due = self
            .last_warned
            .is_none_or(|at| now.saturating_duration_since(at) >= Self::WARN_EVERY);
        if due {
            tracing::warn!(
                listener,
                %error,
                failures = self.since,
                "accept failed (out of file descriptors?); pausing accepts briefly, next warning in 10 s at the earliest"
            );
            self.last_warned = Some(now);
            self.since = 0;
        } else {
            tracing::debug!(listener, %error, "accept failed");
        }
        tokio::time::sleep(Self::PAUSE).await;
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 14 item 8: 20 s of failing accepts warn twice (at 0 s and 10 s), not 200 times.
    #[tokio::test(start_paused = true)]
    async fn accept_failures_warn_at_most_every_ten_seconds() {
        let mut errors = AcceptErrors::default();
        let emfile = std::io::Error::from_raw_os_error(24);
        let start = tokio::time::Instant::now();
        let mut warnings = Vec::new();
        while start.elapsed() < std::time::Duration::from_secs(20) {
            if errors.failed("main", &emfile).await {
                warnings.push(start.elapsed().as_secs());
            }
        }
        assert_eq!(warnings, [0, 10]);
    }
}

/// An address range, `10.1.0.0/16` or `fd00::/8` (a bare address is one address). IPv4-mapped
/// IPv6 addresses (`::ffff:10.1.2.3`) are the IPv4 address they carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` is inside the range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(ip) & mask == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(ip) & mask == u128::from(net)
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl std::str::FromStr for Cidr {
    /// What is wrong with it, in words for a config error.
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr = addr
            .parse::<IpAddr>()
            .map_err(|_| format!("`{s}` is not an address range: expected CIDR such as \"10.1.0.0/16\" or \"fd00::/8\""))?
            .to_canonical();
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(|| {
                format!("`{s}`: the prefix length must be a number from 0 to {max}")
            })?,
        };
        let cidr = Cidr { addr, prefix };
        let base = match addr {
            IpAddr::V4(a) => IpAddr::V4(
                (u32::from(a) & u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)).into(),
            ),
            IpAddr::V6(a) => IpAddr::V6(
                (u128::from(a) & u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0))
                    .into(),
            ),
        };
        if base != addr {
            return Err(format!(
                "`{s}` has bits set past its /{prefix} prefix: did you mean \"{base}/{prefix}\"?"
            ));
        }
        Ok(cidr)
    }
}

#[cfg(test)]
mod cidr_tests {
    use super::Cidr;

    #[test]
    fn ranges_parse_and_contain() {
        let c: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(c.contains("10.1.200.3".parse().unwrap()));
        assert!(c.contains("::ffff:10.1.0.1".parse().unwrap()));
        assert!(!c.contains("10.2.0.1".parse().unwrap()));
        let one: Cidr = "127.0.0.1".parse().unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()));
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
        assert!(!v6.contains("10.0.0.1".parse().unwrap()));
        for bad in [
            "10.1.0.0/33",
            "10.1.0.1/16",
            "intranet",
            "10.0.0.0/x",
            "::/129",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
        assert!(
            "10.1.2.3/16"
                .parse::<Cidr>()
                .unwrap_err()
                .contains("10.1.0.0/16")
        );
    }
}
