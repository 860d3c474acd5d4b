//! OPEN amounts: decimal strings ("1.5") to base units (18 decimals) and
//! back, exactly — no floating point anywhere, so "0.1" is exactly 10^17.

use alloy_primitives::U256;

use crate::{Error, Result};

/// OPEN's decimals (`OpenToken.decimals()`).
pub const DECIMALS: usize = 18;

/// Parses a non-negative decimal amount of whole tokens ("12", "1.5", "0.000001")
/// into base units. Refuses signs, exponents, separators, more than 18
/// fractional digits (which would silently round) and overflow.
pub fn parse_amount(text: &str) -> Result<U256> {
    let bad = |why: &str| Error::Invalid(format!("invalid amount `{text}`: {why}"));
    let s = text.trim();
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    if whole.is_empty() && frac.is_empty() {
        return Err(bad("expected a number such as 10 or 1.5"));
    }
    if !whole
        .bytes()
        .chain(frac.bytes())
        .all(|b| b.is_ascii_digit())
    {
        return Err(bad("only digits and one decimal point are allowed"));
    }
    if frac.len() > DECIMALS {
        return Err(bad("more than 18 decimal places"));
    }
    let digits = format!("{whole}{frac:0<DECIMALS$}");
    U256::from_str_radix(&digits, 10).map_err(|_| bad("too large"))
}

/// Formats base units as a decimal amount without trailing zeros ("1.5", "12").
pub fn format_amount(units: U256) -> String {
    let s = format!("{units:0>width$}", width = DECIMALS + 1);
    let (whole, frac) = s.split_at(s.len() - DECIMALS);
    let frac = frac.trim_end_matches('0');
    if frac.is_empty() {
        whole.to_owned()
    } else {
        format!("{whole}.{frac}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(n: u64, exp: u64) -> U256 {
        U256::from(n) * U256::from(10u64).pow(U256::from(exp))
    }

    #[test]
    fn decimal_strings_parse_exactly() {
        assert_eq!(parse_amount("1.5").unwrap(), e(15, 17));
        assert_eq!(parse_amount("12").unwrap(), e(12, 18));
        assert_eq!(parse_amount("0.000000000000000001").unwrap(), U256::from(1));
        assert_eq!(parse_amount(".5").unwrap(), e(5, 17));
        assert_eq!(parse_amount("7.").unwrap(), e(7, 18));
        assert_eq!(parse_amount("0").unwrap(), U256::ZERO);
    }

    #[test]
    fn bad_amounts_say_why() {
        for (text, why) in [
            ("", "expected a number"),
            (".", "expected a number"),
            ("-1", "only digits"),
            ("1e18", "only digits"),
            ("1.2.3", "only digits"),
            ("1,5", "only digits"),
            ("0.0000000000000000001", "18 decimal places"),
            (&"9".repeat(80), "too large"),
        ] {
            let msg = parse_amount(text).unwrap_err().to_string();
            assert!(msg.contains(why), "{text}: {msg}");
        }
    }

    #[test]
    fn formatting_round_trips() {
        for text in ["1.5", "12", "0.000000000000000001", "0", "1000000000"] {
            assert_eq!(format_amount(parse_amount(text).unwrap()), text);
        }
    }
}
