//! Many `credproxy run` processes sharing one rotating refresh token through one Redis
//! (issue 18 item 8): real processes, a real `redis-server`, the OAuth 2.0 fake rotating refresh
//! tokens with reuse detection that revokes the whole grant, and load through every instance.
//!
//! What must hold: every request answered 200, about one token call per token lifetime across
//! the whole fleet, and no refresh token ever presented twice (the fake would revoke the grant
//! and log everyone out). Figures are printed (`--nocapture`) for the report.

// Processes and Redis keep real time; the load runs for real seconds.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;

mod faults;

use crate::support::redis::RedisServer;
use crate::support::server::free_port;
use crate::support::{ClientAuth, Fake, OAuth2Fake, OAuth2Options, TestCa};

/// 32 bytes of 0x2a, base64.
const KEY: &str = "KioqKioqKioqKioqKioqKioqKioqKioqKioqKioqKio=";
/// The tokens of the load test: short, so 20 s see several refreshes.
const LIFETIME: Duration = Duration::from_secs(5);

struct Fleet {
    lifetime: Duration,
    dir: tempfile::TempDir,
    fake: OAuth2Fake,
    redis_url: String,
    /// `[store] lease_ttl`, when not the default.
    lease_ttl: Option<Duration>,
    instances: Vec<Instance>,
}

struct Instance {
    child: Child,
    listen: SocketAddr,
    admin: SocketAddr,
    config: PathBuf,
}

impl Instance {
    /// Sends `signal` (`"STOP"`, `"CONT"`) to the process.
    fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{signal} failed");
    }

    /// `GET path` on its admin listener (`/status`, `/metrics`): the whole answer.
    async fn admin_get(&self, path: &str) -> String {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let Ok(mut tcp) = tokio::net::TcpStream::connect(self.admin).await else {
            return String::new();
        };
        let ask = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
        if tcp.write_all(ask.as_bytes()).await.is_err() {
            return String::new();
        }
        let mut text = String::new();
        let _ = tcp.read_to_string(&mut text).await;
        text
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config_text(dir: &Path, fake: &OAuth2Fake, redis_url: &str, i: usize, port: u16) -> String {
    config_with(dir, fake, redis_url, i, port, free_port(), None)
}

fn config_with(
    dir: &Path,
    fake: &OAuth2Fake,
    redis_url: &str,
    i: usize,
    port: u16,
    admin: u16,
    lease_ttl: Option<Duration>,
) -> String {
    let o = fake.options();
    let lease_ttl = lease_ttl.map_or(String::new(), |t| {
        format!("lease_ttl = \"{}ms\"\n", t.as_millis())
    });
    format!(
        r#"[proxy]
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:{admin}"
state_dir = "{state}"
ca_file = "{ca}"

[store]
kind = "redis"
url = "{redis_url}"
encryption_key = "{KEY}"
key_prefix = "fleet"
{lease_ttl}
[providers.api]
preset = "oauth2"
hosts = ["api.test"]
upstream = "{url}"
token_url = "{url}/token"
authorize_url = "{url}/authorize"
grant = "authorization_code"
client_id = "{id}"
client_secret = "{secret}"
"#,
        state = dir.join(format!("state-{i}")).display(),
        ca = dir.join("test-ca.pem").display(),
        url = fake.url(),
        id = o.client_id,
        secret = o.client_secret,
    )
}

impl Fleet {
    /// A fake provider, one login stored in Redis, and `n` instances serving it.
    async fn start(n: usize, redis: &RedisServer, lifetime: Duration) -> Fleet {
        let mut fleet = Fleet::new(redis, lifetime, None).await;
        for _ in 0..n {
            fleet.spawn_via(&redis.url());
        }
        for i in 0..n {
            fleet.ready(i).await;
        }
        fleet
    }

    /// A fake provider and one login stored in Redis, no instance yet; `lease_ttl` for the
    /// instances to come.
    async fn new(redis: &RedisServer, lifetime: Duration, lease_ttl: Option<Duration>) -> Fleet {
        let ca = TestCa::new();
        let dir = tempfile::tempdir().unwrap();
        ca.write_ca_file(dir.path());
        let fake = OAuth2Fake::start_with(
            &ca,
            OAuth2Options {
                lifetime,
                revoke_on_reuse: true,
                client_auth: ClientAuth::Either,
                ..OAuth2Options::default()
            },
        )
        .await;
        let fleet = Fleet {
            lifetime,
            dir,
            fake,
            redis_url: redis.url(),
            lease_ttl,
            instances: Vec::new(),
        };
        fleet.login().await;
        fleet
    }

    /// Waits until instance `i` listens.
    async fn ready(&self, i: usize) {
        // Twenty processes starting on two cores beside the rest of the suite: a generous
        // bound (readiness is polled, not waited out).
        let deadline = Instant::now() + Duration::from_secs(120);
        while tokio::net::TcpStream::connect(self.instances[i].listen)
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "instance {i} did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `credproxy login` against the Redis store, as a person would run it once.
    async fn login(&self) {
        let text = config_text(self.dir.path(), &self.fake, &self.redis_url, 0, 1);
        let config = credproxy::config::load_str(&text, "fleet.toml", &|_| None).unwrap();
        let store =
            credproxy::token::store::open(&config.proxy, &config.store, Arc::new(|_, _| {}))
                .unwrap();
        let roots = credproxy::tls::roots(config.proxy.ca_file.as_deref()).unwrap();
        let ctx = credproxy::token::EngineContext::new(
            credproxy::token::TokenHttp::new(roots).unwrap(),
            store,
            credproxy::clock::Clock::new(),
            tokio_util::sync::CancellationToken::new(),
        );
        let provider = config.provider("api").unwrap();
        credproxy::token::login_with_code(provider, &ctx, &self.fake.issue_code(), None, None)
            .await
            .unwrap();
    }

    /// Starts one more instance, using Redis at `redis_url` (the server's, or a relay's); its
    /// index.
    fn spawn_via(&mut self, redis_url: &str) -> usize {
        let i = self.instances.len();
        let (port, admin) = (free_port(), free_port());
        let config = self.dir.path().join(format!("credproxy-{i}.toml"));
        let text = config_with(
            self.dir.path(),
            &self.fake,
            redis_url,
            i,
            port,
            admin,
            self.lease_ttl,
        );
        std::fs::write(&config, text).unwrap();
        let log = std::fs::File::create(self.dir.path().join(format!("log-{i}.txt"))).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_credproxy"))
            .args(["run", "--workers", "1", "--config"])
            .arg(&config)
            .env("CREDPROXY_LOG", "warn,credproxy::access=info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.instances.push(Instance {
            child,
            listen: SocketAddr::from(([127, 0, 0, 1], port)),
            admin: SocketAddr::from(([127, 0, 0, 1], admin)),
            config,
        });
        i
    }

    fn logs(&self) -> String {
        (0..self.instances.len())
            .map(|i| {
                let text = std::fs::read_to_string(self.dir.path().join(format!("log-{i}.txt")))
                    .unwrap_or_default();
                // What went wrong, not every access line.
                let lines: String = text
                    .lines()
                    .filter(|l| !l.contains("status=200") && !l.contains(" INFO "))
                    .map(|l| format!("{l}\n"))
                    .collect();
                format!(
                    "--- instance {i} ({})\n{lines}",
                    self.instances[i].config.display()
                )
            })
            .collect()
    }
}

/// Requests through every instance for `duration`, one at a time per instance, every 25 ms:
/// (answered 200, anything else).
async fn load(
    fleet: &Fleet,
    duration: Duration,
    during: impl std::future::Future<Output = ()>,
) -> (usize, usize) {
    let all: Vec<usize> = (0..fleet.instances.len()).collect();
    load_on(fleet, &all, duration, during).await
}

/// [`load`] through the instances `which` only.
async fn load_on(
    fleet: &Fleet,
    which: &[usize],
    duration: Duration,
    during: impl std::future::Future<Output = ()>,
) -> (usize, usize) {
    let ok = Arc::new(AtomicUsize::new(0));
    let bad = Arc::new(AtomicUsize::new(0));
    let end = Instant::now() + duration;
    let tasks: Vec<_> = which
        .iter()
        .map(|&i| {
            let (addr, ok, bad) = (fleet.instances[i].listen, ok.clone(), bad.clone());
            tokio::spawn(async move {
                // One keep-alive connection per instance (a new one after a failure): a fresh
                // connection per request would leave thousands in TIME_WAIT and run the
                // machine out of ephemeral ports, failing requests for the test's own reason.
                let mut conn = None;
                let mut tick = tokio::time::interval(Duration::from_millis(25));
                while Instant::now() < end {
                    tick.tick().await;
                    match get(addr, &mut conn).await {
                        Some(200) => ok.fetch_add(1, Ordering::Relaxed),
                        other => {
                            eprintln!("{addr}: {other:?}");
                            conn = None;
                            bad.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            })
        })
        .collect();
    during.await;
    for t in tasks {
        t.await.unwrap();
    }
    (ok.load(Ordering::Relaxed), bad.load(Ordering::Relaxed))
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn get(addr: SocketAddr, conn: &mut Option<Sender>) -> Option<u16> {
    if conn.as_ref().is_none_or(|c| c.is_closed()) {
        let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
        let (tx, c) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .ok()?;
        tokio::spawn(c);
        *conn = Some(tx);
    }
    let tx = conn.as_mut()?;
    tx.ready().await.ok()?;
    let req = http::Request::get("http://api.test/items")
        .header("host", "api.test")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = tx.send_request(req).await.ok()?;
    let status = resp.status().as_u16();
    resp.into_body().collect().await.ok()?;
    Some(status)
}

fn report(name: &str, fleet: &Fleet, duration: Duration, ok: usize, bad: usize) {
    eprintln!(
        "{name}: {} instances, {duration:?} of load with {:?} tokens: {ok} requests 200, \
         {bad} other; token calls: {} refresh + {} code; refresh token reuse: {}; grants revoked: {}",
        fleet.instances.len(),
        fleet.lifetime,
        fleet.fake.refresh_grants(),
        fleet.fake.authorization_code_grants(),
        fleet.fake.refresh_reuse(),
        fleet.fake.grants_revoked(),
    );
}

fn assert_one_fleet(fleet: &Fleet, duration: Duration, ok: usize, bad: usize) {
    let logs = || fleet.logs();
    assert_eq!(bad, 0, "requests not answered 200\n{}", logs());
    assert!(ok > 0);
    assert_eq!(
        fleet.fake.refresh_reuse(),
        0,
        "a refresh token was spent twice\n{}",
        logs()
    );
    assert_eq!(fleet.fake.grants_revoked(), 0);
    // The schedule refreshes at half to three quarters of the lifetime: one fleet makes about
    // duration / (that) calls; N fleets acting alone would make N times as many.
    let refreshes = fleet.fake.refresh_grants();
    let most = (duration.as_secs_f64() / (fleet.lifetime.as_secs_f64() * 0.4)).ceil() as usize + 1;
    assert!(
        (1..=most).contains(&refreshes),
        "{refreshes} refresh calls in {duration:?} (at most {most} for one fleet)\n{}",
        logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_instances_share_one_rotating_refresh_token() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let fleet = Fleet::start(20, &redis, LIFETIME).await;
    let duration = Duration::from_secs(20);
    let (ok, bad) = load(&fleet, duration, async {}).await;
    report("fleet", &fleet, duration, ok, bad);
    assert_one_fleet(&fleet, duration, ok, bad);
    // No token (the fake's start `oauth2_at_` / `oauth2_rt_`) nor the store key in any log,
    // warnings and access lines included.
    let all: String = (0..fleet.instances.len())
        .map(|i| std::fs::read_to_string(fleet.dir.path().join(format!("log-{i}.txt"))).unwrap())
        .collect();
    for secret in ["oauth2_at_", "oauth2_rt_", KEY] {
        assert!(!all.contains(secret), "{secret} in the logs");
    }
}

/// Redis killed mid-load and started again 2 s later, empty (nothing persisted): the instances
/// serve the tokens they hold meanwhile, each says `store_unavailable` on `/status` within 2 s,
/// and after the restart they write the newest token back, say so no more, and refresh as one.
///
/// 20 s tokens: the outage ends before the first refresh is due (at half to three quarters of
/// the lifetime), so every request can be served. With 5 s tokens an outage that overlaps the
/// refresh of a login grant leaves no token once the old one expires: no refresh token is
/// spent without the lease, by design (docs/DEPLOYMENT.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_empty_mid_load_costs_no_request_and_no_reuse() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let port = redis.port();
    let fleet = Fleet::start(6, &redis, Duration::from_secs(20)).await;
    let duration = Duration::from_secs(18);
    let restarted = Arc::new(parking_lot::Mutex::new(None));
    let (mut shown, mut cleared) = (Duration::ZERO, Duration::ZERO);
    let (ok, bad) = load(&fleet, duration, async {
        tokio::time::sleep(Duration::from_secs(5)).await;
        drop(redis);
        // Every instance says so on `/status` within 2 s.
        let killed = Instant::now();
        for instance in &fleet.instances {
            while !instance
                .admin_get("/status")
                .await
                .contains("store_unavailable")
            {
                assert!(
                    killed.elapsed() < Duration::from_secs(2),
                    "store_unavailable not shown within 2 s"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        shown = killed.elapsed();
        tokio::time::sleep(Duration::from_secs(2).saturating_sub(killed.elapsed())).await;
        *restarted.lock() = RedisServer::start_on(port);
        let back = Instant::now();
        for instance in &fleet.instances {
            while instance
                .admin_get("/status")
                .await
                .contains("store_unavailable")
            {
                assert!(
                    back.elapsed() < Duration::from_secs(3),
                    "still store_unavailable 3 s after Redis was back"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        cleared = back.elapsed();
    })
    .await;
    eprintln!(
        "redis restart: store_unavailable on every instance's /status {shown:?} after the kill, \
         gone from all {cleared:?} after the restart"
    );
    report("redis restart", &fleet, duration, ok, bad);
    assert_one_fleet(&fleet, duration, ok, bad);
    let back = restarted.lock().take().unwrap();
    assert_eq!(
        back.cli(&["HEXISTS", "fleet:token:api", "v"]).trim(),
        "1",
        "written back"
    );
}

fn credproxy(args: &[&str], config: &Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_credproxy"))
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// Issue 18 item 7: `check --online` connects to the Redis store, `status` reads it (the proxy
/// not running), `token` prints the shared token, and `check` and `status` say
/// `store_unavailable` plainly when Redis is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_online_and_status_work_on_the_redis_store() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let fleet = Fleet::start(0, &redis, LIFETIME).await;
    let config = fleet.dir.path().join("alone.toml");
    std::fs::write(
        &config,
        config_text(
            fleet.dir.path(),
            &fleet.fake,
            &fleet.redis_url,
            0,
            free_port(),
        ),
    )
    .unwrap();
    let check = ["check", "--online"];
    let (code, out) = credproxy(&check, &config);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("store  ok: Redis answers at {}", redis.url())),
        "{out}"
    );
    let (code, out) = credproxy(&["status"], &config);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("store: redis ok"), "{out}");
    let api = out
        .lines()
        .find(|l| l.starts_with("api"))
        .unwrap_or_default();
    // The login's token, read from Redis (5 s tokens: it may have expired by now).
    assert!(api.contains("stored") || api.contains("expired"), "{out}");
    assert!(!api.contains("no_token"), "{out}");

    // `credproxy token` gets the shared token (refreshing it under the lease if it expired).
    let (code, out) = credproxy(&["token", "api"], &config);
    assert_eq!(code, 0, "{out}");
    assert!(out.trim().starts_with("oauth2_at_"), "{out}");
    assert!(fleet.fake.is_valid_token(out.trim()), "{out}");

    // `credproxy logout` forgets the shared token in Redis: `token` then has none to give.
    let (code, out) = credproxy(&["logout", "api"], &config);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        redis.cli(&["HEXISTS", "fleet:token:api", "v"]).trim(),
        "0",
        "the token is gone from Redis: {out}"
    );
    let (code, out) = credproxy(&["token", "api"], &config);
    assert_ne!(code, 0, "no token after the logout: {out}");
    assert!(out.contains("login"), "says to log in again: {out}");

    drop(redis);
    let (code, out) = credproxy(&check, &config);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("store  failed: Redis can't be reached"),
        "{out}"
    );
    let (code, out) = credproxy(&["status"], &config);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("store_unavailable"), "{out}");
    assert!(!out.contains(KEY), "{out}");
}
