//! The HTTP/1.1 fast path: the common request forwarded as bytes, without building
//! `http::Request`s.
//!
//! Profiles of the hyper-only path (docs/BENCHMARKS.md) put most of credproxy's own CPU in
//! hyper's HTTP/1 machinery: every request parsed into a `HeaderMap`, re-encoded for the
//! upstream, the answer parsed into a second `HeaderMap` and encoded again, with a dispatch
//! channel between the two connections. A credential proxy only needs to *edit* a head: drop
//! the hop-by-hop fields, replace the credential fields, set `Host`, add `Via`. So for the
//! requests that make up nearly all traffic this module parses the head in place with
//! `httparse` (the parser hyper itself uses), writes the edited head straight into a buffer,
//! and copies bodies by their framing.
//!
//! What it serves: HTTP/1.1, origin-form or `http://` absolute-form targets routed to a provider
//! whose credential is valid now, no body or a `Content-Length` body of at most 64 KiB (read
//! whole first, so it can be replayed after a 401), to an HTTP/1.1 upstream.
//!
//! Everything else falls back to hyper ([`Exit::Fallback`]) *before any byte of that request
//! went anywhere*: the request is left unconsumed and hyper takes over the connection from it,
//! for good (see `listener.rs`). That covers what needs judgment or machinery: refusals (unknown
//! hosts, proxy authentication, browser requests, the provider's rules: `policy.rs`; their
//! answers are built in one place), waits for a credential, `CONNECT`, upgrades, `Expect`,
//! chunked or large request bodies, HTTP/1.0,
//! HTTP/2 upstreams, malformed heads and heads over 64 KiB (hyper answers 400/431 and the
//! framing guard sees the bytes), and a fragment in the target. A slow head stays here, under
//! the same `header_timeout`.
//!
//! Once a request is taken, errors are the fast path's own: upstream failures are answered with
//! the same JSON errors (`error.rs`); a failure mid-body closes the connection. Differences from
//! the hyper path a client can see, all valid HTTP/1.1: field names and order go on as they came
//! (hyper lowercases and groups them), no `Date` is added to a response that had none, and a
//! body that ends with the upstream's connection goes on chunked.
//!
//! The parts: `request.rs` decides and writes the upstream head; `send.rs` holds the upstream
//! connection, sends, reads the answer's head, retries the keep-alive race and applies the 401
//! rule; `respond.rs` writes the answer downstream; `head.rs` reads fields and response heads;
//! `chunked.rs` finds where a chunked body ends; `rewind.rs` hands the bytes to hyper.

use std::pin::Pin;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use super::access::{
    AuditRequest, Outcome, access_enabled, access_line, audit_record, count_caller,
};
use super::auth::Caller;
use super::checks::{admit, check_own_host};
use super::error::{ErrorKind, ProxyError};
use super::exchange::{
    Failed, REPLAY_BODY_LIMIT, client_timeout, closed_error, connect_error, fits_replay,
    refreshable, rejection, response_timeout, retry, timeout_error,
};
use super::headers::{Field, classify, names_other_fields};
use super::inject::{
    Echo, EchoEdit, VIA_LINE, drops_client_field, echo_without_token, holds_token,
    location_without_token, put_target,
};
use super::route::{ClientOrigin, local_location, path_parts};
use super::route::{ProviderRoute, Role, Target};
use super::state::{ConnCtx, ListenerInfo, ListenerState, Shared};
use super::upstream::{Stream, UpstreamKey, still_open};
use super::{MAX_HEADER_BYTES, MAX_RESPONSE_HEAD};
use crate::credential::Credential;
use crate::request_id::RequestId;

mod chunked;
mod head;
mod request;
mod respond;
mod rewind;
mod send;

use chunked::ChunkedEnd;
use head::{Fields, Rewrite, head_end, is_target_byte, named_in_connection, split_target};
use request::Plan;
pub use rewind::Rewind;

/// More request fields than this: hyper's turn (it allows 256).
const MAX_REQUEST_HEADERS: usize = 64;
const MAX_RESPONSE_HEADERS: usize = 128;
/// Bodies are copied through a buffer of up to this size.
const STREAM_BUF: usize = 64 * 1024;
const READ_RESERVE: usize = 4096;
/// A connection's buffers that grew past this (a large head or body) are shrunk after it.
const KEEP_CAPACITY: usize = 128 * 1024;

/// How a connection's fast path ended.
pub enum Exit {
    /// The connection is finished: closed by either side, timed out, or shut down.
    Closed,
    /// A request the fast path does not serve: hyper takes over the connection, starting with
    /// the unconsumed bytes ([`Fast::into_parts`]).
    Fallback,
}

/// One downstream connection's fast-path state.
#[derive(Default)]
pub struct Fast {
    /// Downstream bytes read and not yet consumed: the current request, maybe the next.
    buf: Vec<u8>,
    /// Upstream bytes read and not yet forwarded.
    ubuf: Vec<u8>,
    /// The head being written (either direction), then the request's body.
    out: Vec<u8>,
    /// The response head for downstream, as far as the upstream's fields go.
    dhead: Vec<u8>,
    /// This connection's upstream connection, idle between requests.
    up: Option<Up>,
}

struct Up {
    key: UpstreamKey,
    stream: Stream,
    /// It carried a request before: a failure before any answer may be the keep-alive race.
    reused: bool,
}

/// What to do after a request.
enum Next {
    KeepAlive,
    Close,
    Fallback,
}

/// How the upstream's response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Empty,
    Length(u64),
    Chunked,
    /// Until the upstream closes (no length, or a coding other than chunked last).
    Close,
}

/// A response head in `Fast::ubuf[..len]`.
struct RespHead {
    len: usize,
    status: u16,
    framing: Framing,
    /// The upstream connection can carry another request after this response.
    reusable: bool,
    /// A 401 whose `WWW-Authenticate` says `Bearer error="invalid_token"` (read only for 401s).
    invalid_token: bool,
}

/// A request head: the parse, or why there is none.
enum Head {
    Complete(usize),
    Closed,
    Fallback,
}

/// The body copy failed: the response is cut short and the connection must close.
struct Broken;

impl Fast {
    /// Serve requests until the connection ends or one needs hyper.
    pub async fn run<I>(&mut self, io: &mut I, ctx: &ConnCtx, cancel: &CancellationToken) -> Exit
    where
        I: AsyncRead + AsyncWrite + Unpin,
    {
        let timer = tokio::time::sleep_until(Instant::now());
        let mut timer = std::pin::pin!(timer);
        let mut cancelled = std::pin::pin!(cancel.cancelled());
        loop {
            let header_timeout = ctx.cell.load_full().info.header_timeout;
            timer.as_mut().reset(Instant::now() + header_timeout);
            let head = match self.read_head(io, timer.as_mut(), cancelled.as_mut()).await {
                Head::Complete(n) => n,
                Head::Closed => return Exit::Closed,
                Head::Fallback => return Exit::Fallback,
            };
            // The generation in force now that the head is here, not the one the connection
            // went idle under: a reload (new rules) reaches a kept-alive connection's next
            // request.
            let state = ctx.cell.load_full();
            match self
                .exchange(io, ctx, &state, head, timer.as_mut(), cancel)
                .await
            {
                Next::KeepAlive if !cancel.is_cancelled() => {}
                Next::KeepAlive | Next::Close => return Exit::Closed,
                Next::Fallback => return Exit::Fallback,
            }
        }
    }

    /// The unconsumed downstream bytes, for hyper, and the idle upstream connection, which
    /// hyper adopts (`LocalSlot::adopt`).
    pub fn into_parts(self) -> (Vec<u8>, Option<(UpstreamKey, Stream)>) {
        (self.buf, self.up.map(|up| (up.key, up.stream)))
    }

    /// Hand the idle upstream connection to the pool (the downstream connection is ending).
    pub fn park(&mut self, pool: &super::upstream::Pool) {
        if let Some(up) = self.up.take() {
            pool.park_stream(up.key, up.stream);
        }
    }

    async fn read_head<I>(
        &mut self,
        io: &mut I,
        mut timer: Pin<&mut Sleep>,
        mut cancelled: Pin<&mut WaitForCancellationFuture<'_>>,
    ) -> Head
    where
        I: AsyncRead + Unpin,
    {
        // Where the search for the end of the head resumes: each byte is looked at about once,
        // however slowly the head trickles in.
        let mut scanned = 0;
        loop {
            // Only the end of the head is looked for here; `plan` parses it.
            if let Some(end) = head_end(&self.buf[scanned..]) {
                let end = scanned + end;
                return if end <= MAX_HEADER_BYTES {
                    Head::Complete(end)
                } else {
                    Head::Fallback
                };
            }
            if self.buf.len() > MAX_HEADER_BYTES {
                // Too big: hyper answers 431.
                return Head::Fallback;
            }
            // A line feed in the last two bytes is looked at again with what follows it.
            scanned = self.buf.len().saturating_sub(2);
            reserve(&mut self.buf, READ_RESERVE);
            let idle = self.buf.is_empty();
            tokio::select! {
                biased;
                r = io.read_buf(&mut self.buf) => match r {
                    Ok(0) | Err(_) => return Head::Closed,
                    Ok(_) => {}
                },
                () = timer.as_mut() => {
                    tracing::debug!("no complete request head within header_timeout; closing");
                    return Head::Closed;
                }
                _ = cancelled.as_mut(), if idle => return Head::Closed,
            }
        }
    }

    /// One request: plan it, read its body, send it, forward the answer.
    async fn exchange<I>(
        &mut self,
        io: &mut I,
        ctx: &ConnCtx,
        state: &ListenerState,
        head: usize,
        mut timer: Pin<&mut Sleep>,
        cancel: &CancellationToken,
    ) -> Next
    where
        I: AsyncRead + AsyncWrite + Unpin,
    {
        let start = Instant::now();
        let shared = &*state.shared;
        let Some(plan) = self.plan(shared, &state.info, ctx.peer, head, None) else {
            return Next::Fallback;
        };
        // The body, whole (it is small); a pause of `client_body_timeout` is answered 408.
        while self.buf.len() < plan.len {
            let missing = plan.len - self.buf.len();
            reserve(&mut self.buf, missing);
            timer
                .as_mut()
                .reset(Instant::now() + shared.client_body_timeout);
            tokio::select! {
                biased;
                r = io.read_buf(&mut self.buf) => match r {
                    Ok(0) | Err(_) => return Next::Close,
                    Ok(_) => {}
                },
                () = timer.as_mut() => {
                    let e = client_timeout(shared.client_body_timeout);
                    tracing::debug!(code = e.kind.code(), message = %e.message, "request failed");
                    shared.metrics.request(Some(plan.index), e.kind.status());
                    let mut outcome = Outcome::of(&plan);
                    outcome.blame = Some(e.kind.blame());
                    outcome.code = Some(e.kind.code());
                    let status = e.kind.status().as_u16();
                    let id = &plan.request_id;
                    let mut sent = 0;
                    let _ = self.write_error(io, e, plan.head_method, id, &mut sent).await;
                    logged(state, &plan, &outcome, status, sent, start);
                    return Next::Close;
                }
            }
        }
        self.out
            .extend_from_slice(&self.buf[plan.len - plan.body..plan.len]);
        let _inflight = shared.metrics.inflight();

        let result = match self.send(ctx, shared, &plan, timer.as_mut()).await {
            Ok(Some(resp)) => self.after_401(ctx, shared, state, &plan, resp, timer).await,
            Ok(None) => return Next::Fallback,
            Err(e) => Err(e),
        };
        let mut outcome = Outcome::of(&plan);
        let mut sent = 0;
        let (status, next) = match result {
            Ok(resp) => {
                let close = plan.close || cancel.is_cancelled();
                let status = resp.status;
                let name = &plan.route.config.name;
                let id = &plan.request_id;
                let next = match self.forward(io, resp, close, name, id, &mut sent).await {
                    Ok(()) if close => Next::Close,
                    Ok(()) => Next::KeepAlive,
                    Err(Broken) => {
                        // The response was cut short: the upstream connection may be mid-body.
                        self.up = None;
                        Next::Close
                    }
                };
                (status, next)
            }
            Err(e) => {
                self.up = None;
                let e = e.matched(Some(&plan.route.config.name));
                outcome.blame = Some(e.kind.blame());
                outcome.code = Some(e.kind.code());
                tracing::debug!(code = e.kind.code(), message = %e.message, "request failed");
                let close = plan.close || e.kind == ErrorKind::BadRequest;
                let status = e.kind.status().as_u16();
                let id = &plan.request_id;
                let next = match self
                    .write_error(io, e, plan.head_method, id, &mut sent)
                    .await
                {
                    Ok(()) if !close => Next::KeepAlive,
                    _ => Next::Close,
                };
                (status, next)
            }
        };
        if let Ok(code) = http::StatusCode::from_u16(status) {
            shared.metrics.request(Some(plan.index), code);
        }
        logged(state, &plan, &outcome, status, sent, start);
        if self.buf.len() == plan.len {
            self.buf.clear();
        } else {
            self.buf.drain(..plan.len);
        }
        for buf in [&mut self.buf, &mut self.out, &mut self.ubuf] {
            if buf.capacity() > KEEP_CAPACITY && buf.len() <= KEEP_CAPACITY / 2 {
                buf.shrink_to(KEEP_CAPACITY / 2);
            }
        }
        next
    }
}

impl<'s> Outcome<'s> {
    /// A request the fast path took: its provider, caller and credential.
    fn of(plan: &Plan<'s>) -> Self {
        let mut outcome = Outcome::new();
        outcome.provider = Some(plan.route.config.name.as_str());
        outcome.index = Some(plan.index);
        outcome.caller = plan.caller;
        outcome.generation = Some(plan.credential.generation);
        outcome
    }
}

/// Phase 9 for a request the fast path answered: the caller counted, the access line, the
/// audit record (`sent`: the body bytes that went downstream).
fn logged(
    state: &ListenerState,
    plan: &Plan<'_>,
    outcome: &Outcome<'_>,
    status: u16,
    sent: u64,
    start: Instant,
) {
    let shared = &*state.shared;
    count_caller(shared, outcome);
    let Some((method, host, path)) = &plan.access else {
        return;
    };
    if access_enabled() {
        let caller = shared.gate.name(plan.caller).map(|n| &**n);
        access_line(
            method,
            host,
            path,
            status,
            start,
            outcome.provider,
            outcome.blame,
            caller,
            &plan.request_id,
        );
    }
    if shared.audit.is_none() {
        return;
    }
    let request = AuditRequest {
        id: plan.request_id,
        method: http::Method::from_bytes(method.as_bytes()).unwrap_or_default(),
        host,
        path,
        status,
        bytes_in: plan.body as u64,
        start,
    };
    if let (Some(mut record), Some(log)) = (
        audit_record(shared, &state.info, outcome, request),
        &shared.audit,
    ) {
        record.bytes_out = sent;
        log.request(record);
    }
}

fn put(out: &mut Vec<u8>, parts: &[&[u8]]) {
    for p in parts {
        out.extend_from_slice(p);
    }
}

/// Room for at least `n` more bytes (reading into a full `Vec` would read nothing).
fn reserve(buf: &mut Vec<u8>, n: usize) {
    if buf.capacity() - buf.len() < n {
        buf.reserve(n);
    }
}

async fn write_all<I: AsyncWrite + Unpin>(io: &mut I, bytes: &[u8]) -> Result<(), Broken> {
    io.write_all(bytes).await.map_err(|_| Broken)?;
    io.flush().await.map_err(|_| Broken)
}
