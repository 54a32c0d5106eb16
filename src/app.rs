//! Builds credproxy from a [`Config`] and runs it: listeners, refreshers, and shutdown.
//!
//! Every task is spawned from here, with a name (tracing span), an owner (the tracker) and a stop
//! (the cancellation token). Shutdown stops the listeners, lets in-flight requests finish within
//! the grace period, and says whether it ran out.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, UnixListener};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::config::{Config, Listen, RouteTarget};
use crate::credential::{self, CredentialWriter};
use crate::metrics::Metrics;
use crate::proxy::listener::Bound;
use crate::proxy::upstream::{Connector, Pool};
use crate::proxy::{ListenerInfo, ProviderRoute, Role, Router, Shared};

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
    #[error("can't open the token store in {dir}")]
    Store {
        dir: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// A running credproxy.
pub struct Running {
    /// Where each listener is bound: the main one first, then routes in config order.
    pub listeners: Vec<(Role, BoundAddr)>,
    pub admin: Option<BoundAddr>,
    pub shared: Arc<Shared>,
    cancel: CancellationToken,
    tracker: TaskTracker,
    background: TaskTracker,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BoundAddr {
    Tcp(SocketAddr),
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
    pub fn tcp(&self) -> Option<SocketAddr> {
        match self {
            BoundAddr::Tcp(a) => Some(*a),
            BoundAddr::Unix(_) => None,
        }
    }
}

impl Running {
    pub fn main_addr(&self) -> &BoundAddr {
        &self.listeners[0].1
    }

    /// The address of the route listener for `provider`.
    pub fn route_addr(&self, provider: &str) -> Option<&BoundAddr> {
        let index = self.shared.router.index_of(provider)?;
        self.listeners
            .iter()
            .find(|(r, _)| *r == Role::Route(index))
            .map(|(_, a)| a)
    }

    pub fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
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
        drained
    }
}

/// Start everything the config describes.
pub async fn start(config: Config) -> Result<Running, AppError> {
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let background = TaskTracker::new();
    let p = &config.proxy;

    let roots = crate::tls::roots(p.ca_file.as_deref())?;
    let upstream_tls = crate::tls::client_config(roots.clone(), &[b"h2", b"http/1.1"])?;
    let roots_for_tokens = roots;

    let mut routes = Vec::new();
    let mut writers: Vec<(Arc<crate::config::ProviderConfig>, CredentialWriter)> = Vec::new();
    for provider in &config.providers {
        let (writer, reader) = credential::channel();
        routes.push(ProviderRoute {
            config: provider.clone(),
            reader,
        });
        writers.push((provider.clone(), writer));
    }
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
    let router = Router::new(routes, prefixes, p.unknown_hosts);
    // Per-provider metric handles, indexed like the router's providers.
    let metrics = Arc::new(Metrics::new(
        &config.providers.iter().map(|p| &p.name).collect::<Vec<_>>(),
    ));
    let shared = Arc::new(Shared {
        metrics: metrics.clone(),
        router,
        pool: Pool::new(POOL_IDLE_TIMEOUT),
        connector: Connector::new(upstream_tls, p.connect_timeout),
        response_timeout: p.response_timeout,
        proxy_auth: p.proxy_auth.clone(),
    });

    // Bind everything before serving anything: a port in use fails the start, not half of it.
    let mut bound = Vec::new();
    bound.push((Role::Main, true, bind(&p.listen, p.socket_mode).await?));
    for r in &config.routes {
        if let RouteTarget::Listen(listen) = &r.target {
            let index = shared.router.index_of(&r.provider).expect("validated");
            bound.push((
                Role::Route(index),
                r.require_auth,
                bind(listen, p.socket_mode).await?,
            ));
        }
    }

    // The admin listener: an explicit `admin_listen` must bind; the default is best effort, so a
    // second credproxy on the same machine still starts (without its own admin endpoints).
    let admin_bound = match &p.admin_listen {
        Some(listen) => Some(bind(listen, p.socket_mode).await?),
        None => match bind(&Listen::Tcp(crate::admin::DEFAULT_LISTEN), p.socket_mode).await {
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

    // Token refreshes are counted in credproxy_token_refresh_total.
    let observer = metrics.refresh_observer();
    start_credentials(
        writers,
        &config,
        roots_for_tokens,
        observer,
        &cancel,
        &background,
    )
    .await?;

    let limit = Arc::new(Semaphore::new(p.max_connections));
    let mut listeners = Vec::new();
    for (role, require_auth, (listener, addr)) in bound {
        let loopback = match &addr {
            BoundAddr::Tcp(a) => a.ip().is_loopback(),
            BoundAddr::Unix(_) => false,
        };
        let info = Arc::new(ListenerInfo {
            role: role.clone(),
            require_auth,
            loopback,
            local_origin: addr.tcp().map(|a| format!("http://{a}")),
            header_timeout: p.header_timeout,
        });
        tracing::info!(listen = %addr, role = ?role, "listening");
        let span = tracing::info_span!("listener", addr = %addr);
        tracker.spawn(
            crate::proxy::serve(
                listener,
                shared.clone(),
                info,
                limit.clone(),
                cancel.clone(),
                tracker.clone(),
            )
            .instrument(span),
        );
        listeners.push((role, addr));
    }

    let admin = admin_bound.map(|(listener, addr)| {
        let providers = shared
            .router
            .providers
            .iter()
            .map(|r| (r.config.clone(), r.reader.clone()))
            .collect();
        let state = Arc::new(crate::admin::AdminState::new(providers, metrics.clone()));
        tracing::info!(listen = %addr, "admin listening");
        let span = tracing::info_span!("admin", addr = %addr);
        background.spawn(crate::admin::serve(listener, state, cancel.clone()).instrument(span));
        addr
    });

    // Park-pool eviction: idle upstream connections are closed after POOL_IDLE_TIMEOUT.
    background.spawn({
        let shared = shared.clone();
        let cancel = cancel.clone();
        async move {
            let mut tick = tokio::time::interval(POOL_IDLE_TIMEOUT / 3);
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tick.tick() => { shared.pool.evict_idle(); }
                }
            }
        }
    });

    Ok(Running {
        listeners,
        admin,
        shared,
        cancel,
        tracker,
        background,
    })
}

/// One refresher per provider: the only writer of its credential.
async fn start_credentials(
    writers: Vec<(Arc<crate::config::ProviderConfig>, CredentialWriter)>,
    config: &Config,
    roots: rustls::RootCertStore,
    observer: crate::token::Observer,
    cancel: &CancellationToken,
    background: &TaskTracker,
) -> Result<(), AppError> {
    let dir = config.proxy.state_dir.clone();
    let store_err = |source: Box<dyn std::error::Error + Send + Sync>| AppError::Store {
        dir: dir.display().to_string(),
        source,
    };
    // The store is opened (and its directory created 0700) before anything is served.
    let store: Arc<dyn crate::token::TokenStore> =
        Arc::new(crate::token::FileStore::open(&dir).map_err(|e| store_err(Box::new(e)))?);
    let client = crate::token::TokenHttp::new(roots).map_err(|e| store_err(Box::new(e)))?;
    let clock = crate::clock::Clock::new();
    for (provider, writer) in writers {
        let ctx =
            crate::token::EngineContext::new(client.clone(), store.clone(), clock, cancel.clone())
                .with_observer(observer.clone());
        background.spawn(crate::token::run(provider, writer, ctx));
    }
    Ok(())
}

async fn bind(listen: &Listen, socket_mode: u32) -> Result<(Bound, BoundAddr), AppError> {
    match listen {
        Listen::Tcp(addr) => {
            let l = TcpListener::bind(addr)
                .await
                .map_err(|source| AppError::Bind {
                    addr: addr.to_string(),
                    source,
                })?;
            let local = l.local_addr().map_err(|source| AppError::Bind {
                addr: addr.to_string(),
                source,
            })?;
            Ok((Bound::Tcp(l), BoundAddr::Tcp(local)))
        }
        Listen::Unix(path) => {
            let err = |source| AppError::Bind {
                addr: format!("unix:{}", path.display()),
                source,
            };
            // A stale socket from a previous run is replaced; anything else at the path is not.
            if let Ok(meta) = std::fs::symlink_metadata(path) {
                use std::os::unix::fs::FileTypeExt;
                if meta.file_type().is_socket() {
                    if std::os::unix::net::UnixStream::connect(path).is_ok() {
                        return Err(err(std::io::Error::new(
                            std::io::ErrorKind::AddrInUse,
                            "another process is serving on this socket",
                        )));
                    }
                    std::fs::remove_file(path).map_err(err)?;
                } else {
                    return Err(err(std::io::Error::new(
                        std::io::ErrorKind::AlreadyExists,
                        "the path exists and is not a socket",
                    )));
                }
            }
            let l = UnixListener::bind(path).map_err(err)?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(socket_mode))
                .map_err(err)?;
            Ok((Bound::Unix(l, path.clone()), BoundAddr::Unix(path.clone())))
        }
    }
}
