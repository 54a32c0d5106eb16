//! Reading a token's expiry out of whatever a server sends.
//!
//! Token servers disagree: RFC 6749 §5.1 says `expires_in` is a number of seconds, but servers send
//! `"7200"` as a string, BlendVision sends `-2147483648`, BACE sends an absolute, zone-less
//! `"2022-04-04 14:19:49"`, BlendVision's mint reply an RFC 3339 `expired_date`, introspection
//! (RFC 7662 §2.2) a Unix `exp`. Each reader here answers `None` for "no usable expiry", and the
//! caller then falls back (JWT `exp`, introspection, `default_lifetime`). A lifetime of zero, a
//! negative one, an `expires_in` over a year or an absolute expiry over ten years ahead is
//! "unknown", never "now" or "forever".

use base64::Engine as _;
use jiff::Timestamp;
use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use serde_json::Value;

/// Longest lifetime believed; anything longer is a server bug or a sentinel, treated as unknown.
pub const MAX_LIFETIME_SECS: i64 = 10 * 366 * 86_400;

/// Longest *relative* lifetime (`expires_in`) believed: a year. Real access tokens live minutes to
/// weeks (the seeds: 2 h to 14 days); `1e12`, `2147483647` and the like are sentinels for "no
/// idea", and taking them at their word trusted a 5 s token for years. Absolute expiries (BACE's
/// `expires`, BlendVision's `expired_date`, a JWT `exp`) keep the ten-year bound.
pub const MAX_EXPIRES_IN_SECS: i64 = 366 * 86_400;

/// Numbers this large are milliseconds, not seconds (seconds would be past the year 5000).
const MILLIS_THRESHOLD: f64 = 100_000_000_000.0;

/// `expires_in`: seconds as a JSON number or a numeric string; `None` ("unknown") unless
/// `0 < n <= 1 year` ([`MAX_EXPIRES_IN_SECS`]).
pub fn lifetime_secs(v: &Value) -> Option<i64> {
    let n = number(v)?;
    if n.is_finite() && n >= 1.0 && n <= MAX_EXPIRES_IN_SECS as f64 {
        Some(n as i64)
    } else {
        None
    }
}

/// An absolute expiry: Unix seconds (number or numeric string), an RFC 3339 / ISO 8601 timestamp
/// with an offset, or a naive `YYYY-MM-DD HH:MM:SS` (also with `T`) read in `tz`.
///
/// `None` unless it lies after `now_unix` and within ten years of it: a token that is already
/// expired when it arrives has an expiry we can't use (a wrong `expires_timezone`, most likely),
/// and taking it at its word would mean refreshing in a tight loop.
pub fn absolute_unix(v: &Value, tz: &TimeZone, now_unix: i64) -> Option<i64> {
    let unix = match v {
        Value::String(s) if number(v).is_none() => timestamp(s.trim(), tz)?,
        _ => {
            let n = number(v)?;
            let secs = if n.abs() >= MILLIS_THRESHOLD {
                n / 1000.0
            } else {
                n
            };
            if !secs.is_finite() {
                return None;
            }
            secs as i64
        }
    };
    plausible(unix, now_unix)
}

/// `unix` if it is in the future, and not more than ten years so.
pub fn plausible(unix: i64, now_unix: i64) -> Option<i64> {
    let ahead = unix.checked_sub(now_unix)?;
    (ahead > 0 && ahead <= MAX_LIFETIME_SECS).then_some(unix)
}

/// A timestamp string in Unix seconds: with an offset as written, without one in `tz`.
fn timestamp(s: &str, tz: &TimeZone) -> Option<i64> {
    if let Ok(ts) = s.parse::<Timestamp>() {
        return Some(ts.as_second());
    }
    // No offset: a civil date and time, which only means something in a time zone. Accept the
    // space separator BACE uses as well as ISO 8601's `T`.
    let dt: DateTime = s.replacen(' ', "T", 1).parse().ok()?;
    let zoned = tz.to_ambiguous_zoned(dt).compatible().ok()?;
    Some(zoned.timestamp().as_second())
}

/// The `exp` claim of a JWT (RFC 7519 §4.1.4), read without checking the signature: we only use
/// it to schedule a refresh of a token the server just gave us, never to trust the token.
pub fn jwt_exp(token: &str) -> Option<i64> {
    let mut parts = token.split('.');
    let (_, payload, _) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let payload = payload.trim_end_matches('=');
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    let exp = number(claims.get("exp")?)?;
    exp.is_finite().then_some(exp as i64)
}

/// A JSON number, or a string holding one.
fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok().filter(|n| n.is_finite()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: i64 = 1_700_000_000; // 2023-11-14T22:13:20Z

    #[test]
    fn lifetimes_we_believe_and_those_we_dont() {
        assert_eq!(lifetime_secs(&json!(7200)), Some(7200));
        assert_eq!(lifetime_secs(&json!("7200")), Some(7200));
        assert_eq!(lifetime_secs(&json!(" 86400 ")), Some(86400));
        assert_eq!(lifetime_secs(&json!(3599.9)), Some(3599));
        for bad in [
            json!(0),
            json!(-1),
            json!(-2147483648i64),
            json!("-2147483648"),
            json!(20 * 365 * 86_400),
            json!(367 * 86_400),
            json!(1e12),
            json!(2147483647),
            json!("soon"),
            json!(null),
            json!(true),
            json!(""),
            json!("NaN"),
            json!("inf"),
        ] {
            assert_eq!(lifetime_secs(&bad), None, "{bad}");
        }
    }

    #[test]
    fn absolute_expiry_in_every_shape() {
        let utc = TimeZone::UTC;
        let in_an_hour = NOW + 3600;
        assert_eq!(
            absolute_unix(&json!(in_an_hour), &utc, NOW),
            Some(in_an_hour)
        );
        assert_eq!(
            absolute_unix(&json!(in_an_hour.to_string()), &utc, NOW),
            Some(in_an_hour)
        );
        assert_eq!(
            absolute_unix(&json!(in_an_hour * 1000), &utc, NOW),
            Some(in_an_hour)
        );
        let rfc3339 = "2023-11-14T23:13:20Z";
        assert_eq!(absolute_unix(&json!(rfc3339), &utc, NOW), Some(in_an_hour));
        let offset = "2023-11-15T00:13:20+01:00";
        assert_eq!(absolute_unix(&json!(offset), &utc, NOW), Some(in_an_hour));
        for naive in ["2023-11-14 23:13:20", "2023-11-14T23:13:20"] {
            assert_eq!(
                absolute_unix(&json!(naive), &utc, NOW),
                Some(in_an_hour),
                "{naive}"
            );
        }
    }

    #[test]
    fn naive_timestamps_are_read_in_the_configured_zone() {
        // BACE's "2022-04-04 14:19:49" style, in Amsterdam (CEST, UTC+2, in April).
        let ams = TimeZone::get("Europe/Amsterdam").unwrap();
        let now = 1_649_000_000; // 2022-04-03T15:33:20Z
        let got = absolute_unix(&json!("2022-04-04 14:19:49"), &ams, now).unwrap();
        let want = "2022-04-04T12:19:49Z"
            .parse::<Timestamp>()
            .unwrap()
            .as_second();
        assert_eq!(got, want);
        let as_utc = absolute_unix(&json!("2022-04-04 14:19:49"), &TimeZone::UTC, now).unwrap();
        assert_eq!(as_utc - got, 7200);
        // An offset in the string wins over the configured zone.
        let explicit = absolute_unix(&json!("2022-04-04T14:19:49Z"), &ams, now).unwrap();
        assert_eq!(explicit, as_utc);
    }

    #[test]
    fn past_far_future_and_garbage_are_unknown() {
        let utc = TimeZone::UTC;
        for bad in [
            json!(NOW - 1),
            json!(NOW),
            json!(NOW + 20 * 365 * 86_400),
            json!("2022-04-04 14:19:49"),
            json!("tomorrow"),
            json!("2023-13-40 99:00:00"),
            json!(null),
            json!({}),
        ] {
            assert_eq!(absolute_unix(&bad, &utc, NOW), None, "{bad}");
        }
    }

    #[test]
    fn jwt_exp_is_read_from_the_payload() {
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let jwt = format!(
            "{}.{}.sig",
            b64(r#"{"alg":"none"}"#),
            b64(r#"{"sub":"x","exp":1700003600}"#)
        );
        assert_eq!(jwt_exp(&jwt), Some(1_700_003_600));
        let padded = format!("h.{}==.s", b64(r#"{"exp":12}"#));
        assert_eq!(jwt_exp(&padded), Some(12));
        for bad in [
            "opaque-token",
            "a.b",
            "a.b.c.d",
            "a.!!!.c",
            &format!("a.{}.c", b64("[]")),
        ] {
            assert_eq!(jwt_exp(bad), None, "{bad}");
        }
        let no_exp = format!("a.{}.c", b64(r#"{"sub":"x"}"#));
        assert_eq!(jwt_exp(&no_exp), None);
    }
}
