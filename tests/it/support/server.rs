//! A real HTTP server on `127.0.0.1:0` for the fakes: HTTP/1.1 and HTTP/2 through hyper-util's
//! auto builder, optionally behind TLS, stopped when dropped.
//!
//! Real sockets and real TLS are the point (STYLE.md habit 8, "end to end against in-process
//! fakes over real sockets and real TLS"); the port is always chosen by the OS.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures_util::future::BoxFuture;
use http::Request;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

use super::http::Reply;

pub use super::http::read_body;

/// What a fake does with one request.
pub type Handler = Arc<dyn Fn(Request<Incoming>) -> BoxFuture<'static, Reply> + Send + Sync>;

/// Wraps an async closure as a [`Handler`].
pub fn handler<F, Fut>(f: F) -> Handler
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Reply> + Send + 'static,
{
    Arc::new(move |req| Box::pin(f(req)))
}

pub struct TestServer {
    addr: SocketAddr,
    tls: bool,
    connections: Arc<AtomicUsize>,
    // Aborting the accept task drops its JoinSet, which aborts every connection task: dropping
    // the server really closes its sockets, so a test can observe "upstream went away".
    accept: JoinHandle<()>,
}

impl TestServer {
    pub async fn start(tls: Option<Arc<ServerConfig>>, handler: Handler) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let connections = Arc::new(AtomicUsize::new(0));
        let is_tls = tls.is_some();
        let acceptor = tls.map(TlsAcceptor::from);
        let accept = tokio::spawn(accept_loop(
            listener,
            acceptor,
            handler,
            Arc::clone(&connections),
        ));
        TestServer {
            addr,
            tls: is_tls,
            connections,
            accept,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    fn scheme(&self) -> &'static str {
        if self.tls { "https" } else { "http" }
    }

    /// `https://localhost:PORT` (the leaf certificate names `localhost`).
    pub fn url(&self) -> String {
        format!("{}://localhost:{}", self.scheme(), self.port())
    }

    /// `https://127.0.0.1:PORT`: no name resolution, which matters under a paused clock because
    /// the system resolver runs on a blocking thread the clock does not wait for.
    pub fn ip_url(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme(), self.port())
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: Option<TlsAcceptor>,
    handler: Handler,
    connections: Arc<AtomicUsize>,
) {
    let mut tasks = JoinSet::new();
    loop {
        let Ok((stream, _peer)) = listener.accept().await else {
            continue;
        };
        // Small replies must not wait for Nagle's delayed ACK (about 40 ms of real time, which a
        // paused clock turns into a timeout).
        let _ = stream.set_nodelay(true);
        connections.fetch_add(1, Ordering::SeqCst);
        // Reap finished connections so a long test does not accumulate handles.
        while tasks.try_join_next().is_some() {}
        tasks.spawn(serve_connection(
            stream,
            acceptor.clone(),
            Arc::clone(&handler),
        ));
    }
}

async fn serve_connection(stream: TcpStream, acceptor: Option<TlsAcceptor>, handler: Handler) {
    let service = service_fn(move |req| {
        let reply = handler(req);
        async move { Ok::<_, Infallible>(reply.await) }
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    // Connection errors (a client hanging up, a failed handshake) are part of what tests
    // provoke; the fake just stops serving that connection.
    match acceptor {
        Some(acceptor) => {
            let Ok(tls) = acceptor.accept(stream).await else {
                return;
            };
            let _ = builder.serve_connection(TokioIo::new(tls), service).await;
        }
        None => {
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        }
    }
}

/// A port that was free a moment ago: for configs that must name a real port (a separate process
/// reads them, or a reload must move a listener to a known address).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
