//! Expiry parsing and the conversions after it: `expiry::lifetime_secs`, `absolute_unix` (Unix
//! numbers, numeric strings, RFC 3339, naive timestamps in a zone), `plausible`, `jwt_exp`; then
//! the wall-clock to tokio-clock conversions (`Clock::instant_at_unix`, `Clock::unix_at`, a
//! stored token's `StoredToken::instants`) and the schedule (`refresh_at`, `backoff`) on the results.
//!
//! Invariants: no panic or overflow for any number (huge, negative, NaN); a lifetime is
//! 1 s..=10 years; an absolute expiry is after "now" and within ten years of it.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use base64::Engine as _;
use credproxy::clock::Clock;
use credproxy::token::expiry::{self, MAX_LIFETIME_SECS};
use credproxy::token::schedule::{Policy, backoff, refresh_at};
use credproxy::token::StoredToken;
use jiff::tz::TimeZone;
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

const ZONES: [&str; 4] = [
    "UTC",
    "Europe/Amsterdam",
    "America/St_Johns",
    "Pacific/Chatham",
];

fn zone(i: usize) -> &'static TimeZone {
    static LOADED: OnceLock<Vec<TimeZone>> = OnceLock::new();
    let zones = LOADED.get_or_init(|| {
        ZONES
            .iter()
            .map(|name| TimeZone::get(name).expect("the tz database has the zone"))
            .collect()
    });
    &zones[i % zones.len()]
}

/// The "now" of a seed that gives none: 2023-11-14T22:13:20Z.
const NOW: i64 = 1_700_000_000;

// Input, one item per line so seeds are readable: the value (JSON, or text taken as a string),
// "now" in Unix seconds, a float used as jitter, a zone index. Missing lines take defaults.
fuzz_target!(|input: &str| {
    let mut lines = input.splitn(4, '\n').map(str::trim);
    let text = lines.next().unwrap_or_default();
    let now: i64 = lines.next().and_then(|l| l.parse().ok()).unwrap_or(NOW);
    let float: f64 = lines.next().and_then(|l| l.parse().ok()).unwrap_or(0.5);
    let tz = zone(lines.next().and_then(|l| l.parse().ok()).unwrap_or(0));
    // The value as a number too, for the plain Unix-seconds paths.
    let int: i64 = text
        .parse::<i64>()
        .ok()
        .or_else(|| text.parse::<f64>().ok().map(|f| f as i64))
        .unwrap_or(now.saturating_add(3600));

    let mut values = vec![
        Value::String(text.to_owned()),
        json!(int),
        json!(float),
        json!(int.to_string()),
        json!(format!("{float}")),
    ];
    if let Ok(v) = serde_json::from_str::<Value>(text) {
        values.push(v);
    }
    for v in &values {
        if let Some(secs) = expiry::lifetime_secs(v) {
            assert!(
                (1..=MAX_LIFETIME_SECS).contains(&secs),
                "lifetime {secs} from {v}"
            );
        }
        if let Some(at) = expiry::absolute_unix(v, tz, now) {
            in_range(at, now);
        }
    }
    if let Some(at) = expiry::plausible(int, now) {
        in_range(at, now);
    }

    // JWT `exp`: the text as a whole token, and as the payload of one.
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let jwt = format!("{}.{}.sig", b64(r#"{"alg":"none"}"#), b64(text));
    let mut unix = vec![int, now];
    unix.extend(expiry::jwt_exp(text));
    unix.extend(expiry::jwt_exp(&jwt));

    // Onto tokio's clock and back, as the refresher does with whatever it was given.
    let clock = Clock::new();
    let real_now = clock.unix_now();
    let start = clock.now();
    let policy = Policy {
        refresh_before: Some(Duration::from_secs(int.unsigned_abs())),
    };
    for &u in &unix {
        let at = clock.instant_at_unix(u);
        let back = clock.unix_at(at);
        if u > real_now && u - real_now <= MAX_LIFETIME_SECS {
            assert!((u - 1..=u + 1).contains(&back), "{u} came back as {back}");
        }
        let stored = StoredToken {
            access_token: "t".into(),
            refresh_token: None,
            expires_at: Some(u),
            obtained_at: now,
            fingerprint: String::new(),
            secrets: Default::default(),
            details: Default::default(),
        };
        let (obtained, expires) = stored.instants(&clock);
        let _ = clock.unix_at(obtained);
        let _ = expires.map(|e| clock.unix_at(e));
        for p in [Policy::default(), policy] {
            // The refresher shows the next refresh as Unix time too.
            let _ = refresh_at(start, Some(at), &p, float).map(|r| clock.unix_at(r));
            let _ = refresh_at(obtained, expires, &p, float).map(|r| clock.unix_at(r));
        }
    }
    let retry_after = Duration::from_secs(int.unsigned_abs());
    let _ = backoff(now as u32, Some(retry_after), float);
    let _ = backoff((now >> 32) as u32, None, float);
});

fn in_range(at: i64, now: i64) {
    let ahead = at.checked_sub(now).expect("expiry minus now overflows");
    assert!(
        ahead > 0 && ahead <= MAX_LIFETIME_SECS,
        "expiry {at} is {ahead} s from {now}"
    );
}
