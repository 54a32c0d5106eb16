//! The audit log (`[proxy] audit_log = "/path"` or `"-"`): one JSON object per line, for every
//! request and every token event (DESIGN.md "Audit records").
//!
//! What a record can hold is fixed by its types: enums ([`Decision`], [`TokenEvent`]), numbers,
//! the request id ([`RequestId`]: only `[A-Za-z0-9-._:/+=@]`), configured names (caller,
//! provider, listener), the method, the host and the path *without its query*. There is no field
//! a header value, a token or a secret could be put in.
//!
//! Writing never blocks the request path: a request hands its record to a bounded queue
//! ([`QUEUE`] records) with `try_send`, and one writer thread appends what the queue holds,
//! flushing when it has stayed empty for [`BATCH`] (or its 64 KiB buffer is full). Flushing at
//! every empty queue cost a `write` (and a wake-up of the writer) per request under load: the
//! audited c64 case ran at 0.85x of the unaudited one. When the queue is full (the disk or the terminal behind
//! standard output is slower than the traffic) the record is dropped and counted
//! (`credproxy_audit_dropped_total`, and `audit.dropped` in `/status`): a stalled log must not
//! stall the proxy, and the count says that records are missing. The writer is a thread, not a
//! task, because file writes block.
//!
//! [`Audit::reopen`] (on SIGHUP, with the reloaded config's path) closes the file and opens the
//! path again: after `logrotate` renamed it, records go to a new file of the old name.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use prometheus_client::metrics::counter::Counter;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::config::AuditTarget;
use crate::request_id::RequestId;

/// Records the queue holds before new ones are dropped.
pub const QUEUE: usize = 8192;

/// What credproxy did with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Forwarded upstream with the provider's credential.
    Injected,
    /// Refused by a rule: `policy_denied` or `caller_denied`.
    Denied,
    /// Refused or failed with any other credproxy error (`code` says which).
    Refused,
    /// Forwarded without a credential: an unclaimed host with `unknown_hosts = "pass"`, or a
    /// `CONNECT` tunnel opened.
    Passed,
    /// TLS inside a `CONNECT` tunnel could not be intercepted (the client refused credproxy's
    /// certificate, or asked for another name).
    InterceptFailed,
}

impl Decision {
    /// The decision for a credproxy error of `code`: any 403 denial by a rule (a caller's
    /// providers, a provider's `allow`/`deny`) is `denied`, anything else `refused`.
    pub fn of_error(code: &str) -> Self {
        match code {
            "caller_denied" | "policy_denied" => Decision::Denied,
            _ => Decision::Refused,
        }
    }
}

/// Something that happened to a provider's token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenEvent {
    /// A first token from the token endpoint.
    Obtained,
    /// A new access token (or a longer life for the same one), the refresh token unchanged.
    Refreshed,
    /// A refresh that also rotated the refresh token.
    Rotated,
    /// A token request failed (the last token, if still valid, is served).
    Failed,
    /// The refresh token was refused: `credproxy login NAME` is needed.
    LoginRequired,
    /// A token from the store: at start, or one another process obtained.
    Adopted,
}

/// One request, as the audit log records it.
#[derive(Debug, Clone)]
pub struct RequestRecord {
    pub time: jiff::Timestamp,
    pub request_id: RequestId,
    /// A named caller (`[callers.NAME]`); `None` for anyone else.
    pub caller: Option<Arc<str>>,
    /// The listener's address as bound (`127.0.0.1:8080`, `unix:/run/credproxy.sock`).
    pub listener: Arc<str>,
    pub provider: Option<Arc<str>>,
    pub method: http::Method,
    pub host: String,
    /// The path only: the query is never kept (it may carry a key).
    pub path: Path,
    pub decision: Decision,
    /// credproxy's error code (`caller_denied`, `upstream_timeout`, ...) when it answered itself.
    pub code: Option<&'static str>,
    /// `None` when no answer was sent (a refused interception).
    pub status: Option<u16>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub duration_ms: f64,
    /// The generation of the credential that was attached.
    pub generation: Option<u64>,
}

/// A request's path, its query cut off when it is made.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Path(String);

impl Path {
    /// `target`'s path: everything before the first `?` (and `#`).
    pub fn of(target: &str) -> Self {
        let end = target.find(['?', '#']).unwrap_or(target.len());
        Path(target[..end].to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One token event.
#[derive(Debug, Clone)]
pub struct TokenRecord {
    pub time: jiff::Timestamp,
    pub provider: Arc<str>,
    pub event: TokenEvent,
    pub generation: Option<u64>,
}

#[derive(Debug)]
pub enum Record {
    Request(Box<RequestRecord>),
    Token(TokenRecord),
}

enum Msg {
    Record(Record),
    /// Look at the reopen flag now.
    Wake,
    /// Answer once everything before this is written and flushed.
    Flush(oneshot::Sender<()>),
}

/// The audit log's handle: cheap to share, never blocks.
pub struct Audit {
    tx: mpsc::Sender<Msg>,
    dropped: Counter,
    /// Where the writer writes; a reopen changes it.
    target: parking_lot::Mutex<AuditTarget>,
    reopen: AtomicBool,
}

impl std::fmt::Debug for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Audit")
            .field("target", &*self.target.lock())
            .field("dropped", &self.dropped.get())
            .finish()
    }
}

/// The audit log could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("can't open the audit log {path}")]
pub struct OpenError {
    path: String,
    #[source]
    source: std::io::Error,
}

impl Audit {
    /// Open `target` (a file is created 0600 and appended to) and start the writer thread.
    /// `dropped` counts records the full queue refused.
    pub fn start(
        target: AuditTarget,
        capacity: usize,
        dropped: Counter,
    ) -> Result<Arc<Audit>, OpenError> {
        let out = Output::open(&target)?;
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let audit = Arc::new(Audit {
            tx,
            dropped,
            target: parking_lot::Mutex::new(target),
            reopen: AtomicBool::new(false),
        });
        let weak = Arc::downgrade(&audit);
        std::thread::Builder::new()
            .name("credproxy-audit".into())
            .spawn(move || write_loop(rx, out, weak))
            .map_err(|source| OpenError {
                path: "(writer thread)".into(),
                source,
            })?;
        Ok(audit)
    }

    /// Queue `record`; dropped (and counted) when the queue is full.
    #[inline]
    pub fn record(&self, record: Record) {
        if self.tx.try_send(Msg::Record(record)).is_err() {
            self.dropped.inc();
        }
    }

    /// Queue one request's record.
    #[inline]
    pub fn request(&self, record: RequestRecord) {
        self.record(Record::Request(Box::new(record)));
    }

    /// Queue a token event for `provider`, stamped now.
    pub fn token(&self, provider: &str, event: TokenEvent, generation: Option<u64>) {
        self.record(Record::Token(TokenRecord {
            time: jiff::Timestamp::now(),
            provider: provider.into(),
            event,
            generation,
        }));
    }

    /// Records dropped so far (a full queue).
    pub fn dropped(&self) -> u64 {
        self.dropped.get()
    }

    /// Where records go now.
    pub fn target(&self) -> AuditTarget {
        self.target.lock().clone()
    }

    /// Close the file and open `target` (the same path after log rotation, or a new one from a
    /// reloaded config) before the next record. A failure is logged and the old file kept.
    pub fn reopen(&self, target: AuditTarget) {
        *self.target.lock() = target;
        self.reopen.store(true, Ordering::Release);
        // Wakes an idle writer; a full queue means it is awake anyway.
        let _ = self.tx.try_send(Msg::Wake);
    }

    /// Wait until every record queued before this call is written and flushed.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

enum Output {
    File(std::io::BufWriter<std::fs::File>),
    Stdout(std::io::BufWriter<std::io::Stdout>),
}

impl Output {
    fn open(target: &AuditTarget) -> Result<Output, OpenError> {
        match target {
            AuditTarget::Stdout => Ok(Output::Stdout(std::io::BufWriter::with_capacity(
                BUFFER,
                std::io::stdout(),
            ))),
            AuditTarget::File(path) => {
                open_file(path).map(|f| Output::File(std::io::BufWriter::with_capacity(BUFFER, f)))
            }
        }
    }

    fn writer(&mut self) -> &mut dyn Write {
        match self {
            Output::File(w) => w,
            Output::Stdout(w) => w,
        }
    }
}

/// Open (create 0600, append) the audit log file: not through a symbolic link (`O_NOFOLLOW`, so a
/// link planted at the path can't send the records elsewhere), not kept across an exec
/// (`O_CLOEXEC`), not blocking on a FIFO (`O_NONBLOCK`); then, on the open file (fstat), it must
/// be a regular file owned by credproxy's user, and a looser mode is narrowed to 0600 (fchmod).
fn open_file(path: &PathBuf) -> Result<std::fs::File, OpenError> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
    let error = |source| OpenError {
        path: path.display().to_string(),
        source,
    };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| {
            crate::fsutil::refuse_symlink(e, "audit_log (point audit_log at the file itself)")
        })
        .map_err(error)?;
    let meta = file.metadata().map_err(error)?;
    if !meta.file_type().is_file() {
        return Err(error(std::io::Error::other(
            "it is not a regular file: point audit_log at a file (or \"-\" for stdout)",
        )));
    }
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        return Err(error(std::io::Error::other(format!(
            "it belongs to uid {}, not to credproxy's user (uid {me}): chown it, or point audit_log at a file of credproxy's own",
            meta.uid()
        ))));
    }
    if meta.mode() & 0o077 != 0 {
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(error)?;
    }
    Ok(file)
}

/// How long the writer waits for more records once the queue runs empty, before it flushes:
/// under load, the records of this pause are written in one `write`, and the senders find the
/// writer asleep (no wake-up per record). A record reaches the file at most this much later.
const BATCH: std::time::Duration = std::time::Duration::from_millis(2);

/// The writer's buffer: a flush at most every this many bytes under sustained load.
const BUFFER: usize = 64 * 1024;

/// The writer thread: write what comes, flush when the queue stays empty, reopen when asked.
/// Ends when every sender is gone.
fn write_loop(mut rx: mpsc::Receiver<Msg>, mut out: Output, audit: std::sync::Weak<Audit>) {
    let mut line = Vec::with_capacity(512);
    let mut failing = false;
    while let Some(mut msg) = rx.blocking_recv() {
        loop {
            if let Some(a) = audit.upgrade()
                && a.reopen.swap(false, Ordering::AcqRel)
            {
                let _ = out.writer().flush();
                let target = a.target();
                match Output::open(&target) {
                    Ok(o) => {
                        out = o;
                        tracing::info!(target: "credproxy::audit", log = ?target, "audit log reopened");
                    }
                    Err(e) => tracing::warn!(
                        error = %crate::token::error::chain(&e),
                        "can't reopen the audit log; still writing to the old file"
                    ),
                }
            }
            match msg {
                Msg::Record(r) => {
                    line.clear();
                    encode(&r, &mut line);
                    if let Err(e) = out.writer().write_all(&line) {
                        if !failing {
                            tracing::warn!(error = %e, "can't write the audit log");
                        }
                        failing = true;
                    } else {
                        failing = false;
                    }
                }
                Msg::Wake => {}
                Msg::Flush(done) => {
                    let _ = out.writer().flush();
                    let _ = done.send(());
                }
            }
            match rx.try_recv() {
                Ok(next) => msg = next,
                Err(_) => {
                    // A batching pause, not a wait for an event: see BATCH.
                    std::thread::sleep(BATCH);
                    match rx.try_recv() {
                        Ok(next) => msg = next,
                        Err(_) => break,
                    }
                }
            }
        }
        let _ = out.writer().flush();
    }
    let _ = out.writer().flush();
}

/// Every key of DESIGN.md's audit record; a token event adds `event` (the request keys it has
/// no value for are `null`).
#[derive(Serialize)]
struct Line<'a> {
    time: String,
    request_id: Option<&'a str>,
    caller: Option<&'a str>,
    listener: Option<&'a str>,
    provider: Option<&'a str>,
    method: Option<&'a str>,
    host: Option<&'a str>,
    path: Option<&'a str>,
    decision: Option<Decision>,
    code: Option<&'a str>,
    status: Option<u16>,
    bytes_in: Option<u64>,
    bytes_out: Option<u64>,
    duration_ms: Option<f64>,
    generation: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    event: Option<TokenEvent>,
}

/// `record` as one JSON line.
fn encode(record: &Record, out: &mut Vec<u8>) {
    let line = match record {
        Record::Request(r) => Line {
            time: format!("{:.3}", r.time),
            request_id: Some(r.request_id.as_str()),
            caller: r.caller.as_deref(),
            listener: Some(&r.listener),
            provider: r.provider.as_deref(),
            method: Some(r.method.as_str()),
            host: Some(&r.host),
            path: Some(r.path.as_str()),
            decision: Some(r.decision),
            code: r.code,
            status: r.status,
            bytes_in: Some(r.bytes_in),
            bytes_out: Some(r.bytes_out),
            duration_ms: Some((r.duration_ms * 1000.0).round() / 1000.0),
            generation: r.generation,
            event: None,
        },
        Record::Token(t) => Line {
            time: format!("{:.3}", t.time),
            request_id: None,
            caller: None,
            listener: None,
            provider: Some(&t.provider),
            method: None,
            host: None,
            path: None,
            decision: None,
            code: None,
            status: None,
            bytes_in: None,
            bytes_out: None,
            duration_ms: None,
            generation: t.generation,
            event: Some(t.event),
        },
    };
    // Only strings, numbers and enums: serializing can't fail.
    let _ = serde_json::to_writer(&mut *out, &line);
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> RequestRecord {
        RequestRecord {
            time: jiff::Timestamp::from_second(1_700_000_000).unwrap(),
            request_id: RequestId::of(Some(b"abc-1")),
            caller: Some("ci".into()),
            listener: "127.0.0.1:8080".into(),
            provider: Some("github".into()),
            method: http::Method::GET,
            host: "api.github.com".into(),
            path: Path::of("/repos/acme/x?access_token=SECRET#frag"),
            decision: Decision::Injected,
            code: None,
            status: Some(200),
            bytes_in: 0,
            bytes_out: 12,
            duration_ms: 1.23456,
            generation: Some(3),
        }
    }

    fn keys(line: &[u8]) -> Vec<String> {
        let v: serde_json::Value = serde_json::from_slice(line).unwrap();
        v.as_object().unwrap().keys().cloned().collect()
    }

    #[test]
    fn a_request_line_has_exactly_the_design_keys() {
        let mut out = Vec::new();
        encode(&Record::Request(Box::new(request())), &mut out);
        assert!(out.ends_with(b"\n"));
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(!text.contains("SECRET") && !text.contains("frag"), "{text}");
        let mut k = keys(&out);
        k.sort();
        let mut want = vec![
            "time",
            "request_id",
            "caller",
            "listener",
            "provider",
            "method",
            "host",
            "path",
            "decision",
            "code",
            "status",
            "bytes_in",
            "bytes_out",
            "duration_ms",
            "generation",
        ];
        want.sort();
        assert_eq!(k, want);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["time"], "2023-11-14T22:13:20.000Z");
        assert_eq!(v["path"], "/repos/acme/x");
        assert_eq!(v["decision"], "injected");
        assert_eq!(v["duration_ms"], 1.235);
    }

    #[test]
    fn a_token_event_adds_event() {
        let mut out = Vec::new();
        encode(
            &Record::Token(TokenRecord {
                time: jiff::Timestamp::now(),
                provider: "bace".into(),
                event: TokenEvent::LoginRequired,
                generation: None,
            }),
            &mut out,
        );
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["event"], "login_required");
        assert_eq!(v["provider"], "bace");
        assert_eq!(keys(&out).len(), 16);
    }

    #[test]
    fn denials_by_rule_are_denied_and_other_errors_refused() {
        assert_eq!(Decision::of_error("caller_denied"), Decision::Denied);
        assert_eq!(Decision::of_error("policy_denied"), Decision::Denied);
        assert_eq!(Decision::of_error("unknown_host"), Decision::Refused);
    }

    /// With nobody draining the queue, records past its capacity are counted, never waited for.
    #[test]
    fn a_full_queue_drops_and_counts() {
        let (tx, _rx) = mpsc::channel(4);
        let audit = Audit {
            tx,
            dropped: Counter::default(),
            target: parking_lot::Mutex::new(AuditTarget::Stdout),
            reopen: AtomicBool::new(false),
        };
        for _ in 0..10 {
            audit.request(request());
        }
        assert_eq!(audit.dropped(), 6);
    }

    #[tokio::test]
    async fn written_flushed_and_reopened_after_a_rename() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let audit = Audit::start(AuditTarget::File(path.clone()), 16, Counter::default()).unwrap();
        audit.request(request());
        audit.flush().await;
        let rotated = dir.path().join("audit.jsonl.1");
        std::fs::rename(&path, &rotated).unwrap();
        audit.request(request());
        audit.flush().await;
        // Still the renamed file until reopened.
        assert_eq!(
            std::fs::read_to_string(&rotated).unwrap().lines().count(),
            2
        );
        audit.reopen(AuditTarget::File(path.clone()));
        audit.request(request());
        audit.flush().await;
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 1);
        assert_eq!(
            std::fs::read_to_string(&rotated).unwrap().lines().count(),
            2
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
