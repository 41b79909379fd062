//! Byte sizes on the command line: `32MiB`, `512KiB`, `1GiB`, `10MB`, `65536`.

use crate::error::{Error, Result};

/// A number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub usize);

impl std::str::FromStr for ByteSize {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        let text = text.trim();
        let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let bad = || {
            Error::param(
                "--max-body",
                format!("'{text}' is not a size like 32MiB, 512KiB or 65536"),
            )
        };
        let number: usize = number.parse().map_err(|_| bad())?;
        let factor: usize = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" => 1_000,
            "kib" => 1 << 10,
            "m" | "mb" => 1_000_000,
            "mib" => 1 << 20,
            "g" | "gb" => 1_000_000_000,
            "gib" => 1 << 30,
            _ => return Err(bad()),
        };
        number.checked_mul(factor).map(ByteSize).ok_or_else(bad)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_and_decimal_units() {
        assert_eq!("32MiB".parse::<ByteSize>().unwrap(), ByteSize(32 << 20));
        assert_eq!("512kib".parse::<ByteSize>().unwrap(), ByteSize(512 << 10));
        assert_eq!("10MB".parse::<ByteSize>().unwrap(), ByteSize(10_000_000));
        assert_eq!("65536".parse::<ByteSize>().unwrap(), ByteSize(65536));
        for bad in ["", "MiB", "12 parsecs", "-5", "99999999999999999999GiB"] {
            assert!(bad.parse::<ByteSize>().is_err(), "{bad}");
        }
    }
}
