//! The provider's secrets that change while it runs (a `{ file = }` credproxy follows, a
//! `{ command, ttl }` it re-runs): their keepers are the refresher's, started with it and stopped
//! with it, so a provider's secrets are renewed one run at a time and nobody else writes them.
//! The refresher hears of each change or failure here: a static token is republished; a failure
//! shows as the provider's `last_error` (the last value is still used).

use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::config::{AuthConfig, BlendVisionMode, ProviderConfig};
use crate::secret::{Health, Live};

/// The changing secrets of one provider and their keepers (aborted when this is dropped).
pub(super) struct Secrets {
    health: Vec<watch::Receiver<Health>>,
    _keepers: JoinSet<()>,
    /// The failure last shown as `last_error`, to clear it (and only it) on recovery.
    shown: Option<String>,
}

/// The secrets of `provider` read at each use, whether or not they change: the credential's,
/// then those of the headers it injects (its `headers`, BlendVision's `org_id`), which a change
/// of republishes (see [`Versions`]), then those of its token requests (`token_headers`).
pub(super) fn of(provider: &ProviderConfig) -> Vec<&Live> {
    let mut all: Vec<&Live> = match &provider.auth {
        AuthConfig::Static { token } => vec![token],
        AuthConfig::OAuth2(o) => o.client_secret.iter().chain(&o.password).collect(),
        AuthConfig::BlendVision(b) => match &b.mode {
            BlendVisionMode::ApiToken(token) => vec![token],
            BlendVisionMode::Mint { password, .. } => vec![password],
        },
    };
    all.extend(injected(provider));
    if let AuthConfig::OAuth2(o) = &provider.auth {
        all.extend(o.token_headers.iter().map(|h| &h.value));
    }
    all
}

/// The secrets that go into every request as headers beside the token.
fn injected(provider: &ProviderConfig) -> impl Iterator<Item = &Live> {
    let org = match &provider.auth {
        AuthConfig::BlendVision(b) => b.org_id.as_ref(),
        _ => None,
    };
    provider.headers.iter().map(|h| &h.value).chain(org)
}

/// What the published credential's headers were built from: the [`Live::version`] of each
/// injected secret. When it moves, the credential is rebuilt with the same token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Versions(Vec<u64>);

impl Versions {
    pub(super) fn of(provider: &ProviderConfig) -> Self {
        Versions(injected(provider).map(Live::version).collect())
    }
}

impl Secrets {
    /// Start a keeper for each of `provider`'s secrets that can change.
    pub(super) fn start(provider: &ProviderConfig) -> Self {
        let mut keepers = JoinSet::new();
        let mut health = Vec::new();
        for live in of(provider).into_iter().filter(|l| l.changes()) {
            health.push(live.health());
            let span = tracing::info_span!("secret", key = %live.key());
            keepers.spawn(live.clone().keep().instrument(span));
        }
        Secrets {
            health,
            _keepers: keepers,
            shown: None,
        }
    }

    /// Wait for the next change or failure of any of them (never, if none can change).
    pub(super) async fn changed(&mut self) {
        if self.health.is_empty() {
            return std::future::pending().await;
        }
        let (result, _, _) = futures_util::future::select_all(
            self.health.iter_mut().map(|rx| Box::pin(rx.changed())),
        )
        .await;
        if result.is_err() {
            // A keeper's secret outlives it (the config holds it): not reached; don't spin.
            std::future::pending::<()>().await;
        }
    }

    /// The current failures, joined (`None`: every secret is current).
    fn error(&self) -> Option<String> {
        let errors: Vec<String> = self
            .health
            .iter()
            .filter_map(|rx| rx.borrow().error.clone())
            .collect();
        (!errors.is_empty()).then(|| errors.join("; "))
    }

    /// `last_error` as it should be after a change: the secrets' failure if any; else, if the
    /// last error shown was theirs, none; else `current` as it is (a token call's failure).
    pub(super) fn last_error(&mut self, current: Option<&String>) -> Option<String> {
        let now = self.error();
        let shown = std::mem::replace(&mut self.shown, now.clone());
        match now {
            Some(e) => Some(e),
            None if current == shown.as_ref() => None,
            None => current.cloned(),
        }
    }
}
