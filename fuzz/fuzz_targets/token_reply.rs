//! Token-reply parsing in every dialect: `reply::parse_grant` / `reply::parse_refresh` with the field names and time zone of
//! each preset (RFC 6749 form/JSON/multipart, Baselime's camelCase, BACE's
//! `{"refreshed": true, "expires": "…"}`, Apicbase, API v1, BlendVision's login), as a first
//! grant and as a refresh, and `reply::parse_error` for RFC 6749 §5.2 bodies.
//!
//! Invariants: no panic; a parsed access token is non-empty visible ASCII and becomes an
//! `Authorization` header; an expiry lies after "now" and within ten years of it; an extension
//! only answers a refresh; error texts are printable ASCII; the next refresh request builds.
#![no_main]

use std::sync::OnceLock;

use credproxy::config::{AuthConfig, FieldNames, OAuth2Config, load_str};
use credproxy::credential::Credential;
use credproxy::secret::Secret;
use credproxy::token::expiry::{self, MAX_LIFETIME_SECS};
use credproxy::token::reply::{self, Expiry, RefreshReply, ReplyError};
use credproxy::token::request::{GrantRequest, token_request};
use jiff::tz::TimeZone;
use libfuzzer_sys::fuzz_target;

/// One provider of each dialect, loaded once per process.
const PRESETS: &str = r#"
[proxy]
listen = "127.0.0.1:8080"

[providers.form]
preset = "oauth2"
hosts = ["form.example"]
token_url = "https://auth.example/token"
client_id = "id"
client_secret = "secret"

[providers.json]
preset = "oauth2"
hosts = ["json.example"]
token_url = "https://auth.example/token"
token_format = "json"
client_auth = "body"
client_id = "id"
client_secret = "secret"
reply_fields = { access_token = "token", expires_at = "expires_on" }

[providers.multipart]
preset = "oauth2"
hosts = ["multipart.example"]
token_url = "https://auth.example/token"
token_format = "multipart"
grant = "password"
username = "me"
password = "pw"
client_id = "id"
expires_timezone = "Europe/Amsterdam"

[providers.bace]
preset = "bace"
client_id = "id"
client_secret = "secret"
username = "me@example.com"
password = "pw"
expires_timezone = "America/New_York"

[providers.baselime]
preset = "baselime"
client_id = "id"
client_secret = "secret"
redirect_uri = "http://127.0.0.1:8765/callback"

[providers.apicbase]
preset = "apicbase"
client_id = "id"
client_secret = "secret"
redirect_uri = "http://127.0.0.1:8766/callback"

[providers.apiv1]
preset = "api-v1"
hosts = ["api.example-deployment.com"]
upstream = "https://api.example-deployment.com"
token_url = "https://api.example-deployment.com/oauth/token"
grant = "password"
client_id = "id"
client_secret = "secret"
username = "me"
password = "pw"
"#;

fn dialects() -> &'static [OAuth2Config] {
    static D: OnceLock<Vec<OAuth2Config>> = OnceLock::new();
    D.get_or_init(|| {
        let cfg = load_str(PRESETS, "presets.toml", &|_| None).expect("the presets load");
        let mut out: Vec<OAuth2Config> = cfg
            .providers
            .iter()
            .filter_map(|p| match &p.auth {
                AuthConfig::OAuth2(o) => Some((**o).clone()),
                _ => None,
            })
            .collect();
        assert_eq!(out.len(), 7, "one OAuth2Config per dialect");
        // BlendVision's login reply is read with the RFC names in UTC.
        let mut bv = out[0].clone();
        bv.reply_fields = FieldNames::default();
        bv.expires_timezone = TimeZone::UTC;
        out.push(bv);
        out
    })
}

/// Ordinary, and the ends of the i64 range (nothing may overflow near them).
const NOWS: [i64; 3] = [1_700_000_000, i64::MAX - 1, i64::MIN + 1];

fn printable_ascii(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
}

fuzz_target!(|body: &[u8]| {
    for cfg in dialects() {
        for now in NOWS {
            for refreshing in [false, true] {
                check(cfg, body, now, refreshing);
            }
        }
    }
    if let Some(e) = reply::parse_error(body) {
        assert!(printable_ascii(e.code.as_str()), "{:?}", e.code.as_str());
        if let Some(d) = &e.description {
            assert!(
                printable_ascii(d) && d.len() <= 200 && !d.is_empty(),
                "{d:?}"
            );
        }
        assert!(printable_ascii(&e.to_string()));
    }
});

fn check(cfg: &OAuth2Config, body: &[u8], now: i64, refreshing: bool) {
    let (fields, tz) = (&cfg.reply_fields, &cfg.expires_timezone);
    let parsed = if refreshing {
        reply::parse_refresh(body, fields, tz, now)
    } else {
        reply::parse_grant(body, fields, tz, now).map(RefreshReply::Token)
    };
    match parsed {
        Ok(RefreshReply::Token(set)) => {
            let token = set.access_token.expose();
            assert!(
                reply::visible_ascii(token),
                "a token that can't be a header"
            );
            Credential::bearer(&set.access_token, &[], 1, tokio::time::Instant::now(), None)
                .expect("a parsed token becomes an Authorization header");
            check_expiry(set.expiry, now);
            if let Some(rt) = &set.refresh_token {
                assert!(!rt.is_empty(), "an empty refresh token");
            }
            // The JWT fallback of resolve_expiry, on what the server sent.
            if let Some(exp) = expiry::jwt_exp(token).and_then(|e| expiry::plausible(e, now)) {
                check_expiry(Expiry::At(exp), now);
            }
            // The refresher's next request carries what this reply gave: it must build.
            let refresh_token = set
                .refresh_token
                .clone()
                .unwrap_or_else(|| Secret::from("old-refresh-token"));
            let grant = GrantRequest::Refresh {
                refresh_token: &refresh_token,
                access_token: cfg.refresh_with_bearer.then_some(&set.access_token),
                redirect_uri: cfg.redirect_uri.as_deref(),
            };
            let req = token_request(cfg, &grant);
            assert_eq!(req.method(), http::Method::POST);
        }
        Ok(RefreshReply::Extended { expiry }) => {
            assert!(refreshing, "an extension answered a first grant");
            check_expiry(expiry, now);
        }
        Err(e) => {
            let text = e.to_string();
            assert!(!text.is_empty());
            match &e {
                ReplyError::NotBearer(tt) => {
                    assert!(printable_ascii(tt) && tt.chars().count() <= 32, "{tt:?}")
                }
                ReplyError::MissingAccessToken(name) => {
                    assert_eq!(name, cfg.reply_fields.get("access_token"))
                }
                ReplyError::UnexpectedExtension => assert!(!refreshing),
                _ => {}
            }
        }
    }
}

fn check_expiry(expiry: Expiry, now: i64) {
    if let Expiry::At(at) = expiry {
        let ahead = at.checked_sub(now).expect("expiry minus now overflows");
        assert!(
            ahead > 0 && ahead <= MAX_LIFETIME_SECS,
            "expiry {at} is {ahead} s from now {now}"
        );
    }
}
