//! Human-readable units used in `payguard.toml` and `rules/*.toml`: durations (`"500ms"`,
//! `"30s"`, `"5m"`, `"24h"`), byte sizes (`"64KiB"`, `"1MiB"`, `"512B"`, `"1024"`), rates
//! (`"10/s"`, `"600/min"`, `"5000/h"`) and networks (`"10.0.0.0/8"`, `"2001:db8::1"`).
//!
//! The parsers are strict: no sign, no fraction, no empty number; an unknown unit or a value that
//! does not fit is an error whose message names the accepted units. Whitespace is allowed only
//! between the number and the unit (`"64 KiB"`).
//!
//! [`de`] holds serde helpers. Config structs that may fail fast use them directly (toml attaches
//! the value's span to the error); rule-file mirrors keep the raw `Spanned<String>` and call the
//! parsers at compile time so that every bad value in a file is reported, not only the first.

use std::fmt;
use std::time::Duration;

/// Why a duration, size or rate string was rejected. The `Display` text quotes the offending
/// configuration value (configuration is not client input).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    /// The string was empty (or only whitespace).
    #[error("empty {what}")]
    Empty {
        /// "duration", "size" or "rate".
        what: &'static str,
    },
    /// A leading `-`.
    #[error("invalid {what} {input:?}: must not be negative")]
    Negative {
        /// "duration", "size" or "rate".
        what: &'static str,
        /// The configured text.
        input: String,
    },
    /// Not of the form `<digits><unit>`.
    #[error("invalid {what} {input:?}: expected {expected}")]
    Syntax {
        /// "duration", "size" or "rate".
        what: &'static str,
        /// The configured text.
        input: String,
        /// What the accepted form looks like.
        expected: &'static str,
    },
    /// A unit that is not in the accepted list.
    #[error("invalid {what} {input:?}: unknown unit {unit:?} (expected one of {expected})")]
    UnknownUnit {
        /// "duration", "size" or "rate".
        what: &'static str,
        /// The configured text.
        input: String,
        /// The unit as written.
        unit: String,
        /// The accepted units.
        expected: &'static str,
    },
    /// The value does not fit the target type.
    #[error("invalid {what} {input:?}: value too large")]
    Overflow {
        /// "duration", "size" or "rate".
        what: &'static str,
        /// The configured text.
        input: String,
    },
    /// A rate of zero requests, or per a zero-length period.
    #[error("invalid rate {input:?}: {reason}")]
    BadRate {
        /// The configured text.
        input: String,
        /// What is wrong.
        reason: &'static str,
    },
}

const DURATION_UNITS: &str = "ms, s, m, h, d";
const SIZE_UNITS: &str = "B, KiB, MiB, GiB, TiB, KB, MB, GB, TB";
const RATE_UNITS: &str = "s, min, h, d, or a duration such as 10s";

/// Splits `"  64 KiB "` into `("64", "KiB")`. Checks emptiness and sign.
fn split_number<'a>(what: &'static str, input: &'a str) -> Result<(&'a str, &'a str), UnitError> {
    let s = input.trim();
    if s.is_empty() {
        return Err(UnitError::Empty { what });
    }
    if s.starts_with('-') {
        return Err(UnitError::Negative { what, input: input.to_owned() });
    }
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(end);
    Ok((num, unit.trim_start_matches(' ')))
}

fn parse_digits(what: &'static str, input: &str, num: &str, expected: &'static str) -> Result<u64, UnitError> {
    if num.is_empty() {
        return Err(UnitError::Syntax { what, input: input.to_owned(), expected });
    }
    // Only ASCII digits reach here, so the only possible failure is overflow.
    num.parse::<u64>().map_err(|_| UnitError::Overflow { what, input: input.to_owned() })
}

/// Parses `"500ms"`, `"30s"`, `"5m"`, `"24h"`, `"2d"`, `"300250ms"`. A unit is required.
pub fn parse_duration(input: &str) -> Result<Duration, UnitError> {
    const WHAT: &str = "duration";
    const EXPECTED: &str = "a whole number followed by a unit (ms, s, m, h, d), e.g. \"30s\"";
    let (num, unit) = split_number(WHAT, input)?;
    let n = parse_digits(WHAT, input, num, EXPECTED)?;
    let overflow = || UnitError::Overflow { what: WHAT, input: input.to_owned() };
    let secs_mul = match unit {
        "ms" => return Ok(Duration::from_millis(n)),
        "s" => 1u64,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        "" => return Err(UnitError::Syntax { what: WHAT, input: input.to_owned(), expected: EXPECTED }),
        other => {
            return Err(UnitError::UnknownUnit {
                what: WHAT,
                input: input.to_owned(),
                unit: other.to_owned(),
                expected: DURATION_UNITS,
            })
        }
    };
    n.checked_mul(secs_mul).map(Duration::from_secs).ok_or_else(overflow)
}

/// Parses `"512B"`, `"64KiB"`, `"1MiB"`, `"1GiB"`, `"1TiB"` (1024-based), `"64KB"`, `"1MB"`,
/// `"1GB"`, `"1TB"` (1000-based) and plain `"1024"` (bytes). Units are case-insensitive.
pub fn parse_size(input: &str) -> Result<u64, UnitError> {
    const WHAT: &str = "size";
    const EXPECTED: &str = "a whole number optionally followed by a unit, e.g. \"64KiB\"";
    let (num, unit) = split_number(WHAT, input)?;
    let n = parse_digits(WHAT, input, num, EXPECTED)?;
    let mul: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => {
            return Err(UnitError::UnknownUnit {
                what: WHAT,
                input: input.to_owned(),
                unit: unit.to_owned(),
                expected: SIZE_UNITS,
            })
        }
    };
    n.checked_mul(mul).ok_or_else(|| UnitError::Overflow { what: WHAT, input: input.to_owned() })
}

/// A sustained rate: `count` events per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rate {
    /// Events allowed per period (at least 1).
    pub count: u32,
    /// The period (never zero).
    pub per: Duration,
}

impl Rate {
    /// Events per second, e.g. 10.0 for `"600/min"`.
    pub fn per_second(&self) -> f64 {
        f64::from(self.count) / self.per.as_secs_f64()
    }

    /// Time between two events at the sustained rate (the GCRA emission interval).
    pub fn interval(&self) -> Duration {
        self.per / self.count
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let per = self.per;
        if per == Duration::from_secs(1) {
            write!(f, "{}/s", self.count)
        } else if per == Duration::from_secs(60) {
            write!(f, "{}/min", self.count)
        } else if per == Duration::from_secs(3_600) {
            write!(f, "{}/h", self.count)
        } else if per == Duration::from_secs(86_400) {
            write!(f, "{}/d", self.count)
        } else {
            write!(f, "{}/{}ms", self.count, per.as_millis())
        }
    }
}

/// Parses `"10/s"`, `"600/min"`, `"5000/h"`, `"100/d"`, or `"<count>/<duration>"` such as
/// `"100/10s"`. The count must be at least 1 and fit in `u32`.
pub fn parse_rate(input: &str) -> Result<Rate, UnitError> {
    const WHAT: &str = "rate";
    const EXPECTED: &str = "<count>/<unit>, e.g. \"10/s\", \"600/min\", \"5000/h\"";
    let s = input.trim();
    if s.is_empty() {
        return Err(UnitError::Empty { what: WHAT });
    }
    let syntax = || UnitError::Syntax { what: WHAT, input: input.to_owned(), expected: EXPECTED };
    let (count, per) = s.split_once('/').ok_or_else(syntax)?;
    let (num, rest) = split_number(WHAT, count).map_err(|e| match e {
        UnitError::Negative { .. } => UnitError::Negative { what: WHAT, input: input.to_owned() },
        _ => syntax(),
    })?;
    if !rest.is_empty() {
        return Err(syntax());
    }
    let n = parse_digits(WHAT, input, num, EXPECTED)?;
    let count = u32::try_from(n).map_err(|_| UnitError::Overflow { what: WHAT, input: input.to_owned() })?;
    if count == 0 {
        return Err(UnitError::BadRate { input: input.to_owned(), reason: "count must be at least 1" });
    }
    let per = per.trim();
    let per = match per {
        "s" | "sec" | "second" => Duration::from_secs(1),
        "min" | "minute" => Duration::from_secs(60),
        "h" | "hour" => Duration::from_secs(3_600),
        "d" | "day" => Duration::from_secs(86_400),
        "" => return Err(syntax()),
        other if other.starts_with(|c: char| c.is_ascii_digit()) => parse_duration(other).map_err(|_| {
            UnitError::UnknownUnit { what: WHAT, input: input.to_owned(), unit: other.to_owned(), expected: RATE_UNITS }
        })?,
        other => {
            return Err(UnitError::UnknownUnit {
                what: WHAT,
                input: input.to_owned(),
                unit: other.to_owned(),
                expected: RATE_UNITS,
            })
        }
    };
    if per.is_zero() {
        return Err(UnitError::BadRate { input: input.to_owned(), reason: "period must be longer than zero" });
    }
    Ok(Rate { count, per })
}

/// Serde helpers.
///
/// - `#[serde(deserialize_with = "crate::units::de::duration")]` on a `Duration` field (and
///   `size`, `rate`), or the wrapper types [`HumanDuration`](de::HumanDuration),
///   [`ByteSize`](de::ByteSize) and [`Rate`] itself inside `toml::Spanned<_>` to keep the span.
/// - [`SizeValue`](de::SizeValue) accepts a string or a non-negative integer without parsing it,
///   for raw mirrors that parse later and report every error.
pub mod de {
    use super::{parse_duration, parse_rate, parse_size, Rate};
    use serde::de::{Error as _, Visitor};
    use serde::{Deserialize, Deserializer};
    use std::fmt;
    use std::time::Duration;

    struct StrVisitor(&'static str);

    impl Visitor<'_> for StrVisitor {
        type Value = String;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_owned())
        }
    }

    /// `deserialize_with` helper for a duration string.
    pub fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = d.deserialize_str(StrVisitor("a duration string such as \"30s\""))?;
        parse_duration(&s).map_err(D::Error::custom)
    }

    /// `deserialize_with` helper for a size string or integer byte count.
    pub fn size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        SizeValue::deserialize(d)?.parse().map_err(D::Error::custom)
    }

    /// `deserialize_with` helper for a rate string.
    pub fn rate<'de, D: Deserializer<'de>>(d: D) -> Result<Rate, D::Error> {
        let s = d.deserialize_str(StrVisitor("a rate string such as \"10/s\""))?;
        parse_rate(&s).map_err(D::Error::custom)
    }

    /// A duration that deserializes from `"30s"`-style strings.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct HumanDuration(pub Duration);

    impl<'de> Deserialize<'de> for HumanDuration {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            duration(d).map(HumanDuration)
        }
    }

    /// A byte count that deserializes from `"64KiB"`-style strings or integers.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct ByteSize(pub u64);

    impl<'de> Deserialize<'de> for ByteSize {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            size(d).map(ByteSize)
        }
    }

    impl<'de> Deserialize<'de> for Rate {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            rate(d)
        }
    }

    /// A size as written: a string (`"64KiB"`) or an integer (`65536`), not yet checked.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum SizeValue {
        /// Written as a string.
        Text(String),
        /// Written as an integer (possibly negative: rejected by [`SizeValue::parse`]).
        Int(i64),
    }

    impl SizeValue {
        /// Parses the size; a negative integer is an error.
        pub fn parse(&self) -> Result<u64, super::UnitError> {
            match self {
                SizeValue::Text(s) => parse_size(s),
                SizeValue::Int(i) => {
                    u64::try_from(*i).map_err(|_| super::UnitError::Negative { what: "size", input: i.to_string() })
                }
            }
        }
    }

    impl<'de> Deserialize<'de> for SizeValue {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl Visitor<'_> for V {
                type Value = SizeValue;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a size such as \"64KiB\" or a number of bytes")
                }
                fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<SizeValue, E> {
                    Ok(SizeValue::Text(v.to_owned()))
                }
                fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<SizeValue, E> {
                    Ok(SizeValue::Int(v))
                }
                fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<SizeValue, E> {
                    i64::try_from(v).map(SizeValue::Int).map_err(|_| E::custom("size too large"))
                }
            }
            d.deserialize_any(V)
        }
    }
}

/// A network in CIDR notation, or a single address (a /32 or /128). Host bits must be zero:
/// `10.0.0.1/8` is refused with the network it probably means, since a typo there silently
/// widens or narrows an allow or deny list. The one CIDR parser of config and rule files.
pub fn parse_cidr(s: &str) -> Result<ipnet::IpNet, String> {
    if !s.contains('/') {
        return s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from).map_err(|_| format!("invalid CIDR {s:?}"));
    }
    let net: ipnet::IpNet = s.parse().map_err(|_| format!("invalid CIDR {s:?}"))?;
    if net.trunc() != net {
        return Err(format!("invalid CIDR {s:?}: host bits are set (did you mean \"{}\"?)", net.trunc()));
    }
    Ok(net)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn durations_in_every_unit() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("24h").unwrap(), Duration::from_secs(86_400));
        assert_eq!(parse_duration("2d").unwrap(), Duration::from_secs(172_800));
        assert_eq!(parse_duration("300250ms").unwrap(), Duration::from_millis(300_250));
        assert_eq!(parse_duration("300s").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("0s").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration(" 10 s ").unwrap(), Duration::from_secs(10));
    }

    #[test]
    fn durations_rejected() {
        assert_eq!(parse_duration(""), Err(UnitError::Empty { what: "duration" }));
        assert_eq!(parse_duration("   "), Err(UnitError::Empty { what: "duration" }));
        assert!(matches!(parse_duration("-5s"), Err(UnitError::Negative { .. })));
        assert!(matches!(parse_duration("30"), Err(UnitError::Syntax { .. })));
        assert!(matches!(parse_duration("s"), Err(UnitError::Syntax { .. })));
        assert!(matches!(parse_duration("1.5s"), Err(UnitError::UnknownUnit { .. })));
        assert!(matches!(parse_duration("+5s"), Err(UnitError::Syntax { .. })));
        assert!(matches!(parse_duration("5x"), Err(UnitError::UnknownUnit { .. })));
        assert!(matches!(parse_duration("5S"), Err(UnitError::UnknownUnit { .. })));
        assert!(matches!(parse_duration("99999999999999999999s"), Err(UnitError::Overflow { .. })));
        assert!(matches!(parse_duration("18446744073709551615h"), Err(UnitError::Overflow { .. })));
        let max_secs = format!("{}s", u64::MAX);
        assert_eq!(parse_duration(&max_secs).unwrap(), Duration::from_secs(u64::MAX));
    }

    #[test]
    fn duration_error_text_names_units() {
        let msg = parse_duration("5x").unwrap_err().to_string();
        assert!(msg.contains("\"5x\"") && msg.contains("ms, s, m, h"), "{msg}");
    }

    #[test]
    fn sizes_in_every_unit() {
        assert_eq!(parse_size("512B").unwrap(), 512);
        assert_eq!(parse_size("1024").unwrap(), 1024);
        assert_eq!(parse_size("64KiB").unwrap(), 65_536);
        assert_eq!(parse_size("1MiB").unwrap(), 1_048_576);
        assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_size("2TiB").unwrap(), 2 << 40);
        assert_eq!(parse_size("64KB").unwrap(), 64_000);
        assert_eq!(parse_size("1MB").unwrap(), 1_000_000);
        assert_eq!(parse_size("1GB").unwrap(), 1_000_000_000);
        assert_eq!(parse_size("1kib").unwrap(), 1024);
        assert_eq!(parse_size("64 KiB").unwrap(), 65_536);
        assert_eq!(parse_size("0").unwrap(), 0);
    }

    #[test]
    fn sizes_rejected() {
        assert_eq!(parse_size(""), Err(UnitError::Empty { what: "size" }));
        assert!(matches!(parse_size("-1KiB"), Err(UnitError::Negative { .. })));
        assert!(matches!(parse_size("KiB"), Err(UnitError::Syntax { .. })));
        assert!(matches!(parse_size("1.5MiB"), Err(UnitError::UnknownUnit { .. })));
        assert!(matches!(parse_size("10XB"), Err(UnitError::UnknownUnit { .. })));
        assert!(matches!(parse_size("20000000TiB"), Err(UnitError::Overflow { .. })));
        assert!(matches!(parse_size("99999999999999999999"), Err(UnitError::Overflow { .. })));
    }

    #[test]
    fn rates() {
        let r = parse_rate("10/s").unwrap();
        assert_eq!((r.count, r.per), (10, Duration::from_secs(1)));
        assert_eq!(r.per_second(), 10.0);
        let r = parse_rate("600/min").unwrap();
        assert_eq!((r.count, r.per), (600, Duration::from_secs(60)));
        assert_eq!(r.per_second(), 10.0);
        let r = parse_rate("5000/h").unwrap();
        assert_eq!((r.count, r.per), (5000, Duration::from_secs(3600)));
        assert!((r.per_second() - 5000.0 / 3600.0).abs() < 1e-12);
        let r = parse_rate("100/10s").unwrap();
        assert_eq!((r.count, r.per), (100, Duration::from_secs(10)));
        assert_eq!(r.interval(), Duration::from_millis(100));
        assert_eq!(parse_rate("1/d").unwrap().per, Duration::from_secs(86_400));
        assert_eq!(parse_rate("600/min").unwrap().to_string(), "600/min");
        assert_eq!(parse_rate("3/250ms").unwrap().to_string(), "3/250ms");
    }

    #[test]
    fn rates_rejected() {
        assert_eq!(parse_rate(""), Err(UnitError::Empty { what: "rate" }));
        assert!(matches!(parse_rate("10"), Err(UnitError::Syntax { .. })));
        assert!(matches!(parse_rate("/s"), Err(UnitError::Syntax { .. })));
        assert!(matches!(parse_rate("10/"), Err(UnitError::Syntax { .. })));
        assert!(matches!(parse_rate("-1/s"), Err(UnitError::Negative { .. })));
        assert!(matches!(parse_rate("0/s"), Err(UnitError::BadRate { .. })));
        assert!(matches!(parse_rate("5/0s"), Err(UnitError::BadRate { .. })));
        assert!(matches!(parse_rate("5/fortnight"), Err(UnitError::UnknownUnit { .. })));
        assert!(matches!(parse_rate("5/10x"), Err(UnitError::UnknownUnit { .. })));
        assert!(matches!(parse_rate("1.5/s"), Err(UnitError::Syntax { .. })));
        assert!(matches!(parse_rate("4294967296/s"), Err(UnitError::Overflow { .. })));
        assert_eq!(parse_rate("4294967295/s").unwrap().count, u32::MAX);
    }

    #[derive(serde::Deserialize)]
    struct Conf {
        #[serde(deserialize_with = "de::duration")]
        timeout: Duration,
        #[serde(deserialize_with = "de::size")]
        cap: u64,
        limit: Rate,
        grace: toml::Spanned<de::HumanDuration>,
        other: de::ByteSize,
    }

    #[test]
    fn serde_helpers_parse_and_report_spans() {
        let c: Conf =
            toml::from_str("timeout = \"2s\"\ncap = 4096\nlimit = \"10/s\"\ngrace = \"30s\"\nother = \"1KiB\"\n")
                .unwrap();
        assert_eq!(c.timeout, Duration::from_secs(2));
        assert_eq!(c.cap, 4096);
        assert_eq!(c.limit.count, 10);
        assert_eq!(c.grace.get_ref().0, Duration::from_secs(30));
        assert_eq!(c.other.0, 1024);
        let src = "timeout = \"2s\"\ncap = 4096\nlimit = \"10/s\"\ngrace = \"30q\"\nother = 1\n";
        let err = toml::from_str::<Conf>(src).err().unwrap();
        let span = err.span().unwrap();
        assert_eq!(&src[span], "\"30q\"");
        assert!(err.message().contains("unknown unit"));
        let err = toml::from_str::<Conf>("timeout = \"2s\"\ncap = -1\nlimit = \"10/s\"\ngrace = \"1s\"\nother = 1\n")
            .err()
            .unwrap();
        assert!(err.message().contains("negative"), "{}", err.message());
    }

    #[test]
    fn cidrs() {
        assert_eq!(parse_cidr("10.0.0.0/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(parse_cidr("192.0.2.7").unwrap().to_string(), "192.0.2.7/32");
        assert_eq!(parse_cidr("2001:db8::/32").unwrap().to_string(), "2001:db8::/32");
        assert_eq!(parse_cidr("::1").unwrap().to_string(), "::1/128");
        assert_eq!(
            parse_cidr("10.0.0.1/8").unwrap_err(),
            "invalid CIDR \"10.0.0.1/8\": host bits are set (did you mean \"10.0.0.0/8\"?)"
        );
        for bad in ["10.0.0.0/33", "10.0.0/8", "", "example.com", "10.0.0.0/"] {
            assert!(parse_cidr(bad).unwrap_err().starts_with("invalid CIDR"), "{bad}");
        }
    }
}
