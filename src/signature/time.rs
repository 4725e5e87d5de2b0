//! Calendar helpers for providers that sign a date-time instead of unix seconds.

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(year) => 29,
        _ => 28,
    }
}

fn digits(bytes: &[u8]) -> Option<u32> {
    if bytes.is_empty() || !bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    bytes.iter().try_fold(0u32, |acc, b| acc.checked_mul(10)?.checked_add(u32::from(b - b'0')))
}

/// `YYYY-MM-DD?HH:MM:SS` with `sep` between date and time; returns unix seconds as if UTC.
fn parse_date_time(b: &[u8], sep: &[u8]) -> Option<i64> {
    if b.len() != 19 || b[4] != b'-' || b[7] != b'-' || !sep.contains(&b[10]) || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let year = i64::from(digits(&b[0..4])?);
    let month = digits(&b[5..7])?;
    let day = digits(&b[8..10])?;
    let hour = digits(&b[11..13])?;
    let minute = digits(&b[14..16])?;
    let second = digits(&b[17..19])?;
    if !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    // A leap second (":60") counts as the last second of the minute.
    let second = second.min(59);
    Some(
        days_from_civil(year, month, day) * 86_400
            + i64::from(hour) * 3_600
            + i64::from(minute) * 60
            + i64::from(second),
    )
}

/// RFC 3339 date-time (`2016-09-21T22:00:46Z`, `…46.123+02:00`) to unix seconds; fractional
/// seconds are truncated.
pub(crate) fn parse_rfc3339(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() < 20 {
        return None;
    }
    let base = parse_date_time(&b[..19], b"Tt")?;
    let mut rest = &b[19..];
    if let Some(frac) = rest.strip_prefix(b".") {
        let n = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return None;
        }
        rest = &frac[n..];
    }
    let offset = match rest {
        b"Z" | b"z" => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let hours = i64::from(digits(&[*h1, *h2])?);
            let minutes = i64::from(digits(&[*m1, *m2])?);
            if hours > 23 || minutes > 59 {
                return None;
            }
            let secs = hours * 3_600 + minutes * 60;
            if *sign == b'+' {
                secs
            } else {
                -secs
            }
        }
        _ => return None,
    };
    Some(base - offset)
}

/// Alipay's `yyyy-MM-dd HH:mm:ss`, which is Beijing time (UTC+8), to unix seconds.
pub(crate) fn parse_alipay_time(text: &str) -> Option<i64> {
    Some(parse_date_time(text.as_bytes(), b" ")? - 8 * 3_600)
}

/// Unix seconds as Alipay's `yyyy-MM-dd HH:mm:ss` in Beijing time (H. Hinnant's
/// `civil_from_days`).
pub(crate) fn format_alipay_time(unix: i64) -> String {
    let local = unix + 8 * 3_600;
    let (days, secs) = (local.div_euclid(86_400), local.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}", secs / 3_600, secs % 3_600 / 60, secs % 60)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn alipay_time_round_trips() {
        for unix in [0, 951_782_400, 1_700_000_000, 1_709_164_800, 4_102_444_799] {
            assert_eq!(parse_alipay_time(&format_alipay_time(unix)), Some(unix), "{unix}");
        }
        assert_eq!(format_alipay_time(1_700_000_000), "2023-11-15 06:13:20");
    }

    #[test]
    fn rfc3339() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2016-09-21T22:00:46Z"), Some(1_474_495_246));
        assert_eq!(parse_rfc3339("2016-09-21T22:00:46.999Z"), Some(1_474_495_246));
        assert_eq!(parse_rfc3339("2016-09-22T00:00:46+02:00"), Some(1_474_495_246));
        assert_eq!(parse_rfc3339("2016-09-21T21:00:46-01:00"), Some(1_474_495_246));
        assert_eq!(parse_rfc3339("2024-02-29T00:00:00Z"), Some(1_709_164_800));
        for bad in [
            "",
            "2016-09-21 22:00:46Z",
            "2016-09-21T22:00:46",
            "2023-02-29T00:00:00Z",
            "2016-13-01T00:00:00Z",
            "2016-09-21T24:00:00Z",
            "2016-09-21T22:00:46.Z",
            "2016-09-21T22:00:46+0200",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn alipay_time_is_beijing_time() {
        assert_eq!(parse_alipay_time("1970-01-01 08:00:00"), Some(0));
        assert_eq!(parse_alipay_time("2016-09-22 06:00:46"), Some(1_474_495_246));
        assert_eq!(parse_alipay_time("2016-09-22T06:00:46"), None);
    }
}
