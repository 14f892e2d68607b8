//! Identifiers and codes: agreement ids, customer ids, plan and feature codes,
//! each 1 to 255 characters without control characters, checked here once
//! (docs/design.md#identifiers).

use std::fmt;

use jiff::Timestamp;

/// Longest code or id accepted.
pub const MAX_CODE_LEN: usize = 255;

/// Why a code was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CodeError {
    /// Empty (or only whitespace).
    #[error("must not be empty")]
    Empty,
    /// Longer than [`MAX_CODE_LEN`] characters.
    #[error("must be at most 255 characters")]
    TooLong,
    /// Holds a control character.
    #[error("must not contain control characters")]
    ControlCharacter,
}

fn check_code(s: &str) -> Result<(), CodeError> {
    if s.is_ascii() {
        return check_ascii_code(s.as_bytes());
    }
    check_code_chars(s)
}

/// [`check_code`] of an ASCII text (every code on the hot path): the same
/// answers a byte at a time, without decoding characters three times. In
/// ASCII, `trim`'s whitespace is space, `\t`, `\n`, `\x0B`, `\x0C` and `\r`,
/// a character is a byte, and the control characters are below 0x20 and 0x7F.
fn check_ascii_code(s: &[u8]) -> Result<(), CodeError> {
    if s.iter()
        .all(|b| matches!(b, b' ' | b'\t' | b'\n' | 0x0B | 0x0C | b'\r'))
    {
        Err(CodeError::Empty)
    } else if s.len() > MAX_CODE_LEN {
        Err(CodeError::TooLong)
    } else if s.iter().any(|&b| b < 0x20 || b == 0x7F) {
        Err(CodeError::ControlCharacter)
    } else {
        Ok(())
    }
}

fn check_code_chars(s: &str) -> Result<(), CodeError> {
    if s.trim().is_empty() {
        Err(CodeError::Empty)
    } else if s.chars().count() > MAX_CODE_LEN {
        Err(CodeError::TooLong)
    } else if s.chars().any(char::is_control) {
        Err(CodeError::ControlCharacter)
    } else {
        Ok(())
    }
}

macro_rules! code_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// Accepts 1 to 255 characters without control characters.
            pub fn parse(s: impl Into<String>) -> Result<Self, CodeError> {
                let s = s.into();
                check_code(&s)?;
                Ok($name(s))
            }

            /// The code as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

code_type!(
    /// A billing agreement id, e.g. `agreement_0195ac80a14c2ca2cec97d026d864de0`.
    AgreementId
);
code_type!(
    /// A customer id, e.g. `customer_0195ac80a14c2ca2cec97d026d864de0`.
    CustomerId
);
code_type!(
    /// A plan code from the catalog, e.g. `pro`.
    PlanCode
);
code_type!(
    /// A feature code (Kinde's "key"), e.g. `api_calls`.
    FeatureCode
);
code_type!(
    /// An entitlement id.
    EntitlementId
);

impl AgreementId {
    /// A new id shaped like Kinde's: `agreement_` and 32 hex digits, the first 12 the
    /// creation time in milliseconds (so ids sort by creation), the rest random.
    /// The caller supplies the randomness; this crate does no I/O.
    pub fn generate(now: Timestamp, random: [u8; 10]) -> AgreementId {
        let millis = now.as_millisecond().max(0) as u64 & 0xffff_ffff_ffff;
        let mut id = format!("agreement_{millis:012x}");
        for b in random {
            id.push_str(&format!("{b:02x}"));
        }
        AgreementId(id)
    }
}

impl EntitlementId {
    /// The entitlement id of a feature on an agreement: stable, derived from both.
    pub fn derive(agreement: &AgreementId, feature: &FeatureCode) -> EntitlementId {
        use sha2::{Digest, Sha256};
        let digest = Sha256::new()
            .chain_update(agreement.as_str())
            .chain_update([0])
            .chain_update(feature.as_str())
            .finalize();
        EntitlementId(format!("entitlement_{}", hex::encode(&digest[..16])))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The ASCII path answers as the character one, on ASCII texts
        /// heavy in whitespace, control characters and long runs.
        #[test]
        fn the_ascii_check_is_the_chars_one(
            s in proptest::collection::vec(
                prop_oneof![Just(b' '), Just(b'\t'), Just(0x0Bu8), Just(0x7Fu8), 0u8..0x80], 0..300)
        ) {
            let s = String::from_utf8(s).unwrap();
            prop_assert_eq!(check_code(&s), check_code_chars(&s));
        }
    }

    #[test]
    fn codes_are_checked_once() {
        assert!(FeatureCode::parse("api_calls").is_ok());
        assert_eq!(FeatureCode::parse(""), Err(CodeError::Empty));
        assert_eq!(FeatureCode::parse("  "), Err(CodeError::Empty));
        assert_eq!(FeatureCode::parse("a\nb"), Err(CodeError::ControlCharacter));
        assert_eq!(FeatureCode::parse("x".repeat(256)), Err(CodeError::TooLong));
        assert!(FeatureCode::parse("é".repeat(255)).is_ok());
    }

    #[test]
    fn generated_ids_look_like_kindes() {
        let now: Timestamp = "2025-03-18T00:00:00Z".parse().unwrap();
        let id = AgreementId::generate(now, [0xab; 10]);
        assert_eq!(id.as_str().len(), "agreement_".len() + 32);
        assert!(id.as_str().starts_with("agreement_0195a"));
        let later = AgreementId::generate(now + jiff::SignedDuration::from_millis(1), [0; 10]);
        assert!(later > AgreementId::generate(now, [0xff; 10]));
    }
}
