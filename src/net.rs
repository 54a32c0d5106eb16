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
