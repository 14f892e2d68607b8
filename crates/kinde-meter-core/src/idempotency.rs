//! Idempotency keys and request fingerprints (docs/api.md, idempotency).
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

// The client-chosen key is defined once, in `kinde-meter-wire`, for the server
// and the SDK.
pub use kinde_meter_wire::{IdempotencyKey, InvalidIdempotencyKey};

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
    fn fingerprints_do_not_collide_by_concatenation() {
        assert_ne!(Fingerprint::of(["ab", "c"]), Fingerprint::of(["a", "bc"]));
        assert_eq!(Fingerprint::of(["a", "b"]), Fingerprint::of(["a", "b"]));
    }
}
