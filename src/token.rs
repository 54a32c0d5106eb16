//! The token engine: obtains, refreshes and keeps each provider's token.
//!
//! One refresher task per provider ([`spawn`] / [`run`]) is the only writer of that provider's
//! credential (`crate::credential`); the proxy only reads. The refresher reuses a stored token at
//! start without a network call, refreshes ahead of expiry on a jittered schedule, survives a
//! flaky token server by serving the current token while it is valid, and coordinates with other
//! credproxy processes through the token store's lock so a rotating refresh token is never spent
//! twice. The CLI's one-shot needs (`credproxy token`, `login`, `logout`) are in [`oneshot`].
//!
//! Layout, from the wire up:
//! - [`http`]: the strict HTTP client (no redirects, timeout, 1 MiB cap);
//! - [`request`] / [`reply`] / [`expiry`]: token request dialects and reply parsing (pure);
//! - [`oauth`]: calls to an OAuth 2.0 server; `baselime` and `blendvision`: the seed quirks;
//! - `source`: what a provider does to get a new token; [`schedule`]: when (pure);
//! - `persist`: the store under its lock; `refresher`: the loop.

pub mod store;

mod baselime;
mod blendvision;
pub mod error;
pub mod expiry;
pub mod http;
pub mod oauth;
pub mod oneshot;
mod persist;
mod refresher;
pub mod reply;
pub mod request;
pub mod schedule;
mod source;

use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::clock::Clock;
use crate::config::ProviderConfig;
use crate::credential::CredentialWriter;

pub use error::{Fault, TokenError};
pub use http::{HttpError, TokenHttp};
pub use oauth::{authorize_url, exchange_code, pkce_challenge, pkce_pair, random_state};
pub use oneshot::{LogoutOutcome, login_with_code, login_with_password, logout, obtain_once};
pub use refresher::{CONFIG_RETRY, LOGIN_POLL, MIN_LEARNED_LIFETIME};
pub use store::{FileStore, MemoryStore, StoredToken, TokenStore};

/// Called after every refresh attempt with the provider name and a low-cardinality result:
/// `ok` (a new token from the network), `extended` (same token, new expiry), `adopted` (a token
/// from the store: reused at start, or one another process refreshed or a login stored),
/// `transient_error`, `config_error`, `login_required`. Called after the new snapshot is
/// published.
pub type Observer = Arc<dyn Fn(&str, &'static str) + Send + Sync>;

/// Called with each token event for the audit log (`crate::audit`): the provider, what happened,
/// and the generation of the credential published for it (none for a failure).
pub type Events = Arc<dyn Fn(&str, crate::audit::TokenEvent, Option<u64>) + Send + Sync>;

/// A number in `0..1` for spreading refreshes and retries; tests pin it.
pub type Jitter = Arc<dyn Fn() -> f64 + Send + Sync>;

/// Everything a refresher uses from outside: I/O, time, and when to stop.
#[derive(Clone)]
pub struct EngineContext {
    pub client: TokenHttp,
    pub store: Arc<dyn TokenStore>,
    pub clock: Clock,
    /// Refreshers stop when this fires.
    pub cancel: CancellationToken,
    pub observer: Observer,
    /// Token events, for the audit log.
    pub events: Option<Events>,
    pub jitter: Jitter,
}

impl EngineContext {
    /// A context with no observer and random jitter.
    pub fn new(
        client: TokenHttp,
        store: Arc<dyn TokenStore>,
        clock: Clock,
        cancel: CancellationToken,
    ) -> Self {
        EngineContext {
            client,
            store,
            clock,
            cancel,
            observer: Arc::new(|_, _| {}),
            events: None,
            jitter: Arc::new(rand::random::<f64>),
        }
    }

    pub fn with_observer(mut self, observer: Observer) -> Self {
        self.observer = observer;
        self
    }

    pub fn with_events(mut self, events: Option<Events>) -> Self {
        self.events = events;
        self
    }

    pub fn with_jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }
}

impl std::fmt::Debug for EngineContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineContext")
            .field("client", &self.client)
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

/// Start `provider`'s refresher on the current runtime; it stops when `ctx.cancel` fires.
pub fn spawn(
    provider: Arc<ProviderConfig>,
    writer: CredentialWriter,
    ctx: EngineContext,
) -> JoinHandle<()> {
    tokio::spawn(run(provider, writer, ctx))
}

/// The refresher itself, in its `refresher{provider=NAME}` span, for callers that spawn it on
/// their own tracker. Returns when `ctx.cancel` fires.
pub async fn run(provider: Arc<ProviderConfig>, writer: CredentialWriter, ctx: EngineContext) {
    let span = tracing::info_span!("refresher", provider = %provider.name);
    refresher::run(provider, writer, ctx).instrument(span).await
}
