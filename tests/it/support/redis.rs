//! A real `redis-server` for the Redis store's tests: started on a free loopback port with
//! nothing persisted (`--save "" --appendonly no`), stopped by its PID when dropped.
//!
//! `.ci/run` installs the Debian package; where the binary is missing, [`RedisServer::start`]
//! returns `None` and prints why, and the test returns early.

// A child process outside any tokio runtime: waiting for it to listen uses the real clock.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use credproxy::token::store::RedisStore;
use credproxy::token::store::redis::{Endpoint, LEASE_TTL, RedisOptions, StoreEvents};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Launch {
    Server,
    /// A server that may refuse its arguments (TLS in a build without it): `None`, not a panic.
    MayRefuse,
    Sentinel,
}

pub struct RedisServer {
    child: Child,
    port: u16,
    /// Its working directory: a replica's full sync writes an RDB file there even with
    /// nothing persisted, and it must not land in the checkout.
    _dir: tempfile::TempDir,
}

impl RedisServer {
    /// A fresh server, or `None` (with a message) when `redis-server` is not installed.
    pub fn start() -> Option<RedisServer> {
        Self::start_on(super::server::free_port())
    }

    /// A server on `port` (a restart of one that was stopped uses the same port).
    pub fn start_on(port: u16) -> Option<RedisServer> {
        Self::launch(port, &["--port".to_owned(), port.to_string()])
    }

    /// A server answering TLS only on a free port, with a leaf of `ca` for `localhost`
    /// (`rediss://localhost:PORT`); `None` (with a message) when this redis-server was built
    /// without TLS. The files go into `dir`.
    pub fn start_tls(ca: &super::TestCa, dir: &std::path::Path) -> Option<RedisServer> {
        let (cert, key) = ca.write_leaf_files(dir);
        let ca_file = ca.write_ca_file(dir);
        let port = super::server::free_port();
        let args: Vec<String> = [
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--tls-auth-clients",
            "no",
        ]
        .iter()
        .map(|a| (*a).to_owned())
        .chain(
            [
                ("--tls-cert-file", &cert),
                ("--tls-key-file", &key),
                ("--tls-ca-cert-file", &ca_file),
            ]
            .into_iter()
            .flat_map(|(k, v)| [k.to_owned(), v.display().to_string()]),
        )
        .collect();
        let server = Self::launch_with(port, &args, Launch::MayRefuse);
        if server.is_none() {
            eprintln!(
                "SKIPPED: redis-server refused --tls-port (built without TLS?); the rediss:// test \
                 needs one built with TLS, as Debian's is"
            );
        }
        server
    }

    /// A Sentinel (`redis-server CONF --sentinel`) on a free port watching `primary` as
    /// `SERVICE`, its config file (Sentinel rewrites it) in `dir`.
    pub fn start_sentinel(
        primary: &RedisServer,
        service: &str,
        dir: &std::path::Path,
    ) -> Option<RedisServer> {
        let port = super::server::free_port();
        let conf = dir.join(format!("sentinel-{port}.conf"));
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\nsentinel monitor {service} 127.0.0.1 {} 1\n\
                 sentinel down-after-milliseconds {service} 1000\nsentinel failover-timeout {service} 5000\n",
                primary.port
            ),
        )
        .unwrap();
        Self::launch_with(
            port,
            &[conf.display().to_string(), "--sentinel".to_owned()],
            Launch::Sentinel,
        )
    }

    /// A replica of `primary` on a free port.
    pub fn start_replica(primary: &RedisServer) -> Option<RedisServer> {
        let port = super::server::free_port();
        Self::launch(
            port,
            &[
                "--port".to_owned(),
                port.to_string(),
                "--replicaof".to_owned(),
                "127.0.0.1".to_owned(),
                primary.port.to_string(),
            ],
        )
    }

    fn launch(port: u16, args: &[String]) -> Option<RedisServer> {
        Self::launch_with(port, args, Launch::Server)
    }

    /// `redis-server ARGS` (a server: with nothing persisted, on loopback), once it listens on
    /// `port`.
    fn launch_with(port: u16, args: &[String], how: Launch) -> Option<RedisServer> {
        let dir = tempfile::tempdir().unwrap();
        let mut command = Command::new("redis-server");
        command.args(args);
        if how != Launch::Sentinel {
            command.args(["--save", "", "--appendonly", "no", "--bind", "127.0.0.1"]);
        }
        command.arg("--dir").arg(dir.path()).current_dir(dir.path());
        let spawned = command.stdout(Stdio::null()).stderr(Stdio::null()).spawn();
        let child = match spawned {
            Ok(c) => c,
            Err(e) => {
                eprintln!(
                    "SKIPPED: redis-server can't be started ({e}); install it with \
                     `apt-get install -y redis-server` (.ci/run does)"
                );
                return None;
            }
        };
        let mut server = RedisServer {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if how == Launch::MayRefuse && server.child.try_wait().ok().flatten().is_some() {
                return None;
            }
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(5));
        }
        Some(server)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Sends `signal` (`"STOP"`, `"CONT"`) to the server.
    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{signal} failed");
    }

    /// A store on this server with its own temp dir for kept tokens.
    pub fn store(&self, prefix: &str) -> (RedisStore, tempfile::TempDir) {
        self.store_with(prefix, LEASE_TTL, std::sync::Arc::new(|_, _| {}))
    }

    pub fn store_with(
        &self,
        prefix: &str,
        lease_ttl: Duration,
        events: StoreEvents,
    ) -> (RedisStore, tempfile::TempDir) {
        self.open(prefix, [42; 32], lease_ttl, events)
    }

    /// A store whose kept tokens are in `pending_dir` (as after a restart of the process).
    pub fn store_in(
        &self,
        prefix: &str,
        pending_dir: &std::path::Path,
        events: StoreEvents,
    ) -> RedisStore {
        RedisStore::open(RedisOptions {
            endpoint: Endpoint::parse(&self.url()).unwrap(),
            key: [42; 32],
            key_prefix: prefix.to_owned(),
            pending_dir: pending_dir.to_owned(),
            root_cert: None,
            lease_ttl: LEASE_TTL,
            events,
        })
        .unwrap()
    }

    /// A store on `url` (rediss://, redis+sentinel://) trusting `root_cert`.
    pub fn store_at(url: &str, root_cert: Option<Vec<u8>>) -> (RedisStore, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = RedisStore::open(RedisOptions {
            endpoint: Endpoint::parse(url).unwrap(),
            key: [42; 32],
            key_prefix: "at".to_owned(),
            pending_dir: dir.path().join("redis-pending"),
            root_cert,
            lease_ttl: LEASE_TTL,
            events: std::sync::Arc::new(|_, _| {}),
        })
        .unwrap();
        (store, dir)
    }

    /// A store that seals with another key.
    pub fn store_with_key(&self, prefix: &str, key: [u8; 32]) -> (RedisStore, tempfile::TempDir) {
        self.open(prefix, key, LEASE_TTL, std::sync::Arc::new(|_, _| {}))
    }

    fn open(
        &self,
        prefix: &str,
        key: [u8; 32],
        lease_ttl: Duration,
        events: StoreEvents,
    ) -> (RedisStore, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = RedisStore::open(RedisOptions {
            endpoint: Endpoint::parse(&self.url()).unwrap(),
            key,
            key_prefix: prefix.to_owned(),
            pending_dir: dir.path().join("redis-pending"),
            root_cert: None,
            lease_ttl,
            events,
        })
        .unwrap();
        (store, dir)
    }

    /// Runs a redis-cli command against the server; its standard output.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "--raw"])
            .args(args)
            .output()
            .expect("redis-cli runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl RedisServer {
    /// [`RedisServer::cli`] off the async threads.
    pub async fn cli_async(&self, args: &[&str]) -> String {
        let port = self.port;
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        tokio::task::spawn_blocking(move || {
            let out = Command::new("redis-cli")
                .args(["-p", &port.to_string(), "--raw"])
                .args(&args)
                .output()
                .expect("redis-cli runs");
            String::from_utf8_lossy(&out.stdout).into_owned()
        })
        .await
        .unwrap()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // A stopped server ignores TERM until continued; KILL ends it either way.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Which command a [`Relay`] holds: a point in an instance's store calls where the test stops
/// or kills the process, picked without a hook in credproxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hold {
    /// The first read of the token after a lease was taken (`SET <lease> … NX` answered `+OK`,
    /// then `HMGET`): the instance holds the lease and has not made its token call yet.
    LoadUnderLease,
    /// The first commit (the one script that names both the token and the lease key): the
    /// instance has its new token, staged just before, and has not committed it.
    Commit,
    /// The first script after a lease was taken that names the token key and not the lease
    /// key: under the lease, the stage of a new token before its commit.
    Stage,
}

/// A TCP relay between one instance and a redis-server that holds one command (and everything
/// after it on that connection) until [`Relay::release`]: the instance waits in that call, at
/// most its 1 s call timeout, as if it had stopped there. Stopped when dropped.
pub struct Relay {
    port: u16,
    state: std::sync::Arc<RelayState>,
    released: tokio::sync::watch::Sender<bool>,
    cancel: tokio_util::sync::CancellationToken,
}

struct RelayState {
    hold: Hold,
    lease_key: Vec<u8>,
    token_key: Vec<u8>,
    /// A `SET <lease> … NX` was sent; its answer says if the lease was taken.
    lease_asked: std::sync::atomic::AtomicBool,
    lease_taken: std::sync::atomic::AtomicBool,
    held: std::sync::atomic::AtomicBool,
    /// Asked the moment the command is held (not when a test gets round to looking: the
    /// instance gives up on a held call after 1 s, and may have moved on by then).
    probe: parking_lot::Mutex<Option<Box<dyn Fn() -> bool + Send + Sync>>>,
    probed: parking_lot::Mutex<Option<bool>>,
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

impl RelayState {
    /// Whether `chunk` (one command: the blocking client writes each at once and waits for
    /// its answer) is the one to hold.
    fn holds(&self, chunk: &[u8]) -> bool {
        use std::sync::atomic::Ordering::SeqCst;
        if self.held.load(SeqCst) {
            return false;
        }
        if contains(chunk, &self.lease_key) && contains(chunk, b"NX") {
            self.lease_asked.store(true, SeqCst);
        }
        let hit = match self.hold {
            Hold::LoadUnderLease => self.lease_taken.load(SeqCst) && contains(chunk, b"HMGET"),
            Hold::Commit => contains(chunk, &self.token_key) && contains(chunk, &self.lease_key),
            Hold::Stage => {
                self.lease_taken.load(SeqCst)
                    && contains(chunk, b"EVALSHA")
                    && contains(chunk, &self.token_key)
                    && !contains(chunk, &self.lease_key)
            }
        };
        let held = hit && !self.held.swap(true, SeqCst);
        if held && let Some(probe) = self.probe.lock().as_ref() {
            *self.probed.lock() = Some(probe());
        }
        held
    }

    fn answered(&self, chunk: &[u8]) {
        use std::sync::atomic::Ordering::SeqCst;
        // The instance's health pings run on a connection of their own: their answer, arriving
        // between the lease's SET and its +OK, is not the lease's answer.
        if chunk.starts_with(b"+PONG") {
            return;
        }
        if self.lease_asked.swap(false, SeqCst) && chunk.starts_with(b"+OK") {
            self.lease_taken.store(true, SeqCst);
        }
    }
}

impl Relay {
    /// A relay to the server on `redis_port`, holding `hold` for `prefix`'s `provider`.
    pub async fn start(redis_port: u16, prefix: &str, provider: &str, hold: Hold) -> Relay {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = std::sync::Arc::new(RelayState {
            hold,
            lease_key: format!("{prefix}:lease:{provider}").into_bytes(),
            token_key: format!("{prefix}:token:{provider}").into_bytes(),
            lease_asked: Default::default(),
            lease_taken: Default::default(),
            held: Default::default(),
            probe: Default::default(),
            probed: Default::default(),
        });
        let (released, _) = tokio::sync::watch::channel(false);
        let cancel = tokio_util::sync::CancellationToken::new();
        let (accept_state, accept_released, accept_cancel) =
            (state.clone(), released.clone(), cancel.clone());
        tokio::spawn(accept_cancel.clone().run_until_cancelled_owned(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", redis_port)).await
                else {
                    continue;
                };
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let down = accept_state.clone();
                tokio::spawn(accept_cancel.clone().run_until_cancelled_owned(async move {
                    let mut buf = vec![0; 64 * 1024];
                    while let Ok(n @ 1..) = sr.read(&mut buf).await {
                        down.answered(&buf[..n]);
                        if cw.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                }));
                let (up, mut released) = (accept_state.clone(), accept_released.subscribe());
                tokio::spawn(accept_cancel.clone().run_until_cancelled_owned(async move {
                    let mut buf = vec![0; 64 * 1024];
                    while let Ok(n @ 1..) = cr.read(&mut buf).await {
                        if up.holds(&buf[..n]) {
                            let _ = released.wait_for(|r| *r).await;
                        }
                        if sw.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                }));
            }
        }));
        Relay {
            port,
            state,
            released,
            cancel,
        }
    }

    /// `redis://127.0.0.1:PORT/0`, for the instance to use instead of the server's.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Waits until the command is held, failing after `limit`.
    pub async fn wait_held(&self, limit: Duration) {
        let start = Instant::now();
        while !self.state.held.load(std::sync::atomic::Ordering::SeqCst) {
            assert!(
                start.elapsed() < limit,
                "the relay held no {:?} within {limit:?}",
                self.state.hold
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// `probe` is asked the moment the command is held; [`Relay::probed`] says what it answered.
    pub fn probe_on_hold(&self, probe: impl Fn() -> bool + Send + Sync + 'static) {
        *self.state.probe.lock() = Some(Box::new(probe));
    }

    /// What the probe answered when the command was held (`None`: not held yet, or no probe).
    pub fn probed(&self) -> Option<bool> {
        *self.state.probed.lock()
    }

    /// Sends the held command on, and relays everything from now on.
    pub fn release(&self) {
        self.released.send_replace(true);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}
