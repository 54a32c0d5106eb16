//! An in-memory token store, for tests of the modules that use a [`TokenStore`].
//!
//! Clones share the same tokens and locks, so two "processes" can be two clones. Nothing survives
//! the process, and the lock only serializes within it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};

use super::{StoreError, StoreLock, StoredToken, TokenStore, check_provider};

/// Tokens in a `HashMap`; locks as a set of held provider names. Not for production.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    tokens: Mutex<HashMap<String, StoredToken>>,
    /// Providers whose lock is held. A plain (not tokio) mutex and condvar: `lock` blocks a
    /// thread, like the file store's does.
    locked: Mutex<HashSet<String>>,
    unlocked: Condvar,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }
}

impl TokenStore for MemoryStore {
    fn load(&self, provider: &str) -> Result<Option<StoredToken>, StoreError> {
        check_provider(provider)?;
        Ok(self.shared.tokens.lock().get(provider).cloned())
    }

    fn save(&self, provider: &str, token: &StoredToken) -> Result<(), StoreError> {
        check_provider(provider)?;
        self.shared
            .tokens
            .lock()
            .insert(provider.to_owned(), token.clone());
        Ok(())
    }

    fn remove(&self, provider: &str) -> Result<bool, StoreError> {
        check_provider(provider)?;
        Ok(self.shared.tokens.lock().remove(provider).is_some())
    }

    fn lock(&self, provider: &str) -> Result<Box<dyn StoreLock>, StoreError> {
        check_provider(provider)?;
        let mut locked = self.shared.locked.lock();
        while locked.contains(provider) {
            self.shared.unlocked.wait(&mut locked);
        }
        locked.insert(provider.to_owned());
        Ok(Box::new(self.guard(provider)))
    }

    fn try_lock(&self, provider: &str) -> Result<Option<Box<dyn StoreLock>>, StoreError> {
        check_provider(provider)?;
        if !self.shared.locked.lock().insert(provider.to_owned()) {
            return Ok(None);
        }
        Ok(Some(Box::new(self.guard(provider))))
    }
}

impl MemoryStore {
    fn guard(&self, provider: &str) -> MemoryLock {
        MemoryLock {
            shared: self.shared.clone(),
            provider: provider.to_owned(),
        }
    }
}

struct MemoryLock {
    shared: Arc<Shared>,
    provider: String,
}

impl StoreLock for MemoryLock {}

impl Drop for MemoryLock {
    fn drop(&mut self) {
        self.shared.locked.lock().remove(&self.provider);
        self.shared.unlocked.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::sample;
    use super::*;

    #[test]
    fn round_trip_and_remove() {
        let store = MemoryStore::new();
        assert_eq!(store.load("api").unwrap(), None);
        store.save("api", &sample()).unwrap();
        assert_eq!(store.clone().load("api").unwrap(), Some(sample()));
        assert!(store.remove("api").unwrap());
        assert!(!store.remove("api").unwrap());
        assert!(matches!(
            store.load("a/b"),
            Err(StoreError::InvalidProvider(_))
        ));
    }

    #[test]
    fn lock_serializes_clones() {
        let store = MemoryStore::new();
        let held = store.lock("api").unwrap();
        assert!(store.clone().try_lock("api").unwrap().is_none());
        assert!(store.try_lock("other").unwrap().is_some());
        let waiter = {
            let store = store.clone();
            std::thread::spawn(move || {
                let _guard = store.lock("api").unwrap();
                store.load("api").unwrap()
            })
        };
        store.save("api", &sample()).unwrap();
        drop(held);
        assert_eq!(waiter.join().unwrap(), Some(sample()));
        assert!(store.try_lock("api").unwrap().is_some());
    }
}
