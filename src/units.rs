//! Sizes, ages and dates as people write and read them: `512M`, `30d`,
//! `4.0 MiB`, `2026-11-24 21:20:00`. Pure functions; the CLI's argument
//! parsers and the library's messages use the same ones.

use std::time::Duration;

/// The largest `--older-than` taken: 100 years.
pub const MAX_AGE_SECS: u64 = 100 * 365 * 86400;

/// A size or age that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    #[error("{0:?} is not a size")]
    BadSize(String),
    #[error("--older-than {0:?} is not an age")]
    BadAge(String),
    #[error("--older-than {0:?} is too large: genboot takes ages up to 100 years (36500d)")]
    AgeTooLarge(String),
}

impl crate::hint::Hint for UnitError {
    fn hint(&self) -> Option<String> {
        Some(match self {
            UnitError::BadSize(_) => "write a number and a unit, e.g. 512M or 2G",
            UnitError::BadAge(_) => "write a number and a unit: 90s, 30m, 12h, 30d, 2w",
            UnitError::AgeTooLarge(_) => "give an age such as 30d or 12w; leave --older-than out to delete no generation by age",
        }.into())
    }
}

/// Human-readable bytes: `812 bytes`, `4.0 KiB`, `255.9 MiB`.
pub fn human(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
    } else if bytes >= 1 << 10 {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    } else {
        format!("{bytes} bytes")
    }
}

/// Parse `512M`, `1G`, `300MiB`, `4096` (bytes).
pub fn parse_size(s: &str) -> Result<u64, UnitError> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let bad = || UnitError::BadSize(s.to_string());
    let n: u64 = n.parse().map_err(|_| bad())?;
    let mult = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KIB" => 1 << 10,
        "M" | "MIB" => 1 << 20,
        "G" | "GIB" => 1 << 30,
        _ => return Err(bad()),
    };
    n.checked_mul(mult).ok_or_else(bad)
}

/// `90s`, `30m`, `12h`, `30d`, `2w`; at most [`MAX_AGE_SECS`] (a number
/// that does not fit is refused, never wrapped).
pub fn parse_age(s: &str) -> Result<Duration, UnitError> {
    let bad = || UnitError::BadAge(s.to_string());
    let too_large = || UnitError::AgeTooLarge(s.to_string());
    let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (n, unit) = s.split_at(split);
    if n.is_empty() {
        return Err(bad());
    }
    let unit_secs: u64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        "w" => 7 * 86400,
        _ => return Err(bad()),
    };
    // Only digits are left, so a parse error is an overflow.
    let n: u64 = n.parse().map_err(|_| too_large())?;
    let secs = n.checked_mul(unit_secs).ok_or_else(too_large)?;
    if secs > MAX_AGE_SECS {
        return Err(too_large());
    }
    Ok(Duration::from_secs(secs))
}

/// `YYYY-MM-DD HH:MM:SS` (UTC) from Unix seconds.
pub fn format_date(ts: u64) -> String {
    let days = (ts / 86400) as i64;
    let secs = ts % 86400;
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Seconds since the epoch of `t` (0 before it).
pub fn unix_secs(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("512M").unwrap(), 512 << 20);
        assert_eq!(parse_size("1G").unwrap(), 1 << 30);
        assert_eq!(parse_size("300MiB").unwrap(), 300 << 20);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("1T").is_err());
        assert!(parse_size("big").is_err());
    }

    #[test]
    fn ages_parse() {
        assert_eq!(parse_age("30d").unwrap(), Duration::from_secs(30 * 86400));
        assert_eq!(parse_age("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(
            parse_age("36500d").unwrap(),
            Duration::from_secs(MAX_AGE_SECS)
        );
        assert!(parse_age("30").is_err());
        assert!(parse_age("d").is_err());
        assert!(parse_age("3y").is_err());
        assert!(parse_age("-3d").is_err());
    }

    #[test]
    fn ages_that_overflow_are_refused_not_wrapped() {
        // 30500568904944 weeks in seconds wraps u64 to about 10 days.
        for s in [
            "30500568904944w",
            "18446744073709551616s",
            "99999999999999999999999d",
            "36501d",
        ] {
            let e = parse_age(s).unwrap_err();
            assert!(matches!(e, UnitError::AgeTooLarge(_)), "{s}: {e}");
            assert!(e.to_string().contains("too large"), "{e}");
        }
    }

    #[test]
    fn dates_format_in_utc() {
        assert_eq!(format_date(0), "1970-01-01 00:00:00");
        assert_eq!(format_date(1_795_555_200), "2026-11-24 21:20:00");
    }

    #[test]
    fn sizes_read_as_bytes_kib_mib() {
        assert_eq!(human(812), "812 bytes");
        assert_eq!(human(4096), "4.0 KiB");
        assert_eq!(human(3 << 20), "3.0 MiB");
    }
}
