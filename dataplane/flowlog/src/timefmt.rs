//! RFC 3339 timestamps for flow logs, without a calendar crate: the civil-date conversion is
//! Howard Hinnant's days-from-civil algorithm (proleptic Gregorian, valid for any u64 time).

use natfw_engine::time::Timestamp;

const NANOS_PER_SEC: u64 = 1_000_000_000;
const SECS_PER_DAY: u64 = 86_400;

/// `(year, month 1..=12, day 1..=31)` of the `days`-th day after 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    // Shift the epoch to 0000-03-01 so that leap days fall at the end of a 400-year era.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // day of era, 0..=146096
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // 0..=399
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of (March-based) year, 0..=365
    let mp = (5 * doy + 2) / 153; // March = 0
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Days since 1970-01-01 of a civil date (inverse of [`civil_from_days`]).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Formats `ts` as RFC 3339 UTC with milliseconds: `2026-11-28T17:11:22.123Z`.
pub fn format_rfc3339_millis(ts: Timestamp) -> String {
    let ns = ts.as_nanos();
    let secs = ns / NANOS_PER_SEC;
    let millis = (ns % NANOS_PER_SEC) / 1_000_000;
    let (y, mo, d) = civil_from_days((secs / SECS_PER_DAY) as i64);
    let sod = secs % SECS_PER_DAY;
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        sod / 3600,
        (sod / 60) % 60,
        sod % 60
    )
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Parses an RFC 3339 time as written in flow logs and as operators type it: `2026-11-28`,
/// `2026-11-28T17:11`, `2026-11-28 17:11:22`, `2026-11-28T17:11:22.123Z`,
/// `2026-11-28T18:11:22+01:00`. A missing zone means UTC. `None` if malformed or before 1970.
pub fn parse_rfc3339(s: &str) -> Option<Timestamp> {
    let b = s.trim().as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<u64> {
        let d = b.get(r)?;
        if d.is_empty() || !d.iter().all(u8::is_ascii_digit) {
            return None;
        }
        d.iter().try_fold(0u64, |acc, c| {
            acc.checked_mul(10)?.checked_add(u64::from(c - b'0'))
        })
    };
    let year = num(0..4)? as i64;
    if b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') {
        return None;
    }
    let month = num(5..7)? as u32;
    let day = num(8..10)? as u32;
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    let (mut h, mut mi, mut sec, mut nanos) = (0u64, 0u64, 0u64, 0u64);
    let mut i = 10;
    if matches!(b.get(10), Some(b'T' | b't' | b' ')) {
        h = num(11..13)?;
        if b.get(13) != Some(&b':') {
            return None;
        }
        mi = num(14..16)?;
        i = 16;
        if b.get(16) == Some(&b':') {
            sec = num(17..19)?;
            i = 19;
            if b.get(19) == Some(&b'.') {
                let start = 20;
                let mut end = start;
                while b.get(end).is_some_and(u8::is_ascii_digit) {
                    end += 1;
                }
                if end == start {
                    return None;
                }
                // Keep nanosecond precision, ignore digits beyond it.
                let digits = &b[start..end.min(start + 9)];
                let mut frac = digits
                    .iter()
                    .fold(0u64, |a, c| a * 10 + u64::from(c - b'0'));
                for _ in digits.len()..9 {
                    frac *= 10;
                }
                nanos = frac;
                i = end;
            }
        }
        if h > 23 || mi > 59 || sec > 60 {
            return None;
        }
    }
    let offset_secs: i64 = match b.get(i) {
        None => 0,
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(&sign @ (b'+' | b'-')) if i + 6 == b.len() && b.get(i + 3) == Some(&b':') => {
            let oh = num(i + 1..i + 3)? as i64;
            let om = num(i + 4..i + 6)? as i64;
            let o = oh * 3600 + om * 60;
            if sign == b'+' {
                o
            } else {
                -o
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * SECS_PER_DAY as i64 + (h * 3600 + mi * 60 + sec) as i64 - offset_secs;
    let secs = u64::try_from(secs).ok()?;
    Some(Timestamp(
        secs.checked_mul(NANOS_PER_SEC)?.checked_add(nanos)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_values() {
        // Values cross-checked with `date -u -d @SECS +%FT%T`.
        let cases = [
            (0u64, "1970-01-01T00:00:00.000Z"),
            (951_782_400_000, "2000-02-29T00:00:00.000Z"),
            (1_709_251_199_999, "2024-02-29T23:59:59.999Z"),
            (1_798_492_282_123, "2026-12-28T21:11:22.123Z"),
            (1_795_886_482_123, "2026-11-28T17:21:22.123Z"),
            (4_102_444_800_000, "2100-01-01T00:00:00.000Z"),
            (16_730_323_199_000, "2500-02-28T23:59:59.000Z"),
        ];
        for (ms, want) in cases {
            assert_eq!(
                format_rfc3339_millis(Timestamp::from_millis(ms)),
                want,
                "{ms}"
            );
            assert_eq!(
                parse_rfc3339(want),
                Some(Timestamp::from_millis(ms)),
                "{want}"
            );
        }
    }

    #[test]
    fn millis_truncate_not_round() {
        let ts = Timestamp(1_000_999_999); // 1.000999999 s
        assert_eq!(format_rfc3339_millis(ts), "1970-01-01T00:00:01.000Z");
    }

    #[test]
    fn civil_round_trip_every_day_for_centuries() {
        for days in -1_000..200_000i64 {
            let (y, m, d) = civil_from_days(days);
            assert!((1..=12).contains(&m) && d >= 1 && d <= days_in_month(y, m));
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    #[test]
    fn parses_operator_forms() {
        let base = parse_rfc3339("2026-11-28T17:11:00Z").unwrap();
        assert_eq!(parse_rfc3339("2026-11-28T17:11"), Some(base));
        assert_eq!(parse_rfc3339("2026-11-28 17:11:00"), Some(base));
        assert_eq!(parse_rfc3339("2026-11-28T18:11:00+01:00"), Some(base));
        assert_eq!(parse_rfc3339("2026-11-28T16:41:00-00:30"), Some(base));
        assert_eq!(
            parse_rfc3339("2026-11-28T17:11:00.5Z"),
            Some(base.add(std::time::Duration::from_millis(500)))
        );
        assert_eq!(
            parse_rfc3339("2026-11-28"),
            Some(Timestamp::from_secs(
                days_from_civil(2026, 11, 28) as u64 * 86_400
            ))
        );
    }

    #[test]
    fn rejects_malformed() {
        for s in [
            "",
            "2026",
            "2026-13-01",
            "2026-02-29",
            "2026-11-28T25:00",
            "2026-11-28T17:11:00.Z",
            "2026-11-28T17:11:00Zjunk",
            "2026-11-28T17:11:00+0100",
            "1969-12-31T23:59:59Z",
            "２026-11-28",
        ] {
            assert_eq!(parse_rfc3339(s), None, "{s:?}");
        }
    }
}
