//! The seam between the token engine and the proxy.
//!
//! A *credential* is the ready-to-inject set of headers (`Authorization: Bearer …` plus a
//! provider's own, such as BlendVision's `x-bv-org-id`). Each provider has exactly one writer (its
//! refresher task; linkerd2-proxy's identity client is the model) and any number of readers (the
//! proxy's request handlers). The writer publishes a [`Snapshot`] through a `watch` channel;
//! readers take the current one without awaiting or locking across `.await`. Header values are
//! built once per token, marked sensitive, and shared by every request that uses them.
//!
//! The other direction, reader → writer, carries one thing: "the upstream rejected credential
//! generation N with 401" ([`CredentialReader::report_rejected`]). The writer decides what to do.
//!
//! (Over 500 lines with its unit tests, the last 170-odd lines: they test this file's
//! internals, so they stay beside them.)

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use serde::Serialize;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::clock::WallMark;
use crate::secret::Secret;

mod inject;
mod rejection;

pub use inject::{Inject, QueryParam};
pub use rejection::{
    FORCED_REFRESH_INTERVAL, INVALID_TOKEN_REFRESH_INTERVAL, MIN_TOKEN_AGE_FOR_401_REFRESH,
    NotForced, Rejection, RejectionFilter,
};

/// Headers (and perhaps a query parameter) to inject, built once when the token changes.
pub struct Credential {
    headers: Box<[(HeaderName, HeaderValue)]>,
    /// The token as a query parameter (`inject = { query = NAME }`), else `None`.
    query: Option<QueryParam>,
    /// Identifies this credential for 401 reports; increases with every new token.
    pub generation: u64,
    pub obtained_at: Instant,
    /// `None`: does not expire (a static token).
    pub expires_at: Option<Instant>,
    /// The last instant it is sent: [`SAFETY_MARGIN`] before `expires_at` (issue 14 item 2).
    usable_until: Option<Instant>,
    /// Both clocks when it was built: a wall clock that ran ahead since (a suspend) ages it by as
    /// much (issue 14 item 3). `None`: tokio's clock is the only one asked.
    wall: Option<WallMark>,
}

/// A token is not sent in the last 5 s of its life, or its last 10 % when that is shorter: it
/// must not expire on its way, or in a clock that runs a little ahead of ours. Requests in that
/// window wait for the refresh, which is due by then ([`crate::token`]'s schedule keeps it so).
pub const SAFETY_MARGIN: Duration = Duration::from_secs(5);

/// How long before its expiry a token with `lifetime` stops being sent: the smaller of
/// [`SAFETY_MARGIN`] and a tenth of its lifetime.
pub fn safety_margin(lifetime: Duration) -> Duration {
    SAFETY_MARGIN.min(lifetime / 10)
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field(
                "headers",
                &self
                    .headers
                    .iter()
                    .map(|(n, _)| n.as_str())
                    .collect::<Vec<_>>(),
            )
            .field("query", &self.query)
            .field("generation", &self.generation)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// A token that can't become a header: empty, or not visible ASCII (CR/LF, spaces, controls).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the access token is empty or contains characters other than visible ASCII")]
pub struct InvalidToken;

impl Credential {
    /// `Authorization: Bearer <token>` plus `extra` headers (already validated, sensitive).
    ///
    /// The scheme is always `Bearer` whatever the token server called it (`bearer`, RFC 6750 §2.1).
    pub fn bearer(
        token: &Secret,
        extra: &[(HeaderName, HeaderValue)],
        generation: u64,
        obtained_at: Instant,
        expires_at: Option<Instant>,
    ) -> Result<Self, InvalidToken> {
        Self::new(
            token,
            &Inject::Bearer,
            extra,
            generation,
            obtained_at,
            expires_at,
        )
    }

    /// `token` attached as `inject` says, plus `extra` headers (already validated, sensitive).
    pub fn new(
        token: &Secret,
        inject: &Inject,
        extra: &[(HeaderName, HeaderValue)],
        generation: u64,
        obtained_at: Instant,
        expires_at: Option<Instant>,
    ) -> Result<Self, InvalidToken> {
        let mut headers = Vec::with_capacity(1 + extra.len());
        let query = match inject.attach(token)? {
            inject::Attached::Header(name, value) => {
                headers.push((name, value));
                None
            }
            inject::Attached::Query(q) => Some(q),
        };
        headers.extend(extra.iter().cloned());
        let usable_until =
            expires_at.map(|e| e - safety_margin(e.saturating_duration_since(obtained_at)));
        Ok(Credential {
            headers: headers.into_boxed_slice(),
            query,
            generation,
            obtained_at,
            expires_at,
            usable_until,
            wall: None,
        })
    }

    /// Also asks the wall clock, from `mark` on, before it is sent (see [`Self::is_valid_at`]).
    pub fn with_wall(mut self, mark: WallMark) -> Self {
        self.wall = Some(mark);
        self
    }

    /// The same wall-clock mark as `other` (a credential rebuilt for the same token keeps the
    /// mark of the first, so a jump since then still shows).
    pub fn with_wall_of(mut self, other: &Credential) -> Self {
        self.wall = other.wall;
        self
    }

    pub fn headers(&self) -> &[(HeaderName, HeaderValue)] {
        &self.headers
    }

    /// The query parameter to add (`inject = { query = NAME }`), if the token goes there.
    pub fn query(&self) -> Option<&QueryParam> {
        self.query.as_ref()
    }

    /// Usable at `now`: more than the safety margin before its expiry, on tokio's clock and, when
    /// the wall clock has jumped ahead since the credential was built, on the wall clock too
    /// (one wall-clock read per call for a token that expires).
    #[inline]
    pub fn is_valid_at(&self, now: Instant) -> bool {
        match self.usable_until {
            None => true,
            Some(u) => now < u && self.wall_jump(now).is_none_or(|j| now + j < u),
        }
    }

    /// How far the wall clock has jumped ahead since the credential was built (more than
    /// [`crate::clock::WALL_JUMP`]), if it has and the credential expires.
    pub fn wall_jump(&self, now: Instant) -> Option<Duration> {
        self.usable_until?;
        self.wall.as_ref()?.jump(now)
    }

    /// Valid on tokio's clock but not on the wall clock, which jumped: a refresh is due now.
    pub fn expired_by_wall_jump(&self, now: Instant) -> bool {
        self.usable_until.is_some_and(|u| now < u) && !self.is_valid_at(now)
    }
}

/// Where a provider stands, for requests, `/readyz` and `credproxy status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// No credential yet; the first one is on its way.
    Starting,
    /// A valid credential is published.
    Ready,
    /// A refresh is under way (the published credential, if any, is still used).
    Refreshing,
    /// Refreshes fail; retrying with backoff. A credential may still be valid.
    Failing,
    /// A person must run `credproxy login NAME`.
    LoginRequired,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Ready => "ready",
            Phase::Refreshing => "refreshing",
            Phase::Failing => "failing",
            Phase::LoginRequired => "login_required",
        }
    }
}

/// What the writer publishes. Cheap to clone: the credential is shared.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub credential: Option<Arc<Credential>>,
    pub phase: Phase,
    /// Why the last attempt failed (never a secret).
    pub last_error: Option<String>,
    /// Wall-clock Unix seconds, for display.
    pub expires_at_unix: Option<i64>,
    pub last_refresh_unix: Option<i64>,
    pub next_refresh_unix: Option<i64>,
    /// Set while the refresher waits out a failure (backoff, or a refused configuration): no
    /// attempt is in flight, and the next one starts then. Requests without a usable token are
    /// answered at once rather than wait for a token that can't come sooner (issue 14 item 4).
    pub retry_at: Option<Instant>,
    /// Public facts worth showing (Baselime's workspace and environment ids).
    pub details: Vec<(String, String)>,
}

impl Snapshot {
    pub fn starting() -> Self {
        Snapshot {
            credential: None,
            phase: Phase::Starting,
            last_error: None,
            expires_at_unix: None,
            last_refresh_unix: None,
            next_refresh_unix: None,
            retry_at: None,
            details: Vec::new(),
        }
    }

    /// The credential if it is usable at `now`.
    pub fn usable(&self, now: Instant) -> Option<&Arc<Credential>> {
        self.credential.as_ref().filter(|c| c.is_valid_at(now))
    }
}

/// 401 reports from readers, filtered so that only useful ones reach the writer.
///
/// The rules live here, at the seam, so a request learns at once whether waiting for a new token
/// makes sense (BACE answers 401 for "no permission": those must not cost a refresh, nor a wait).
struct Rejections {
    /// Generation the writer should force a refresh of (0: none pending).
    generation: AtomicU64,
    /// The pending report's 401 said `invalid_token` ([`Rejection::InvalidToken`]).
    invalid_token: AtomicBool,
    /// Generation a reader found expired by a wall-clock jump (0: none pending).
    wall_jump: AtomicU64,
    wall_notify: Notify,
    notify: Notify,
    state: parking_lot::Mutex<RejectionState>,
}

#[derive(Default)]
struct RejectionState {
    /// The last generation a forced refresh was granted for (at most one per token).
    forced_generation: u64,
    filter: RejectionFilter,
}

/// The one writer of a provider's credential.
pub struct CredentialWriter {
    tx: watch::Sender<Snapshot>,
    rejections: Arc<Rejections>,
}

/// A reader: cheap to clone, never blocks while a credential is valid.
#[derive(Clone)]
pub struct CredentialReader {
    rx: watch::Receiver<Snapshot>,
    rejections: Arc<Rejections>,
}

/// A connected writer/reader pair, starting with no credential.
pub fn channel() -> (CredentialWriter, CredentialReader) {
    let (tx, rx) = watch::channel(Snapshot::starting());
    let rejections = Arc::new(Rejections {
        generation: AtomicU64::new(0),
        invalid_token: AtomicBool::new(false),
        wall_jump: AtomicU64::new(0),
        wall_notify: Notify::new(),
        notify: Notify::new(),
        state: parking_lot::Mutex::new(RejectionState::default()),
    });
    (
        CredentialWriter {
            tx,
            rejections: rejections.clone(),
        },
        CredentialReader { rx, rejections },
    )
}

/// Why a request could not get a credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unavailable {
    /// None came within `wait_for_token`.
    Timeout { last_error: Option<String> },
    /// Refreshes are failing and none is in flight: none can come before `retry_in`.
    Failing {
        last_error: Option<String>,
        retry_in: Duration,
    },
    /// A person must log in.
    LoginRequired,
    /// The writer is gone (shutdown or reload).
    Closed,
}

impl CredentialWriter {
    /// Replace the whole snapshot.
    pub fn publish(&self, snapshot: Snapshot) {
        self.tx.send_replace(snapshot);
    }

    /// Change part of the snapshot (phase, last error) in place.
    pub fn update(&self, f: impl FnOnce(&mut Snapshot)) {
        self.tx.send_modify(f);
    }

    /// Wait until a reader's 401 report was accepted (see [`CredentialReader::report_rejected`]):
    /// the writer should refresh now. Returns the rejected generation and what its 401 said.
    pub async fn rejected(&self) -> (u64, Rejection) {
        loop {
            let notified = self.rejections.notify.notified();
            // The flag is set before the generation is stored, and taken after it is taken.
            let g = self.rejections.generation.swap(0, Ordering::AcqRel);
            if g != 0 {
                let invalid = self.rejections.invalid_token.swap(false, Ordering::AcqRel);
                let r = if invalid {
                    Rejection::InvalidToken
                } else {
                    Rejection::Plain
                };
                return (g, r);
            }
            notified.await;
        }
    }
}

impl CredentialWriter {
    /// Wait until a reader found the credential of this generation expired by a jump of the wall
    /// clock (a resume from suspend): the writer should refresh now, and reschedule.
    pub async fn wall_jumped(&self) -> u64 {
        loop {
            let notified = self.rejections.wall_notify.notified();
            let g = self.rejections.wall_jump.swap(0, Ordering::AcqRel);
            if g != 0 {
                return g;
            }
            notified.await;
        }
    }
}

impl CredentialReader {
    /// The current snapshot's usable credential, without waiting (the hot path).
    pub fn current(&self, now: Instant) -> Option<Arc<Credential>> {
        self.rx.borrow().usable(now).cloned()
    }

    pub fn snapshot(&self) -> Snapshot {
        self.rx.borrow().clone()
    }

    /// A usable credential, waiting up to `wait` for one to be published, but only while one
    /// can come: a login that is needed, or a refresher waiting out a failure (no attempt in
    /// flight), answers at once.
    pub async fn wait_usable(&self, wait: Duration) -> Result<Arc<Credential>, Unavailable> {
        let mut rx = self.rx.clone();
        let deadline = Instant::now() + wait;
        loop {
            {
                let snap = rx.borrow_and_update();
                let now = Instant::now();
                if let Some(c) = snap.usable(now) {
                    return Ok(c.clone());
                }
                // Expired while the machine slept: the refresher's timer (tokio's clock) has not
                // fired, so tell it. Requests wait here for the new credential.
                if let Some(c) = &snap.credential
                    && c.expired_by_wall_jump(now)
                {
                    self.rejections
                        .wall_jump
                        .store(c.generation, Ordering::Release);
                    self.rejections.wall_notify.notify_one();
                }
                if snap.phase == Phase::LoginRequired {
                    return Err(Unavailable::LoginRequired);
                }
                // Only when the next attempt starts after this wait would end: a short backoff
                // (1 s after a transient failure) is worth waiting for.
                if snap.phase == Phase::Failing
                    && let Some(at) = snap.retry_at
                    && at > deadline
                {
                    return Err(Unavailable::Failing {
                        last_error: snap.last_error.clone(),
                        retry_in: at.saturating_duration_since(now),
                    });
                }
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => continue,
                Ok(Err(_)) => return Err(Unavailable::Closed),
                Err(_) => {
                    return Err(Unavailable::Timeout {
                        last_error: rx.borrow().last_error.clone(),
                    });
                }
            }
        }
    }

    /// The upstream answered 401 (`rejection`) to a request that carried `credential`.
    ///
    /// Returns whether a forced refresh was granted (then a new credential is worth waiting for):
    /// only for the current credential, once per token; at least 10 s old and once per 30 s,
    /// unless the 401 said `invalid_token` (then whatever its age, once per second).
    pub fn report_rejected(&self, credential: &Credential, rejection: Rejection) -> bool {
        let now = Instant::now();
        let current = self.rx.borrow().credential.as_ref().map(|c| c.generation);
        if current != Some(credential.generation) {
            return false;
        }
        {
            let mut st = self.rejections.state.lock();
            let already_forced = st.forced_generation >= credential.generation;
            if st
                .filter
                .admit(already_forced, credential.obtained_at, now, rejection)
                .is_err()
            {
                return false;
            }
            st.forced_generation = credential.generation;
        }
        if rejection == Rejection::InvalidToken {
            self.rejections.invalid_token.store(true, Ordering::Release);
        }
        self.rejections
            .generation
            .store(credential.generation, Ordering::Release);
        self.rejections.notify.notify_one();
        true
    }

    /// Wait up to `wait` for a usable credential newer than `generation`.
    pub async fn wait_newer(&self, generation: u64, wait: Duration) -> Option<Arc<Credential>> {
        let mut rx = self.rx.clone();
        let deadline = Instant::now() + wait;
        loop {
            {
                let snap = rx.borrow_and_update();
                if let Some(c) = snap
                    .usable(Instant::now())
                    .filter(|c| c.generation > generation)
                {
                    return Some(c.clone());
                }
                if snap.phase == Phase::LoginRequired {
                    return None;
                }
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => continue,
                _ => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cred(token: &str, generation: u64, expires_in: Option<Duration>) -> Credential {
        let now = Instant::now();
        Credential::bearer(
            &Secret::from(token),
            &[],
            generation,
            now,
            expires_in.map(|d| now + d),
        )
        .unwrap()
    }

    /// Issue 14 item 4: a next attempt beyond the wait answers at once; one within it (a 1 s
    /// backoff) is waited for.
    #[tokio::test(start_paused = true)]
    async fn a_failing_refresher_is_waited_for_only_when_its_retry_comes_in_time() {
        let (w, r) = channel();
        w.update(|s| {
            s.phase = Phase::Failing;
            s.last_error = Some("503".into());
            s.retry_at = Some(Instant::now() + Duration::from_secs(60));
        });
        let asked = Instant::now();
        let e = r.wait_usable(Duration::from_secs(10)).await.unwrap_err();
        assert_eq!(asked.elapsed(), Duration::ZERO);
        assert!(
            matches!(e, Unavailable::Failing { retry_in, .. } if retry_in == Duration::from_secs(60))
        );

        w.update(|s| s.retry_at = Some(Instant::now() + Duration::from_secs(1)));
        let waiting = tokio::spawn({
            let r = r.clone();
            async move { r.wait_usable(Duration::from_secs(10)).await }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        w.publish(Snapshot {
            credential: Some(Arc::new(cred("t", 1, None))),
            phase: Phase::Ready,
            ..Snapshot::starting()
        });
        assert!(
            waiting.await.unwrap().is_ok(),
            "the retry within the wait was waited for"
        );
    }

    /// Issue 14 item 2: a token stops being sent 5 s before it expires, or 10 % of its lifetime
    /// when that is shorter; a token without expiry is always sent.
    #[tokio::test(start_paused = true)]
    async fn a_token_is_not_sent_in_its_safety_margin() {
        let start = Instant::now();
        let short = cred("t", 1, Some(Duration::from_secs(5)));
        assert!(short.is_valid_at(start + Duration::from_millis(4499)));
        assert!(!short.is_valid_at(start + Duration::from_millis(4500)));
        let long = cred("t", 2, Some(Duration::from_secs(3600)));
        assert!(long.is_valid_at(start + Duration::from_millis(3_594_999)));
        assert!(!long.is_valid_at(start + Duration::from_secs(3595)));
        assert!(cred("t", 3, None).is_valid_at(start + Duration::from_secs(1 << 40)));
        assert_eq!(safety_margin(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn refuses_tokens_that_could_split_a_header() {
        for bad in ["", "a b", "a\r\nX-Evil: 1", "tab\there", "ünïcode"] {
            let r = Credential::bearer(&Secret::from(bad), &[], 1, Instant::now(), None);
            assert_eq!(r.unwrap_err(), InvalidToken, "{bad:?}");
        }
    }

    #[tokio::test]
    async fn bearer_header_is_sensitive_and_debug_hides_it() {
        let c = cred("tok123", 1, None);
        let (name, value) = &c.headers()[0];
        assert_eq!(name, http::header::AUTHORIZATION);
        assert_eq!(value, "Bearer tok123");
        assert!(value.is_sensitive());
        assert!(!format!("{c:?}").contains("tok123"));
    }

    #[tokio::test(start_paused = true)]
    async fn readers_wait_for_the_first_credential_then_time_out() {
        let (w, r) = channel();
        let waiter = tokio::spawn({
            let r = r.clone();
            async move { r.wait_usable(Duration::from_secs(5)).await }
        });
        tokio::task::yield_now().await;
        w.publish(Snapshot {
            credential: Some(Arc::new(cred("t", 1, Some(Duration::from_secs(60))))),
            phase: Phase::Ready,
            ..Snapshot::starting()
        });
        assert_eq!(waiter.await.unwrap().unwrap().generation, 1);

        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(
            r.current(Instant::now()).is_none(),
            "expired credential is not usable"
        );
        let err = r.wait_usable(Duration::from_secs(2)).await.unwrap_err();
        assert!(matches!(err, Unavailable::Timeout { .. }));
    }

    #[tokio::test]
    async fn login_required_answers_at_once() {
        let (w, r) = channel();
        w.update(|s| s.phase = Phase::LoginRequired);
        assert_eq!(
            r.wait_usable(Duration::from_secs(60)).await.unwrap_err(),
            Unavailable::LoginRequired
        );
    }

    fn publish(w: &CredentialWriter, c: Credential) -> Arc<Credential> {
        let c = Arc::new(c);
        w.publish(Snapshot {
            credential: Some(c.clone()),
            phase: Phase::Ready,
            ..Snapshot::starting()
        });
        c
    }

    #[tokio::test(start_paused = true)]
    async fn a_401_flood_grants_one_forced_refresh() {
        let (w, r) = channel();
        let c = publish(&w, cred("t", 1, Some(Duration::from_secs(3600))));
        assert!(
            !r.report_rejected(&c, Rejection::Plain),
            "a token younger than 10 s is not refreshed on 401"
        );
        tokio::time::advance(Duration::from_secs(11)).await;
        let granted = (0..1000)
            .filter(|_| r.report_rejected(&c, Rejection::Plain))
            .count();
        assert_eq!(granted, 1);
        assert_eq!(w.rejected().await, (1, Rejection::Plain));

        // A new token: still at most one per 30 s per provider.
        let c2 = publish(&w, cred("t2", 2, Some(Duration::from_secs(3600))));
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(
            !r.report_rejected(&c2, Rejection::Plain),
            "within 30 s of the last forced refresh"
        );
        tokio::time::advance(Duration::from_secs(20)).await;
        assert!(
            !r.report_rejected(&c, Rejection::Plain),
            "an old generation never forces a refresh"
        );
        assert!(r.report_rejected(&c2, Rejection::Plain));
    }

    /// Issue 14 item 1: a 401 with `Bearer error="invalid_token"` forces a refresh whatever the
    /// token's age, and the writer learns what the 401 said; still once per token, once a second.
    #[tokio::test(start_paused = true)]
    async fn an_invalid_token_401_forces_a_refresh_of_a_new_token() {
        let (w, r) = channel();
        let c = publish(&w, cred("t", 1, None));
        assert!(
            !r.report_rejected(&c, Rejection::Plain),
            "too new for a plain 401"
        );
        assert!(r.report_rejected(&c, Rejection::InvalidToken));
        assert!(
            !r.report_rejected(&c, Rejection::InvalidToken),
            "once per token"
        );
        assert_eq!(w.rejected().await, (1, Rejection::InvalidToken));

        let c2 = publish(&w, cred("t2", 2, None));
        assert!(
            !r.report_rejected(&c2, Rejection::InvalidToken),
            "within a second of the last forced refresh"
        );
        tokio::time::advance(INVALID_TOKEN_REFRESH_INTERVAL).await;
        assert!(r.report_rejected(&c2, Rejection::InvalidToken));
        assert_eq!(w.rejected().await, (2, Rejection::InvalidToken));
        // A plain 401 afterwards is not taken for an invalid_token one.
        let c3 = publish(&w, cred("t3", 3, None));
        tokio::time::advance(FORCED_REFRESH_INTERVAL).await;
        assert!(r.report_rejected(&c3, Rejection::Plain));
        assert_eq!(w.rejected().await, (3, Rejection::Plain));
    }

    #[tokio::test(start_paused = true)]
    async fn wait_newer_sees_the_next_generation() {
        let (w, r) = channel();
        publish(&w, cred("t", 1, Some(Duration::from_secs(3600))));
        let waiter = tokio::spawn({
            let r = r.clone();
            async move { r.wait_newer(1, Duration::from_secs(5)).await }
        });
        tokio::task::yield_now().await;
        publish(&w, cred("t2", 2, Some(Duration::from_secs(3600))));
        assert_eq!(waiter.await.unwrap().unwrap().generation, 2);
        assert!(r.wait_newer(2, Duration::from_secs(1)).await.is_none());
    }
}
