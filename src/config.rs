//! Configuration: read the TOML file, then check it into the runtime [`Config`].
//!
//! Two steps, two sets of types (ripgrep's habit): `file.rs` is the serde picture of what the user
//! wrote (unknown keys rejected), `check.rs` (and `check/`) turns it into the types below, with
//! parsed URIs, header names, durations and host patterns. An error names the file, line, column
//! and key path. `load.rs` finds and reads the file, `parse.rs` parses it (every type error, in
//! the user's words from `words.rs`); `warnings.rs` holds the non-fatal findings; `presets/`
//! knows the five seed providers' URLs, field names and quirks.

mod check;
pub mod env;
pub mod file;
pub mod host;
mod load;
mod parse;
pub mod presets;
pub mod validate;
mod warnings;
mod words;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::uri::{Authority, Scheme};
use http::{HeaderName, HeaderValue, Uri};

pub use check::{ConfigError, ConfigErrors};
pub use host::HostPattern;
pub use load::{load, load_settings, load_str, locate};

use crate::secret::{Live, Secret};

/// The whole, checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub proxy: ProxySettings,
    pub providers: Vec<Arc<ProviderConfig>>,
    pub routes: Vec<RouteConfig>,
    /// Where tokens are kept: `state_dir`, or Redis (`[store]`).
    pub store: StoreSettings,
    /// `[callers.NAME]`, in name order; empty: no named callers.
    pub callers: Vec<CallerConfig>,
    /// Things that are allowed but risky (for `credproxy check`).
    pub warnings: Vec<String>,
    /// Things worth knowing that are fine as they are (an exact host under another provider's
    /// wildcard), for `credproxy check`.
    pub notes: Vec<String>,
    /// The environment variables inline secrets are read from (`"${GITHUB_TOKEN}"`): `exec`
    /// takes them out of its command's environment, so the command never holds the key.
    pub secret_vars: std::collections::BTreeSet<String>,
}

impl Config {
    pub fn provider(&self, name: &str) -> Option<&Arc<ProviderConfig>> {
        self.providers.iter().find(|p| p.name == name)
    }
}

#[derive(Debug, Clone)]
pub struct ProxySettings {
    pub listen: Listen,
    pub admin_listen: Option<Listen>,
    pub state_dir: PathBuf,
    pub unknown_hosts: UnknownHosts,
    /// Private, loopback and other special addresses that pass-through and `CONNECT` may
    /// reach anyway (all others of those are refused: `proxy::checks::destination_allowed`).
    pub pass_private: Vec<crate::net::Cidr>,
    pub ca_file: Option<PathBuf>,
    /// `CONNECT` to a claimed host with TLS inside: refused, or terminated with the local CA.
    pub intercept: Intercept,
    /// A CA made now is constrained to the claimed hosts (X.509 name constraints).
    pub ca_name_constraints: bool,
    pub allow_remote: bool,
    /// A secret that may change (a file credproxy follows, a command it re-runs).
    pub proxy_auth: Option<Live>,
    pub socket_mode: u32,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub header_timeout: Duration,
    /// How long a request body may send nothing before the request gets 408.
    pub client_body_timeout: Duration,
    pub shutdown_grace: Duration,
    pub max_connections: usize,
    pub max_connections_per_client: usize,
    /// Add `Via` to upstream requests (`via = true`); responses always get it.
    pub via: bool,
    /// `audit_log`: where the audit records go (`crate::audit`); `None`: nowhere.
    pub audit_log: Option<AuditTarget>,
    /// HTTP/2 downstream (h2c and ALPN `h2`): its limits.
    pub h2: H2Limits,
}

/// `[proxy] h2_*`: what one downstream HTTP/2 connection may hold at once. The defaults are
/// safe for a local proxy: a client can't make credproxy buffer more than about the connection
/// window, or keep more than `max_concurrent_streams` requests open on one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct H2Limits {
    /// `SETTINGS_MAX_CONCURRENT_STREAMS` (RFC 9113 §6.5.2).
    pub max_concurrent_streams: u32,
    /// `SETTINGS_MAX_HEADER_LIST_SIZE`, bytes: the same 64 KiB as HTTP/1.1's head limit. It also
    /// bounds the CONTINUATION frames of one header block (the "continuation flood").
    pub max_header_list_size: u32,
    /// `SETTINGS_INITIAL_WINDOW_SIZE`: how much request body one stream may send unread.
    pub initial_stream_window: u32,
    /// The connection's flow-control window: request body of all streams together, unread.
    pub initial_connection_window: u32,
    /// Upstream HTTP/1.1 connections one downstream HTTP/2 connection may hold; its streams
    /// beyond that wait for one (`upstream/gate.rs`).
    pub max_upstream_connections: u32,
}

impl Default for H2Limits {
    fn default() -> Self {
        H2Limits {
            max_concurrent_streams: 100,
            max_header_list_size: 64 * 1024,
            initial_stream_window: 256 * 1024,
            initial_connection_window: 1024 * 1024,
            max_upstream_connections: 8,
        }
    }
}

/// `[proxy] audit_log`: a file (appended to, reopened on SIGHUP) or `"-"` for standard output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditTarget {
    Stdout,
    File(PathBuf),
}

/// `[callers.NAME]`, checked: a named local caller. Its secret is [`Live`]: a `{ file = }`
/// secret is re-read when the file changes.
#[derive(Debug, Clone)]
pub struct CallerConfig {
    pub name: String,
    pub secret: Live,
    /// The providers it may use (names of configured providers).
    pub providers: Vec<String>,
}

/// `[store]`, checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum StoreSettings {
    /// One file per provider in `state_dir` (the default).
    #[default]
    File,
    Redis(RedisSettings),
}

/// `[store] kind = "redis"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSettings {
    /// As written (it may carry a password: hence a [`Secret`]); checked to parse.
    pub url: Secret,
    pub encryption_key: StoreKey,
    pub key_prefix: String,
    /// How long a lease lives without renewal (`lease_ttl`, default
    /// [`crate::token::store::redis::LEASE_TTL`]): how long a stopped or killed holder keeps the
    /// others from refreshing.
    pub lease_ttl: std::time::Duration,
}

/// The 32-byte `[store] encryption_key`. `Debug` prints `[redacted]`.
#[derive(Clone, PartialEq, Eq)]
pub struct StoreKey(pub [u8; 32]);

impl std::fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Where a listener binds.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Listen {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Listen::Tcp(a) => write!(f, "{a}"),
            Listen::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// `[proxy] intercept`: what credproxy does with TLS in a `CONNECT` tunnel to a claimed host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Intercept {
    /// Refused (port 443) or closed: only plain HTTP in a tunnel is served.
    #[default]
    Off,
    /// Terminated with a leaf certificate from the local CA (`crate::ca`).
    Claimed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownHosts {
    Reject,
    Pass,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteConfig {
    pub target: RouteTarget,
    pub provider: String,
    pub require_auth: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteTarget {
    /// A listener of its own: a base URL for a legacy application.
    Listen(Listen),
    /// A path prefix on the main listener, removed before forwarding (`/bace` → `/`).
    PathPrefix(String),
}

/// Which kind of provider this is: decides the token dialect and defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    Static,
    OAuth2,
    Baselime,
    Bace,
    Apicbase,
    ApiV1,
    BlendVision,
}

impl Preset {
    pub fn name(self) -> &'static str {
        match self {
            Preset::Static => "static",
            Preset::OAuth2 => "oauth2",
            Preset::Baselime => "baselime",
            Preset::Bace => "bace",
            Preset::Apicbase => "apicbase",
            Preset::ApiV1 => "api-v1",
            Preset::BlendVision => "blendvision",
        }
    }

    pub const ALL: [Preset; 7] = [
        Preset::Static,
        Preset::OAuth2,
        Preset::Baselime,
        Preset::Bace,
        Preset::Apicbase,
        Preset::ApiV1,
        Preset::BlendVision,
    ];
}

/// One configured API.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderConfig {
    pub name: String,
    pub preset: Preset,
    pub hosts: Vec<HostPattern>,
    pub upstream: Upstream,
    /// Extra headers to inject (beside `Authorization`); each value a secret that may change.
    pub headers: Vec<SecretHeader>,
    pub allow_origins: Vec<String>,
    /// Add `Forwarded`/`X-Forwarded-For` upstream (off unless asked for).
    pub forwarded: bool,
    pub wait_for_token: Duration,
    /// This provider's own `response_timeout` (else `[proxy]`'s: `exchange::response_timeout`).
    pub response_timeout: Option<Duration>,
    /// Where the token goes in each request (`inject`; `Authorization: Bearer` by default).
    pub inject: crate::credential::Inject,
    /// `allow` / `deny`: what the credential may be used for (`proxy/policy.rs`); `None`
    /// without either key.
    pub rules: Option<crate::proxy::policy::Rules>,
    pub auth: AuthConfig,
}

/// A header whose value is a configured secret (`headers`, `token_headers`): a file credproxy
/// follows or a command it re-runs changes it, and every new value is checked to be one a
/// header can carry before it is used ([`Live::checked`]).
#[derive(Debug, Clone, PartialEq)]
pub struct SecretHeader {
    pub name: HeaderName,
    pub value: Live,
}

impl SecretHeader {
    /// A fixed header (for code that builds a config by hand).
    pub fn fixed(name: HeaderName, value: &str) -> Self {
        SecretHeader {
            name,
            value: Live::from(value),
        }
    }

    /// The field as it goes now, its value marked sensitive. `None` only for a value a header
    /// can't carry, which the config's check and [`Live::checked`] keep out.
    pub fn field(&self) -> Option<(HeaderName, HeaderValue)> {
        let mut v = HeaderValue::from_str(self.value.get().expose()).ok()?;
        v.set_sensitive(true);
        Some((self.name.clone(), v))
    }

    /// Every one of `headers` as it goes now.
    pub fn fields(headers: &[SecretHeader]) -> Vec<(HeaderName, HeaderValue)> {
        headers.iter().filter_map(SecretHeader::field).collect()
    }
}

/// Where claimed requests go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub scheme: Scheme,
    pub authority: Authority,
    pub host: String,
    pub port: u16,
    /// Path the upstream is mounted at, without a trailing slash ("" for the root).
    pub base_path: String,
    /// The `Host` header value the upstream expects.
    pub host_header: HeaderValue,
}

impl Upstream {
    pub fn is_tls(&self) -> bool {
        self.scheme == Scheme::HTTPS
    }

    /// `scheme://authority`, for messages and the Location rewrite.
    pub fn origin(&self) -> String {
        format!("{}://{}", self.scheme, self.authority)
    }
}

/// How a provider's credential is obtained.
#[derive(Debug, Clone, PartialEq)]
pub enum AuthConfig {
    /// A fixed token (`preset = "static"`).
    /// The token may be a file credproxy follows or a command it re-runs.
    Static { token: Live },
    /// Any token endpoint: RFC 6749 and the seed dialects built on it.
    OAuth2(Box<OAuth2Config>),
    /// BlendVision One: a static API token, or login + mint.
    BlendVision(Box<BlendVisionConfig>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    ClientCredentials,
    Password,
    AuthorizationCode,
}

impl Grant {
    pub fn as_str(self) -> &'static str {
        match self {
            Grant::ClientCredentials => "client_credentials",
            Grant::Password => "password",
            Grant::AuthorizationCode => "authorization_code",
        }
    }

    /// Whether this grant can run without a person (a fallback after a rejected refresh token).
    pub fn is_unattended(self) -> bool {
        !matches!(self, Grant::AuthorizationCode)
    }
}

/// The token request body's encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    /// `application/x-www-form-urlencoded` (RFC 6749).
    Form,
    /// `application/json`, exactly (no parameters).
    Json,
    /// `multipart/form-data` (BACE).
    Multipart,
}

/// How the client authenticates to the token endpoint (RFC 6749 §2.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    Basic,
    Body,
}

/// Names on the wire for the token request's and reply's fields, keyed by the RFC 6749 name.
///
/// Baselime, for one, speaks camelCase: `grant_type` is `grantType`, `redirect_uri` is `redirect`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldNames(pub Vec<(String, String)>);

impl FieldNames {
    /// The wire name for the standard field `name`.
    pub fn get<'a>(&'a self, name: &'a str) -> &'a str {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or(name)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct OAuth2Config {
    pub token_url: Uri,
    pub grant: Grant,
    pub client_id: Option<String>,
    pub client_secret: Option<Live>,
    pub username: Option<String>,
    pub password: Option<Live>,
    pub scopes: Vec<String>,
    pub scope_separator: String,
    pub format: BodyFormat,
    pub client_auth: ClientAuth,
    pub redirect_uri: Option<String>,
    pub authorize_url: Option<Uri>,
    pub authorize_params: Vec<(String, String)>,
    /// Extra fields in every token request body.
    pub token_params: Vec<(String, String)>,
    /// Extra headers on every token request (values read at each request).
    pub token_headers: Vec<SecretHeader>,
    pub request_fields: FieldNames,
    pub reply_fields: FieldNames,
    /// Send the current access token as `Authorization: Bearer` on refresh (BACE).
    pub refresh_with_bearer: bool,
    /// PKCE (RFC 7636, S256) on the authorization code flow.
    pub pkce: bool,
    pub introspect_url: Option<Uri>,
    pub revoke_url: Option<Uri>,
    /// Baselime: after the code exchange, list workspaces here.
    pub workspaces_url: Option<Uri>,
    /// The authorization server's issuer identifier (RFC 8414 §2: `https`, no query or
    /// fragment), exactly as configured: `login` reads its metadata and requires the
    /// authorization response's `iss` (RFC 9207) to equal it.
    pub issuer: Option<String>,
    /// Lifetime assumed when a reply gives none we can trust.
    pub default_lifetime: Duration,
    pub refresh_before: Option<Duration>,
    /// Time zone of naive absolute expiry timestamps (BACE's `expires`).
    pub expires_timezone: jiff::tz::TimeZone,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BlendVisionConfig {
    pub mode: BlendVisionMode,
    /// `x-bv-org-id` (a secret that may change); discovered at start from `org_url` when absent.
    pub org_id: Option<Live>,
    pub org_url: Uri,
    pub refresh_before: Option<Duration>,
}

// Built once per config load, so the size difference between the variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum BlendVisionMode {
    /// A long-lived API token from the BlendVision console (a file or command it may follow).
    ApiToken(Live),
    /// Log in with email + password and mint an API token, re-minted before it expires.
    Mint {
        email: String,
        password: Live,
        login_url: Uri,
        mint_url: Uri,
        api_token_lifetime: Duration,
    },
}

impl ProviderConfig {
    /// Whether the credential needs a person (`credproxy login`) to start.
    pub fn needs_login(&self) -> bool {
        matches!(&self.auth, AuthConfig::OAuth2(o) if o.grant == Grant::AuthorizationCode)
    }
}

#[cfg(test)]
impl OAuth2Config {
    /// A plain client-credentials config for unit tests; a test changes only what it is about:
    /// `OAuth2Config { grant: Grant::Password, ..OAuth2Config::example() }`.
    pub(crate) fn example() -> Self {
        OAuth2Config {
            token_url: "https://auth.example/oauth/token"
                .parse()
                .expect("a valid URL"),
            grant: Grant::ClientCredentials,
            client_id: Some("cid".into()),
            client_secret: Some(Live::from("sec")),
            username: None,
            password: None,
            scopes: vec![],
            scope_separator: " ".into(),
            format: BodyFormat::Form,
            client_auth: ClientAuth::Body,
            redirect_uri: None,
            authorize_url: None,
            authorize_params: vec![],
            token_params: vec![],
            token_headers: vec![],
            request_fields: FieldNames::default(),
            reply_fields: FieldNames::default(),
            refresh_with_bearer: false,
            pkce: true,
            introspect_url: None,
            revoke_url: None,
            workspaces_url: None,
            issuer: None,
            default_lifetime: Duration::from_secs(3600),
            refresh_before: None,
            expires_timezone: jiff::tz::TimeZone::UTC,
        }
    }
}
