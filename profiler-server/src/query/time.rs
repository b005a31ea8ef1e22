//! Time and duration parameters: unix seconds, milliseconds, microseconds or nanoseconds (told
//! apart by magnitude), RFC 3339, and `now`, `now-15m`, `now-7d`.

use std::time::Duration;

use super::QueryError;

const NS_PER_S: i64 = 1_000_000_000;

/// Parses a point in time into nanoseconds since the Unix epoch; `now_ns` anchors `now-…`.
pub fn parse_time(input: &str, now_ns: i64) -> Result<i64, QueryError> {
    let s = input.trim();
    let error = |reason: &str| QueryError::Time {
        input: input.to_owned(),
        reason: reason.to_owned(),
    };
    if let Some(rest) = s.strip_prefix("now") {
        let rest = rest.trim();
        if rest.is_empty() {
            return Ok(now_ns);
        }
        let (sign, amount) = match rest.split_at(1) {
            ("-", amount) => (-1, amount),
            ("+", amount) => (1, amount),
            _ => return Err(error("expected `now-DURATION` or `now+DURATION`")),
        };
        let offset = parse_duration(amount).map_err(|e| match e {
            QueryError::Duration { reason, .. } => error(&reason),
            other => other,
        })?;
        let offset_ns = i64::try_from(offset.as_nanos()).map_err(|_| error("offset too large"))?;
        return now_ns
            .checked_add(sign * offset_ns)
            .ok_or_else(|| error("out of range"));
    }
    if s.bytes().all(|b| b.is_ascii_digit()) && !s.is_empty() {
        let n: i64 = s.parse().map_err(|_| error("number out of range"))?;
        return Ok(from_unix_number(n));
    }
    if let Some((whole, frac)) = s.split_once('.') {
        if !whole.is_empty()
            && whole.bytes().all(|b| b.is_ascii_digit())
            && frac.bytes().all(|b| b.is_ascii_digit())
        {
            // Fractional unix seconds, e.g. `1764000000.25`.
            let secs: i64 = whole.parse().map_err(|_| error("number out of range"))?;
            let frac_ns = fraction_ns(frac);
            return secs
                .checked_mul(NS_PER_S)
                .and_then(|ns| ns.checked_add(frac_ns))
                .ok_or_else(|| error("out of range"));
        }
    }
    parse_rfc3339(s).ok_or_else(|| error("not a number, RFC 3339 time or `now-DURATION`"))
}

/// Interprets an integer as unix seconds, milliseconds, microseconds or nanoseconds by
/// magnitude: below 1e11 seconds (until year 5138), below 1e14 ms, below 1e17 µs, else ns.
pub fn from_unix_number(n: i64) -> i64 {
    if n < 100_000_000_000 {
        n.saturating_mul(NS_PER_S)
    } else if n < 100_000_000_000_000 {
        n.saturating_mul(1_000_000)
    } else if n < 100_000_000_000_000_000 {
        n.saturating_mul(1_000)
    } else {
        n
    }
}

/// Parses a duration: humane (`30s`, `15m`, `1h30m`, `7d`) or a bare number of seconds.
pub fn parse_duration(input: &str) -> Result<Duration, QueryError> {
    let s = input.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        let secs: u64 = s.parse().map_err(|_| QueryError::Duration {
            input: input.to_owned(),
            reason: "number out of range".to_owned(),
        })?;
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(s).map_err(|e| QueryError::Duration {
        input: input.to_owned(),
        reason: e.to_string(),
    })
}

/// Nanoseconds in a decimal fraction of a second (`"25"` → 250 ms); digits past 9 are dropped.
fn fraction_ns(frac: &str) -> i64 {
    let mut ns = 0i64;
    let mut scale = NS_PER_S / 10;
    for digit in frac.bytes().take(9) {
        ns += i64::from(digit - b'0') * scale;
        scale /= 10;
    }
    ns
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)` (RFC 3339; `t`/`z`/space accepted).
fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(range)?;
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut rest = &s[19..];
    let mut frac_ns = 0;
    if let Some(after_dot) = rest.strip_prefix('.') {
        let digits = after_dot.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        frac_ns = fraction_ns(&after_dot[..digits]);
        rest = &after_dot[digits..];
    }
    let offset_s = match rest.as_bytes() {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let digits = [h1, h2, m1, m2];
            if !digits.iter().all(|d| d.is_ascii_digit()) {
                return None;
            }
            let d = |c: &u8| i64::from(c - b'0');
            let (h, m) = (d(h1) * 10 + d(h2), d(m1) * 10 + d(m2));
            if h > 23 || m > 59 {
                return None;
            }
            let offset = h * 3600 + m * 60;
            if *sign == b'+' {
                offset
            } else {
                -offset
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_s;
    secs.checked_mul(NS_PER_S)?.checked_add(frac_ns)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
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

    const NOW: i64 = 1_764_000_000 * NS_PER_S;

    fn t(input: &str) -> i64 {
        parse_time(input, NOW).unwrap_or_else(|e| panic!("{input}: {e}"))
    }

    #[test]
    fn relative_times_count_back_from_now() {
        assert_eq!(t("now"), NOW);
        assert_eq!(t("now-15m"), NOW - 900 * NS_PER_S);
        assert_eq!(t("now-1h"), NOW - 3600 * NS_PER_S);
        assert_eq!(t("now-7d"), NOW - 7 * 86_400 * NS_PER_S);
        assert_eq!(t(" now - 30s "), NOW - 30 * NS_PER_S);
        assert_eq!(t("now+1m"), NOW + 60 * NS_PER_S);
        assert!(parse_time("now*2", NOW).is_err());
        assert!(parse_time("now-", NOW).is_err());
        assert!(parse_time("now-5 parsecs", NOW).is_err());
    }

    #[test]
    fn unix_numbers_are_told_apart_by_magnitude() {
        assert_eq!(t("1764000000"), NOW);
        assert_eq!(t("1764000000000"), NOW);
        assert_eq!(t("1764000000000000"), NOW);
        assert_eq!(t("1764000000000000000"), NOW);
        assert_eq!(t("1764000000.5"), NOW + NS_PER_S / 2);
        assert_eq!(t("0"), 0);
        assert!(parse_time("99999999999999999999999", NOW).is_err());
        assert!(parse_time("-5", NOW).is_err());
        assert!(parse_time("", NOW).is_err());
    }

    #[test]
    fn rfc3339_with_offsets_and_fractions() {
        // 1764000000 = 2025-11-24T16:00:00Z.
        assert_eq!(t("2025-11-24T16:00:00Z"), NOW);
        assert_eq!(t("2025-11-24t16:00:00z"), NOW);
        assert_eq!(t("2025-11-24T18:30:00+02:30"), NOW);
        assert_eq!(t("2025-11-24T15:00:00-01:00"), NOW);
        assert_eq!(t("2025-11-24T16:00:00.123456789Z"), NOW + 123_456_789);
        assert_eq!(t("2025-11-24T16:00:00.1Z"), NOW + 100_000_000);
        assert_eq!(t("1970-01-01T00:00:00Z"), 0);
        assert_eq!(t("2024-02-29T00:00:00Z"), 1_709_164_800 * NS_PER_S);
        for bad in [
            "2025-11-24T16:00:00",
            "2025-13-24T16:00:00Z",
            "2025-02-30T16:00:00Z",
            "2023-02-29T16:00:00Z",
            "2025-11-24T24:00:00Z",
            "2025-11-24T16:00:00.Z",
            "2025-11-24T16:00:00+2:00",
            "2025-11-24X16:00:00Z",
            "2025-11-24T16:00:00Zjunk",
            "yesterday",
        ] {
            assert!(parse_time(bad, NOW).is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn durations_are_humane_or_seconds() {
        assert_eq!(parse_duration("60"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("").is_err());
    }
}
