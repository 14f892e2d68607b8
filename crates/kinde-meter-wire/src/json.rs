//! JSON text decoded into a [`Value`] exactly as it is written.
//!
//! This workspace turns on serde_json's `raw_value` feature (usage totals are
//! written as exact JSON numbers, `entitlements.rs`), and with it `Value`'s own
//! decoding gives one object key a meaning: an object whose first key is
//! `$serde_json::private::RawValue` is read as the JSON text of its string, so
//! `{"$serde_json::private::RawValue": "{\"a\":1}"}` decodes as `{"a":1}`, and
//! the same key followed by any other is refused as "not JSON". Bodies a client
//! sends are decoded with [`from_slice`] instead, which reads every object as
//! the object it is: the same text means the same request on every route
//! (`docs/api.md`, request bodies).

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use std::fmt;

/// Decodes `bytes` as JSON into a [`Value`], with no key treated specially.
/// Refuses exactly the texts that are not JSON (or nest deeper than
/// serde_json's limit of 128), with serde_json's error.
pub fn from_slice(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    serde_json::from_slice::<Plain>(bytes).map(|plain| plain.0)
}

/// A [`Value`] read from `deserializer` with no key treated specially, for
/// `#[serde(deserialize_with = "kinde_meter_wire::json::value")]`.
pub fn value<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Value, D::Error> {
    Plain::deserialize(deserializer).map(|plain| plain.0)
}

/// A JSON value read and dropped, for what a parser skips (an unknown field, the
/// elements of an array that should have been an object): checked as
/// [`from_slice`] checks it (valid UTF-8 strings, numbers in range, the depth
/// limit), every key an ordinary key, and nothing built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Skip;

impl<'de> Deserialize<'de> for Skip {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(SkipVisitor)
    }
}

struct SkipVisitor;

impl<'de> Visitor<'de> for SkipVisitor {
    type Value = Skip;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_str<E>(self, _: &str) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_unit<E>(self) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_none<E>(self) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Skip, D::Error> {
        Skip::deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Skip, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(Skip)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Skip, A::Error> {
        while map.next_entry::<Skip, Skip>()?.is_some() {}
        Ok(Skip)
    }
}

/// A [`Value`] decoded with no key treated specially (see the module).
struct Plain(Value);

impl<'de> Deserialize<'de> for Plain {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(PlainVisitor).map(Plain)
    }
}

struct PlainVisitor;

impl<'de> Visitor<'de> for PlainVisitor {
    type Value = Value;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("any JSON value")
    }

    fn visit_bool<E>(self, value: bool) -> Result<Value, E> {
        Ok(Value::Bool(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Value, E> {
        Ok(Value::Number(value.into()))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Value, E> {
        Ok(Value::Number(value.into()))
    }

    /// As `Value` does: a float JSON cannot hold (never one serde_json read
    /// from text) is `null`.
    fn visit_f64<E>(self, value: f64) -> Result<Value, E> {
        Ok(Number::from_f64(value).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, value: &str) -> Result<Value, E> {
        Ok(Value::String(value.to_owned()))
    }

    fn visit_string<E>(self, value: String) -> Result<Value, E> {
        Ok(Value::String(value))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        value(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(Plain(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    /// Every key is a key, the last of a repeated one wins (as with `Value`).
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some((key, Plain(value))) = map.next_entry::<String, Plain>()? {
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const RAW_KEY: &str = "$serde_json::private::RawValue";

    #[test]
    fn the_raw_value_key_is_an_ordinary_key() {
        let text = format!(r#"{{"{RAW_KEY}": "{{\"a\":1}}"}}"#);
        // What `Value` itself does with it, the reason this module exists.
        let value: Value = serde_json::from_str(&text).expect("decodes");
        assert_eq!(value, json!({"a": 1}));
        assert_eq!(
            from_slice(text.as_bytes()).expect("decodes"),
            json!({RAW_KEY: "{\"a\":1}"})
        );
        let followed = format!(r#"{{"{RAW_KEY}": "2", "b": [true, null]}}"#);
        assert!(serde_json::from_str::<Value>(&followed).is_err());
        assert_eq!(
            from_slice(followed.as_bytes()).expect("decodes"),
            json!({RAW_KEY: "2", "b": [true, null]})
        );
    }

    #[test]
    fn every_other_text_decodes_as_value_decodes_it() {
        for text in [
            r#"{"a": [1, -2, 3.5, 1e300, 18446744073709551615, "x\u00e9", null, false], "a": {}}"#,
            r#"[[], {}, "", 0, -0, 0.1]"#,
            "  null ",
            r#""\ud83d\ude00""#,
        ] {
            let expected: Value = serde_json::from_str(text).expect(text);
            assert_eq!(from_slice(text.as_bytes()).expect(text), expected, "{text}");
        }
        for text in [
            "",
            "{",
            "[1,]",
            r#"{"a" 1}"#,
            "nul",
            "1 2",
            "1e400",
            "\"\\ud800\"",
        ] {
            assert!(from_slice(text.as_bytes()).is_err(), "{text}");
            assert!(serde_json::from_str::<Value>(text).is_err(), "{text}");
        }
        let deep = "[".repeat(200) + &"]".repeat(200);
        assert!(from_slice(deep.as_bytes()).is_err(), "past the depth limit");
    }

    /// `Skip` refuses exactly what `from_slice` refuses, the raw value key
    /// included (an ordinary key), and invalid UTF-8 in a string it skips.
    #[test]
    fn skip_checks_what_from_slice_checks() {
        let texts: [&[u8]; 11] = [
            br#"{"$serde_json::private::RawValue": "2", "b": 1}"#,
            br#"[{"$serde_json::private::RawValue": "not json"}]"#,
            br#"{"a": [1, {"b": null}], "c": "\u00e9"}"#,
            b"\"\xff\"",
            b"[\"ok\", \"\xc3\"]",
            b"1e400",
            b"[1,]",
            b"{\"a\":}",
            b"\"\\ud800\"",
            b"[[[[[[[[]]]]]]]]",
            b"",
        ];
        for text in texts {
            assert_eq!(
                serde_json::from_slice::<Skip>(text).is_ok(),
                from_slice(text).is_ok(),
                "{}",
                String::from_utf8_lossy(text)
            );
        }
        let deep = "[".repeat(200) + &"]".repeat(200);
        assert!(serde_json::from_slice::<Skip>(deep.as_bytes()).is_err());
    }
}
