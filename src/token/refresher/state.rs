//! The refresher's state: where it stands between two events (the module doc of
//! [`super`] draws the transitions). The token being served is kept apart, in the refresher's
//! `held`: it is served through failures while it is valid.

use tokio::time::Instant;

use crate::token::store::StoredToken;

/// Where the refresher stands. Each variant holds what only it needs, so a timer can't be set
/// while nothing is due, a failure count can't outlive a success, and "logged once" is per
/// failure streak.
#[derive(Debug, Default)]
pub(super) enum State {
    /// Before the first token (or failure): nothing is scheduled.
    #[default]
    Starting,
    /// A token is served; renew it at `refresh_at` (`None`: it never expires).
    Serving { refresh_at: Option<Instant> },
    /// The last renewal failed (transient: backoff; configuration: an hour); retry at
    /// `retry_at`.
    Failing {
        retry_at: Instant,
        failures: Failures,
    },
    /// A person must run `credproxy login`: no token calls until a login lands in the store.
    LoginRequired {
        /// What the store held when we gave up: a login replaces it.
        seen: Option<StoredToken>,
        /// A renewal from a login that landed failed for another reason: retried then.
        retry_at: Option<Instant>,
        failures: Failures,
    },
}

/// What the failures since the last success leave behind.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Failures {
    /// Consecutive transient failures (for the backoff).
    pub attempt: u32,
    /// The configuration refusal was logged at error level (later ones at debug).
    pub config_logged: bool,
}

impl State {
    /// When the timer fires next: a refresh or a retry.
    pub fn timer(&self) -> Option<Instant> {
        match self {
            State::Starting => None,
            State::Serving { refresh_at } => *refresh_at,
            State::Failing { retry_at, .. } => Some(*retry_at),
            State::LoginRequired { retry_at, .. } => *retry_at,
        }
    }

    pub fn awaits_login(&self) -> bool {
        matches!(self, State::LoginRequired { .. })
    }

    /// The failure streak so far (none after a success).
    pub fn failures(&self) -> Failures {
        match self {
            State::Starting | State::Serving { .. } => Failures::default(),
            State::Failing { failures, .. } | State::LoginRequired { failures, .. } => *failures,
        }
    }
}
