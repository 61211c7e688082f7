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
}

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
        let digits: u128 = fraction.parse().map_err(|_| overflow())?;
        let scale = 10u128
            .checked_pow(u32::try_from(fraction.len()).map_err(|_| overflow())?)
            .ok_or_else(overflow)?;
        let part =
            u64::try_from(u128::from(multiplier) * digits / scale).map_err(|_| overflow())?;
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
        ];
        for (input, want) in cases {
            assert_eq!(parse_quantity(input).map_err(|_| ()), *want, "{input:?}");
        }
    }
}
