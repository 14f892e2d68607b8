//! `Idempotency-Key`s: what makes a write safe to retry.
//!
//! The server remembers the answer to a write sent with a key; a retry with the
//! same key and body gets that answer back and records nothing new. The SDK
//! sends one with every usage write — yours, or one it generates — and a retry
//! of that logical call must send the same key again, never a fresh one.

use std::fmt;

/// An `Idempotency-Key` header value: 1 to 255 visible ASCII characters
/// (`!` to `~`, so no spaces).
///
/// ```
/// use kinde_sdk::IdempotencyKey;
///
/// let key = IdempotencyKey::new("order-1234-usage").unwrap();
/// assert_eq!(key.as_str(), "order-1234-usage");
/// assert!(IdempotencyKey::new("has a space").is_err());
/// assert_eq!(IdempotencyKey::generate().as_str().len(), 32);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

/// A string that is not a valid [`IdempotencyKey`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("an Idempotency-Key must be 1 to 255 visible ASCII characters")]
pub struct InvalidIdempotencyKey;

impl IdempotencyKey {
    /// The longest key the server accepts.
    pub const MAX_LEN: usize = 255;

    /// Checks that `key` is 1 to 255 visible ASCII characters.
    ///
    /// # Errors
    ///
    /// [`InvalidIdempotencyKey`] for an empty or longer key, or one holding a
    /// space, a control or a non-ASCII character.
    pub fn new(key: impl Into<String>) -> Result<Self, InvalidIdempotencyKey> {
        let key = key.into();
        if (1..=Self::MAX_LEN).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic()) {
            Ok(IdempotencyKey(key))
        } else {
            Err(InvalidIdempotencyKey)
        }
    }

    /// A fresh random key: 128 bits from the operating system's CSPRNG-seeded
    /// thread generator, as 32 lowercase hex digits. Unguessable and, in
    /// practice, never repeated.
    pub fn generate() -> Self {
        IdempotencyKey(format!("{:032x}", rand::random::<u128>()))
    }

    /// The key as sent.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<IdempotencyKey> for String {
    fn from(key: IdempotencyKey) -> String {
        key.0
    }
}

impl TryFrom<String> for IdempotencyKey {
    type Error = InvalidIdempotencyKey;

    fn try_from(key: String) -> Result<Self, Self::Error> {
        IdempotencyKey::new(key)
    }
}

impl TryFrom<&str> for IdempotencyKey {
    type Error = InvalidIdempotencyKey;

    fn try_from(key: &str) -> Result<Self, Self::Error> {
        IdempotencyKey::new(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_visible_ascii() {
        assert!(IdempotencyKey::new("a").is_ok());
        assert!(IdempotencyKey::new("k".repeat(255)).is_ok());
        assert!(IdempotencyKey::new("").is_err());
        assert!(IdempotencyKey::new("k".repeat(256)).is_err());
        assert!(IdempotencyKey::new("a b").is_err());
        assert!(IdempotencyKey::new("a\n").is_err());
        assert!(IdempotencyKey::new("é").is_err());
    }

    #[test]
    fn generated_keys_are_128_bit_hex_and_distinct() {
        let a = IdempotencyKey::generate();
        let b = IdempotencyKey::generate();
        assert_ne!(a, b);
        for key in [&a, &b] {
            assert_eq!(key.as_str().len(), 32);
            assert!(
                key.as_str()
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            );
        }
    }
}
