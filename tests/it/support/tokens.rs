//! What a fake has issued: access tokens, refresh tokens and authorization codes, with expiry
//! decided by the [`FakeClock`]. The per-provider rules (rotation, BACE's in-place extension,
//! Apicbase's refresh-after-expiry) live in each fake; this is only the ledger.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;

use super::clock::FakeClock;
use super::fault::TokenShape;
use super::http::Reject;

/// `<prefix>_<32 hex chars>`: random, and names the fake that issued it in test output.
pub fn random_token(prefix: &str) -> String {
    let bytes: [u8; 16] = rand::random();
    let mut out = String::with_capacity(prefix.len() + 33);
    out.push_str(prefix);
    out.push('_');
    for b in bytes {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Who a token was issued to, carried from code to token and from refresh to access token.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Grantee {
    pub client_id: String,
    pub username: Option<String>,
    pub scope: Option<String>,
}

#[derive(Clone, Debug)]
pub struct AccessToken {
    /// `None`: never expires.
    pub expires_at: Option<SystemTime>,
    pub grantee: Grantee,
    /// The refresh token issued alongside, if any.
    pub refresh: Option<String>,
}

#[derive(Clone, Debug)]
struct RefreshToken {
    grantee: Grantee,
    spent: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefreshError {
    Unknown,
    /// Already used once under rotation: a replay.
    Spent,
}

impl RefreshError {
    pub fn reject(self) -> Reject {
        match self {
            RefreshError::Unknown => Reject::invalid_grant("unknown refresh token"),
            RefreshError::Spent => Reject::invalid_grant("refresh token already used"),
        }
    }
}

pub struct TokenBook {
    prefix: String,
    clock: FakeClock,
    access: Mutex<HashMap<String, AccessToken>>,
    refresh: Mutex<HashMap<String, RefreshToken>>,
    issued: AtomicUsize,
    refresh_reuse: AtomicUsize,
}

impl TokenBook {
    pub fn new(prefix: &str, clock: FakeClock) -> Self {
        TokenBook {
            prefix: prefix.to_owned(),
            clock,
            access: Mutex::default(),
            refresh: Mutex::default(),
            issued: AtomicUsize::new(0),
            refresh_reuse: AtomicUsize::new(0),
        }
    }

    /// Issues an access token living `lifetime` (`None`: forever), with a refresh token if asked.
    pub fn issue(
        &self,
        shape: TokenShape,
        lifetime: Option<Duration>,
        grantee: &Grantee,
        with_refresh: bool,
    ) -> (String, Option<String>) {
        let base = random_token(&format!("{}_at", self.prefix));
        let access = match shape {
            TokenShape::Normal => base,
            // Header injection bait: a proxy that copies this into a header verbatim would
            // split the request.
            TokenShape::Crlf => format!("{base}\r\nX-Injected: yes"),
            TokenShape::Space => format!("{base} extra"),
        };
        let refresh = with_refresh.then(|| self.issue_refresh(grantee));
        let entry = AccessToken {
            expires_at: lifetime.map(|d| self.clock.after(d)),
            grantee: grantee.clone(),
            refresh: refresh.clone(),
        };
        self.access.lock().insert(access.clone(), entry);
        self.issued.fetch_add(1, Ordering::SeqCst);
        (access, refresh)
    }

    pub fn issue_refresh(&self, grantee: &Grantee) -> String {
        let token = random_token(&format!("{}_rt", self.prefix));
        let entry = RefreshToken {
            grantee: grantee.clone(),
            spent: false,
        };
        self.refresh.lock().insert(token.clone(), entry);
        token
    }

    /// Registers a token the test chose (a preconfigured static token).
    pub fn insert_access(&self, token: &str, expires_at: Option<SystemTime>, grantee: Grantee) {
        let entry = AccessToken {
            expires_at,
            grantee,
            refresh: None,
        };
        self.access.lock().insert(token.to_owned(), entry);
    }

    pub fn access(&self, token: &str) -> Option<AccessToken> {
        self.access.lock().get(token).cloned()
    }

    /// Issued here, not revoked, and not expired by the fake clock.
    pub fn is_valid(&self, token: &str) -> bool {
        self.access(token).is_some_and(|t| self.is_live(&t))
    }

    pub fn is_live(&self, token: &AccessToken) -> bool {
        token.expires_at.is_none_or(|at| at > self.clock.now_wall())
    }

    pub fn set_expiry(&self, token: &str, expires_at: Option<SystemTime>) {
        if let Some(t) = self.access.lock().get_mut(token) {
            t.expires_at = expires_at;
        }
    }

    pub fn revoke_access(&self, token: &str) -> bool {
        self.access.lock().remove(token).is_some()
    }

    pub fn revoke_refresh(&self, token: &str) -> bool {
        self.refresh.lock().remove(token).is_some()
    }

    /// Forgets every access token, as a server-side revocation would.
    pub fn revoke_all_access(&self) {
        self.access.lock().clear();
    }

    /// Checks a refresh token; under `rotate` it is spent by this use, and a second use counts
    /// as a reuse.
    pub fn use_refresh(&self, token: &str, rotate: bool) -> Result<Grantee, RefreshError> {
        let mut refresh = self.refresh.lock();
        let Some(entry) = refresh.get_mut(token) else {
            return Err(RefreshError::Unknown);
        };
        if entry.spent {
            self.refresh_reuse.fetch_add(1, Ordering::SeqCst);
            return Err(RefreshError::Spent);
        }
        if rotate {
            entry.spent = true;
        }
        Ok(entry.grantee.clone())
    }

    /// What a server with reuse detection does on a replay (RFC 9700 §4.14.2): the whole grant
    /// goes, every refresh and access token issued to that client and user. How many refresh
    /// tokens were still live.
    pub fn revoke_grant_of(&self, token: &str) -> usize {
        let mut refresh = self.refresh.lock();
        let Some(family) = refresh.get(token).map(|t| t.grantee.clone()) else {
            return 0;
        };
        let same = |g: &Grantee| g.client_id == family.client_id && g.username == family.username;
        let mut live = 0;
        for t in refresh.values_mut().filter(|t| same(&t.grantee)) {
            live += usize::from(!t.spent);
            t.spent = true;
        }
        self.access.lock().retain(|_, a| !same(&a.grantee));
        live
    }

    pub fn is_refresh_live(&self, token: &str) -> bool {
        self.refresh.lock().get(token).is_some_and(|t| !t.spent)
    }

    /// Access tokens issued so far (static ones not counted).
    pub fn issued(&self) -> usize {
        self.issued.load(Ordering::SeqCst)
    }

    pub fn refresh_reuse(&self) -> usize {
        self.refresh_reuse.load(Ordering::SeqCst)
    }
}

/// What an authorization code stands for (RFC 6749 §4.1.2), checked again at exchange (§4.1.3).
#[derive(Clone, Debug, Default)]
pub struct CodeGrant {
    pub client_id: String,
    /// `None`: the code was issued without a redirect (test shortcut or paste flow), and any
    /// `redirect_uri` is accepted at exchange.
    pub redirect_uri: Option<String>,
    pub scope: Option<String>,
    /// RFC 7636 S256 challenge.
    pub code_challenge: Option<String>,
}

struct CodeEntry {
    grant: CodeGrant,
    expires_at: SystemTime,
    used: bool,
}

pub struct CodeBook {
    prefix: String,
    clock: FakeClock,
    lifetime: Mutex<Duration>,
    codes: Mutex<HashMap<String, CodeEntry>>,
}

impl CodeBook {
    pub fn new(prefix: &str, clock: FakeClock, lifetime: Duration) -> Self {
        CodeBook {
            prefix: prefix.to_owned(),
            clock,
            lifetime: Mutex::new(lifetime),
            codes: Mutex::default(),
        }
    }

    pub fn set_lifetime(&self, lifetime: Duration) {
        *self.lifetime.lock() = lifetime;
    }

    pub fn issue(&self, grant: CodeGrant) -> String {
        let code = random_token(&format!("{}_code", self.prefix));
        let entry = CodeEntry {
            grant,
            expires_at: self.clock.after(*self.lifetime.lock()),
            used: false,
        };
        self.codes.lock().insert(code.clone(), entry);
        code
    }

    /// Single use: the first attempt spends the code even if it fails later checks.
    pub fn redeem(&self, code: &str) -> Result<CodeGrant, Reject> {
        let mut codes = self.codes.lock();
        let Some(entry) = codes.get_mut(code) else {
            return Err(Reject::invalid_grant("unknown authorization code"));
        };
        if entry.used {
            return Err(Reject::invalid_grant("authorization code already used"));
        }
        entry.used = true;
        if entry.expires_at <= self.clock.now_wall() {
            return Err(Reject::invalid_grant("authorization code expired"));
        }
        Ok(entry.grant.clone())
    }
}
