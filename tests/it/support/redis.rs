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

pub struct RedisServer {
    child: Child,
    port: u16,
}

impl RedisServer {
    /// A fresh server, or `None` (with a message) when `redis-server` is not installed.
    pub fn start() -> Option<RedisServer> {
        Self::start_on(super::server::free_port())
    }

    /// A server on `port` (a restart of one that was stopped uses the same port).
    pub fn start_on(port: u16) -> Option<RedisServer> {
        let spawned = Command::new("redis-server")
            .args(["--save", "", "--appendonly", "no", "--bind", "127.0.0.1"])
            .args(["--port", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
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
        let server = RedisServer { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
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

impl Drop for RedisServer {
    fn drop(&mut self) {
        // A stopped server ignores TERM until continued; KILL ends it either way.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
