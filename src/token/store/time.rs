//! Time questions about a stored token, asked of the token: is it still valid, is it fresh
//! (not yet due for a refresh), is it newer than the one held, and where do its Unix times fall
//! on tokio's clock. The clock is passed in (tests use tokio's paused clock); nothing here reads
//! the store.

use std::time::Duration;

use tokio::time::Instant;

use super::StoredToken;
use crate::clock::Clock;
use crate::token::expiry::MAX_LIFETIME_SECS;
use crate::token::schedule::{Policy, refresh_at};

impl StoredToken {
    /// Not expired at `clock`'s now.
    pub fn is_valid(&self, clock: &Clock) -> bool {
        self.expires_at.is_none_or(|e| e > clock.unix_now())
    }

    /// Valid and not yet due for a refresh (without jitter): reuse it rather than refresh.
    pub fn is_fresh(&self, clock: &Clock, policy: &Policy) -> bool {
        let (obtained, expires) = self.instants(clock);
        self.is_valid(clock)
            && refresh_at(obtained, expires, policy, 0.0).is_none_or(|at| at > clock.now())
    }

    /// Whether this (stored) token is newer than `than` (which we hold): obtained later, or
    /// another token obtained in the same second.
    pub fn is_newer_than(&self, than: Option<&StoredToken>) -> bool {
        match than {
            None => true,
            Some(h) => {
                self.obtained_at > h.obtained_at
                    || (self.obtained_at == h.obtained_at && self.access_token != h.access_token)
            }
        }
    }

    /// The obtained and expiry times on tokio's clock.
    ///
    /// The file may hold any `i64` (a damaged or hand-edited store): `abs_diff` cannot overflow
    /// where `now_unix - unix` did for `i64::MIN` (found by `fuzz/fuzz_targets/expiry.rs`), a time
    /// before the clock's start is now, and one past what an `Instant` can hold is ten years ahead.
    ///
    /// Measured from the wall clock's exact now, not its whole second: rounding to the second put
    /// an expiry up to a second late, and tokens went out after they had expired (issue 14).
    pub fn instants(&self, clock: &Clock) -> (Instant, Option<Instant>) {
        let now = clock.now();
        let since_epoch = |t: std::time::SystemTime| match t.duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => (true, d),
            Err(e) => (false, e.duration()),
        };
        let (wall_after_epoch, wall) = since_epoch(clock.now_wall());
        let far = || now + Duration::from_secs(MAX_LIFETIME_SECS.unsigned_abs());
        let at = |unix: i64| {
            let t = Duration::from_secs(unix.unsigned_abs());
            // `unix` and now as signed distances from the epoch; ahead of now or behind it.
            let ahead = match (unix >= 0, wall_after_epoch) {
                (true, true) => t.checked_sub(wall).ok_or_else(|| wall - t),
                (true, false) => Ok(t.saturating_add(wall)),
                (false, true) => Err(t.saturating_add(wall)),
                (false, false) => wall.checked_sub(t).ok_or_else(|| t - wall),
            };
            match ahead {
                Ok(d) => now.checked_add(d).unwrap_or_else(far),
                Err(d) => now.checked_sub(d).unwrap_or(now),
            }
        };
        (at(self.obtained_at), self.expires_at.map(at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(obtained_at: i64, expires_at: Option<i64>) -> StoredToken {
        StoredToken {
            access_token: "t".into(),
            refresh_token: None,
            expires_at,
            obtained_at,
            fingerprint: String::new(),
            secrets: Default::default(),
            details: Default::default(),
            expiry_assumed: false,
        }
    }

    /// Issue 14 item 2: an expiry in whole Unix seconds lands on tokio's clock no later than
    /// that second, wherever in its second the wall clock is now (rounding to the second put it
    /// up to a second late).
    #[tokio::test(start_paused = true)]
    async fn an_expiry_is_placed_to_the_sub_second() {
        let clock = Clock::new();
        for step in 0..10 {
            let expires = clock.unix_now() + 2;
            let (_, at) = stored(clock.unix_now(), Some(expires)).instants(&clock);
            let wall_then = clock.now_wall() + (at.unwrap() - clock.now());
            let exact = std::time::UNIX_EPOCH + Duration::from_secs(expires as u64);
            let off = wall_then
                .duration_since(exact)
                .map_or_else(|e| -e.duration().as_secs_f64(), |d| d.as_secs_f64());
            assert!(off.abs() < 0.001, "step {step}: {off} s off");
            tokio::time::advance(Duration::from_millis(130)).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn stored_times_at_the_ends_of_i64_do_not_overflow() {
        let clock = Clock::new();
        let now = clock.now();
        let (obtained, expires) = stored(i64::MIN, Some(i64::MAX)).instants(&clock);
        assert!(obtained <= now);
        assert!(expires.unwrap() > now + Duration::from_secs(365 * 86_400));
        let (obtained, expires) = stored(i64::MAX, Some(i64::MIN)).instants(&clock);
        assert!(obtained > now);
        assert!(expires.unwrap() <= now);
        // And the schedule built on them stays in range.
        let (obtained, expires) = stored(i64::MIN, Some(i64::MAX)).instants(&clock);
        assert!(refresh_at(obtained, expires, &Policy::default(), 1.0).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn ordinary_stored_times_keep_their_distance_from_now() {
        let clock = Clock::new();
        let now_unix = clock.unix_now();
        // How far into its second the wall clock is: the distances are exact, not whole seconds.
        let frac = clock
            .now_wall()
            .duration_since(std::time::UNIX_EPOCH + Duration::from_secs(now_unix as u64))
            .unwrap();
        let (obtained, expires) = stored(now_unix - 60, Some(now_unix + 3600)).instants(&clock);
        assert_eq!(clock.now() - obtained, Duration::from_secs(60) + frac);
        assert_eq!(
            expires.unwrap() - clock.now(),
            Duration::from_secs(3600) - frac
        );
    }
}
