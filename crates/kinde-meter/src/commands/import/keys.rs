//! The `Idempotency-Key` of an import batch, derived from what it holds
//! (docs/import-export.md#idempotency-keys).
//!
//! The server keeps one key per batch request, so the key names the batch:
//! a hash of each record's line number and canonical fields. The same file
//! imported again cuts the same batches (100 rows each, in file order), so
//! every batch gets the key it had and a batch the server already stored is
//! answered from its memory instead of counted again. The line numbers make
//! the same row on two lines two records.

use kinde_meter_wire::IdempotencyKey;
use sha2::{Digest, Sha256};

/// Prefix of the keys, naming the rule (a change of the rule changes it).
const PREFIX: &str = "kinde-meter-import-v1-";

/// The key of a batch of `(line, canonical parts)` records, in the order sent.
pub fn batch_key<'a>(records: impl IntoIterator<Item = (u64, &'a [String; 5])>) -> IdempotencyKey {
    let mut hash = Sha256::new();
    for (line, parts) in records {
        hash.update(line.to_be_bytes());
        for part in parts {
            // Length-prefixed, so no two different records hash alike.
            hash.update((part.len() as u64).to_be_bytes());
            hash.update(part.as_bytes());
        }
    }
    let key = format!("{PREFIX}{}", hex::encode(hash.finalize()));
    IdempotencyKey::new(key).expect("a prefix and hex digits are visible ASCII within 255")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(value: &str) -> [String; 5] {
        [
            "agreement_1".to_owned(),
            "api_calls".to_owned(),
            value.to_owned(),
            String::new(),
            "delta".to_owned(),
        ]
    }

    #[test]
    fn keys_depend_on_lines_and_contents_only() {
        let (one, two) = (parts("1"), parts("2"));
        let key = batch_key([(2, &one), (3, &two)]);
        assert_eq!(key, batch_key([(2, &one), (3, &two)]));
        assert_ne!(key, batch_key([(2, &one), (4, &two)]), "a line moved");
        assert_ne!(key, batch_key([(2, &one), (3, &one)]), "a value changed");
        assert_ne!(key, batch_key([(2, &one)]), "a record left out");
        assert!(key.as_str().starts_with(PREFIX));
        assert_eq!(key.as_str().len(), PREFIX.len() + 64);
    }

    #[test]
    fn field_boundaries_count() {
        let mut a = parts("1");
        let mut b = parts("1");
        a[0] = "agreement_1".to_owned();
        a[1] = "xapi_calls".to_owned();
        b[0] = "agreement_1x".to_owned();
        b[1] = "api_calls".to_owned();
        assert_ne!(batch_key([(2, &a)]), batch_key([(2, &b)]));
    }
}
