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
/// // 48 bits of milliseconds since the epoch, then 80 random bits.
/// let ordered = IdempotencyKey::from_time_and_random(1_796_576_834_000, [0xcd; 10]);
/// assert_eq!(ordered.as_str(), format!("01a24c52f1d0{}", "cd".repeat(10)));
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

    /// The key made of the time `unix_ms` (milliseconds since 1970-01-01 UTC,
    /// its low 48 bits) followed by 80 random bits, as 32 lowercase hex digits:
    /// 12 digits of time, 20 of randomness. Keys made this way sort by the
    /// millisecond they were made in. `generate` (feature `rand`) makes one
    /// from the system clock and the operating system's randomness.
    pub fn from_time_and_random(unix_ms: u64, random: [u8; 10]) -> Self {
        let mut bytes = [0; 16];
        bytes[..6].copy_from_slice(&unix_ms.to_be_bytes()[2..]);
        bytes[6..].copy_from_slice(&random);
        IdempotencyKey::from_random(bytes)
    }

    /// A fresh key for one logical write: 32 lowercase hex digits, the first 12
    /// the current time in milliseconds since the epoch (48 bits, as
    /// [`from_time_and_random`](Self::from_time_and_random)), the other 20 are
    /// 80 bits from the operating system's CSPRNG-seeded thread generator.
    ///
    /// Time first, so that a client's keys arrive in about ascending order: the
    /// server keeps the keys it has seen in an index ordered by client and key,
    /// and ordered keys are appended at its end, on the same few pages, where
    /// fully random keys each land on a page of their own (one more page
    /// written to SQLite's write-ahead log per record; measured on kinde-meter:
    /// about 10 µs of server CPU per create call with ordered keys against 35 µs
    /// with random ones, above a request without a key). Still unguessable and,
    /// in practice, never repeated: 80 random bits within each millisecond
    /// (two keys of the same millisecond collide with probability 2⁻⁸⁰). The
    /// time a key was made is readable from it; it says nothing the request
    /// itself does not.
    //
    // Behind the `rand` feature, which only kinde-sdk enables: the SDK's public
    // `IdempotencyKey::generate()` must be an inherent method of this one type
    // (a free function or extension trait in the SDK would change its API), and
    // the server, which never makes keys, should not compile a random generator
    // for it.
    #[cfg(feature = "rand")]
    pub fn generate() -> Self {
        // Before 1970 (a broken clock) counts as 0: the key is as unique, only
        // no longer in order.
        let unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| {
                u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
            });
        IdempotencyKey::from_time_and_random(unix_ms, rand::random())
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

    #[test]
    fn time_ordered_keys_are_48_bit_milliseconds_then_80_random_bits() {
        let key = IdempotencyKey::from_time_and_random(0x0123_4567_89ab, [0xff; 10]);
        assert_eq!(key.as_str(), "0123456789abffffffffffffffffffff");
        // Only the low 48 bits of the time are kept.
        let key = IdempotencyKey::from_time_and_random(0xabcd_0000_0000_0001, [0; 10]);
        assert_eq!(key.as_str(), "00000000000100000000000000000000");
        // A later millisecond sorts after, whatever the random part.
        let earlier = IdempotencyKey::from_time_and_random(1_796_576_834_000, [0xff; 10]);
        let later = IdempotencyKey::from_time_and_random(1_796_576_834_001, [0; 10]);
        assert!(earlier.as_str() < later.as_str());
        assert_eq!(IdempotencyKey::new(later.as_str()), Ok(later));
    }

    #[cfg(feature = "rand")]
    #[test]
    fn generated_keys_start_with_the_current_millisecond() {
        let ms = |key: &IdempotencyKey| u64::from_str_radix(&key.as_str()[..12], 16).unwrap();
        let now = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as u64
        };
        let before = now();
        let first = IdempotencyKey::generate();
        let second = IdempotencyKey::generate();
        let after = now();
        assert!((before..=after).contains(&ms(&first)));
        assert!((before..=after).contains(&ms(&second)));
        assert_ne!(first, second);
        assert_eq!(first.as_str().len(), 32);
    }
}
