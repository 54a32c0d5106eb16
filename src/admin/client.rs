//! A tiny HTTP/1.1 client for the admin endpoints, for `credproxy healthcheck` and `status`.
//!
//! The Docker image has no curl, so the binary asks itself: one GET over a TCP or unix-socket
//! connection with hyper's client, the whole exchange bounded by a timeout.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::config::Listen;

/// Where the admin listener is, as a client reaches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminTarget {
    /// `host:port`; the host may be a name (`localhost`).
    Tcp {
        host: String,
        port: u16,
    },
    Unix(PathBuf),
}

impl std::fmt::Display for AdminTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AdminTarget::Tcp { host, port } if host.contains(':') => {
                write!(f, "http://[{host}]:{port}")
            }
            AdminTarget::Tcp { host, port } => write!(f, "http://{host}:{port}"),
            AdminTarget::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

impl AdminTarget {
    /// How a local client reaches a listener bound to `listen`: an unspecified address
    /// (`0.0.0.0`, `[::]`) is reached on loopback.
    pub fn from_listen(listen: &Listen) -> Self {
        match listen {
            Listen::Tcp(addr) => Self::from_addr(*addr),
            Listen::Unix(path) => AdminTarget::Unix(path.clone()),
        }
    }

    pub fn from_addr(addr: SocketAddr) -> Self {
        let ip = match addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        AdminTarget::Tcp {
            host: ip.to_string(),
            port: addr.port(),
        }
    }

    /// `http://host:port[/path]` or `unix:/path/to/socket`, with the URL's path if it names one
    /// (other than `/`).
    pub fn parse_url(url: &str) -> Result<(Self, Option<String>), ClientError> {
        if let Some(path) = url.strip_prefix("unix:") {
            return Ok((AdminTarget::Unix(PathBuf::from(path)), None));
        }
        let bad = || ClientError::BadUrl(url.to_owned());
        let uri: Uri = url.parse().map_err(|_| bad())?;
        if uri.scheme_str() != Some("http") {
            return Err(bad());
        }
        let authority = uri.authority().ok_or_else(bad)?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let path = uri
            .path_and_query()
            .map(|p| p.as_str())
            .filter(|p| *p != "/" && !p.is_empty())
            .map(str::to_owned);
        Ok((
            AdminTarget::Tcp {
                host,
                port: authority.port_u16().unwrap_or(80),
            },
            path,
        ))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0:?} is not an http://host:port/path or unix:/path URL")]
    BadUrl(String),
    #[error("can't connect to {target}")]
    Connect {
        target: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{target} did not answer within {timeout:?}")]
    Timeout { target: String, timeout: Duration },
    #[error("HTTP exchange with {target} failed")]
    Http {
        target: String,
        #[source]
        source: hyper::Error,
    },
}

/// Admin answers are small; anything bigger is not credproxy.
const MAX_BODY: usize = 4 * 1024 * 1024;

/// `GET path` on the admin listener, the whole exchange within `timeout`.
pub async fn get(
    target: &AdminTarget,
    path: &str,
    timeout: Duration,
) -> Result<(StatusCode, Bytes), ClientError> {
    match tokio::time::timeout(timeout, get_inner(target, path)).await {
        Ok(r) => r,
        Err(_) => Err(ClientError::Timeout {
            target: target.to_string(),
            timeout,
        }),
    }
}

async fn get_inner(target: &AdminTarget, path: &str) -> Result<(StatusCode, Bytes), ClientError> {
    let connect_err = |source| ClientError::Connect {
        target: target.to_string(),
        source,
    };
    match target {
        AdminTarget::Tcp { host, port } => {
            let stream = tokio::net::TcpStream::connect((host.as_str(), *port))
                .await
                .map_err(connect_err)?;
            let authority = if host.contains(':') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            };
            exchange(stream, target, &authority, path).await
        }
        AdminTarget::Unix(p) => {
            let stream = tokio::net::UnixStream::connect(p)
                .await
                .map_err(connect_err)?;
            exchange(stream, target, "localhost", path).await
        }
    }
}

async fn exchange<I>(
    io: I,
    target: &AdminTarget,
    host: &str,
    path: &str,
) -> Result<(StatusCode, Bytes), ClientError>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let http_err = |source| ClientError::Http {
        target: target.to_string(),
        source,
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(http_err)?;
    // The connection task ends when the sender is dropped (or on error).
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = Request::get(path)
        .header(http::header::HOST, host)
        .header(
            http::header::USER_AGENT,
            concat!("credproxy/", env!("CARGO_PKG_VERSION")),
        )
        .body(Empty::<Bytes>::new())
        .expect("a GET with a path and two valid headers");
    let resp = sender.send_request(req).await.map_err(http_err)?;
    let status = resp.status();
    let body = match Limited::new(resp.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        // Too big or cut: the status still says what we need.
        Err(_) => Bytes::new(),
    };
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_listen_addresses() {
        let (t, p) = AdminTarget::parse_url("http://127.0.0.1:9090/healthz").unwrap();
        assert_eq!(t.to_string(), "http://127.0.0.1:9090");
        assert_eq!(p.as_deref(), Some("/healthz"));
        let (t, p) = AdminTarget::parse_url("http://[::1]:9/").unwrap();
        assert_eq!(t.to_string(), "http://[::1]:9");
        assert_eq!(p, None);
        let (t, _) = AdminTarget::parse_url("unix:/run/credproxy/admin.sock").unwrap();
        assert_eq!(t, AdminTarget::Unix("/run/credproxy/admin.sock".into()));
        assert!(AdminTarget::parse_url("https://x:1/").is_err());
        assert!(AdminTarget::parse_url("nonsense").is_err());
        let t = AdminTarget::from_listen(&Listen::Tcp("0.0.0.0:9090".parse().unwrap()));
        assert_eq!(t.to_string(), "http://127.0.0.1:9090");
        let t = AdminTarget::from_listen(&Listen::Tcp("[::]:9090".parse().unwrap()));
        assert_eq!(t.to_string(), "http://[::1]:9090");
    }
}
