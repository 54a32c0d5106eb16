//! Token values as Redis sees them: AES-256-GCM, a fresh random 96-bit nonce per value, and the
//! key prefix, provider name and token fingerprint as associated data.
//!
//! ```text
//! value = 0x01 ‖ nonce (12 bytes) ‖ ciphertext ‖ tag (16 bytes)
//! aad   = "credproxy redis v1" ‖ len ‖ key_prefix ‖ len ‖ provider ‖ len ‖ fingerprint
//! ```
//!
//! The associated data binds a value to where it was written and to what it was obtained with:
//! a value copied to another provider's key, or paired with another fingerprint (the fingerprint
//! sits beside the value in the clear so the engine can refuse a foreign token), fails to open.
//! Random nonces are safe here: one key seals a few values per token lifetime, far from the 2^32
//! values after which random 96-bit nonces start to risk a collision (NIST SP 800-38D §8.3).

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

/// The first byte of every sealed value: the format, so a later one can be told apart.
const FORMAT: u8 = 1;

/// The store's encryption key. No `Debug` of the key bytes (ring's prints the algorithm only).
pub struct SealKey {
    key: LessSafeKey,
    rng: SystemRandom,
}

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealKey([redacted])")
    }
}

/// Why a value could not be opened. Says nothing about the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("the value is not in the sealed format")]
    Format,
    #[error("the value does not open with this encryption_key (another key, or it was altered)")]
    Key,
}

impl SealKey {
    /// A key from its 32 bytes.
    pub fn new(bytes: &[u8; 32]) -> Self {
        let key = UnboundKey::new(&AES_256_GCM, bytes).expect("32 bytes is an AES-256 key");
        SealKey {
            key: LessSafeKey::new(key),
            rng: SystemRandom::new(),
        }
    }

    pub fn seal(&self, plain: &[u8], aad: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng
            .fill(&mut nonce)
            .expect("the system's random source works");
        let mut out = Vec::with_capacity(1 + NONCE_LEN + plain.len() + 16);
        out.push(FORMAT);
        out.extend_from_slice(&nonce);
        let mut body = plain.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut body,
            )
            .expect("a token is far below AES-GCM's size limit");
        out.extend_from_slice(&body);
        out
    }

    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, OpenError> {
        let (&format, rest) = sealed.split_first().ok_or(OpenError::Format)?;
        if format != FORMAT || rest.len() < NONCE_LEN + 16 {
            return Err(OpenError::Format);
        }
        let (nonce, body) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| OpenError::Format)?;
        let mut body = body.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(aad), &mut body)
            .map_err(|_| OpenError::Key)?;
        Ok(plain.to_vec())
    }
}

/// The associated data of a value: each part length-prefixed, so no two differ by moving bytes
/// from one part to the next.
pub fn aad(prefix: &str, provider: &str, fingerprint: &str) -> Vec<u8> {
    let mut out = b"credproxy redis v1".to_vec();
    for part in [prefix, provider, fingerprint] {
        out.extend_from_slice(&(part.len() as u64).to_be_bytes());
        out.extend_from_slice(part.as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_binding_holds() {
        let key = SealKey::new(&[7; 32]);
        let ad = aad("cp", "api", "fp1");
        let sealed = key.seal(b"at-SECRET", &ad);
        assert_eq!(key.open(&sealed, &ad).unwrap(), b"at-SECRET");
        assert!(
            !sealed.windows(6).any(|w| w == b"SECRET"),
            "the plain text shows"
        );
        // Two seals of one value differ (fresh nonces).
        assert_ne!(sealed, key.seal(b"at-SECRET", &ad));
        // Another provider, prefix or fingerprint, or another key: refused.
        for other in [
            aad("cp", "api2", "fp1"),
            aad("cp2", "api", "fp1"),
            aad("cp", "api", "fp2"),
        ] {
            assert_eq!(key.open(&sealed, &other), Err(OpenError::Key));
        }
        assert_eq!(
            SealKey::new(&[8; 32]).open(&sealed, &ad),
            Err(OpenError::Key)
        );
        // A flipped bit, a cut value, another format.
        let mut flipped = sealed.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(key.open(&flipped, &ad), Err(OpenError::Key));
        assert_eq!(key.open(&sealed[..10], &ad), Err(OpenError::Format));
        let mut v2 = sealed.clone();
        v2[0] = 2;
        assert_eq!(key.open(&v2, &ad), Err(OpenError::Format));
        assert_eq!(key.open(b"", &ad), Err(OpenError::Format));
        // Moving bytes between parts changes the associated data.
        assert_ne!(aad("a", "bc", "d"), aad("ab", "c", "d"));
    }
}
