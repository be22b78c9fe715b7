//! Validation of the names a configuration carries into headers and host lookups.
//! Everything is checked once, at configure time, so the request path can trust it.

/// Longest DNS name (RFC 1035) a configured host may have.
pub const MAX_HOST_LEN: usize = 253;
/// Longest DNS label, and so the longest tag.
pub const MAX_LABEL_LEN: usize = 63;

/// Headers the filter must never set or match on: framing, hop-by-hop and the ones the
/// model server needs untouched (KServe V1 answers 500 unless `content-type` is exact).
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-type",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "upgrade",
];

/// A configured host: a DNS name without port or wildcard, returned in lowercase.
pub fn dns_name(value: &str) -> Result<String, &'static str> {
    checked_host(value).map(str::to_ascii_lowercase)
}

/// [`dns_name`] without the lowercasing: the name, without its trailing dot, if valid.
pub fn checked_host(value: &str) -> Result<&str, &'static str> {
    let name = match value.as_bytes().last() {
        Some(b'.') => value.get(..value.len() - 1).unwrap_or(value),
        _ => value,
    };
    if plain_dns_name(name) {
        return Ok(name);
    }
    checked_dns_name(name).map(|()| name)
}

/// Whether `name` passes every check of [`checked_dns_name`], in one pass over its
/// bytes; the checks one by one only run to find the message.
fn plain_dns_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() > MAX_HOST_LEN {
        return false;
    }
    // One pass: a label ends at a dot (or the end) and must be 1..=63 bytes long, with no
    // '-' at either end; lowercase letters are tested first, as hosts are usually written.
    let mut label_len = 0usize;
    let mut prev = b'.';
    for &c in bytes {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            label_len += 1;
        } else if c == b'.' {
            if label_len == 0 || label_len > MAX_LABEL_LEN || prev == b'-' {
                return false;
            }
            label_len = 0;
        } else if c == b'-' {
            if label_len == 0 {
                return false;
            }
            label_len += 1;
        } else if c.is_ascii_uppercase() {
            label_len += 1;
        } else {
            return false;
        }
        prev = c;
    }
    label_len > 0 && label_len <= MAX_LABEL_LEN && prev != b'-'
}

/// `dns_name` after the trailing dot, check by check.
fn checked_dns_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("empty");
    }
    if name.len() > MAX_HOST_LEN {
        return Err("longer than 253 characters");
    }
    if name.contains('*') {
        return Err("wildcards are not supported");
    }
    if name.contains(':') {
        return Err("a configured host has no port (ports are ignored when matching)");
    }
    for label in name.split('.') {
        dns_label(label)?;
    }
    Ok(())
}

/// An authority to send upstream: a DNS name with an optional `:port`.
pub fn authority(value: &str) -> Result<String, &'static str> {
    match value.rsplit_once(':') {
        Some((host, port)) => {
            let Some(p) = digits(port) else {
                return Err("the port must be a number");
            };
            if (1..=65535).contains(&p) {
                Ok(format!("{}:{port}", dns_name(host)?))
            } else {
                Err("the port must be in 1..65535")
            }
        }
        None => dns_name(value),
    }
}

/// One DNS label: letters, digits and inner hyphens, 1 to 63 characters.
pub fn dns_label(label: &str) -> Result<(), &'static str> {
    if label.is_empty() {
        return Err("empty label");
    }
    if label.len() > MAX_LABEL_LEN {
        return Err("a label is longer than 63 characters");
    }
    if !label
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err("only letters, digits, '-' and '.' are allowed");
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err("a label must not start or end with '-'");
    }
    Ok(())
}

/// A tag: one DNS label, lowercased, since it becomes the first label of `<tag>-<host>`.
pub fn tag(value: &str) -> Result<String, &'static str> {
    dns_label(value)?;
    Ok(value.to_ascii_lowercase())
}

/// A header name the filter sets or reads: an RFC 9110 token, returned in lowercase
/// (Envoy keeps header names lowercase).
pub fn header_name(value: &str) -> Result<String, &'static str> {
    if value.is_empty() {
        return Err("empty");
    }
    if value.starts_with(':') {
        return Err("pseudo-headers cannot be used");
    }
    if !value.bytes().all(is_tchar) {
        return Err("only letters, digits and !#$%&'*+-.^_`|~ are allowed");
    }
    let lower = value.to_ascii_lowercase();
    if RESERVED_HEADERS.contains(&lower.as_str()) {
        return Err("reserved: the filter never touches this header");
    }
    Ok(lower)
}

/// A model name (`models`, a revision's `model`): what KServe and vLLM servers accept as
/// a model id, Hugging Face style included (`meta-llama/Llama-3-8B`, `llama3:8b`): a
/// letter or digit, then letters, digits and `-_.:/`, at most 253 bytes. Names with `/` or
/// `:` can be reached by OpenAI bodies only, not by model paths.
pub fn model_name(value: &str) -> Result<(), &'static str> {
    if value.is_empty() {
        return Err("empty");
    }
    let valid = value
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric())
        && value.len() <= 253
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/".contains(&b));
    if valid {
        Ok(())
    } else {
        Err("a model name starts with a letter or digit, then letters, digits, '-', '_', '.', ':', '/' (at most 253)")
    }
}

/// A value the filter writes into a header (cluster and revision names): visible ASCII
/// and inner spaces only, so it can never split or corrupt a header.
pub fn header_value(value: &str) -> Result<(), &'static str> {
    let bytes = value.as_bytes();
    let (Some(&first), Some(&last)) = (bytes.first(), bytes.last()) else {
        return Err("empty");
    };
    if !printable(bytes) {
        return Err("only printable ASCII characters are allowed");
    }
    if first == b' ' || last == b' ' {
        return Err("leading or trailing spaces");
    }
    Ok(())
}

/// Every byte in 0x20..0x7f, eight at a time.
fn printable(bytes: &[u8]) -> bool {
    const ONES: u64 = u64::MAX / 255;
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let w = <[u8; 8]>::try_from(chunk).map_or(0, u64::from_le_bytes);
        // Some byte below 0x20, some byte above 0x7e (exact for "some", as in
        // skip_plain).
        let below = w.wrapping_sub(ONES * 0x20) & !w;
        let above = w.wrapping_add(ONES) | w;
        if (below | above) & (ONES * 0x80) != 0 {
            return false;
        }
    }
    chunks
        .remainder()
        .iter()
        .all(|&b| (0x20..0x7f).contains(&b))
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A non-empty run of ASCII digits as a number: no sign, no spaces (which `str::parse`
/// would take); `None` on overflow.
pub fn digits(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_agrees_with_the_bytewise_check() {
        for len in 0..20 {
            for pos in 0..len {
                for b in 0..=255u8 {
                    let mut bytes = vec![b'a'; len];
                    bytes[pos] = b;
                    if pos + 1 < len {
                        bytes[pos + 1] = b.wrapping_mul(7);
                    }
                    let bytewise = bytes.iter().all(|&b| (0x20..0x7f).contains(&b));
                    assert_eq!(printable(&bytes), bytewise, "{bytes:?}");
                }
            }
        }
    }

    #[test]
    fn the_one_pass_check_agrees_with_the_checks_one_by_one() {
        let alphabet = b"aZ9-.*:_";
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut names: Vec<String> = ["a", "-a", "a-", "a..b", ".a", "a.", "a-b.c-d"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        names.push("a".repeat(63));
        names.push("a".repeat(64));
        names.push(format!("{}.{}", "a".repeat(63), "b".repeat(63)));
        names.push(vec!["a".repeat(63); 4].join("."));
        names.push(vec!["a".repeat(62); 4].join("."));
        for _ in 0..50_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let len = (state % 9) as usize;
            names.push(
                (0..len)
                    .map(|k| alphabet[((state >> (8 + 5 * k)) % 8) as usize] as char)
                    .collect(),
            );
        }
        for name in &names {
            assert_eq!(
                plain_dns_name(name),
                checked_dns_name(name).is_ok(),
                "{name:?}"
            );
        }
    }

    #[test]
    fn dns_names_are_lowercased_and_checked() {
        assert_eq!(
            dns_name("Sklearn-Iris.Example.COM").as_deref(),
            Ok("sklearn-iris.example.com")
        );
        assert_eq!(dns_name("a.example.com.").as_deref(), Ok("a.example.com"));
        assert!(dns_name("").is_err());
        assert!(dns_name(".").is_err());
        assert!(dns_name("*.example.com").is_err());
        assert!(dns_name("a.example.com:8080").is_err());
        assert!(dns_name("a..b").is_err());
        assert!(dns_name("-a.b").is_err());
        assert!(dns_name("a_b.c").is_err());
        assert!(dns_name("bücher.de").is_err());
        assert!(dns_name(&"a".repeat(64)).is_err());
        let long = [
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(61),
        ]
        .join(".");
        assert_eq!(long.len(), 253);
        assert!(dns_name(&long).is_ok());
        assert!(dns_name(&format!("{long}e")).is_err());
    }

    #[test]
    fn authorities_allow_a_port() {
        assert_eq!(
            authority("Svc.NS.svc.cluster.local:8080").as_deref(),
            Ok("svc.ns.svc.cluster.local:8080")
        );
        assert_eq!(authority("svc").as_deref(), Ok("svc"));
        assert!(authority("svc:").is_err());
        assert!(authority("svc:0").is_err());
        assert!(authority("svc:65536").is_err());
        assert!(authority("svc:http").is_err());
        assert!(authority("[::1]:80").is_err());
    }

    #[test]
    fn header_names() {
        assert_eq!(
            header_name("X-Canary-Cluster").as_deref(),
            Ok("x-canary-cluster")
        );
        assert!(header_name("").is_err());
        assert!(header_name(":authority").is_err());
        assert!(header_name("x canary").is_err());
        assert!(header_name("x-canary\n").is_err());
        assert!(header_name("Content-Type").is_err());
        assert!(header_name("host").is_err());
    }

    #[test]
    fn header_values() {
        assert!(header_value("outbound|80||svc.ns.svc.cluster.local").is_ok());
        assert!(header_value("").is_err());
        assert!(header_value("a\r\nb").is_err());
        assert!(header_value(" a").is_err());
        assert!(header_value("é").is_err());
    }

    #[test]
    fn tags() {
        assert_eq!(tag("Canary").as_deref(), Ok("canary"));
        assert!(tag("").is_err());
        assert!(tag("a.b").is_err());
        assert!(tag("-a").is_err());
    }
}
