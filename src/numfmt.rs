//! Floats as text without core's float formatting (Grisu, Dragon, their bignums and
//! tables: about 17 KB of the wasm): `{:.1}` exactly for percentages, and zmij's
//! shortest round-trip digits (zmij is serde_json's printer) for the rest.

/// A configured number in an error message: an integer without a fraction (`5`, the
/// usual slip for 5%), anything else in zmij's shortest round-trip form (`1.5`, `1e-7`).
pub fn brief(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < (1u64 << 53) as f64 {
        return format!("{}", x as i64);
    }
    zmij::Buffer::new().format(x).to_owned()
}

/// `format!("{x:.1}")`, exactly (ties to even on the binary value), for `|x| < 2^60`;
/// the filter's log lines print percentages in 0..=100 with it. Larger values print in
/// zmij's shortest form.
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
        // Never a percentage: zmij's shortest form (`1e+20`).
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
    use crate::route::rng::Rng;

    fn check(x: f64) {
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
