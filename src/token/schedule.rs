//! When to refresh, and how long to wait after a failure: pure functions of their inputs.
//!
//! The refresher asks [`refresh_at`] once per token and [`backoff`] once per failed attempt; the
//! caller supplies the random jitter (a number in `0..1`) so tests can pin it and a fleet of
//! credproxies started together still spreads its refreshes out. linkerd2-proxy's identity client
//! schedules the same way: a share of the lifetime, clamped.

use std::time::Duration;

use tokio::time::Instant;

/// Share of a token's lifetime after which it is refreshed, by default.
pub const REFRESH_SHARE: f64 = 0.75;
/// Never refresh earlier than this share of the lifetime: a `refresh_before` (or the 60 s margin)
/// longer than a token's whole life must not turn into a refresh loop.
pub const MIN_SHARE: f64 = 0.5;
/// Default margin: refresh at least this long before expiry, so requests in flight and clock skew
/// between us and the token server never see an expired token.
pub const DEFAULT_MARGIN: Duration = Duration::from_secs(60);
/// Jitter moves a refresh earlier by up to this share of the lifetime...
pub const JITTER_SHARE: f64 = 0.05;
/// ...and by no more than this: a 14-day BACE token need not move by 17 hours.
pub const JITTER_CAP: Duration = Duration::from_secs(300);

/// First retry delay after a failure; it doubles with every attempt...
pub const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// ...up to this (issue 3: "1 s doubling to 5 min").
pub const BACKOFF_CAP: Duration = Duration::from_secs(300);
/// A `Retry-After` is honoured up to this: a server asking for a day must not silence us that long.
pub const RETRY_AFTER_CAP: Duration = Duration::from_secs(3600);

/// The provider's refresh settings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Policy {
    /// Refresh this long before expiry instead of at 75 % of the lifetime (config `refresh_before`).
    pub refresh_before: Option<Duration>,
}

/// When to refresh a token obtained at `obtained` that expires at `expires`.
///
/// `None` for a token that does not expire. Default: at 75 % of the lifetime but never later than
/// 60 s before expiry; with `refresh_before`: that long before expiry. Either way never earlier
/// than half the lifetime. `jitter` (`0..1`) then moves it earlier by up to 5 % of the lifetime
/// (at most 5 min), never before half the lifetime. Always by the time the token stops being sent
/// ([`crate::credential::safety_margin`] before expiry).
pub fn refresh_at(
    obtained: Instant,
    expires: Option<Instant>,
    policy: &Policy,
    jitter: f64,
) -> Option<Instant> {
    let expires = expires?;
    let lifetime = expires.saturating_duration_since(obtained);
    if lifetime.is_zero() {
        return Some(obtained);
    }
    let floor = lifetime.mul_f64(MIN_SHARE);
    let at = match policy.refresh_before {
        Some(before) => lifetime.saturating_sub(before),
        None => lifetime
            .mul_f64(REFRESH_SHARE)
            .min(lifetime.saturating_sub(DEFAULT_MARGIN)),
    }
    .max(floor);
    let spread = lifetime.mul_f64(JITTER_SHARE).min(JITTER_CAP);
    let at = at.saturating_sub(spread.mul_f64(unit(jitter))).max(floor);
    // Due by the time the token stops being sent (a `refresh_before` shorter than the safety
    // margin would leave requests waiting for a refresh not yet started).
    let at = at.min(lifetime - crate::credential::safety_margin(lifetime));
    Some(obtained + at)
}

/// How long to wait before retry number `attempt` (0 for the first retry).
///
/// 1 s doubling to 5 min, shortened by up to 20 % by `jitter` so clients that failed together do
/// not retry together; never shorter than the server's `Retry-After` (RFC 9110 §10.2.3), which is
/// honoured up to an hour.
pub fn backoff(attempt: u32, retry_after: Option<Duration>, jitter: f64) -> Duration {
    let base = BACKOFF_BASE
        .saturating_mul(1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX))
        .min(BACKOFF_CAP);
    let delay = base.mul_f64(1.0 - 0.2 * unit(jitter));
    match retry_after {
        Some(ra) => delay.max(ra.min(RETRY_AFTER_CAP)),
        None => delay,
    }
}

/// `jitter` within `0..=1`; NaN (which `clamp` passes through, and `Duration::mul_f64` panics
/// on) counts as 0. Found by `fuzz/fuzz_targets/expiry.rs`: the jitter source is injected.
fn unit(jitter: f64) -> f64 {
    if jitter.is_nan() {
        0.0
    } else {
        jitter.clamp(0.0, 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: Duration = Duration::from_secs(3600);

    fn secs(d: Duration) -> f64 {
        d.as_secs_f64()
    }

    #[tokio::test(start_paused = true)]
    async fn an_hour_token_refreshes_at_three_quarters() {
        let now = Instant::now();
        let at = refresh_at(now, Some(now + H), &Policy::default(), 0.0).unwrap();
        assert_eq!(at - now, Duration::from_secs(2700));
        // The schedule is a deadline on tokio's clock: a paused test reaches it by advancing.
        tokio::time::sleep_until(at).await;
        assert_eq!(Instant::now() - now, Duration::from_secs(2700));
    }

    #[tokio::test(start_paused = true)]
    async fn never_later_than_a_minute_before_expiry() {
        let now = Instant::now();
        // 75 % of 200 s is 150 s, but that is only 50 s before expiry: 140 s instead.
        let at = refresh_at(
            now,
            Some(now + Duration::from_secs(200)),
            &Policy::default(),
            0.0,
        );
        assert_eq!(at.unwrap() - now, Duration::from_secs(140));
    }

    #[test]
    fn short_lifetimes_fall_back_to_half() {
        let now = Instant::now();
        for (life, want) in [(100, 50.0), (30, 15.0), (2, 1.0), (240, 180.0)] {
            let at = refresh_at(
                now,
                Some(now + Duration::from_secs(life)),
                &Policy::default(),
                0.0,
            );
            assert_eq!(secs(at.unwrap() - now), want, "lifetime {life}");
        }
    }

    #[test]
    fn refresh_before_replaces_the_share() {
        let now = Instant::now();
        let p = Policy {
            refresh_before: Some(Duration::from_secs(300)),
        };
        assert_eq!(
            refresh_at(now, Some(now + H), &p, 0.0).unwrap() - now,
            Duration::from_secs(3300)
        );
        // Longer than the token lives: half the lifetime, not a loop.
        let p = Policy {
            refresh_before: Some(Duration::from_secs(7200)),
        };
        assert_eq!(
            refresh_at(now, Some(now + H), &p, 0.0).unwrap() - now,
            Duration::from_secs(1800)
        );
    }

    #[test]
    fn jitter_only_moves_earlier_and_is_capped() {
        let now = Instant::now();
        let p = Policy::default();
        let early = refresh_at(now, Some(now + H), &p, 1.0).unwrap() - now;
        assert_eq!(early, Duration::from_secs(2700 - 180), "5 % of an hour");
        let fortnight = Duration::from_secs(14 * 86_400);
        let plain = refresh_at(now, Some(now + fortnight), &p, 0.0).unwrap() - now;
        let jittered = refresh_at(now, Some(now + fortnight), &p, 1.0).unwrap() - now;
        assert_eq!(plain - jittered, JITTER_CAP);
        let mid = refresh_at(now, Some(now + H), &p, 0.5).unwrap() - now;
        assert!(mid < Duration::from_secs(2700) && mid > early);
        // Never below half the lifetime, even for a short token with full jitter.
        let short = refresh_at(now, Some(now + Duration::from_secs(100)), &p, 1.0).unwrap() - now;
        assert_eq!(short, Duration::from_secs(50));
    }

    #[test]
    fn no_expiry_no_refresh_and_expired_means_now() {
        let now = Instant::now();
        assert_eq!(refresh_at(now, None, &Policy::default(), 0.3), None);
        assert_eq!(
            refresh_at(now, Some(now), &Policy::default(), 0.3),
            Some(now)
        );
    }

    #[test]
    fn jitter_out_of_range_or_nan_is_clamped_not_a_panic() {
        let now = Instant::now();
        let p = Policy::default();
        let plain = refresh_at(now, Some(now + H), &p, 0.0);
        assert_eq!(refresh_at(now, Some(now + H), &p, f64::NAN), plain);
        assert_eq!(refresh_at(now, Some(now + H), &p, -3.0), plain);
        assert_eq!(
            refresh_at(now, Some(now + H), &p, f64::INFINITY),
            refresh_at(now, Some(now + H), &p, 1.0)
        );
        assert_eq!(backoff(2, None, f64::NAN), backoff(2, None, 0.0));
        assert_eq!(backoff(2, None, f64::NEG_INFINITY), backoff(2, None, 0.0));
    }

    #[test]
    fn backoff_doubles_to_five_minutes() {
        let got: Vec<u64> = (0..12).map(|a| backoff(a, None, 0.0).as_secs()).collect();
        assert_eq!(got, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        assert_eq!(backoff(u32::MAX, None, 0.0), BACKOFF_CAP);
        assert_eq!(backoff(3, None, 1.0), Duration::from_secs_f64(6.4));
    }

    #[test]
    fn backoff_honours_retry_after_within_reason() {
        assert_eq!(
            backoff(0, Some(Duration::from_secs(30)), 0.5),
            Duration::from_secs(30)
        );
        assert_eq!(
            backoff(8, Some(Duration::from_secs(2)), 0.0),
            Duration::from_secs(256)
        );
        assert_eq!(
            backoff(0, Some(Duration::from_secs(86_400)), 0.0),
            RETRY_AFTER_CAP
        );
    }
}
