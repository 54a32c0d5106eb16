//! The fast path's upstream side: a connection (kept, parked or new), the request written, the
//! answer's head read; the keep-alive race; the 401 rule.

use std::pin::Pin;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{Instant, Sleep};

use super::head::{HeadError, Rewrite, response_head};
use super::*;

/// A 401's body, read whole or not.
pub(super) enum Whole {
    /// All there; `exact`: nothing after it (the connection can carry the replay).
    Read {
        exact: bool,
    },
    TooBig,
    Failed,
    TimedOut,
}

impl Fast {
    /// Send `out` upstream and read the response head into `ubuf`. `Ok(None)`: the upstream
    /// speaks HTTP/2, hyper's turn (nothing was sent).
    pub(super) async fn send(
        &mut self,
        ctx: &ConnCtx,
        shared: &Shared,
        plan: &Plan<'_>,
        mut timer: Pin<&mut Sleep>,
    ) -> Result<Option<RespHead>, ProxyError> {
        let sent = Instant::now();
        timer
            .as_mut()
            .reset(sent + response_timeout(shared.response_timeout, &plan.route.config));
        let result = self.send_inner(ctx, shared, plan, timer).await;
        let status = match &result {
            Ok(Some(head)) => Some(head.status),
            _ => None,
        };
        shared
            .metrics
            .upstream_answer(plan.index, sent.elapsed(), status);
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
        let rt = response_timeout(shared.response_timeout, &plan.route.config);
        let timeout = |what: &str| timeout_error(up, rt, what);
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
                    plan.rewrite(&self.buf),
                    plan.credential.query(),
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
                Err(HeadError::Unsent(e))
                    if retry(Failed::Unsent, reused, attempt, plan.idempotent) =>
                {
                    tracing::debug!(error = %e, "reused upstream connection was closed; retrying on a new one");
                    self.up = None;
                }
                Err(HeadError::Unanswered(e))
                    if retry(Failed::Unanswered, reused, attempt, plan.idempotent) =>
                {
                    tracing::debug!(error = %e, "reused upstream connection closed without answering; retrying on a new one");
                    self.up = None;
                }
                Err(e) => {
                    self.up = None;
                    return Err(e.into_proxy_error(&up.origin()));
                }
            }
        }
        Err(closed_error(up))
    }

    /// Make `self.up` a connection to `key`: a parked one or a new one. `Ok(false)`: the upstream
    /// chose HTTP/2 (the connection went to the pool for hyper).
    pub(super) async fn checkout(
        &mut self,
        ctx: &ConnCtx,
        shared: &Shared,
        key: &UpstreamKey,
    ) -> Result<bool, crate::proxy::upstream::ConnectError> {
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
    pub(super) async fn after_401(
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
        let said = || resp.invalid_token;
        if !rejection(resp.status, refreshable(provider.preset), said)
            .is_some_and(|r| route.reader.report_rejected(&plan.credential, r))
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
                        response_timeout(shared.response_timeout, &route.config)
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
    pub(super) async fn read_whole_body(
        &mut self,
        resp: &RespHead,
        mut timer: Pin<&mut Sleep>,
    ) -> Whole {
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
}

/// Send a request and read the answer's head, skipping interim (1xx) responses; the head to
/// send downstream (without `Via`, `Connection` and the final CRLF) is written to `dhead`.
pub(super) async fn exchange_head(
    stream: &mut Stream,
    out: &[u8],
    ubuf: &mut Vec<u8>,
    dhead: &mut Vec<u8>,
    head_method: bool,
    rewrite: Option<Rewrite<'_>>,
    query: Option<&crate::credential::QueryParam>,
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
                    return response_head(&parsed, len, head_method, dhead, rewrite, query);
                }
                Ok(httparse::Status::Partial) if ubuf.len() < MAX_RESPONSE_HEAD => {}
                Ok(httparse::Status::Partial) => {
                    return Err(HeadError::Protocol("it sent a response head over 64 KiB"));
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
            HeadError::Io(failed, ubuf.len())
        } else {
            HeadError::Unanswered(failed)
        });
    }
}
