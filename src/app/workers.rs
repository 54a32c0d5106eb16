//! Where connections run: worker threads, each with a single-threaded runtime of its own.
//!
//! Each worker accepts on its own `SO_REUSEPORT` socket and drives its connections, and their
//! upstream connections, without ever handing work to another thread: no work stealing, no
//! cross-thread wake-ups, a parked-connection pool per worker (nginx's worker model). With
//! `workers = 0` everything runs on the caller's runtime instead (tests, and the demo).

use std::sync::Arc;

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

use super::POOL_IDLE_TIMEOUT;
use crate::proxy::upstream::Pool;

pub struct Workers {
    handles: Vec<Handle>,
    pub pools: Vec<Arc<Pool>>,
    /// Ends the worker threads (after shutdown, or when `Running` is dropped).
    stop: CancellationToken,
}

impl Workers {
    /// `n` worker threads, or the caller's runtime when `n == 0`.
    pub fn start(n: usize) -> std::io::Result<Self> {
        let stop = CancellationToken::new();
        let mut handles = Vec::new();
        if n == 0 {
            handles.push(Handle::current());
        }
        for i in 0..n {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            handles.push(rt.handle().clone());
            let stop = stop.clone();
            std::thread::Builder::new()
                .name(format!("credproxy-worker-{i}"))
                .spawn(move || rt.block_on(stop.cancelled()))?;
        }
        let pools = handles
            .iter()
            .map(|_| Arc::new(Pool::new(POOL_IDLE_TIMEOUT)))
            .collect();
        Ok(Workers {
            handles,
            pools,
            stop,
        })
    }

    #[allow(clippy::len_without_is_empty)] // never empty: at least the caller's runtime
    pub fn len(&self) -> usize {
        self.handles.len()
    }

    /// Run `fut` on worker `i`.
    pub fn spawn<F>(&self, i: usize, fut: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.handles[i].spawn(fut);
    }

    pub fn stop(&self) {
        self.stop.cancel();
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
