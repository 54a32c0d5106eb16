//! The token store as the engine uses it: off the async threads, and under its lock.
//!
//! A refresh is `lock → load → adopt or renew → save → unlock` (DESIGN.md, "Token store"). The
//! re-read under the lock is what keeps two processes from spending one rotating refresh token
//! twice: the one that waited finds the other's newer token and adopts it. The new token is saved
//! before the lock is released and before it is published, so a rotated refresh token is on disk
//! before anything uses it.

use std::sync::Arc;
use std::time::Duration;

use super::EngineContext;
use super::error::{Fault, TokenError, chain};
use super::source::{Renewed, Source};
use super::store::{StoreError, StoreLock, StoredToken, TokenStore};

/// The stored token, if any. A corrupt or unreadable file is logged and treated as no token: the
/// next save replaces it.
pub async fn load(
    store: &Arc<dyn TokenStore>,
    provider: &str,
) -> Result<Option<StoredToken>, TokenError> {
    load_logged(store, provider, false).await
}

/// [`load`] for the periodic re-read: a corrupt file is logged at debug level, not at warn every
/// five seconds until the next save replaces it.
pub async fn load_quietly(
    store: &Arc<dyn TokenStore>,
    provider: &str,
) -> Result<Option<StoredToken>, TokenError> {
    load_logged(store, provider, true).await
}

async fn load_logged(
    store: &Arc<dyn TokenStore>,
    provider: &str,
    quiet: bool,
) -> Result<Option<StoredToken>, TokenError> {
    let (store, name) = (store.clone(), provider.to_owned());
    match tokio::task::spawn_blocking(move || store.load(&name)).await {
        Ok(Ok(t)) => Ok(t),
        Ok(Err(e)) if e.is_unusable_token() => {
            if quiet {
                tracing::debug!(error = %chain(&e), "ignoring the stored token");
            } else {
                tracing::warn!(error = %chain(&e), "ignoring the stored token");
            }
            Ok(None)
        }
        Ok(Err(e)) => Err(TokenError::Store(e)),
        Err(e) => Err(TokenError::StoreTask(e)),
    }
}

pub async fn save(
    store: &Arc<dyn TokenStore>,
    provider: &str,
    t: &StoredToken,
) -> Result<(), TokenError> {
    let (store, name, t) = (store.clone(), provider.to_owned(), t.clone());
    match tokio::task::spawn_blocking(move || store.save(&name, &t)).await {
        Ok(r) => r.map_err(TokenError::Store),
        Err(e) => Err(TokenError::StoreTask(e)),
    }
}

pub async fn remove(store: &Arc<dyn TokenStore>, provider: &str) -> Result<bool, TokenError> {
    let (store, name) = (store.clone(), provider.to_owned());
    match tokio::task::spawn_blocking(move || store.remove(&name)).await {
        Ok(r) => r.map_err(TokenError::Store),
        Err(e) => Err(TokenError::StoreTask(e)),
    }
}

/// The provider's cross-process lock; waiting for it ends early when `ctx.cancel` fires.
pub async fn lock(ctx: &EngineContext, provider: &str) -> Result<Box<dyn StoreLock>, TokenError> {
    let (store, name) = (ctx.store.clone(), provider.to_owned());
    // If we stop waiting, the blocking task still gets the lock eventually and drops it at once.
    let task = tokio::task::spawn_blocking(move || store.lock(&name));
    tokio::select! {
        r = task => match r {
            Ok(r) => r.map_err(TokenError::Store),
            Err(e) => Err(TokenError::StoreTask(e)),
        },
        _ = ctx.cancel.cancelled() => Err(TokenError::Cancelled),
    }
}

/// A token call under a lease that expires (Redis) is cut when less than this is left (or a
/// quarter of a shorter lease TTL): a call still running when another instance may take the
/// lease could spend the refresh token that instance spends too.
pub const LEASE_MARGIN: Duration = Duration::from_secs(5);

/// Runs the token call `call` under `guard`.
///
/// With a lease that expires, the call starts only with at least half the lease's TTL left: the
/// lease is renewed every third of its TTL, so a held lease has less only when renewals are
/// failing (Redis away) or this process was paused (SIGSTOP, a frozen VM) past it. It then runs
/// for as long as the lease keeps being renewed, longer than the TTL if need be (its own timeout
/// bounds it), and is cut once less than the margin is left. When the answer and the cut are
/// ready at once (a process resumed after a pause longer than its lease), the answer is taken:
/// the provider has rotated the refresh token by then, and an answer dropped is a token lost,
/// while one kept is staged for the next holder when the commit is refused. (The guard is
/// passed in and handed back, not borrowed: a lock need not be `Sync`.)
async fn under_lease<T>(
    guard: Box<dyn StoreLock>,
    call: impl Future<Output = Result<T, TokenError>>,
) -> (Box<dyn StoreLock>, Result<T, TokenError>) {
    let (Some(left), Some(ttl)) = (guard.remaining(), guard.ttl()) else {
        return (guard, call.await);
    };
    let short = |left: Duration| {
        Err(TokenError::Store(StoreError::LeaseShort {
            left_ms: left.as_millis() as u64,
        }))
    };
    if left < ttl / 2 {
        return (guard, short(left));
    }
    let margin = LEASE_MARGIN.min(ttl / 4);
    let mut lost = guard.lost();
    let mut call = std::pin::pin!(call);
    loop {
        let left = guard.remaining().unwrap_or_default();
        if left <= margin {
            return (guard, short(left));
        }
        // A lease found lost (its renewal answered "not yours") cuts the call at once, not
        // when the local figure runs down.
        let lost_now = async {
            if let Some(rx) = lost.as_mut()
                && rx.wait_for(|l| *l).await.is_ok()
            {
                return;
            }
            std::future::pending::<()>().await
        };
        tokio::select! {
            biased;
            r = &mut call => return (guard, r),
            () = lost_now => return (guard, short(Duration::ZERO)),
            _ = tokio::time::sleep(left - margin) => {}
        }
    }
}

/// Unlocks off the async threads: releasing a Redis lease is a network call (a second at worst,
/// with Redis stopped), and requests must never wait on Redis.
fn release(guard: Box<dyn StoreLock>) {
    drop(tokio::task::spawn_blocking(move || drop(guard)));
}

/// How a locked renewal ended.
#[derive(Debug)]
pub enum Kind {
    /// Another process had already stored a newer token; no network call.
    Adopted,
    /// A new token from the network.
    New,
    /// The same token, living longer.
    Extended,
}

#[derive(Debug)]
pub struct Outcome {
    pub kind: Kind,
    pub token: StoredToken,
    /// The token could not be saved; it is used anyway (it may hold the only copy of a rotated
    /// refresh token) and the next refresh tries again.
    pub save_error: Option<TokenError>,
}

/// A failed renewal, with the token it started from (to recognise a later login).
#[derive(Debug)]
pub struct Failed {
    pub error: TokenError,
    pub base: Option<StoredToken>,
    /// The stored token we held had been removed (`credproxy logout`): stop serving it.
    pub removed: bool,
}

/// Under the store's lock: adopt a newer stored token that `adoptable` accepts, or renew from
/// the newest token we know of and save the result.
///
/// `base_stored`: `base` was in the store. If the store is now empty, `credproxy logout` removed
/// it: its refresh token is not used (that would put the tokens back on disk and undo the
/// logout); the primary grant runs instead, or a login is asked for.
pub async fn renew_locked(
    ctx: &EngineContext,
    source: &Source,
    provider: &str,
    base: Option<&StoredToken>,
    base_stored: bool,
    adoptable: impl Fn(&StoredToken) -> bool,
) -> Result<Outcome, Failed> {
    let fail = |error, base: Option<&StoredToken>, removed| Failed {
        error,
        base: base.cloned(),
        removed,
    };
    let guard = match lock(ctx, provider).await {
        Ok(guard) => guard,
        // A shared store that can't be reached gives no lease: no refresh token is spent
        // without one. A grant that needs neither a person nor a refresh token goes on alone.
        Err(TokenError::Store(e @ StoreError::Redis { .. })) if source.needs_no_person() => {
            tracing::warn!(
                error = %chain(&e),
                "the token store can't be reached; obtaining a new token with the primary grant (no refresh token is spent without the lease)"
            );
            let renewed = source
                .renew(ctx, None)
                .await
                .map_err(|e| fail(e, base, false))?;
            let save_error = save(&ctx.store, provider, renewed.token()).await.err();
            return Ok(Outcome {
                kind: Kind::New,
                token: renewed.into_token(),
                save_error,
            });
        }
        Err(e) => return Err(fail(e, base, false)),
    };
    let loaded = load(&ctx.store, provider).await;
    let removed = base_stored && matches!(loaded, Ok(None));
    let stored = match loaded {
        Ok(t) => t.filter(|t| {
            let ok = source.accepts(t);
            if !ok {
                tracing::info!("the stored token was obtained with other settings; not reusing it");
            }
            ok
        }),
        Err(e) => {
            tracing::warn!(error = %chain(&e), "can't read the token store; renewing without it");
            None
        }
    };
    let base = match stored {
        Some(s) if s.is_newer_than(base) => {
            if adoptable(&s) {
                release(guard);
                return Ok(Outcome {
                    kind: Kind::Adopted,
                    token: s,
                    save_error: None,
                });
            }
            Some(s)
        }
        _ if removed => None,
        _ => base.cloned(),
    };
    let (guard, renewed) = under_lease(guard, source.renew(ctx, base.as_ref())).await;
    let renewed = match renewed {
        Ok(r) => r,
        // The refresh token was refused. If another instance rotated it meanwhile (its lease
        // was taken over after a pause or a failover, so both spent one token), its token is
        // in the store: adopt it rather than ask for a login.
        Err(e) if e.fault() == Fault::LoginRequired => {
            if let Some(peer) = rotated_elsewhere(ctx, source, provider, base.as_ref()).await {
                release(guard);
                tracing::info!(
                    "the refresh token was refused after another instance rotated it; using that instance's token"
                );
                return Ok(Outcome {
                    kind: Kind::Adopted,
                    token: peer,
                    save_error: None,
                });
            }
            return Err(fail(e, base.as_ref(), removed));
        }
        Err(e) => return Err(fail(e, base.as_ref(), removed)),
    };
    let save_error = save(&ctx.store, provider, renewed.token()).await.err();
    release(guard);
    // `credproxy logout` removed the token while the call ran: the new token is dropped (its
    // refresh token dies with it) and the refresher stops serving, as after any logout.
    if let Some(e @ TokenError::Store(StoreError::Removed { .. })) = save_error {
        return Err(fail(e, base.as_ref(), true));
    }
    let kind = match renewed {
        Renewed::New(_) => Kind::New,
        Renewed::Extended(_) => Kind::Extended,
    };
    Ok(Outcome {
        kind,
        token: renewed.into_token(),
        save_error,
    })
}

/// After a refused refresh token: the stored token, if it carries another refresh token than the
/// one just refused (another instance rotated it).
async fn rotated_elsewhere(
    ctx: &EngineContext,
    source: &Source,
    provider: &str,
    spent: Option<&StoredToken>,
) -> Option<StoredToken> {
    let spent = spent?.refresh_token.as_ref()?;
    let stored = load(&ctx.store, provider).await.ok()??;
    let other = stored.refresh_token.as_ref().is_some_and(|rt| rt != spent);
    (other && source.accepts(&stored)).then_some(stored)
}

#[cfg(test)]
mod tests {
    //! [`under_lease`] on tokio's paused clock, with a lease whose expiry the test moves.

    use std::sync::atomic::{AtomicBool, Ordering};

    use parking_lot::Mutex;
    use tokio::time::Instant;

    use super::*;

    const TTL: Duration = Duration::from_secs(8);

    /// A lease valid until a time the test (its "renewer") sets.
    struct Lease(Arc<Mutex<Instant>>);

    impl StoreLock for Lease {
        fn remaining(&self) -> Option<Duration> {
            Some(self.0.lock().saturating_duration_since(Instant::now()))
        }
        fn ttl(&self) -> Option<Duration> {
            Some(TTL)
        }
    }

    fn lease(left: Duration) -> (Box<dyn StoreLock>, Arc<Mutex<Instant>>) {
        let until = Arc::new(Mutex::new(Instant::now() + left));
        (Box::new(Lease(until.clone())), until)
    }

    /// Renews `until` every third of the TTL while `renewing`.
    fn renewer(until: Arc<Mutex<Instant>>, renewing: Arc<AtomicBool>) {
        tokio::spawn(async move {
            while renewing.load(Ordering::SeqCst) {
                tokio::time::sleep(TTL / 3).await;
                if renewing.load(Ordering::SeqCst) {
                    *until.lock() = Instant::now() + TTL;
                }
            }
        });
    }

    fn is_short<T>(r: &Result<T, TokenError>) -> bool {
        matches!(r, Err(TokenError::Store(StoreError::LeaseShort { .. })))
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_slower_than_the_ttl_runs_on_while_the_lease_is_renewed() {
        let (guard, until) = lease(TTL);
        renewer(until, Arc::new(AtomicBool::new(true)));
        let start = Instant::now();
        let (_, r) = under_lease(guard, async {
            tokio::time::sleep(TTL * 3).await;
            Ok::<_, TokenError>(7)
        })
        .await;
        assert_eq!(r.unwrap(), 7);
        assert_eq!(start.elapsed(), TTL * 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_is_cut_a_margin_before_an_unrenewed_lease_runs_out() {
        let (guard, until) = lease(TTL);
        let renewing = Arc::new(AtomicBool::new(true));
        renewer(until, renewing.clone());
        let start = Instant::now();
        let (_, r) = under_lease(guard, async {
            // Renewals stop (Redis gone) a little into the call.
            tokio::time::sleep(TTL / 2).await;
            renewing.store(false, Ordering::SeqCst);
            std::future::pending::<Result<(), TokenError>>().await
        })
        .await;
        assert!(is_short(&r), "{r:?}");
        // Renewed last at TTL/3: valid until TTL/3 + TTL, cut a quarter TTL (2 s) before (the
        // paused clock counts whole milliseconds).
        let want = TTL / 3 + TTL - TTL / 4;
        let took = start.elapsed();
        assert!(took.abs_diff(want) <= Duration::from_millis(1), "{took:?}");
    }

    /// A lease whose renewal found it taken (lost), with a full TTL left by the local figure.
    struct Losable(tokio::sync::watch::Sender<bool>, Instant);

    impl StoreLock for Losable {
        fn remaining(&self) -> Option<Duration> {
            Some(self.1.saturating_duration_since(Instant::now()))
        }
        fn ttl(&self) -> Option<Duration> {
            Some(TTL)
        }
        fn lost(&self) -> Option<tokio::sync::watch::Receiver<bool>> {
            Some(self.0.subscribe())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_is_cut_as_soon_as_the_lease_is_lost() {
        let lost = tokio::sync::watch::Sender::new(false);
        let guard = Box::new(Losable(lost.clone(), Instant::now() + TTL));
        let start = Instant::now();
        let (_, r) = under_lease(guard, async {
            tokio::time::sleep(TTL / 8).await;
            lost.send_replace(true);
            std::future::pending::<Result<(), TokenError>>().await
        })
        .await;
        assert!(is_short(&r), "{r:?}");
        assert_eq!(
            start.elapsed(),
            TTL / 8,
            "cut when lost, not when the figure ran down"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_starts_only_with_half_the_ttl_left() {
        let (guard, _until) = lease(TTL / 2 - Duration::from_millis(1));
        let polled = AtomicBool::new(false);
        let (_, r) = under_lease(guard, async {
            polled.store(true, Ordering::SeqCst);
            Ok::<_, TokenError>(())
        })
        .await;
        assert!(is_short(&r), "{r:?}");
        assert!(!polled.load(Ordering::SeqCst), "the call was started");
    }
}
