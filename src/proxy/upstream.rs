//! Upstream connections: connect (TCP, TLS with ALPN), and keep them for reuse.
//!
//! The hot path keeps one HTTP/1.1 upstream connection *inside* each downstream connection's task
//! ([`LocalSlot`]): the downstream connection and its upstream connection are polled by the same
//! task, so a request costs no task switch and no channel hop (hyper-util's pooled `Client` drives
//! every connection in a task of its own and hands responses over channels, which costs about half
//! as much CPU again per request on this machine). When a downstream connection ends, its idle
//! upstream connection is *parked* in the shared [`Pool`] as a bare stream, and the next
//! downstream connection that needs that upstream adopts it into its own task, whichever path
//! serves it (the fast path uses the stream as it is; hyper's path starts its HTTP/1.1 client on
//! it). Parked connections are probed before reuse and evicted after `idle_timeout`. HTTP/2
//! upstreams (chosen by ALPN) multiplex, so one connection per upstream is shared by everyone and
//! driven by a task of its own. A downstream HTTP/2 connection's streams each have a slot of
//! their own, and share at most `h2_upstream_connections` HTTP/1.1 connections ([`Gate`]).

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::task::AtomicWaker;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use parking_lot::Mutex;
use pin_project_lite::pin_project;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

mod gate;

pub use gate::Gate;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::UpBody;

/// Which upstream a connection goes to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UpstreamKey {
    pub tls: bool,
    pub host: Arc<str>,
    pub port: u16,
    /// Connect to exactly this address instead of resolving `host` (a passed-through host,
    /// whose resolved address was judged: no second lookup may give another). `host` stays the
    /// TLS server name and `Host`.
    pub addr: Option<std::net::SocketAddr>,
}

pin_project! {
    /// A connection to an upstream: plain TCP (loopback tests, `unknown_hosts = "pass"`) or TLS.
    #[project = StreamProj]
    pub enum Stream {
        Plain { #[pin] tcp: TcpStream },
        Tls { #[pin] tls: TlsStream<TcpStream> },
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.project() {
            StreamProj::Plain { tcp } => tcp.poll_read(cx, buf),
            StreamProj::Tls { tls } => tls.poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.project() {
            StreamProj::Plain { tcp } => tcp.poll_write(cx, buf),
            StreamProj::Tls { tls } => tls.poll_write(cx, buf),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.project() {
            StreamProj::Plain { tcp } => tcp.poll_write_vectored(cx, bufs),
            StreamProj::Tls { tls } => tls.poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain { tcp } => tcp.is_write_vectored(),
            Stream::Tls { tls } => tls.is_write_vectored(),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.project() {
            StreamProj::Plain { tcp } => tcp.poll_flush(cx),
            StreamProj::Tls { tls } => tls.poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.project() {
            StreamProj::Plain { tcp } => tcp.poll_shutdown(cx),
            StreamProj::Tls { tls } => tls.poll_shutdown(cx),
        }
    }
}

pub type H1Sender = http1::SendRequest<UpBody>;
pub type H1Conn = Pin<Box<http1::Connection<TokioIo<Stream>, UpBody>>>;
pub type H2Sender = http2::SendRequest<UpBody>;
/// A sent request's outcome; on failure before sending, the request comes back for a retry.
pub type SendResult = Result<
    http::Response<hyper::body::Incoming>,
    hyper::client::conn::TrySendError<http::Request<UpBody>>,
>;

/// Why an upstream connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("can't connect to {host}:{port}")]
    Tcp {
        host: Arc<str>,
        port: u16,
        #[source]
        source: io::Error,
    },
    #[error("TLS handshake with {host} failed")]
    Tls {
        host: Arc<str>,
        #[source]
        source: io::Error,
    },
    #[error("connecting to {host}:{port} timed out after {timeout:?}")]
    Timeout {
        host: Arc<str>,
        port: u16,
        timeout: Duration,
    },
    #[error("HTTP handshake with {host} failed")]
    Handshake {
        host: Arc<str>,
        #[source]
        source: hyper::Error,
    },
    #[error("can't resolve {host}")]
    Resolve {
        host: Arc<str>,
        #[source]
        source: io::Error,
    },
    #[error("`{host}` is not a valid TLS server name")]
    ServerName { host: Arc<str> },
}

/// A fresh connection: HTTP/1.1 (to be driven by the caller's task) or HTTP/2 (already driven).
pub enum Fresh {
    H1(H1Sender, H1Conn),
    H2(H2Sender),
}

fn handshake_error(key: &UpstreamKey) -> impl FnOnce(hyper::Error) -> ConnectError + '_ {
    |source| ConnectError::Handshake {
        host: key.host.clone(),
        source,
    }
}

/// Makes upstream connections.
pub struct Connector {
    tls: TlsConnector,
    /// The same roots offering only `http/1.1`: for a WebSocket handshake (`upgrade.rs`), which
    /// exists only in HTTP/1.1 (RFC 6455 §4.1).
    tls_h1: TlsConnector,
    connect_timeout: Duration,
}

impl Connector {
    pub fn new(tls: Arc<rustls::ClientConfig>, connect_timeout: Duration) -> Self {
        let mut h1 = (*tls).clone();
        h1.alpn_protocols = vec![b"http/1.1".to_vec()];
        Connector {
            tls: TlsConnector::from(tls),
            tls_h1: TlsConnector::from(Arc::new(h1)),
            connect_timeout,
        }
    }

    /// A new HTTP/1.1 stream for a request that will take its connection over (an `Upgrade`):
    /// ALPN offers only `http/1.1`, and the stream is never parked or reused.
    pub async fn connect_for_upgrade(&self, key: &UpstreamKey) -> Result<Stream, ConnectError> {
        Ok(self.connect_with(key, &self.tls_h1).await?.0)
    }

    pub async fn connect(&self, key: &UpstreamKey) -> Result<Fresh, ConnectError> {
        let (stream, h2) = self.connect_stream(key).await?;
        if h2 {
            return Ok(Fresh::H2(self.handshake_h2(key, stream).await?));
        }
        let (sender, conn) = http1::Builder::new()
            // A response head over this is a parse error (`is_parse_too_large`), as on the
            // fast path.
            .max_header_size(super::MAX_RESPONSE_HEAD)
            .handshake(TokioIo::new(stream))
            .await
            .map_err(handshake_error(key))?;
        Ok(Fresh::H1(sender, Box::pin(conn)))
    }

    /// Start HTTP/2 on a stream whose ALPN chose `h2`; the connection is driven by a task of its
    /// own.
    pub async fn handshake_h2(
        &self,
        key: &UpstreamKey,
        stream: Stream,
    ) -> Result<H2Sender, ConnectError> {
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(hyper_util::rt::TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(30))
            .handshake(TokioIo::new(stream))
            .await
            .map_err(handshake_error(key))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream h2 connection closed");
            }
        });
        Ok(sender)
    }

    /// The addresses `host` (a name or an IP literal, maybe bracketed) resolves to, within
    /// `connect_timeout`.
    pub async fn resolve(
        &self,
        host: &str,
        port: u16,
    ) -> Result<Vec<std::net::SocketAddr>, ConnectError> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<std::net::IpAddr>() {
            return Ok(vec![std::net::SocketAddr::new(ip, port)]);
        }
        let timeout = self.connect_timeout;
        match tokio::time::timeout(timeout, tokio::net::lookup_host((bare, port))).await {
            Err(_) => Err(ConnectError::Timeout {
                host: host.into(),
                port,
                timeout,
            }),
            Ok(Err(source)) => Err(ConnectError::Resolve {
                host: host.into(),
                source,
            }),
            Ok(Ok(addrs)) => Ok(addrs.collect()),
        }
    }

    /// A connected stream (TCP, then TLS for `https` upstreams), and whether ALPN chose `h2`.
    pub async fn connect_stream(&self, key: &UpstreamKey) -> Result<(Stream, bool), ConnectError> {
        self.connect_with(key, &self.tls).await
    }

    async fn connect_with(
        &self,
        key: &UpstreamKey,
        tls_connector: &TlsConnector,
    ) -> Result<(Stream, bool), ConnectError> {
        let timeout = self.connect_timeout;
        let timed_out = || ConnectError::Timeout {
            host: key.host.clone(),
            port: key.port,
            timeout,
        };
        let deadline = Instant::now() + timeout;
        let host = key.host.trim_start_matches('[').trim_end_matches(']');
        let tcp = match key.addr {
            Some(addr) => tokio::time::timeout_at(deadline, TcpStream::connect(addr)).await,
            None => tokio::time::timeout_at(deadline, TcpStream::connect((host, key.port))).await,
        };
        let tcp = tcp
            .map_err(|_| timed_out())?
            .map_err(|source| ConnectError::Tcp {
                host: key.host.clone(),
                port: key.port,
                source,
            })?;
        // Requests are small and latency-bound; Nagle only delays them.
        let _ = tcp.set_nodelay(true);
        let (stream, h2) = if key.tls {
            let name =
                ServerName::try_from(host.to_owned()).map_err(|_| ConnectError::ServerName {
                    host: key.host.clone(),
                })?;
            let tls = tokio::time::timeout_at(deadline, tls_connector.connect(name, tcp))
                .await
                .map_err(|_| timed_out())?
                .map_err(|source| ConnectError::Tls {
                    host: key.host.clone(),
                    source,
                })?;
            let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
            (Stream::Tls { tls }, h2)
        } else {
            (Stream::Plain { tcp }, false)
        };
        Ok((stream, h2))
    }
}

/// An idle HTTP/1.1 upstream connection between downstream connections: just the stream, so
/// either path (the fast path or hyper's) can adopt it.
struct ParkedStream {
    stream: Stream,
    since: Instant,
}

/// Whether an idle connection is still usable: nothing to read (an upstream that closed it, or
/// wrote to it unasked, makes it readable). Costs no system call when the socket has not become
/// readable since the last read.
pub async fn still_open(stream: &mut Stream) -> bool {
    std::future::poll_fn(|cx| {
        let mut byte = [0u8; 1];
        let mut buf = ReadBuf::new(&mut byte);
        Poll::Ready(Pin::new(&mut *stream).poll_read(cx, &mut buf).is_pending())
    })
    .await
}

/// How long an upstream that could not be probed for HTTP/2 counts as HTTP/1.1 before it is
/// asked again: a down upstream costs intercepted clients one bounded wait per period, not one
/// per connection.
pub const PROBE_RETRY: Duration = Duration::from_secs(30);

/// Idle connections between downstream connections, and shared HTTP/2 connections.
pub struct Pool {
    streams: Mutex<HashMap<UpstreamKey, Vec<ParkedStream>>>,
    h2: Mutex<HashMap<UpstreamKey, H2Sender>>,
    /// What each upstream's last new TLS connection chose by ALPN (true: `h2`): whether an
    /// intercepted client may be offered `h2` (`tunnel.rs`).
    speaks_h2: Mutex<HashMap<UpstreamKey, bool>>,
    /// When each upstream last could not be probed: not asked again for [`PROBE_RETRY`].
    probe_failed: Mutex<HashMap<UpstreamKey, Instant>>,
    /// One probe at a time per upstream; others wait for its answer.
    probing: Mutex<HashMap<UpstreamKey, Arc<tokio::sync::Mutex<()>>>>,
    idle_timeout: Duration,
    max_idle_per_key: usize,
}

impl Pool {
    pub fn new(idle_timeout: Duration) -> Self {
        Pool {
            streams: Mutex::new(HashMap::new()),
            h2: Mutex::new(HashMap::new()),
            speaks_h2: Mutex::new(HashMap::new()),
            probe_failed: Mutex::new(HashMap::new()),
            probing: Mutex::new(HashMap::new()),
            idle_timeout,
            max_idle_per_key: 256,
        }
    }

    /// Drop parked connections idle for longer than the timeout (run periodically).
    pub fn evict_idle(&self) -> usize {
        let now = Instant::now();
        let mut evicted = 0;
        let mut streams = self.streams.lock();
        streams.retain(|_, list| {
            let before = list.len();
            list.retain(|p| now.saturating_duration_since(p.since) < self.idle_timeout);
            evicted += before - list.len();
            !list.is_empty()
        });
        drop(streams);
        self.h2.lock().retain(|_, s| !s.is_closed());
        evicted
    }

    /// Park an idle stream (its last response read to the end, nothing unread).
    pub fn park_stream(&self, key: UpstreamKey, stream: Stream) {
        let now = Instant::now();
        let mut streams = self.streams.lock();
        let list = streams.entry(key).or_default();
        list.retain(|p| now.saturating_duration_since(p.since) < self.idle_timeout);
        if list.len() < self.max_idle_per_key {
            list.push(ParkedStream { stream, since: now });
        }
    }

    /// A parked fast-path stream to `key` that is still open: one the upstream closed (or wrote
    /// to, which it must not do unasked) while it was parked is dropped.
    pub async fn take_stream(&self, key: &UpstreamKey) -> Option<Stream> {
        loop {
            let mut stream = {
                let now = Instant::now();
                let mut streams = self.streams.lock();
                let list = streams.get_mut(key)?;
                loop {
                    let p = list.pop()?;
                    if now.saturating_duration_since(p.since) < self.idle_timeout {
                        break p.stream;
                    }
                }
            };
            if still_open(&mut stream).await {
                return Some(stream);
            }
        }
    }

    /// How long a parked connection is kept.
    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    pub fn h2(&self, key: &UpstreamKey) -> Option<H2Sender> {
        let mut h2 = self.h2.lock();
        match h2.get(key) {
            Some(s) if !s.is_closed() => Some(s.clone()),
            Some(_) => {
                h2.remove(key);
                None
            }
            None => None,
        }
    }

    pub fn put_h2(&self, key: UpstreamKey, sender: H2Sender) {
        self.h2.lock().insert(key, sender);
    }

    fn learnt(&self, key: &UpstreamKey, h2: bool) {
        let mut known = self.speaks_h2.lock();
        if known.get(key) != Some(&h2) {
            known.insert(key.clone(), h2);
        }
    }

    /// Whether `key`'s upstream speaks HTTP/2: what ALPN chose on its last new connection, else
    /// learnt now by connecting to it (the connection is kept for the requests to come), within
    /// `within` (the caller's `header_timeout`). A plain `http://` upstream is HTTP/1.1 (no h2c
    /// upstream). One that can't be reached in time counts as HTTP/1.1, and is not asked again
    /// for [`PROBE_RETRY`]. Concurrent callers share one probe (the others wait for its answer,
    /// within their own `within`).
    pub async fn speaks_h2(
        &self,
        key: &UpstreamKey,
        connector: &Connector,
        within: Duration,
    ) -> bool {
        if !key.tls {
            return false;
        }
        if let Some(known) = self.known_h2(key) {
            return known;
        }
        let deadline = Instant::now() + within;
        let probe = self.probing.lock().entry(key.clone()).or_default().clone();
        let Ok(_only) = tokio::time::timeout_at(deadline, probe.lock()).await else {
            return false;
        };
        // The probe this one waited for may have answered.
        if let Some(known) = self.known_h2(key) {
            return known;
        }
        match tokio::time::timeout_at(deadline, self.probe_h2(key, connector)).await {
            Ok(Some(h2)) => h2,
            Ok(None) | Err(_) => {
                tracing::debug!(host = %key.host, retry_after = ?PROBE_RETRY, "can't learn in time whether the upstream speaks HTTP/2; HTTP/1.1 meanwhile");
                self.probe_failed.lock().insert(key.clone(), Instant::now());
                false
            }
        }
    }

    /// What is known of `key`'s HTTP/2 now, without asking it.
    fn known_h2(&self, key: &UpstreamKey) -> Option<bool> {
        if let Some(known) = self.speaks_h2.lock().get(key) {
            return Some(*known);
        }
        if self.h2(key).is_some() {
            return Some(true);
        }
        let mut failed = self.probe_failed.lock();
        match failed.get(key) {
            Some(at) if at.elapsed() < PROBE_RETRY => Some(false),
            Some(_) => {
                failed.remove(key);
                None
            }
            None => None,
        }
    }

    /// Connect to `key` and see what ALPN chooses (`None`: not reachable).
    async fn probe_h2(&self, key: &UpstreamKey, connector: &Connector) -> Option<bool> {
        let (stream, h2) = match connector.connect_stream(key).await {
            Ok(connected) => connected,
            Err(e) => {
                tracing::debug!(host = %key.host, error = %e, "can't learn whether the upstream speaks HTTP/2");
                return None;
            }
        };
        self.learnt(key, h2);
        if !h2 {
            self.park_stream(key.clone(), stream);
            return Some(false);
        }
        match connector.handshake_h2(key, stream).await {
            Ok(sender) => self.put_h2(key.clone(), sender),
            Err(e) => {
                tracing::debug!(host = %key.host, error = %e, "upstream HTTP/2 handshake failed")
            }
        }
        Some(true)
    }
}

struct LocalConn {
    key: UpstreamKey,
    sender: H1Sender,
    conn: H1Conn,
    /// Its place under a [`Gate`]'s cap, given back when the connection is dropped.
    _permit: Option<OwnedSemaphorePermit>,
}

impl LocalConn {
    /// Park the stream, when the connection is idle with nothing unread.
    fn park(self, pool: &Pool) {
        if !self.sender.is_ready() {
            return;
        }
        let parts = Pin::into_inner(self.conn).into_parts();
        if parts.read_buf.is_empty() {
            pool.park_stream(self.key, parts.io.into_inner());
        }
    }
}

/// hyper's HTTP/1.1 client on an idle stream (no I/O: HTTP/1.1 has no handshake).
async fn handshake_h1(stream: Stream) -> Option<(H1Sender, H1Conn)> {
    match http1::Builder::new().handshake(TokioIo::new(stream)).await {
        Ok((sender, conn)) => Some((sender, Box::pin(conn))),
        Err(e) => {
            tracing::debug!(error = %e, "can't start HTTP/1.1 on the upstream connection");
            None
        }
    }
}

/// The upstream connection owned by one downstream connection, polled by that connection's task.
#[derive(Default)]
pub struct LocalSlot {
    conn: Mutex<Option<LocalConn>>,
    waker: AtomicWaker,
    /// The cap this slot's connections count under (a downstream HTTP/2 stream's slot).
    gate: Option<Arc<Gate>>,
}

/// How a request will be sent.
pub enum Checkout {
    /// On the slot's HTTP/1.1 connection ([`LocalSlot::send`]); `reused` when it served a
    /// request before (so a failure to send may just be a keep-alive race, worth one retry).
    Local {
        reused: bool,
    },
    H2(H2Sender),
}

impl LocalSlot {
    /// A slot whose HTTP/1.1 connections count under `gate`'s cap and come from its idle list.
    pub fn gated(gate: Arc<Gate>) -> LocalSlot {
        LocalSlot {
            gate: Some(gate),
            ..LocalSlot::default()
        }
    }

    /// Give a gated slot's connection back to its gate's idle list: the stream is done with it
    /// (its answer was read to the end, or it never sent on it). One mid-request is dropped
    /// when a stream takes it (it is not ready to send).
    pub fn release(&self) {
        let Some(gate) = &self.gate else { return };
        if let Some(local) = self.conn.lock().take() {
            gate.put(local);
        }
    }

    /// Drive the slot's upstream connection; called by the owning task on every wake-up.
    pub fn poll_drive(&self, cx: &mut Context<'_>) {
        self.waker.register(cx.waker());
        let mut slot = self.conn.lock();
        if let Some(local) = slot.as_mut()
            && let Poll::Ready(result) = local.conn.as_mut().poll(cx)
        {
            if let Err(e) = result {
                tracing::debug!(error = %e, "upstream connection ended");
            }
            *slot = None;
        }
    }

    /// Hand the idle upstream connection to the pool (the downstream connection is ending).
    pub fn park_into(&self, pool: &Pool) {
        if let Some(local) = self.conn.lock().take() {
            local.park(pool);
        }
    }

    /// A sender for `key`: this connection's own, a parked one, or a new connection.
    pub async fn checkout(
        &self,
        key: &UpstreamKey,
        pool: &Pool,
        connector: &Connector,
    ) -> Result<Checkout, ConnectError> {
        {
            let mut slot = self.conn.lock();
            if let Some(local) = slot.as_mut() {
                if local.key == *key && local.sender.is_ready() {
                    return Ok(Checkout::Local { reused: true });
                }
                if local.key != *key || self.gate.is_some() {
                    // Another upstream: give this one back to the pool. (A gated slot's
                    // connection that is not ready is dropped, so it does not hold a permit
                    // while the slot waits for another.)
                    slot.take().expect("checked above").park(pool);
                }
            }
        }
        if let Some(h2) = pool.h2(key) {
            return Ok(Checkout::H2(h2));
        }
        let permit = match &self.gate {
            None => None,
            Some(gate) => match gate.acquire(key, pool).await {
                Ok(idle) => {
                    *self.conn.lock() = Some(idle);
                    return Ok(Checkout::Local { reused: true });
                }
                Err(permit) => Some(permit),
            },
        };
        if let Some(stream) = pool.take_stream(key).await
            && let Some((sender, conn)) = handshake_h1(stream).await
        {
            self.install(key.clone(), sender, conn, permit);
            return Ok(Checkout::Local { reused: true });
        }
        match connector.connect(key).await? {
            Fresh::H1(sender, conn) => {
                if key.tls {
                    pool.learnt(key, false);
                }
                self.install(key.clone(), sender, conn, permit);
                Ok(Checkout::Local { reused: false })
            }
            Fresh::H2(sender) => {
                pool.learnt(key, true);
                pool.put_h2(key.clone(), sender.clone());
                Ok(Checkout::H2(sender))
            }
        }
    }

    /// Take over an idle HTTP/1.1 stream (from the fast path, when hyper takes over its
    /// downstream connection), so the upstream connection goes on being used.
    pub async fn adopt(&self, key: UpstreamKey, stream: Stream) {
        if let Some((sender, conn)) = handshake_h1(stream).await {
            self.install(key, sender, conn, None);
        }
    }

    fn install(
        &self,
        key: UpstreamKey,
        sender: H1Sender,
        conn: H1Conn,
        permit: Option<OwnedSemaphorePermit>,
    ) {
        *self.conn.lock() = Some(LocalConn {
            key,
            sender,
            conn,
            _permit: permit,
        });
        // The owning task must poll the new connection: wake it (we run inside its poll).
        self.waker.wake();
    }

    /// Send on the slot's connection (after a [`Checkout::Local`]). The lock is held only to
    /// start the send; the returned future is awaited without it.
    // The error hands the request back for a retry; boxing it would allocate on the hot path.
    #[allow(clippy::result_large_err)]
    pub fn send(
        &self,
        req: http::Request<UpBody>,
    ) -> Result<impl Future<Output = SendResult> + Send + use<>, http::Request<UpBody>> {
        let mut slot = self.conn.lock();
        match slot.as_mut() {
            Some(local) => Ok(local.sender.try_send_request(req)),
            None => Err(req),
        }
    }

    /// Forget the slot's connection (after an error on it).
    pub fn discard(&self) {
        *self.conn.lock() = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;

    /// An upstream that accepts TCP and never answers TLS: the probe is bounded by `within`,
    /// and its failure is remembered for `PROBE_RETRY` (the next callers don't connect: they
    /// answer at once), then asked again.
    #[tokio::test(start_paused = true)]
    async fn an_unanswering_upstream_is_probed_within_the_bound_and_not_again_for_a_while() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let key = UpstreamKey {
            tls: true,
            host: "localhost".into(),
            port: listener.local_addr().unwrap().port(),
            addr: None,
        };
        let tls = crate::tls::client_config(rustls::RootCertStore::empty(), &[b"h2", b"http/1.1"])
            .unwrap();
        let connector = Connector::new(tls, Duration::from_secs(60));
        let pool = Pool::new(Duration::from_secs(30));
        let within = Duration::from_secs(1);
        let start = Instant::now();
        let (a, b) = tokio::join!(
            pool.speaks_h2(&key, &connector, within),
            pool.speaks_h2(&key, &connector, within)
        );
        assert!(!a && !b, "unreachable counts as HTTP/1.1");
        assert!(start.elapsed() >= within && start.elapsed() < Duration::from_secs(2));
        // Remembered: answered without connecting (a probe would have to wait for the network).
        assert_eq!(
            pool.speaks_h2(&key, &connector, within).now_or_never(),
            Some(false)
        );
        tokio::time::advance(PROBE_RETRY).await;
        assert_eq!(
            pool.speaks_h2(&key, &connector, within).now_or_never(),
            None,
            "asked again after PROBE_RETRY"
        );
        drop(listener);
    }
}
