//! The serde picture of the TOML file: what the user wrote, before any checking.
//!
//! Every table denies unknown keys (a typo must be an error, not a silently ignored setting).
//! String values are [`Spanned`] so validation can point at the line that is wrong. Nothing past
//! `config/` sees these types: `validate.rs` turns them into [`super::Config`].

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

/// A string as written, with its place in the file.
pub type Str = Spanned<String>;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub proxy: FileProxy,
    #[serde(default)]
    pub providers: BTreeMap<String, Spanned<FileProvider>>,
    #[serde(default)]
    pub routes: Vec<Spanned<FileRoute>>,
    pub store: Option<Spanned<FileStore>>,
    /// `[callers.NAME]`: named local callers, each with its own secret.
    #[serde(default)]
    pub callers: BTreeMap<String, Spanned<FileCaller>>,
}

/// `[callers.NAME]`: a local caller's secret and the providers it may use.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileCaller {
    pub secret: Option<FileSecret>,
    pub providers: Option<Vec<Str>>,
}

/// `[store]`: where tokens are kept (the state directory, or Redis shared by N instances).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileStore {
    pub kind: Option<Str>,
    pub url: Option<Str>,
    pub encryption_key: Option<FileSecret>,
    pub key_prefix: Option<Str>,
    pub lease_ttl: Option<Str>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileProxy {
    pub listen: Option<Str>,
    pub admin_listen: Option<Str>,
    pub state_dir: Option<Str>,
    pub unknown_hosts: Option<Str>,
    pub pass_private: Option<Vec<Str>>,
    pub ca_file: Option<Str>,
    pub intercept: Option<Str>,
    pub ca_name_constraints: Option<bool>,
    pub allow_remote: Option<bool>,
    pub proxy_auth: Option<FileSecret>,
    pub socket_mode: Option<Spanned<FileMode>>,
    pub connect_timeout: Option<Str>,
    pub response_timeout: Option<Str>,
    pub header_timeout: Option<Str>,
    pub client_body_timeout: Option<Str>,
    pub shutdown_grace: Option<Str>,
    pub max_connections: Option<Spanned<i64>>,
    pub max_connections_per_client: Option<Spanned<i64>>,
    pub via: Option<bool>,
    pub audit_log: Option<Str>,
    pub h2_max_concurrent_streams: Option<Spanned<i64>>,
    pub h2_max_header_list_size: Option<Spanned<i64>>,
    pub h2_initial_stream_window: Option<Spanned<i64>>,
    pub h2_initial_connection_window: Option<Spanned<i64>>,
    pub h2_upstream_connections: Option<Spanned<i64>>,
}

/// `socket_mode = "0660"` or `socket_mode = 0o660`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum FileMode {
    Int(i64),
    Str(String),
}

/// A secret: a string (which may use `${VAR}`), `{ file = "/run/secrets/x" }`, or
/// `{ command = ["op", "read", "op://vault/item/field"], ttl = "10m" }`.
#[derive(Debug)]
pub struct FileSecret {
    pub span: std::ops::Range<usize>,
    pub source: SecretSource,
}

pub enum SecretSource {
    Value(String),
    File(String),
    Command {
        argv: Vec<String>,
        ttl: Option<String>,
    },
}

/// The value is the secret itself (or `${VAR}` text around it): never shown. A command shows
/// its program only (an argument may carry a secret too).
impl std::fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretSource::Value(_) => f.write_str("Value([redacted])"),
            SecretSource::File(path) => f.debug_tuple("File").field(path).finish(),
            SecretSource::Command { argv, ttl } => f
                .debug_struct("Command")
                .field("program", &argv.first())
                .field("ttl", ttl)
                .finish_non_exhaustive(),
        }
    }
}

// Hand-written because `Spanned` can't sit inside an untagged enum (serde buffers the value and
// toml's span information is lost): the span is taken around the whole value instead. And
// because a derived struct also accepts a sequence: `client_secret = ["abc"]` became
// `{ file = "abc" }`, and the error named the secret as a file. Only a string or a table.
impl<'de> Deserialize<'de> for FileSecret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Spanned::<RawSecret>::deserialize(d)?;
        let span = raw.span();
        Ok(FileSecret {
            span,
            source: raw.into_inner().0,
        })
    }
}

struct RawSecret(SecretSource);

impl<'de> Deserialize<'de> for RawSecret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(RawSecretVisitor)
    }
}

struct RawSecretVisitor;

impl<'de> serde::de::Visitor<'de> for RawSecretVisitor {
    type Value = RawSecret;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(
            "a string such as \"${MY_SECRET}\", a table { file = \"/path\" }, or a table \
             { command = [\"prog\", \"arg\"], ttl = \"10m\" }",
        )
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawSecret, E> {
        Ok(RawSecret(SecretSource::Value(v.to_owned())))
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<RawSecret, E> {
        Ok(RawSecret(SecretSource::Value(v)))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<RawSecret, A::Error> {
        use serde::de::Error as _;
        let (mut file, mut command, mut ttl) = (None, None, None);
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "file" if file.is_none() => file = Some(map.next_value::<String>()?),
                "command" if command.is_none() => {
                    command = Some(map.next_value::<Vec<String>>()?);
                }
                "ttl" if ttl.is_none() => ttl = Some(map.next_value::<String>()?),
                "file" | "command" | "ttl" => {
                    return Err(A::Error::custom(format_args!("`{key}` is given twice")));
                }
                _ => return Err(A::Error::unknown_field(&key, &["file", "command", "ttl"])),
            }
        }
        match (file, command) {
            (Some(f), None) if ttl.is_none() => Ok(RawSecret(SecretSource::File(f))),
            (None, Some(argv)) => Ok(RawSecret(SecretSource::Command { argv, ttl })),
            (Some(_), Some(_)) => Err(A::Error::custom(
                "give either `file` or `command`, not both",
            )),
            (Some(_), None) => Err(A::Error::custom("`ttl` goes with `command`, not `file`")),
            (None, None) => Err(A::Error::missing_field("file")),
        }
    }
}

/// `inject = "bearer"`, or a table: `{ header = NAME, format = "..{token}.." }`,
/// `{ query = NAME }`, `{ basic = { username = U } }`.
#[derive(Debug, Deserialize)]
#[serde(
    untagged,
    expecting = "must be \"bearer\", or a table: { header = \"x-api-key\" } (with an optional format = \"token {token}\"), { query = \"key\" }, or { basic = { username = \"me\" } }"
)]
pub enum FileInject {
    Named(String),
    Table(FileInjectTable),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileInjectTable {
    pub header: Option<String>,
    pub format: Option<String>,
    pub query: Option<String>,
    pub basic: Option<FileBasic>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileBasic {
    pub username: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileProvider {
    pub preset: Option<Str>,
    pub hosts: Option<Vec<Str>>,
    pub upstream: Option<Str>,
    pub headers: Option<BTreeMap<String, FileSecret>>,
    pub allow_origins: Option<Vec<Str>>,
    pub forwarded: Option<bool>,
    pub inject: Option<Spanned<FileInject>>,
    /// What the credential may be used for: `allow` (when set, anything else is refused) and
    /// `deny` (checked first).
    pub allow: Option<Spanned<Vec<Spanned<FileRule>>>>,
    pub deny: Option<Spanned<Vec<Spanned<FileRule>>>>,

    // The credential.
    pub token: Option<FileSecret>,
    pub api_token: Option<FileSecret>,
    pub org_id: Option<FileSecret>,
    pub client_id: Option<Str>,
    pub client_secret: Option<FileSecret>,
    pub username: Option<Str>,
    pub email: Option<Str>,
    pub password: Option<FileSecret>,
    pub grant: Option<Str>,
    pub scopes: Option<Vec<Str>>,
    pub scope_separator: Option<Str>,
    pub token_format: Option<Str>,
    pub client_auth: Option<Str>,
    pub redirect_uri: Option<Str>,
    pub authorize_params: Option<BTreeMap<String, Str>>,
    pub token_params: Option<BTreeMap<String, Str>>,
    pub token_headers: Option<BTreeMap<String, FileSecret>>,
    pub request_fields: Option<BTreeMap<String, Str>>,
    pub reply_fields: Option<BTreeMap<String, Str>>,
    pub refresh_with_bearer: Option<bool>,
    pub pkce: Option<bool>,

    // Timing.
    pub default_lifetime: Option<Str>,
    pub refresh_before: Option<Str>,
    pub wait_for_token: Option<Str>,
    pub response_timeout: Option<Str>,
    pub expires_timezone: Option<Str>,
    pub api_token_lifetime: Option<Str>,

    // URLs a preset may need overridden.
    pub token_url: Option<Str>,
    pub authorize_url: Option<Str>,
    pub introspect_url: Option<Str>,
    pub revoke_url: Option<Str>,
    pub login_url: Option<Str>,
    pub mint_url: Option<Str>,
    pub org_url: Option<Str>,
    pub workspaces_url: Option<Str>,
    /// The authorization server's issuer identifier (RFC 8414), checked by `login`.
    pub issuer: Option<Str>,
}

/// One `allow` / `deny` rule: `{ methods = ["GET"], paths = ["/repos/acme/**"] }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRule {
    pub methods: Option<Spanned<Vec<Str>>>,
    pub paths: Option<Spanned<Vec<Str>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRoute {
    pub listen: Option<Str>,
    pub path_prefix: Option<Str>,
    /// Optional here so that a route without it is reported by the checker, with the others.
    pub provider: Option<Str>,
    pub require_auth: Option<bool>,
}

#[cfg(test)]
mod tests {
    use super::SecretSource;

    #[test]
    fn a_secret_source_never_shows_the_secret_in_debug() {
        let v = format!("{:?}", SecretSource::Value("s3cr3t-value".into()));
        assert_eq!(v, "Value([redacted])");
        let c = format!(
            "{:?}",
            SecretSource::Command {
                argv: vec!["vault".into(), "-token=s3cr3t-arg".into()],
                ttl: None
            }
        );
        assert!(c.contains("vault") && !c.contains("s3cr3t"), "{c}");
    }
}
