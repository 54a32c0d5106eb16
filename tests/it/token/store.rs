//! Two processes sharing one token store never spend a refresh token twice.
//!
//! The parent test starts copies of this test binary as child processes (running only
//! [`child_spends_refresh_tokens`], told what to do through environment variables). Each child
//! repeatedly does what a refresh does: lock, load, "spend" the stored refresh token `R<n>` by
//! saving `R<n+1>`, record the spend in a shared log, unlock. If the lock did not serialize the
//! processes, or a waiter did not re-read the store, two of them would load the same `R<n>` and the
//! log would show it spent twice.

// A deadline across child processes, outside any tokio runtime: the real clock is the point.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use credproxy::secret::Secret;
use credproxy::token::store::{FileStore, StoredToken, TokenStore, fingerprint};

const CHILD_DIR: &str = "CREDPROXY_STORE_TEST_DIR";
const CHILD_NAME: &str = "CREDPROXY_STORE_TEST_CHILD";
const CHILD_SPENDS: &str = "CREDPROXY_STORE_TEST_SPENDS";

const PROVIDER: &str = "rotating";
const CHILDREN: usize = 2;
const SPENDS_EACH: usize = 50;

fn token(generation: u64) -> StoredToken {
    StoredToken {
        access_token: Secret::from(format!("A{generation}")),
        refresh_token: Some(Secret::from(format!("R{generation}"))),
        expires_at: None,
        obtained_at: generation as i64,
        fingerprint: fingerprint("https://auth.example/token", Some("id"), "refresh_token"),
        secrets: BTreeMap::new(),
        details: BTreeMap::new(),
        expiry_assumed: false,
    }
}

fn generation(token: &StoredToken) -> u64 {
    let refresh = token.refresh_token.as_ref().expect("a refresh token");
    refresh.expose()[1..].parse().expect("R<n>")
}

#[test]
fn two_processes_spend_each_refresh_token_once() {
    if std::env::var_os(CHILD_DIR).is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path().join("state")).unwrap();
    store.save(PROVIDER, &token(0)).unwrap();

    // Hold the lock until every child is up and waiting for it, so they all start together.
    let held = store.lock(PROVIDER).unwrap();
    // The child test's full name in this binary: its module path without the crate's name.
    let child_test = format!(
        "{}::child_spends_refresh_tokens",
        module_path!().split_once("::").unwrap().1
    );
    let children: Vec<_> = (0..CHILDREN)
        .map(|i| {
            Command::new(std::env::current_exe().unwrap())
                .args([child_test.as_str(), "--exact", "--nocapture"])
                .env(CHILD_DIR, dir.path())
                .env(CHILD_NAME, format!("child{i}"))
                .env(CHILD_SPENDS, SPENDS_EACH.to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while (0..CHILDREN).any(|i| !dir.path().join(format!("ready-child{i}")).exists()) {
        assert!(Instant::now() < deadline, "children did not start");
        std::thread::sleep(Duration::from_millis(5));
    }
    // They are blocked: nothing was spent yet.
    assert_eq!(generation(&store.load(PROVIDER).unwrap().unwrap()), 0);
    drop(held);

    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "child failed: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let log = fs::read_to_string(dir.path().join("spent.log")).unwrap();
    let spends: Vec<(&str, u64)> = log
        .lines()
        .map(|line| {
            let parsed = line
                .split_once(" R")
                .and_then(|(who, n)| Some((who, n.parse().ok()?)));
            parsed.unwrap_or_else(|| panic!("bad log line {line:?}"))
        })
        .collect();
    let total = CHILDREN * SPENDS_EACH;
    assert_eq!(spends.len(), total);
    // In log order (the log is written under the lock), the spends are R0, R1, R2, ...: none
    // twice, none skipped.
    for (i, (who, spent)) in spends.iter().enumerate() {
        assert_eq!(*spent, i as u64, "spend #{i} by {who}: {log}");
    }
    let last = store.load(PROVIDER).unwrap().unwrap();
    assert_eq!(generation(&last), total as u64);
    // The processes really took turns: a run where one finished before the other started would
    // prove little.
    let switches = spends.windows(2).filter(|w| w[0].0 != w[1].0).count();
    assert!(switches >= 2, "the processes barely interleaved: {log}");
    eprintln!("{total} spends, {switches} hand-overs between processes");
}

/// The child's side; does nothing unless started by the test above.
#[test]
fn child_spends_refresh_tokens() {
    let Some(dir) = std::env::var_os(CHILD_DIR).map(PathBuf::from) else {
        return;
    };
    let name = std::env::var(CHILD_NAME).unwrap();
    let spends: usize = std::env::var(CHILD_SPENDS).unwrap().parse().unwrap();
    // A hung child would hang the parent's test; give up instead.
    std::thread::spawn(|| {
        std::thread::sleep(Duration::from_secs(20));
        eprintln!("child timed out");
        std::process::exit(3);
    });
    let store = FileStore::open(dir.join("state")).unwrap();
    fs::write(dir.join(format!("ready-{name}")), b"").unwrap();
    for _ in 0..spends {
        spend_one(&store, &dir, &name);
        // Other work between refreshes. Without it, flock (which is not fair) tends to go back to
        // the process that just released it, and the two would barely take turns.
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn spend_one(store: &FileStore, dir: &Path, name: &str) {
    let _guard = store.lock(PROVIDER).unwrap();
    let current = store.load(PROVIDER).unwrap().unwrap();
    let n = generation(&current);
    // "Spend" R<n> at the token server: the reply carries R<n+1>, saved before it is used.
    store.save(PROVIDER, &token(n + 1)).unwrap();
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("spent.log"))
        .unwrap();
    // One write, so lines stay whole even if the lock were broken.
    log.write_all(format!("{name} R{n}\n").as_bytes()).unwrap();
}

/// One contract every [`TokenStore`] keeps, run against each store by [`store_contract!`]: a new
/// store is one more line at the bottom (`store_contract!(name, || factory)`, where the factory
/// returns the store and whatever must live as long as it, such as its directory).
mod contract {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use credproxy::token::store::{StoreError, TokenStore};

    use super::{generation, token};

    pub fn save_load_remove(store: &dyn TokenStore) {
        assert!(store.load("p").unwrap().is_none());
        assert!(!store.remove("p").unwrap(), "nothing to remove yet");
        store.save("p", &token(1)).unwrap();
        let loaded = store.load("p").unwrap().expect("saved");
        assert_eq!(generation(&loaded), 1);
        assert_eq!(loaded.access_token.expose(), "A1");
        assert_eq!(loaded.fingerprint, token(1).fingerprint);
        // Saving again replaces, and other providers are apart.
        store.save("p", &token(2)).unwrap();
        assert_eq!(generation(&store.load("p").unwrap().unwrap()), 2);
        assert!(store.load("other").unwrap().is_none());
        assert!(store.remove("p").unwrap());
        assert!(store.load("p").unwrap().is_none());
        assert!(!store.remove("p").unwrap());
    }

    pub fn refuses_bad_provider_names(store: &dyn TokenStore) {
        for bad in ["", "a/b", "..", "a b"] {
            assert!(
                matches!(store.load(bad), Err(StoreError::InvalidProvider(_))),
                "{bad:?}"
            );
            assert!(
                matches!(
                    store.save(bad, &token(0)),
                    Err(StoreError::InvalidProvider(_))
                ),
                "{bad:?}"
            );
            assert!(
                matches!(store.remove(bad), Err(StoreError::InvalidProvider(_))),
                "{bad:?}"
            );
        }
    }

    pub fn lock_excludes(store: &dyn TokenStore) {
        let held = store.lock("p").unwrap();
        assert!(store.try_lock("p").unwrap().is_none(), "held elsewhere");
        assert!(
            store.try_lock("q").unwrap().is_some(),
            "locks are per provider"
        );
        drop(held);
        assert!(
            store.try_lock("p").unwrap().is_some(),
            "free after the guard drops"
        );
    }

    /// Threads doing what a refresh does (lock, load R<n>, save R<n+1>) never spend one twice.
    pub fn concurrent_writers_take_turns(store: Arc<dyn TokenStore>) {
        const THREADS: u64 = 4;
        const EACH: u64 = 25;
        store.save("p", &token(0)).unwrap();
        let inside = Arc::new(AtomicBool::new(false));
        let threads: Vec<_> = (0..THREADS)
            .map(|_| {
                let store = store.clone();
                let inside = inside.clone();
                std::thread::spawn(move || {
                    for _ in 0..EACH {
                        let _guard = store.lock("p").unwrap();
                        assert!(!inside.swap(true, Ordering::SeqCst), "two holders at once");
                        let n = generation(&store.load("p").unwrap().unwrap());
                        std::thread::sleep(Duration::from_micros(50));
                        store.save("p", &token(n + 1)).unwrap();
                        inside.store(false, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(
            generation(&store.load("p").unwrap().unwrap()),
            THREADS * EACH
        );
    }
}

/// Runs the [`contract`] against one store. `$factory` returns `(store, keep)`; `keep` lives as
/// long as the test. `store_contract!(name, optional || ...)`: the factory returns an `Option`,
/// `None` when the store's server can't be had (it says why), and the tests return early.
macro_rules! store_contract {
    ($name:ident, optional $factory:expr) => {
        mod $name {
            use std::sync::Arc;

            use credproxy::token::store::TokenStore;

            #[allow(clippy::type_complexity)]
            fn make() -> Option<(Arc<dyn TokenStore>, Box<dyn std::any::Any>)> {
                let (store, keep) = ($factory)()?;
                Some((Arc::new(store), Box::new(keep)))
            }

            #[test]
            fn save_load_remove() {
                let Some((store, _keep)) = make() else { return };
                super::contract::save_load_remove(&*store);
            }

            #[test]
            fn refuses_bad_provider_names() {
                let Some((store, _keep)) = make() else { return };
                super::contract::refuses_bad_provider_names(&*store);
            }

            #[test]
            fn lock_excludes() {
                let Some((store, _keep)) = make() else { return };
                super::contract::lock_excludes(&*store);
            }

            #[test]
            fn concurrent_writers_take_turns() {
                let Some((store, _keep)) = make() else { return };
                super::contract::concurrent_writers_take_turns(store);
            }
        }
    };
    // After the arm above: `optional || ...` would parse as an expression too.
    ($name:ident, $factory:expr) => {
        store_contract!($name, optional || Some(($factory)()));
    };
}

store_contract!(memory_store, || (
    credproxy::token::store::MemoryStore::new(),
    ()
));
store_contract!(file_store, || {
    let dir = tempfile::tempdir().unwrap();
    let store = credproxy::token::store::FileStore::open(dir.path().join("state")).unwrap();
    (store, dir)
});
// A real redis-server on a free port, stopped when the test ends (with the store's temp dir
// for kept tokens).
store_contract!(
    redis_store,
    optional || {
        let server = crate::support::redis::RedisServer::start()?;
        let (store, dir) = server.store("contract");
        Some((store, (dir, server)))
    }
);
