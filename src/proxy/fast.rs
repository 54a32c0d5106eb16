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
//! hosts, proxy authentication, browser requests; their answers are built in one place), waits
//! for a credential, `CONNECT`, upgrades, `Expect`, chunked or large request bodies, HTTP/1.0,
//! HTTP/2 upstreams, malformed or oversized heads (hyper answers 400/431 and the framing guard
//! sees the bytes), and a head that does not arrive in a few reads (a slow client).
//!
//! Once a request is taken, errors are the fast path's own: upstream failures are answered with
//! the same JSON errors (`error.rs`); a failure mid-body closes the connection.

use std::pin::Pin;
use std::sync::Arc;

use bytes::BufMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use super::MAX_HEADER_BYTES;
use super::error::{ErrorKind, ProxyError};
use super::listener::ListenerInfo;
use super::route::{ProviderRoute, Role, Target};
use super::service::{
    ConnCtx, ListenerState, REPLAY_BODY_LIMIT, Shared, access_enabled, access_line, check_own_host,
    connect_error, local_location,
};
use super::upstream::{Stream, UpstreamKey, still_open};
use crate::config::Preset;
use crate::credential::Credential;

/// More request fields than this: hyper's turn (it allows 256).
const MAX_REQUEST_HEADERS: usize = 64;
const MAX_RESPONSE_HEADERS: usize = 128;
/// Upstream response heads over this are refused (502).
const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// Bodies are copied through a buffer of up to this size.
const STREAM_BUF: usize = 64 * 1024;
const READ_RESERVE: usize = 4096;
/// A connection's buffers that grew past this (a large head or body) are shrunk after it.
const KEEP_CAPACITY: usize = 128 * 1024;
const VIA: &[u8] = b"via: 1.1 credproxy\r\n";

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

/// A request the fast path has taken on (its upstream head is in `Fast::out`).
struct Plan<'s> {
    route: &'s ProviderRoute,
    index: usize,
    credential: Arc<Credential>,
    rewrite: Option<Rewrite<'s>>,
    /// Bytes of the request on the downstream connection: head and body.
    len: usize,
    body: usize,
    head_method: bool,
    /// RFC 9110 §9.2.2: may be sent again when a reused connection closed without answering.
    idempotent: bool,
    close: bool,
    access: Option<(String, String, String)>,
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
}

/// A 401's body, read whole or not.
enum Whole {
    /// All there; `exact`: nothing after it (the connection can carry the replay).
    Read {
        exact: bool,
    },
    TooBig,
    Failed,
    TimedOut,
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
            let state = ctx.cell.load_full();
            timer
                .as_mut()
                .reset(Instant::now() + state.info.header_timeout);
            let head = match self.read_head(io, timer.as_mut(), cancelled.as_mut()).await {
                Head::Complete(n) => n,
                Head::Closed => return Exit::Closed,
                Head::Fallback => return Exit::Fallback,
            };
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
        // The body, whole (it is small), with the head's deadline.
        while self.buf.len() < plan.len {
            let missing = plan.len - self.buf.len();
            reserve(&mut self.buf, missing);
            tokio::select! {
                biased;
                r = io.read_buf(&mut self.buf) => match r {
                    Ok(0) | Err(_) => return Next::Close,
                    Ok(_) => {}
                },
                () = timer.as_mut() => return Next::Close,
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
        let (status, next, blame) = match result {
            Ok(resp) => {
                let close = plan.close || cancel.is_cancelled();
                let status = resp.status;
                let next = match self.forward(io, resp, close).await {
                    Ok(()) if close => Next::Close,
                    Ok(()) => Next::KeepAlive,
                    Err(Broken) => {
                        // The response was cut short: the upstream connection may be mid-body.
                        self.up = None;
                        Next::Close
                    }
                };
                (status, next, None)
            }
            Err(e) => {
                self.up = None;
                let blame = e.kind.blame();
                tracing::debug!(code = e.kind.code(), message = %e.message, "request failed");
                let close = plan.close || e.kind == ErrorKind::BadRequest;
                let status = e.kind.status().as_u16();
                let next = match self.write_error(io, e, plan.head_method).await {
                    Ok(()) if !close => Next::KeepAlive,
                    _ => Next::Close,
                };
                (status, next, Some(blame))
            }
        };
        if let Ok(code) = http::StatusCode::from_u16(status) {
            shared.metrics.request(Some(plan.index), code);
        }
        if let Some((method, host, path)) = &plan.access {
            let name = Some(plan.route.config.name.as_str());
            access_line(method, host, path, status, start, name, blame);
        }
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

    /// Decide whether the fast path serves the request whose head is `buf[..head]`; if so,
    /// write its upstream head into `out`. `fresh` replaces the current credential (a replay).
    fn plan<'s>(
        &mut self,
        shared: &'s Shared,
        info: &'s ListenerInfo,
        peer: Option<std::net::IpAddr>,
        head: usize,
        fresh: Option<Arc<Credential>>,
    ) -> Option<Plan<'s>> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_REQUEST_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        if req.parse(&self.buf[..head]) != Ok(httparse::Status::Complete(head)) {
            return None;
        }
        let (method, target) = (req.method?, req.path?);
        if req.version != Some(1) || method == "CONNECT" || !target.bytes().all(is_target_byte) {
            return None;
        }
        let mut fields = Fields::default();
        let mut kinds = [Field::Other; MAX_REQUEST_HEADERS];
        for (h, kind) in req.headers.iter().zip(&mut kinds) {
            *kind = classify(h.name);
            fields.note(*kind, h)?;
        }
        let (authority, path_and_query) = split_target(target)?;
        let Target::Provider {
            index,
            path_and_query: rest,
            prefix,
        } = shared
            .router
            .route_parts(&info.role, authority, path_and_query, fields.host)
        else {
            return None;
        };
        let route = &shared.router.providers[index];
        let provider = &*route.config;
        if info.require_auth
            && let Some(auth) = &shared.proxy_auth
            && !auth.verify(fields.proxy_authorization)
        {
            return None;
        }
        if (info.loopback && info.role != Role::Main || prefix.is_some())
            && check_own_host(info, route, fields.host).is_err()
        {
            return None;
        }
        let credential = match fresh {
            Some(c) => c,
            None => route.reader.current(Instant::now())?,
        };
        let body = fields.content_length.unwrap_or(0);
        if body > REPLAY_BODY_LIMIT {
            return None;
        }
        let body = body as usize;

        let up = &provider.upstream;
        let out = &mut self.out;
        out.clear();
        put(out, &[method.as_bytes(), b" ", up.base_path.as_bytes()]);
        match rest {
            "" => out.push(b'/'),
            r if r.starts_with('?') => put(out, &[b"/", r.as_bytes()]),
            r => out.extend_from_slice(r.as_bytes()),
        }
        put(
            out,
            &[b" HTTP/1.1\r\nhost: ", up.host_header.as_bytes(), b"\r\n"],
        );
        let creds = credential.headers();
        for (h, kind) in req.headers.iter().zip(kinds) {
            let skip = match kind {
                Field::Other | Field::Location | Field::Expect => {
                    creds
                        .iter()
                        .any(|(n, _)| n.as_str().eq_ignore_ascii_case(h.name))
                        || fields.connection_names && named_in_connection(req.headers, h.name)
                }
                Field::XForwardedProto => provider.forwarded,
                _ => true,
            };
            if !skip {
                put(out, &[h.name.as_bytes(), b": ", h.value, b"\r\n"]);
            }
        }
        if let Some(n) = fields.content_length {
            // Written from the value the body was read by (the client's field may have been
            // named in its `Connection`: dropping it would let the body pass as a request).
            put(
                out,
                &[b"content-length: ", n.to_string().as_bytes(), b"\r\n"],
            );
        }
        for (name, value) in creds {
            put(
                out,
                &[name.as_str().as_bytes(), b": ", value.as_bytes(), b"\r\n"],
            );
        }
        if provider.forwarded
            && let Some(ip) = peer
        {
            let mut h = http::HeaderMap::new();
            super::headers::add_forwarded(&mut h, ip);
            for (name, value) in &h {
                put(
                    out,
                    &[name.as_str().as_bytes(), b": ", value.as_bytes(), b"\r\n"],
                );
            }
        }
        put(out, &[VIA, b"\r\n"]);

        let access = access_enabled().then(|| {
            let host = authority.or(fields.host).unwrap_or_default().to_owned();
            let path = path_and_query.split('?').next().unwrap_or("/").to_owned();
            (method.to_owned(), host, path)
        });
        let rewrite = (info.role != Role::Main || prefix.is_some()).then_some(Rewrite {
            upstream: up,
            info,
            prefix,
        });
        Some(Plan {
            route,
            index,
            credential,
            rewrite,
            len: head + body,
            body,
            head_method: method == "HEAD",
            idempotent: matches!(
                method,
                "GET" | "HEAD" | "OPTIONS" | "PUT" | "DELETE" | "TRACE"
            ),
            close: fields.close,
            access,
        })
    }

    /// Send `out` upstream and read the response head into `ubuf`. `Ok(None)`: the upstream
    /// speaks HTTP/2, hyper's turn (nothing was sent).
    async fn send(
        &mut self,
        ctx: &ConnCtx,
        shared: &Shared,
        plan: &Plan<'_>,
        mut timer: Pin<&mut Sleep>,
    ) -> Result<Option<RespHead>, ProxyError> {
        let sent = Instant::now();
        timer.as_mut().reset(sent + shared.response_timeout);
        let result = self.send_inner(ctx, shared, plan, timer).await;
        shared.metrics.upstream_duration(plan.index, sent.elapsed());
        result
    }

    async fn send_inner(
        &mut self,
        ctx: &ConnCtx,
        shared: &Shared,
        plan: &Plan<'_>,
        mut timer: Pin<&mut Sleep>,
    ) -> Result<Option<RespHead>, ProxyError> {
        let up = &plan.route.config.upstream;
        let key = &plan.route.key;
        let timeout = |what: &str| {
            ProxyError::new(
                ErrorKind::UpstreamTimeout,
                format!(
                    "{} did not {what} within {:?}",
                    up.origin(),
                    shared.response_timeout
                ),
            )
        };
        for attempt in 0..2 {
            // The connection kept from the last request: an upstream that closed it, or wrote
            // to it unasked, while it was idle is not sent another request.
            if let Some(conn) = self.up.as_mut() {
                if conn.key != *key {
                    self.park(&ctx.pool);
                } else if !still_open(&mut conn.stream).await {
                    self.up = None;
                }
            }
            if self.up.is_none() {
                tokio::select! {
                    biased;
                    r = self.checkout(ctx, shared, key) => match r {
                        Ok(true) => {}
                        Ok(false) if attempt == 0 => return Ok(None),
                        Ok(false) => return Err(ProxyError::new(
                            ErrorKind::UpstreamProtocol,
                            format!("{} switched to HTTP/2 while a request was retried", up.origin()),
                        )),
                        Err(e) => return Err(connect_error(up, e)),
                    },
                    () = timer.as_mut() => return Err(timeout("accept a connection")),
                }
            }
            let conn = self.up.as_mut().expect("checked out above");
            let reused = conn.reused;
            conn.reused = true;
            self.ubuf.clear();
            let outcome = {
                let exchange = exchange_head(
                    &mut conn.stream,
                    &self.out,
                    &mut self.ubuf,
                    &mut self.dhead,
                    plan.head_method,
                    plan.rewrite,
                );
                tokio::select! {
                    biased;
                    r = exchange => Some(r),
                    () = timer.as_mut() => None,
                }
            };
            let Some(outcome) = outcome else {
                self.up = None;
                return Err(timeout("answer"));
            };
            match outcome {
                Ok(head) => return Ok(Some(head)),
                // The keep-alive race: the upstream closed a reused connection as the request
                // went out. Sent again when nothing of it was written, or when nothing at all
                // came back and sending it twice is harmless.
                Err(HeadError::Unsent(e)) if reused && attempt == 0 => {
                    tracing::debug!(error = %e, "reused upstream connection was closed; retrying on a new one");
                    self.up = None;
                }
                Err(HeadError::Unanswered(e)) if reused && attempt == 0 && plan.idempotent => {
                    tracing::debug!(error = %e, "reused upstream connection closed without answering; retrying on a new one");
                    self.up = None;
                }
                Err(e) => {
                    self.up = None;
                    return Err(e.into_proxy_error(&up.origin()));
                }
            }
        }
        Err(ProxyError::new(
            ErrorKind::UpstreamUnreachable,
            format!("{} closed the connection before answering", up.origin()),
        ))
    }

    /// Make `self.up` a connection to `key`: a parked one or a new one. `Ok(false)`: the upstream
    /// chose HTTP/2 (the connection went to the pool for hyper).
    async fn checkout(
        &mut self,
        ctx: &ConnCtx,
        shared: &Shared,
        key: &UpstreamKey,
    ) -> Result<bool, super::upstream::ConnectError> {
        self.park(&ctx.pool);
        if ctx.pool.h2(key).is_some() {
            return Ok(false);
        }
        if let Some(stream) = ctx.pool.take_stream(key).await {
            self.up = Some(Up {
                key: key.clone(),
                stream,
                reused: true,
            });
            return Ok(true);
        }
        let (stream, h2) = shared.connector.connect_stream(key).await?;
        if h2 {
            let sender = shared.connector.handshake_h2(key, stream).await?;
            ctx.pool.put_h2(key.clone(), sender);
            return Ok(false);
        }
        self.up = Some(Up {
            key: key.clone(),
            stream,
            reused: false,
        });
        Ok(true)
    }

    /// Phase 8's 401 rule: a 401 to the current credential nudges the refresher; the request is
    /// replayed once with the new credential when the 401's body could be read whole.
    async fn after_401(
        &mut self,
        ctx: &ConnCtx,
        shared: &Shared,
        state: &ListenerState,
        plan: &Plan<'_>,
        resp: RespHead,
        mut timer: Pin<&mut Sleep>,
    ) -> Result<RespHead, ProxyError> {
        let route = plan.route;
        let provider = &route.config;
        if resp.status != 401
            || provider.preset == Preset::Static
            || !route.reader.report_rejected(&plan.credential)
        {
            return Ok(resp);
        }
        tracing::info!(provider = %provider.name, "upstream answered 401 to the current token; refreshing");
        let origin = provider.upstream.origin();
        let exact = match self.read_whole_body(&resp, timer.as_mut()).await {
            Whole::Read { exact } => exact,
            Whole::TooBig => return Ok(resp),
            Whole::Failed => {
                self.up = None;
                return Err(ProxyError::new(
                    ErrorKind::UpstreamUnreachable,
                    format!("{origin} failed while sending a 401"),
                ));
            }
            Whole::TimedOut => {
                self.up = None;
                return Err(ProxyError::new(
                    ErrorKind::UpstreamTimeout,
                    format!(
                        "{origin} did not finish its 401 within {:?}",
                        shared.response_timeout
                    ),
                ));
            }
        };
        let Some(fresh) = route
            .reader
            .wait_newer(plan.credential.generation, provider.wait_for_token)
            .await
        else {
            return Ok(resp);
        };
        // The 401 is dropped; its connection stays if it can carry the replay.
        if !(resp.reusable && exact) {
            self.up = None;
        }
        let head = plan.len - plan.body;
        let Some(replay) = self.plan(shared, &state.info, ctx.peer, head, Some(fresh)) else {
            return Ok(resp);
        };
        self.out
            .extend_from_slice(&self.buf[plan.len - plan.body..plan.len]);
        // A 401 on the replay goes back as it came (some APIs mean "no permission").
        match self.send(ctx, shared, &replay, timer.as_mut()).await? {
            Some(resp) => Ok(resp),
            None => Err(ProxyError::new(
                ErrorKind::UpstreamProtocol,
                format!(
                    "{} switched to HTTP/2 during a replay",
                    provider.upstream.origin()
                ),
            )),
        }
    }

    /// Read the rest of a small body into `ubuf` (for a 401 that may be replaced by a replay),
    /// within the response deadline.
    async fn read_whole_body(&mut self, resp: &RespHead, mut timer: Pin<&mut Sleep>) -> Whole {
        let Some(up) = self.up.as_mut() else {
            return Whole::Failed;
        };
        let limit = resp.len + REPLAY_BODY_LIMIT as usize;
        let mut chunked = ChunkedEnd::default();
        let mut fed = resp.len;
        loop {
            // Where the body ends in `ubuf`, once it is all there.
            let end = match resp.framing {
                Framing::Empty => Some(resp.len),
                Framing::Length(n) => {
                    let want = resp.len as u64 + n;
                    (self.ubuf.len() as u64 >= want).then_some(want as usize)
                }
                Framing::Chunked => match chunked.feed(&self.ubuf[fed..]) {
                    Ok(Some(n)) => Some(fed + n),
                    Ok(None) => {
                        fed = self.ubuf.len();
                        None
                    }
                    Err(()) => return Whole::Failed,
                },
                Framing::Close => return Whole::TooBig,
            };
            if let Some(end) = end {
                return Whole::Read {
                    exact: end == self.ubuf.len(),
                };
            }
            if self.ubuf.len() >= limit {
                return Whole::TooBig;
            }
            reserve(&mut self.ubuf, READ_RESERVE);
            tokio::select! {
                biased;
                r = up.stream.read_buf(&mut self.ubuf) => match r {
                    Ok(0) | Err(_) => return Whole::Failed,
                    Ok(_) => {}
                },
                () = timer.as_mut() => return Whole::TimedOut,
            }
        }
    }

    /// Write the response head and body downstream.
    async fn forward<I>(&mut self, io: &mut I, resp: RespHead, close: bool) -> Result<(), Broken>
    where
        I: AsyncRead + AsyncWrite + Unpin,
    {
        self.out.clear();
        put(&mut self.out, &[&self.dhead, VIA]);
        if close {
            self.out.extend_from_slice(b"connection: close\r\n");
        }
        self.out.extend_from_slice(b"\r\n");
        let mut reusable = resp.reusable;
        let body = &self.ubuf[resp.len..];
        // A body that ends with the connection goes on chunked.
        let rechunk = resp.framing == Framing::Close;
        // How much of what was read belongs to this response's body.
        let mut chunked = ChunkedEnd::default();
        let (first, mut remaining) = match resp.framing {
            Framing::Empty => (0, Some(0)),
            Framing::Length(n) => {
                let first = (body.len() as u64).min(n);
                (first as usize, Some(n - first))
            }
            Framing::Chunked => match chunked.feed(body) {
                Ok(Some(end)) => (end, Some(0)),
                Ok(None) => (body.len(), None),
                // Malformed: none of it goes on, and the connection ends.
                Err(()) => return Err(Broken),
            },
            Framing::Close => (body.len(), None),
        };
        if first < body.len() {
            // The upstream sent more than one response's worth: don't trust its framing again.
            reusable = false;
        }
        if rechunk {
            put_chunk(&mut self.out, &body[..first]);
        } else {
            self.out.extend_from_slice(&body[..first]);
        }
        write_all(io, &self.out).await?;
        // The rest of the body, as it comes.
        while remaining != Some(0) {
            let Some(up) = self.up.as_mut() else {
                return Err(Broken);
            };
            self.ubuf.clear();
            let want = match remaining {
                Some(n) => n.min(STREAM_BUF as u64) as usize,
                None => STREAM_BUF,
            };
            reserve(&mut self.ubuf, want);
            // A read error (a TLS connection cut without close_notify too) cuts the body short.
            let n = up
                .stream
                .read_buf(&mut (&mut self.ubuf).limit(want))
                .await
                .map_err(|_| Broken)?;
            if n == 0 {
                if !rechunk {
                    return Err(Broken);
                }
                self.up = None;
                return write_all(io, b"0\r\n\r\n").await;
            }
            let take = match (&mut remaining, resp.framing) {
                (Some(r), _) => {
                    *r -= n as u64;
                    n
                }
                (None, Framing::Chunked) => match chunked.feed(&self.ubuf) {
                    Ok(Some(end)) => {
                        remaining = Some(0);
                        reusable &= end == n;
                        end
                    }
                    Ok(None) => n,
                    Err(()) => return Err(Broken),
                },
                (None, _) => n,
            };
            if rechunk {
                self.out.clear();
                put_chunk(&mut self.out, &self.ubuf[..take]);
                write_all(io, &self.out).await?;
            } else {
                write_all(io, &self.ubuf[..take]).await?;
            }
        }
        if !reusable {
            self.up = None;
        }
        Ok(())
    }

    async fn write_error<I>(
        &mut self,
        io: &mut I,
        e: ProxyError,
        head_method: bool,
    ) -> Result<(), Broken>
    where
        I: AsyncWrite + Unpin,
    {
        let (status, headers, body) = e.into_parts();
        let out = &mut self.out;
        out.clear();
        put(
            out,
            &[
                b"HTTP/1.1 ",
                status.as_str().as_bytes(),
                b" ",
                status.canonical_reason().unwrap_or("").as_bytes(),
                b"\r\n",
            ],
        );
        for (name, value) in &headers {
            put(
                out,
                &[name.as_str().as_bytes(), b": ", value.as_bytes(), b"\r\n"],
            );
        }
        put(
            out,
            &[
                b"content-length: ",
                body.len().to_string().as_bytes(),
                b"\r\n\r\n",
            ],
        );
        if !head_method {
            out.extend_from_slice(&body);
        }
        write_all(io, out).await
    }
}

/// Where a `Location` pointing at the upstream is made to point back at this listener
/// (base-URL and prefix routes).
#[derive(Clone, Copy)]
struct Rewrite<'a> {
    upstream: &'a crate::config::Upstream,
    info: &'a ListenerInfo,
    prefix: Option<&'a str>,
}

/// Send a request and read the answer's head, skipping interim (1xx) responses; the head to
/// send downstream (without `Via`, `Connection` and the final CRLF) is written to `dhead`.
async fn exchange_head(
    stream: &mut Stream,
    out: &[u8],
    ubuf: &mut Vec<u8>,
    dhead: &mut Vec<u8>,
    head_method: bool,
    rewrite: Option<Rewrite<'_>>,
) -> Result<RespHead, HeadError> {
    stream.write_all(out).await.map_err(HeadError::Unsent)?;
    stream.flush().await.map_err(HeadError::Unsent)?;
    // Anything received, interim responses included, rules out sending the request again.
    let mut received = false;
    loop {
        if !ubuf.is_empty() {
            let mut headers = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
            let mut parsed = httparse::Response::new(&mut headers);
            match parsed.parse(ubuf) {
                Ok(httparse::Status::Complete(len)) => {
                    let status = parsed.code.unwrap_or(0);
                    if (100..200).contains(&status) && status != 101 {
                        ubuf.drain(..len);
                        continue;
                    }
                    return response_head(&parsed, len, head_method, dhead, rewrite);
                }
                Ok(httparse::Status::Partial) if ubuf.len() < MAX_RESPONSE_HEAD => {}
                Ok(httparse::Status::Partial) => {
                    return Err(HeadError::Protocol("its response head is over 64 KiB"));
                }
                Err(_) => return Err(HeadError::Protocol("its response is not valid HTTP/1.1")),
            }
        }
        reserve(ubuf, READ_RESERVE * 2);
        let failed = match stream.read_buf(ubuf).await {
            Ok(0) => std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed before a response",
            ),
            Ok(_) => {
                received = true;
                continue;
            }
            Err(e) => e,
        };
        return Err(if received {
            HeadError::Io(failed)
        } else {
            HeadError::Unanswered(failed)
        });
    }
}

/// A parsed response head: its framing and reusability, and the head for downstream (hop-by-hop
/// fields dropped, `Location` rewritten) written to `dhead`.
fn response_head(
    parsed: &httparse::Response<'_, '_>,
    len: usize,
    head_method: bool,
    dhead: &mut Vec<u8>,
    rewrite: Option<Rewrite<'_>>,
) -> Result<RespHead, HeadError> {
    let status = parsed.code.unwrap_or(0);
    if status == 101 {
        return Err(HeadError::Protocol("it switched protocols unasked"));
    }
    if status < 100 {
        return Err(HeadError::Protocol("its status code is below 100"));
    }
    let mut length: Option<u64> = None;
    let mut chunked = None;
    let mut close = parsed.version != Some(1);
    let mut connection_names = false;
    let mut kinds = [Field::Other; MAX_RESPONSE_HEADERS];
    for (h, kind) in parsed.headers.iter().zip(&mut kinds) {
        *kind = classify(h.name);
        match kind {
            Field::ContentLength => {
                let n = parse_length(h.value)
                    .ok_or(HeadError::Protocol("its Content-Length is not a number"))?;
                if length.is_some_and(|l| l != n) {
                    return Err(HeadError::Protocol("it sent differing Content-Lengths"));
                }
                length = Some(n);
            }
            Field::TransferEncoding => {
                if parsed.version != Some(1) {
                    return Err(HeadError::Protocol("it sent Transfer-Encoding in HTTP/1.0"));
                }
                let last = h.value.rsplit(|&b| b == b',').next().unwrap_or(b"");
                chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            }
            Field::Connection => {
                connection_names |= names_other_fields(h.value);
                for token in h.value.split(|&b| b == b',') {
                    let token = token.trim_ascii();
                    if token.eq_ignore_ascii_case(b"close") {
                        close = true;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") && parsed.version == Some(0)
                    {
                        close = false;
                    }
                }
            }
            _ => {}
        }
    }
    let framing = if head_method || status == 204 || status == 304 {
        Framing::Empty
    } else {
        match (chunked, length) {
            (Some(true), _) => Framing::Chunked,
            (Some(false), _) => Framing::Close,
            (None, Some(n)) => Framing::Length(n),
            (None, None) => Framing::Close,
        }
    };

    dhead.clear();
    put(
        dhead,
        &[
            b"HTTP/1.1 ",
            &itoa3(status),
            b" ",
            parsed.reason.unwrap_or("").as_bytes(),
            b"\r\n",
        ],
    );
    for (h, kind) in parsed.headers.iter().zip(kinds) {
        let keep = match kind {
            Field::TransferEncoding => matches!(framing, Framing::Chunked | Framing::Empty),
            Field::ContentLength => matches!(framing, Framing::Length(_) | Framing::Empty),
            Field::Location => {
                if let Some(new) = rewrite
                    .zip(std::str::from_utf8(h.value).ok())
                    .and_then(|(r, loc)| local_location(loc, r.upstream, r.info, r.prefix))
                    .filter(|new| http::HeaderValue::from_str(new).is_ok())
                {
                    put(dhead, &[b"location: ", new.as_bytes(), b"\r\n"]);
                    continue;
                }
                true
            }
            Field::Connection | Field::Upgrade | Field::ProxyAuthorization | Field::HopByHop => {
                false
            }
            _ => !(connection_names && named_in_connection(parsed.headers, h.name)),
        };
        if keep {
            put(dhead, &[h.name.as_bytes(), b": ", h.value, b"\r\n"]);
        }
    }
    if framing == Framing::Close {
        // Re-framed for the client, so its connection lives on and a cut-short body shows.
        dhead.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    Ok(RespHead {
        len,
        status,
        framing,
        reusable: !close && framing != Framing::Close,
    })
}

enum HeadError {
    /// Writing the request failed: the upstream did not get all of it.
    Unsent(std::io::Error),
    /// The request went out and the connection ended before a byte of an answer came back.
    Unanswered(std::io::Error),
    /// The connection failed during the answer's head.
    Io(std::io::Error),
    Protocol(&'static str),
}

impl HeadError {
    fn into_proxy_error(self, origin: &str) -> ProxyError {
        match self {
            HeadError::Unsent(e) | HeadError::Unanswered(e) | HeadError::Io(e) => ProxyError::new(
                ErrorKind::UpstreamUnreachable,
                format!("{origin} failed: {e}"),
            ),
            HeadError::Protocol(why) => ProxyError::new(
                ErrorKind::UpstreamProtocol,
                format!("{origin} failed: {why}"),
            ),
        }
    }
}

/// What the fast path needs to know about a request's fields.
#[derive(Default)]
struct Fields<'b> {
    content_length: Option<u64>,
    host: Option<&'b str>,
    proxy_authorization: Option<&'b [u8]>,
    close: bool,
    /// `Connection` names fields other than `close` / `keep-alive` (they are dropped too).
    connection_names: bool,
}

impl<'b> Fields<'b> {
    /// Note one field; `None` when the request is hyper's to serve.
    fn note(&mut self, kind: Field, h: &httparse::Header<'b>) -> Option<()> {
        match kind {
            Field::ContentLength => {
                if self.content_length.is_some() {
                    return None;
                }
                self.content_length = Some(parse_length(h.value)?);
            }
            Field::TransferEncoding
            | Field::Expect
            | Field::Upgrade
            | Field::Origin
            | Field::SecFetchSite => return None,
            Field::Host => {
                if self.host.is_some() {
                    return None;
                }
                self.host = Some(std::str::from_utf8(h.value).ok()?);
            }
            Field::Connection => {
                for token in h.value.split(|&b| b == b',') {
                    let token = token.trim_ascii();
                    if token.eq_ignore_ascii_case(b"close") {
                        self.close = true;
                    } else if token.eq_ignore_ascii_case(b"upgrade") {
                        return None;
                    } else if !token.eq_ignore_ascii_case(b"keep-alive") && !token.is_empty() {
                        self.connection_names = true;
                    }
                }
            }
            Field::ProxyAuthorization => self.proxy_authorization = Some(h.value),
            _ => {}
        }
        Some(())
    }
}

/// The fields the fast path treats specially.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    ContentLength,
    TransferEncoding,
    Connection,
    Host,
    ProxyAuthorization,
    Expect,
    Upgrade,
    Origin,
    SecFetchSite,
    XForwardedProto,
    Location,
    /// `keep-alive`, `proxy-connection`, `proxy-authenticate`, `te`, `trailer`.
    HopByHop,
    Other,
}

fn classify(name: &str) -> Field {
    let is = |s: &str| name.eq_ignore_ascii_case(s);
    match name.len() {
        2 if is("te") => Field::HopByHop,
        4 if is("host") => Field::Host,
        6 if is("expect") => Field::Expect,
        6 if is("origin") => Field::Origin,
        7 if is("upgrade") => Field::Upgrade,
        7 if is("trailer") => Field::HopByHop,
        8 if is("location") => Field::Location,
        10 if is("connection") => Field::Connection,
        10 if is("keep-alive") => Field::HopByHop,
        14 if is("content-length") => Field::ContentLength,
        14 if is("sec-fetch-site") => Field::SecFetchSite,
        16 if is("proxy-connection") => Field::HopByHop,
        17 if is("transfer-encoding") => Field::TransferEncoding,
        17 if is("x-forwarded-proto") => Field::XForwardedProto,
        18 if is("proxy-authenticate") => Field::HopByHop,
        19 if is("proxy-authorization") => Field::ProxyAuthorization,
        _ => Field::Other,
    }
}

/// A `Connection` value naming a field to drop (anything but `close` / `keep-alive`).
fn names_other_fields(value: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .any(|t| {
            !t.is_empty()
                && !t.eq_ignore_ascii_case(b"close")
                && !t.eq_ignore_ascii_case(b"keep-alive")
        })
}

/// `name` is listed in one of the `Connection` fields.
fn named_in_connection(headers: &[httparse::Header<'_>], name: &str) -> bool {
    headers
        .iter()
        .filter(|h| classify(h.name) == Field::Connection)
        .flat_map(|h| h.value.split(|&b| b == b','))
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(name.as_bytes()))
}

/// A `Content-Length` value: digits only, no sign, no list.
fn parse_length(v: &[u8]) -> Option<u64> {
    let v = v.trim_ascii();
    if v.is_empty() || v.len() > 18 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// A request target byte the fast path passes on: visible ASCII, and no fragment (hyper drops
/// it; a fragment never goes on the wire).
fn is_target_byte(b: u8) -> bool {
    b.is_ascii_graphic() && b != b'#'
}

/// `(authority, path-and-query)` of an origin-form or `http://` absolute-form target.
fn split_target(target: &str) -> Option<(Option<&str>, &str)> {
    if target.starts_with('/') {
        return Some((None, target));
    }
    let scheme = target.get(..7)?;
    if !scheme.eq_ignore_ascii_case("http://") {
        return None;
    }
    let rest = &target[7..];
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, pq) = rest.split_at(end);
    let plain = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']');
    if authority.is_empty() || !authority.bytes().all(plain) {
        return None;
    }
    match pq {
        "" => Some((Some(authority), "/")),
        pq if pq.starts_with('/') => Some((Some(authority), pq)),
        _ => None,
    }
}

/// Where a request head ends: just past its first empty line (CRLF CRLF, or the bare LFs
/// httparse also accepts). A buffer starting with empty lines is `plan`'s to refuse.
fn head_end(buf: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(p) = buf[from..].iter().position(|&b| b == b'\n') {
        let nl = from + p;
        match buf.get(nl + 1..nl + 3) {
            Some([b'\n', _]) => return Some(nl + 2),
            Some(b"\r\n") => return Some(nl + 3),
            Some(_) => {}
            None if buf.get(nl + 1) == Some(&b'\n') => return Some(nl + 2),
            None => return None,
        }
        from = nl + 1;
    }
    None
}

/// A three-digit status code as ASCII.
fn itoa3(code: u16) -> [u8; 3] {
    let c = code.min(999);
    [
        b'0' + (c / 100) as u8,
        b'0' + (c / 10 % 10) as u8,
        b'0' + (c % 10) as u8,
    ]
}

/// `data` as one chunk of a chunked body (nothing for no data: an empty chunk would end it).
fn put_chunk(out: &mut Vec<u8>, data: &[u8]) {
    if !data.is_empty() {
        put(
            out,
            &[format!("{:x}\r\n", data.len()).as_bytes(), data, b"\r\n"],
        );
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

/// Follows a chunked body (RFC 9112 §7.1) through the bytes fed to it, to find where it ends.
/// The bytes themselves are passed on unchanged.
#[derive(Default)]
struct ChunkedEnd {
    state: ChunkState,
    /// A chunk-size or trailer line split across reads.
    line: Vec<u8>,
}

#[derive(Default, Clone, Copy)]
enum ChunkState {
    #[default]
    Size,
    Data(u64),
    /// The CRLF after a chunk's data; how many of its bytes were seen.
    DataEnd(u8),
    Trailer,
    Done,
    /// Malformed: stays so.
    Failed,
}

/// Longest chunk-size or trailer line followed.
const MAX_CHUNK_LINE: usize = 8 * 1024;

impl ChunkedEnd {
    /// Feed the next bytes; `Ok(Some(n))`: the body ends after the first `n` of them.
    fn feed(&mut self, bytes: &[u8]) -> Result<Option<usize>, ()> {
        let result = self.follow(bytes);
        if result.is_err() {
            self.state = ChunkState::Failed;
        }
        result
    }

    fn follow(&mut self, bytes: &[u8]) -> Result<Option<usize>, ()> {
        if let ChunkState::Failed = self.state {
            return Err(());
        }
        let mut i = 0;
        while i < bytes.len() {
            match self.state {
                ChunkState::Size | ChunkState::Trailer => {
                    let rest = &bytes[i..];
                    let (take, complete) = match rest.iter().position(|&b| b == b'\n') {
                        Some(nl) => (nl + 1, true),
                        None => (rest.len(), false),
                    };
                    if self.line.len() + take > MAX_CHUNK_LINE {
                        return Err(());
                    }
                    self.line.extend_from_slice(&rest[..take]);
                    i += take;
                    if !complete {
                        continue;
                    }
                    self.state = match self.state {
                        // (httparse reads an empty line as size 0.)
                        ChunkState::Size if !self.line[0].is_ascii_hexdigit() => return Err(()),
                        ChunkState::Size => match httparse::parse_chunk_size(&self.line) {
                            Ok(httparse::Status::Complete((_, 0))) => ChunkState::Trailer,
                            Ok(httparse::Status::Complete((_, n))) => ChunkState::Data(n),
                            _ => return Err(()),
                        },
                        _ if self.line == b"\r\n" => ChunkState::Done,
                        _ if self.line.ends_with(b"\r\n") => ChunkState::Trailer,
                        _ => return Err(()),
                    };
                    self.line.clear();
                    if let ChunkState::Done = self.state {
                        return Ok(Some(i));
                    }
                }
                ChunkState::Data(n) => {
                    let take = (bytes.len() - i).min(usize::try_from(n).unwrap_or(usize::MAX));
                    i += take;
                    let left = n - take as u64;
                    self.state = if left == 0 {
                        ChunkState::DataEnd(0)
                    } else {
                        ChunkState::Data(left)
                    };
                }
                ChunkState::DataEnd(seen) => {
                    if bytes[i] != b"\r\n"[usize::from(seen)] {
                        return Err(());
                    }
                    i += 1;
                    self.state = if seen == 1 {
                        ChunkState::Size
                    } else {
                        ChunkState::DataEnd(1)
                    };
                }
                ChunkState::Done => return Ok(Some(i)),
                ChunkState::Failed => return Err(()),
            }
        }
        Ok(matches!(self.state, ChunkState::Done).then_some(i))
    }
}

/// A stream that first yields bytes already read from it: hyper takes over a connection from
/// the fast path this way, starting at the request the fast path did not serve.
pub struct Rewind<I> {
    prefix: Vec<u8>,
    pos: usize,
    io: I,
}

impl<I> Rewind<I> {
    pub fn new(prefix: Vec<u8>, io: I) -> Self {
        Rewind { prefix, pos: 0, io }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Rewind<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.pos < this.prefix.len() {
            let n = (this.prefix.len() - this.pos).min(buf.remaining());
            buf.put_slice(&this.prefix[this.pos..this.pos + n]);
            this.pos += n;
            if this.pos == this.prefix.len() {
                this.prefix = Vec::new();
                this.pos = 0;
            }
            return std::task::Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Rewind<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
    fn poll_flush(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ends(chunks: &[&[u8]]) -> Result<Option<usize>, ()> {
        let mut c = ChunkedEnd::default();
        let mut last = Ok(None);
        for chunk in chunks {
            last = c.feed(chunk);
            if !matches!(last, Ok(None)) {
                return last;
            }
        }
        last
    }

    #[test]
    fn chunked_end_is_found_across_any_split() {
        let body = b"4;ext=1\r\nRust\r\n10\r\n0123456789abcdef\r\n0\r\nx-trailer: 1\r\n\r\nNEXT";
        let end = body.len() - 4;
        assert_eq!(ends(&[body]), Ok(Some(end)));
        for split in 1..body.len() {
            let (a, b) = body.split_at(split);
            let got = ends(&[a, b]);
            if split >= end {
                assert_eq!(got, Ok(Some(end)), "split at {split}");
            } else {
                assert_eq!(got, Ok(Some(end - split)), "split at {split}");
            }
        }
        let mut c = ChunkedEnd::default();
        for (i, b) in body.iter().enumerate() {
            let r = c.feed(std::slice::from_ref(b));
            if i + 1 == end {
                assert_eq!(r, Ok(Some(1)));
                break;
            }
            assert_eq!(r, Ok(None), "byte {i}");
        }
    }

    #[test]
    fn malformed_chunks_are_refused() {
        for bad in [
            &b"zz\r\n"[..],
            b"4\r\nRustXX",
            b"4\nRust\r\n",
            b"0\r\nbad trailer\n",
            b"fffffffffffffffff\r\n",
        ] {
            assert_eq!(ends(&[bad]), Err(()), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn head_ends_at_the_first_empty_line() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nNEXT"), Some(27));
        assert_eq!(head_end(b"GET / HTTP/1.1\nHost: a\n\nNEXT"), Some(24));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\r\n\r"), None);
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\r\n"), None);
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\n"), None);
        assert_eq!(head_end(b""), None);
    }

    #[test]
    fn targets() {
        assert_eq!(split_target("/a?b"), Some((None, "/a?b")));
        assert_eq!(
            split_target("http://api.example:8080/x"),
            Some((Some("api.example:8080"), "/x"))
        );
        assert_eq!(
            split_target("HTTP://api.example"),
            Some((Some("api.example"), "/"))
        );
        assert_eq!(split_target("http://user@api.example/"), None);
        assert_eq!(split_target("https://api.example/"), None);
        assert_eq!(split_target("*"), None);
        assert_eq!(split_target("http://h?x"), None);
    }

    #[test]
    fn field_names() {
        for (name, field) in [
            ("Content-Length", Field::ContentLength),
            ("TRANSFER-ENCODING", Field::TransferEncoding),
            ("te", Field::HopByHop),
            ("Proxy-Authorization", Field::ProxyAuthorization),
            ("x-forwarded-proto", Field::XForwardedProto),
            ("Sec-Fetch-Site", Field::SecFetchSite),
            ("proxy-connection", Field::HopByHop),
            ("authorization", Field::Other),
        ] {
            assert_eq!(classify(name), field, "{name}");
        }
        assert_eq!(parse_length(b" 12 "), Some(12));
        assert_eq!(parse_length(b"+1"), None);
        assert_eq!(parse_length(b"1,1"), None);
        assert_eq!(itoa3(204), *b"204");
    }
}
