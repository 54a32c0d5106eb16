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
    pub fn instants(&self, clock: &Clock) -> (Instant, Option<Instant>) {
        let now = clock.now();
        let now_unix = clock.unix_now();
        let at = |unix: i64| {
            let distance = Duration::from_secs(unix.abs_diff(now_unix));
            if unix >= now_unix {
                now.checked_add(distance)
                    .unwrap_or_else(|| now + Duration::from_secs(MAX_LIFETIME_SECS.unsigned_abs()))
            } else {
                now.checked_sub(distance).unwrap_or(now)
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
        let (obtained, expires) = stored(now_unix - 60, Some(now_unix + 3600)).instants(&clock);
        assert_eq!(clock.now() - obtained, Duration::from_secs(60));
        assert_eq!(expires.unwrap() - clock.now(), Duration::from_secs(3600));
    }
}
