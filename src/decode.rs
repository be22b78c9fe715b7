//! Decoding the configuration's parsed JSON into the plain `Raw*` structs of `config`,
//! with the path of the offending value in every error (`services[0].canaryTrafficPercent`).
//!
//! This replaces `#[derive(serde::Deserialize)]` plus `serde_path_to_error`, which
//! together were about a third of the filter's wasm; the messages are the ones those
//! produced, word for word: serde's texts ("invalid type: string \"10\", expected i64",
//! "unknown field `x`, expected one of ...", "missing field `x`") with serde_json's
//! spelling of values ("null", floats as serde_json prints them) and serde_path_to_error's
//! path syntax. The rules are serde's too: object keys are visited in (sorted) order and
//! the first bad one wins, then missing fields in declaration order; a struct may also be
//! written as an array of its fields in declaration order; an `Option` field may be
//! absent or `null`.
//!
//! A struct is declared with [`from_json!`]: every field name is matched in camelCase
//! (serde's `rename_all = "camelCase"`), unknown fields are refused
//! (`deny_unknown_fields`), and a field marked `#[default]` may be absent
//! (`#[serde(default)]`).

use std::fmt::Write as _;

use crate::json::{Json as Value, Number};
use crate::quoted::Quoted;

/// One step of the path to a bad value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Key(String),
    Index(usize),
}

/// A value that does not fit its field: what serde_json would have said, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// Innermost segment first: each level adds its own on the way out.
    rev_path: Vec<Segment>,
    message: String,
}

impl Error {
    fn new(message: String) -> Self {
        Error {
            rev_path: Vec::new(),
            message,
        }
    }

    fn at(mut self, segment: Segment) -> Self {
        self.rev_path.push(segment);
        self
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    /// The path from the root, outermost first.
    pub fn segments(&self) -> impl Iterator<Item = &Segment> {
        self.rev_path.iter().rev()
    }

    /// The path as serde_path_to_error prints it: `services[0].hosts[1]`, `.` for the root.
    pub fn path(&self) -> String {
        if self.rev_path.is_empty() {
            return ".".to_owned();
        }
        let mut out = String::new();
        for segment in self.segments() {
            match segment {
                Segment::Key(key) => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(key);
                }
                Segment::Index(index) => {
                    let _ = write!(out, "[{index}]");
                }
            }
        }
        out
    }
}

/// serde's `invalid type` message, with the value spelled as serde_json spells it.
fn invalid_type(value: &Value, expected: &str) -> Error {
    Error::new(format!(
        "invalid type: {}, expected {expected}",
        unexpected(value)
    ))
}

/// serde's `invalid value` message for an integer out of the field's range.
fn invalid_integer(value: impl std::fmt::Display, expected: &str) -> Error {
    Error::new(format!(
        "invalid value: integer `{value}`, expected {expected}"
    ))
}

fn invalid_length(len: usize, expected: &str) -> Error {
    Error::new(format!("invalid length {len}, expected {expected}"))
}

/// How serde_json describes a value that has the wrong type.
fn unexpected(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => format!("boolean `{b}`"),
        Value::Number(Number::PosInt(u)) => format!("integer `{u}`"),
        Value::Number(Number::NegInt(i)) => format!("integer `{i}`"),
        Value::Number(Number::Float(f)) => {
            format!("floating point `{}`", zmij::Buffer::new().format(*f))
        }
        Value::String(s) => format!("string {}", Quoted(s)),
        Value::Array(_) => "sequence".to_owned(),
        Value::Object(_) => "map".to_owned(),
    }
}

/// A type a configuration field can have; `'t` is the tree's borrow, which `&'t str`
/// fields keep instead of copying their strings.
pub trait FromJson<'t>: Sized {
    /// `Option`s may be left out of an object (not out of the array form of a struct).
    const OPTIONAL: bool = false;

    fn from_json(value: &'t Value<'_>) -> Result<Self, Error>;
}

impl<'t> FromJson<'t> for &'t str {
    fn from_json(value: &'t Value<'_>) -> Result<Self, Error> {
        match value {
            Value::String(s) => Ok(s),
            other => Err(invalid_type(other, "a string")),
        }
    }
}

impl<'t> FromJson<'t> for String {
    fn from_json(value: &'t Value<'_>) -> Result<Self, Error> {
        <&str>::from_json(value).map(String::from)
    }
}

impl<'t> FromJson<'t> for bool {
    fn from_json(value: &'t Value<'_>) -> Result<Self, Error> {
        match value {
            Value::Bool(b) => Ok(*b),
            other => Err(invalid_type(other, "a boolean")),
        }
    }
}

impl<'t> FromJson<'t> for u64 {
    fn from_json(value: &'t Value<'_>) -> Result<Self, Error> {
        if let Value::Number(n) = value {
            if let Some(u) = n.as_u64() {
                return Ok(u);
            }
            if let Some(i) = n.as_i64() {
                return Err(invalid_integer(i, "u64"));
            }
        }
        Err(invalid_type(value, "u64"))
    }
}

impl<'t> FromJson<'t> for i64 {
    fn from_json(value: &'t Value<'_>) -> Result<Self, Error> {
        if let Value::Number(n) = value {
            if let Some(i) = n.as_i64() {
                return Ok(i);
            }
            if let Some(u) = n.as_u64() {
                return Err(invalid_integer(u, "i64"));
            }
        }
        Err(invalid_type(value, "i64"))
    }
}

impl<'t> FromJson<'t> for f64 {
    fn from_json(value: &'t Value<'_>) -> Result<Self, Error> {
        match value {
            Value::Number(n) => Ok(n.as_f64()),
            other => Err(invalid_type(other, "f64")),
        }
    }
}

impl<'t, T: FromJson<'t>> FromJson<'t> for Option<T> {
    const OPTIONAL: bool = true;

    fn from_json(value: &'t Value<'_>) -> Result<Self, Error> {
        match value {
            Value::Null => Ok(None),
            other => T::from_json(other).map(Some),
        }
    }
}

impl<'t, T: FromJson<'t>> FromJson<'t> for Vec<T> {
    fn from_json(value: &'t Value<'_>) -> Result<Self, Error> {
        match value {
            Value::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    out.push(T::from_json(item).map_err(|e| e.at(Segment::Index(i)))?);
                }
                Ok(out)
            }
            other => Err(invalid_type(other, "a sequence")),
        }
    }
}

/// A struct field as [`decode_struct`] sees it.
pub struct Field {
    /// The Rust (snake_case) name; the JSON name is its camelCase.
    pub name: &'static str,
    /// `#[default]`: may be absent, from an object or from the end of an array.
    pub default: bool,
    /// An `Option`: may be absent from an object.
    pub optional: bool,
}

/// serde's `rename_all = "camelCase"` of a field name.
fn camel(snake: &str) -> String {
    let mut out = String::with_capacity(snake.len());
    let mut upper = false;
    for c in snake.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// Whether `key` is the camelCase of `snake`, without building it.
fn camel_eq(key: &str, snake: &str) -> bool {
    // Most fields differ from the key in the first byte (which camelCase keeps).
    if let (Some(&k), Some(&s)) = (key.as_bytes().first(), snake.as_bytes().first()) {
        if s != b'_' && k != s {
            return false;
        }
    }
    let mut key = key.bytes();
    let mut upper = false;
    for b in snake.bytes() {
        if b == b'_' {
            upper = true;
            continue;
        }
        let want = if upper { b.to_ascii_uppercase() } else { b };
        upper = false;
        if key.next() != Some(want) {
            return false;
        }
    }
    key.next().is_none()
}

/// serde's message for a key that is no field of the struct.
fn unknown_field(key: &str, fields: &[Field]) -> Error {
    let mut message = format!("unknown field `{key}`, ");
    match fields {
        [] => message.push_str("there are no fields"),
        [a] => {
            let _ = write!(message, "expected `{}`", camel(a.name));
        }
        [a, b] => {
            let _ = write!(
                message,
                "expected `{}` or `{}`",
                camel(a.name),
                camel(b.name)
            );
        }
        _ => {
            message.push_str("expected one of ");
            for (i, field) in fields.iter().enumerate() {
                if i > 0 {
                    message.push_str(", ");
                }
                let _ = write!(message, "`{}`", camel(field.name));
            }
        }
    }
    Error::new(message)
}

/// Walks a struct written as an object (keys in order, then missing fields) or as an
/// array of its fields, calling `set(field index, value)` for each value present; the
/// caller starts from `Default` and keeps what `set` stores.
pub fn decode_struct<'t, 'j>(
    value: &'t Value<'j>,
    name: &str,
    fields: &[Field],
    set: &mut dyn FnMut(usize, &'t Value<'j>) -> Result<(), Error>,
) -> Result<(), Error> {
    match value {
        Value::Object(map) => {
            // Bit i: field i was present (structs have fewer than 64 fields).
            let mut seen = 0u64;
            for (key, value) in map {
                let Some(index) = fields.iter().position(|f| camel_eq(key, f.name)) else {
                    return Err(unknown_field(key, fields).at(Segment::Key(String::from(&**key))));
                };
                set(index, value).map_err(|e| e.at(Segment::Key(String::from(&**key))))?;
                seen |= 1u64.checked_shl(index as u32).unwrap_or(0);
            }
            for (index, field) in fields.iter().enumerate() {
                let seen = seen & 1u64.checked_shl(index as u32).unwrap_or(0) != 0;
                if !seen && !field.default && !field.optional {
                    return Err(Error::new(format!("missing field `{}`", camel(field.name))));
                }
            }
            Ok(())
        }
        Value::Array(items) => {
            for (index, field) in fields.iter().enumerate() {
                match items.get(index) {
                    Some(item) => set(index, item).map_err(|e| e.at(Segment::Index(index)))?,
                    None if field.default => {}
                    None => {
                        let plural = if fields.len() == 1 { "" } else { "s" };
                        return Err(invalid_length(
                            index,
                            &format!("struct {name} with {} element{plural}", fields.len()),
                        ));
                    }
                }
            }
            if items.len() > fields.len() {
                return Err(invalid_length(items.len(), "fewer elements in array"));
            }
            Ok(())
        }
        other => Err(invalid_type(other, &format!("struct {name}"))),
    }
}

/// Declares a struct decoded by [`FromJson`]: camelCase keys, unknown keys refused,
/// `#[default]` fields optional (see the module docs). A struct with borrowed fields
/// (`&'t str`) is declared with its one lifetime: `struct RawX<'t> { ... }`.
macro_rules! from_json {
    ($(#[$meta:meta])* struct $name:ident<$lt:lifetime> { $($body:tt)* }) => {
        $crate::decode::from_json!(@emit [$(#[$meta])*] $name [<$lt>] $lt { $($body)* });
    };
    ($(#[$meta:meta])* struct $name:ident { $($body:tt)* }) => {
        $crate::decode::from_json!(@emit [$(#[$meta])*] $name [] 't { $($body)* });
    };
    (@emit [$($meta:tt)*] $name:ident [$($generics:tt)*] $lt:lifetime {
        $( $(#[$default:ident])? $field:ident : $ty:ty ),* $(,)?
    }) => {
        $($meta)*
        #[derive(Default)]
        struct $name $($generics)* {
            $( $field: $ty, )*
        }

        impl<$lt> $name $($generics)* {
            const FIELDS: &'static [$crate::decode::Field] = &[$(
                $crate::decode::Field {
                    name: stringify!($field),
                    default: $crate::decode::from_json!(@default $($default)?),
                    optional: <$ty as $crate::decode::FromJson<$lt>>::OPTIONAL,
                },
            )*];
            const FITS: () = assert!(Self::FIELDS.len() <= 64, "decode_struct keeps a 64-bit mask");
        }

        impl<$lt> $crate::decode::FromJson<$lt> for $name $($generics)* {
            fn from_json(
                value: &$lt $crate::json::Json<'_>,
            ) -> ::std::result::Result<Self, $crate::decode::Error> {
                #[allow(clippy::let_unit_value)]
                let () = Self::FITS;
                let mut out = Self::default();
                $crate::decode::decode_struct(value, stringify!($name), Self::FIELDS, &mut |index, value| {
                    let mut i = 0usize;
                    $(
                        if index == i {
                            out.$field = $crate::decode::FromJson::from_json(value)?;
                            return Ok(());
                        }
                        i += 1;
                    )*
                    let _ = i;
                    Ok(())
                })?;
                Ok(out)
            }
        }
    };
    (@default default) => { true };
    (@default) => { false };
}
pub(crate) use from_json;

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    from_json! {
        struct Inner {
            name: String,
            cluster: String,
            host: Option<String>,
        }
    }

    from_json! {
        struct Outer {
            max_error_rate: f64,
            count: Option<u64>,
            percent: Option<i64>,
            #[default]
            tag_routing: bool,
            #[default]
            inner: Vec<Inner>,
        }
    }

    fn tree(v: &serde_json::Value) -> Value<'static> {
        // Leaked: the tree borrows its text, and tests are short.
        let text: &'static str = Box::leak(v.to_string().into_boxed_str());
        crate::json::parse(text.as_bytes()).unwrap()
    }

    fn err(v: serde_json::Value) -> (String, String) {
        match Outer::from_json(&tree(&v)) {
            Ok(_) => panic!("accepted {v}"),
            Err(e) => (e.path(), e.message().to_owned()),
        }
    }

    #[test]
    fn decodes_objects_arrays_and_defaults() {
        let o = Outer::from_json(&tree(&json!({"maxErrorRate": 1, "inner": [
            {"name": "a", "cluster": "c"}, ["b", "d", "h"], ["e", "f", null]
        ]})))
        .unwrap();
        assert_eq!(o.max_error_rate, 1.0);
        assert_eq!((o.count, o.percent, o.tag_routing), (None, None, false));
        let names: Vec<_> = o
            .inner
            .iter()
            .map(|i| (&*i.name, i.host.as_deref()))
            .collect();
        assert_eq!(names, [("a", None), ("b", Some("h")), ("e", None)]);
        let o = Outer::from_json(&tree(&json!([0.5, 3, -2]))).unwrap();
        assert_eq!((o.count, o.percent, o.inner.len()), (Some(3), Some(-2), 0));
    }

    #[test]
    fn messages_and_paths_are_serdes() {
        assert_eq!(
            err(json!({"maxErrorRate": 1, "inner": [{"name": "a", "cluster": 5}]})),
            (
                "inner[0].cluster".into(),
                "invalid type: integer `5`, expected a string".into()
            )
        );
        assert_eq!(
            err(json!({"maxErrorRate": 1, "inner": [{"name": "a", "clust": "c"}]})),
            (
                "inner[0].clust".into(),
                "unknown field `clust`, expected one of `name`, `cluster`, `host`".into()
            )
        );
        assert_eq!(
            err(json!({"maxErrorRate": 1, "inner": [{"name": "a"}]})),
            ("inner[0]".into(), "missing field `cluster`".into())
        );
        assert_eq!(
            err(json!({"inner": []})),
            (".".into(), "missing field `maxErrorRate`".into())
        );
        assert_eq!(
            err(json!({"maxErrorRate": "x", "count": -1})),
            (
                "count".into(),
                "invalid value: integer `-1`, expected u64".into()
            )
        );
        assert_eq!(
            err(json!({"maxErrorRate": 1, "percent": 10.5})),
            (
                "percent".into(),
                "invalid type: floating point `10.5`, expected i64".into()
            )
        );
        assert_eq!(
            err(json!({"maxErrorRate": 1, "percent": u64::MAX})),
            (
                "percent".into(),
                "invalid value: integer `18446744073709551615`, expected i64".into()
            )
        );
        assert_eq!(
            err(json!({"maxErrorRate": 1, "tagRouting": null})),
            (
                "tagRouting".into(),
                "invalid type: null, expected a boolean".into()
            )
        );
        assert_eq!(
            err(json!({"maxErrorRate": 1, "inner": [["a"]]})),
            (
                "inner[0]".into(),
                "invalid length 1, expected struct Inner with 3 elements".into()
            )
        );
        assert_eq!(
            err(json!({"maxErrorRate": 1, "inner": [["a", "b", null, 1]]})),
            (
                "inner[0]".into(),
                "invalid length 4, expected fewer elements in array".into()
            )
        );
        assert_eq!(
            err(json!({"maxErrorRate": 1, "inner": [[1]]})),
            (
                "inner[0][0]".into(),
                "invalid type: integer `1`, expected a string".into()
            )
        );
        assert_eq!(
            err(json!({"maxErrorRate": 1, "inner": {"name": "x"}})),
            (
                "inner".into(),
                "invalid type: map, expected a sequence".into()
            )
        );
        assert_eq!(
            err(json!({"maxErrorRate": 1, "inner": ["x\u{1}"]})),
            (
                "inner[0]".into(),
                "invalid type: string \"x\\u{1}\", expected struct Inner".into()
            )
        );
    }
}
