//! What a request is served with: the config generation a listener serves ([`Shared`],
//! [`ListenerInfo`], swapped as one [`ListenerState`] by a reload) and the per-connection context
//! ([`ConnCtx`]). Both transports (`fast.rs`, `service.rs`) and the listener read these; this
//! module imports neither of them.

use std::sync::Arc;
use std::time::Duration;

use super::auth::{Caller, Gate};
use super::route::{Role, Router};
use super::upstream::{Connector, LocalSlot, Pool};

/// Everything the request path needs, shared by all connections.
pub struct Shared {
    pub router: Router,
    pub connector: Connector,
    pub response_timeout: Duration,
    /// How long a request body may send nothing (408).
    pub client_body_timeout: Duration,
    /// Special addresses pass-through may reach anyway (`checks::destination_allowed`).
    pub pass_private: Vec<crate::net::Cidr>,
    /// `Via` on upstream requests too (`[proxy] via = true`). Off by default: nginx, for one,
    /// does not compress for a request that came through a proxy (`gzip_proxied off`).
    pub via: bool,
    /// `proxy_auth` and `[callers]`, as digests (the secrets are not kept on the request path).
    pub gate: Gate,
    /// The audit log (`[proxy] audit_log`), when on.
    pub audit: Option<Arc<crate::audit::Audit>>,
    /// Request metrics, with handles indexed like `router.providers`.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// With `intercept = "claimed"`: the leaf certificates TLS in a `CONNECT` tunnel to a
    /// claimed host is terminated with (`tunnel.rs`).
    pub intercept: Option<Arc<crate::ca::Leaves>>,
    /// Downstream HTTP/2's limits (`h2.rs`).
    pub h2: crate::config::H2Limits,
}

/// What a listener is, as requests see it.
#[derive(Debug, Clone)]
pub struct ListenerInfo {
    pub role: Role,
    /// Whether `proxy_auth` and `[callers]` apply here (`require_auth = false` opts a route out;
    /// a `CONNECT` tunnel's requests were admitted on the `CONNECT`).
    pub require_auth: bool,
    /// Who the requests are from where `require_auth` is false: the caller admitted on a
    /// tunnel's `CONNECT`, else [`Caller::Anyone`].
    pub caller: Caller,
    /// The listener's address as bound, for the audit log.
    pub listener: Arc<str>,
    /// Bound to a loopback address (the DNS-rebinding `Host` check applies).
    pub loopback: bool,
    /// `http://127.0.0.1:7001`: where a rewritten `Location` points.
    pub local_origin: Option<String>,
    pub header_timeout: Duration,
}

/// What a listener serves with; swapped as a whole by a reload (SIGHUP), so a request sees one
/// consistent generation of the config from start to end.
pub struct ListenerState {
    pub shared: Arc<Shared>,
    pub info: ListenerInfo,
}

/// A listener's current [`ListenerState`].
pub type ListenerCell = arc_swap::ArcSwap<ListenerState>;

/// Where a connection finds the state each of its requests is served with (loaded once per
/// request, so a reload reaches a kept-alive connection's next request).
#[derive(Clone)]
pub enum StateCell {
    /// A listener's cell, which a reload swaps.
    Listener(Arc<ListenerCell>),
    /// A `CONNECT` tunnel's view of the listener it was opened on, derived again after a
    /// reload (`tunnel.rs`).
    Tunnel(Arc<super::tunnel::TunnelView>),
}

impl StateCell {
    /// The state to serve a request with now.
    #[inline]
    pub fn load_full(&self) -> Arc<ListenerState> {
        match self {
            StateCell::Listener(cell) => cell.load_full(),
            StateCell::Tunnel(view) => view.load_full(),
        }
    }
}

impl From<Arc<ListenerCell>> for StateCell {
    fn from(cell: Arc<ListenerCell>) -> StateCell {
        StateCell::Listener(cell)
    }
}

/// Per-connection state handed to each request.
pub struct ConnCtx {
    pub cell: StateCell,
    /// This worker's pool of parked upstream connections.
    pub pool: Arc<Pool>,
    /// The client's address (TCP), for providers that ask for `Forwarded`.
    pub peer: Option<std::net::IpAddr>,
    pub slot: LocalSlot,
    /// The listener's shutdown, for connections served inside this one (`CONNECT` tunnels).
    pub cancel: tokio_util::sync::CancellationToken,
    /// The tunnel this connection became: a `CONNECT` served inside it (`tunnel.rs`), one passed
    /// to an unclaimed host or a WebSocket relay (`upgrade::start`). The connection's task waits
    /// for it, so the tunnel keeps the connection's slots (`limits.rs`) and shutdown's tracker
    /// waits for it too.
    pub tunnel: parking_lot::Mutex<Option<tokio::task::JoinHandle<()>>>,
}
