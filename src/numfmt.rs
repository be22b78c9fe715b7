//! Floats as text, spelled exactly as `{}` and `{:.1}` spell them, without core's float
//! formatting (Grisu, Dragon, their bignums and tables: about 17 KB of the wasm). The
//! shortest round-trip digits come from zmij, which serde_json links anyway.

/// A configured number in an error message: an integer without a fraction (`5`, the
/// usual slip for 5%), anything else in zmij's shortest round-trip form (`1.5`, `1e-7`).
pub fn brief(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < (1u64 << 53) as f64 {
        return format!("{}", x as i64);
    }
    zmij::Buffer::new().format(x).to_owned()
}

/// `format!("{x}")`: the shortest digits that read back as `x`, never in exponent form
/// (`5`, `0.05`, `1e-7` as `0.0000001`).
pub fn display(x: f64) -> String {
    if x.is_nan() {
        return "NaN".to_owned();
    }
    if x.is_infinite() {
        return if x < 0.0 { "-inf" } else { "inf" }.to_owned();
    }
    let mut buffer = zmij::Buffer::new();
    // zmij writes `-?D+(.D+)?(e[+-]D+)?`; read it as 0.DIGITS x 10^point.
    let mut digits = [0u8; 24];
    let mut len = 0;
    let mut point: i32 = 0;
    let (mut negative, mut fraction, mut in_exponent) = (false, false, false);
    let (mut exponent, mut exponent_negative) = (0i32, false);
    for &b in buffer.format_finite(x).as_bytes() {
        match b {
            b'-' if in_exponent => exponent_negative = true,
            b'-' => negative = true,
            b'.' => fraction = true,
            b'e' => in_exponent = true,
            b'+' => {}
            d if in_exponent => exponent = exponent * 10 + i32::from(d - b'0'),
            b'0' if len == 0 => point -= i32::from(fraction),
            d => {
                if let Some(slot) = digits.get_mut(len) {
                    *slot = d;
                    len += 1;
                }
                point += i32::from(!fraction);
            }
        }
    }
    point += if exponent_negative {
        -exponent
    } else {
        exponent
    };
    let mut digits = digits.get(..len).unwrap_or_default().to_vec();
    while digits.last() == Some(&b'0') {
        digits.pop();
    }
    if is_tie_below(x.abs(), &digits, point) {
        round_up(&mut digits, &mut point);
    }
    let mut out = String::with_capacity(digits.len() + 8);
    if negative {
        out.push('-');
    }
    if digits.is_empty() {
        out.push('0');
        return out;
    }
    if point <= 0 {
        out.push_str("0.");
        for _ in point..0 {
            out.push('0');
        }
    }
    for (i, &d) in digits.iter().enumerate() {
        if point > 0 && i as i32 == point {
            out.push('.');
        }
        out.push(char::from(d));
    }
    for _ in digits.len() as i32..point {
        out.push('0');
    }
    out
}

/// Whether `|x|` lies exactly halfway between 0.DIGITS x 10^point and the next number of
/// as many digits. zmij then keeps DIGITS when its last digit is even; core rounds the
/// tie up (Dragon's shortest mode).
fn is_tie_below(a: f64, digits: &[u8], point: i32) -> bool {
    if digits.is_empty() || digits.len() > 17 || a == 0.0 {
        return false;
    }
    // 2 * DIGITS + 1, and q with a == (DIGITS + 1/2) * 10^q.
    let odd = digits
        .iter()
        .fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'))
        * 2
        + 1;
    let q = point - digits.len() as i32;
    // a = m * 2^e with m odd.
    let bits = a.to_bits();
    let biased = ((bits >> 52) & 0x7ff) as i32;
    let fraction = bits & ((1 << 52) - 1);
    let (mut m, mut e) = if biased == 0 {
        (fraction, -1074)
    } else {
        (fraction | (1 << 52), biased - 1075)
    };
    let zeros = m.trailing_zeros();
    m >>= zeros;
    e += zeros as i32;
    // (DIGITS + 1/2) * 10^q = odd * 5^q * 2^(q-1): compare the odd parts and the twos.
    if e != q - 1 {
        return false;
    }
    let five_q = |n: u32| 5u64.checked_pow(n);
    if q >= 0 {
        five_q(q.unsigned_abs())
            .and_then(|p| odd.checked_mul(p))
            .is_some_and(|rhs| rhs == m)
    } else {
        five_q(q.unsigned_abs())
            .and_then(|p| m.checked_mul(p))
            .is_some_and(|lhs| lhs == odd)
    }
}

/// DIGITS + 1 in the last place, carrying (`999` becomes `1` one place up).
fn round_up(digits: &mut Vec<u8>, point: &mut i32) {
    while let Some(last) = digits.pop() {
        if last != b'9' {
            digits.push(last + 1);
            return;
        }
    }
    digits.push(b'1');
    *point += 1;
}

/// `format!("{x:.1}")`, exactly (ties to even on the binary value), for `|x| < 2^60`;
/// the filter's log lines print percentages in 0..=100 with it. Larger values are
/// whole numbers and print as `display(x)` plus `.0`.
pub fn one_decimal(x: f64) -> String {
    if x.is_nan() {
        return "NaN".to_owned();
    }
    let sign = if x.is_sign_negative() { "-" } else { "" };
    let a = x.abs();
    if a.is_infinite() {
        return format!("{sign}inf");
    }
    if a >= (1u64 << 60) as f64 {
        // Never a percentage: zmij's shortest form (`1e+20`) keeps `display` out of the
        // .wasm.
        return zmij::Buffer::new().format_finite(x).to_owned();
    }
    // a = mantissa * 2^exponent, exactly.
    let bits = a.to_bits();
    let biased = ((bits >> 52) & 0x7ff) as i32;
    let fraction = bits & ((1 << 52) - 1);
    let (mantissa, exponent) = if biased == 0 {
        (fraction, -1074)
    } else {
        (fraction | (1 << 52), biased - 1075)
    };
    // tenths = round(a * 10), ties to even.
    let scaled = mantissa * 10;
    let tenths = if exponent >= 0 {
        scaled << exponent
    } else if exponent <= -58 {
        // a * 10 < 2^57 / 2^58: below one half.
        0
    } else {
        let shift = exponent.unsigned_abs();
        let whole = scaled >> shift;
        let rest = scaled & ((1 << shift) - 1);
        let half = 1 << (shift - 1);
        if rest > half || (rest == half && whole % 2 == 1) {
            whole + 1
        } else {
            whole
        }
    };
    format!("{sign}{}.{}", tenths / 10, tenths % 10)
}

#[cfg(test)]
// The literals are exact binary values written out in full, on purpose.
#[allow(clippy::excessive_precision)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn check(x: f64) {
        assert_eq!(display(x), format!("{x}"), "{x:e}");
        if x.is_nan() || x.abs() < (1u64 << 60) as f64 {
            assert_eq!(one_decimal(x), format!("{x:.1}"), "{x:e}");
        }
    }

    #[test]
    fn brief_prints_integers_without_a_fraction() {
        for (x, text) in [
            (5.0, "5"),
            (0.0, "0"),
            (-3.0, "-3"),
            (1.5, "1.5"),
            (-0.1, "-0.1"),
            (0.05, "0.05"),
            (1e-7, "1e-7"),
            (1e20, "1e+20"),
        ] {
            assert_eq!(brief(x), text, "{x}");
        }
    }

    #[test]
    fn matches_std_on_chosen_values() {
        for x in [
            0.0,
            -0.0,
            5.0,
            0.05,
            0.5,
            1.5,
            2.5,
            0.25,
            0.35,
            0.45,
            0.95,
            99.95,
            100.0,
            1e-7,
            1e23,
            1e22,
            1e300,
            1.7976931348623157e308,
            5e-324,
            2.2250738585072014e-308,
            123456789.125,
            0.30000000000000004,
            1.0 / 3.0,
            2.0 / 3.0,
            9.999999999999999e22,
            4503599627370496.5,
            9007199254740993.0,
            0.1 + 0.2,
            1e16,
            1e15,
            1e-5,
            12.25,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ] {
            check(x);
            check(-x);
        }
    }

    #[test]
    fn matches_std_on_rates_and_ties() {
        for total in 1..=400u32 {
            for errors in 0..=total {
                check(100.0 * (f64::from(errors) / f64::from(total)));
            }
        }
        // Exact ties at every binary scale the one-decimal rounding meets.
        for k in 0..60 {
            for n in 0..200u32 {
                check(f64::from(n) / f64::from(1u32 << (k % 31)) / (1u64 << (k / 31 * 30)) as f64);
            }
        }
    }

    #[test]
    fn matches_std_on_shortest_ties() {
        // 9 + 2^-16 = 9.0000152587890625: 9.000015258789062 and ...063 both read back.
        check(9.0000152587890625);
        check(6.1511993408203125e-5);
        let mut rng = Rng::new(11);
        for _ in 0..40_000 {
            // Short dyadic numbers: the ones whose shortest digits can tie.
            let m = rng.next_u64() >> (11 + rng.below(40));
            let e = rng.below(120) as i32 - 90;
            check(m as f64 * 2f64.powi(e));
        }
    }

    #[test]
    fn matches_std_on_random_bits() {
        let mut rng = Rng::new(7);
        for _ in 0..40_000 {
            let bits = (u64::from(rng.below(u32::MAX)) << 32) | u64::from(rng.below(u32::MAX));
            check(f64::from_bits(bits));
            // And in the range the log lines use.
            check(f64::from_bits(bits) % 101.0);
        }
    }
}
