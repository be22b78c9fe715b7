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

#[cfg(test)]
mod tests {
    use super::*;

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
