//! JSON request bodies parsed strictly: a key twice in one object is an error.
//!
//! `serde_json` keeps the last of duplicate keys when it builds a `Value` or a struct (the JSON
//! RFC leaves the behaviour open), so `{"weight":1,"weight":65535}` would pass a review of its
//! first field and apply the second. [`parse`] builds the same `serde_json::Value` through
//! serde's own visitor API, refusing a key that the object already holds, at any depth.

use core::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Nesting deeper than this is refused (`serde_json` stops at 128 by itself; a request body
/// needs far fewer).
const MAX_DEPTH: usize = 32;

/// Parses `bytes` as one JSON value; a duplicate key in any object is an error naming it.
pub fn parse(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let v = de::DeserializeSeed::deserialize(Strict { depth: 0 }, &mut de)?;
    de.end()?;
    Ok(v)
}

#[derive(Clone, Copy)]
struct Strict {
    depth: usize,
}

impl<'de> de::DeserializeSeed<'de> for Strict {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    /// A number with a zero fractional part (`2148.0`, `1e3`) is an integer, as JSON Schema
    /// says (and Schemathesis sends): it is kept as one, so that an integer field accepts it.
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        // 2^64 and -2^63, exactly representable: the integers of u64 and i64 lie in between.
        const U64_END: f64 = 18_446_744_073_709_551_616.0;
        const I64_MIN: f64 = -9_223_372_036_854_775_808.0;
        if v.fract() == 0.0 && (0.0..U64_END).contains(&v) {
            // The range check above makes the conversion exact.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            return Ok(Value::from(v as u64));
        }
        if v.fract() == 0.0 && (I64_MIN..0.0).contains(&v) {
            #[allow(clippy::cast_possible_truncation)]
            return Ok(Value::from(v as i64));
        }
        Ok(Value::from(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        de::DeserializeSeed::deserialize(self, d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let inner = self.deeper::<A::Error>()?;
        let mut v = Vec::new();
        while let Some(e) = seq.next_element_seed(inner)? {
            v.push(e);
        }
        Ok(Value::Array(v))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let inner = self.deeper::<A::Error>()?;
        let mut m = Map::new();
        while let Some(k) = map.next_key::<String>()? {
            if m.contains_key(&k) {
                return Err(de::Error::custom(format_args!("duplicate key {k:?}")));
            }
            let v = map.next_value_seed(inner)?;
            m.insert(k, v);
        }
        Ok(Value::Object(m))
    }
}

impl Strict {
    fn deeper<E: de::Error>(self) -> Result<Self, E> {
        if self.depth >= MAX_DEPTH {
            return Err(E::custom(format_args!(
                "nested deeper than {MAX_DEPTH} levels"
            )));
        }
        Ok(Self {
            depth: self.depth.saturating_add(1),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_keys_are_refused_at_any_depth() {
        for bad in [
            r#"{"weight":1,"weight":65535}"#,
            r#"{"a":{"b":1,"b":2}}"#,
            r#"[{"x":1},{"y":2,"y":2}]"#,
        ] {
            let e = parse(bad.as_bytes()).unwrap_err();
            assert!(e.to_string().contains("duplicate key"), "{bad}: {e}");
        }
        let v = parse(br#"{"a":{"b":[1,-2,3.5,"s",null,true]},"c":{"b":1}}"#).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"a":{"b":[1,-2,3.5,"s",null,true]},"c":{"b":1}})
        );
        assert!(parse(b"{} x").is_err(), "trailing characters");
        // Schemathesis (issue 12): an integral number is an integer, whatever its spelling.
        let v = parse(br#"[2148.0, 1e3, -2.0, 2.5, 1e300, 18446744073709551615.0]"#).unwrap();
        assert_eq!(
            v,
            serde_json::json!([2148, 1000, -2, 2.5, 1e300, 1.8446744073709552e19])
        );
        let deep = format!("{}{}", "[".repeat(40), "]".repeat(40));
        assert!(parse(deep.as_bytes()).is_err());
    }
}
