//! Turning a request's `:authority` into the key of the host table, without allocating:
//! port and one trailing dot dropped, ASCII lowercased into a caller-owned buffer.

use crate::config::names::{MAX_HOST_LEN, MAX_LABEL_LEN};

/// Room for the longest key the table can hold: a 253-character host behind a
/// 63-character tag and its hyphen. Anything longer cannot match and is not copied.
pub const KEY_CAPACITY: usize = MAX_HOST_LEN + MAX_LABEL_LEN + 1;

pub type KeyBuf = [u8; KEY_CAPACITY];

/// The lookup key for `authority`, or `None` when it cannot name a configured host
/// (IPv6 literal, non-ASCII, bad port, empty, too long). Clients nearly always send the
/// host in lowercase: then the key is a slice of `authority` and `buf` is not touched.
pub fn lookup_key<'a>(authority: &'a str, buf: &'a mut KeyBuf) -> Option<&'a str> {
    let host = host_part(authority)?;
    if is_lowercase(host) {
        return Some(host);
    }
    lowercase_into(host, buf)
}

/// `authority` without port and trailing dot, if it can name a configured host at all.
pub fn host_part(authority: &str) -> Option<&str> {
    let host = strip_port(authority)?;
    let host = host.strip_suffix('.').unwrap_or(host);
    (!host.is_empty() && host.is_ascii() && host.len() <= KEY_CAPACITY).then_some(host)
}

/// No ASCII uppercase letter in `host`: then the table is looked up without a copy.
pub fn is_lowercase(host: &str) -> bool {
    !host.bytes().any(|b| b.is_ascii_uppercase())
}

/// `host` (ASCII, from `host_part`) lowercased into `buf`.
pub fn lowercase_into<'b>(host: &str, buf: &'b mut KeyBuf) -> Option<&'b str> {
    let dst = buf.get_mut(..host.len())?;
    for (d, s) in dst.iter_mut().zip(host.bytes()) {
        *d = s.to_ascii_lowercase();
    }
    std::str::from_utf8(dst).ok()
}

fn strip_port(authority: &str) -> Option<&str> {
    if authority.starts_with('[') {
        // IPv6 literal: configured hosts are DNS names, so it can never match.
        return None;
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => Some(host),
        Some(_) => None,
        None => Some(authority),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(a: &str) -> Option<String> {
        let mut buf = [0u8; KEY_CAPACITY];
        lookup_key(a, &mut buf).map(str::to_owned)
    }

    #[test]
    fn normalises_case_port_and_trailing_dot() {
        assert_eq!(
            key("Sklearn-Iris.Example.com").as_deref(),
            Some("sklearn-iris.example.com")
        );
        assert_eq!(key("a.example.com:8080").as_deref(), Some("a.example.com"));
        assert_eq!(key("a.example.com.").as_deref(), Some("a.example.com"));
        assert_eq!(key("A.EXAMPLE.COM.:80").as_deref(), Some("a.example.com"));
        assert_eq!(key("a.example.com:").as_deref(), Some("a.example.com"));
    }

    #[test]
    fn rejects_what_cannot_match() {
        assert_eq!(key(""), None);
        assert_eq!(key(":80"), None);
        assert_eq!(key("."), None);
        assert_eq!(key("[::1]:8080"), None);
        assert_eq!(key("[::1]"), None);
        assert_eq!(key("a.com:http"), None);
        assert_eq!(key("a:b:c"), None);
        assert_eq!(key("bücher.de"), None);
        assert_eq!(key(&"a".repeat(KEY_CAPACITY + 1)), None);
        assert_eq!(
            key(&"a".repeat(KEY_CAPACITY)).map(|k| k.len()),
            Some(KEY_CAPACITY)
        );
    }
}
