//! Progressive canary steps without a controller: the canary share is the step reached
//! by wall-clock time since `startTime`, so every worker and every replica agree without
//! talking to each other.

use crate::config::names::digits;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Steps {
    /// Canary percent of each step, in order.
    pub weights: Vec<u32>,
    pub interval_ms: u64,
    /// Milliseconds since the Unix epoch.
    pub start_ms: u64,
}

impl Steps {
    /// The canary percent at `now_ms`: the first weight before `startTime`, the last one
    /// after the last step.
    pub fn percent(&self, now_ms: u64) -> u32 {
        let step = now_ms.saturating_sub(self.start_ms) / self.interval_ms.max(1);
        let index = usize::try_from(step)
            .unwrap_or(usize::MAX)
            .min(self.weights.len().saturating_sub(1));
        self.weights.get(index).copied().unwrap_or(100)
    }
}

/// Parses an RFC 3339 timestamp (`2026-11-23T12:00:00Z`, `...12:00:00.5+01:00`) into
/// milliseconds since the Unix epoch.
pub fn parse_rfc3339(text: &str) -> Option<u64> {
    let bytes = text.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let part = text.get(from..from + len)?;
        digits(part).and_then(|n| i64::try_from(n).ok())
    };
    if bytes.len() < 20
        || bytes.get(4) != Some(&b'-')
        || bytes.get(7) != Some(&b'-')
        || bytes.get(13) != Some(&b':')
        || bytes.get(16) != Some(&b':')
    {
        return None;
    }
    if !matches!(bytes.get(10), Some(b'T' | b't' | b' ')) {
        return None;
    }
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (hour, minute, second) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut rest = text.get(19..)?;
    let mut millis = 0;
    if let Some(fraction) = rest.strip_prefix('.') {
        let count = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if count == 0 {
            return None;
        }
        // The first three digits, padded with zeros: milliseconds.
        millis = fraction
            .bytes()
            .take(count)
            .chain(*b"000")
            .take(3)
            .fold(0, |ms, b| ms * 10 + i64::from(b - b'0'));
        rest = fraction.get(count..)?;
    }
    let offset_minutes = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            if rest.len() != 6 || rest.as_bytes().get(3) != Some(&b':') {
                return None;
            }
            let (h, m) = (
                i64::try_from(digits(rest.get(1..3)?)?).ok()?,
                i64::try_from(digits(rest.get(4..6)?)?).ok()?,
            );
            if h > 23 || m > 59 {
                return None;
            }
            sign * (h * 60 + m)
        }
    };
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second.min(59) - offset_minutes * 60;
    u64::try_from(seconds * 1000 + millis).ok()
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339("2026-11-23T12:00:00Z"),
            Some(1_795_435_200_000)
        );
        assert_eq!(
            parse_rfc3339("2026-11-23T13:00:00+01:00"),
            Some(1_795_435_200_000)
        );
        assert_eq!(
            parse_rfc3339("2026-11-23T12:00:00.25Z"),
            Some(1_795_435_200_250)
        );
        assert_eq!(
            parse_rfc3339("2024-02-29T00:00:00Z"),
            Some(1_709_164_800_000)
        );
        for bad in [
            "",
            "2026-11-23",
            "2026-11-23T12:00:00",
            "2026-13-01T00:00:00Z",
            "2025-02-29T00:00:00Z",
            "2026-11-23T24:00:00Z",
            "2026-11-23T12:00:00+1:00",
            "2026-11-23T12:00:00.Z",
            "1969-12-31T23:59:59Z",
            "2026-11-23T12:00:00ZZ",
            "２０26-11-23T12:00:00Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn steps_follow_the_clock() {
        let s = Steps {
            weights: vec![5, 10, 25, 50, 100],
            interval_ms: 60_000,
            start_ms: 1_000_000,
        };
        assert_eq!(s.percent(0), 5, "before startTime: the first weight");
        assert_eq!(s.percent(1_000_000), 5);
        assert_eq!(s.percent(1_059_999), 5);
        assert_eq!(s.percent(1_060_000), 10);
        assert_eq!(s.percent(1_000_000 + 3 * 60_000), 50);
        assert_eq!(s.percent(u64::MAX), 100);
    }
}
