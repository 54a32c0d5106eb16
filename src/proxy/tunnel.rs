//! `CONNECT` to a claimed host: the tunnel's requests are served by the request core.
//!
//! A client configured with a proxy reaches an `https://` URL (and, with Node's undici, even an
//! `http://` one) by `CONNECT host:port`. For a host a provider claims, credproxy answers `200`
//! itself and looks at the first bytes in the tunnel (DESIGN.md "HTTPS clients"):
//! - an HTTP request line: the tunnel is a plain HTTP/1.1 connection, served like any other;
//! - a TLS ClientHello, with `intercept = "claimed"`: the handshake is completed with a leaf
//!   certificate for the authority from the local CA (`crate::ca`), then the same; ALPN offers
//!   `h2` only when the provider's upstream speaks HTTP/2 (`Pool::speaks_h2`), and a client that
//!   takes it is served by `h2.rs`;
//! - anything else (or TLS with interception off): closed, and logged with what to do.
//!
//! With `intercept = "off"`, a `CONNECT` to a claimed host on port 443 is refused at once (403):
//! whatever follows is TLS that credproxy will not open. On any other port the tunnel is opened,
//! because undici sends `CONNECT host:80` for `http://` URLs.
//!
//! Inside the tunnel every request belongs to the provider claiming the `CONNECT` authority and
//! must name that host (`Role::Tunnel`, checked by the router: 421 `misdirected` otherwise).
//! `proxy_auth` and `[callers]` were checked on the `CONNECT` (service.rs, phase 2), so the
//! tunnel's own requests don't need them: the caller admitted on the `CONNECT` is the caller of
//! every request inside (and a caller is refused, 403 `caller_denied`, a `CONNECT` to a provider
//! it may not use); every other phase (injection, the 401 rule, limits, the browser check, the
//! access log) runs as for any request, on either transport, because the tunnel is handed to
//! `listener::serve_connection` as one more connection. Each of a tunnel's requests is served
//! with the config generation in force when it comes ([`TunnelView`]): a reload's new rules
//! reach a tunnel already open. A tunnel whose host no provider claims after a reload, whose
//! named caller the reload removed, or that was opened without the proof (`proxy_auth`,
//! `[callers]`) the reload now asks for, is closed after the request in hand.

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio_util::sync::CancellationToken;

use super::RespBody;
use super::auth::Caller;
use super::checks::check_caller;
use super::error::{ErrorKind, ProxyError};
use super::fast::Rewind;
use super::route::{Role, TunnelTarget};
use super::state::{ConnCtx, ListenerInfo, ListenerState, StateCell};
use crate::config::host::normalize;

/// A TLS record of type handshake (RFC 8446 §5.1): the first byte of a ClientHello.
const TLS_HANDSHAKE: u8 = 0x16;

/// `CONNECT` to `req`'s authority when a provider claims it: the answer (`200` with the tunnel
/// served in the background, or the refusal). `None` when no provider claims the authority, which
/// is the caller's to tunnel or refuse.
pub(super) fn claimed(
    conn: &Arc<ConnCtx>,
    state: &Arc<ListenerState>,
    req: &mut Request<Incoming>,
    caller: Caller,
) -> Option<(usize, Result<Response<RespBody>, ProxyError>)> {
    let authority = req.uri().authority()?.clone();
    let router = &state.shared.router;
    let index = router.by_host(authority.as_str())?;
    Some((index, open(conn, state, req, caller, authority, index)))
}

/// [`claimed`] for provider `index`: the caller may use it, and the tunnel can carry its
/// requests.
fn open(
    conn: &Arc<ConnCtx>,
    state: &Arc<ListenerState>,
    req: &mut Request<Incoming>,
    caller: Caller,
    authority: http::uri::Authority,
    index: usize,
) -> Result<Response<RespBody>, ProxyError> {
    let router = &state.shared.router;
    let name = router.providers[index].config.name.as_str();
    // The caller found on the CONNECT is the tunnel's: refused here for a provider it may not
    // use, and every request inside is its request.
    check_caller(&state.shared.gate, caller, index, name)?;
    if matches!(state.info.role, Role::Tunnel(_)) {
        return Err(ProxyError::new(
            ErrorKind::BadRequest,
            "CONNECT inside a CONNECT tunnel is not supported",
        )
        .provider(name));
    }
    let port = authority.port_u16().unwrap_or(443);
    if port == 443 && state.shared.intercept.is_none() {
        return Err(ProxyError::new(
            ErrorKind::ConnectRefused,
            format!(
                "{authority} belongs to provider {name}, and a credential can't be added inside a TLS tunnel \
                 while interception is off. Set intercept = \"claimed\" in [proxy] (and trust credproxy's CA), \
                 or call http://{host}/... through this proxy (HTTP_PROXY, not HTTPS_PROXY) and credproxy will \
                 use TLS upstream",
                host = authority.host()
            ),
        )
        .provider(name));
    }
    let tunnel = Arc::new(TunnelTarget {
        index,
        host: normalize(authority.host()).into_owned(),
        port,
    });
    let upgrade = hyper::upgrade::on(req);
    let (inner, state) = (conn.clone(), state.clone());
    let task = tokio::spawn(async move {
        let conn = inner;
        let io = match upgrade.await {
            Ok(upgraded) => TokioIo::new(upgraded),
            Err(e) => {
                tracing::debug!(error = %e, "CONNECT upgrade failed");
                return;
            }
        };
        serve(io, &conn, &state, tunnel, authority.as_str(), caller).await;
    });
    // Awaited by the connection's own task (`listener::serve_connection`).
    *conn.tunnel.lock() = Some(task);
    Ok(Response::new(Either::Right(Full::new(Bytes::new()))))
}

/// Serve an opened tunnel by what its first bytes are.
async fn serve<I>(
    mut io: I,
    conn: &ConnCtx,
    state: &Arc<ListenerState>,
    tunnel: Arc<TunnelTarget>,
    authority: &str,
    caller: Caller,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let timeout = state.info.header_timeout;
    let mut first = Vec::with_capacity(4096);
    match tokio::time::timeout(timeout, io.read_buf(&mut first)).await {
        Ok(Ok(n)) if n > 0 => {}
        Ok(_) => return,
        Err(_) => {
            tracing::debug!(%authority, "CONNECT tunnel: nothing sent within header_timeout; closing");
            return;
        }
    }
    let name = &state.shared.router.providers[tunnel.index].config.name;
    match first[0] {
        b'A'..=b'Z' => {
            let io = Rewind::new(first, io);
            let (cell, cancel) = inner_cell(conn, state, tunnel, authority, "http", caller);
            super::listener::serve_connection(io, conn.peer, cell, conn.pool.clone(), cancel).await;
        }
        TLS_HANDSHAKE => match &state.shared.intercept {
            Some(leaves) => {
                let io = Rewind::new(first, io);
                let Some(tls) = handshake(io, leaves, conn, state, &tunnel, name, caller).await
                else {
                    return;
                };
                let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                let (cell, cancel) = inner_cell(conn, state, tunnel, authority, "https", caller);
                let (peer, pool) = (conn.peer, conn.pool.clone());
                if h2 {
                    super::listener::serve_h2_connection(tls, peer, cell, pool, cancel).await;
                } else {
                    super::listener::serve_connection(tls, peer, cell, pool, cancel).await;
                }
            }
            None => tracing::info!(
                %authority,
                provider = %name,
                "CONNECT tunnel carries TLS, and interception is off: closing. Set intercept = \"claimed\" \
                 in [proxy] and trust credproxy's CA, or call http:// URLs through credproxy"
            ),
        },
        _ => tracing::info!(
            %authority,
            provider = %name,
            "CONNECT tunnel begins with neither an HTTP request nor TLS: closing"
        ),
    }
}

/// What the tunnel's requests are served with ([`TunnelView`], over the listener the `CONNECT`
/// came on), and the tunnel's shutdown (the listener's, or the view's when its host is gone).
fn inner_cell(
    conn: &ConnCtx,
    state: &Arc<ListenerState>,
    tunnel: Arc<TunnelTarget>,
    authority: &str,
    scheme: &'static str,
    caller: Caller,
) -> (StateCell, CancellationToken) {
    let closing = conn.cancel.child_token();
    let first = Arc::new(derive(state, &tunnel, authority, scheme, caller));
    let view = TunnelView {
        outer: conn.cell.clone(),
        tunnel,
        authority: authority.to_owned(),
        scheme,
        current: arc_swap::ArcSwap::from_pointee((state.clone(), first)),
        closing: closing.clone(),
    };
    (StateCell::Tunnel(Arc::new(view)), closing)
}

/// A tunnel's view of the listener its `CONNECT` came on: that listener's state, as a listener
/// whose every request is the tunnel's provider's, from the tunnel's caller. Derived again, at
/// the tunnel's next request, when a reload has swapped the listener's state, so the new
/// generation (its rules, its credential) reaches a tunnel already open, as it reaches a
/// kept-alive connection.
pub struct TunnelView {
    outer: StateCell,
    /// As at the `CONNECT`; its provider index is looked up again in each generation.
    tunnel: Arc<TunnelTarget>,
    authority: String,
    scheme: &'static str,
    /// The listener state the view was last derived from, and the view.
    current: arc_swap::ArcSwap<(Arc<ListenerState>, Arc<ListenerState>)>,
    /// The tunnel's shutdown: cancelled when its host or its caller is gone.
    closing: CancellationToken,
}

impl TunnelView {
    /// The state to serve the tunnel's next request with.
    pub fn load_full(&self) -> Arc<ListenerState> {
        let outer = self.outer.load_full();
        let current = self.current.load();
        if Arc::ptr_eq(&current.0, &outer) {
            return current.1.clone();
        }
        self.rederive(outer, &current.1)
    }

    /// A reload came: the view of the new generation, with the tunnel's provider and caller
    /// looked up again (indexes change with the config); or, when no provider claims the
    /// tunnel's host in it, or its named caller is gone, or it was opened without a proof the
    /// new generation asks for (`proxy_auth` or `[callers]` added), the old view for the request
    /// in hand and the tunnel closed after it.
    #[cold]
    fn rederive(&self, outer: Arc<ListenerState>, old: &Arc<ListenerState>) -> Arc<ListenerState> {
        let index = outer.shared.router.by_host(&self.authority);
        let caller = match old.info.caller {
            // Admitted without a proof, where the new generation asks for one: as gone.
            Caller::Anyone if old.shared.gate.is_open() && !outer.shared.gate.is_open() => None,
            Caller::Anyone => Some(Caller::Anyone),
            named => old.shared.gate.name(named).and_then(|name| {
                let i = outer.shared.gate.names().position(|n| n == &**name)?;
                Some(Caller::Named(u16::try_from(i).ok()?))
            }),
        };
        let (Some(index), Some(caller)) = (index, caller) else {
            tracing::info!(
                authority = %self.authority,
                "a reload left no provider claiming this CONNECT tunnel's host, removed its \
                 caller, or now asks for a proof its CONNECT did not give: closing the tunnel"
            );
            self.closing.cancel();
            self.current.store(Arc::new((outer, old.clone())));
            return old.clone();
        };
        let tunnel = if index == self.tunnel.index {
            self.tunnel.clone()
        } else {
            Arc::new(TunnelTarget {
                index,
                host: self.tunnel.host.clone(),
                port: self.tunnel.port,
            })
        };
        let view = Arc::new(derive(
            &outer,
            &tunnel,
            &self.authority,
            self.scheme,
            caller,
        ));
        self.current.store(Arc::new((outer, view.clone())));
        view
    }
}

/// The listener state the tunnel's requests are served with: `state`'s generation, as a
/// listener whose every request is the tunnel's provider's, from `caller`.
fn derive(
    state: &ListenerState,
    tunnel: &Arc<TunnelTarget>,
    authority: &str,
    scheme: &str,
    caller: Caller,
) -> ListenerState {
    let default_port = if scheme == "https" { 443 } else { 80 };
    let origin = if tunnel.port == default_port {
        format!(
            "{scheme}://{}",
            crate::config::host::split_host_port(authority).0
        )
    } else {
        format!("{scheme}://{authority}")
    };
    let info = ListenerInfo {
        role: Role::Tunnel(tunnel.clone()),
        // Checked on the CONNECT, whose caller the tunnel's requests are.
        require_auth: false,
        caller,
        listener: state.info.listener.clone(),
        // The Host check is the tunnel's own (`TunnelTarget::admits`), not the loopback one.
        loopback: false,
        // Where a `Location` pointing at the upstream is rewritten to: the origin the client used.
        local_origin: Some(origin),
        header_timeout: state.info.header_timeout,
    };
    ListenerState {
        shared: state.shared.clone(),
        info,
    }
}

/// Complete the client's TLS handshake with a leaf for the tunnel's host. `None` (and the
/// tunnel closed) when the ClientHello names another host (SNI), or the handshake fails; a client
/// that refuses the certificate is counted, and told about once per host in the log.
async fn handshake<I>(
    io: I,
    leaves: &crate::ca::Leaves,
    conn: &ConnCtx,
    state: &ListenerState,
    tunnel: &TunnelTarget,
    provider: &str,
    caller: Caller,
) -> Option<tokio_rustls::server::TlsStream<I>>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let host = tunnel.host.as_str();
    let timeout = state.info.header_timeout;
    let acceptor = tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), io);
    let start = match tokio::time::timeout(timeout, acceptor).await {
        Ok(Ok(start)) => start,
        Ok(Err(e)) => {
            tracing::debug!(%host, error = %e, "intercepted TLS: no valid ClientHello; closing");
            return None;
        }
        Err(_) => {
            tracing::debug!(%host, "intercepted TLS: no ClientHello within header_timeout; closing");
            return None;
        }
    };
    if let Some(sni) = start.client_hello().server_name()
        && normalize(sni) != host
    {
        // A client that asks for one name in CONNECT and another in TLS is confused or probing:
        // it gets no certificate at all, rather than one for a name it did not ask for.
        tracing::warn!(
            %host,
            sni,
            %provider,
            "intercepted TLS refused: the ClientHello's server name differs from the CONNECT authority"
        );
        intercept_failed(state, tunnel, caller, "sni_mismatch");
        return None;
    }
    // ALPN `h2` only when the upstream speaks HTTP/2 too (DESIGN.md "HTTPS clients"): learnt
    // by connecting to it first, once per upstream (within header_timeout; one that fails is
    // HTTP/1.1 for 30 s); asked only of a client that offers `h2`.
    let offers_h2 = start
        .client_hello()
        .alpn()
        .is_some_and(|mut protocols| protocols.any(|p| p == b"h2"));
    let h2 = offers_h2 && {
        let key = &state.shared.router.providers[tunnel.index].key;
        conn.pool
            .speaks_h2(key, &state.shared.connector, timeout)
            .await
    };
    let config = match leaves.config_for_alpn(host, h2) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(%host, error = %crate::token::error::chain(&e), "intercepted TLS: no certificate for this host; closing");
            return None;
        }
    };
    match tokio::time::timeout(timeout, start.into_stream(config)).await {
        Ok(Ok(tls)) => Some(tls),
        Ok(Err(e)) if refused_our_certificate(&e) => {
            intercept_failed(state, tunnel, caller, "certificate_refused");
            if state.shared.metrics.tls_rejected(provider, host) {
                tracing::warn!(
                    %host,
                    %provider,
                    ca = %leaves.ca().cert_path().display(),
                    "a client refused credproxy's certificate for {host} (it does not trust credproxy's CA). \
                     Trust the CA: credproxy trust install, or use credproxy exec, or call http:// through credproxy"
                );
            }
            None
        }
        Ok(Err(e)) => {
            tracing::debug!(%host, error = %e, "intercepted TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(%host, "intercepted TLS handshake not finished within header_timeout");
            None
        }
    }
}

/// The audit record of a tunnel whose TLS could not be intercepted: `code` says why
/// (`sni_mismatch`, `certificate_refused`); no answer was sent, so no status.
fn intercept_failed(
    state: &ListenerState,
    tunnel: &TunnelTarget,
    caller: Caller,
    code: &'static str,
) {
    let shared = &state.shared;
    let Some(audit) = &shared.audit else { return };
    audit.request(crate::audit::RequestRecord {
        time: jiff::Timestamp::now(),
        request_id: crate::request_id::RequestId::fresh(),
        caller: shared.gate.name(caller).cloned(),
        listener: state.info.listener.clone(),
        provider: shared
            .router
            .providers
            .get(tunnel.index)
            .map(|r| r.name.clone()),
        method: http::Method::CONNECT,
        host: tunnel.host.clone(),
        path: crate::audit::Path::default(),
        decision: crate::audit::Decision::InterceptFailed,
        code: Some(code),
        status: None,
        bytes_in: 0,
        bytes_out: 0,
        duration_ms: 0.0,
        generation: None,
    });
}

/// The client ended the handshake with an alert that means "I don't trust this certificate"
/// (RFC 8446 §6.2: unknown_ca, bad_certificate, certificate_unknown).
fn refused_our_certificate(e: &std::io::Error) -> bool {
    use rustls::AlertDescription as A;
    let Some(rustls::Error::AlertReceived(alert)) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    else {
        return false;
    };
    matches!(
        alert,
        A::UnknownCA | A::BadCertificate | A::CertificateUnknown
    )
}
