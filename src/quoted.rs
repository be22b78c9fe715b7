//! Strings in log lines and error messages, quoted as `{:?}` quotes them.
//!
//! `{:?}` on a `str` links core's Unicode printability tables and escape machinery into
//! the `.wasm` (several KB, most of it for text that never occurs in a configuration).
//! `Quoted` prints the same as `{:?}` for ASCII and for ordinary printable text, and
//! escapes controls and the invisible format characters (zero-width, bidi overrides,
//! line separators) that could disguise a log line; it leaves other non-ASCII as it is.

use std::fmt::{self, Write};

pub struct Quoted<'a>(pub &'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_char('"')?;
        let mut plain_from = 0;
        for (at, c) in self.0.char_indices() {
            let escape = match c {
                '"' => "\\\"",
                '\\' => "\\\\",
                '\n' => "\\n",
                '\r' => "\\r",
                '\t' => "\\t",
                '\0' => "\\0",
                c if c.is_control() || invisible(c) => "",
                _ => continue,
            };
            f.write_str(self.0.get(plain_from..at).unwrap_or_default())?;
            if escape.is_empty() {
                write!(f, "\\u{{{:x}}}", u32::from(c))?;
            } else {
                f.write_str(escape)?;
            }
            plain_from = at + c.len_utf8();
        }
        f.write_str(self.0.get(plain_from..).unwrap_or_default())?;
        f.write_char('"')
    }
}

/// Format characters that print as nothing or reorder the text around them.
fn invisible(c: char) -> bool {
    matches!(c,
        '\u{ad}' | '\u{61c}' | '\u{180e}' | '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}'
        | '\u{2060}'..='\u{206f}' | '\u{feff}' | '\u{fff9}'..='\u{fffb}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_as_debug_does() {
        let mut all_ascii = String::new();
        for b in 0u8..0x80 {
            all_ascii.push(char::from(b));
        }
        for s in [
            "",
            "sklearn-iris",
            "a \"quoted\" \\ name",
            "tab\there\r\n",
            "nul\0",
            "ünï.com",
            "日本語のモデル",
            "emoji 🦀",
            "\u{7f}\u{85}\u{9f}",
            "zero\u{200b}width",
            "bidi \u{202e}txt.exe",
            "line\u{2028}sep",
            "bom\u{feff}",
            "soft\u{ad}hyphen",
            &all_ascii,
        ] {
            assert_eq!(Quoted(s).to_string(), format!("{s:?}"), "{s:?}");
        }
    }
}
