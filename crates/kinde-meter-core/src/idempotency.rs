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
        Fingerprint(hex_digest(&hasher.finalize().into()))
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

/// Lowercase hex of a SHA-256 digest, the text stored by every backend (so it must
/// stay byte-identical to `hex::encode`'s: an upgraded server compares it with the
/// fingerprints stored before). Written into a fixed buffer, then one allocation
/// (`hex::encode` builds its `String` a `char` at a time).
fn hex_digest(digest: &[u8; 32]) -> String {
    let mut text = [0u8; 64];
    hex::encode_to_slice(digest, &mut text).expect("64 bytes hold 32 bytes' hex");
    std::str::from_utf8(&text)
        .expect("hex digits are ASCII")
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The text form is stored: it must be what `hex::encode` of the digest gave.
    #[test]
    fn fingerprints_are_the_lowercase_hex_of_the_digest() {
        let inputs: [&[&str]; 5] = [
            &[],
            &[""],
            &["a", "b"],
            &["agreement_1", "api_calls", "1", "", "delta"],
            &["\u{0}\u{ff}é", "0123456789abcdef"],
        ];
        for parts in inputs {
            let mut hasher = Sha256::new();
            for part in parts {
                hasher.update((part.len() as u64).to_be_bytes());
                hasher.update(part.as_bytes());
            }
            let digest = hasher.finalize();
            assert_eq!(
                Fingerprint::of(parts.iter().copied()).as_str(),
                hex::encode(digest)
            );
        }
        // Every byte value.
        for block in 0..8u8 {
            let bytes: [u8; 32] = std::array::from_fn(|i| block * 32 + i as u8);
            assert_eq!(hex_digest(&bytes), hex::encode(bytes));
        }
        assert_eq!(hex_digest(&[0xff; 32]), "f".repeat(64));
        assert_eq!(hex_digest(&[0; 32]), "0".repeat(64));
        // A fixed vector: one empty part is its 8-byte zero length prefix alone.
        assert_eq!(
            Fingerprint::of([""]).as_str(),
            "af5570f5a1810b7af78caf4bc70a660f0df51e42baf91d4de5b2328de0e83dfc"
        );
    }

    #[test]
    fn fingerprints_do_not_collide_by_concatenation() {
        assert_ne!(Fingerprint::of(["ab", "c"]), Fingerprint::of(["a", "bc"]));
        assert_eq!(Fingerprint::of(["a", "b"]), Fingerprint::of(["a", "b"]));
    }
}
