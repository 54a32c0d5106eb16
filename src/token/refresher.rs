//! The refresher: one task per provider, the only writer of its credential.
//!
//! ```text
//! Starting: stored token valid? ──yes──▶ (introspect if configured) ─▶ publish ─▶ Serving
//!             └─no──▶ renew (store lock → re-read → refresh / primary grant → save)
//! renew ok ─▶ publish ─▶ Serving { refresh_at }
//! Serving:  refresh_at ─▶ renew          401 report for the current token ─▶ renew, once
//!           (a token of unknown lifetime rejected: the next ones live as long as it did)
//!           wall clock jumped ahead (a request saw it, or the 5 s poll): refresh_at moves
//!           earlier by the jump; renew if that is now
//! renew failed: transient ─▶ Failing { retry_at: backoff (1 s … 5 min, Retry-After) }
//!               config    ─▶ Failing { retry_at: in an hour }, logged once per failure streak
//!               login     ─▶ LoginRequired { seen }: no token calls until a login lands in the
//!                            store (a renewal from it that fails otherwise keeps the state and
//!                            retries at its `retry_at`)
//! Failing:  retry_at ─▶ renew; the token is served while valid
//! every 5 s: LoginRequired: has a login landed? Otherwise: re-read the store, adopt a newer
//!            token another process stored (`credproxy login`, `credproxy token`, another
//!            `run`); notice that `credproxy logout` removed ours
//! ```
//!
//! The states are [`State`]'s variants; the token being served ([`Held`]) is apart from them: it
//! is kept through failures while it is valid.
//!
//! A renewal is never cancelled half-way: a token server may already have rotated the refresh
//! token, and the new one must reach the store. Each call is bounded by the HTTP timeout.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::EngineContext;
use super::error::{Fault, TokenError, chain};
use super::persist::{self, Failed, Kind, Outcome};
use super::schedule::{Policy, backoff, refresh_at};
use super::source::Source;
use super::store::StoredToken;
use crate::audit::TokenEvent;
use crate::config::{AuthConfig, ProviderConfig};
use crate::credential::{
    Credential, CredentialWriter, Phase, Rejection, RejectionFilter, Snapshot,
};
use state::{Failures, State};

mod secrets;
mod state;

/// How often the store is re-read, so a `credproxy login` or `logout` run in another process is
/// noticed without a restart, and a token another process refreshed is adopted. One small file
/// read per provider; no token server is called.
pub const LOGIN_POLL: Duration = Duration::from_secs(5);
/// How often a request the server refused for configuration reasons (`invalid_client`, a wrong
/// password, a redirect) is tried again: rarely enough not to hammer it or flood the log, often
/// enough to recover from a fix made on the server side without a restart.
pub const CONFIG_RETRY: Duration = Duration::from_secs(3600);
/// A lifetime is learned only from a rejection of a token at least this old (from its
/// obtaining), and so is never shorter: an upstream that rejects a token at once (a revoked
/// grant, a wrong audience, a hiccup) must not make every next token live a second and the token
/// server answer two refreshes a second. Such a token is simply replaced. A token that truly
/// lives less is then rejected once per lifetime, and the replay hides it.
pub const MIN_LEARNED_LIFETIME: Duration = Duration::from_secs(5);
/// A learned lifetime that stood this long without a rejection doubles (up to what the token
/// would be assumed to live without it, `default_lifetime`): one rejection must not shorten
/// every later token for good. Each time a doubled lifetime proves too long (a rejection comes
/// before it), the wait before the next doubling doubles too, up to [`MAX_LEARNED_GROWTH_WAIT`].
pub const LEARNED_GROWTH_WAIT: Duration = Duration::from_secs(60);
/// The longest wait before a learned lifetime doubles.
pub const MAX_LEARNED_GROWTH_WAIT: Duration = Duration::from_secs(3600);

pub async fn run(provider: Arc<ProviderConfig>, writer: CredentialWriter, ctx: EngineContext) {
    let mut secrets = secrets::Secrets::start(&provider);
    let Some(source) = Source::new(&provider, None) else {
        serve_static(&provider, &writer, &ctx, &mut secrets).await;
        return;
    };
    let policy = source.policy();
    let versions = secrets::Versions::of(&provider);
    let mut r = Refresher {
        provider,
        source,
        ctx,
        writer,
        policy,
        held: None,
        generation: 0,
        state: State::Starting,
        next_poll: Instant::now() + LOGIN_POLL,
        rejections: RejectionFilter::default(),
        learned: None,
        versions,
    };
    // A shared store says when another instance changed the token (Redis pub/sub); the 5 s
    // re-read stays as the fallback.
    let mut changes = r.ctx.store.changes(&r.provider.name);
    r.start().await;
    loop {
        let (next, poll) = (r.state.timer(), r.next_poll);
        let event = tokio::select! {
            _ = r.ctx.cancel.cancelled() => break,
            _ = sleep_until(next) => Event::Timer,
            _ = tokio::time::sleep_until(poll) => Event::Poll,
            _ = changed(&mut changes) => Event::Changed,
            (g, why) = r.writer.rejected() => Event::Rejected(g, why),
            g = r.writer.wall_jumped() => Event::WallJump(g),
            _ = secrets.changed() => Event::Secret,
        };
        match event {
            Event::Timer => r.renew(false).await,
            Event::Poll | Event::Changed => {
                if matches!(event, Event::Poll) {
                    r.next_poll = r.ctx.clock.now() + LOGIN_POLL;
                }
                if r.reschedule_after_wall_jump() {
                    r.renew(false).await;
                } else if r.state.awaits_login() {
                    r.poll_login().await;
                } else {
                    r.watch_store().await;
                }
            }
            Event::Rejected(g, why) => r.on_rejected(g, why).await,
            Event::Secret => {
                r.writer
                    .update(|s| s.last_error = secrets.last_error(s.last_error.as_ref()));
                // A renewal refused for a secret that has since changed is worth trying again,
                // and a token the changed configuration no longer accepts (BlendVision's
                // console token is the configured secret itself) is replaced now.
                let refused =
                    matches!(r.state, State::Failing { .. }) && r.state.failures().config_logged;
                let stale = r.held.as_ref().is_some_and(|h| !r.source.accepts(&h.token));
                if refused || stale {
                    r.renew(false).await;
                } else if secrets::Versions::of(&r.provider) != r.versions {
                    r.republish();
                }
            }
            Event::WallJump(g) => {
                if r.held
                    .as_ref()
                    .is_some_and(|h| g == h.credential.generation)
                    && r.reschedule_after_wall_jump()
                {
                    r.renew(false).await;
                }
            }
        }
    }
    tracing::debug!("refresher stopped");
}

enum Event {
    Timer,
    Poll,
    Changed,
    Rejected(u64, Rejection),
    /// A request found this generation expired by a jump of the wall clock.
    WallJump(u64),
    /// One of the provider's secrets changed, or failed to renew.
    Secret,
}

/// The store's change counter moved (never, for a store that can't tell).
async fn changed(changes: &mut Option<tokio::sync::watch::Receiver<u64>>) {
    if let Some(rx) = changes
        && rx.changed().await.is_ok()
    {
        return;
    }
    // No counter, or its store is gone: nothing will ever move.
    std::future::pending().await
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// A static provider: its token published, again each time it changes (a file credproxy
/// follows, a command it re-runs), until cancelled.
async fn serve_static(
    provider: &ProviderConfig,
    writer: &CredentialWriter,
    ctx: &EngineContext,
    secrets: &mut secrets::Secrets,
) {
    let AuthConfig::Static { token } = &provider.auth else {
        return ctx.cancel.cancelled().await;
    };
    // The token and what its other headers were built from, as last published.
    let mut published: Option<(crate::secret::Secret, secrets::Versions)> = None;
    let mut generation = 0;
    loop {
        // The versions are read before the headers are built: a value newer than they say is
        // published again on the next turn, never missed.
        let now = (token.get(), secrets::Versions::of(provider));
        if published.as_ref() != Some(&now) {
            generation += 1;
            publish_static(provider, writer, &now.0, generation);
            published = Some(now);
        }
        writer.update(|s| s.last_error = secrets.last_error(s.last_error.as_ref()));
        tokio::select! {
            _ = ctx.cancel.cancelled() => return,
            _ = secrets.changed() => {}
        }
    }
}

fn publish_static(
    provider: &ProviderConfig,
    writer: &CredentialWriter,
    token: &crate::secret::Secret,
    generation: u64,
) {
    match Credential::new(
        token,
        &provider.inject,
        &crate::config::SecretHeader::fields(&provider.headers),
        generation,
        Instant::now(),
        None,
    ) {
        Ok(c) => writer.publish(Snapshot {
            credential: Some(Arc::new(c)),
            phase: Phase::Ready,
            ..Snapshot::starting()
        }),
        Err(e) => {
            tracing::error!(error = %e, "the static token can't be used");
            writer.update(|s| {
                s.credential = None;
                s.phase = Phase::Failing;
                s.last_error = Some(format!("the static token can't be used: {e}"));
            });
        }
    }
}

/// The token being served.
struct Held {
    token: StoredToken,
    obtained: Instant,
    /// When it reached us: its age, for learning how long it lived. A token just obtained is
    /// taken to be born as its reply arrived (later than it was, so its lifetime is learned
    /// short rather than long); one adopted from the store, when the store says.
    born: Instant,
    expires: Option<Instant>,
    /// A 401 already forced a refresh of this access token (at most once per token).
    forced: bool,
    /// It is in the store (loaded from it, or saved): if it disappears, `logout` removed it.
    stored: bool,
    /// What is published for it (its wall-clock mark tells of a suspend since).
    credential: Arc<Credential>,
    /// Its refresh as scheduled on tokio's clock, before any wall-clock jump moved it earlier.
    refresh_at: Option<Instant>,
    /// The wall-clock jump already logged for it.
    jump_logged: bool,
}

struct Refresher {
    provider: Arc<ProviderConfig>,
    source: Source,
    ctx: EngineContext,
    writer: CredentialWriter,
    policy: Policy,
    held: Option<Held>,
    generation: u64,
    state: State,
    /// When the store is re-read next.
    next_poll: Instant,
    /// The 401 rule's memory on the writer's side.
    rejections: RejectionFilter,
    /// How long this provider's tokens of unknown lifetime really live: from the last such
    /// token's obtaining to its rejection (issue 14 item 1). Kept in memory only.
    learned: Option<Learned>,
    /// What the published credential's other headers were built from.
    versions: secrets::Versions,
}

/// A learned lifetime, and when it last changed (for [`LEARNED_GROWTH_WAIT`]).
#[derive(Debug, Clone, Copy)]
struct Learned {
    lifetime: Duration,
    since: Instant,
    /// How long it must stand unrejected before it doubles.
    grow_wait: Duration,
}

impl Refresher {
    fn name(&self) -> &str {
        &self.provider.name
    }

    async fn start(&mut self) {
        let stored = match persist::load(&self.ctx.store, self.name()).await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %chain(&e), "can't read the token store");
                None
            }
        };
        let clock = self.ctx.clock;
        match stored {
            Some(t) if self.source.accepts(&t) && t.is_valid(&clock) => {
                let t = self.source.check_stored(&self.ctx, t).await;
                if t.is_valid(&clock) {
                    tracing::info!(
                        expires_in_s = t.expires_at.map_or(-1, |e| e - clock.unix_now()),
                        "reusing the stored token"
                    );
                    self.adopt(t);
                } else {
                    self.renew_from(Some(t), false).await;
                }
            }
            _ => self.renew_from(None, false).await,
        }
    }

    /// Renew the held token (`forced`: because the upstream rejected it).
    async fn renew(&mut self, forced: bool) {
        let base = self.held.as_ref().map(|h| h.token.clone());
        self.renew_from(base, forced).await;
    }

    async fn renew_from(&mut self, base: Option<StoredToken>, forced: bool) {
        // An attempt is in flight: requests without a usable token may wait for it.
        let held = self.held.is_some();
        self.writer.update(|s| {
            if held {
                s.phase = Phase::Refreshing;
            }
            s.retry_at = None;
        });
        let (clock, policy) = (self.ctx.clock, self.policy);
        // After a 401 any other valid token is worth trying; on schedule, only one not yet due.
        let adoptable = move |t: &StoredToken| {
            if forced {
                t.is_valid(&clock)
            } else {
                t.is_fresh(&clock, &policy)
            }
        };
        let base_stored = self.held.as_ref().is_some_and(|h| h.stored);
        let result = persist::renew_locked(
            &self.ctx,
            &self.source,
            &self.provider.name,
            base.as_ref(),
            base_stored,
            adoptable,
        )
        .await;
        match result {
            Ok(outcome) => self.succeed(outcome),
            Err(failed) => {
                if failed.removed {
                    self.forget();
                }
                self.fail(failed)
            }
        }
    }

    /// `credproxy logout` removed the token we serve: stop serving it.
    fn forget(&mut self) {
        tracing::info!("the stored token was removed (credproxy logout); no longer using it");
        self.held = None;
        self.writer.update(|s| {
            s.credential = None;
            s.phase = Phase::Starting;
            s.expires_at_unix = None;
            s.next_refresh_unix = None;
            s.details.clear();
        });
    }

    /// Re-read the store: adopt a newer token another process stored; notice a logout.
    async fn watch_store(&mut self) {
        let stored = match persist::load_quietly(&self.ctx.store, self.name()).await {
            Ok(t) => t,
            Err(e) => {
                tracing::debug!(error = %chain(&e), "can't read the token store");
                return;
            }
        };
        let held = self.held.as_ref();
        match stored {
            None if held.is_some_and(|h| h.stored) => {
                self.forget();
                self.renew_from(None, false).await;
            }
            Some(t)
                if self.source.accepts(&t)
                    && t.is_newer_than(held.map(|h| &h.token))
                    && t.is_valid(&self.ctx.clock) =>
            {
                self.adopt(t);
            }
            _ => {}
        }
    }

    fn succeed(&mut self, outcome: Outcome) {
        let Outcome {
            kind,
            mut token,
            save_error,
        } = outcome;
        self.apply_learned(&mut token);
        let stored = save_error.is_none();
        let clock = self.ctx.clock;
        let now_unix = clock.unix_now();
        let expires_in = token.expires_at.map(|e| e - now_unix);
        let label = match kind {
            Kind::Adopted => "adopted",
            Kind::New => "ok",
            Kind::Extended => "extended",
        };
        let event = match (&kind, self.held.as_ref()) {
            (Kind::Adopted, _) => TokenEvent::Adopted,
            (Kind::New, None) => TokenEvent::Obtained,
            (Kind::New, Some(h))
                if h.token.refresh_token.is_some()
                    && token.refresh_token.is_some()
                    && h.token.refresh_token != token.refresh_token =>
            {
                TokenEvent::Rotated
            }
            (Kind::New | Kind::Extended, _) => TokenEvent::Refreshed,
        };
        match kind {
            Kind::Adopted if self.held.is_some() => {
                tracing::info!(
                    expires_in_s = expires_in,
                    "adopted the token another process refreshed"
                )
            }
            Kind::Adopted => {}
            Kind::New => tracing::info!(expires_in_s = expires_in, "obtained a new token"),
            Kind::Extended => {
                tracing::info!(
                    expires_in_s = expires_in,
                    "the token's lifetime was extended"
                )
            }
        }
        self.versions = secrets::Versions::of(&self.provider);
        let headers = match self.source.headers(&self.provider, &token) {
            Ok(h) => h,
            Err(e) => {
                return self.fail(Failed {
                    error: e,
                    base: Some(token),
                    removed: false,
                });
            }
        };
        let (obtained, expires) = token.instants(&clock);
        let forced = self
            .held
            .as_ref()
            .is_some_and(|h| h.forced && h.token.access_token == token.access_token);
        self.generation += 1;
        let credential = match Credential::new(
            &token.access_token,
            &self.provider.inject,
            &headers,
            self.generation,
            obtained,
            expires,
        ) {
            Ok(c) => Arc::new(c.with_wall(clock.mark())),
            Err(e) => {
                let error = TokenError::Config(format!("the token can't be used: {e}"));
                return self.fail(Failed {
                    error,
                    base: Some(token),
                    removed: false,
                });
            }
        };
        let last_error = save_error.map(|e| {
            let msg = chain(&e);
            tracing::warn!(error = %msg, "the new token could not be saved; using it anyway");
            msg
        });
        let next = refresh_at(obtained, expires, &self.policy, (self.ctx.jitter)());
        if let Some(at) = next {
            tracing::debug!(
                refresh_in_s = at.saturating_duration_since(clock.now()).as_secs(),
                "next refresh scheduled"
            );
        }
        self.writer.publish(Snapshot {
            credential: Some(credential.clone()),
            phase: Phase::Ready,
            last_error,
            expires_at_unix: token.expires_at,
            last_refresh_unix: Some(token.obtained_at),
            next_refresh_unix: next.map(|at| clock.unix_at(at)),
            retry_at: None,
            details: token
                .details
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        });
        let born = match kind {
            Kind::New | Kind::Extended => clock.now().max(obtained),
            Kind::Adopted => obtained,
        };
        self.held = Some(Held {
            token,
            obtained,
            born,
            expires,
            forced,
            stored,
            credential,
            refresh_at: next,
            jump_logged: false,
        });
        self.state = State::Serving { refresh_at: next };
        (self.ctx.observer)(self.name(), label);
        if let Some(events) = &self.ctx.events {
            events(self.name(), event, Some(self.generation));
        }
    }

    /// A header beside the token changed (a `headers` value or BlendVision's `org_id` from a
    /// file credproxy follows or a command it re-runs): the held token is published again with
    /// the new headers, as a new generation, with no token call. Requests use it at once.
    fn republish(&mut self) {
        self.versions = secrets::Versions::of(&self.provider);
        let Some(held) = self.held.as_mut() else {
            return;
        };
        let built = self
            .source
            .headers(&self.provider, &held.token)
            .map_err(|e| chain(&e))
            .and_then(|headers| {
                Credential::new(
                    &held.token.access_token,
                    &self.provider.inject,
                    &headers,
                    self.generation + 1,
                    held.obtained,
                    held.expires,
                )
                .map_err(|e| e.to_string())
            });
        match built {
            Ok(c) => {
                self.generation += 1;
                let c = Arc::new(c.with_wall_of(&held.credential));
                held.credential = c.clone();
                self.writer.update(|s| s.credential = Some(c));
                tracing::info!("a header's secret changed; the new value is used from now on");
            }
            // Not reached (each new value is checked before it is taken); the last one stays.
            Err(e) => {
                tracing::warn!(error = %e, "can't use the changed header; the last one is still used")
            }
        }
    }

    /// Serve a token from the store (ours at start, or one another process stored) as is.
    fn adopt(&mut self, token: StoredToken) {
        self.succeed(Outcome {
            kind: Kind::Adopted,
            token,
            save_error: None,
        });
    }

    fn fail(&mut self, failed: Failed) {
        let Failed { error, base, .. } = failed;
        if matches!(error, TokenError::Cancelled) {
            return;
        }
        let msg = chain(&error);
        let now = self.ctx.clock.now();
        let valid = self
            .held
            .as_ref()
            .is_some_and(|h| h.expires.is_none_or(|e| e > now));
        let awaiting_login = self.state.awaits_login();
        let previous = std::mem::take(&mut self.state);
        let mut failures = previous.failures();
        // Retried later; still waiting for a login if one was awaited (a renewal from a login
        // that landed failed for another reason).
        let retry = move |retry_at: Instant, failures: Failures| match previous {
            State::LoginRequired { seen, .. } => State::LoginRequired {
                seen,
                retry_at: Some(retry_at),
                failures,
            },
            _ => State::Failing { retry_at, failures },
        };
        let (state, phase, label) = match error.fault() {
            Fault::Transient { retry_after } => {
                let delay = backoff(failures.attempt, retry_after, (self.ctx.jitter)());
                failures.attempt = failures.attempt.saturating_add(1);
                tracing::warn!(error = %msg, retry_in_s = delay.as_secs_f32(), serving_current_token = valid, "token refresh failed");
                let state = retry(now + delay, failures);
                (state, Phase::Failing, "transient_error")
            }
            Fault::Config => {
                if failures.config_logged {
                    tracing::debug!(error = %msg, "token request still refused");
                } else {
                    tracing::error!(error = %msg, retry_in_s = CONFIG_RETRY.as_secs(), "token request refused; check the provider's configuration");
                    failures.config_logged = true;
                }
                let state = retry(now + CONFIG_RETRY, failures);
                (state, Phase::Failing, "config_error")
            }
            Fault::LoginRequired => {
                if !awaiting_login {
                    tracing::warn!(reason = %msg, "waiting for `credproxy login {}`", self.provider.name);
                }
                let state = State::LoginRequired {
                    seen: base,
                    retry_at: None,
                    failures,
                };
                (state, Phase::LoginRequired, "login_required")
            }
        };
        self.state = state;
        let timer = self.state.timer();
        let next_unix = timer.map(|at| self.ctx.clock.unix_at(at));
        self.writer.update(|s| {
            s.phase = phase;
            s.last_error = Some(msg);
            s.next_refresh_unix = next_unix;
            s.retry_at = timer.filter(|_| phase == Phase::Failing);
        });
        (self.ctx.observer)(self.name(), label);
        if let Some(events) = &self.ctx.events {
            let event = match phase {
                Phase::LoginRequired => TokenEvent::LoginRequired,
                _ => TokenEvent::Failed,
            };
            events(self.name(), event, None);
        }
    }

    /// While a login is awaited: has one landed in the store?
    async fn poll_login(&mut self) {
        let stored = match persist::load_quietly(&self.ctx.store, self.name()).await {
            Ok(Some(t)) if self.source.accepts(&t) => t,
            Ok(_) => return,
            Err(e) => {
                tracing::debug!(error = %chain(&e), "can't read the token store");
                return;
            }
        };
        let State::LoginRequired { seen, .. } = &self.state else {
            return;
        };
        let seen = seen.as_ref();
        if !stored.is_newer_than(seen) {
            return;
        }
        tracing::info!("a login landed in the token store");
        if stored.is_valid(&self.ctx.clock) {
            self.adopt(stored);
        } else {
            self.renew_from(Some(stored), false).await;
        }
    }

    /// The wall clock ran ahead of tokio's since the served credential was built (a suspend or VM
    /// pause: tokio's clock, and so the refresh timer, stood still): the token is that much
    /// older. Logs it once, moves the refresh that much earlier, and answers whether it is due
    /// now (then the caller renews; requests wait for that).
    fn reschedule_after_wall_jump(&mut self) -> bool {
        let now = self.ctx.clock.now();
        let Some(h) = self.held.as_mut() else {
            return false;
        };
        let Some(jump) = h.credential.wall_jump(now) else {
            return false;
        };
        if !h.jump_logged {
            h.jump_logged = true;
            tracing::info!(
                ahead_s = jump.as_secs(),
                "the wall clock jumped ~{}s ahead of the monotonic clock (a suspend or VM \
                 pause?); the token is that much older",
                jump.as_secs()
            );
        }
        let expired = !h.credential.is_valid_at(now);
        let State::Serving { refresh_at } = &mut self.state else {
            // Failing or awaiting a login: its retry stands; an expired token is not sent.
            return false;
        };
        *refresh_at = h.refresh_at.map(|at| at.checked_sub(jump).unwrap_or(now));
        expired || refresh_at.is_some_and(|at| at <= now)
    }

    /// A token whose server said nothing of its lifetime lives as long as the last one did, once
    /// that was learned from a 401. Its stored copy keeps the assumed expiry; a token with an
    /// expiry from its server is never touched.
    fn apply_learned(&mut self, token: &mut StoredToken) {
        let Some(learned) = self.learned.as_mut().filter(|_| token.expiry_assumed) else {
            return;
        };
        let now = self.ctx.clock.now();
        if now.saturating_duration_since(learned.since) >= learned.grow_wait {
            // No rejection for a while: perhaps the one it was learned from was a one-off.
            learned.lifetime = learned.lifetime.saturating_mul(2);
            learned.since = now;
            let assumed = token
                .expires_at
                .map(|e| e.saturating_sub(token.obtained_at))
                .and_then(|s| u64::try_from(s).ok())
                .map(Duration::from_secs);
            if assumed.is_none_or(|a| learned.lifetime >= a) {
                tracing::info!(
                    "no token of provider {} was rejected for a while; assuming its lifetime \
                     again",
                    self.provider.name
                );
                self.learned = None;
                return;
            }
            tracing::debug!(
                lifetime_s = learned.lifetime.as_secs(),
                "no rejection for a while; the learned lifetime doubles"
            );
        }
        // Whole seconds, rounded down: `obtained_at` is a whole second too, at or before the
        // token was obtained, so the token is taken to expire no later than the last one did.
        let secs = i64::try_from(learned.lifetime.as_secs())
            .unwrap_or(i64::MAX)
            .max(1);
        token.expires_at = Some(token.obtained_at.saturating_add(secs));
        tracing::debug!(
            lifetime_s = secs,
            "the token's lifetime is unknown; using the learned one"
        );
    }

    /// A token of unknown lifetime was rejected `lived` after it was obtained: the next ones are
    /// taken to live that long (at least [`MIN_LEARNED_LIFETIME`]). Logged at info the first
    /// time, at debug after.
    fn learn(&mut self, lived: Duration) {
        let first = self.learned.is_none();
        let lived = lived.max(MIN_LEARNED_LIFETIME);
        let grow_wait = match self.learned {
            // The last lifetime (doubled, perhaps) proved too long: wait longer to grow it again.
            Some(l) if lived < l.lifetime => (l.grow_wait * 2).min(MAX_LEARNED_GROWTH_WAIT),
            Some(l) => l.grow_wait,
            None => LEARNED_GROWTH_WAIT,
        };
        self.learned = Some(Learned {
            lifetime: lived,
            since: self.ctx.clock.now(),
            grow_wait,
        });
        let secs = lived.as_secs_f64();
        if first {
            tracing::info!(
                lifetime_s = secs,
                "learned lifetime of ~{secs:.0}s for provider {}: its token server gives none",
                self.provider.name
            );
        } else {
            tracing::debug!(lifetime_s = secs, "learned lifetime updated");
        }
    }

    /// The upstream answered 401 (`why`) to a request carrying credential generation `g`.
    async fn on_rejected(&mut self, g: u64, why: Rejection) {
        let now = self.ctx.clock.now();
        let Some(h) = &mut self.held else { return };
        let ignore = if self.state.awaits_login() {
            Some("a login is awaited")
        } else if g != self.generation {
            Some("not the current token")
        } else if !self.source.refreshable() {
            Some("this token can't be replaced")
        } else {
            self.rejections
                .admit(h.forced, h.obtained, now, why)
                .err()
                .map(|n| n.why())
        };
        if let Some(why) = ignore {
            tracing::debug!(generation = g, why, "not refreshing after a 401");
            return;
        }
        h.forced = true;
        // Learned only from a token old enough (from its obtaining) for its death to say
        // something about its lifetime; its lifetime counts from its reply's arrival (shorter).
        let age = now.saturating_duration_since(h.obtained);
        let lived = (h.token.expiry_assumed && age >= MIN_LEARNED_LIFETIME)
            .then(|| now.saturating_duration_since(h.born));
        if h.token.expiry_assumed && lived.is_none() {
            tracing::debug!(
                age_s = age.as_secs_f64(),
                "too young a token to learn its lifetime from; just replacing it"
            );
        }
        tracing::info!(
            generation = g,
            invalid_token = why == Rejection::InvalidToken,
            "the upstream rejected the current token; refreshing it"
        );
        if let Some(lived) = lived {
            self.learn(lived);
        }
        self.renew(true).await;
    }
}
