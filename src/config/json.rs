//! The configuration's JSON: a hand-written pull parser with serde_json's grammar, and
//! serde_json's words, line and column for every syntax error, read straight into the
//! configuration's structs by `decode` (no tree, no serde machinery). Strings without
//! escapes are borrowed from the document.

use std::borrow::Cow;
use std::fmt;

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

/// A syntax error: serde_json's words for it and serde_json's position (its `Display`
/// is serde_json's, `... at line L column C`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    message: &'static str,
    line: usize,
    column: usize,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "{} at line {} column {}",
            self.message, self.line, self.column
        )
    }
}

const EOF_LIST: &str = "EOF while parsing a list";
const EOF_OBJECT: &str = "EOF while parsing an object";
const EOF_STRING: &str = "EOF while parsing a string";
const EOF_VALUE: &str = "EOF while parsing a value";
const EXPECTED_COLON: &str = "expected `:`";
const EXPECTED_LIST_COMMA_OR_END: &str = "expected `,` or `]`";
const EXPECTED_OBJECT_COMMA_OR_END: &str = "expected `,` or `}`";
const EXPECTED_IDENT: &str = "expected ident";
const EXPECTED_VALUE: &str = "expected value";
const INVALID_ESCAPE: &str = "invalid escape";
const INVALID_NUMBER: &str = "invalid number";
const NUMBER_OUT_OF_RANGE: &str = "number out of range";
const INVALID_CODE_POINT: &str = "invalid unicode code point";
const CONTROL_CHARACTER: &str = "control character (\\u0000-\\u001F) found while parsing a string";
const KEY_MUST_BE_A_STRING: &str = "key must be a string";
const LONE_SURROGATE: &str = "lone leading surrogate in hex escape";
const TRAILING_COMMA: &str = "trailing comma";
const TRAILING_CHARACTERS: &str = "trailing characters";
const END_OF_HEX_ESCAPE: &str = "unexpected end of hex escape";
const RECURSION_LIMIT: &str = "recursion limit exceeded";

/// serde_json's nesting limit: the 128th open bracket is refused.
const MAX_DEPTH: u32 = 128;

/// A pull parser over a whole document, as serde_json's `Deserializer<SliceRead>` reads
/// one: the decoder (see `decode`) asks for a value, an array's elements or an object's
/// keys, and nothing is built that it does not keep. The bytes are read in the order
/// serde_json reads them, with its checks, so every syntax error has its words and its
/// position.
pub struct Parser<'a> {
    bytes: &'a [u8],
    /// The document, when it is all valid UTF-8 (checked once, in one pass): its strings
    /// are then sliced out of it without validating each.
    text: Option<&'a str>,
    index: usize,
    remaining_depth: u32,
}

/// A value as a type error describes it: scalars as read, arrays and objects only by kind
/// (their contents are checked and skipped).
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    Null,
    Bool(bool),
    Number(Number),
    String(Cow<'a, str>),
    Array,
    Object,
}

impl<'a> Parser<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Parser {
            bytes,
            text: std::str::from_utf8(bytes).ok(),
            index: 0,
            remaining_depth: MAX_DEPTH,
        }
    }

    /// After the document's value: only whitespace may follow.
    pub fn end(&mut self) -> Result<(), Error> {
        match self.whitespace() {
            Some(_) => Err(self.peek_error(TRAILING_CHARACTERS)),
            None => Ok(()),
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.index).copied()
    }

    fn peek_or_null(&self) -> u8 {
        self.peek().unwrap_or(0)
    }

    fn next(&mut self) -> Option<u8> {
        let byte = self.peek()?;
        self.index += 1;
        Some(byte)
    }

    /// serde_json's `position_of_index`: 1-based line, column counted from the byte
    /// after the last newline.
    #[cold]
    fn error_at(&self, index: usize, message: &'static str) -> Error {
        let before = self.bytes.get(..index).unwrap_or(self.bytes);
        let start_of_line = before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |p| p + 1);
        let line = 1 + before
            .get(..start_of_line)
            .unwrap_or_default()
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        Error {
            message,
            line,
            column: index - start_of_line,
        }
    }

    /// An error caused by the byte just read.
    #[cold]
    fn error(&self, message: &'static str) -> Error {
        self.error_at(self.index, message)
    }

    /// An error caused by the byte peeked at.
    #[cold]
    fn peek_error(&self, message: &'static str) -> Error {
        self.error_at(self.bytes.len().min(self.index + 1), message)
    }

    /// Skips whitespace; the byte after it, not consumed. Inlined: it runs before every
    /// token, and usually skips nothing or one space.
    #[inline(always)]
    fn whitespace(&mut self) -> Option<u8> {
        while let Some(&b) = self.bytes.get(self.index) {
            if !matches!(b, b' ' | b'\n' | b'\t' | b'\r') {
                return Some(b);
            }
            self.index += 1;
        }
        None
    }

    /// The first byte of the next value, not consumed (whitespace is).
    pub fn peek_value(&mut self) -> Result<u8, Error> {
        match self.whitespace() {
            Some(peek) => Ok(peek),
            None => Err(self.peek_error(EOF_VALUE)),
        }
    }

    /// The next value, arrays and objects checked and skipped.
    pub fn value(&mut self) -> Result<Value<'a>, Error> {
        let peek = self.peek_value()?;
        match peek {
            b'n' => {
                self.index += 1;
                self.ident(b"ull")?;
                Ok(Value::Null)
            }
            b't' => {
                self.index += 1;
                self.ident(b"rue")?;
                Ok(Value::Bool(true))
            }
            b'f' => {
                self.index += 1;
                self.ident(b"alse")?;
                Ok(Value::Bool(false))
            }
            b'-' => {
                self.index += 1;
                self.integer(false).map(Value::Number)
            }
            b'0'..=b'9' => self.integer(true).map(Value::Number),
            b'"' => {
                self.index += 1;
                self.string().map(Value::String)
            }
            b'[' => {
                self.begin()?;
                let mut first = true;
                while self.next_element(first)? {
                    first = false;
                    self.value()?;
                }
                Ok(Value::Array)
            }
            b'{' => {
                self.begin()?;
                let mut first = true;
                while self.next_key(first, b"")?.is_some() {
                    first = false;
                    self.value()?;
                }
                Ok(Value::Object)
            }
            _ => Err(self.peek_error(EXPECTED_VALUE)),
        }
    }

    /// The string whose quote [`Parser::peek_value`] saw.
    pub fn string_value(&mut self) -> Result<Cow<'a, str>, Error> {
        self.index += 1;
        self.string()
    }

    /// Into the array or object whose bracket [`Parser::peek_value`] saw: one level
    /// deeper.
    pub fn begin(&mut self) -> Result<(), Error> {
        self.remaining_depth -= 1;
        if self.remaining_depth == 0 {
            return Err(self.peek_error(RECURSION_LIMIT));
        }
        self.index += 1;
        Ok(())
    }

    fn ident(&mut self, rest: &[u8]) -> Result<(), Error> {
        for &expected in rest {
            match self.next() {
                None => return Err(self.error(EOF_VALUE)),
                Some(next) if next != expected => return Err(self.error(EXPECTED_IDENT)),
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// In an array: whether an element follows (the caller then reads it), or the `]`
    /// (consumed, one level up). `first`: no element has been read yet.
    pub fn next_element(&mut self, first: bool) -> Result<bool, Error> {
        let Some(peek) = self.whitespace() else {
            return Err(self.peek_error(EOF_LIST));
        };
        if peek == b']' {
            self.index += 1;
            self.remaining_depth += 1;
            return Ok(false);
        }
        if !first {
            if peek != b',' {
                return Err(self.peek_error(EXPECTED_LIST_COMMA_OR_END));
            }
            self.index += 1;
            match self.whitespace() {
                Some(b']') => return Err(self.peek_error(TRAILING_COMMA)),
                Some(_) => {}
                None => return Err(self.peek_error(EOF_VALUE)),
            }
        }
        Ok(true)
    }

    /// In an object: the next key (UTF-8), past its `:` (the caller then reads its
    /// value), or `None` at the `}` (consumed, one level up). `first`: no member has been
    /// read yet. A key that is `expect` (the field a struct's keys usually come in next)
    /// is compared in place and returned as `expect` itself, without a scan for its end.
    pub fn next_key(
        &mut self,
        first: bool,
        expect: &'static [u8],
    ) -> Result<Option<Cow<'a, [u8]>>, Error> {
        let Some(peek) = self.whitespace() else {
            return Err(self.peek_error(EOF_OBJECT));
        };
        if peek == b'}' {
            self.index += 1;
            self.remaining_depth += 1;
            return Ok(None);
        }
        if first {
            if peek != b'"' {
                return Err(self.peek_error(KEY_MUST_BE_A_STRING));
            }
        } else if peek == b',' {
            self.index += 1;
            match self.whitespace() {
                Some(b'"') => {}
                Some(b'}') => return Err(self.peek_error(TRAILING_COMMA)),
                Some(_) => return Err(self.peek_error(KEY_MUST_BE_A_STRING)),
                None => return Err(self.peek_error(EOF_VALUE)),
            }
        } else {
            return Err(self.peek_error(EXPECTED_OBJECT_COMMA_OR_END));
        }
        self.index += 1;
        let end = self.index + expect.len();
        let key = match self.bytes.get(self.index..end) {
            Some(k)
                if self.bytes.get(end) == Some(&b'"') && crate::config::decode::same(k, expect) =>
            {
                self.index = end + 1;
                Cow::Borrowed(expect)
            }
            _ => self.key()?,
        };
        match self.whitespace() {
            Some(b':') => self.index += 1,
            Some(_) => return Err(self.peek_error(EXPECTED_COLON)),
            None => return Err(self.peek_error(EOF_OBJECT)),
        }
        Ok(Some(key))
    }

    /// The rest of a string after its opening quote.
    fn string(&mut self) -> Result<Cow<'a, str>, Error> {
        // Most strings: no escape, in a valid UTF-8 document.
        if let Some((start, end)) = self.plain() {
            if let Some(s) = self.text.and_then(|t| t.get(start..end)) {
                self.index = end + 1;
                return Ok(Cow::Borrowed(s));
            }
        }
        self.string_slow()
    }

    /// A key: a string, as bytes (valid UTF-8; from a valid document without the
    /// check per string that a `str` needs).
    fn key(&mut self) -> Result<Cow<'a, [u8]>, Error> {
        if let (Some(_), Some((start, end))) = (self.text, self.plain()) {
            if let Some(key) = self.bytes.get(start..end) {
                self.index = end + 1;
                return Ok(Cow::Borrowed(key));
            }
        }
        Ok(match self.string_slow()? {
            Cow::Borrowed(s) => Cow::Borrowed(s.as_bytes()),
            Cow::Owned(s) => Cow::Owned(s.into_bytes()),
        })
    }

    /// The extent of the string starting here if it ends at the first `"`, `\\` or
    /// control character.
    fn plain(&self) -> Option<(usize, usize)> {
        let start = self.index;
        let end = skip_plain(self.bytes, start);
        (self.bytes.get(end) == Some(&b'"')).then_some((start, end))
    }

    /// A string with escapes, or in a document that is not all UTF-8, or unterminated.
    #[cold]
    #[inline(never)]
    fn string_slow(&mut self) -> Result<Cow<'a, str>, Error> {
        let bytes = self.bytes;
        let mut start = self.index;
        let mut unescaped: Option<Vec<u8>> = None;
        loop {
            while let Some(&b) = bytes.get(self.index) {
                if b == b'"' || b == b'\\' || b < 0x20 {
                    break;
                }
                self.index += 1;
            }
            let Some(&b) = bytes.get(self.index) else {
                return Err(self.error(EOF_STRING));
            };
            let end = self.index;
            let run = bytes.get(start..end).unwrap_or_default();
            self.index += 1;
            match b {
                b'"' => {
                    if unescaped.is_none() {
                        if let Some(s) = self.text.and_then(|t| t.get(start..end)) {
                            return Ok(Cow::Borrowed(s));
                        }
                    }
                    return match unescaped {
                        None => match std::str::from_utf8(run) {
                            Ok(s) => Ok(Cow::Borrowed(s)),
                            Err(e) => Err(self.utf8_error(run.len(), e.valid_up_to())),
                        },
                        Some(mut text) => {
                            text.extend_from_slice(run);
                            String::from_utf8(text).map(Cow::Owned).map_err(|e| {
                                let len = e.as_bytes().len();
                                self.utf8_error(len, e.utf8_error().valid_up_to())
                            })
                        }
                    };
                }
                b'\\' => {
                    let text = unescaped.get_or_insert_with(Vec::new);
                    text.extend_from_slice(run);
                    self.escape(text)?;
                    start = self.index;
                }
                _ => return Err(self.error(CONTROL_CHARACTER)),
            }
        }
    }

    /// serde_json's `as_str` error: the column moved back to the first bad byte.
    #[cold]
    fn utf8_error(&self, len: usize, valid_up_to: usize) -> Error {
        let mut err = self.error(INVALID_CODE_POINT);
        err.column = err.column.saturating_sub(len - valid_up_to);
        err
    }

    /// An escape after its backslash.
    fn escape(&mut self, text: &mut Vec<u8>) -> Result<(), Error> {
        let Some(ch) = self.next() else {
            return Err(self.error(EOF_STRING));
        };
        let byte = match ch {
            b'"' => b'"',
            b'\\' => b'\\',
            b'/' => b'/',
            b'b' => b'\x08',
            b'f' => b'\x0c',
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'u' => return self.unicode_escape(text),
            _ => return Err(self.error(INVALID_ESCAPE)),
        };
        text.push(byte);
        Ok(())
    }

    /// `\uXXXX` after its `u`, and the low half of a surrogate pair.
    fn unicode_escape(&mut self, text: &mut Vec<u8>) -> Result<(), Error> {
        let high = self.hex4()?;
        let code = match high {
            0xDC00..=0xDFFF => return Err(self.error(LONE_SURROGATE)),
            0xD800..=0xDBFF => {
                for expected in [b'\\', b'u'] {
                    match self.peek() {
                        None => return Err(self.error(EOF_STRING)),
                        Some(b) => {
                            self.index += 1;
                            if b != expected {
                                return Err(self.error(END_OF_HEX_ESCAPE));
                            }
                        }
                    }
                }
                let low = self.hex4()?;
                if !(0xDC00..=0xDFFF).contains(&low) {
                    return Err(self.error(LONE_SURROGATE));
                }
                ((u32::from(high - 0xD800) << 10) | u32::from(low - 0xDC00)) + 0x1_0000
            }
            _ => u32::from(high),
        };
        if let Some(c) = char::from_u32(code) {
            text.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
        }
        Ok(())
    }

    fn hex4(&mut self) -> Result<u16, Error> {
        let Some(digits) = self.bytes.get(self.index..self.index + 4) else {
            self.index = self.bytes.len();
            return Err(self.error(EOF_STRING));
        };
        self.index += 4;
        let mut value = 0u16;
        for &d in digits {
            let Some(v) = char::from(d).to_digit(16) else {
                return Err(self.error(INVALID_ESCAPE));
            };
            value = (value << 4) | v as u16;
        }
        Ok(value)
    }

    /// A number after its optional minus sign: serde_json's `parse_integer`.
    fn integer(&mut self, positive: bool) -> Result<Number, Error> {
        let Some(first) = self.next() else {
            return Err(self.error(EOF_VALUE));
        };
        match first {
            b'0' => {
                if self.peek_or_null().is_ascii_digit() {
                    return Err(self.peek_error(INVALID_NUMBER));
                }
                self.number(positive, 0)
            }
            b'1'..=b'9' => {
                let mut significand = u64::from(first - b'0');
                loop {
                    let c = self.peek_or_null();
                    if !c.is_ascii_digit() {
                        return self.number(positive, significand);
                    }
                    let digit = u64::from(c - b'0');
                    match significand
                        .checked_mul(10)
                        .and_then(|s| s.checked_add(digit))
                    {
                        Some(s) => {
                            self.index += 1;
                            significand = s;
                        }
                        None => return self.long_integer(positive, significand).map(Number::Float),
                    }
                }
            }
            _ => Err(self.error(INVALID_NUMBER)),
        }
    }

    fn number(&mut self, positive: bool, significand: u64) -> Result<Number, Error> {
        Ok(match self.peek_or_null() {
            b'.' => Number::Float(self.decimal(positive, significand, 0)?),
            b'e' | b'E' => Number::Float(self.exponent(positive, significand, 0)?),
            _ if positive => Number::PosInt(significand),
            _ => {
                let neg = (significand as i64).wrapping_neg();
                // A float on underflow, or for `-0`.
                if neg >= 0 {
                    Number::Float(-(significand as f64))
                } else {
                    Number::NegInt(neg)
                }
            }
        })
    }

    /// More digits than a u64 holds: the rest only scale it.
    #[cold]
    fn long_integer(&mut self, positive: bool, significand: u64) -> Result<f64, Error> {
        let mut exponent: i32 = 0;
        loop {
            match self.peek_or_null() {
                b'0'..=b'9' => {
                    self.index += 1;
                    exponent = exponent.saturating_add(1);
                }
                b'.' => return self.decimal(positive, significand, exponent),
                b'e' | b'E' => return self.exponent(positive, significand, exponent),
                _ => return self.f64_from_parts(positive, significand, exponent),
            }
        }
    }

    /// The fraction, at its `.`.
    fn decimal(&mut self, positive: bool, mut significand: u64, before: i32) -> Result<f64, Error> {
        self.index += 1;
        let mut after: i32 = 0;
        loop {
            let c = self.peek_or_null();
            if !c.is_ascii_digit() {
                break;
            }
            let digit = u64::from(c - b'0');
            match significand
                .checked_mul(10)
                .and_then(|s| s.checked_add(digit))
            {
                Some(s) => {
                    self.index += 1;
                    significand = s;
                    after -= 1;
                }
                None => {
                    // Further digits cannot change the significand: skip them.
                    while self.peek_or_null().is_ascii_digit() {
                        self.index += 1;
                    }
                    return self.end_of_decimal(positive, significand, before + after);
                }
            }
        }
        if after == 0 {
            return Err(self.peek_error(match self.peek() {
                Some(_) => INVALID_NUMBER,
                None => EOF_VALUE,
            }));
        }
        self.end_of_decimal(positive, significand, before + after)
    }

    fn end_of_decimal(
        &mut self,
        positive: bool,
        significand: u64,
        exponent: i32,
    ) -> Result<f64, Error> {
        match self.peek_or_null() {
            b'e' | b'E' => self.exponent(positive, significand, exponent),
            _ => self.f64_from_parts(positive, significand, exponent),
        }
    }

    /// The exponent, at its `e`.
    fn exponent(&mut self, positive: bool, significand: u64, starting: i32) -> Result<f64, Error> {
        self.index += 1;
        let positive_exp = match self.peek_or_null() {
            b'+' => {
                self.index += 1;
                true
            }
            b'-' => {
                self.index += 1;
                false
            }
            _ => true,
        };
        let Some(first) = self.next() else {
            return Err(self.error(EOF_VALUE));
        };
        if !first.is_ascii_digit() {
            return Err(self.error(INVALID_NUMBER));
        }
        let mut exp = i32::from(first - b'0');
        loop {
            let c = self.peek_or_null();
            if !c.is_ascii_digit() {
                break;
            }
            self.index += 1;
            match exp
                .checked_mul(10)
                .and_then(|e| e.checked_add(i32::from(c - b'0')))
            {
                Some(e) => exp = e,
                None => {
                    // Error instead of infinity; zero otherwise.
                    if significand != 0 && positive_exp {
                        return Err(self.error(NUMBER_OUT_OF_RANGE));
                    }
                    while self.peek_or_null().is_ascii_digit() {
                        self.index += 1;
                    }
                    return Ok(if positive { 0.0 } else { -0.0 });
                }
            }
        }
        let exponent = if positive_exp {
            starting.saturating_add(exp)
        } else {
            starting.saturating_sub(exp)
        };
        self.f64_from_parts(positive, significand, exponent)
    }

    /// serde_json's float without `float_roundtrip`: the significand scaled by a power
    /// of ten from its table.
    fn f64_from_parts(
        &self,
        positive: bool,
        significand: u64,
        mut exponent: i32,
    ) -> Result<f64, Error> {
        let mut f = significand as f64;
        loop {
            match POW10.get(exponent.unsigned_abs() as usize) {
                Some(&pow) => {
                    if exponent >= 0 {
                        f *= pow;
                        if f.is_infinite() {
                            return Err(self.error(NUMBER_OUT_OF_RANGE));
                        }
                    } else {
                        f /= pow;
                    }
                    break;
                }
                None => {
                    if f == 0.0 {
                        break;
                    }
                    if exponent >= 0 {
                        return Err(self.error(NUMBER_OUT_OF_RANGE));
                    }
                    f /= 1e308;
                    exponent += 308;
                }
            }
        }
        Ok(if positive { f } else { -f })
    }
}

/// The index of the first `"`, `\\` or control character from `i` on (or the end): eight
/// bytes at a time, as serde_json's `skip_to_escape` (Mycroft's zero-byte test; its
/// lowest hit is exact).
fn skip_plain(bytes: &[u8], mut i: usize) -> usize {
    const ONES: u64 = u64::MAX / 255;
    while let Some(chunk) = bytes.get(i..i + 8) {
        let Ok(word) = <[u8; 8]>::try_from(chunk) else {
            break;
        };
        let c = u64::from_le_bytes(word);
        let control = c.wrapping_sub(ONES * 0x20) & !c;
        let q = c ^ (ONES * u64::from(b'"'));
        let quote = q.wrapping_sub(ONES) & !q;
        let b = c ^ (ONES * u64::from(b'\\'));
        let backslash = b.wrapping_sub(ONES) & !b;
        let hits = (control | quote | backslash) & (ONES << 7);
        if hits != 0 {
            return i + (hits.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while let Some(&b) = bytes.get(i) {
        if b == b'"' || b == b'\\' || b < 0x20 {
            break;
        }
        i += 1;
    }
    i
}

/// Exact powers of ten (serde_json's table).
#[rustfmt::skip]
static POW10: [f64; 309] = [
    1e000, 1e001, 1e002, 1e003, 1e004, 1e005, 1e006, 1e007, 1e008, 1e009, //
    1e010, 1e011, 1e012, 1e013, 1e014, 1e015, 1e016, 1e017, 1e018, 1e019, //
    1e020, 1e021, 1e022, 1e023, 1e024, 1e025, 1e026, 1e027, 1e028, 1e029, //
    1e030, 1e031, 1e032, 1e033, 1e034, 1e035, 1e036, 1e037, 1e038, 1e039, //
    1e040, 1e041, 1e042, 1e043, 1e044, 1e045, 1e046, 1e047, 1e048, 1e049, //
    1e050, 1e051, 1e052, 1e053, 1e054, 1e055, 1e056, 1e057, 1e058, 1e059, //
    1e060, 1e061, 1e062, 1e063, 1e064, 1e065, 1e066, 1e067, 1e068, 1e069, //
    1e070, 1e071, 1e072, 1e073, 1e074, 1e075, 1e076, 1e077, 1e078, 1e079, //
    1e080, 1e081, 1e082, 1e083, 1e084, 1e085, 1e086, 1e087, 1e088, 1e089, //
    1e090, 1e091, 1e092, 1e093, 1e094, 1e095, 1e096, 1e097, 1e098, 1e099, //
    1e100, 1e101, 1e102, 1e103, 1e104, 1e105, 1e106, 1e107, 1e108, 1e109, //
    1e110, 1e111, 1e112, 1e113, 1e114, 1e115, 1e116, 1e117, 1e118, 1e119, //
    1e120, 1e121, 1e122, 1e123, 1e124, 1e125, 1e126, 1e127, 1e128, 1e129, //
    1e130, 1e131, 1e132, 1e133, 1e134, 1e135, 1e136, 1e137, 1e138, 1e139, //
    1e140, 1e141, 1e142, 1e143, 1e144, 1e145, 1e146, 1e147, 1e148, 1e149, //
    1e150, 1e151, 1e152, 1e153, 1e154, 1e155, 1e156, 1e157, 1e158, 1e159, //
    1e160, 1e161, 1e162, 1e163, 1e164, 1e165, 1e166, 1e167, 1e168, 1e169, //
    1e170, 1e171, 1e172, 1e173, 1e174, 1e175, 1e176, 1e177, 1e178, 1e179, //
    1e180, 1e181, 1e182, 1e183, 1e184, 1e185, 1e186, 1e187, 1e188, 1e189, //
    1e190, 1e191, 1e192, 1e193, 1e194, 1e195, 1e196, 1e197, 1e198, 1e199, //
    1e200, 1e201, 1e202, 1e203, 1e204, 1e205, 1e206, 1e207, 1e208, 1e209, //
    1e210, 1e211, 1e212, 1e213, 1e214, 1e215, 1e216, 1e217, 1e218, 1e219, //
    1e220, 1e221, 1e222, 1e223, 1e224, 1e225, 1e226, 1e227, 1e228, 1e229, //
    1e230, 1e231, 1e232, 1e233, 1e234, 1e235, 1e236, 1e237, 1e238, 1e239, //
    1e240, 1e241, 1e242, 1e243, 1e244, 1e245, 1e246, 1e247, 1e248, 1e249, //
    1e250, 1e251, 1e252, 1e253, 1e254, 1e255, 1e256, 1e257, 1e258, 1e259, //
    1e260, 1e261, 1e262, 1e263, 1e264, 1e265, 1e266, 1e267, 1e268, 1e269, //
    1e270, 1e271, 1e272, 1e273, 1e274, 1e275, 1e276, 1e277, 1e278, 1e279, //
    1e280, 1e281, 1e282, 1e283, 1e284, 1e285, 1e286, 1e287, 1e288, 1e289, //
    1e290, 1e291, 1e292, 1e293, 1e294, 1e295, 1e296, 1e297, 1e298, 1e299, //
    1e300, 1e301, 1e302, 1e303, 1e304, 1e305, 1e306, 1e307, 1e308,
];

/// One step of [`lookup`]'s path.
pub enum Step<'s> {
    /// An object's member: the last of that name, as serde_json's map keeps it.
    Key(&'s str),
    /// An array's element.
    Index(usize),
}

/// The value at `path` in a document (for error messages: the document is valid JSON,
/// the value may not be there).
pub fn lookup<'a>(bytes: &'a [u8], path: &[Step]) -> Option<Value<'a>> {
    let mut p = Parser::new(bytes);
    for step in path {
        let at = match *step {
            Step::Key(key) => {
                if p.peek_value().ok()? != b'{' {
                    return None;
                }
                p.begin().ok()?;
                let mut found = None;
                let mut first = true;
                while let Some(k) = p.next_key(first, b"").ok()? {
                    first = false;
                    if *k == *key.as_bytes() {
                        found = Some(p.index);
                    }
                    p.value().ok()?;
                }
                found?
            }
            Step::Index(index) => {
                if p.peek_value().ok()? != b'[' {
                    return None;
                }
                p.begin().ok()?;
                let mut i = 0;
                loop {
                    if !p.next_element(i == 0).ok()? {
                        return None;
                    }
                    if i == index {
                        break p.index;
                    }
                    p.value().ok()?;
                    i += 1;
                }
            }
        };
        p.index = at;
    }
    p.value().ok()
}

/// The document as a tree, as `serde_json::Value` without `arbitrary_precision` (keys in
/// byte order, the last of duplicate keys wins): what the tests compare the parser with.
#[cfg(test)]
pub mod tree {
    use super::*;

    #[derive(Debug, Clone, PartialEq)]
    pub enum Json<'a> {
        Null,
        Bool(bool),
        Number(Number),
        String(Cow<'a, str>),
        Array(Vec<Json<'a>>),
        /// Sorted by key, keys unique.
        Object(Vec<(Cow<'a, str>, Json<'a>)>),
    }

    pub fn parse(bytes: &[u8]) -> Result<Json<'_>, Error> {
        let mut p = Parser::new(bytes);
        let value = value(&mut p)?;
        p.end()?;
        Ok(value)
    }

    fn value<'a>(p: &mut Parser<'a>) -> Result<Json<'a>, Error> {
        match p.peek_value()? {
            b'[' => {
                p.begin()?;
                let mut items = Vec::new();
                while p.next_element(items.is_empty())? {
                    items.push(value(p)?);
                }
                Ok(Json::Array(items))
            }
            b'{' => {
                p.begin()?;
                let mut members: Vec<(Cow<str>, Json)> = Vec::new();
                while let Some(key) = p.next_key(members.is_empty(), b"")? {
                    let key = String::from_utf8(key.into_owned()).unwrap().into();
                    let value = value(p)?;
                    members.push((key, value));
                }
                members.sort_by(|a, b| a.0.cmp(&b.0));
                // Of equal neighbours the first stays, with the value of the last.
                members.dedup_by(|later, kept| {
                    let same = later.0 == kept.0;
                    if same {
                        std::mem::swap(&mut later.1, &mut kept.1);
                    }
                    same
                });
                Ok(Json::Object(members))
            }
            _ => Ok(match p.value()? {
                Value::Null => Json::Null,
                Value::Bool(b) => Json::Bool(b),
                Value::Number(n) => Json::Number(n),
                Value::String(s) => Json::String(s),
                Value::Array | Value::Object => unreachable!(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::tree::{parse, Json};
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
                Json::String(s) => assert_eq!(Some(s.as_ref()), mv.as_str()),
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
        assert_eq!(value["b"], "last");
        let Json::Object(members) = &json else {
            panic!("not an object")
        };
        assert_eq!(members[1].1, Json::String("last".into()));
        let keys: Vec<_> = members.iter().map(|(k, _)| k.as_ref()).collect();
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

    /// The whole document read without building anything, as `decode` skips a value.
    fn skim(text: &[u8]) -> Result<(), Error> {
        let mut p = Parser::new(text);
        p.value()?;
        p.end()
    }

    fn check(text: &[u8]) {
        let skimmed = skim(text);
        match (
            parse(text),
            serde_json::from_slice::<serde_json::Value>(text),
        ) {
            (Ok(json), Ok(value)) => {
                assert!(same(&json, &value), "{:?}", String::from_utf8_lossy(text));
                assert_eq!(skimmed, Ok(()));
            }
            (Err(a), Err(b)) => {
                assert_eq!(
                    a.to_string(),
                    b.to_string(),
                    "{:?}",
                    String::from_utf8_lossy(text)
                );
                assert_eq!(skimmed, Err(a));
            }
            (a, b) => panic!("{:?}: {a:?} vs {b:?}", String::from_utf8_lossy(text)),
        }
    }

    #[test]
    fn agrees_with_serde_json_on_mutated_inputs() {
        let seeds: &[&[u8]] = &[
            br#"{"services": [{"name": "a", "hosts": ["h.example.com"], "canaryTrafficPercent": 10}]}"#,
            b"[1, -2, 2.5, 0, -0, -0.0, 1e5, 1E-5, 2.5e+3, 18446744073709551615, 18446744073709551616, -9223372036854775808, -9223372036854775809]",
            b"[123456789012345678901234567890.123456789e-10, 0.000000000000000000000000000001234, 1e308, 1e309, 1e-400, 0e99999999999, 1e99999999999, -1e-99999999999]",
            b"[1.7976931348623157e308, 2.2250738585072014e-308, 4.9e-324, 123.456e-789, 1234567890123456789012e300]",
            br#"["\u00e9\n\"\\\/\b\f\r\t", "\ud83d\ude00", "\ud83d", "\ude00", "\ud83dx", "\ud83d\u0041", "\uZZZZ", "\u12", "caf\xc3\xa9", "\xff\xfe", "a\x01b"]"#,
            b"{\"a\"\n:\n[\n1,\n2\n]\n,\n\"b\":{\"c\":null,\"d\":true,\"e\":false}}",
            br#"{"z": 1, "a": 2, "z": 3, "m": [], "a": {"x": "y"}}"#,
            b"  [ ] ",
            b"{}",
            b"\"str\"",
            b"nul",
            b"[tru, fals]",
            b"[1,]",
            b"{\"a\":1,}",
            b"{1:2}",
            b"[01, 1.e5, -, .5, 1e, 1e+]",
            b"[\"unterminated",
            b"{\"a\" 1}",
            b"[1 2]",
            b"{\"a\":1 \"b\":2}",
            b"[] x",
            b"[1, 2] ,",
        ];
        for seed in seeds {
            check(seed);
        }
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let alphabet = b"{}[],:\"\\ \n\t0123456789-+.eEntrufalsu\xc3\xa9\xff\x01/abdz";
        for _ in 0..40_000 {
            let seed = seeds[(next() % seeds.len() as u64) as usize];
            let mut text = seed.to_vec();
            for _ in 0..1 + next() % 4 {
                let at = (next() % (text.len() as u64 + 1)) as usize;
                let byte = alphabet[(next() % alphabet.len() as u64) as usize];
                match next() % 3 {
                    0 => text.insert(at, byte),
                    1 if at < text.len() => {
                        text.remove(at);
                    }
                    _ if at < text.len() => text[at] = byte,
                    _ => text.push(byte),
                }
            }
            check(&text);
        }
    }

    #[test]
    fn lookup_finds_the_last_member_of_a_name() {
        let text = br#"{"services": [{"name": "a"}, {"name": 1, "name": "b\u0063"}, 7], "services": [{"x": 1}, {"name": "c", "x": [1, {"name": "d"}]}], "z": 1}"#;
        let name = |i| {
            lookup(
                text,
                &[Step::Key("services"), Step::Index(i), Step::Key("name")],
            )
        };
        assert_eq!(name(0), None);
        assert_eq!(name(1), Some(Value::String("c".into())));
        assert_eq!(name(2), None);
        assert_eq!(
            lookup(text, &[Step::Key("z")]),
            Some(Value::Number(Number::PosInt(1)))
        );
        let first = br#"{"services": [{"name": "a"}, {"name": 1, "name": "b\u0063"}, 7]}"#;
        assert_eq!(
            lookup(
                first,
                &[Step::Key("services"), Step::Index(1), Step::Key("name")]
            ),
            Some(Value::String("bc".into()))
        );
        assert_eq!(
            lookup(first, &[Step::Key("services"), Step::Index(2)]),
            Some(Value::Number(Number::PosInt(7)))
        );
        assert_eq!(
            lookup(first, &[Step::Key("services"), Step::Index(3)]),
            None
        );
        assert_eq!(lookup(b"[1]", &[Step::Key("services")]), None);
    }

    #[test]
    fn nesting_limit_is_serde_json_s() {
        for depth in [126, 127, 128, 129, 1000] {
            for (open, close) in [("[", "]"), ("{\"a\":", "}")] {
                let text = format!("{}1{}", open.repeat(depth), close.repeat(depth));
                check(text.as_bytes());
                check(open.repeat(depth).as_bytes());
            }
        }
    }

    #[test]
    fn skip_plain_finds_the_first_special_byte() {
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let len = (state % 40) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|k| {
                    let r = state.rotate_left(k as u32 * 7);
                    match r % 16 {
                        0 => b'"',
                        1 => b'\\',
                        2 => (r >> 8) as u8 % 0x20,
                        _ => 0x20 + ((r >> 8) as u8 % 0xE0),
                    }
                })
                .collect();
            for start in 0..=len {
                let naive = (start..len)
                    .find(|&k| matches!(bytes[k], b'"' | b'\\') || bytes[k] < 0x20)
                    .unwrap_or(len);
                assert_eq!(skip_plain(&bytes, start), naive, "{bytes:?} from {start}");
            }
        }
    }
}
