//! The shared token store on Redis, for N instances sharing one provider (DESIGN.md, "Many
//! instances"). Behind [`TokenStore`] like the file store, so the engine's `lock → load → renew
//! → save → unlock` is unchanged; what Redis adds is in the meaning of each step:
//!
//! | step | in Redis |
//! |---|---|
//! | `lock` | a lease: `SET <prefix>:lease:<p> <owner> NX PX <ttl>` with a random owner id per holder, renewed by compare-and-renew (Lua) every third of the TTL while held, released by compare-and-delete (Lua) |
//! | `load` | `HMGET <prefix>:token:<p>`: the sealed token, its fingerprint, its generation, and a staged (uncommitted) token; the newer of the two is returned; the holder notes the generation it read, and promotes a staged token it finds |
//! | `save` | by the holder: staged first (`pv`), then one Lua script commits only if the lease is still its own and the generation is the one it read, clearing the stage; anyone else (`login`): written as is. Both bump the generation and `PUBLISH <prefix>:changed <p>` |
//! | Redis back empty | each instance writes back the newest token it knows (only where the hash is absent altogether: a logout keeps it), so a restart without persistence converges instead of looking like a logout |
//! | a commit refused, or Redis gone | the token is kept: staged in Redis (`pv`), or, when Redis can't be reached, in a 0600 file under `state_dir/redis-pending/`, which is staged when Redis is back; the next holder promotes it ([`StoreEvent`]) |
//!
//! Values are sealed with AES-256-GCM ([`seal`]): Redis never holds a token in the clear. The
//! lease's TTL is well above the token call timeout (30 s) and a holder is told how much lease it
//! has left ([`StoreLock::remaining`]), so the engine starts a token call only with enough lease
//! and cuts it before the lease runs out.
//!
//! Readers never wait on Redis: the engine serves its own copy; a watcher thread subscribes to
//! `<prefix>:changed` and tells the refresher ([`TokenStore::changes`]), pings Redis twice a
//! second, and reports [`TokenStore::health`] within two seconds of losing it.

mod hash;
mod lease;
mod link;
mod pending;
mod scripts;
pub mod seal;
mod watch;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

pub use link::Endpoint;
use link::Link;
use seal::SealKey;

use super::{StoreError, StoreLock, StoredToken, TokenStore, check_provider};

/// How long a lease lives without renewal, by default (`[store] lease_ttl`): a holder that
/// stops (SIGSTOP, a frozen VM, a partition) or dies keeps the others from refreshing this long,
/// and its token call has been cut before it runs out. Renewed every third of it, a lease
/// outlives a token call of any length (up to the 30 s call timeout) while Redis answers.
pub const LEASE_TTL: Duration = Duration::from_secs(90);

/// The shortest `lease_ttl`: renewed every third of it, with each renewal allowed one call
/// timeout ([`link::CALL_TIMEOUT`], 1 s).
pub const MIN_LEASE_TTL: Duration = Duration::from_secs(2);

/// What a store reports beside its answers, for metrics: `kept` (a token obtained but not
/// committed was kept, staged or on local disk), `recovered` (a holder promoted a kept token).
pub type StoreEvents = Arc<dyn Fn(&str, StoreEvent) + Send + Sync>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreEvent {
    Kept,
    Recovered,
}

impl StoreEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            StoreEvent::Kept => "kept",
            StoreEvent::Recovered => "recovered",
        }
    }
}

/// How to open a [`RedisStore`].
pub struct RedisOptions {
    pub endpoint: Endpoint,
    pub key: [u8; 32],
    pub key_prefix: String,
    /// Where tokens that could not be committed wait for Redis (0700 dir, 0600 files).
    pub pending_dir: PathBuf,
    /// PEM roots for `rediss://` (the `[proxy] ca_file`); `None`: the system's.
    pub root_cert: Option<Vec<u8>>,
    pub lease_ttl: Duration,
    pub events: StoreEvents,
}

/// The Redis token store. Clones share one connection, lease table and watcher.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", self.inner.link.endpoint())
            .field("key_prefix", &self.inner.prefix)
            .finish_non_exhaustive()
    }
}

struct Inner {
    link: Link,
    key: SealKey,
    prefix: String,
    lease_ttl: Duration,
    pending: pending::Pending,
    events: StoreEvents,
    /// Leases this process holds, by provider: the owner id and the generation read under it.
    held: Mutex<HashMap<String, Held>>,
    /// The newest token this process read or wrote, by provider: written back if Redis comes
    /// back empty. Forgotten on `remove`.
    last_known: Mutex<HashMap<String, StoredToken>>,
    watch: watch::Watch,
}

struct Held {
    owner: String,
    /// The generation the holder read (its first load under the lease); `None`: not read yet.
    generation: Option<i64>,
}

impl RedisStore {
    /// Opens the store. Does not wait for Redis: an unreachable one is reported by
    /// [`TokenStore::unavailable`] and by the calls that need it.
    pub fn open(options: RedisOptions) -> Result<RedisStore, StoreError> {
        let pending = pending::Pending::open(options.pending_dir)?;
        let inner = Arc::new(Inner {
            link: Link::new(options.endpoint, options.root_cert),
            key: SealKey::new(&options.key),
            prefix: options.key_prefix,
            lease_ttl: options.lease_ttl,
            pending,
            events: options.events,
            held: Mutex::new(HashMap::new()),
            last_known: Mutex::new(HashMap::new()),
            watch: watch::Watch::default(),
        });
        watch::start(&inner);
        Ok(RedisStore { inner })
    }

    /// Connects and checks Redis answers (for `credproxy check --online`).
    pub fn ping(&self) -> Result<(), StoreError> {
        self.inner
            .link
            .call(|c| redis::cmd("PING").query::<String>(c))
            .map(drop)
            .map_err(|e| self.inner.redis_error("ping", e))
    }
}

impl TokenStore for RedisStore {
    fn load(&self, provider: &str) -> Result<Option<StoredToken>, StoreError> {
        check_provider(provider)?;
        let inner = &self.inner;
        let mut row = inner.read(provider)?;
        if row.absent && row.staged.is_none() {
            row.current = inner.reseed(provider);
        }
        let staged_is_newer = row
            .staged
            .as_ref()
            .is_some_and(|s| s.is_newer_than(row.current.as_ref()));
        // The holder notes the generation it read first; a commit needs it unchanged.
        let owner = {
            let mut held = inner.held.lock();
            held.get_mut(provider).map(|h| {
                let generation = *h.generation.get_or_insert(row.generation);
                (h.owner.clone(), generation)
            })
        };
        if !staged_is_newer {
            match &row.current {
                Some(t) => inner.remember(provider, t),
                // Removed (a logout): nothing to write back if Redis loses its data later.
                None if !row.absent => drop(inner.last_known.lock().remove(provider)),
                None => {}
            }
            return Ok(row.current);
        }
        let staged = row.staged.expect("staged_is_newer");
        inner.remember(provider, &staged);
        // A token a previous holder obtained but could not commit: it holds the newest refresh
        // token. The holder commits it; anyone else serves it meanwhile.
        if let Some((owner, generation)) = owner {
            match inner.commit(provider, &owner, generation, &staged) {
                Ok(Ok(next)) => {
                    if let Some(h) = inner.held.lock().get_mut(provider) {
                        h.generation = Some(next);
                    }
                    tracing::info!(
                        "committed a token another instance obtained but could not commit"
                    );
                    (inner.events)(provider, StoreEvent::Recovered);
                }
                Ok(Err(why)) => tracing::debug!(why = why.as_str(), "staged token not promoted"),
                Err(e) => tracing::debug!(error = %e, "staged token not promoted"),
            }
        }
        Ok(Some(staged))
    }

    fn save(&self, provider: &str, token: &StoredToken) -> Result<(), StoreError> {
        check_provider(provider)?;
        let inner = &self.inner;
        let holder = inner
            .held
            .lock()
            .get(provider)
            .map(|h| (h.owner.clone(), h.generation));
        let Some((owner, generation)) = holder else {
            // Not under the lease (`credproxy login`, which replaces whatever is there).
            inner
                .link
                .call(|c| {
                    scripts::write()
                        .key(inner.token_key(provider))
                        .arg(inner.sealed(provider, token))
                        .arg(&token.fingerprint)
                        .arg(inner.channel())
                        .arg(provider)
                        .invoke::<i64>(c)
                })
                .map_err(|e| inner.redis_error("write", e))?;
            inner.remember(provider, token);
            return Ok(());
        };
        let generation = match generation {
            Some(g) => g,
            // Saved under the lease without a load first: read the generation now.
            None => {
                let g = inner.read(provider).map(|r| r.generation);
                match g {
                    Ok(g) => g,
                    Err(e) => {
                        inner.keep(provider, token, "Redis can't be reached");
                        return Err(e);
                    }
                }
            }
        };
        // On local disk first (0600, atomic): a process that dies before Redis acknowledges
        // the stage keeps the token, staged when it starts again. Then staged, then committed
        // (the commit clears the stage): a holder that dies or loses Redis between the two
        // leaves the token for the next holder, not nowhere.
        inner.pending.keep(provider, token);
        match inner.stage(provider, token) {
            Ok(true) => {}
            // A logout since the holder read the token: not kept, not remembered.
            Ok(false) => {
                inner.pending.forget(provider);
                return Err(StoreError::Removed {
                    provider: provider.to_owned(),
                });
            }
            Err(e) => {
                inner.keep(provider, token, "Redis can't be reached");
                return Err(e);
            }
        }
        match inner.commit(provider, &owner, generation, token) {
            Ok(Ok(next)) => {
                if let Some(h) = inner.held.lock().get_mut(provider) {
                    h.generation = Some(next);
                }
                inner.pending.forget(provider);
                // Remembered (for a write-back) only once committed: a token refused because
                // of a logout must not come back.
                inner.remember(provider, token);
                Ok(())
            }
            Ok(Err(scripts::Refused::Removed)) => {
                inner.pending.forget(provider);
                Err(StoreError::Removed {
                    provider: provider.to_owned(),
                })
            }
            Ok(Err(why)) => {
                inner.keep(provider, token, why.as_str());
                Err(StoreError::NotCommitted {
                    provider: provider.to_owned(),
                    why: why.as_str(),
                })
            }
            Err(e) => {
                inner.keep(provider, token, "Redis can't be reached");
                Err(e)
            }
        }
    }

    fn remove(&self, provider: &str) -> Result<bool, StoreError> {
        check_provider(provider)?;
        let inner = &self.inner;
        inner.pending.forget(provider);
        inner.last_known.lock().remove(provider);
        let removed: i64 = inner
            .link
            .call(|c| {
                scripts::remove()
                    .key(inner.token_key(provider))
                    .arg(inner.channel())
                    .arg(provider)
                    .invoke(c)
            })
            .map_err(|e| inner.redis_error("remove", e))?;
        Ok(removed > 0)
    }

    fn lock(&self, provider: &str) -> Result<Box<dyn StoreLock>, StoreError> {
        check_provider(provider)?;
        // Polled: a waiter only waits while another instance makes one token call.
        let mut wait = Duration::from_millis(5);
        loop {
            if let Some(lease) = self.inner.try_acquire(provider)? {
                return Ok(Box::new(lease.guard(self.inner.clone())));
            }
            std::thread::sleep(wait);
            wait = (wait * 2).min(Duration::from_millis(50));
        }
    }

    fn try_lock(&self, provider: &str) -> Result<Option<Box<dyn StoreLock>>, StoreError> {
        check_provider(provider)?;
        Ok(self
            .inner
            .try_acquire(provider)?
            .map(|l| Box::new(l.guard(self.inner.clone())) as Box<dyn StoreLock>))
    }

    fn changes(&self, provider: &str) -> Option<tokio::sync::watch::Receiver<u64>> {
        Some(self.inner.watch.subscribe(provider))
    }

    fn health(&self) -> Option<super::StoreHealth> {
        Some(super::StoreHealth {
            kind: "redis",
            unavailable: self.inner.watch.unavailable(),
        })
    }
}
