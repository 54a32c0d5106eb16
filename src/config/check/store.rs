//! The `[store]` section: `kind` ("file", the default, or "redis"), and for Redis its `url`
//! (redis://, rediss://, redis+sentinel://), the required `encryption_key` (32 bytes, base64, a
//! secret like the others), `key_prefix` (default "credproxy") and `lease_ttl` (default 90 s).

use base64::Engine as _;
use toml::Spanned;

use super::Ctx;
use crate::config::file::FileStore;
use crate::config::{RedisSettings, StoreKey, StoreSettings};
use crate::token::store::redis::{Endpoint, LEASE_TTL, MIN_LEASE_TTL};

const MAKE_KEY: &str = "make one with `head -c 32 /dev/urandom | base64`";

impl Ctx<'_> {
    /// Check `[store]`; the file store when there is none (or it has an error: the error is
    /// recorded, and the config is refused).
    pub(in crate::config) fn store(&mut self, s: Option<&Spanned<FileStore>>) -> StoreSettings {
        let Some(s) = s else {
            return StoreSettings::File;
        };
        let span = s.span();
        let s = s.get_ref();
        let kind = match &s.kind {
            None => None,
            Some(k) => self.string(k, "store.kind").map(|v| (v, k.span())),
        };
        match kind.as_ref().map(|(v, span)| (v.as_str(), span.clone())) {
            None | Some(("file", _)) => {
                for (set, key) in [
                    (s.url.is_some(), "store.url"),
                    (s.encryption_key.is_some(), "store.encryption_key"),
                    (s.key_prefix.is_some(), "store.key_prefix"),
                    (s.lease_ttl.is_some(), "store.lease_ttl"),
                ] {
                    if set {
                        self.err(
                            span.clone(),
                            key,
                            "applies to kind = \"redis\" only; set kind = \"redis\" in [store], or remove it",
                        );
                    }
                }
                StoreSettings::File
            }
            Some(("redis", _)) => self
                .redis(s, span)
                .map_or(StoreSettings::File, StoreSettings::Redis),
            Some((other, span)) => {
                self.err(
                    span,
                    "store.kind",
                    format!("`{other}` is not one of \"file\", \"redis\""),
                );
                StoreSettings::File
            }
        }
    }

    fn redis(&mut self, s: &FileStore, span: std::ops::Range<usize>) -> Option<RedisSettings> {
        let url = match &s.url {
            None => {
                self.err(
                    span.clone(),
                    "store.url",
                    "is required with kind = \"redis\": the Redis URL, such as \
                     \"redis://127.0.0.1:6379/0\", \"rediss://…\" (TLS) or \
                     \"redis+sentinel://h1:26379,h2:26379/mymaster\"",
                );
                None
            }
            Some(u) => self
                .string(u, "store.url")
                .and_then(|v| match Endpoint::parse(&v) {
                    Ok(_) => Some(crate::secret::Secret::from(v)),
                    Err(e) => {
                        self.err(u.span(), "store.url", e);
                        None
                    }
                }),
        };
        let key = match &s.encryption_key {
            None => {
                self.err(
                    span,
                    "store.encryption_key",
                    format!(
                        "is required with kind = \"redis\" (tokens are encrypted in Redis): 32 random \
                         bytes in base64, given as {{ file = \"/run/secrets/credproxy-store-key\" }} \
                         or \"${{VAR}}\"; {MAKE_KEY}"
                    ),
                );
                None
            }
            Some(k) => {
                let secret = self.secret(k, "store.encryption_key");
                secret.and_then(|v| {
                    let decoded =
                        base64::engine::general_purpose::STANDARD.decode(v.expose().trim());
                    match decoded.map(<[u8; 32]>::try_from) {
                        Ok(Ok(bytes)) => Some(StoreKey(bytes)),
                        Ok(Err(bytes)) => {
                            self.err(
                                k.span.clone(),
                                "store.encryption_key",
                                format!(
                                    "must be 32 bytes in base64; this one decodes to {} bytes; {MAKE_KEY}",
                                    bytes.len()
                                ),
                            );
                            None
                        }
                        Err(_) => {
                            self.err(
                                k.span.clone(),
                                "store.encryption_key",
                                format!("is not base64 (32 random bytes, base64-encoded); {MAKE_KEY}"),
                            );
                            None
                        }
                    }
                })
            }
        };
        let key_prefix = match &s.key_prefix {
            None => Some("credproxy".to_owned()),
            Some(p) => self.string(p, "store.key_prefix").and_then(|v| {
                let ok = !v.is_empty()
                    && v.chars()
                        .all(|c| c.is_ascii_graphic() && c != '{' && c != '}');
                if ok {
                    Some(v)
                } else {
                    self.err(
                        p.span(),
                        "store.key_prefix",
                        format!(
                            "`{v}` can't prefix Redis keys: use printable ASCII without spaces or \
                             braces, such as \"credproxy\" or \"team-a:credproxy\""
                        ),
                    );
                    None
                }
            }),
        };
        let lease_ttl = self.lease_ttl(s);
        Some(RedisSettings {
            url: url?,
            encryption_key: key?,
            key_prefix: key_prefix?,
            lease_ttl: lease_ttl?,
        })
    }

    /// `lease_ttl`: at least [`MIN_LEASE_TTL`] (renewed every third of it, one call timeout
    /// each), at most ten minutes (a killed holder blocks refreshes that long).
    fn lease_ttl(&mut self, s: &FileStore) -> Option<std::time::Duration> {
        let Some(raw) = &s.lease_ttl else {
            return Some(LEASE_TTL);
        };
        let ttl = self.opt_duration(&s.lease_ttl, "store.lease_ttl")?;
        if ttl < MIN_LEASE_TTL || ttl > std::time::Duration::from_secs(600) {
            self.err(
                raw.span(),
                "store.lease_ttl",
                format!(
                    "must be between {}s and 10m (how long a stopped or killed instance keeps the \
                     others from refreshing; default \"90s\"), not {ttl:?}",
                    MIN_LEASE_TTL.as_secs()
                ),
            );
            return None;
        }
        Some(ttl)
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{StoreSettings, load_str};

    const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    fn env(name: &str) -> Option<String> {
        match name {
            "STORE_KEY" => Some(KEY.to_owned()),
            "SHORT_KEY" => Some("c2hvcnQ=".to_owned()),
            _ => None,
        }
    }

    fn errors(text: &str) -> Vec<(usize, String, String)> {
        match load_str(text, "c.toml", &env) {
            Ok(_) => Vec::new(),
            Err(e) => {
                e.0.into_iter()
                    .map(|e| (e.line, e.key, e.message))
                    .collect()
            }
        }
    }

    #[test]
    fn redis_store_is_checked_into_settings() {
        let text = "[store]\nkind = \"redis\"\nurl = \"redis://:pw@127.0.0.1:6379/2\"\nencryption_key = \"${STORE_KEY}\"\n";
        let config = load_str(text, "c.toml", &env).unwrap();
        let StoreSettings::Redis(r) = &config.store else {
            panic!("{:?}", config.store)
        };
        assert_eq!(r.key_prefix, "credproxy");
        assert_eq!(r.encryption_key.0[31], 31);
        let shown = format!("{:?}", config.store);
        assert!(!shown.contains("pw@") && !shown.contains(KEY), "{shown}");
        // No [store]: the file store.
        let config = load_str("", "c.toml", &env).unwrap();
        assert_eq!(config.store, StoreSettings::File);
    }

    #[test]
    fn lease_ttl_defaults_to_90s_and_is_bounded() {
        let base =
            "[store]\nkind = \"redis\"\nurl = \"redis://h\"\nencryption_key = \"${STORE_KEY}\"\n";
        let ttl = |extra: &str| match load_str(&format!("{base}{extra}"), "c.toml", &env)
            .unwrap()
            .store
        {
            StoreSettings::Redis(r) => r.lease_ttl,
            other => panic!("{other:?}"),
        };
        assert_eq!(ttl(""), std::time::Duration::from_secs(90));
        assert_eq!(
            ttl("lease_ttl = \"5s\"\n"),
            std::time::Duration::from_secs(5)
        );
        for bad in ["1s", "11m", "soon"] {
            let e = errors(&format!("{base}lease_ttl = \"{bad}\"\n"));
            assert_eq!((e[0].0, e[0].1.as_str()), (5, "store.lease_ttl"), "{e:?}");
        }
        let file = errors("[store]\nlease_ttl = \"5s\"\n");
        assert_eq!(file[0].1, "store.lease_ttl");
    }

    #[test]
    fn each_mistake_names_its_key_and_line_and_never_the_key() {
        let missing = errors("[store]\nkind = \"redis\"\n");
        let keys: Vec<_> = missing.iter().map(|e| e.1.as_str()).collect();
        assert_eq!(keys, ["store.url", "store.encryption_key"], "{missing:?}");
        assert!(missing[1].2.contains("/dev/urandom"), "{missing:?}");

        let short = errors(
            "[store]\nkind = \"redis\"\nurl = \"redis://h\"\nencryption_key = \"${SHORT_KEY}\"\n",
        );
        assert_eq!(short.len(), 1, "{short:?}");
        assert_eq!(
            (short[0].0, short[0].1.as_str()),
            (4, "store.encryption_key")
        );
        assert!(short[0].2.contains("decodes to 5 bytes"), "{short:?}");

        let garbage = errors(
            "[store]\nkind = \"redis\"\nurl = \"redis://h\"\nencryption_key = \"not base64 SECRETVALUE!\"\n",
        );
        assert!(garbage[0].2.contains("is not base64"), "{garbage:?}");
        assert!(!garbage[0].2.contains("SECRETVALUE"), "{garbage:?}");

        let url = errors(&format!(
            "[store]\nkind = \"redis\"\nurl = \"http://:hunter2@h\"\nencryption_key = \"{KEY}\"\n"
        ));
        assert_eq!((url[0].0, url[0].1.as_str()), (3, "store.url"));
        assert!(!url[0].2.contains("hunter2"), "{url:?}");

        let kind = errors("[store]\nkind = \"etcd\"\n");
        assert_eq!((kind[0].0, kind[0].1.as_str()), (2, "store.kind"));

        let file_with_url = errors("[store]\nurl = \"redis://h\"\n");
        assert_eq!(file_with_url[0].1, "store.url");
        assert!(
            file_with_url[0].2.contains("kind = \"redis\""),
            "{file_with_url:?}"
        );

        let prefix = errors(&format!(
            "[store]\nkind = \"redis\"\nurl = \"redis://h\"\nencryption_key = \"{KEY}\"\nkey_prefix = \"a b\"\n"
        ));
        assert_eq!((prefix[0].0, prefix[0].1.as_str()), (5, "store.key_prefix"));

        let typo = errors("[store]\nkind = \"redis\"\nurll = \"x\"\n");
        // Every error is reported: the unknown key beside the required ones it leaves missing.
        assert!(typo.iter().any(|e| e.2.contains("urll")), "{typo:?}");
    }
}
