//! The scripted raw upstream: a `TcpListener` on 127.0.0.1:0 whose every accepted connection
//! runs the test's script ([`Upstream::start`]), or answers every request the same way
//! ([`Upstream::answering`]). It records every request it reads, and on which connection, so a
//! test can say what reached the upstream, and what never did.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

use super::{Head, Message, Wire, echo};

/// A request as the upstream read it, and on which of its connections (0-based).
#[derive(Clone, Debug)]
pub struct Seen {
    pub conn: usize,
    pub req: Message,
}

/// One accepted upstream connection, handed to the test's script.
pub struct UpConn {
    pub wire: Wire,
    pub index: usize,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl UpConn {
    /// The next request (recorded); `None` when credproxy closed the connection or sent
    /// something that is not a request.
    pub async fn next(&mut self) -> Option<Message> {
        let req = self.wire.request().await.ok()??;
        self.seen.lock().push(Seen {
            conn: self.index,
            req: req.clone(),
        });
        Some(req)
    }

    /// Write `bytes`; `false` when credproxy is gone.
    pub async fn write(&mut self, bytes: &[u8]) -> bool {
        self.wire.stream.write_all(bytes).await.is_ok()
    }

    /// Answer each request with `respond`, until credproxy closes or a response says
    /// `Connection: close` (then close after it).
    pub async fn serve(&mut self, respond: &(dyn Fn(&Message) -> Vec<u8> + Send + Sync)) {
        while let Some(req) = self.next().await {
            let resp = respond(&req);
            let head_end = resp
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .unwrap_or(resp.len());
            let closes = Head::parse(&resp[..head_end])
                .is_ok_and(|h| h.tokens("connection").iter().any(|t| t == "close"));
            if !self.write(&resp).await || closes {
                return;
            }
        }
    }

    /// Answer each request with [`echo`] until one for `target` comes, and return that one
    /// (unanswered, for the script); `None` when credproxy closed the connection first.
    pub async fn echo_until(&mut self, target: &str) -> Option<Message> {
        loop {
            let req = self.next().await?;
            if req.target() == target {
                return Some(req);
            }
            if !self.write(&echo(&req)).await {
                return None;
            }
        }
    }
}

/// A raw upstream on 127.0.0.1:0: each accepted connection runs the test's script.
pub struct Upstream {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<Seen>>>,
    accept: JoinHandle<()>,
}

impl Upstream {
    pub async fn start<F, Fut>(script: F) -> Upstream
    where
        F: Fn(UpConn) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        Upstream::start_with((), move |conn, ()| script(conn)).await
    }

    /// As [`Upstream::start`], and each connection's script gets its own clone of `shared`
    /// (a channel's sender, an `Arc<Notify>`, a body to send).
    pub async fn start_with<S, F, Fut>(shared: S, script: F) -> Upstream
    where
        S: Clone + Send + Sync + 'static,
        F: Fn(UpConn, S) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (count, record) = (Arc::clone(&connections), Arc::clone(&seen));
        let accept = tokio::spawn(async move {
            // Dropping the JoinSet (when the accept task is aborted) closes every connection.
            let mut tasks = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let index = count.fetch_add(1, Ordering::SeqCst);
                while tasks.try_join_next().is_some() {}
                let conn = UpConn {
                    wire: Wire::server(stream),
                    index,
                    seen: Arc::clone(&record),
                };
                tasks.spawn(script(conn, shared.clone()));
            }
        });
        Upstream {
            addr,
            connections,
            seen,
            accept,
        }
    }

    /// Every connection answers every request with `respond`.
    pub async fn answering(
        respond: impl Fn(&Message) -> Vec<u8> + Send + Sync + 'static,
    ) -> Upstream {
        let respond = Arc::new(respond);
        Upstream::start(move |mut conn| {
            let respond = Arc::clone(&respond);
            async move { conn.serve(&*respond).await }
        })
        .await
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Requests read so far, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().clone()
    }

    /// The request-target of each request read so far, in order.
    pub fn targets(&self) -> Vec<String> {
        self.seen()
            .iter()
            .map(|x| x.req.target().to_owned())
            .collect()
    }

    pub fn last(&self) -> Message {
        self.seen().pop().expect("the upstream saw a request").req
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// The connection each request for `target` was read on.
pub fn conns_of(up: &Upstream, target: &str) -> Vec<usize> {
    up.seen()
        .iter()
        .filter(|x| x.req.target() == target)
        .map(|x| x.conn)
        .collect()
}

/// How many of `seen` are for `target`.
pub fn count_of(seen: &[Seen], target: &str) -> usize {
    seen.iter().filter(|x| x.req.target() == target).count()
}
