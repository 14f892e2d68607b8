//! Idempotency keys and request fingerprints (SPEC §2).
//!
//! A retry with the same key and the same body, from the same client, within the
//! retention window returns the original response; the same key with another body
//! is refused. "The same body" means the same parsed request, compared by a
//! SHA-256 fingerprint of its canonical form, so `"007"` and `"7"` or a reordered
//! JSON object are the same body and a changed value is not.

use jiff::SignedDuration;
use sha2::{Digest, Sha256};

/// How long a key is remembered by default.
pub const DEFAULT_RETENTION: SignedDuration = SignedDuration::from_hours(24);

/// A client-chosen `Idempotency-Key`: 1 to 255 visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

/// The header was not a valid key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("Idempotency-Key must be 1 to 255 visible ASCII characters")]
pub struct InvalidIdempotencyKey;

impl IdempotencyKey {
    /// Accepts 1 to 255 characters in `!`..=`~`.
    pub fn parse(s: &str) -> Result<IdempotencyKey, InvalidIdempotencyKey> {
        if (1..=255).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_graphic()) {
            Ok(IdempotencyKey(s.to_owned()))
        } else {
            Err(InvalidIdempotencyKey)
        }
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A fingerprint of a request's canonical form, hex SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Fingerprint(String);

impl Fingerprint {
    /// Hashes canonical parts; each part is length-prefixed so no two different
    /// sequences of parts can collide by concatenation.
    pub fn of<'a>(parts: impl IntoIterator<Item = &'a str>) -> Fingerprint {
        let mut hasher = Sha256::new();
        for part in parts {
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part.as_bytes());
        }
        Fingerprint(hex::encode(hasher.finalize()))
    }

    /// Rebuilds a stored fingerprint.
    pub fn from_stored(hex: String) -> Fingerprint {
        Fingerprint(hex)
    }

    /// The hex digest.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_visible_ascii() {
        assert!(IdempotencyKey::parse("a").is_ok());
        assert!(IdempotencyKey::parse(&"k".repeat(255)).is_ok());
        assert!(IdempotencyKey::parse("").is_err());
        assert!(IdempotencyKey::parse(&"k".repeat(256)).is_err());
        assert!(IdempotencyKey::parse("a b").is_err());
        assert!(IdempotencyKey::parse("é").is_err());
    }

    #[test]
    fn fingerprints_do_not_collide_by_concatenation() {
        assert_ne!(Fingerprint::of(["ab", "c"]), Fingerprint::of(["a", "bc"]));
        assert_eq!(Fingerprint::of(["a", "b"]), Fingerprint::of(["a", "b"]));
    }
}
