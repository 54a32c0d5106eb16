//! The 401 rule, in one place: which upstream 401s may force a refresh of the token. Both sides
//! of the seam apply it: the readers in [`super::CredentialReader::report_rejected`], the writer
//! (the refresher) when a report reaches it.

use std::time::Duration;

use tokio::time::Instant;

/// A token younger than this is not refreshed on a 401: the 401 is about something else.
pub const MIN_TOKEN_AGE_FOR_401_REFRESH: Duration = Duration::from_secs(10);
/// At most one forced refresh per provider in this period.
pub const FORCED_REFRESH_INTERVAL: Duration = Duration::from_secs(30);
/// A 401 that says the token is invalid ([`Rejection::InvalidToken`]) forces a refresh whatever
/// the token's age, but still at most once per token and at most once in this period: an
/// upstream that answers `invalid_token` to every token must not turn into a refresh loop.
pub const INVALID_TOKEN_REFRESH_INTERVAL: Duration = Duration::from_secs(1);

/// What an upstream 401 said about the token it rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// A plain 401: maybe the token expired, maybe something else ("no permission" at BACE).
    Plain,
    /// `WWW-Authenticate: Bearer error="invalid_token"` (RFC 6750 §3.1): the token is expired,
    /// revoked or malformed. It is replaced at once, whatever its age.
    InvalidToken,
}

/// The 401 rule, in one place: which upstream 401s may force a refresh of the token.
///
/// A 401 forces a refresh only if this token was not already refreshed after one, is at least
/// [`MIN_TOKEN_AGE_FOR_401_REFRESH`] old, and no other forced refresh was granted in the last
/// [`FORCED_REFRESH_INTERVAL`]. A [`Rejection::InvalidToken`] skips the age rule and waits only
/// [`INVALID_TOKEN_REFRESH_INTERVAL`] after the last forced refresh. Both sides of the seam apply it with their own memory: the readers
/// (so a request knows at once whether a new token is worth waiting for) and the writer (which
/// also sees 401s of a token it already replaced).
#[derive(Debug, Default, Clone)]
pub struct RejectionFilter {
    /// When the last forced refresh was granted.
    last_forced: Option<Instant>,
}

/// Why a 401 does not force a refresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotForced {
    /// This token was already refreshed after a 401 (at most once per token).
    AlreadyForced,
    /// Younger than [`MIN_TOKEN_AGE_FOR_401_REFRESH`].
    TooNew,
    /// Another forced refresh was granted within [`FORCED_REFRESH_INTERVAL`].
    TooSoon,
}

impl NotForced {
    /// For the log line.
    pub fn why(self) -> &'static str {
        match self {
            NotForced::AlreadyForced => "this token was already refreshed after a 401",
            NotForced::TooNew => "the token is too new for a 401 to mean it expired",
            NotForced::TooSoon => {
                "a 401 forced a refresh too recently (30 s; 1 s for invalid_token)"
            }
        }
    }
}

impl RejectionFilter {
    /// May a 401 (`rejection`) at `now` force a refresh of the token obtained at `obtained`
    /// (`already_forced`: a 401 already forced a refresh of it)? If so, it is granted: the next
    /// one must wait [`FORCED_REFRESH_INTERVAL`] ([`INVALID_TOKEN_REFRESH_INTERVAL`]).
    pub fn admit(
        &mut self,
        already_forced: bool,
        obtained: Instant,
        now: Instant,
        rejection: Rejection,
    ) -> Result<(), NotForced> {
        let (min_age, interval) = match rejection {
            Rejection::Plain => (MIN_TOKEN_AGE_FOR_401_REFRESH, FORCED_REFRESH_INTERVAL),
            Rejection::InvalidToken => (Duration::ZERO, INVALID_TOKEN_REFRESH_INTERVAL),
        };
        if already_forced {
            Err(NotForced::AlreadyForced)
        } else if now.saturating_duration_since(obtained) < min_age {
            Err(NotForced::TooNew)
        } else if self
            .last_forced
            .is_some_and(|t| now.saturating_duration_since(t) < interval)
        {
            Err(NotForced::TooSoon)
        } else {
            self.last_forced = Some(now);
            Ok(())
        }
    }
}
