//! Every log line at TRACE, captured in memory: for the tests that grep the logs for secrets.

use std::sync::Arc;

use parking_lot::Mutex;
use tracing_subscriber::fmt::format::FmtSpan;

/// What the global subscriber installed by [`capture_trace`] has written so far.
#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().clone()).unwrap()
    }
}

/// Install the global subscriber (TRACE, span events, no colour) writing into the returned
/// [`Logs`]. Once per process: the test calling it runs alone in its own ([`super::alone::own_process`]).
pub fn capture_trace() -> Logs {
    let logs = Logs::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_span_events(FmtSpan::FULL)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .try_init()
        .expect("the only subscriber in this binary");
    logs
}
