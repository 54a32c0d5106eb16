//! One provider's hash in Redis, and what the store does to it: read (and open) the current and
//! the staged token, commit under the lease, write unconditionally (a login), stage a token
//! that could not be committed, write back what Redis lost, and take a lease.

use redis::Value;

use super::{Held, Inner, StoreEvent, lease, scripts, seal};
use crate::token::store::{StoreError, StoredToken};

/// One provider's hash, as read.
pub(super) struct Row {
    pub current: Option<StoredToken>,
    pub generation: i64,
    /// The hash does not exist at all (never written, or Redis lost it).
    pub absent: bool,
    pub staged: Option<StoredToken>,
}

impl Inner {
    pub(super) fn token_key(&self, provider: &str) -> String {
        format!("{}:token:{provider}", self.prefix)
    }

    pub(super) fn lease_key(&self, provider: &str) -> String {
        format!("{}:lease:{provider}", self.prefix)
    }

    pub(super) fn channel(&self) -> String {
        format!("{}:changed", self.prefix)
    }

    pub(super) fn redis_error(&self, what: &'static str, source: redis::RedisError) -> StoreError {
        self.watch.failed(&source);
        StoreError::Redis {
            what,
            url: self.link.endpoint().to_string(),
            source,
        }
    }

    pub(super) fn sealed(&self, provider: &str, token: &StoredToken) -> Vec<u8> {
        let plain = serde_json::to_vec(token).expect("a token serializes to JSON");
        self.key.seal(
            &plain,
            &seal::aad(&self.prefix, provider, &token.fingerprint),
        )
    }

    pub(super) fn open_value(
        &self,
        provider: &str,
        sealed: &[u8],
        fingerprint: &str,
    ) -> Result<StoredToken, StoreError> {
        let unusable = |source| StoreError::Sealed {
            provider: provider.to_owned(),
            source,
        };
        let plain = self
            .key
            .open(sealed, &seal::aad(&self.prefix, provider, fingerprint))
            .map_err(unusable)?;
        let token: StoredToken =
            serde_json::from_slice(&plain).map_err(|_| unusable(seal::OpenError::Format))?;
        if token.fingerprint != fingerprint {
            return Err(unusable(seal::OpenError::Format));
        }
        Ok(token)
    }

    pub(super) fn read(&self, provider: &str) -> Result<Row, StoreError> {
        let values: Vec<Value> = self
            .link
            .call(|c| {
                redis::cmd("HMGET")
                    .arg(self.token_key(provider))
                    .arg(&["v", "fp", "gen", "pv", "pfp"])
                    .query(c)
            })
            .map_err(|e| self.redis_error("read", e))?;
        let field = |i: usize| -> Option<Vec<u8>> {
            match values.get(i) {
                Some(Value::BulkString(b)) => Some(b.clone()),
                _ => None,
            }
        };
        let text = |i| field(i).and_then(|b| String::from_utf8(b).ok());
        let generation = text(2).and_then(|g| g.parse().ok());
        let absent = generation.is_none();
        let generation = generation.unwrap_or(0);
        let current = match (field(0), text(1)) {
            (Some(v), Some(fp)) => Some(self.open_value(provider, &v, &fp)?),
            _ => None,
        };
        // A staged token that does not open is no reason to refuse the current one.
        let staged = match (field(3), text(4)) {
            (Some(v), Some(fp)) => match self.open_value(provider, &v, &fp) {
                Ok(t) => Some(t),
                Err(e) => {
                    tracing::debug!(error = %e, "ignoring a staged token that does not open");
                    None
                }
            },
            _ => None,
        };
        Ok(Row {
            current,
            generation,
            absent,
            staged,
        })
    }

    /// Conditional commit by the lease holder. `Ok(Ok(gen))`, or `Ok(Err(why))` when refused.
    pub(super) fn commit(
        &self,
        provider: &str,
        owner: &str,
        expected: i64,
        token: &StoredToken,
    ) -> Result<Result<i64, scripts::Refused>, StoreError> {
        let code: i64 = self
            .link
            .call(|c| {
                scripts::commit()
                    .key(self.token_key(provider))
                    .key(self.lease_key(provider))
                    .arg(owner)
                    .arg(expected)
                    .arg(self.sealed(provider, token))
                    .arg(&token.fingerprint)
                    .arg(self.channel())
                    .arg(provider)
                    .invoke(c)
            })
            .map_err(|e| self.redis_error("commit", e))?;
        Ok(scripts::Refused::from_code(code))
    }

    /// Writes `token` beside the current one (`pv`, `pfp`) for whoever holds the lease next;
    /// `false` where a logout removed the token (it is not brought back).
    pub(super) fn stage(&self, provider: &str, token: &StoredToken) -> Result<bool, StoreError> {
        self.link
            .call(|c| {
                scripts::stage()
                    .key(self.token_key(provider))
                    .arg(self.sealed(provider, token))
                    .arg(&token.fingerprint)
                    .invoke::<i64>(c)
            })
            .map(|n| n == 1)
            .map_err(|e| self.redis_error("stage", e))
    }

    /// Stages an uncommitted token in Redis for the next holder, or, when Redis can't take it,
    /// on local disk until it can. Never drops it.
    pub(super) fn keep(&self, provider: &str, token: &StoredToken, why: &str) {
        (self.events)(provider, StoreEvent::Kept);
        match self.stage(provider, token) {
            Ok(false) => tracing::info!(
                reason = why,
                "the new token was not committed, and is dropped: the token was removed (credproxy logout)"
            ),
            Ok(true) => {
                tracing::warn!(
                    reason = why,
                    "the new token was not committed; staged it in Redis for the next holder"
                );
                self.pending.forget(provider);
            }
            Err(_) => {
                tracing::warn!(
                    reason = why,
                    "the new token was not committed and Redis can't be reached; kept it on local \
                     disk until Redis is back"
                );
                self.pending.keep(provider, token);
            }
        }
    }

    pub(super) fn remember(&self, provider: &str, token: &StoredToken) {
        let mut known = self.last_known.lock();
        if known
            .get(provider)
            .is_none_or(|k| token.is_newer_than(Some(k)))
        {
            known.insert(provider.to_owned(), token.clone());
        }
    }

    /// Writes back the newest token this process knows where Redis has nothing at all; the
    /// token, if written.
    pub(super) fn reseed(&self, provider: &str) -> Option<StoredToken> {
        let token = self.last_known.lock().get(provider).cloned()?;
        let written = self.link.call(|c| {
            scripts::reseed()
                .key(self.token_key(provider))
                .arg(self.sealed(provider, &token))
                .arg(&token.fingerprint)
                .arg(self.channel())
                .arg(provider)
                .invoke::<i64>(c)
        });
        match written {
            Ok(1) => {
                tracing::warn!(
                    provider,
                    "Redis had lost the token (restarted empty?); wrote back the newest one this instance holds"
                );
                Some(token)
            }
            Ok(_) => None,
            Err(e) => {
                self.watch.failed(&e);
                None
            }
        }
    }

    /// Writes back every token Redis lost (after it answers again).
    pub(super) fn reseed_all(&self) {
        let providers: Vec<String> = self.last_known.lock().keys().cloned().collect();
        for provider in providers {
            self.reseed(&provider);
        }
    }

    /// Moves tokens kept on local disk into Redis (staged), once it answers again.
    pub(super) fn flush_pending(&self) {
        for (provider, token) in self.pending.all() {
            match self.stage(&provider, &token) {
                Ok(false) => {
                    tracing::info!(
                        provider,
                        "dropped a kept token: the token was removed (credproxy logout) meanwhile"
                    );
                    self.pending.forget(&provider);
                }
                Ok(true) => {
                    tracing::info!(
                        provider,
                        "staged a kept token in Redis for the next lease holder"
                    );
                    self.pending.forget(&provider);
                }
                Err(_) => return,
            }
        }
    }

    pub(super) fn try_acquire(&self, provider: &str) -> Result<Option<lease::Lease>, StoreError> {
        let owner = format!("{:032x}", rand::random::<u128>());
        let started = (tokio::time::Instant::now(), std::time::SystemTime::now());
        let ttl_ms = self.lease_ttl.as_millis() as u64;
        let got: Option<String> = self
            .link
            .call(|c| {
                redis::cmd("SET")
                    .arg(self.lease_key(provider))
                    .arg(&owner)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl_ms)
                    .query(c)
            })
            .map_err(|e| self.redis_error("take the lease", e))?;
        if got.is_none() {
            return Ok(None);
        }
        self.held.lock().insert(
            provider.to_owned(),
            Held {
                owner: owner.clone(),
                generation: None,
            },
        );
        Ok(Some(lease::Lease::start(
            provider,
            owner,
            started,
            self.lease_ttl,
        )))
    }
}
