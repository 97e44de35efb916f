//! The two timestamp formats of HJ 212: QN (`YYYYMMDDhhmmsszzz`) and CP's
//! `DataTime` (`YYYYMMDDhhmmss`).

use std::fmt;

/// A calendar date and time of day, as written in a packet.
///
/// No time zone is attached: the packet does not carry one, and this crate does
/// not assume one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DateTime {
    /// Year, 0–9999.
    pub year: u16,
    /// Month, 1–12.
    pub month: u8,
    /// Day of month, 1–31 (valid for the month and year).
    pub day: u8,
    /// Hour, 0–23.
    pub hour: u8,
    /// Minute, 0–59.
    pub minute: u8,
    /// Second, 0–59.
    pub second: u8,
    /// Millisecond, 0–999 (always 0 for `DataTime`).
    pub millisecond: u16,
}

impl DateTime {
    /// Parses a QN: exactly 17 digits `YYYYMMDDhhmmsszzz`, a valid date and time
    /// with milliseconds.
    pub fn parse_qn(text: &str) -> Result<DateTime, String> {
        parse(text, 17, "YYYYMMDDhhmmsszzz")
    }

    /// Parses a `DataTime`: exactly 14 digits `YYYYMMDDhhmmss`, a valid date
    /// and time.
    pub fn parse_data_time(text: &str) -> Result<DateTime, String> {
        parse(text, 14, "YYYYMMDDhhmmss")
    }

    /// The 17-digit QN form, `YYYYMMDDhhmmsszzz`.
    #[must_use]
    pub fn to_qn(&self) -> String {
        format!("{}{:03}", self.to_data_time(), self.millisecond)
    }

    /// The 14-digit `DataTime` form, `YYYYMMDDhhmmss` (milliseconds dropped).
    #[must_use]
    pub fn to_data_time(&self) -> String {
        format!(
            "{:04}{:02}{:02}{:02}{:02}{:02}",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }
}

/// ISO 8601 style, without zone: `2024-06-01T10:00:00.123`.
impl fmt::Display for DateTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}",
            self.year, self.month, self.day, self.hour, self.minute, self.second, self.millisecond
        )
    }
}

fn parse(text: &str, len: usize, pattern: &str) -> Result<DateTime, String> {
    let b = text.as_bytes();
    if b.len() != len || !b.iter().all(u8::is_ascii_digit) {
        return Err(format!("expected {len} digits {pattern}"));
    }
    // In bounds: `b` is exactly `len` (>= 14) ASCII digits.
    let num = |range: std::ops::Range<usize>| -> u16 {
        b.get(range)
            .unwrap_or_default()
            .iter()
            .fold(0u16, |acc, &d| acc * 10 + u16::from(d - b'0'))
    };
    let narrow = |v: u16| u8::try_from(v).unwrap_or(u8::MAX);
    let t = DateTime {
        year: num(0..4),
        month: narrow(num(4..6)),
        day: narrow(num(6..8)),
        hour: narrow(num(8..10)),
        minute: narrow(num(10..12)),
        second: narrow(num(12..14)),
        millisecond: if len > 14 { num(14..17) } else { 0 },
    };
    if !(1..=12).contains(&t.month) {
        return Err(format!("month {:02} is not 01-12", t.month));
    }
    let last_day = days_in_month(t.year, t.month);
    if t.day < 1 || t.day > last_day {
        return Err(format!(
            "day {:02} does not exist in {:04}-{:02} (1-{last_day})",
            t.day, t.year, t.month
        ));
    }
    if t.hour > 23 {
        return Err(format!("hour {:02} is not 00-23", t.hour));
    }
    if t.minute > 59 {
        return Err(format!("minute {:02} is not 00-59", t.minute));
    }
    if t.second > 59 {
        return Err(format!("second {:02} is not 00-59", t.second));
    }
    Ok(t)
}

fn days_in_month(year: u16, month: u8) -> u8 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

#[cfg(test)]
mod tests {
    use super::DateTime;

    #[test]
    fn qn_round_trips() {
        let t = DateTime::parse_qn("20240601100000123").unwrap();
        assert_eq!((t.year, t.month, t.day), (2024, 6, 1));
        assert_eq!((t.hour, t.minute, t.second, t.millisecond), (10, 0, 0, 123));
        assert_eq!(t.to_qn(), "20240601100000123");
        assert_eq!(t.to_string(), "2024-06-01T10:00:00.123");
    }

    #[test]
    fn leap_years() {
        assert!(DateTime::parse_data_time("20240229000000").is_ok());
        assert!(DateTime::parse_data_time("20000229000000").is_ok());
        assert!(DateTime::parse_data_time("20230229000000").is_err());
        assert!(DateTime::parse_data_time("19000229000000").is_err());
        assert!(DateTime::parse_data_time("20240431000000").is_err());
        assert!(DateTime::parse_data_time("20241231235959").is_ok());
    }

    #[test]
    fn rejects_bad_shapes_and_ranges() {
        for bad in [
            "",
            "2024060110000012",
            "202406011000001234",
            "2024060110000012x",
            "+0240601100000123",
            "20241301100000123",
            "20240001100000123",
            "20240600100000123",
            "20240601240000123",
            "20240601106000123",
            "20240601100060123",
            "２0240601100000123",
        ] {
            assert!(DateTime::parse_qn(bad).is_err(), "{bad:?}");
        }
    }
}
