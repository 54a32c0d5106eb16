//! The per-request work: phases 2–9 of [`crate::proxy`].

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::uri::{PathAndQuery, Scheme};
use http::{Method, Request, Response, Uri};
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::{Body, Incoming};
use tokio::time::Instant;

use super::access::{
    AuditRequest, Outcome, access_enabled, access_line, audit_record, count_caller,
};
use super::checks::{
    admit, bad_host, check_browser, check_caller, check_own_host, check_route_connect,
    destination_allowed, destination_not_allowed, framing_ok, proxy_auth_required, two_hosts,
    two_proxy_authorizations, unsupported_framing,
};
use super::counted::Counted;
use super::error::{ErrorKind, ProxyError};
use super::exchange::{
    Failed, REPLAY_BODY_LIMIT, client_timeout, closed_error, connect_error, connect_failed,
    fits_replay, refreshable, rejection, response_timeout, retry, timeout_error, upstream_error,
};
use super::expect::{self, ClientBody, expects_continue};
use super::inject;
use super::route::{ClientOrigin, rewrite_location, upstream_path};
use super::route::{ProviderRoute, Role, Target};
use super::state::{ConnCtx, ListenerInfo, Shared};
use super::upgrade;
use super::upload::{Fault, Progress, Upload, UploadError, within};
use super::upstream::{Checkout, LocalSlot, Pool, UpstreamKey};
use super::{RespBody, UpBody};
use crate::config::Upstream;
use crate::credential::{Credential, Unavailable};
use crate::request_id::{self, RequestId};

/// One request's view: the generation it started under, and its connection's upstream slot.
struct ReqCtx<'a> {
    shared: &'a Shared,
    info: &'a ListenerInfo,
    slot: &'a LocalSlot,
    pool: &'a Pool,
    peer: Option<std::net::IpAddr>,
    /// For a `CONNECT` whose tunnel is served here (`tunnel.rs`).
    conn: &'a Arc<ConnCtx>,
    state: &'a Arc<super::state::ListenerState>,
}

pub async fn handle(
    ctx: Arc<ConnCtx>,
    req: Request<Incoming>,
) -> Result<Response<RespBody>, std::convert::Infallible> {
    let start = Instant::now();
    let state = ctx.cell.load_full();
    let ctx = &ReqCtx {
        shared: &state.shared,
        info: &state.info,
        slot: &ctx.slot,
        pool: &ctx.pool,
        peer: ctx.peer,
        conn: &ctx,
        state: &state,
    };
    let _inflight = ctx.shared.metrics.inflight();
    let request_id = RequestId::of(
        req.headers()
            .get(request_id::CLIENT_HEADER)
            .map(HeaderValue::as_bytes),
    );
    // The access line's fields are copied only when the line (or the audit record) will be
    // written: with the level above info and no audit log (as benchmarks run) a request
    // allocates nothing for logging.
    let audit = ctx.shared.audit.is_some();
    let access = (access_enabled() || audit).then(|| {
        (
            req.method().clone(),
            request_host(&req).unwrap_or_default(),
            req.uri().path().to_owned(),
            req.body().size_hint().exact().unwrap_or(0),
        )
    });
    let mut outcome = Outcome::new();
    let resp = match proxy(ctx, req, &mut outcome).await {
        Ok(resp) => resp,
        Err(e) => {
            let e = e.matched(outcome.provider);
            outcome.blame = Some(e.kind.blame());
            outcome.code = Some(e.kind.code());
            tracing::debug!(code = e.kind.code(), message = %e.message, "request refused");
            e.into_response().map(Either::Right)
        }
    };
    let (mut parts, body) = resp.into_parts();
    parts
        .headers
        .insert(request_id::HEADER, request_id.header_value());
    ctx.shared.metrics.request(outcome.index, parts.status);
    count_caller(ctx.shared, &outcome);
    let mut body = body;
    if let Some((method, host, path, bytes_in)) = access {
        let status = parts.status.as_u16();
        if access_enabled() {
            let caller = ctx.shared.gate.name(outcome.caller).map(|n| &**n);
            access_line(
                method.as_str(),
                &host,
                &path,
                status,
                start,
                outcome.provider,
                outcome.blame,
                caller,
                &request_id,
            );
        }
        let upload = outcome.upload.take();
        let request = AuditRequest {
            id: request_id,
            method,
            host: &host,
            path: &path,
            status,
            bytes_in: upload.as_ref().map_or(bytes_in, |p| p.bytes()),
            start,
        };
        if let (Some(record), Some(log)) = (
            audit_record(ctx.shared, ctx.info, &outcome, request),
            &ctx.shared.audit,
        ) {
            body = match body {
                // Finished (bytes out, duration) when the upstream's body ends.
                Either::Left(counted) => {
                    Either::Left(counted.audited(log.clone(), record, start, upload))
                }
                Either::Right(full) => {
                    let mut record = record;
                    record.bytes_out = full.size_hint().exact().unwrap_or(0);
                    log.request(record);
                    Either::Right(full)
                }
            };
        }
    }
    Ok(Response::from_parts(parts, body))
}

/// The host the access line and the audit record show: the absolute-form authority or the
/// `Host` value only when it is a valid `host[:port]` (`route::valid_authority`), else "-". A raw
/// value may carry a secret (`http://user:SECRET@host/`, `Host: Bearer sk-...`), and the request
/// is refused anyway (400 `bad_host`).
fn request_host(req: &Request<Incoming>) -> Option<String> {
    let raw = match req.uri().authority() {
        Some(a) => a.as_str(),
        None => req.headers().get(header::HOST)?.to_str().unwrap_or("-"),
    };
    Some(if super::route::valid_authority(raw) {
        raw.to_owned()
    } else {
        "-".to_owned()
    })
}

async fn proxy<'a>(
    ctx: &'a ReqCtx<'a>,
    req: Request<Incoming>,
    outcome: &mut Outcome<'a>,
) -> Result<Response<RespBody>, ProxyError> {
    let shared = ctx.shared;
    // Phase 2: downstream checks.
    let h = req.headers();
    if h.get_all(header::PROXY_AUTHORIZATION)
        .iter()
        .nth(1)
        .is_some()
    {
        return Err(two_proxy_authorizations());
    }
    let Some(caller) = admit(
        ctx.info,
        &shared.gate,
        h.get(header::PROXY_AUTHORIZATION)
            .map(HeaderValue::as_bytes),
    ) else {
        return Err(proxy_auth_required());
    };
    outcome.caller = caller;
    if h.get_all(header::HOST).iter().nth(1).is_some() {
        return Err(two_hosts());
    }
    if !framing_ok(
        h.get_all(header::TRANSFER_ENCODING)
            .iter()
            .map(HeaderValue::as_bytes),
    ) {
        return Err(unsupported_framing());
    }
    // Phase 3: route.
    if req.method() == Method::CONNECT {
        if let Role::Route(own) = ctx.info.role {
            check_route_connect(
                &shared.router,
                own,
                req.uri().authority().map(|a| a.as_str()),
            )?;
        }
        let mut req = req;
        if let Some((index, answer)) = super::tunnel::claimed(ctx.conn, ctx.state, &mut req, caller)
        {
            outcome.provider = Some(shared.router.providers[index].config.name.as_str());
            outcome.index = Some(index);
            return answer;
        }
        return connect(ctx, req).await;
    }
    let host_header = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok());
    let target = shared.router.route(&ctx.info.role, req.uri(), host_header);
    let (index, rest, prefix) = match target {
        Target::Provider {
            index,
            path_and_query,
            prefix,
        } => (index, path_and_query, prefix),
        Target::Unknown { host } => {
            return Err(ProxyError::new(
                ErrorKind::UnknownHost,
                if host.is_empty() {
                    "the request names no host: send an absolute URL (HTTP_PROXY) or a Host header"
                        .to_owned()
                } else {
                    format!(
                        "no provider claims host {host}; credproxy is not an open proxy (add the host to a provider's hosts, or set unknown_hosts = \"pass\")"
                    )
                },
            ));
        }
        Target::Misdirected {
            index,
            tunnel,
            host,
        } => {
            let name = &shared.router.providers[index].config.name;
            outcome.provider = Some(name);
            outcome.index = Some(index);
            return Err(ProxyError::new(
                ErrorKind::Misdirected,
                format!(
                    "this tunnel was opened (CONNECT) to {tunnel}; a request for {host} needs a tunnel of its own"
                ),
            )
            .provider(name));
        }
        Target::BadHost => return Err(bad_host()),
        Target::Pass { authority } => {
            // No credential goes with it, but a web page must not use credproxy as a bridge to
            // other hosts either (a DNS-rebinding page reading intranet answers).
            browser(&req, None)?;
            return pass_through(ctx, req, &authority, outcome).await;
        }
    };
    let route = &shared.router.providers[index];
    let provider = &route.config;
    outcome.provider = Some(ctx.shared.router.providers[index].config.name.as_str());
    outcome.index = Some(index);
    check_caller(&shared.gate, caller, index, &provider.name)?;
    if ctx.info.loopback && ctx.info.role != Role::Main || prefix.is_some() {
        check_own_host(ctx.info, route, host_header)?;
    }
    // Phase 4: browser check, then the provider's rules (before a credential is read).
    browser(&req, Some(provider))?;
    super::policy::check(
        provider,
        req.method().as_str(),
        rest,
        req.headers().keys().map(|k| k.as_str()),
    )?;
    // Phase 5: credential.
    let credential = credential(route).await?;
    outcome.generation = Some(credential.generation);

    // Phase 6: the upstream request.
    let upstream = &provider.upstream;
    let base_target = upstream_path(upstream, rest, req.uri().path_and_query())?;
    let path_and_query = inject::target(&base_target, &credential);
    // Phase 8's redirect rule needs the origin the client used: kept before the head is edited
    // (cheap clones of shared bytes).
    let client_scheme = req.uri().scheme().cloned();
    let client_authority = req.uri().authority().cloned();
    let client_host = req.headers().get(header::HOST).cloned();
    let websocket = upgrade::offer(&req);
    let (mut parts, body) = req.into_parts();
    inject::request_head(
        &mut parts.headers,
        &upstream.host_header,
        credential.headers(),
        &shared.metrics,
        shared.via,
    );
    // A WebSocket handshake keeps its `Connection: upgrade` and `Upgrade` (`upgrade.rs`).
    let client_upgrade = websocket.then(|| upgrade::restore(&mut parts)).flatten();
    parts.version = http::Version::HTTP_11;
    let refreshable = refreshable(provider.preset);
    // Keep a copy for a replay after 401 only when it can help: a token that can be refreshed
    // and a body small enough to hold.
    let progress = Progress::new(Instant::now());
    outcome.upload = Some(progress.clone());
    let body = Upload::new(body, shared.client_body_timeout, progress.clone());
    // `Expect: 100-continue`: the body waits for the upstream's word (`expect.rs`), so it is
    // neither read now nor kept for a replay.
    let mut gate = None;
    let (body, kept): (UpBody, Option<Bytes>) = if expects_continue(&parts.headers) {
        let (body, cont) = expect::gated(body);
        gate = Some(cont);
        (Either::Left(body), None)
    } else if refreshable {
        keep_small_body(body).await?
    } else {
        (Either::Left(ClientBody::new(body)), None)
    };
    // A body in memory is sent at once: `response_timeout` runs from the send.
    let progress = matches!(body, Either::Left(_)).then_some(progress);
    let rt = response_timeout(shared.response_timeout, provider);
    let replay_parts =
        (refreshable && kept.is_some()).then(|| (parts.method.clone(), parts.headers.clone()));
    let te_trailers = parts.extensions.get::<super::h2::TeTrailers>().copied();
    inject::set_credential(&mut parts.headers, &credential);
    inject::set_forwarded(&mut parts.headers, provider.forwarded, ctx.peer);
    let key = &route.key;
    let mut req = Request::from_parts(parts, body);
    if let Some(cont) = &gate {
        let cont = cont.clone();
        hyper::ext::on_informational(&mut req, move |r| {
            if r.status() == http::StatusCode::CONTINUE {
                cont.proceed();
            }
        });
    }

    // Phase 7: send.
    let sent = send_timed(
        ctx,
        index,
        key,
        upstream,
        path_and_query,
        req,
        (rt, progress.as_deref()),
    )
    .await;
    // A final answer (or a failure) before the upstream asked for the body: the client's body
    // stays unread, and the upstream connection ends after the answer's body (`expect.rs`).
    let early = gate.as_ref().and_then(expect::Continue::answered);
    let mut resp = sent?;

    // Phase 8: the upstream's answer.
    let said = || {
        let fields = resp.headers().get_all(http::header::WWW_AUTHENTICATE);
        super::challenge::invalid_token(fields.iter().map(|v| v.as_bytes()))
    };
    if let Some(r) = rejection(resp.status().as_u16(), refreshable, said)
        && route.reader.report_rejected(&credential, r)
    {
        tracing::info!(provider = %provider.name, "upstream answered 401 to the current token; refreshing");
        if let (Some(body), Some((method, headers))) = (kept, replay_parts)
            && let Some(fresh) = route
                .reader
                .wait_newer(credential.generation, provider.wait_for_token)
                .await
        {
            let mut req = Request::new(Either::Right(Full::new(body)));
            *req.method_mut() = method;
            *req.headers_mut() = headers;
            if let Some(te) = te_trailers {
                req.extensions_mut().insert(te);
            }
            inject::set_credential(req.headers_mut(), &fresh);
            // As the first send had it (the fast path's replay rebuilds its head the same way).
            inject::set_forwarded(req.headers_mut(), provider.forwarded, ctx.peer);
            // A 401 on the replay goes back as it came (some APIs mean "no permission").
            let path_and_query = inject::target(&base_target, &fresh);
            resp = send_timed(ctx, index, key, upstream, path_and_query, req, (rt, None)).await?;
        }
    }
    if resp.status() == http::StatusCode::SWITCHING_PROTOCOLS {
        return upgrade::switch(ctx.conn, client_upgrade, resp, Some(&provider.name));
    }
    let (mut parts, body) = resp.into_parts();
    inject::response_head(&mut parts.headers);
    inject::strip_token_from_response(&mut parts.headers, &credential);
    let absolute = client_authority.as_ref().map(|a| {
        (
            client_scheme.as_ref().map_or("http", |s| s.as_str()),
            a.as_str(),
        )
    });
    let origin = ClientOrigin::of(
        &ctx.info.role,
        prefix,
        absolute,
        client_host.as_ref().and_then(|h| h.to_str().ok()),
        ctx.info.local_origin.as_deref(),
    );
    rewrite_location(&mut parts.headers, upstream, origin, prefix);
    if early.is_some() {
        // The client's body is never read: hyper's server closes the connection after this
        // answer, and RFC 9110 §10.1.1 has the answer say so.
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    Ok(Response::from_parts(
        parts,
        Either::Left(Counted::new(body, Some(&provider.name)).early(early)),
    ))
}

/// Phase 5: the credential, at once when valid, else waiting for the refresher.
async fn credential(route: &ProviderRoute) -> Result<Arc<Credential>, ProxyError> {
    if let Some(c) = route.reader.current(Instant::now()) {
        return Ok(c);
    }
    let name = &route.config.name;
    let wait = route.config.wait_for_token;
    match route.reader.wait_usable(wait).await {
        Ok(c) => Ok(c),
        Err(Unavailable::LoginRequired) => Err(ProxyError::new(
            ErrorKind::LoginRequired,
            format!("provider {name} needs a person to authorize it: run `credproxy login {name}`"),
        )
        .provider(name)),
        Err(Unavailable::Timeout { last_error }) => {
            let why = last_error_note(last_error);
            Err(ProxyError::new(
                ErrorKind::CredentialUnavailable,
                format!("no valid token for provider {name} within {wait:?}{why}"),
            )
            .provider(name)
            .retry_after(Duration::from_secs(5)))
        }
        Err(Unavailable::Failing {
            last_error,
            retry_in,
        }) => {
            let why = last_error_note(last_error);
            // Retry-After in whole seconds, rounded up, at least 1.
            let secs = retry_in.as_secs() + u64::from(retry_in.subsec_nanos() > 0);
            Err(ProxyError::new(
                ErrorKind::CredentialUnavailable,
                format!(
                    "no valid token for provider {name}, and none can come before the next attempt in {secs} s{why}"
                ),
            )
            .provider(name)
            .retry_after(Duration::from_secs(secs.max(1))))
        }
        Err(Unavailable::Closed) => Err(ProxyError::new(
            ErrorKind::CredentialUnavailable,
            format!("provider {name} is shutting down or being reloaded"),
        )
        .provider(name)
        .retry_after(Duration::from_secs(1))),
    }
}

/// " (last error: ...)" for a 503's message, or nothing (the error text names the problem, never
/// a secret: see `credential::Snapshot::last_error`).
fn last_error_note(last_error: Option<String>) -> String {
    last_error
        .map(|e| format!(" (last error: {e})"))
        .unwrap_or_default()
}

/// Phase 7 for provider `index`'s request, timed to the response headers (or the error) for
/// `credproxy_upstream_request_duration_seconds` (and its 401s in
/// `credproxy_upstream_unauthorized_total`).
async fn send_timed(
    ctx: &ReqCtx<'_>,
    index: usize,
    key: &UpstreamKey,
    upstream: &Upstream,
    path_and_query: PathAndQuery,
    req: Request<UpBody>,
    timing: (Duration, Option<&Progress>),
) -> Result<Response<Incoming>, ProxyError> {
    let sent = Instant::now();
    let result = send(ctx, key, upstream, path_and_query, req, timing).await;
    let status = result.as_ref().ok().map(|r| r.status().as_u16());
    ctx.shared
        .metrics
        .upstream_answer(index, sent.elapsed(), status);
    result
}

/// Phase 7: send on a connection for `key`, with one retry when a reused connection turned out
/// closed before the request went out (the keep-alive race).
async fn send(
    ctx: &ReqCtx<'_>,
    key: &UpstreamKey,
    upstream: &Upstream,
    path_and_query: PathAndQuery,
    mut req: Request<UpBody>,
    (response_timeout, progress): (Duration, Option<&Progress>),
) -> Result<Response<Incoming>, ProxyError> {
    let shared = ctx.shared;
    let start = Instant::now();
    let deadline = start + response_timeout;
    let timeout = |what: &str| timeout_error(upstream, response_timeout, what);
    // A failed send whose body failed first is the client's doing, whatever the upstream
    // connection reported (an HTTP/2 stream reset carries no trace of the body's error).
    let failed = |e: &hyper::Error| match progress.and_then(Progress::fault) {
        Some(Fault::Stalled(t)) => client_timeout(t),
        Some(Fault::Unreadable) => ProxyError::new(
            ErrorKind::BadRequest,
            "the request body could not be read (a malformed chunk, or the client hung up mid-body)",
        ),
        None => upstream_error(upstream, e),
    };
    if upgrade::is_handshake(&req) {
        // On a connection of its own, which the WebSocket will keep (`upgrade.rs`).
        let mut sender =
            tokio::time::timeout_at(deadline, upgrade::connect(&shared.connector, key))
                .await
                .map_err(|_| timeout("accept a connection"))?
                .map_err(|e| connect_error(upstream, e))?;
        *req.uri_mut() = Uri::from(path_and_query);
        return match within(sender.send_request(req), progress, start, response_timeout).await {
            Some(Ok(resp)) => Ok(resp),
            Some(Err(e)) => Err(failed(&e)),
            None => Err(timeout("answer")),
        };
    }
    for attempt in 0..2 {
        let checkout = tokio::time::timeout_at(
            deadline,
            ctx.slot.checkout(key, ctx.pool, &shared.connector),
        )
        .await
        .map_err(|_| timeout("accept a connection"))?
        .map_err(|e| connect_error(upstream, e))?;
        match checkout {
            Checkout::H2(mut sender) => {
                *req.uri_mut() = Uri::from_parts({
                    let mut p = http::uri::Parts::default();
                    p.scheme = Some(if upstream.is_tls() {
                        Scheme::HTTPS
                    } else {
                        Scheme::HTTP
                    });
                    p.authority = Some(upstream.authority.clone());
                    p.path_and_query = Some(path_and_query.clone());
                    p
                })
                .map_err(|_| {
                    ProxyError::new(ErrorKind::BadRequest, "the request URI is not valid")
                })?;
                req.headers_mut().remove(header::HOST);
                // gRPC servers want `te: trailers`, which phase 6 dropped as hop-by-hop.
                if req.extensions().get::<super::h2::TeTrailers>().is_some() {
                    req.headers_mut()
                        .insert(header::TE, HeaderValue::from_static("trailers"));
                }
                let fut = sender.send_request(req);
                return match within(fut, progress, start, response_timeout).await {
                    Some(Ok(resp)) => Ok(resp),
                    Some(Err(e)) => Err(failed(&e)),
                    None => Err(timeout("answer")),
                };
            }
            Checkout::Local { reused } => {
                *req.uri_mut() = Uri::from(path_and_query.clone());
                let fut = match ctx.slot.send(req) {
                    Ok(fut) => fut,
                    Err(back) => {
                        req = back;
                        continue;
                    }
                };
                match within(fut, progress, start, response_timeout).await {
                    Some(Ok(resp)) => return Ok(resp),
                    Some(Err(mut e)) => {
                        ctx.slot.discard();
                        match e.take_message() {
                            Some(back) if retry(Failed::Unsent, reused, attempt, false) => {
                                tracing::debug!(error = %e.error(), "reused upstream connection was closed; retrying on a new one");
                                req = back;
                            }
                            _ => return Err(failed(e.error())),
                        }
                    }
                    None => {
                        ctx.slot.discard();
                        return Err(timeout("answer"));
                    }
                }
            }
        }
    }
    Err(closed_error(upstream))
}

/// Keep a small body in memory so the request can be replayed; stream anything else.
async fn keep_small_body(body: Upload) -> Result<(UpBody, Option<Bytes>), ProxyError> {
    if body.is_end_stream() {
        return Ok((Either::Right(Full::new(Bytes::new())), Some(Bytes::new())));
    }
    match body.size_hint().exact() {
        Some(n) if fits_replay(n) => {
            let bytes = Limited::new(body, REPLAY_BODY_LIMIT as usize)
                .collect()
                .await
                .map_err(|e| match e.downcast::<UploadError>().map(|e| *e) {
                    Ok(UploadError::Stalled(t)) => client_timeout(t),
                    _ => ProxyError::new(ErrorKind::BadRequest, "the request body ended early"),
                })?
                .to_bytes();
            Ok((Either::Right(Full::new(bytes.clone())), Some(bytes)))
        }
        _ => Ok((Either::Left(ClientBody::new(body)), None)),
    }
}

/// `CONNECT` to an unclaimed host (a claimed one is `tunnel.rs`'s): tunnelled when passing, to
/// the one address judged (see [`pass_address`]).
async fn connect(
    ctx: &ReqCtx<'_>,
    req: Request<Incoming>,
) -> Result<Response<RespBody>, ProxyError> {
    let router = &ctx.shared.router;
    let Some(authority) = req.uri().authority().map(|a| a.as_str().to_owned()) else {
        return Err(ProxyError::new(
            ErrorKind::BadRequest,
            "CONNECT needs host:port",
        ));
    };
    if router.unknown_hosts != crate::config::UnknownHosts::Pass {
        return Err(ProxyError::new(
            ErrorKind::UnknownHost,
            format!("no provider claims {authority}, and unknown_hosts = \"reject\""),
        ));
    }
    let (host, port) = crate::config::host::split_host_port(&authority);
    let Some(port) = port.and_then(|p| p.parse::<u16>().ok()) else {
        return Err(ProxyError::new(
            ErrorKind::BadRequest,
            "CONNECT needs host:port",
        ));
    };
    let addr = pass_address(ctx, host, port).await?;
    // Dialled before the `200`: a host that can't be reached is a 502 (or 504) the client can
    // read, not a tunnel that opens and closes at once.
    let key = UpstreamKey {
        tls: false,
        host: host.into(),
        port,
        addr: Some(addr),
    };
    let (server, _) = ctx
        .shared
        .connector
        .connect_stream(&key)
        .await
        .map_err(connect_failed)?;
    let upgrade = hyper::upgrade::on(req);
    let span = tracing::debug_span!("CONNECT tunnel", %authority);
    // The connection's tunnel, as a claimed host's is: it keeps the slots, shutdown ends it.
    upgrade::start(ctx.conn, span, async move {
        let client = match upgrade.await {
            Ok(u) => hyper_util::rt::TokioIo::new(u),
            Err(e) => {
                tracing::debug!(error = %e, "CONNECT upgrade failed");
                return;
            }
        };
        upgrade::relay(client, server, upgrade::LINGER).await;
    });
    Ok(Response::new(Either::Right(Full::new(Bytes::new()))))
}

/// An unclaimed host with `unknown_hosts = "pass"`: forward untouched (no credential).
async fn pass_through(
    ctx: &ReqCtx<'_>,
    req: Request<Incoming>,
    authority: &str,
    outcome: &mut Outcome<'_>,
) -> Result<Response<RespBody>, ProxyError> {
    let (host, port) = crate::config::host::split_host_port(authority);
    let tls = req.uri().scheme() == Some(&Scheme::HTTPS);
    let port = port
        .and_then(|p| p.parse().ok())
        .unwrap_or(if tls { 443 } else { 80 });
    let uri: Uri = format!("{}://{authority}", if tls { "https" } else { "http" })
        .parse()
        .map_err(|_| ProxyError::new(ErrorKind::BadRequest, "the request's host is not valid"))?;
    let upstream = crate::config::presets::upstream_from_uri(&uri)
        .ok_or_else(|| ProxyError::new(ErrorKind::BadRequest, "the request's host is not valid"))?;
    let addr = pass_address(ctx, host, port).await?;
    let key = UpstreamKey {
        tls,
        host: host.into(),
        port,
        addr: Some(addr),
    };
    let websocket = upgrade::offer(&req);
    let (mut parts, body) = req.into_parts();
    let pq = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    inject::request_head(
        &mut parts.headers,
        &upstream.host_header,
        &[],
        &ctx.shared.metrics,
        ctx.shared.via,
    );
    let client_upgrade = websocket.then(|| upgrade::restore(&mut parts)).flatten();
    let progress = Progress::new(Instant::now());
    outcome.upload = Some(progress.clone());
    let body = Upload::new(body, ctx.shared.client_body_timeout, progress.clone());
    let resp = send(
        ctx,
        &key,
        &upstream,
        pq,
        Request::from_parts(parts, Either::Left(ClientBody::new(body))),
        (ctx.shared.response_timeout, Some(&progress)),
    )
    .await?;
    if resp.status() == http::StatusCode::SWITCHING_PROTOCOLS {
        return upgrade::switch(ctx.conn, client_upgrade, resp, None);
    }
    let (mut parts, body) = resp.into_parts();
    inject::response_head(&mut parts.headers);
    Ok(Response::from_parts(
        parts,
        Either::Left(Counted::new(body, None)),
    ))
}

/// Phase 3 for an unclaimed host: the address it is reached at, resolved once and judged
/// ([`destination_allowed`]); the connection goes to exactly that address. The first allowed
/// one of its addresses, or 403 naming the first refused.
async fn pass_address(
    ctx: &ReqCtx<'_>,
    host: &str,
    port: u16,
) -> Result<std::net::SocketAddr, ProxyError> {
    let addrs = ctx
        .shared
        .connector
        .resolve(host, port)
        .await
        .map_err(connect_failed)?;
    let pass_private = &ctx.shared.pass_private;
    match addrs
        .iter()
        .find(|a| destination_allowed(a.ip(), pass_private))
    {
        Some(a) => Ok(*a),
        None => match addrs.first() {
            Some(a) => Err(destination_not_allowed(host, a.ip())),
            None => Err(ProxyError::new(
                ErrorKind::UpstreamUnreachable,
                format!("{host} resolves to no address"),
            )),
        },
    }
}

/// Phase 4 over this request's fields ([`check_browser`]).
fn browser(
    req: &Request<Incoming>,
    provider: Option<&crate::config::ProviderConfig>,
) -> Result<(), ProxyError> {
    let h = req.headers();
    check_browser(
        h.get(header::ORIGIN).map(HeaderValue::as_bytes),
        h.get("sec-fetch-site").map(HeaderValue::as_bytes),
        provider,
    )
}
