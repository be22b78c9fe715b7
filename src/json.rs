//! The configuration as parsed JSON: serde_json's parser (so every syntax error, its
//! words and its line and column are serde_json's), building this tree instead of
//! `serde_json::Value`, whose `BTreeMap` objects cost 5 KB of wasm. Objects keep what a
//! `BTreeMap` gives: keys in byte order, the last of duplicate keys wins.

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// A JSON value, as `serde_json::Value` without `arbitrary_precision`.
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Number(Number),
    String(String),
    Array(Vec<Json>),
    /// Sorted by key, keys unique.
    Object(Vec<(String, Json)>),
}

/// A JSON number as serde_json keeps it: a non-negative integer, a negative one, or a
/// float.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Number {
    PosInt(u64),
    NegInt(i64),
    Float(f64),
}

impl Number {
    pub fn as_u64(self) -> Option<u64> {
        match self {
            Number::PosInt(u) => Some(u),
            _ => None,
        }
    }

    pub fn as_i64(self) -> Option<i64> {
        match self {
            Number::PosInt(u) => i64::try_from(u).ok(),
            Number::NegInt(i) => Some(i),
            Number::Float(_) => None,
        }
    }

    pub fn as_f64(self) -> f64 {
        match self {
            Number::PosInt(u) => u as f64,
            Number::NegInt(i) => i as f64,
            Number::Float(f) => f,
        }
    }
}

/// Parses a whole document: serde_json's `from_slice`, errors included.
pub fn parse(bytes: &[u8]) -> Result<Json, serde_json::Error> {
    serde_json::from_slice(bytes)
}

impl Json {
    pub fn is_object(&self) -> bool {
        matches!(self, Json::Object(_))
    }

    /// The member `key` of an object.
    pub fn key(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Object(members) => members
                .binary_search_by(|(k, _)| k.as_str().cmp(key))
                .ok()
                .and_then(|i| members.get(i))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// The element `index` of an array.
    pub fn index(&self, index: usize) -> Option<&Json> {
        match self {
            Json::Array(items) => items.get(index),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::String(s) => Some(s),
            _ => None,
        }
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Json, D::Error> {
        deserializer.deserialize_any(JsonVisitor)
    }
}

/// serde_json's `ValueVisitor`, building [`Json`].
struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("any valid JSON value")
    }

    fn visit_bool<E>(self, value: bool) -> Result<Json, E> {
        Ok(Json::Bool(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Json, E> {
        Ok(Json::Number(match u64::try_from(value) {
            Ok(u) => Number::PosInt(u),
            Err(_) => Number::NegInt(value),
        }))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Json, E> {
        Ok(Json::Number(Number::PosInt(value)))
    }

    fn visit_f64<E>(self, value: f64) -> Result<Json, E> {
        // serde_json::Number::from_f64: not finite is not a number.
        Ok(if value.is_finite() {
            Json::Number(Number::Float(value))
        } else {
            Json::Null
        })
    }

    fn visit_str<E>(self, value: &str) -> Result<Json, E> {
        Ok(Json::String(value.to_owned()))
    }

    fn visit_string<E>(self, value: String) -> Result<Json, E> {
        Ok(Json::String(value))
    }

    fn visit_none<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Json, D::Error> {
        Deserialize::deserialize(deserializer)
    }

    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut members: Vec<(String, Json)> = Vec::new();
        while let Some((key, value)) = map.next_entry::<String, Json>()? {
            members.push((key, value));
        }
        Ok(Json::Object(sorted_unique(members)))
    }
}

/// Byte order of keys, and the last value of a duplicated key, as `BTreeMap::insert` does.
fn sorted_unique(members: Vec<(String, Json)>) -> Vec<(String, Json)> {
    let mut out: Vec<(String, Json)> = Vec::with_capacity(members.len());
    for (key, value) in merge_sort(members) {
        match out.last_mut() {
            Some(last) if last.0 == key => last.1 = value,
            _ => out.push((key, value)),
        }
    }
    out
}

/// A stable sort by key (among equal keys, the one read last stays last); the slice
/// sorts of core cost 3 KB of wasm.
fn merge_sort(mut left: Vec<(String, Json)>) -> Vec<(String, Json)> {
    if left.len() < 2 {
        return left;
    }
    let right = merge_sort(left.split_off(left.len() / 2));
    let left = merge_sort(left);
    let mut out = Vec::with_capacity(left.len() + right.len());
    let mut left = left.into_iter().peekable();
    let mut right = right.into_iter().peekable();
    loop {
        let take_right = match (left.peek(), right.peek()) {
            (Some(l), Some(r)) => r.0 < l.0,
            (Some(_), None) => false,
            (None, Some(_)) => true,
            (None, None) => return out,
        };
        out.extend(if take_right {
            right.next()
        } else {
            left.next()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same tree as serde_json's, number kinds and key order included.
    fn same(json: &Json, value: &serde_json::Value) -> bool {
        use serde_json::Value as V;
        match (json, value) {
            (Json::Null, V::Null) => true,
            (Json::Bool(a), V::Bool(b)) => a == b,
            (Json::Number(Number::PosInt(a)), V::Number(b)) => b.is_u64() && b.as_u64() == Some(*a),
            (Json::Number(Number::NegInt(a)), V::Number(b)) => {
                !b.is_u64() && b.is_i64() && b.as_i64() == Some(*a)
            }
            (Json::Number(Number::Float(a)), V::Number(b)) => {
                b.is_f64() && b.as_f64().map(f64::to_bits) == Some(a.to_bits())
            }
            (Json::String(a), V::String(b)) => a == b,
            (Json::Array(a), V::Array(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same(x, y))
            }
            (Json::Object(a), V::Object(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|((k, x), (l, y))| k == l && same(x, y))
            }
            _ => false,
        }
    }

    #[test]
    fn objects_are_sorted_and_the_last_duplicate_wins() {
        let mut text = String::from("{");
        for i in 0..300u32 {
            text.push_str(&format!("\"k{}\": {i},", (i * 7919) % 101));
        }
        text.push_str("\"k5\": \"end\"}");
        let json = parse(text.as_bytes()).unwrap();
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        let Json::Object(members) = json else {
            panic!("not an object")
        };
        let serde_json::Value::Object(map) = value else {
            panic!("not an object")
        };
        assert_eq!(members.len(), map.len());
        for ((k, v), (mk, mv)) in members.iter().zip(&map) {
            assert_eq!(k, mk);
            match v {
                Json::Number(n) => assert_eq!(n.as_u64(), mv.as_u64()),
                Json::String(s) => assert_eq!(Some(s.as_str()), mv.as_str()),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn parses_like_serde_json_value() {
        let text = br#"{"b": [1, -2, 2.5, 1e400e], "a": null}"#;
        assert_eq!(
            parse(text).unwrap_err().to_string(),
            serde_json::from_slice::<serde_json::Value>(text)
                .unwrap_err()
                .to_string()
        );
        let text = br#"{"b": [1, -2, 2.5, 0, -0, -0.0, 18446744073709551616], "a": {"z": true, "y": "s"}, "b": "last"}"#;
        let json = parse(text).unwrap();
        let value: serde_json::Value = serde_json::from_slice(text).unwrap();
        assert_eq!(json.key("b"), Some(&Json::String("last".into())));
        assert_eq!(value["b"], "last");
        let Json::Object(members) = &json else {
            panic!("not an object")
        };
        let keys: Vec<_> = members.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["a", "b"]);
        for text in [
            &b"[1, -2, 2.5, 0, -0, -0.0, 18446744073709551616, -9223372036854775809, 1e-400]"[..],
            br#"{"s": "\u00e9\n\"", "t": true, "f": false, "n": null, "e": [], "o": {}}"#,
            br#"[[[{"a": [{"b": 1.5e3}]}]], 12345678901234567890, -1]"#,
        ] {
            let value: serde_json::Value = serde_json::from_slice(text).unwrap();
            assert!(same(&parse(text).unwrap(), &value), "{value}");
        }
    }
}
