//! Sizes (`"256MiB"`) and durations (`"30s"`) as typed values.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Unexpected, Visitor};
use serde::Deserialize;

/// A number of bytes, written in config as `"256MiB"`, `"16KiB"`, `"1GB"` or `"512B"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub const fn bytes(self) -> u64 {
        self.0
    }

    /// Parses a size: an integer followed by an optional unit (B, KB, MB, GB, KiB, MiB, GiB, TiB).
    pub fn parse(text: &str) -> Result<ByteSize, String> {
        let (number, unit) = split_number(text)?;
        let factor: u64 = match unit {
            "" | "B" => 1,
            "KB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            "TiB" => 1 << 40,
            other => {
                return Err(format!(
                    "invalid size {text:?}: unknown unit {other:?} (use B, KiB, MiB, GiB, TiB, KB, MB or GB)"
                ))
            }
        };
        number
            .checked_mul(factor)
            .map(ByteSize)
            .ok_or_else(|| format!("invalid size {text:?}: too large"))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(&str, u64); 4] = [
            ("TiB", 1 << 40),
            ("GiB", 1 << 30),
            ("MiB", 1 << 20),
            ("KiB", 1 << 10),
        ];
        for (name, size) in UNITS {
            if self.0 >= size && self.0 % size == 0 {
                return write!(f, "{}{name}", self.0 / size);
            }
        }
        write!(f, "{}B", self.0)
    }
}

/// Parses a duration: an integer followed by a unit (`ms`, `s`, `m`, `h`, `d`), e.g. `"30s"`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = split_number(text)?;
    let millis_per: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "" => {
            return Err(format!(
                "invalid duration {text:?}: missing unit (ms, s, m, h or d)"
            ))
        }
        other => {
            return Err(format!(
                "invalid duration {text:?}: unknown unit {other:?} (use ms, s, m, h or d)"
            ))
        }
    };
    number
        .checked_mul(millis_per)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("invalid duration {text:?}: too large"))
}

fn split_number(text: &str) -> Result<(u64, &str), String> {
    let trimmed = text.trim();
    let digits_end = trimmed
        .find(|c: char| !c.is_ascii_digit() && c != '_')
        .unwrap_or(trimmed.len());
    let (digits, unit) = trimmed.split_at(digits_end);
    if digits.is_empty() {
        return Err(format!("invalid value {text:?}: expected a number first"));
    }
    let number = digits
        .replace('_', "")
        .parse::<u64>()
        .map_err(|_| format!("invalid value {text:?}: number too large"))?;
    Ok((number, unit.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_and_decimal_units() {
        let cases = [
            ("256MiB", 256 << 20),
            ("16 KiB", 16 << 10),
            ("1GB", 1_000_000_000),
            ("512", 512),
            ("512B", 512),
            ("1_024KiB", 1 << 20),
        ];
        for (text, bytes) in cases {
            assert_eq!(ByteSize::parse(text), Ok(ByteSize(bytes)), "{text}");
        }
    }

    #[test]
    fn bad_sizes_say_what_is_wrong() {
        assert!(ByteSize::parse("12XB")
            .unwrap_err()
            .contains("unknown unit"));
        assert!(ByteSize::parse("MiB")
            .unwrap_err()
            .contains("expected a number"));
        assert!(ByteSize::parse("-1MiB").is_err());
        assert!(ByteSize::parse("99999999999TiB")
            .unwrap_err()
            .contains("too large"));
    }

    #[test]
    fn sizes_display_in_the_largest_exact_unit() {
        assert_eq!(ByteSize(256 << 20).to_string(), "256MiB");
        assert_eq!(ByteSize(1000).to_string(), "1000B");
    }

    #[test]
    fn durations_parse_and_reject_missing_units() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("30").unwrap_err().contains("missing unit"));
        assert!(parse_duration("3 weeks")
            .unwrap_err()
            .contains("unknown unit"));
    }
}

/// A size as written: a string with a unit (`"256MiB"`) or a bare number of bytes.
#[derive(Debug, Clone)]
pub enum RawSize {
    Bytes(u64),
    Text(String),
}

impl<'de> Deserialize<'de> for RawSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<RawSize, D::Error> {
        deserializer.deserialize_any(SizeVisitor)
    }
}

struct SizeVisitor;

impl Visitor<'_> for SizeVisitor {
    type Value = RawSize;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a size like \"16KiB\" or a number of bytes")
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<RawSize, E> {
        Ok(RawSize::Bytes(n))
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<RawSize, E> {
        u64::try_from(n)
            .map(RawSize::Bytes)
            .map_err(|_| E::invalid_value(Unexpected::Signed(n), &self))
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<RawSize, E> {
        Ok(RawSize::Text(text.to_string()))
    }
}
