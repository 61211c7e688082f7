//! Kubernetes quantities as byte counts, for mailbox quotas.

/// Why a quantity could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QuantityError {
    #[error(
        "quantity {0:?} is not a number with an optional suffix (Ki, Mi, Gi, Ti, Pi, k, M, G, T, P)"
    )]
    Syntax(String),
    #[error("quantity {0:?} is too large")]
    Overflow(String),
    #[error(
        "quantity {0:?} has more than {MAX_FRACTION_DIGITS} decimal places; a byte count needs fewer"
    )]
    Precision(String),
}

/// Digits after the point that are read. With at most 18, the fraction times the largest
/// multiplier (2^50) stays far inside `u128`, so the arithmetic below is exact.
const MAX_FRACTION_DIGITS: usize = 18;

/// Reads a Kubernetes quantity (`1Gi`, `500Mi`, `1.5G`, `1024`) as a number of bytes.
pub fn parse_quantity(text: &str) -> Result<u64, QuantityError> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let multiplier: u64 = match suffix {
        "" => 1,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "P" => 1_000_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "Pi" => 1 << 50,
        _ => return Err(QuantityError::Syntax(text.to_string())),
    };
    let syntax = || QuantityError::Syntax(text.to_string());
    let (whole, fraction) = match number.split_once('.') {
        Some((w, f)) => (w, f),
        None => (number, ""),
    };
    if whole.is_empty() || fraction.contains('.') || (number.contains('.') && fraction.is_empty()) {
        return Err(syntax());
    }
    let overflow = || QuantityError::Overflow(text.to_string());
    let whole: u64 = whole.parse().map_err(|_| overflow())?;
    let mut bytes = whole.checked_mul(multiplier).ok_or_else(overflow)?;
    // A fraction counts down to the byte; anything smaller is dropped.
    if !fraction.is_empty() {
        if fraction.len() > MAX_FRACTION_DIGITS {
            return Err(QuantityError::Precision(text.to_string()));
        }
        let digits: u128 = fraction.parse().map_err(|_| syntax())?;
        let scale = 10u128.pow(fraction.len() as u32);
        let part = u128::from(multiplier)
            .checked_mul(digits)
            .map(|scaled| scaled / scale)
            .and_then(|part| u64::try_from(part).ok())
            .ok_or_else(overflow)?;
        bytes = bytes.checked_add(part).ok_or_else(overflow)?;
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let cases: &[(&str, Result<u64, ()>)] = &[
            ("1Gi", Ok(1 << 30)),
            ("500Mi", Ok(500 << 20)),
            ("2G", Ok(2_000_000_000)),
            ("1.5Gi", Ok(3 << 29)),
            ("1024", Ok(1024)),
            ("0", Ok(0)),
            (" 10k ", Ok(10_000)),
            ("", Err(())),
            ("Gi", Err(())),
            ("1.Gi", Err(())),
            ("1..5Gi", Err(())),
            ("1gb", Err(())),
            ("-1Gi", Err(())),
            ("99999999999999999999Pi", Err(())),
            ("20000Pi", Err(())),
            // Edges: the largest byte count, one past it, fractions down to the byte, and
            // fractions with more digits than any byte count needs (they overflowed).
            ("18446744073709551615", Ok(u64::MAX)),
            ("18446744073709551616", Err(())),
            ("16383Pi", Ok(16383 << 50)),
            ("16384Pi", Err(())),
            ("0.5", Ok(0)),
            ("0.0009765625Ki", Ok(1)),
            ("0.999999999999999999Ki", Ok(1023)),
            ("1.000000000000000001Pi", Ok(1 << 50)),
            ("0.99999999999999999999999999999999999999Ki", Err(())),
            ("0.99999999999999999999999999999999999999", Err(())),
            ("1.0000000000000000000Pi", Err(())),
            ("000000000000000000000000001Ki", Ok(1024)),
        ];
        for (input, want) in cases {
            assert_eq!(parse_quantity(input).map_err(|_| ()), *want, "{input:?}");
        }
    }
}
