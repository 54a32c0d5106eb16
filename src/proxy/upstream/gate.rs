//! The upstream HTTP/1.1 connections of one downstream HTTP/2 connection, capped.
//!
//! HTTP/1.1 does one request at a time, so each concurrent stream to an HTTP/1.1 upstream needs
//! a connection of its own. Unbounded, one client with 1000 connections × 100 streams would open
//! 100k upstream connections past `max_connections_per_client` (`limits.rs` counts downstream TCP
//! connections). So a downstream HTTP/2 connection holds at most `h2_upstream_connections`
//! (`[proxy]`) of them: a [`Gate`] of that many permits, one held by each live connection
//! ([`LocalConn`] carries it, so a connection that ends, is discarded or is parked in the shared
//! pool gives it back by being dropped). A stream beyond the cap waits for a connection another
//! stream finished with (the idle list) or for a permit, within the request's
//! `response_timeout`. HTTP/2 upstreams multiplex on one shared connection and never pass here.
//!
//! An idle connection is not polled while it waits here (no stream owns it): it is polled once
//! when a stream takes it (one the upstream closed meanwhile is dropped), and one idle for
//! longer than the pool's `idle_timeout` is dropped (`h2.rs` sweeps on its idle timer), as a
//! parked one would be.

use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::{LocalConn, Pool, UpstreamKey};

pub struct Gate {
    permits: Arc<Semaphore>,
    idle: Mutex<Vec<Idle>>,
    /// Woken when a connection is put on the idle list.
    returned: Notify,
}

struct Idle {
    conn: LocalConn,
    since: Instant,
}

impl Gate {
    pub fn new(cap: usize) -> Arc<Gate> {
        Arc::new(Gate {
            permits: Arc::new(Semaphore::new(cap.max(1))),
            idle: Mutex::new(Vec::new()),
            returned: Notify::new(),
        })
    }

    /// A connection a stream is done with (its last answer read to the end).
    pub(super) fn put(&self, conn: LocalConn) {
        self.idle.lock().push(Idle {
            conn,
            since: Instant::now(),
        });
        self.returned.notify_one();
    }

    /// Connections idle here now (for tests and the sweep).
    pub fn idle_count(&self) -> usize {
        self.idle.lock().len()
    }

    /// Drop the connections idle here for `idle_timeout` or longer (their permits come back).
    pub fn sweep(&self, idle_timeout: Duration) {
        let now = Instant::now();
        let stale: Vec<Idle> = {
            let mut idle = self.idle.lock();
            let (keep, stale) = idle
                .drain(..)
                .partition(|i| now.saturating_duration_since(i.since) < idle_timeout);
            *idle = keep;
            stale
        };
        drop(stale);
    }

    /// Hand every idle connection to the shared pool (the downstream connection is ending).
    pub fn park_all(&self, pool: &Pool) {
        let idle: Vec<Idle> = self.idle.lock().drain(..).collect();
        for i in idle {
            i.conn.park(pool);
        }
    }

    fn take(&self, key: &UpstreamKey, idle_timeout: Duration) -> Option<LocalConn> {
        let now = Instant::now();
        let mut idle = self.idle.lock();
        idle.retain(|i| now.saturating_duration_since(i.since) < idle_timeout);
        let at = idle.iter().rposition(|i| i.conn.key == *key)?;
        Some(idle.swap_remove(at).conn)
    }

    fn take_any(&self) -> Option<LocalConn> {
        self.idle.lock().pop().map(|i| i.conn)
    }

    /// An idle connection to `key`, polled once and ready to send (`Ok`), or a permit to open
    /// one (`Err`): waits while every permit is held by a connection in use.
    pub(super) async fn acquire(
        &self,
        key: &UpstreamKey,
        pool: &Pool,
    ) -> Result<LocalConn, OwnedSemaphorePermit> {
        loop {
            let mut returned = pin!(self.returned.notified());
            returned.as_mut().enable();
            if let Some(mut conn) = self.take(key, pool.idle_timeout) {
                // Polled by this stream's task from now on; polling it once lets hyper see a
                // close (or bytes the upstream must not have sent) and become ready to send.
                let ended =
                    std::future::poll_fn(|cx| Poll::Ready(conn.conn.as_mut().poll(cx).is_ready()))
                        .await;
                if !ended && conn.sender.is_ready() {
                    return Ok(conn);
                }
                continue;
            }
            if let Ok(permit) = self.permits.clone().try_acquire_owned() {
                return Err(permit);
            }
            if let Some(other) = self.take_any() {
                // Idle, but to another upstream: it gives its permit back to the pool.
                other.park(pool);
                continue;
            }
            tokio::select! {
                permit = self.permits.clone().acquire_owned() => {
                    return Err(permit.expect("the gate's semaphore is never closed"));
                }
                () = returned => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Stream, handshake_h1};
    use super::*;
    use futures_util::FutureExt;
    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream};

    fn key(port: u16) -> UpstreamKey {
        UpstreamKey {
            tls: false,
            host: "127.0.0.1".into(),
            port,
            addr: None,
        }
    }

    /// A real loopback connection as a gate's `LocalConn`, and the upstream's end of it.
    async fn conn(listener: &TcpListener, permit: OwnedSemaphorePermit) -> (LocalConn, TcpStream) {
        let port = listener.local_addr().unwrap().port();
        let (tcp, accepted) =
            tokio::join!(TcpStream::connect(("127.0.0.1", port)), listener.accept());
        let (sender, conn) = handshake_h1(Stream::Plain { tcp: tcp.unwrap() })
            .await
            .unwrap();
        let local = LocalConn {
            key: key(port),
            sender,
            conn,
            _permit: Some(permit),
        };
        (local, accepted.unwrap().0)
    }

    #[tokio::test(start_paused = true)]
    async fn idle_connections_expire_after_the_pools_idle_timeout_and_give_back_their_permit() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let pool = Pool::new(Duration::from_secs(30));
        let gate = Gate::new(1);
        let permit = gate.permits.clone().try_acquire_owned().unwrap();
        let (local, mut upstream) = conn(&listener, permit).await;
        gate.put(local);
        tokio::time::advance(Duration::from_secs(29)).await;
        gate.sweep(pool.idle_timeout());
        assert_eq!(gate.idle_count(), 1, "kept within idle_timeout");
        assert_eq!(gate.permits.available_permits(), 0);
        tokio::time::advance(Duration::from_secs(1)).await;
        gate.sweep(pool.idle_timeout());
        assert_eq!(gate.idle_count(), 0, "dropped after idle_timeout");
        assert_eq!(gate.permits.available_permits(), 1, "its permit is back");
        let mut buf = [0u8; 1];
        assert_eq!(upstream.read(&mut buf).await.unwrap(), 0, "closed upstream");
    }

    #[tokio::test]
    async fn a_stream_past_the_cap_waits_for_a_returned_connection_and_reuses_it() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let pool = Pool::new(Duration::from_secs(30));
        let gate = Gate::new(1);
        let permit = match gate.acquire(&key(port), &pool).await {
            Err(permit) => permit,
            Ok(_) => panic!("nothing idle yet"),
        };
        let (local, _upstream) = conn(&listener, permit).await;
        let this = key(port);
        let mut waiting = Box::pin(gate.acquire(&this, &pool));
        assert!(
            (&mut waiting).now_or_never().is_none(),
            "the cap is held by the first stream"
        );
        gate.put(local);
        match waiting.await {
            Ok(reused) => assert_eq!(reused.key, key(port)),
            Err(_) => panic!("a new permit while the only one is in the idle connection"),
        }
        // Dropped (as a discarded connection is): its permit is back. One to another upstream
        // is idle: a stream to this one parks it in the pool and takes its permit.
        let permit = gate.permits.clone().try_acquire_owned().unwrap();
        let (mut other, _up2) = conn(&listener, permit).await;
        other.key = key(1);
        gate.put(other);
        assert!(gate.acquire(&key(port), &pool).await.is_err());
    }
}
