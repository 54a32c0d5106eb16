//! Where Redis is and how to reach it: the `[store] url` parsed into an [`Endpoint`], and a
//! [`Link`] holding one blocking connection, made again after any failure.
//!
//! `redis://[user:password@]host[:port][/db]`, `rediss://…` for TLS (rustls; `[proxy] ca_file`
//! is trusted when set, else the system's roots), and
//! `redis+sentinel://[user:password@]h1:26379,h2:26379/SERVICE[/db]` (the password is the
//! primary's, as Sentinel deployments usually have it; the sentinels are asked without one).
//! Every call has a short timeout: a stopped or unreachable Redis fails a call in about a second
//! rather than hanging the refresher.

use std::time::Duration;

use parking_lot::Mutex;
use redis::{Client, Connection, IntoConnectionInfo, RedisConnectionInfo};

/// Connect and per-command timeout.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(1);

/// A parsed `[store] url`.
#[derive(Clone)]
pub struct Endpoint {
    kind: Kind,
    /// The URL with any password replaced by `***`, for messages.
    shown: String,
}

#[derive(Clone)]
enum Kind {
    Direct(redis::ConnectionInfo),
    Sentinel {
        sentinels: Vec<String>,
        service: String,
        node: RedisConnectionInfo,
    },
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

/// `user:password@` → `user:***@`.
fn hide_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((auth, host)) = rest.rsplit_once('@') else {
        return url.to_owned();
    };
    let user = auth.split_once(':').map_or("", |(u, _)| u);
    format!("{scheme}://{user}:***@{host}")
}

impl Endpoint {
    /// Parses a `[store] url`; the error says what was expected (and never repeats a password).
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        let shown = hide_password(url);
        if let Some(rest) = url.strip_prefix("redis+sentinel://") {
            return Self::sentinel(rest, shown);
        }
        if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
            return Err(format!(
                "`{shown}` is not a Redis URL: expected redis://HOST:PORT/DB, rediss://… (TLS) or \
                 redis+sentinel://H1:26379,H2:26379/SERVICE"
            ));
        }
        let info = url
            .into_connection_info()
            .map_err(|_| format!("`{shown}` is not a valid Redis URL (redis://HOST:PORT/DB)"))?;
        Ok(Endpoint {
            kind: Kind::Direct(info),
            shown,
        })
    }

    fn sentinel(rest: &str, shown: String) -> Result<Endpoint, String> {
        let expected = || {
            format!(
                "`{shown}` is not a Sentinel URL: expected \
                 redis+sentinel://H1:26379,H2:26379/SERVICE (the primary's name in Sentinel)"
            )
        };
        let (auth, rest) = match rest.rsplit_once('@') {
            Some((auth, rest)) => (Some(auth), rest),
            None => (None, rest),
        };
        let (hosts, path) = rest.split_once('/').ok_or_else(expected)?;
        let mut path = path.split('/').filter(|s| !s.is_empty());
        let service = path.next().ok_or_else(expected)?.to_owned();
        let db = match path.next() {
            Some(db) => db.parse::<i64>().map_err(|_| expected())?,
            None => 0,
        };
        if path.next().is_some() {
            return Err(expected());
        }
        let mut sentinels = Vec::new();
        for host in hosts.split(',') {
            let (name, port) = host.rsplit_once(':').unwrap_or((host, "26379"));
            if name.is_empty() || port.parse::<u16>().is_err() {
                return Err(expected());
            }
            sentinels.push(format!("redis://{name}:{port}"));
        }
        let mut node = RedisConnectionInfo::default().set_db(db);
        if let Some(auth) = auth {
            let (user, password) = auth.split_once(':').unwrap_or(("", auth));
            if !user.is_empty() {
                node = node.set_username(user);
            }
            if !password.is_empty() {
                node = node.set_password(password);
            }
        }
        Ok(Endpoint {
            kind: Kind::Sentinel {
                sentinels,
                service,
                node,
            },
            shown,
        })
    }

    /// A client for the primary: for a direct URL, its node; behind Sentinel, `primary`
    /// (`host`, `port`: asked of the sentinels beforehand, [`Endpoint::ask_sentinels`]).
    fn client(
        &self,
        root_cert: Option<&[u8]>,
        primary: Option<&(String, u16)>,
    ) -> redis::RedisResult<Client> {
        if let (Kind::Sentinel { node, .. }, Some((host, port))) = (&self.kind, primary) {
            let info = redis::ConnectionAddr::Tcp(host.clone(), *port)
                .into_connection_info()?
                .set_redis_settings(node.clone());
            return Client::open(info);
        }
        match &self.kind {
            Kind::Direct(info) => match root_cert {
                Some(pem) if matches!(info.addr(), redis::ConnectionAddr::TcpTls { .. }) => {
                    Client::build_with_tls(
                        info.clone(),
                        redis::TlsCertificates {
                            client_tls: None,
                            root_cert: Some(pem.to_vec()),
                        },
                    )
                }
                _ => Client::open(info.clone()),
            },
            // Connected only to a primary the sentinels named (above).
            Kind::Sentinel { .. } => Err(redis::RedisError::from((
                redis::ErrorKind::Client,
                "no primary known yet; the sentinels were not asked",
            ))),
        }
    }

    /// Behind Sentinel: asks the sentinels in turn which node is the primary of the service,
    /// each with [`CALL_TIMEOUT`] to connect and to answer, so a sentinel that is down or
    /// stopped costs about two seconds and never hangs the caller. `None` for a direct URL.
    fn ask_sentinels(&self) -> redis::RedisResult<Option<(String, u16)>> {
        let Kind::Sentinel {
            sentinels, service, ..
        } = &self.kind
        else {
            return Ok(None);
        };
        let mut last = None;
        for url in sentinels {
            let asked = (|| {
                let mut conn =
                    Client::open(url.as_str())?.get_connection_with_timeout(CALL_TIMEOUT)?;
                conn.set_read_timeout(Some(CALL_TIMEOUT))?;
                conn.set_write_timeout(Some(CALL_TIMEOUT))?;
                redis::cmd("SENTINEL")
                    .arg("GET-MASTER-ADDR-BY-NAME")
                    .arg(service)
                    .query::<Option<(String, u16)>>(&mut conn)
            })();
            match asked {
                Ok(Some(primary)) => return Ok(Some(primary)),
                Ok(None) => {
                    last = Some(redis::RedisError::from((
                        redis::ErrorKind::Client,
                        "the sentinels know no primary by that service name",
                    )))
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            redis::RedisError::from((redis::ErrorKind::Client, "no sentinel is configured"))
        }))
    }
}

/// One connection to the primary, shared by a store's calls (each call is one command or one
/// script, so holding the mutex for it is short) and made again after any failure.
///
/// Behind Sentinel, the primary can change while its old connection still works (the old
/// primary answers, as a primary, until Sentinel turns it into a replica, and what it takes
/// meanwhile is lost): [`Link::primary_moved`] asks the sentinels, and a new primary drops the
/// connection (and bumps [`Link::primary_epoch`], for the subscriber's).
pub struct Link {
    endpoint: Endpoint,
    root_cert: Option<Vec<u8>>,
    conn: Mutex<Option<Connection>>,
    /// The primary the sentinels last named, behind Sentinel (host, port): what connections
    /// go to, so a call never waits on a sentinel.
    primary: Mutex<Option<(String, u16)>>,
    epoch: std::sync::atomic::AtomicU64,
}

impl Link {
    pub fn new(endpoint: Endpoint, root_cert: Option<Vec<u8>>) -> Link {
        Link {
            endpoint,
            root_cert,
            conn: Mutex::new(None),
            primary: Mutex::new(None),
            epoch: std::sync::atomic::AtomicU64::new(0),
        }
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// A fresh connection of its own (for the subscriber), with the call timeouts set. Behind
    /// Sentinel, to the primary last found by the sentinel thread ([`Link::primary_moved`]);
    /// the sentinels are asked here (with timeouts) only while none was found yet.
    pub fn connect(&self) -> redis::RedisResult<Connection> {
        let mut primary = self.primary.lock().clone();
        if self.is_sentinel() && primary.is_none() {
            primary = self.endpoint.ask_sentinels()?;
            *self.primary.lock() = primary.clone();
        }
        let client = self
            .endpoint
            .client(self.root_cert.as_deref(), primary.as_ref())?;
        let conn = client.get_connection_with_timeout(CALL_TIMEOUT)?;
        conn.set_read_timeout(Some(CALL_TIMEOUT))?;
        conn.set_write_timeout(Some(CALL_TIMEOUT))?;
        Ok(conn)
    }

    pub fn is_sentinel(&self) -> bool {
        matches!(self.endpoint.kind, Kind::Sentinel { .. })
    }

    /// Behind Sentinel: asks the sentinels which node is the primary now; if another than the
    /// one connected to, drops the connection (the next call connects to the new one) and
    /// returns `true`. Always `false` for a direct URL.
    pub fn primary_moved(&self) -> redis::RedisResult<bool> {
        if !self.is_sentinel() {
            return Ok(false);
        }
        let Some(now) = self.endpoint.ask_sentinels()? else {
            return Ok(false);
        };
        let moved = {
            let mut primary = self.primary.lock();
            let moved = primary.as_ref().is_some_and(|p| *p != now);
            *primary = Some(now);
            moved
        };
        if moved {
            *self.conn.lock() = None;
            self.epoch.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tracing::warn!(
                url = %self.endpoint,
                "the Redis primary changed (a Sentinel failover); connecting to the new one"
            );
        }
        Ok(moved)
    }

    /// Bumped each time [`Link::primary_moved`] finds a new primary.
    pub fn primary_epoch(&self) -> u64 {
        self.epoch.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Runs `f` on the shared connection, connecting first if needed. After any error the
    /// connection is dropped and the next call connects again: a timed-out connection may still
    /// deliver the old answer later, and would hand it to the next command.
    pub fn call<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> redis::RedisResult<T>,
    ) -> redis::RedisResult<T> {
        let mut slot = self.conn.lock();
        let conn = match slot.as_mut() {
            Some(c) => c,
            None => slot.insert(self.connect()?),
        };
        let result = f(conn);
        if result.is_err() {
            *slot = None;
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        for ok in [
            "redis://127.0.0.1:6379/0",
            "redis://:pw@h",
            "rediss://cache.example:6380",
            "redis+sentinel://h1:26379,h2:26379/mymaster",
            "redis+sentinel://:pw@h1,h2:5000/mymaster/3",
        ] {
            assert!(Endpoint::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://h",
            "127.0.0.1:6379",
            "redis+sentinel://h1:26379",
            "redis+sentinel://h1:x/m",
            "redis+sentinel://h1/m/notadb",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
        let e = Endpoint::parse("ftp://u:hunter2@h").unwrap_err();
        assert!(!e.contains("hunter2") && e.contains("u:***@h"), "{e}");
        let shown = Endpoint::parse("redis://:hunter2@h:1/0")
            .unwrap()
            .to_string();
        assert_eq!(shown, "redis://:***@h:1/0");
        let e = Endpoint::parse("redis+sentinel://:hunter2@h").unwrap_err();
        assert!(!e.contains("hunter2"), "{e}");
    }
}
