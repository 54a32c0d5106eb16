//! A configured secret whose value can change while credproxy runs: [`Live`] (a static
//! `token`, `client_secret`, `password`, BlendVision's `api_token` and `org_id`, a provider's
//! `headers` and `token_headers` values, `[proxy] proxy_auth`; caller secrets are read once).
//!
//! A secret written in the config (`"${VAR}"`) is fixed; `{ file = }` follows its file
//! ([`super::watch`]) and `{ command, ttl }` is re-run before its `ttl` passes
//! ([`super::command`]). The value is read where it is used (`Live::get`, a lock held for a
//! clone), so a token request sends the secret of the moment. One keeper per secret
//! ([`Live::keep`], run by the provider's refresher, which owns it) is the only writer: re-runs
//! are one at a time by construction. A failed re-run or re-read keeps the last value until one
//! succeeds, and is published in [`Health`] for the refresher to show as `last_error`.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::{Secret, command, watch as file};

/// Where a configured secret comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Written in the config (perhaps through `${VAR}`): never changes.
    Inline,
    /// `{ file = PATH }`, re-read when the file changes.
    File(String),
    /// `{ command = [...], ttl = ... }`; without a `ttl` it runs once, at start.
    Command {
        argv: Vec<String>,
        ttl: Option<Duration>,
    },
}

/// A keeper's news: the value changed (`version` counts changes) or the last attempt failed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Health {
    pub version: u64,
    /// Why the last re-run or re-read failed (the last value is still used); never a secret.
    pub error: Option<String>,
}

/// A configured secret: cheap to clone (shared), redacted in `Debug`, never `Display`.
#[derive(Clone)]
pub struct Live(Arc<Cell>);

struct Cell {
    /// The config key, for messages (`providers.gh.token`).
    key: String,
    origin: Origin,
    value: parking_lot::Mutex<Secret>,
    /// What a new value must be (a header value can't hold a newline): a value it refuses is
    /// a failed renewal, and the last value stays.
    check: Option<Check>,
    health: watch::Sender<Health>,
}

/// What is wrong with a would-be value, in words that never repeat it (`None`: it is fine).
pub type Check = fn(&str) -> Option<&'static str>;

impl Live {
    /// A secret with `value` now (as loaded), from `origin`, configured at `key`.
    pub fn new(key: &str, origin: Origin, value: Secret) -> Self {
        Live(Arc::new(Cell {
            key: key.to_owned(),
            origin,
            value: parking_lot::Mutex::new(value),
            check: None,
            health: watch::Sender::new(Health::default()),
        }))
    }

    /// [`Live::new`] for a secret whose every new value must pass `check` (the value as loaded
    /// was checked by the config's checker, with the place in the file).
    pub fn checked(key: &str, origin: Origin, value: Secret, check: Check) -> Self {
        Live(Arc::new(Cell {
            key: key.to_owned(),
            origin,
            value: parking_lot::Mutex::new(value),
            check: Some(check),
            health: watch::Sender::new(Health::default()),
        }))
    }

    /// How many times the value changed: cheap, for a reader that keeps something built from
    /// it (a digest, a header) and rebuilds it when this moves.
    pub fn version(&self) -> u64 {
        self.0.health.borrow().version
    }

    /// The value now.
    pub fn get(&self) -> Secret {
        self.0.value.lock().clone()
    }

    pub fn key(&self) -> &str {
        &self.0.key
    }

    pub fn origin(&self) -> &Origin {
        &self.0.origin
    }

    /// Whether the value can change (a file, or a command with a `ttl`): it needs a keeper.
    pub fn changes(&self) -> bool {
        match &self.0.origin {
            Origin::Inline => false,
            Origin::File(_) => true,
            Origin::Command { ttl, .. } => ttl.is_some(),
        }
    }

    /// Changes and failures, as they happen.
    pub fn health(&self) -> watch::Receiver<Health> {
        self.0.health.subscribe()
    }

    /// Keep the value current (forever; stop by dropping the future or aborting its task).
    pub async fn keep(self) {
        match self.0.origin.clone() {
            Origin::File(path) => file::follow(&self, &path).await,
            Origin::Command {
                argv,
                ttl: Some(ttl),
            } => self.rerun(&argv, ttl).await,
            Origin::Inline | Origin::Command { ttl: None, .. } => std::future::pending().await,
        }
    }

    /// Re-run `argv` before each `ttl` passes; after a failure, again after a backoff.
    async fn rerun(&self, argv: &[String], ttl: Duration) {
        let mut failures = 0u32;
        let mut next = tokio::time::Instant::now() + rerun_after(ttl);
        loop {
            tokio::time::sleep_until(next).await;
            let argv = argv.to_vec();
            let result = tokio::task::spawn_blocking(move || command::run(&argv, command::TIMEOUT))
                .await
                .unwrap_or_else(|e| Err(format!("the secret command could not run: {e}")));
            next = tokio::time::Instant::now()
                + if result.is_ok() {
                    failures = 0;
                    rerun_after(ttl)
                } else {
                    failures += 1;
                    retry_after(failures).min(rerun_after(ttl))
                };
            self.set(result);
        }
    }

    /// Take a re-run's or re-read's result: a new value, the same one, or a failure.
    pub(super) fn set(&self, result: Result<Secret, String>) {
        let key = &self.0.key;
        let result = result.and_then(|v| match self.0.check.and_then(|c| c(v.expose())) {
            Some(problem) => Err(format!("the new value {problem}")),
            None => Ok(v),
        });
        match result {
            Ok(v) => {
                let changed = {
                    let mut cur = self.0.value.lock();
                    let changed = *cur != v;
                    *cur = v;
                    changed
                };
                if changed {
                    tracing::info!(key = %key, "the secret changed; using the new value");
                }
                self.0.health.send_if_modified(|h| {
                    let modified = changed || h.error.is_some();
                    h.version += u64::from(changed);
                    h.error = None;
                    modified
                });
            }
            Err(e) => {
                let e = format!("{key}: {e}; the last value is still used");
                tracing::warn!(error = %e, "can't renew a secret");
                self.0.health.send_if_modified(|h| {
                    let modified = h.error.as_ref() != Some(&e);
                    h.error = Some(e);
                    modified
                });
            }
        }
    }
}

/// When a command secret is re-run: at 80 % of its `ttl`, so a slow or failed run has the last
/// fifth to be retried before the value is due.
pub fn rerun_after(ttl: Duration) -> Duration {
    ttl.mul_f64(0.8)
}

/// The wait before the `n`th retry after a failed run: 5 s, doubling, at most 5 min.
pub fn retry_after(n: u32) -> Duration {
    (Duration::from_secs(5) * 2u32.saturating_pow(n.saturating_sub(1).min(6)))
        .min(Duration::from_secs(300))
}

impl PartialEq for Live {
    /// The same key, origin and value now (what a reload compares).
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
            || (self.0.key == other.0.key
                && self.0.origin == other.0.origin
                && self.get() == other.get())
    }
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0.origin {
            Origin::Inline => f.write_str("[redacted]"),
            Origin::File(p) => write!(f, "[redacted, from file {p}]"),
            Origin::Command { argv, .. } => write!(
                f,
                "[redacted, from command `{}`]",
                argv.first().map_or("", String::as_str)
            ),
        }
    }
}

impl From<Secret> for Live {
    /// A fixed secret (for code that builds a config by hand).
    fn from(s: Secret) -> Self {
        Live::new("", Origin::Inline, s)
    }
}

impl From<&str> for Live {
    fn from(s: &str) -> Self {
        Live::from(Secret::from(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    /// A script printing `token-N` (N counts its runs in `dir/count`); it fails with status 4
    /// (printing a would-be secret on both streams) while `dir/fail` exists.
    fn counting(dir: &std::path::Path) -> Vec<String> {
        let d = dir.display();
        let script = format!(
            "if [ -e {d}/fail ]; then echo half-S3CR3T; echo S3CR3T >&2; exit 4; fi; \
             n=$(( $(cat {d}/count 2>/dev/null || echo 0) + 1 )); echo $n > {d}/count; \
             echo token-$n"
        );
        ["sh", "-c", &script].map(String::from).to_vec()
    }

    /// Issue 20 item 2: re-run at 80 % of the ttl, one run at a time; a failure keeps the last
    /// value, is reported without the output, and is retried after 5 s; a success clears it.
    #[tokio::test(start_paused = true)]
    async fn a_command_is_rerun_before_its_ttl_and_a_failure_keeps_the_last_value() {
        let dir = tempfile::tempdir().unwrap();
        let argv = counting(dir.path());
        let ttl = Duration::from_secs(600);
        let live = Live::new(
            "providers.p.token",
            Origin::Command {
                argv: argv.clone(),
                ttl: Some(ttl),
            },
            Secret::from("as-loaded"),
        );
        assert!(live.changes());
        let mut health = live.health();
        let start = Instant::now();
        let keeper = tokio::spawn(live.clone().keep());

        health.changed().await.unwrap();
        assert_eq!(
            start.elapsed(),
            Duration::from_secs(480),
            "re-run at 80 % of the ttl"
        );
        assert_eq!(live.get().expose(), "token-1");
        assert_eq!(
            *health.borrow(),
            Health {
                version: 1,
                error: None
            }
        );

        std::fs::write(dir.path().join("fail"), "").unwrap();
        health.changed().await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(960));
        let error = health.borrow().error.clone().unwrap();
        assert_eq!(
            error,
            "providers.p.token: the command `sh` failed (exit status: 4); run it in a terminal to see why; the last value is still used"
        );
        assert_eq!(live.get().expose(), "token-1", "the last value is kept");

        std::fs::remove_file(dir.path().join("fail")).unwrap();
        health.changed().await.unwrap();
        assert_eq!(
            start.elapsed(),
            Duration::from_secs(965),
            "retried after 5 s"
        );
        assert_eq!(
            *health.borrow(),
            Health {
                version: 2,
                error: None
            }
        );
        assert_eq!(live.get().expose(), "token-2");
        keeper.abort();
        // Each run was one at a time: the count file saw every run exactly once.
        assert_eq!(
            std::fs::read_to_string(dir.path().join("count"))
                .unwrap()
                .trim(),
            "2"
        );
    }

    /// A checked secret (a header value) refuses a new value its check finds wrong: the last
    /// one stays, the refusal is reported (never the value), and the next good one is taken.
    #[test]
    fn a_checked_secret_keeps_the_last_value_when_a_new_one_is_refused() {
        let live = Live::checked(
            "providers.p.headers.x-tenant",
            Origin::File("/run/t".into()),
            Secret::from("t-1"),
            |v| v.contains('\n').then_some("contains a newline"),
        );
        live.set(Ok(Secret::from("t-2\nx-evil: S3CR3T")));
        assert_eq!(live.get().expose(), "t-1");
        assert_eq!(live.version(), 0);
        let error = live.health().borrow().error.clone().unwrap();
        assert_eq!(
            error,
            "providers.p.headers.x-tenant: the new value contains a newline; the last value is still used"
        );
        live.set(Ok(Secret::from("t-3")));
        assert_eq!(live.get().expose(), "t-3");
        assert_eq!(live.version(), 1);
        assert_eq!(live.health().borrow().error, None);
    }

    #[test]
    fn backoff_and_pace() {
        assert_eq!(
            rerun_after(Duration::from_secs(3600)),
            Duration::from_secs(2880)
        );
        let secs: Vec<u64> = (1..=9).map(|n| retry_after(n).as_secs()).collect();
        assert_eq!(secs, [5, 10, 20, 40, 80, 160, 300, 300, 300]);
    }

    #[test]
    fn debug_names_the_origin_never_the_value() {
        let file = Live::new("k", Origin::File("/run/s".into()), Secret::from("v4lue"));
        assert_eq!(format!("{file:?}"), "[redacted, from file /run/s]");
        let cmd = Live::new(
            "k",
            Origin::Command {
                argv: vec!["op".into(), "read".into()],
                ttl: None,
            },
            Secret::from("v4lue"),
        );
        assert_eq!(format!("{cmd:?}"), "[redacted, from command `op`]");
        assert!(!cmd.changes(), "without a ttl it runs once");
        assert_eq!(format!("{:?}", Live::from("v4lue")), "[redacted]");
    }
}
