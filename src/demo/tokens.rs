//! The demo's token book: which access tokens the demo token server issued, and until when.
//!
//! The token server writes it, the demo API reads it: the two run in one process, so the API
//! checks a token by looking it up here instead of calling an introspection endpoint (RFC 7662).
//! The book keeps a SHA-256 of each token, never the token itself, and keeps time with
//! [`tokio::time::Instant`] so tests can expire tokens with a paused clock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use rand::RngCore;
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use crate::secret::Secret;

/// An expired token is remembered this long after it expired, so the API can answer "expired"
/// rather than "unknown"; after that it is forgotten and the book stays small.
const REMEMBER_EXPIRED: Duration = Duration::from_secs(300);

/// Random bytes per token: 256 bits, far beyond guessing (RFC 6749 §10.10).
const TOKEN_BYTES: usize = 32;

/// What the API learns about a presented token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Issued by the token server and still valid for this long.
    Valid { expires_in: Duration },
    /// Issued by the token server, expired.
    Expired,
    /// Never issued here (or expired long ago).
    Unknown,
}

/// One issued token, as the token server hands it out.
#[derive(Debug)]
pub struct Issued {
    /// The access token: only for the reply body.
    pub token: Secret,
    /// 1 for the first token the server issued, 2 for the next, ...
    pub number: u64,
    pub lifetime: Duration,
}

/// Issued tokens by hash, with their expiry.
#[derive(Debug)]
pub struct TokenBook {
    lifetime: Duration,
    issued: AtomicU64,
    // A std-style lock is fine here: held for a map operation, never across an `.await`.
    expiry: Mutex<HashMap<[u8; 32], Instant>>,
}

impl TokenBook {
    /// A book whose tokens live `lifetime`.
    pub fn new(lifetime: Duration) -> Self {
        TokenBook {
            lifetime,
            issued: AtomicU64::new(0),
            expiry: Mutex::new(HashMap::new()),
        }
    }

    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// How many tokens were issued so far.
    pub fn issued(&self) -> u64 {
        self.issued.load(Ordering::Relaxed)
    }

    /// Issue a new random opaque token (base64url, no padding).
    pub fn issue(&self) -> Issued {
        use base64::Engine;
        let mut bytes = [0u8; TOKEN_BYTES];
        rand::rng().fill_bytes(&mut bytes);
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let now = Instant::now();
        {
            let mut map = self.expiry.lock();
            map.retain(|_, expires| *expires + REMEMBER_EXPIRED > now);
            map.insert(digest(&token), now + self.lifetime);
        }
        let number = self.issued.fetch_add(1, Ordering::Relaxed) + 1;
        Issued {
            token: Secret::new(token),
            number,
            lifetime: self.lifetime,
        }
    }

    /// Whether `token` is one of ours and still valid.
    pub fn check(&self, token: &str) -> Check {
        let now = Instant::now();
        match self.expiry.lock().get(&digest(token)) {
            Some(expires) if *expires > now => Check::Valid {
                expires_in: *expires - now,
            },
            Some(_) => Check::Expired,
            None => Check::Unknown,
        }
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_token_is_valid_for_its_lifetime_then_expired_then_forgotten() {
        let book = TokenBook::new(Duration::from_secs(30));
        let issued = book.issue();
        assert_eq!(issued.number, 1);
        let token = issued.token.expose().to_owned();
        assert_eq!(token.len(), 43, "32 bytes in unpadded base64url");
        assert_eq!(
            book.check(&token),
            Check::Valid {
                expires_in: Duration::from_secs(30)
            }
        );
        tokio::time::advance(Duration::from_secs(29)).await;
        assert!(matches!(book.check(&token), Check::Valid { .. }));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(book.check(&token), Check::Expired);
        tokio::time::advance(REMEMBER_EXPIRED).await;
        // Forgotten when the next token is issued.
        let next = book.issue();
        assert_eq!(next.number, 2);
        assert_eq!(book.check(&token), Check::Unknown);
        assert!(matches!(
            book.check(next.token.expose()),
            Check::Valid { .. }
        ));
    }

    #[test]
    fn tokens_are_distinct_and_unknown_ones_are_refused() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            let book = TokenBook::new(Duration::from_secs(30));
            let a = book.issue();
            let b = book.issue();
            assert_ne!(a.token.expose(), b.token.expose());
            assert_eq!(book.check("not-a-token"), Check::Unknown);
            assert_eq!(book.issued(), 2);
        });
    }
}
