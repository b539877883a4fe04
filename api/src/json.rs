//! Reading request bodies as JSON Schema reads them: a number with no fractional part (`1.0`,
//! `1e3`) is an integer, so a client whose JSON library writes every number as a float is
//! understood. A key given twice in one object is refused (serde_json's `Value` would keep the
//! last without a word). Errors name the path of the offending value.

use serde::de::{self, DeserializeOwned, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Number, Value};

use crate::error::{ApiError, ErrorCode};

/// Parses `bytes` into `T`, with integral floats read as integers; the error names the path
/// of the offending value (`tasks[0].replicaNumber: …`), or `body` for the document itself.
pub fn from_slice<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    from_value(parse(bytes)?)
}

/// Parses `bytes` as a JSON document, integral floats read as integers, each object's keys
/// given once.
pub fn parse(bytes: &[u8]) -> Result<Value, ApiError> {
    let Strict(value) =
        serde_json::from_slice(bytes).map_err(|e| ApiError::at(ErrorCode::MalformedRequest, "body", e))?;
    Ok(value)
}

/// A JSON document read as [`parse`] reads it.
struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_bool<E>(self, value: bool) -> Result<Value, E> {
        Ok(Value::Bool(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Value, E> {
        Ok(Value::from(value))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Value, E> {
        Ok(Value::from(value))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Value, E> {
        let number = integral(value).or_else(|| Number::from_f64(value));
        number.map(Value::Number).ok_or_else(|| E::custom("a number must be finite"))
    }

    fn visit_str<E>(self, value: &str) -> Result<Value, E> {
        Ok(Value::String(value.to_owned()))
    }

    fn visit_string<E>(self, value: String) -> Result<Value, E> {
        Ok(Value::String(value))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut fields = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if fields.contains_key(&key) {
                return Err(de::Error::custom(format!("duplicate field `{key}`")));
            }
            let Strict(value) = map.next_value()?;
            fields.insert(key, value);
        }
        Ok(Value::Object(fields))
    }
}

/// Reads `T` from a parsed document; the error names the path of the offending value.
pub fn from_value<T: DeserializeOwned>(value: Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        let field = if path == "." || path == "?" { "body".to_string() } else { path };
        ApiError::at(ErrorCode::MalformedRequest, &field, err.inner())
    })
}

/// Fields the server sets, which a replacement never carries.
const SERVER_SET: [&str; 2] = ["created_at", "updated_at"];

/// For a replacement (PUT) of `stored` by `new`, whose body named the top-level fields
/// `given`: the first field the body left out whose stored value the replacement would lose.
/// A PUT that means to clear a field says so by sending its empty value.
pub fn first_dropped_field(stored: &Value, new: &Value, given: &[String]) -> Option<String> {
    let (Value::Object(stored), Value::Object(new)) = (stored, new) else { return None };
    stored
        .iter()
        .find(|(field, old)| {
            !given.contains(field) && !SERVER_SET.contains(&field.as_str()) && new.get(field.as_str()) != Some(old)
        })
        .map(|(field, _)| field.clone())
}

/// `x` as an integer number, if it is one exactly.
fn integral(x: f64) -> Option<Number> {
    if x.fract() != 0.0 || !x.is_finite() {
        return None;
    }
    // 2^63 and 2^64 are exact in f64; the casts below are exact inside these bounds. The lower
    // bound is open: a literal below i64::MIN reads as the float -2^63, and must stay out of
    // range (i64::MIN itself, written as an integer, never reaches here).
    if x > -9_223_372_036_854_775_808.0 && x < 9_223_372_036_854_775_808.0 {
        Some(Number::from(x as i64))
    } else if (0.0..18_446_744_073_709_551_616.0).contains(&x) {
        Some(Number::from(x as u64))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Probe {
        count: u32,
        #[serde(default)]
        price: f64,
        #[serde(default)]
        nested: Vec<Vec<i64>>,
    }

    #[test]
    fn integral_floats_are_integers_and_fractions_are_not() {
        let p: Probe = from_slice(br#"{"count": 1.0, "price": 2.0, "nested": [[3e0, -4.0]]}"#).unwrap();
        assert_eq!(p, Probe { count: 1, price: 2.0, nested: vec![vec![3, -4]] });
        let e = from_slice::<Probe>(br#"{"count": 1.5}"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::MalformedRequest);
        assert!(e.message.starts_with("count: invalid type: floating point `1.5`"), "{}", e.message);
        let below_min = from_slice::<serde_json::Value>(b"-9223372036854775809").unwrap();
        assert!(below_min.is_f64(), "{below_min}");
        let e = from_slice::<Probe>(br#"{"count": 1e300}"#).unwrap_err();
        assert!(e.message.starts_with("count: "), "{}", e.message);
        let e = from_slice::<Probe>(br#"{"count": 1, "nested": [[1], ["x"]]}"#).unwrap_err();
        assert!(e.message.starts_with("nested[1][0]: invalid type: string"), "{}", e.message);
    }

    #[test]
    fn a_key_given_twice_is_refused() {
        let e = from_slice::<Probe>(br#"{"count": 1, "count": 2}"#).unwrap_err();
        assert!(e.message.starts_with("body: duplicate field `count`"), "{}", e.message);
        let nested = from_slice::<serde_json::Value>(br#"{"a": [{"b": 1, "b": 1}]}"#).unwrap_err();
        assert!(nested.message.starts_with("body: duplicate field `b`"), "{}", nested.message);
    }

    #[test]
    fn a_document_that_is_not_json_is_named_body() {
        let e = from_slice::<Probe>(b"{\"count\": ").unwrap_err();
        assert!(e.message.starts_with("body: EOF while parsing"), "{}", e.message);
        let e = from_slice::<Probe>(b"{} x").unwrap_err();
        assert!(e.message.starts_with("body: trailing characters"), "{}", e.message);
        let e = from_slice::<Probe>(b"\"x\"").unwrap_err();
        assert!(e.message.starts_with("body: invalid type: string"), "{}", e.message);
    }

    #[test]
    fn a_replacement_that_leaves_out_a_stored_field_is_named() {
        let stored = serde_json::json!({"id": "c", "name": "n", "adapter": {"kind": "sim"}, "updated_at": 5});
        let defaulted = serde_json::json!({"id": "c", "name": "m", "adapter": {"kind": ""}, "updated_at": 0});
        let given = |fields: &[&str]| fields.iter().map(|f| f.to_string()).collect::<Vec<_>>();
        assert_eq!(first_dropped_field(&stored, &defaulted, &given(&["id", "name"])), Some("adapter".into()));
        assert_eq!(first_dropped_field(&stored, &defaulted, &given(&["id", "name", "adapter"])), None);
        let same_adapter = serde_json::json!({"id": "c", "name": "m", "adapter": {"kind": "sim"}});
        assert_eq!(first_dropped_field(&stored, &same_adapter, &given(&["id", "name"])), None);
    }

    proptest! {
        /// Up to 15 significant digits: serde_json (without `float_roundtrip`) reads longer
        /// decimals to the nearest double only approximately.
        #[test]
        fn every_integer_reads_the_same_written_as_a_float(n in -999_999_999_999_999i64..=999_999_999_999_999) {
            let value = parse(format!("{n}.0").as_bytes()).unwrap();
            prop_assert_eq!(value, Value::from(n));
        }
    }
}
