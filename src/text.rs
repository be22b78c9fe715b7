//! Byte-level helpers for ASCII syntax (ports, status codes, paths, cookies).
//!
//! `str::split_once`/`rsplit_once` with a `char` pattern and `str::parse` each link a
//! generic searcher or parser per use into the `.wasm`; the syntax here is ASCII, so a
//! byte scan does the same job with a fraction of the code.

/// Splits at the first `sep`.
pub fn split_first(s: &str, sep: u8) -> Option<(&str, &str)> {
    let at = s.bytes().position(|b| b == sep)?;
    Some((s.get(..at)?, s.get(at + 1..)?))
}

/// Splits at the last `sep`.
pub fn split_last(s: &str, sep: u8) -> Option<(&str, &str)> {
    let at = s.bytes().rposition(|b| b == sep)?;
    Some((s.get(..at)?, s.get(at + 1..)?))
}

/// A non-empty run of ASCII digits as a number (no sign, no spaces); `None` on overflow.
pub fn digits(s: &str) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    s.bytes().try_fold(0u64, |n, b| {
        if b.is_ascii_digit() {
            n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

/// `String::from_utf8_lossy`, owned: each invalid sequence becomes one U+FFFD, exactly
/// as there. Written over `str::from_utf8` (which the module links anyway) instead of
/// `Utf8Chunks`, for the `.wasm` size.
pub fn lossy(bytes: Vec<u8>) -> String {
    let rest = match String::from_utf8(bytes) {
        Ok(text) => return text,
        Err(e) => e.into_bytes(),
    };
    let mut out = String::with_capacity(rest.len() + 2);
    let mut at = 0;
    while let Some(tail) = rest.get(at..) {
        match std::str::from_utf8(tail) {
            Ok(valid) => {
                out.push_str(valid);
                break;
            }
            Err(e) => {
                let valid = tail.get(..e.valid_up_to()).unwrap_or_default();
                out.push_str(std::str::from_utf8(valid).unwrap_or_default());
                out.push(char::REPLACEMENT_CHARACTER);
                at += e.valid_up_to() + e.error_len().unwrap_or(tail.len());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lossy_is_from_utf8_lossy() {
        let mut cases: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"plain".to_vec(),
            "caf\u{e9}".as_bytes().to_vec(),
            b"t\xe9st".to_vec(),
            b"\xc3\x28".to_vec(),
            b"\xff\xfe".to_vec(),
            b"latest\xff".to_vec(),
            b"\xe2\x82".to_vec(),
            b"a\xf0\x9f\x98b\xf0\x9f\x98\x80".to_vec(),
            b"\xed\xa0\x80".to_vec(),
            b"\xf4\x90\x80\x80x".to_vec(),
        ];
        // Every one- and two-byte string over a mix of ASCII, lead and continuation bytes.
        let alphabet = [b'a', 0x80, 0xbf, 0xc2, 0xe0, 0xed, 0xf0, 0xf4, 0xff];
        for &x in &alphabet {
            cases.push(vec![x]);
            for &y in &alphabet {
                cases.push(vec![x, y]);
                cases.push(vec![x, y, 0x80, 0x80]);
            }
        }
        for bytes in cases {
            assert_eq!(
                lossy(bytes.clone()),
                String::from_utf8_lossy(&bytes),
                "{bytes:?}"
            );
        }
    }

    #[test]
    fn splits_as_str_does() {
        for s in ["", ":", "a:b", "a:b:c", "::", "abc", "é:ü:x", ":a", "a:"] {
            assert_eq!(split_first(s, b':'), s.split_once(':'), "{s:?}");
            assert_eq!(split_last(s, b':'), s.rsplit_once(':'), "{s:?}");
        }
    }

    #[test]
    fn digits_are_digits_only() {
        assert_eq!(digits("0"), Some(0));
        assert_eq!(digits("0042"), Some(42));
        assert_eq!(digits("18446744073709551615"), Some(u64::MAX));
        for bad in [
            "",
            "+1",
            "-1",
            " 1",
            "1 ",
            "1.0",
            "1e3",
            "18446744073709551616",
            "١",
        ] {
            assert_eq!(digits(bad), None, "{bad:?}");
        }
    }
}
