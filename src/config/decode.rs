//! Decoding the configuration's JSON into the plain `Raw*` structs of `config`, straight
//! from the parser (no tree), with the path of the offending value in every error
//! (`services[0].canaryTrafficPercent`).
//!
//! This replaces `#[derive(serde::Deserialize)]` plus `serde_path_to_error` over a
//! `serde_json::Value`, which together were about a third of the filter's wasm; the
//! messages are the ones those produced, word for word: serde's texts ("invalid type:
//! string \"10\", expected i64", "unknown field `x`, expected one of ...", "missing field
//! `x`") with serde_json's spelling of values ("null", floats as serde_json prints them)
//! and serde_path_to_error's path syntax. So are the rules, though the document is read
//! once, in order: a syntax error anywhere wins over any type error; of an object's keys,
//! the last of duplicates counts and the first bad one in byte order wins (serde visited
//! a `BTreeMap`), then missing fields in declaration order; a struct may also be written
//! as an array of its fields in declaration order; an `Option` field may be absent or
//! `null`. A value that does not fit is still read to its end, so that the rest of the
//! document is checked.
//!
//! A struct is declared with [`from_json!`]: every field name is matched in camelCase
//! (serde's `rename_all = "camelCase"`), unknown fields are refused
//! (`deny_unknown_fields`), and a field marked `#[default]` may be absent
//! (`#[serde(default)]`).

use std::borrow::Cow;
use std::fmt::Write as _;

use crate::config::json::{self, Number, Parser, Value};
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

/// Why a value could not be decoded.
#[derive(Debug)]
pub enum Fail {
    /// The document is not JSON: decoding stops there.
    Syntax(json::Error),
    /// The value does not fit (and has been read to its end).
    Decode(Error),
}

impl From<json::Error> for Fail {
    fn from(e: json::Error) -> Self {
        Fail::Syntax(e)
    }
}

impl From<Error> for Fail {
    fn from(e: Error) -> Self {
        Fail::Decode(e)
    }
}

/// Decodes a whole document.
#[cfg(test)]
pub fn from_slice<'a, T: FromJson<'a>>(bytes: &'a [u8]) -> Result<T, Fail> {
    let mut p = Parser::new(bytes);
    let value = T::from_json(&mut p);
    // Only a syntax error stops the reading early; after a type error the rest of the
    // document is still checked, and its syntax errors win.
    if !matches!(value, Err(Fail::Syntax(_))) {
        p.end()?;
    }
    value
}

/// The next value, which does not fit: read to its end, and described.
#[cold]
fn mismatch<T>(p: &mut Parser<'_>, expected: &str) -> Result<T, Fail> {
    let value = p.value()?;
    Err(invalid_type(&value, expected).into())
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
        Value::Array => "sequence".to_owned(),
        Value::Object => "map".to_owned(),
    }
}

/// A type a configuration field can have, read from the parser; `'a` is the document's
/// borrow, which string fields keep (`Cow::Borrowed`, unless the string had escapes).
pub trait FromJson<'a>: Sized + Default {
    /// `Option`s may be left out of an object (not out of the array form of a struct).
    const OPTIONAL: bool = false;

    fn from_json(p: &mut Parser<'a>) -> Result<Self, Fail>;

    /// Decodes into `slot`, which may keep its allocations (a vector its buffer).
    fn read(slot: &mut Self, p: &mut Parser<'a>) -> Result<(), Fail> {
        *slot = Self::from_json(p)?;
        Ok(())
    }

    /// Back to the default, keeping allocations where that is possible.
    fn reset(slot: &mut Self) {
        *slot = Self::default();
    }
}

impl<'a> FromJson<'a> for Cow<'a, str> {
    fn from_json(p: &mut Parser<'a>) -> Result<Self, Fail> {
        if p.peek_value()? != b'"' {
            return mismatch(p, "a string");
        }
        Ok(p.string_value()?)
    }
}

impl<'a> FromJson<'a> for String {
    fn from_json(p: &mut Parser<'a>) -> Result<Self, Fail> {
        Cow::from_json(p).map(Cow::into_owned)
    }
}

impl<'a> FromJson<'a> for bool {
    fn from_json(p: &mut Parser<'a>) -> Result<Self, Fail> {
        match p.value()? {
            Value::Bool(b) => Ok(b),
            other => Err(invalid_type(&other, "a boolean").into()),
        }
    }
}

/// The next value if it is a number, else serde's type error.
fn number(p: &mut Parser<'_>, expected: &str) -> Result<Number, Fail> {
    match p.value()? {
        Value::Number(n) => Ok(n),
        other => Err(invalid_type(&other, expected).into()),
    }
}

impl<'a> FromJson<'a> for u64 {
    fn from_json(p: &mut Parser<'a>) -> Result<Self, Fail> {
        let n = number(p, "u64")?;
        match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => Ok(u),
            (None, Some(i)) => Err(invalid_integer(i, "u64").into()),
            (None, None) => Err(invalid_type(&Value::Number(n), "u64").into()),
        }
    }
}

impl<'a> FromJson<'a> for i64 {
    fn from_json(p: &mut Parser<'a>) -> Result<Self, Fail> {
        let n = number(p, "i64")?;
        match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Ok(i),
            (None, Some(u)) => Err(invalid_integer(u, "i64").into()),
            (None, None) => Err(invalid_type(&Value::Number(n), "i64").into()),
        }
    }
}

impl<'a> FromJson<'a> for f64 {
    fn from_json(p: &mut Parser<'a>) -> Result<Self, Fail> {
        number(p, "f64").map(Number::as_f64)
    }
}

impl<'a, T: FromJson<'a>> FromJson<'a> for Option<T> {
    const OPTIONAL: bool = true;

    fn from_json(p: &mut Parser<'a>) -> Result<Self, Fail> {
        Ok(if null(p)? {
            None
        } else {
            Some(T::from_json(p)?)
        })
    }
}

impl<'a, T: FromJson<'a>> FromJson<'a> for Box<T> {
    fn from_json(p: &mut Parser<'a>) -> Result<Self, Fail> {
        T::from_json(p).map(Box::new)
    }
}

/// Reads the next value if it is `null`.
fn null(p: &mut Parser<'_>) -> Result<bool, json::Error> {
    // Only `null` starts with `n`.
    if p.peek_value()? != b'n' {
        return Ok(false);
    }
    p.value()?;
    Ok(true)
}

impl<'a, T: FromJson<'a>> FromJson<'a> for Vec<T> {
    fn from_json(p: &mut Parser<'a>) -> Result<Self, Fail> {
        // Configurations list one or two of most things (hosts, revisions): a vector's
        // first allocation (four elements) is twice what most need.
        let mut out = Vec::with_capacity(2);
        Self::read(&mut out, p)?;
        Ok(out)
    }

    fn read(slot: &mut Self, p: &mut Parser<'a>) -> Result<(), Fail> {
        slot.clear();
        decode_seq(p, &mut |p| {
            slot.push(T::from_json(p)?);
            Ok(())
        })
    }

    fn reset(slot: &mut Self) {
        slot.clear();
    }
}

/// Decodes a field's value into its slot (the last of duplicate keys wins). Not inlined:
/// one copy per field type, shared by every struct, rather than one per field.
#[inline(never)]
pub fn set<'a, T: FromJson<'a>>(slot: &mut T, p: &mut Parser<'a>) -> Result<(), Fail> {
    T::read(slot, p)
}

/// Reads an array, calling `item` for each element until one does not fit (the rest
/// are only checked).
pub fn decode_seq<'a>(
    p: &mut Parser<'a>,
    item: &mut dyn FnMut(&mut Parser<'a>) -> Result<(), Fail>,
) -> Result<(), Fail> {
    if p.peek_value()? != b'[' {
        return mismatch(p, "a sequence");
    }
    p.begin()?;
    let mut error = None;
    let mut i = 0;
    while p.next_element(i == 0)? {
        if error.is_none() {
            match item(p) {
                Ok(()) => {}
                Err(Fail::Decode(e)) => error = Some(e.at(Segment::Index(i))),
                Err(syntax) => return Err(syntax),
            }
        } else {
            p.value()?;
        }
        i += 1;
    }
    match error {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

/// A struct field as [`decode_struct`] sees it.
pub struct Field {
    /// The JSON name: the camelCase of the Rust one (see [`camel`]).
    pub name: &'static [u8],
    /// `#[default]`: may be absent, from an object or from the end of an array.
    pub default: bool,
    /// An `Option`: may be absent from an object.
    pub optional: bool,
}

impl Field {
    pub const fn new(name: &'static [u8], default: bool, optional: bool) -> Field {
        Field {
            name,
            default,
            optional,
        }
    }

    fn name(&self) -> &str {
        std::str::from_utf8(self.name).unwrap_or_default()
    }
}

/// The length of [`camel`]`(snake)`.
pub const fn camel_len(snake: &str) -> usize {
    let mut rest = snake.as_bytes();
    let mut len = 0;
    while let [b, tail @ ..] = rest {
        if *b != b'_' {
            len += 1;
        }
        rest = tail;
    }
    len
}

/// serde's `rename_all = "camelCase"` of a field name, at compile time (`N` is
/// [`camel_len`]`(snake)`, so the indexing cannot fail; if it did, the build would).
#[allow(clippy::indexing_slicing)]
pub const fn camel<const N: usize>(snake: &str) -> [u8; N] {
    let mut out = [0; N];
    let mut rest = snake.as_bytes();
    let mut len = 0;
    let mut upper = false;
    while let [b, tail @ ..] = rest {
        if *b == b'_' {
            upper = true;
        } else {
            out[len] = if upper { b.to_ascii_uppercase() } else { *b };
            upper = false;
            len += 1;
        }
        rest = tail;
    }
    out
}

/// `a == b`, eight bytes at a time: the wasm build's `memcmp` (which `==` calls) goes
/// byte by byte.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    let len = a.len();
    if len != b.len() {
        return false;
    }
    let word = |s: &[u8], at: usize| {
        s.get(at..at + 8)
            .and_then(|w| <[u8; 8]>::try_from(w).ok())
            .map(u64::from_le_bytes)
    };
    if len < 8 {
        let half = |s: &[u8], at: usize| {
            s.get(at..at + 4)
                .and_then(|w| <[u8; 4]>::try_from(w).ok())
                .map(u32::from_le_bytes)
        };
        return if len >= 4 {
            // Two overlapping halves.
            half(a, 0) == half(b, 0) && half(a, len - 4) == half(b, len - 4)
        } else {
            a.iter().zip(b).all(|(x, y)| x == y)
        };
    }
    let mut at = 0;
    while at + 8 < len {
        if word(a, at) != word(b, at) {
            return false;
        }
        at += 8;
    }
    // The last word ends at the end (it may overlap the one before).
    word(a, len - 8) == word(b, len - 8)
}

/// The fields that must be present: neither `#[default]` nor `Option` (bit i: field i).
pub const fn required(fields: &[Field]) -> u64 {
    let mut rest = fields;
    let mut bit = 1u64;
    let mut mask = 0;
    while let [field, tail @ ..] = rest {
        if !field.default && !field.optional {
            mask |= bit;
        }
        bit <<= 1;
        rest = tail;
    }
    mask
}

/// serde's message for a key that is no field of the struct.
fn unknown_field(key: &str, fields: &[Field]) -> Error {
    let mut message = format!("unknown field `{key}`, ");
    match fields {
        [] => message.push_str("there are no fields"),
        [a] => {
            let _ = write!(message, "expected `{}`", a.name());
        }
        [a, b] => {
            let _ = write!(message, "expected `{}` or `{}`", a.name(), b.name());
        }
        _ => {
            message.push_str("expected one of ");
            for (i, field) in fields.iter().enumerate() {
                if i > 0 {
                    message.push_str(", ");
                }
                let _ = write!(message, "`{}`", field.name());
            }
        }
    }
    Error::new(message)
}

/// Reads a struct written as an object or as an array of its fields, calling
/// `set(field index, parser)` to read each field's value; the caller starts from
/// `Default` and keeps what `set` stores (the last of duplicate keys wins).
pub fn decode_struct<'a>(
    p: &mut Parser<'a>,
    name: &str,
    fields: &[Field],
    required: u64,
    set: &mut dyn FnMut(usize, &mut Parser<'a>) -> Result<(), Fail>,
) -> Result<(), Fail> {
    match p.peek_value()? {
        b'{' => decode_object(p, fields, required, set),
        b'[' => decode_array(p, name, fields, set),
        _ => mismatch(p, &format!("struct {name}")),
    }
}

/// A key of an object that is no field (`None`), or whose last value does not fit.
type BadKey<'a> = (Cow<'a, [u8]>, Option<(usize, Error)>);

/// The object form: keys in document order, errors as serde reported them visiting the
/// keys of a map in byte order.
fn decode_object<'a>(
    p: &mut Parser<'a>,
    fields: &[Field],
    required: u64,
    set: &mut dyn FnMut(usize, &mut Parser<'a>) -> Result<(), Fail>,
) -> Result<(), Fail> {
    p.begin()?;
    // Bit i: field i was present (structs have fewer than 64 fields).
    let mut seen = 0u64;
    // The keys that are no field (`None`) or whose last value does not fit.
    let mut bad: Vec<BadKey<'a>> = Vec::new();
    let mut first = true;
    // Keys usually come in declaration order: the field after the last one is tried first.
    let mut next = 0;
    while let Some(key) = p.next_key(first, fields.get(next).map_or(b"", |f| f.name))? {
        first = false;
        let found = match fields.get(next) {
            // The expected key comes back as the field's own name.
            Some(f) if key.as_ptr() == f.name.as_ptr() && key.len() == f.name.len() => Some(next),
            Some(f) if f.name.len() == key.len() && same(f.name, &key) => Some(next),
            _ => fields
                .iter()
                .position(|f| f.name.len() == key.len() && same(f.name, &key)),
        };
        let Some(index) = found else {
            p.value()?;
            bad.push((key, None));
            continue;
        };
        next = index + 1;
        seen |= 1u64.checked_shl(index as u32).unwrap_or(0);
        let result = set(index, p);
        if !bad.is_empty() {
            // A later value of the same key replaces the earlier one, and its error.
            bad.retain(|(_, e)| !matches!(e, Some((i, _)) if *i == index));
        }
        match result {
            Ok(()) => {}
            Err(Fail::Decode(e)) => bad.push((key, Some((index, e)))),
            Err(syntax) => return Err(syntax),
        }
    }
    if let Some((key, error)) = bad.into_iter().min_by(|a, b| a.0.cmp(&b.0)) {
        let key = crate::text::lossy(key.to_vec());
        let error = match error {
            Some((_, e)) => e,
            None => unknown_field(&key, fields),
        };
        return Err(error.at(Segment::Key(key)).into());
    }
    // The first missing one in declaration order.
    let missing = required & !seen;
    if missing != 0 {
        let name = fields
            .get(missing.trailing_zeros() as usize)
            .map_or("", Field::name);
        return Err(Error::new(format!("missing field `{name}`")).into());
    }
    Ok(())
}

/// The array form: the fields in declaration order, trailing `#[default]` ones optional.
fn decode_array<'a>(
    p: &mut Parser<'a>,
    name: &str,
    fields: &[Field],
    set: &mut dyn FnMut(usize, &mut Parser<'a>) -> Result<(), Fail>,
) -> Result<(), Fail> {
    p.begin()?;
    let mut count = 0;
    let mut error = None;
    while p.next_element(count == 0)? {
        if error.is_none() && count < fields.len() {
            match set(count, p) {
                Ok(()) => {}
                Err(Fail::Decode(e)) => error = Some(e.at(Segment::Index(count))),
                Err(syntax) => return Err(syntax),
            }
        } else {
            p.value()?;
        }
        count += 1;
    }
    if let Some(e) = error {
        return Err(e.into());
    }
    for (index, field) in fields.iter().enumerate().skip(count) {
        if !field.default {
            let plural = if fields.len() == 1 { "" } else { "s" };
            return Err(invalid_length(
                index,
                &format!("struct {name} with {} element{plural}", fields.len()),
            )
            .into());
        }
    }
    if count > fields.len() {
        return Err(invalid_length(count, "fewer elements in array").into());
    }
    Ok(())
}

/// Declares a struct decoded by [`FromJson`]: camelCase keys, unknown keys refused,
/// `#[default]` fields optional (see the module docs). A struct with borrowed fields
/// (`Cow<'t, str>`) is declared with its one lifetime: `struct RawX<'t> { ... }`.
macro_rules! from_json {
    ($(#[$meta:meta])* struct $name:ident<$lt:lifetime> { $($body:tt)* }) => {
        $crate::config::decode::from_json!(@emit [$(#[$meta])*] $name [<$lt>] $lt { $($body)* });
    };
    ($(#[$meta:meta])* struct $name:ident { $($body:tt)* }) => {
        $crate::config::decode::from_json!(@emit [$(#[$meta])*] $name [] 't { $($body)* });
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
            const FIELDS: &'static [$crate::config::decode::Field] = &[$(
                $crate::config::decode::Field {
                    name: &$crate::config::decode::camel::<{ $crate::config::decode::camel_len(stringify!($field)) }>(
                        stringify!($field),
                    ),
                    default: $crate::config::decode::from_json!(@default $($default)?),
                    optional: <$ty as $crate::config::decode::FromJson<$lt>>::OPTIONAL,
                },
            )*];
            const FITS: () = assert!(Self::FIELDS.len() <= 64, "decode_struct keeps a 64-bit mask");
            const REQUIRED: u64 = $crate::config::decode::required(Self::FIELDS);
        }

        impl<$lt> $crate::config::decode::FromJson<$lt> for $name $($generics)* {
            fn from_json(
                p: &mut $crate::config::json::Parser<$lt>,
            ) -> ::std::result::Result<Self, $crate::config::decode::Fail> {
                let mut out = Self::default();
                Self::read(&mut out, p)?;
                Ok(out)
            }

            /// Into `out`, reset first (absent fields are defaults; vectors keep buffers).
            fn read(
                out: &mut Self,
                p: &mut $crate::config::json::Parser<$lt>,
            ) -> ::std::result::Result<(), $crate::config::decode::Fail> {
                #[allow(clippy::let_unit_value)]
                let () = Self::FITS;
                $crate::config::decode::FromJson::reset(out);
                $crate::config::decode::decode_struct(p, stringify!($name), Self::FIELDS, Self::REQUIRED, &mut |index, p| {
                    let mut i = 0usize;
                    $(
                        if index == i {
                            return $crate::config::decode::set(&mut out.$field, p);
                        }
                        i += 1;
                    )*
                    let _ = i;
                    Ok(())
                })
            }

            fn reset(out: &mut Self) {
                $( $crate::config::decode::FromJson::reset(&mut out.$field); )*
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

    fn decode(v: &serde_json::Value) -> Result<Outer, Fail> {
        from_slice(v.to_string().as_bytes())
    }

    fn err(v: serde_json::Value) -> (String, String) {
        text_err(&v.to_string())
    }

    /// The path and message of a type error in `text` (which is valid JSON).
    fn text_err(text: &str) -> (String, String) {
        match from_slice::<Outer>(text.as_bytes()) {
            Ok(_) => panic!("accepted {text}"),
            Err(Fail::Decode(e)) => (e.path(), e.message().to_owned()),
            Err(Fail::Syntax(e)) => panic!("{text}: {e}"),
        }
    }

    /// The syntax error in `text`, which must be serde_json's.
    fn syntax_err(text: &str) -> String {
        let expected = serde_json::from_str::<serde_json::Value>(text)
            .unwrap_err()
            .to_string();
        match from_slice::<Outer>(text.as_bytes()) {
            Err(Fail::Syntax(e)) => {
                assert_eq!(e.to_string(), expected, "{text}");
                expected
            }
            Err(Fail::Decode(e)) => panic!("{text}: {e:?}"),
            Ok(_) => panic!("accepted {text}"),
        }
    }

    #[test]
    fn decodes_objects_arrays_and_defaults() {
        let o = decode(&json!({"maxErrorRate": 1, "inner": [
            {"name": "a", "cluster": "c"}, ["b", "d", "h"], ["e", "f", null]
        ]}))
        .unwrap();
        assert_eq!(o.max_error_rate, 1.0);
        assert_eq!((o.count, o.percent, o.tag_routing), (None, None, false));
        let names: Vec<_> = o
            .inner
            .iter()
            .map(|i| (&*i.name, i.host.as_deref()))
            .collect();
        assert_eq!(names, [("a", None), ("b", Some("h")), ("e", None)]);
        let o = decode(&json!([0.5, 3, -2])).unwrap();
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

    #[test]
    fn same_is_slice_equality() {
        let text = b"abcdefghijklmnopqrstuvwxyz0123456789";
        for i in 0..text.len() {
            for j in i..text.len() {
                let a = &text[i..j];
                let mut b = a.to_vec();
                assert!(same(a, &b));
                for k in 0..b.len() {
                    b[k] ^= 1;
                    assert!(!same(a, &b), "{a:?} {b:?}");
                    b[k] ^= 1;
                }
                assert!(!same(a, &text[i..=j]));
            }
        }
    }

    #[test]
    fn required_fields_are_neither_options_nor_defaults() {
        assert_eq!(Outer::REQUIRED, 0b1);
        assert_eq!(Inner::REQUIRED, 0b11);
    }

    #[test]
    fn field_names_are_camel_case() {
        let names: Vec<_> = Outer::FIELDS.iter().map(Field::name).collect();
        assert_eq!(
            names,
            ["maxErrorRate", "count", "percent", "tagRouting", "inner"]
        );
        assert_eq!(&camel::<{ camel_len("a_b_c") }>("a_b_c"), b"aBC");
        assert_eq!(&camel::<{ camel_len("_x") }>("_x"), b"X");
    }

    #[test]
    fn the_last_of_duplicate_keys_counts() {
        let o = from_slice::<Outer>(
            br#"{"count": "x", "maxErrorRate": 1, "count": 7, "maxErrorRate": 0.5}"#,
        )
        .unwrap();
        assert_eq!((o.count, o.max_error_rate), (Some(7), 0.5));
        assert_eq!(
            text_err(r#"{"count": 7, "maxErrorRate": 1, "count": "x"}"#),
            (
                "count".into(),
                "invalid type: string \"x\", expected u64".into()
            )
        );
        // An escaped key is the same key.
        let o =
            from_slice::<Outer>(br#"{"maxErrorRate": 1, "count": "x", "c\u006funt": 2}"#).unwrap();
        assert_eq!(o.count, Some(2));
    }

    #[test]
    fn the_first_bad_key_in_byte_order_wins() {
        // Keys were visited sorted (serde_json's map): `count` before `percent`, whatever
        // the document's order; an unknown key is one more bad key.
        assert_eq!(
            text_err(r#"{"percent": "p", "count": "c", "maxErrorRate": 1}"#).0,
            "count"
        );
        assert_eq!(
            text_err(r#"{"zzz": 1, "percent": "p", "maxErrorRate": 1}"#).0,
            "percent"
        );
        assert_eq!(
            text_err(r#"{"percent": "p", "aaa": 1, "maxErrorRate": 1}"#),
            (
                "aaa".into(),
                "unknown field `aaa`, expected one of `maxErrorRate`, `count`, `percent`, `tagRouting`, `inner`".into()
            )
        );
        assert_eq!(
            text_err(r#"{"inner": [{"name": 1}, {"x": 2}], "count": "c"}"#).0,
            "count"
        );
        assert_eq!(
            text_err(
                r#"{"tagRouting": 1, "inner": [{"name": "a", "cluster": "b"}, ["a", 1], {"q": 1}]}"#
            ),
            (
                "inner[1][1]".into(),
                "invalid type: integer `1`, expected a string".into()
            )
        );
        // Bad keys come before missing fields.
        assert_eq!(text_err(r#"{"count": -1}"#).0, "count");
    }

    #[test]
    fn syntax_errors_win_over_type_errors() {
        for text in [
            r#"{"count": "x", "maxErrorRate": 1,}"#,
            r#"{"count": "x", "maxErrorRate": 1} x"#,
            r#"{"inner": 5, "count": [1, {"a": nul}]}"#,
            r#"{"inner": [{"name": 1}, {"name": "a", "cluster" "b"}]}"#,
            r#"{"aaa": [1, 2, {"b": [}]}"#,
            r#"[1, 2, 3, 4, 5, 6, [}]"#,
            r#"["x", "y" "z"]"#,
            r#"{"maxErrorRate": "\x"}"#,
            r#"{"maxErrorRate": 1, "inner": [["a", "b", null, 1, [1, 2]]"#,
            r#"5 6"#,
        ] {
            syntax_err(text);
        }
    }
}
