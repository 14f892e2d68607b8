//! `Idempotency-Key`s: what makes a usage write safe to retry.
//!
//! The server remembers the answer to a write sent with a key; a retry with the
//! same key and body gets that answer back and records nothing new. One type for
//! both ends: the server checks the header with it, the SDK sends it.

use std::fmt;

/// An `Idempotency-Key` header value: 1 to 255 visible ASCII characters
/// (`!` to `~`, so no spaces).
///
/// ```
/// # use kinde_meter_wire::IdempotencyKey;
/// let key = IdempotencyKey::new("order-1234-usage").unwrap();
/// assert_eq!(key.as_str(), "order-1234-usage");
/// assert!(IdempotencyKey::new("has a space").is_err());
/// assert_eq!(IdempotencyKey::from_random([0xab; 16]).as_str(), "ab".repeat(16));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

/// A string that is not a valid [`IdempotencyKey`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidIdempotencyKey;

impl fmt::Display for InvalidIdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an Idempotency-Key must be 1 to 255 visible ASCII characters")
    }
}

impl std::error::Error for InvalidIdempotencyKey {}

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

    /// The key made of 128 random bits, as 32 lowercase hex digits. The caller
    /// brings the randomness, so that this crate needs no random number
    /// generator; `generate` (feature `rand`) uses the operating system's.
    pub fn from_random(bytes: [u8; 16]) -> Self {
        IdempotencyKey(format!("{:032x}", u128::from_be_bytes(bytes)))
    }

    /// A fresh random key: 128 bits from the operating system's CSPRNG-seeded
    /// thread generator, as 32 lowercase hex digits. Unguessable and, in
    /// practice, never repeated.
    //
    // Behind the `rand` feature, which only kinde-sdk enables: the SDK's public
    // `IdempotencyKey::generate()` must be an inherent method of this one type
    // (a free function or extension trait in the SDK would change its API), and
    // the server, which never makes keys, should not compile a random generator
    // for it.
    #[cfg(feature = "rand")]
    pub fn generate() -> Self {
        IdempotencyKey::from_random(rand::random())
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
        assert!(IdempotencyKey::new("!~").is_ok());
        assert!(IdempotencyKey::new("k".repeat(255)).is_ok());
        assert!(IdempotencyKey::new("").is_err());
        assert!(IdempotencyKey::new("k".repeat(256)).is_err());
        assert!(IdempotencyKey::new("a b").is_err());
        assert!(IdempotencyKey::new("a\n").is_err());
        assert!(IdempotencyKey::new("a\u{7f}").is_err());
        assert!(IdempotencyKey::new("é").is_err());
    }

    #[test]
    fn random_keys_are_128_bit_lowercase_hex() {
        let key = IdempotencyKey::from_random([
            0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d,
            0x0e, 0xff,
        ]);
        assert_eq!(key.as_str(), "000102030405060708090a0b0c0d0eff");
        assert_eq!(IdempotencyKey::new(key.as_str()), Ok(key));
    }
}
