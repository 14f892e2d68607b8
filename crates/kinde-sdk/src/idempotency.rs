//! `Idempotency-Key`s: what makes a write safe to retry.
//!
//! The server remembers the answer to a write sent with a key; a retry with the
//! same key and body gets that answer back and records nothing new. The SDK
//! sends one with every usage write — yours, or one it generates — and a retry
//! of that logical call must send the same key again, never a fresh one.
//!
//! The type is `kinde-meter-wire`'s, which the server checks the header with;
//! the SDK turns on its `rand` feature for [`IdempotencyKey::generate`].

pub use kinde_meter_wire::{IdempotencyKey, InvalidIdempotencyKey};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_32_lowercase_hex_digits_and_distinct() {
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
            assert_eq!(IdempotencyKey::new(key.as_str()).as_ref(), Ok(key));
        }
    }
}
