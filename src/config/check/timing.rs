//! Timing for the oauth2 family: the lifetime assumed when a reply gives none, how long before
//! expiry to refresh, and the time zone of naive expiry timestamps.

use std::time::Duration;

use super::Ctx;
use crate::config::file::FileProvider;

/// The timing keys, checked.
pub(super) struct Timing {
    pub default_lifetime: Duration,
    pub refresh_before: Option<Duration>,
    pub expires_timezone: jiff::tz::TimeZone,
}

/// `default_lifetime`, `refresh_before`, `expires_timezone`; `None` when the time zone is wrong.
pub(super) fn timing(ctx: &mut Ctx<'_>, name: &str, fp: &FileProvider) -> Option<Timing> {
    let key = |k: &str| format!("providers.{name}.{k}");
    let default_lifetime = ctx.duration(
        &fp.default_lifetime,
        &key("default_lifetime"),
        Duration::from_secs(3600),
    );
    let refresh_before = ctx.opt_duration(&fp.refresh_before, &key("refresh_before"));
    let expires_timezone = match &fp.expires_timezone {
        None => jiff::tz::TimeZone::UTC,
        Some(s) => {
            let v = ctx.string(s, &key("expires_timezone"))?;
            match jiff::tz::TimeZone::get(&v) {
                Ok(tz) => tz,
                Err(_) => {
                    ctx.err(s.span(), &key("expires_timezone"), format!("`{v}` is not a known time zone (IANA names such as \"Europe/Amsterdam\", or \"UTC\")"));
                    return None;
                }
            }
        }
    };
    Some(Timing {
        default_lifetime,
        refresh_before,
        expires_timezone,
    })
}
