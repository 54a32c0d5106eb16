//! Builds credproxy from a [`Config`] and runs it: listeners, refreshers, reload and shutdown.
//!
//! Every task is spawned from here, with a name (tracing span), an owner (a tracker) and a stop
//! (a cancellation token). Shutdown stops the listeners, lets in-flight requests finish within
//! the grace period, and says whether it ran out. A reload ([`Running::reload`], on SIGHUP) swaps
//! in a new generation of the request path's state: providers whose settings did not change keep
//! their refresher (token and schedule), changed or new ones start fresh, removed ones stop;
//! listeners are opened and closed as needed; requests in flight finish on the generation they
//! started with.

mod bind;
mod reload;
mod workers;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::config::{Config, Listen, ProviderConfig, ProxySettings, RouteTarget};
use crate::credential::{self, CredentialReader};
use crate::metrics::Metrics;
use crate::proxy::limits::ConnLimits;
use crate::proxy::state::{ListenerCell, ListenerState};
use crate::proxy::upstream::Connector;
use crate::proxy::{ListenerInfo, ProviderRoute, Role, Router, Shared};
pub use reload::ReloadSummary;
use workers::Workers;

/// Idle upstream connections parked between downstream connections live this long.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("can't listen on {addr}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS setup failed")]
    Tls(#[from] crate::tls::TlsError),
    #[error("can't open the token store at {dir}")]
    Store {
        dir: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("can't build the token endpoints' HTTP client")]
    TokenClient(#[source] crate::token::HttpError),
    #[error("can't start the worker threads")]
    Workers(#[source] std::io::Error),
    #[error("can't set up the local CA for interception")]
    Ca(#[from] crate::ca::CaError),
    #[error("can't start the audit log")]
    Audit(#[from] crate::audit::OpenError),
}

/// How to run (beside what the config says).
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Worker threads for connections; 0 runs them on the caller's runtime.
    pub workers: usize,
    /// The token engine's clock; `None`: on the system's wall clock. Tests pass one whose wall
    /// clock they jump, as a resume from suspend would.
    pub clock: Option<crate::clock::Clock>,
    /// No admin listener unless the config names one: `exec` and `doctor` run beside a
    /// `credproxy run` whose default admin address they must not take.
    pub no_default_admin: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BoundAddr {
    Tcp(std::net::SocketAddr),
    Unix(std::path::PathBuf),
}

impl std::fmt::Display for BoundAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BoundAddr::Tcp(a) => write!(f, "{a}"),
            BoundAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

impl BoundAddr {
    pub fn tcp(&self) -> Option<std::net::SocketAddr> {
        match self {
            BoundAddr::Tcp(a) => Some(*a),
            BoundAddr::Unix(_) => None,
        }
    }
}

/// A provider's refresher: the only writer of its credential.
struct ProviderTask {
    config: Arc<ProviderConfig>,
    reader: CredentialReader,
    cancel: CancellationToken,
}

/// One configured listener (bound once per worker for TCP).
struct ListenerEntry {
    listen: Listen,
    /// `None` for the main listener, else the route's provider.
    provider: Option<String>,
    require_auth: bool,
    addr: BoundAddr,
    /// One cell per worker serving this listener.
    cells: Vec<Arc<ListenerCell>>,
    cancel: CancellationToken,
}

/// What the token engine needs to start a refresher.
struct EngineDeps {
    client: crate::token::TokenHttp,
    store: Arc<dyn crate::token::TokenStore>,
    clock: crate::clock::Clock,
    observer: crate::token::Observer,
    /// Token events, to the audit log (when on).
    events: Option<crate::token::Events>,
}

struct State {
    proxy: ProxySettings,
    /// The `[store]` the token store was opened with (a change needs a restart).
    store: crate::config::StoreSettings,
    providers: Vec<ProviderTask>,
    listeners: Vec<ListenerEntry>,
    shared: Arc<Shared>,
    engine: EngineDeps,
    limit: Arc<ConnLimits>,
    /// The audit log, for the life of the process (a reload reopens it).
    audit: Option<Arc<crate::audit::Audit>>,
    /// Stops this generation's keepers of caller secrets (`{ file = }` followed).
    callers_cancel: CancellationToken,
    /// Stops the keeper of `proxy_auth`, when it changes (a reload starts the new config's).
    proxy_auth_keeper: Option<CancellationToken>,
}

/// A running credproxy.
pub struct Running {
    pub admin: Option<BoundAddr>,
    state: parking_lot::Mutex<State>,
    admin_state: Option<Arc<crate::admin::AdminState>>,
    metrics: Arc<Metrics>,
    workers: Workers,
    /// Stops everything: accept loops, refreshers, admin.
    cancel: CancellationToken,
    /// Accept loops and connections.
    tracker: TaskTracker,
    /// Refreshers, admin, pool eviction.
    background: TaskTracker,
}

impl Running {
    /// The main listener's address.
    pub fn main_addr(&self) -> BoundAddr {
        let st = self.state.lock();
        st.listeners
            .iter()
            .find(|l| l.provider.is_none())
            .map(|l| l.addr.clone())
            .expect("there is always a main listener")
    }

    /// The address of the route listener for `provider`.
    pub fn route_addr(&self, provider: &str) -> Option<BoundAddr> {
        let st = self.state.lock();
        st.listeners
            .iter()
            .find(|l| l.provider.as_deref() == Some(provider))
            .map(|l| l.addr.clone())
    }

    /// The audit log, when `audit_log` is set.
    pub fn audit(&self) -> Option<Arc<crate::audit::Audit>> {
        self.state.lock().audit.clone()
    }

    /// Reopen the audit log at its path (log rotation: SIGHUP does this before the reload).
    pub fn reopen_audit(&self) {
        if let Some(audit) = self.audit() {
            audit.reopen(audit.target());
        }
    }

    /// The request path's current state (providers, readers, settings).
    pub fn shared(&self) -> Arc<Shared> {
        self.state.lock().shared.clone()
    }

    /// The current snapshot of `provider`'s credential.
    pub fn snapshot(&self, provider: &str) -> Option<credential::Snapshot> {
        let st = self.state.lock();
        st.providers
            .iter()
            .find(|p| p.config.name == provider)
            .map(|p| p.reader.snapshot())
    }

    /// Stop accepting, let in-flight requests finish within `grace`. Returns whether all
    /// connections finished in time.
    pub async fn shutdown(self, grace: Duration) -> bool {
        self.cancel.cancel();
        self.tracker.close();
        self.background.close();
        let drained = tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_ok();
        if !drained {
            tracing::warn!(
                ?grace,
                "shutdown grace period ran out with requests still in flight"
            );
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), self.background.wait()).await;
        // The drained requests' audit records are queued: written out before the process ends
        // (bounded, as a stuck disk must not hold the exit).
        if let Some(audit) = self.audit()
            && tokio::time::timeout(Duration::from_secs(1), audit.flush())
                .await
                .is_err()
        {
            tracing::warn!(
                "the audit log was not flushed within 1s at shutdown; its last records may be lost"
            );
        }
        self.workers.stop();
        drained
    }

    /// Serve a bound listener on the workers (one socket each), on `st`'s generation.
    fn serve_listener(
        &self,
        st: &State,
        listen: Listen,
        provider: Option<String>,
        require_auth: bool,
        bound: Vec<crate::net::Bound>,
        addr: BoundAddr,
    ) -> ListenerEntry {
        let cancel = self.cancel.child_token();
        let mut entry = ListenerEntry {
            listen,
            provider,
            require_auth,
            addr: addr.clone(),
            cells: Vec::new(),
            cancel: cancel.clone(),
        };
        let state = listener_state(&st.shared, &st.proxy, &entry);
        tracing::info!(listen = %addr, role = ?state.info.role, "listening");
        for (worker, socket) in bound.into_iter().enumerate() {
            let cell = Arc::new(ArcSwap::new(state.clone()));
            entry.cells.push(cell.clone());
            let span = tracing::info_span!("listener", addr = %addr);
            let fut = crate::proxy::serve(
                socket,
                cell,
                self.workers.pools[worker].clone(),
                st.limit.clone(),
                cancel.clone(),
                self.tracker.clone(),
            )
            .instrument(span);
            let fut = self.tracker.track_future(fut);
            self.workers.spawn(worker, fut);
        }
        entry
    }
}

/// Start everything the config describes, on the caller's runtime.
pub async fn start(config: Config) -> Result<Running, AppError> {
    start_with(config, Options::default()).await
}

/// Start everything the config describes.
pub async fn start_with(config: Config, options: Options) -> Result<Running, AppError> {
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let background = TaskTracker::new();
    let p = &config.proxy;

    bind::raise_fd_limit();
    let roots = crate::tls::roots(p.ca_file.as_deref())?;
    let upstream_tls = crate::tls::client_config(roots.clone(), &[b"h2", b"http/1.1"])?;
    let workers = Workers::start(options.workers).map_err(AppError::Workers)?;

    // Bind everything before serving anything: a port in use fails the start, not half of it.
    let mut binds = Vec::new();
    for (listen, provider, require_auth) in listener_plan(&config) {
        let bound = bind::bind(&listen, sockets_for(&listen, &workers), p.socket_mode, true)?;
        binds.push((listen, provider, require_auth, bound));
    }
    // The admin listener: an explicit `admin_listen` must bind; the default is best effort, so a
    // second credproxy on the same machine still starts (without its own admin endpoints).
    let admin_bound = match &p.admin_listen {
        Some(listen) => Some(bind::bind(listen, 1, p.socket_mode, true)?),
        None if options.no_default_admin => None,
        None => match bind::bind(
            &Listen::Tcp(crate::admin::DEFAULT_LISTEN),
            1,
            p.socket_mode,
            true,
        ) {
            Ok(b) => Some(b),
            Err(e) => {
                let cause = std::error::Error::source(&e).map(|c| c.to_string());
                tracing::warn!(
                    addr = %crate::admin::DEFAULT_LISTEN,
                    error = cause.as_deref().unwrap_or("?"),
                    "no admin listener: the default address is taken (set proxy.admin_listen)"
                );
                None
            }
        },
    };

    // The metrics come first: the token store counts into them.
    let metrics = Arc::new(Metrics::new(
        &config.providers.iter().map(|p| &p.name).collect::<Vec<_>>(),
    ));
    // The token store is opened (its directory created 0700) before anything is served.
    let store = crate::token::store::open(p, &config.store, {
        let metrics = metrics.clone();
        Arc::new(move |provider, event| metrics.token_uncommitted(provider, event.as_str()))
    })
    .map_err(|e| AppError::Store {
        dir: crate::token::store::describe(p, &config.store),
        source: Box::new(e),
    })?;
    let client = crate::token::TokenHttp::new(roots).map_err(AppError::TokenClient)?;
    let audit = match &p.audit_log {
        Some(target) => Some(crate::audit::Audit::start(
            target.clone(),
            crate::audit::QUEUE,
            metrics.audit_dropped(),
        )?),
        None => None,
    };
    let engine = EngineDeps {
        client,
        store,
        clock: options.clock.unwrap_or_default(),
        // Token refreshes are counted in credproxy_token_refresh_total.
        observer: {
            let metrics = metrics.clone();
            Arc::new(move |provider, result| metrics.token_refresh(provider, result))
        },
        events: audit.clone().map(|audit| -> crate::token::Events {
            Arc::new(move |provider, event, generation| audit.token(provider, event, generation))
        }),
    };
    let providers: Vec<ProviderTask> = config
        .providers
        .iter()
        .map(|cfg| start_provider(cfg.clone(), &engine, &cancel, &background))
        .collect();
    let intercept = intercept_leaves(&config)?;
    let shared = build_shared(
        &config,
        &providers,
        &metrics,
        upstream_tls,
        intercept,
        audit.clone(),
    );
    let callers_cancel = cancel.child_token();
    keep_callers(&config, &callers_cancel, &background);
    let proxy_auth_keeper = keep_proxy_auth(p, &cancel, &background);
    let limit = ConnLimits::new(p.max_connections, p.max_connections_per_client);

    let (admin, admin_state) = match admin_bound {
        Some((mut sockets, addr)) => {
            let state = Arc::new(
                crate::admin::AdminState::new(admin_providers(&shared), metrics.clone())
                    .with_store(engine.store.clone())
                    .with_audit(audit.clone()),
            );
            state.set_routes(&config.routes);
            state.set_callers(&config.callers);
            state.set_proxy_auth(config.proxy.proxy_auth.as_ref());
            tracing::info!(listen = %addr, "admin listening");
            let span = tracing::info_span!("admin", addr = %addr);
            let socket = sockets.remove(0);
            background
                .spawn(crate::admin::serve(socket, state.clone(), cancel.clone()).instrument(span));
            (Some(addr), Some(state))
        }
        None => (None, None),
    };

    // Park-pool eviction: idle upstream connections are closed after POOL_IDLE_TIMEOUT.
    background.spawn({
        let pools = workers.pools.clone();
        let cancel = cancel.clone();
        async move {
            let mut tick = tokio::time::interval(POOL_IDLE_TIMEOUT / 3);
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tick.tick() => for pool in &pools { pool.evict_idle(); },
                }
            }
        }
    });

    let running = Running {
        admin,
        state: parking_lot::Mutex::new(State {
            proxy: config.proxy.clone(),
            store: config.store.clone(),
            providers,
            listeners: Vec::new(),
            shared,
            engine,
            limit,
            audit,
            callers_cancel,
            proxy_auth_keeper,
        }),
        admin_state,
        metrics,
        workers,
        cancel,
        tracker,
        background,
    };
    let mut st = running.state.lock();
    let listeners = binds
        .into_iter()
        .map(|(listen, provider, require_auth, (bound, addr))| {
            running.serve_listener(&st, listen, provider, require_auth, bound, addr)
        })
        .collect();
    st.listeners = listeners;
    drop(st);
    Ok(running)
}

/// The listeners a config asks for: `(listen, route provider, require_auth)`, main first.
fn listener_plan(config: &Config) -> Vec<(Listen, Option<String>, bool)> {
    let mut plan = vec![(config.proxy.listen.clone(), None, true)];
    for r in &config.routes {
        if let RouteTarget::Listen(listen) = &r.target {
            plan.push((listen.clone(), Some(r.provider.clone()), r.require_auth));
        }
    }
    plan
}

/// How many sockets `listen` is bound as: one per worker for TCP, a single one for a unix socket.
fn sockets_for(listen: &Listen, workers: &Workers) -> usize {
    match listen {
        Listen::Tcp(_) => workers.len(),
        Listen::Unix(_) => 1,
    }
}

fn start_provider(
    config: Arc<ProviderConfig>,
    engine: &EngineDeps,
    cancel: &CancellationToken,
    background: &TaskTracker,
) -> ProviderTask {
    let (writer, reader) = credential::channel();
    let cancel = cancel.child_token();
    let ctx = crate::token::EngineContext::new(
        engine.client.clone(),
        engine.store.clone(),
        engine.clock,
        cancel.clone(),
    )
    .with_observer(engine.observer.clone())
    .with_events(engine.events.clone());
    background.spawn(crate::token::run(config.clone(), writer, ctx));
    ProviderTask {
        config,
        reader,
        cancel,
    }
}

/// The keeper of `[proxy] proxy_auth` when it can change (a file credproxy follows, a command
/// it re-runs), so a rotated secret is required without a restart; stopped by the returned
/// token. Requests see each new value through [`crate::proxy::auth::ProxyAuth`].
fn keep_proxy_auth(
    proxy: &ProxySettings,
    cancel: &CancellationToken,
    background: &TaskTracker,
) -> Option<CancellationToken> {
    let live = proxy.proxy_auth.as_ref().filter(|l| l.changes())?.clone();
    let stop = cancel.child_token();
    let span = tracing::info_span!("secret", key = %live.key());
    background.spawn(
        {
            let stop = stop.clone();
            async move {
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = live.keep() => {}
                }
            }
        }
        .instrument(span),
    );
    Some(stop)
}

/// One generation of the request path's state.
fn build_shared(
    config: &Config,
    providers: &[ProviderTask],
    metrics: &Arc<Metrics>,
    upstream_tls: Arc<rustls::ClientConfig>,
    intercept: Option<Arc<crate::ca::Leaves>>,
    audit: Option<Arc<crate::audit::Audit>>,
) -> Arc<Shared> {
    let routes: Vec<ProviderRoute> = providers
        .iter()
        .map(|t| ProviderRoute::new(t.config.clone(), t.reader.clone()))
        .collect();
    let prefixes = config
        .routes
        .iter()
        .filter_map(|r| match &r.target {
            RouteTarget::PathPrefix(prefix) => routes
                .iter()
                .position(|p| p.config.name == r.provider)
                .map(|i| (prefix.clone(), i)),
            RouteTarget::Listen(_) => None,
        })
        .collect();
    let names: Vec<&String> = providers.iter().map(|t| &t.config.name).collect();
    let callers = config
        .callers
        .iter()
        .map(|c| {
            let allowed = c
                .providers
                .iter()
                .filter_map(|p| names.iter().position(|n| *n == p))
                .collect();
            let secret = crate::proxy::auth::ProxyAuth::live(&c.secret);
            (c.name.clone(), secret, allowed)
        })
        .collect();
    let gate = crate::proxy::auth::Gate::new(
        config
            .proxy
            .proxy_auth
            .as_ref()
            .map(crate::proxy::auth::ProxyAuth::live),
        callers,
        names.len(),
    );
    Arc::new(Shared {
        // Per-provider metric handles, indexed like the router's providers; the counters
        // themselves carry on across reloads.
        metrics: Arc::new(metrics.for_providers(&names)),
        router: Router::new(routes, prefixes, config.proxy.unknown_hosts),
        connector: Connector::new(upstream_tls, config.proxy.connect_timeout),
        response_timeout: config.proxy.response_timeout,
        client_body_timeout: config.proxy.client_body_timeout,
        pass_private: config.proxy.pass_private.clone(),
        via: config.proxy.via,
        gate,
        audit,
        intercept,
        h2: config.proxy.h2,
    })
}

/// Keep each `{ file = }` (or re-run `{ command, ttl }`) caller secret current, as
/// [`keep_proxy_auth`] does `proxy_auth`'s: the gate's digest follows the secret's version, so a
/// rotated secret admits without a restart. Stopped by `cancel` (a reload starts the next
/// generation's).
fn keep_callers(config: &Config, cancel: &CancellationToken, background: &TaskTracker) {
    for c in config.callers.iter().filter(|c| c.secret.changes()) {
        let secret = c.secret.clone();
        let cancel = cancel.clone();
        let span = tracing::info_span!("secret", key = %secret.key());
        background.spawn(
            async move {
                tokio::select! {
                    _ = cancel.cancelled() => {}
                    _ = secret.keep() => {}
                }
            }
            .instrument(span),
        );
    }
}

/// Where the local CA lives: `state_dir/ca`.
pub fn ca_dir(config: &Config) -> std::path::PathBuf {
    config.proxy.state_dir.join("ca")
}

/// The name subtrees of every claimed host: what a CA made with `ca_name_constraints = true`
/// permits.
pub fn claimed_subtrees(config: &Config) -> Vec<String> {
    config
        .providers
        .iter()
        .flat_map(|p| &p.hosts)
        .map(|h| h.subtree().to_owned())
        .collect()
}

/// The local CA for `config`, made when there is none (constrained as the config says).
pub fn open_ca(config: &Config) -> Result<crate::ca::LocalCa, crate::ca::CaError> {
    let subtrees = claimed_subtrees(config);
    let constrain = config.proxy.ca_name_constraints.then_some(&subtrees[..]);
    crate::ca::LocalCa::open(&ca_dir(config), constrain)
}

/// With `intercept = "claimed"`: the local CA (made on first need, `state_dir/ca/`) and this
/// generation's leaves, the exact claimed hosts' minted now. Says at start which claimed hosts a
/// name-constrained CA can't sign for (they need a new CA).
fn intercept_leaves(config: &Config) -> Result<Option<Arc<crate::ca::Leaves>>, AppError> {
    if config.proxy.intercept != crate::config::Intercept::Claimed {
        return Ok(None);
    }
    let hosts: Vec<&crate::config::host::HostPattern> =
        config.providers.iter().flat_map(|p| &p.hosts).collect();
    let subtrees = claimed_subtrees(config);
    let dir = ca_dir(config);
    let constrain = config.proxy.ca_name_constraints.then_some(&subtrees[..]);
    let ca = Arc::new(crate::ca::LocalCa::open(&dir, constrain)?);
    // The file `credproxy env` and `exec` point clients at, kept in step with the CA.
    if let Err(e) = crate::ca::bundle::ensure(&ca) {
        tracing::warn!(
            error = %crate::token::error::chain(&e),
            "can't update the CA bundle (clients pointed at it may not trust credproxy's CA)"
        );
    }
    let uncovered = ca.uncovered(subtrees.iter().map(String::as_str));
    if !uncovered.is_empty() {
        tracing::warn!(
            hosts = ?uncovered,
            dir = %dir.display(),
            "the local CA's name constraints don't cover these claimed hosts, so clients will refuse \
             intercepted TLS to them: remove the CA directory and restart to make a CA for the hosts \
             claimed now, then trust the new ca.pem"
        );
    }
    if config.proxy.ca_name_constraints && ca.permitted().is_none() {
        tracing::warn!(
            dir = %dir.display(),
            "ca_name_constraints = true, but the local CA was made without constraints: remove the CA \
             directory and restart to make a constrained one, then trust the new ca.pem"
        );
    }
    let exact = hosts
        .iter()
        .filter_map(|h| h.concrete().map(|(name, _)| name));
    Ok(Some(Arc::new(crate::ca::Leaves::new(ca, exact)?)))
}

fn listener_state(
    shared: &Arc<Shared>,
    proxy: &ProxySettings,
    entry: &ListenerEntry,
) -> Arc<ListenerState> {
    let role = match &entry.provider {
        None => Role::Main,
        Some(name) => Role::Route(
            shared
                .router
                .index_of(name)
                .expect("routes name configured providers"),
        ),
    };
    let loopback = match &entry.addr {
        BoundAddr::Tcp(a) => a.ip().is_loopback(),
        BoundAddr::Unix(_) => false,
    };
    Arc::new(ListenerState {
        shared: shared.clone(),
        info: ListenerInfo {
            role,
            // proxy_auth guards TCP listeners; a unix socket is guarded by its file mode.
            require_auth: entry.require_auth && matches!(entry.addr, BoundAddr::Tcp(_)),
            caller: crate::proxy::auth::Caller::Anyone,
            listener: entry.addr.to_string().into(),
            loopback,
            local_origin: entry.addr.tcp().map(|a| format!("http://{a}")),
            header_timeout: proxy.header_timeout,
        },
    })
}

fn admin_providers(shared: &Shared) -> Vec<(Arc<ProviderConfig>, CredentialReader)> {
    shared
        .router
        .providers
        .iter()
        .map(|r| (r.config.clone(), r.reader.clone()))
        .collect()
}
