//! Which days are working days in mainland China, and where a period counted in days ends.
//!
//! The calendar is built from the State Council General Office's yearly holiday schedules
//! (国务院办公厅关于YYYY年部分节假日安排的通知), one plain-text file per year under
//! `data/holidays/` (format in `data/README.md`). A day of a covered year is a working day
//! when it is an adjusted working day (调休上班), or a Monday to Friday outside every holiday
//! range; every other day is a statutory rest day (法定休假日).
//!
//! [`HolidayCalendar::last_day`] applies 民法典 arts 201–203: the day of the starting event is
//! not counted; the period ends at 24:00 of its last day; a last day that is a statutory rest
//! day gives way to the first working day after it. With [`DayCounting::WorkingDays`] only
//! working days are counted instead.
//!
//! Promise: an answer is either exact for the loaded schedules or [`NotCovered`] naming the
//! first date no file covers; the calendar never guesses that an unknown day is ordinary.
//! Parsing is strict: a file that contradicts itself or another file is refused whole, with
//! the file and line.
//!
//! Limits: only nationwide holidays for all citizens are modelled. Days off for part of the
//! population (妇女节, 青年节, …) and holidays set by ethnic autonomous areas are not, nor is
//! the time of day at which business stops (art 203 ¶2); callers turn the last day into
//! 24:00 local time themselves.

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::path::Path;

use chrono::{Datelike, Days, NaiveDate, Weekday};
use serde::{Deserialize, Serialize};

/// The schedules compiled into the binary. A year added to `data/holidays/` is listed here too;
/// a test fails while the two disagree.
const BUILT_IN: &[(&str, &str)] = &[
    (
        "data/holidays/2025.txt",
        include_str!("../../data/holidays/2025.txt"),
    ),
    (
        "data/holidays/2026.txt",
        include_str!("../../data/holidays/2026.txt"),
    ),
];

/// The working days of every year a loaded schedule covers.
#[derive(Clone, Debug)]
pub struct HolidayCalendar {
    years: BTreeMap<i32, YearSchedule>,
}

/// A schedule file that could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CalendarError {
    /// A line is malformed or contradicts another line of the same file.
    #[error("{file}:{line}: {problem}")]
    Line {
        file: String,
        line: usize,
        problem: String,
    },
    /// Two files cover the same year: `file:line` is the later one's `year` line.
    #[error("{file}:{line}: year {year} is already covered by {first_file}:{first_line}")]
    YearCoveredTwice {
        year: i32,
        file: String,
        line: usize,
        first_file: String,
        first_line: usize,
    },
    /// A file or directory could not be read at all.
    #[error("{file}: {problem}")]
    Unreadable { file: String, problem: String },
}

/// A date no loaded schedule covers: whether it is a working day is unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no holiday schedule covers {date}")]
pub struct NotCovered {
    pub date: NaiveDate,
}

/// What a clock's "N days" counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DayCounting {
    /// Every day counts; only a last day that is a statutory rest day moves (民法典 art 203).
    #[default]
    CalendarDays,
    /// Only working days count.
    WorkingDays,
}

#[derive(Clone, Debug)]
struct YearSchedule {
    file: String,
    /// The line of the file's `year` directive, for naming it when another file repeats the year.
    line: usize,
    source: String,
    holidays: Vec<Holiday>,
    /// Each adjusted working day with the holiday it makes up for.
    working_days: BTreeMap<NaiveDate, String>,
}

#[derive(Clone, Debug)]
struct Holiday {
    first: NaiveDate,
    last: NaiveDate,
    name: String,
}

impl Holiday {
    fn contains(&self, date: NaiveDate) -> bool {
        self.first <= date && date <= self.last
    }
}

impl YearSchedule {
    fn holiday(&self, date: NaiveDate) -> Option<&Holiday> {
        self.holidays.iter().find(|holiday| holiday.contains(date))
    }

    fn is_working_day(&self, date: NaiveDate) -> bool {
        if self.working_days.contains_key(&date) {
            return true;
        }
        self.holiday(date).is_none() && !is_weekend(date)
    }
}

impl HolidayCalendar {
    /// The files shipped in `data/holidays/` (compiled in with `include_str!`).
    pub fn built_in() -> Result<HolidayCalendar, CalendarError> {
        HolidayCalendar::from_files(BUILT_IN)
    }

    /// The built-in files plus every `*.txt` file in `dir` (an operator adding a year); a year
    /// covered by two files is an error naming both. Files are read in name order; other
    /// files and subdirectories are ignored.
    pub fn with_dir(dir: &Path) -> Result<HolidayCalendar, CalendarError> {
        let unreadable = |path: &Path, error: std::io::Error| CalendarError::Unreadable {
            file: path.display().to_string(),
            problem: error.to_string(),
        };
        let mut paths = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|error| unreadable(dir, error))? {
            let path = entry.map_err(|error| unreadable(dir, error))?.path();
            if path.extension().is_some_and(|extension| extension == "txt") && path.is_file() {
                paths.push(path);
            }
        }
        paths.sort();
        let mut texts = Vec::with_capacity(paths.len());
        for path in paths {
            let text = std::fs::read_to_string(&path).map_err(|error| unreadable(&path, error))?;
            texts.push((path.display().to_string(), text));
        }
        let mut files = BUILT_IN.to_vec();
        files.extend(
            texts
                .iter()
                .map(|(name, text)| (name.as_str(), text.as_str())),
        );
        HolidayCalendar::from_files(&files)
    }

    /// From (file name, text) pairs; what the two above use, and what tests use.
    pub fn from_files(files: &[(&str, &str)]) -> Result<HolidayCalendar, CalendarError> {
        let mut years = BTreeMap::new();
        for (file, text) in files {
            let (year, schedule) = parse_file(file, text)?;
            match years.entry(year) {
                Entry::Occupied(first) => {
                    let first: &YearSchedule = first.get();
                    return Err(CalendarError::YearCoveredTwice {
                        year,
                        file: schedule.file,
                        line: schedule.line,
                        first_file: first.file.clone(),
                        first_line: first.line,
                    });
                }
                Entry::Vacant(slot) => {
                    slot.insert(schedule);
                }
            }
        }
        Ok(HolidayCalendar { years })
    }

    /// The years some file covers, in order.
    pub fn covered_years(&self) -> Vec<i32> {
        self.years.keys().copied().collect()
    }

    /// The `source` line of the file covering `year`: the notice the schedule was taken from.
    pub fn source(&self, year: i32) -> Option<&str> {
        self.years
            .get(&year)
            .map(|schedule| schedule.source.as_str())
    }

    /// Whether `date` is a working day: Err when no file covers its year.
    pub fn is_working_day(&self, date: NaiveDate) -> Result<bool, NotCovered> {
        self.years
            .get(&date.year())
            .map(|schedule| schedule.is_working_day(date))
            .ok_or(NotCovered { date })
    }

    /// The last day of a period of `days` days that starts with an event on `start` (local
    /// date), under 民法典 arts 201–203; the period ends at 24:00 of that day.
    ///
    /// With [`DayCounting::CalendarDays`] the last day is the `days`-th day after `start`,
    /// counted through holidays; if it is a statutory rest day it moves to the first working
    /// day after it. Only the days that are looked at need a schedule: that last day and any
    /// day the move passes through, not `start` nor the days counted over. With
    /// [`DayCounting::WorkingDays`] it is the `days`-th working day after `start`, so every day
    /// after `start` up to it needs a schedule.
    ///
    /// Err names the first date looked at that no file covers.
    ///
    /// # Panics
    ///
    /// If `days` is 0: a period counts at least one day, and the settings that give the length
    /// are checked before a calendar is asked.
    pub fn last_day(
        &self,
        start: NaiveDate,
        days: u32,
        counting: DayCounting,
    ) -> Result<NaiveDate, NotCovered> {
        assert!(days >= 1, "a period of days counts at least one day");
        // Past chrono's last date no schedule can exist, so it stands for "not covered".
        let beyond = NotCovered {
            date: NaiveDate::MAX,
        };
        match counting {
            DayCounting::CalendarDays => {
                let mut day = start
                    .checked_add_days(Days::new(days.into()))
                    .ok_or(beyond)?;
                while !self.is_working_day(day)? {
                    day = day.succ_opt().ok_or(beyond)?;
                }
                Ok(day)
            }
            DayCounting::WorkingDays => {
                let mut day = start;
                let mut left = days;
                while left > 0 {
                    day = day.succ_opt().ok_or(beyond)?;
                    if self.is_working_day(day)? {
                        left -= 1;
                    }
                }
                Ok(day)
            }
        }
    }

    /// The holiday name of `date`, if it is one (for explaining a moved deadline).
    pub fn holiday_name(&self, date: NaiveDate) -> Option<&str> {
        let schedule = self.years.get(&date.year())?;
        schedule.holiday(date).map(|holiday| holiday.name.as_str())
    }
}

fn is_weekend(date: NaiveDate) -> bool {
    matches!(date.weekday(), Weekday::Sat | Weekday::Sun)
}

/// One file's year and schedule, or the first line that is wrong.
fn parse_file(file: &str, text: &str) -> Result<(i32, YearSchedule), CalendarError> {
    let error = |line: usize, problem: String| CalendarError::Line {
        file: file.to_owned(),
        line,
        problem,
    };
    let mut year: Option<(i32, usize)> = None;
    let mut source: Option<(String, usize)> = None;
    let mut holidays: Vec<(Holiday, usize)> = Vec::new();
    let mut working_days: Vec<(NaiveDate, String, usize)> = Vec::new();
    let mut lines = 0;

    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        lines = line;
        let content = raw.split('#').next().unwrap_or_default().trim();
        if content.is_empty() {
            continue;
        }
        let (directive, rest) = split_word(content);
        if directive == "year" {
            if let Some((_, first)) = year {
                return Err(error(
                    line,
                    format!("a second `year` line (the first is line {first})"),
                ));
            }
            let four_digits = rest.len() == 4 && rest.bytes().all(|byte| byte.is_ascii_digit());
            let parsed = rest
                .parse::<i32>()
                .ok()
                .filter(|_| four_digits)
                .ok_or_else(|| error(line, format!("`{rest}` is not a year (YYYY)")))?;
            year = Some((parsed, line));
            continue;
        }
        // Every date is checked against the year as its line is read, so the year comes first.
        let Some((this_year, _)) = year else {
            return Err(error(line, format!("`{directive}` before the `year` line")));
        };
        let read = match directive {
            "source" => match &source {
                Some((_, first)) => Err(format!(
                    "a second `source` line (the first is line {first})"
                )),
                None if rest.is_empty() => Err("`source` names no notice".to_owned()),
                None => {
                    source = Some((rest.to_owned(), line));
                    Ok(())
                }
            },
            "holiday" => {
                parse_holiday(rest, this_year).map(|holiday| holidays.push((holiday, line)))
            }
            "workday" => parse_workday(rest, this_year)
                .map(|(date, name)| working_days.push((date, name, line))),
            other => Err(format!(
                "unknown directive `{other}` (expected year, source, holiday or workday)"
            )),
        };
        read.map_err(|problem| error(line, problem))?;
    }

    let Some((year, year_line)) = year else {
        return Err(error(lines.max(1), "no `year` line".to_owned()));
    };
    let Some((source, _)) = source else {
        return Err(error(
            year_line,
            format!("year {year} has no `source` line"),
        ));
    };
    if holidays.is_empty() {
        return Err(error(year_line, format!("year {year} lists no holiday")));
    }
    for (later, (holiday, line)) in holidays.iter().enumerate() {
        if let Some((earlier, earlier_line)) = holidays[..later]
            .iter()
            .find(|(earlier, _)| earlier.first <= holiday.last && holiday.first <= earlier.last)
        {
            return Err(error(
                *line,
                format!(
                    "{} {}..{} overlaps {} {}..{} (line {earlier_line})",
                    holiday.name,
                    holiday.first,
                    holiday.last,
                    earlier.name,
                    earlier.first,
                    earlier.last
                ),
            ));
        }
    }
    let mut by_date = BTreeMap::new();
    for (date, name, line) in working_days {
        if let Some((holiday, holiday_line)) =
            holidays.iter().find(|(holiday, _)| holiday.contains(date))
        {
            return Err(error(
                line,
                format!(
                    "{date} is both an adjusted working day and a day of {} (line {holiday_line})",
                    holiday.name
                ),
            ));
        }
        if !holidays.iter().any(|(holiday, _)| holiday.name == name) {
            return Err(error(
                line,
                format!("workday {date} makes up for `{name}`, which is no holiday of this file"),
            ));
        }
        match by_date.entry(date) {
            Entry::Occupied(first) => {
                let (_, first_line): &(String, usize) = first.get();
                return Err(error(
                    line,
                    format!("workday {date} is listed twice (first on line {first_line})"),
                ));
            }
            Entry::Vacant(slot) => {
                slot.insert((name, line));
            }
        }
    }

    let mut holidays: Vec<Holiday> = holidays.into_iter().map(|(holiday, _)| holiday).collect();
    holidays.sort_by_key(|holiday| holiday.first);
    let schedule = YearSchedule {
        file: file.to_owned(),
        line: year_line,
        source,
        holidays,
        working_days: by_date
            .into_iter()
            .map(|(date, (name, _))| (date, name))
            .collect(),
    };
    Ok((year, schedule))
}

/// The rest of a `holiday` line: `FIRST..LAST` (or one date), `共N天`, the name.
fn parse_holiday(rest: &str, year: i32) -> Result<Holiday, String> {
    let (range, rest) = split_word(rest);
    let (count, name) = split_word(rest);
    let (first, last) = range.split_once("..").unwrap_or((range, range));
    let first = in_year(parse_date(first)?, year)?;
    let last = in_year(parse_date(last)?, year)?;
    if last < first {
        return Err(format!("{first}..{last} ends before it starts"));
    }
    // The notice states each range's length; repeating it catches a mistyped end date.
    let stated = count
        .strip_prefix('共')
        .and_then(|count| count.strip_suffix('天'))
        .filter(|count| !count.is_empty() && count.bytes().all(|byte| byte.is_ascii_digit()))
        .and_then(|count| count.parse::<i64>().ok())
        .ok_or_else(|| format!("expected the notice's day count as `共N天`, found `{count}`"))?;
    let days = (last - first).num_days() + 1;
    if days != stated {
        return Err(format!(
            "{first}..{last} is {days} days, the line says 共{stated}天"
        ));
    }
    if name.is_empty() {
        return Err(format!("holiday {first}..{last} has no name"));
    }
    Ok(Holiday {
        first,
        last,
        name: name.to_owned(),
    })
}

/// The rest of a `workday` line: the date and the holiday it makes up for.
fn parse_workday(rest: &str, year: i32) -> Result<(NaiveDate, String), String> {
    let (date, name) = split_word(rest);
    let date = in_year(parse_date(date)?, year)?;
    if !is_weekend(date) {
        let weekday = date.weekday();
        return Err(format!(
            "{date} is a {weekday}, a working day anyway; \
             only a weekend day can be an adjusted working day"
        ));
    }
    if name.is_empty() {
        return Err(format!("workday {date} names no holiday it makes up for"));
    }
    Ok((date, name.to_owned()))
}

fn in_year(date: NaiveDate, year: i32) -> Result<NaiveDate, String> {
    if date.year() == year {
        Ok(date)
    } else {
        Err(format!("{date} is outside year {year}"))
    }
}

/// The first whitespace-separated word of `text` and the trimmed rest.
fn split_word(text: &str) -> (&str, &str) {
    match text.split_once(char::is_whitespace) {
        Some((word, rest)) => (word, rest.trim()),
        None => (text, ""),
    }
}

/// A date written exactly `YYYY-MM-DD`.
fn parse_date(text: &str) -> Result<NaiveDate, String> {
    let number = |from: usize, to: usize| -> Option<u32> {
        text.get(from..to)
            .filter(|digits| digits.bytes().all(|byte| byte.is_ascii_digit()))?
            .parse()
            .ok()
    };
    let shaped = text.len() == 10 && text.as_bytes()[4] == b'-' && text.as_bytes()[7] == b'-';
    shaped
        .then(|| {
            let year = i32::try_from(number(0, 4)?).ok()?;
            NaiveDate::from_ymd_opt(year, number(5, 7)?, number(8, 10)?)
        })
        .flatten()
        .ok_or_else(|| format!("`{text}` is not a date (YYYY-MM-DD)"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use DayCounting::{CalendarDays, WorkingDays};

    fn date(text: &str) -> NaiveDate {
        parse_date(text).unwrap()
    }

    fn shipped() -> HolidayCalendar {
        HolidayCalendar::built_in().expect("the shipped schedules load")
    }

    #[test]
    fn the_calendar_can_be_shared_between_threads() {
        fn shareable<T: Clone + std::fmt::Debug + Send + Sync>() {}
        shareable::<HolidayCalendar>();
    }

    #[test]
    fn calendar_days_end_on_the_nth_day_or_the_first_working_day_after_it() {
        let calendar = shipped();
        // (case, start, days, last day)
        let cases = [
            (
                "an ordinary Tuesday, 3 days end on the Friday",
                "2026-03-10",
                3,
                "2026-03-13",
            ),
            (
                "a last day on a Saturday moves to the Monday",
                "2026-03-11",
                3,
                "2026-03-16",
            ),
            (
                "a last day on a Sunday moves to the Monday",
                "2026-03-12",
                3,
                "2026-03-16",
            ),
            (
                "a last day inside 春节 2026 moves to the day after it",
                "2026-02-16",
                3,
                "2026-02-24",
            ),
            (
                "a last day on the first day of 春节 2026 moves past all of it",
                "2026-02-12",
                3,
                "2026-02-24",
            ),
            (
                "a last day on the adjusted working Saturday 2026-02-28 stays",
                "2026-02-25",
                3,
                "2026-02-28",
            ),
            (
                "a last day on the adjusted working Saturday 2026-02-14 stays",
                "2026-02-11",
                3,
                "2026-02-14",
            ),
            (
                "the Sunday after a working Saturday is still a rest day",
                "2026-02-26",
                3,
                "2026-03-02",
            ),
            (
                "a last day on the adjusted working Saturday 2026-05-09 stays",
                "2026-05-08",
                1,
                "2026-05-09",
            ),
            (
                "a last day on the adjusted working Saturday 2025-10-11 stays",
                "2025-10-08",
                3,
                "2025-10-11",
            ),
            (
                "a last day on the adjusted working Sunday 2025-01-26 stays",
                "2025-01-23",
                3,
                "2025-01-26",
            ),
            (
                "a start on 元旦 2026 ends on the adjusted working Sunday",
                "2026-01-01",
                3,
                "2026-01-04",
            ),
            (
                "a start on 国庆节 2026 counts through it and moves past it",
                "2026-10-01",
                3,
                "2026-10-08",
            ),
            (
                "a start late in 国庆节 2026 ends on the first day after it",
                "2026-10-05",
                3,
                "2026-10-08",
            ),
            (
                "a start on a holiday ending on a working day does not move",
                "2025-10-06",
                5,
                "2025-10-11",
            ),
            (
                "a period across the new year ends on 2026-01-04, a working Sunday",
                "2025-12-29",
                5,
                "2026-01-04",
            ),
            (
                "a start in an uncovered year needs only the last day covered",
                "2024-12-30",
                3,
                "2025-01-02",
            ),
            (
                "a last day on 2025-01-01 moves to 2025-01-02",
                "2024-12-29",
                3,
                "2025-01-02",
            ),
            (
                "a one-day period ending on a plain Friday",
                "2026-03-12",
                1,
                "2026-03-13",
            ),
        ];
        for (case, start, days, expected) in cases {
            assert_eq!(
                calendar.last_day(date(start), days, CalendarDays),
                Ok(date(expected)),
                "{case}"
            );
        }
    }

    #[test]
    fn working_days_count_only_working_days_after_the_start() {
        let calendar = shipped();
        // (case, start, days, last day)
        let cases = [
            (
                "3 working days from an ordinary Tuesday",
                "2026-03-10",
                3,
                "2026-03-13",
            ),
            (
                "3 working days from a Thursday skip the weekend",
                "2026-03-12",
                3,
                "2026-03-17",
            ),
            (
                "the start day is not counted even when it is a working day",
                "2026-03-13",
                1,
                "2026-03-16",
            ),
            (
                "across 春节 2026, counting the working Saturday before it",
                "2026-02-12",
                3,
                "2026-02-24",
            ),
            (
                "across 春节 2026, counting the working Saturday after it",
                "2026-02-23",
                5,
                "2026-02-28",
            ),
            (
                "across 春节 2025 and the working Sunday before it",
                "2025-01-24",
                3,
                "2025-02-05",
            ),
            (
                "across the working Sunday 2026-09-20 before 国庆节",
                "2026-09-18",
                3,
                "2026-09-22",
            ),
            (
                "across 国庆节 2025 up to its working Saturday",
                "2025-09-30",
                3,
                "2025-10-11",
            ),
            (
                "a start on a holiday counts from the first working day after it",
                "2026-10-03",
                3,
                "2026-10-10",
            ),
            (
                "across the new year and its working Sunday",
                "2025-12-30",
                3,
                "2026-01-05",
            ),
            (
                "ten working days across 劳动节 2026 and its working Saturday",
                "2026-04-28",
                10,
                "2026-05-14",
            ),
        ];
        for (case, start, days, expected) in cases {
            assert_eq!(
                calendar.last_day(date(start), days, WorkingDays),
                Ok(date(expected)),
                "{case}"
            );
        }
    }

    #[test]
    fn a_period_needing_an_uncovered_day_names_that_day() {
        let calendar = shipped();
        // A schedule whose year ends on a holiday, so that moving the last day leaves it.
        let ends_on_a_holiday = HolidayCalendar::from_files(&[(
            "2030.txt",
            "year 2030\nsource test\nholiday 2030-12-30..2030-12-31 共2天 测试\n",
        )])
        .unwrap();
        // (case, calendar, start, days, counting, the date reported)
        let cases = [
            (
                "a period wholly in 2027",
                &calendar,
                "2027-03-01",
                3,
                CalendarDays,
                "2027-03-04",
            ),
            (
                "a period from 2026 ending in 2027",
                &calendar,
                "2026-12-30",
                3,
                CalendarDays,
                "2027-01-02",
            ),
            (
                "a period wholly before 2025",
                &calendar,
                "2024-12-20",
                3,
                CalendarDays,
                "2024-12-23",
            ),
            (
                "working days running into 2027",
                &calendar,
                "2026-12-30",
                3,
                WorkingDays,
                "2027-01-01",
            ),
            (
                "working days starting in 2027",
                &calendar,
                "2027-01-04",
                1,
                WorkingDays,
                "2027-01-05",
            ),
            (
                "a move running out of the covered year",
                &ends_on_a_holiday,
                "2030-12-28",
                3,
                CalendarDays,
                "2031-01-01",
            ),
        ];
        for (case, calendar, start, days, counting, uncovered) in cases {
            assert_eq!(
                calendar.last_day(date(start), days, counting),
                Err(NotCovered {
                    date: date(uncovered)
                }),
                "{case}"
            );
        }
        assert_eq!(
            NotCovered {
                date: date("2027-01-04")
            }
            .to_string(),
            "no holiday schedule covers 2027-01-04"
        );
    }

    #[test]
    #[should_panic(expected = "at least one day")]
    fn a_period_of_no_days_is_a_programming_error() {
        let _ = shipped().last_day(date("2026-03-10"), 0, CalendarDays);
    }

    #[test]
    fn working_days_follow_the_weekend_the_holidays_and_the_adjusted_days() {
        let calendar = shipped();
        // (case, date, working day)
        let cases = [
            ("a plain Wednesday", "2026-03-11", true),
            ("a plain Saturday", "2026-03-14", false),
            ("a plain Sunday", "2026-03-15", false),
            ("a weekday inside 春节", "2026-02-17", false),
            ("a weekend day inside 春节", "2026-02-21", false),
            ("an adjusted working Saturday", "2026-02-28", true),
            ("an adjusted working Sunday", "2025-09-28", true),
            ("元旦 2025, a Wednesday", "2025-01-01", false),
            ("the day after 元旦 2025", "2025-01-02", true),
        ];
        for (case, day, working) in cases {
            assert_eq!(calendar.is_working_day(date(day)), Ok(working), "{case}");
        }
        assert_eq!(
            calendar.is_working_day(date("2027-01-04")),
            Err(NotCovered {
                date: date("2027-01-04")
            }),
            "a date of 2027, for which no schedule is published"
        );
    }

    #[test]
    fn holiday_names_explain_a_moved_day() {
        let calendar = shipped();
        assert_eq!(calendar.holiday_name(date("2026-02-19")), Some("春节"));
        assert_eq!(
            calendar.holiday_name(date("2025-10-06")),
            Some("国庆节、中秋节")
        );
        assert_eq!(
            calendar.holiday_name(date("2026-02-14")),
            None,
            "a working Saturday"
        );
        assert_eq!(
            calendar.holiday_name(date("2026-03-14")),
            None,
            "a plain Saturday"
        );
        assert_eq!(
            calendar.holiday_name(date("2027-01-01")),
            None,
            "an uncovered year"
        );
    }

    #[test]
    fn shipped_schedules_match_their_notices() {
        // Transcribed from each notice: every holiday range with its 共N天, every 上班 day.
        type Notice = (
            i32,
            &'static str,
            &'static [(&'static str, &'static str, &'static str, i64)],
            &'static [&'static str],
        );
        let notices: [Notice; 2] = [
            (
                2025,
                "国办发明电〔2024〕12号",
                &[
                    ("元旦", "2025-01-01", "2025-01-01", 1),
                    ("春节", "2025-01-28", "2025-02-04", 8),
                    ("清明节", "2025-04-04", "2025-04-06", 3),
                    ("劳动节", "2025-05-01", "2025-05-05", 5),
                    ("端午节", "2025-05-31", "2025-06-02", 3),
                    ("国庆节、中秋节", "2025-10-01", "2025-10-08", 8),
                ],
                &[
                    "2025-01-26",
                    "2025-02-08",
                    "2025-04-27",
                    "2025-09-28",
                    "2025-10-11",
                ],
            ),
            (
                2026,
                "国办发明电〔2025〕7号",
                &[
                    ("元旦", "2026-01-01", "2026-01-03", 3),
                    ("春节", "2026-02-15", "2026-02-23", 9),
                    ("清明节", "2026-04-04", "2026-04-06", 3),
                    ("劳动节", "2026-05-01", "2026-05-05", 5),
                    ("端午节", "2026-06-19", "2026-06-21", 3),
                    ("中秋节", "2026-09-25", "2026-09-27", 3),
                    ("国庆节", "2026-10-01", "2026-10-07", 7),
                ],
                &[
                    "2026-01-04",
                    "2026-02-14",
                    "2026-02-28",
                    "2026-05-09",
                    "2026-09-20",
                    "2026-10-10",
                ],
            ),
        ];
        let calendar = shipped();
        assert_eq!(
            calendar.covered_years(),
            vec![2025, 2026],
            "no 2027 schedule is published yet"
        );
        for (year, number, holidays, working) in notices {
            assert!(
                calendar.source(year).unwrap().contains(number),
                "{year} cites {number}"
            );
            let mut expected_holiday_days = 0;
            for &(name, first, last, days) in holidays {
                let (first, last) = (date(first), date(last));
                assert_eq!(
                    (last - first).num_days() + 1,
                    days,
                    "{year} {name} 共{days}天"
                );
                expected_holiday_days += days;
                for day in first.iter_days().take_while(|day| *day <= last) {
                    assert_eq!(calendar.holiday_name(day), Some(name), "{day}");
                }
            }
            let mut holiday_days = 0;
            let mut working_weekend_days = Vec::new();
            let days_of_year = NaiveDate::from_ymd_opt(year, 1, 1).unwrap().iter_days();
            for day in days_of_year.take_while(|day| day.year() == year) {
                holiday_days += i64::from(calendar.holiday_name(day).is_some());
                if is_weekend(day) && calendar.is_working_day(day).unwrap() {
                    working_weekend_days.push(day.to_string());
                }
            }
            assert_eq!(
                holiday_days, expected_holiday_days,
                "holiday days of {year}"
            );
            assert_eq!(
                working_weekend_days, working,
                "adjusted working days of {year}"
            );
        }
    }

    #[test]
    fn the_notice_day_totals_are_as_published() {
        // 2025: 1 + 8 + 3 + 5 + 3 + 8; 2026: 3 + 9 + 3 + 5 + 3 + 3 + 7.
        let calendar = shipped();
        for (year, holiday_days, adjusted_days) in [(2025, 28, 5), (2026, 33, 6)] {
            let days: Vec<NaiveDate> = NaiveDate::from_ymd_opt(year, 1, 1)
                .unwrap()
                .iter_days()
                .take_while(|day| day.year() == year)
                .collect();
            let holidays = days
                .iter()
                .filter(|day| calendar.holiday_name(**day).is_some())
                .count();
            let adjusted = days
                .iter()
                .filter(|day| is_weekend(**day) && calendar.is_working_day(**day).unwrap())
                .count();
            assert_eq!(
                (holidays, adjusted),
                (holiday_days, adjusted_days),
                "{year}"
            );
        }
    }

    #[test]
    fn every_file_in_data_holidays_is_built_in() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/holidays");
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".txt"))
            .map(|name| format!("data/holidays/{name}"))
            .collect();
        on_disk.sort();
        let built_in: Vec<String> = BUILT_IN.iter().map(|(name, _)| name.to_string()).collect();
        assert_eq!(built_in, on_disk);
    }

    const GOOD: &str = "\
# a test schedule
year 2026
source test notice
holiday 2026-02-15..2026-02-23 共9天 春节   # a comment after a directive
workday 2026-02-14 春节
";

    #[test]
    fn a_well_formed_file_loads_with_comments_blank_lines_and_crlf() {
        let crlf = GOOD.replace('\n', "\r\n");
        for text in [GOOD, crlf.as_str()] {
            let calendar = HolidayCalendar::from_files(&[("2026.txt", text)]).unwrap();
            assert_eq!(calendar.covered_years(), vec![2026]);
            assert_eq!(calendar.source(2026), Some("test notice"));
            assert_eq!(calendar.holiday_name(date("2026-02-23")), Some("春节"));
            assert_eq!(calendar.is_working_day(date("2026-02-14")), Ok(true));
            assert_eq!(calendar.is_working_day(date("2026-02-24")), Ok(true));
        }
    }

    #[test]
    fn a_malformed_file_is_refused_naming_the_file_and_line() {
        let header = "year 2026\nsource test notice\n";
        let with = |lines: &str| format!("{header}{lines}");
        // (case, text, message)
        let cases = [
            ("an unknown directive", with("holidays 2026-01-01 共1天 元旦\n"),
             "3: unknown directive `holidays` (expected year, source, holiday or workday)"),
            ("a line before the year", "source test\nyear 2026\n".to_owned(),
             "1: `source` before the `year` line"),
            ("a second year", with("year 2027\n"),
             "3: a second `year` line (the first is line 1)"),
            ("a year that is not four digits", "# header\nyear 26\n".to_owned(),
             "2: `26` is not a year (YYYY)"),
            ("a second source", with("source another\n"),
             "3: a second `source` line (the first is line 2)"),
            ("a source naming nothing", "year 2026\nsource\n".to_owned(),
             "2: `source` names no notice"),
            ("an impossible date", with("holiday 2026-02-30 共1天 测试\n"),
             "3: `2026-02-30` is not a date (YYYY-MM-DD)"),
            ("a date without leading zeros", with("holiday 2026-2-15..2026-02-23 共9天 春节\n"),
             "3: `2026-2-15` is not a date (YYYY-MM-DD)"),
            ("a range ending before it starts", with("holiday 2026-02-23..2026-02-15 共9天 春节\n"),
             "3: 2026-02-23..2026-02-15 ends before it starts"),
            ("a holiday starting in the year before", with("holiday 2025-12-31..2026-01-01 共2天 元旦\n"),
             "3: 2025-12-31 is outside year 2026"),
            ("a holiday ending in the year after", with("\nholiday 2026-12-31..2027-01-01 共2天 元旦\n"),
             "4: 2027-01-01 is outside year 2026"),
            ("a working day in another year", with("holiday 2026-01-01 共1天 元旦\nworkday 2027-01-02 元旦\n"),
             "4: 2027-01-02 is outside year 2026"),
            ("a day count that disagrees with the range", with("holiday 2026-02-15..2026-02-23 共8天 春节\n"),
             "3: 2026-02-15..2026-02-23 is 9 days, the line says 共8天"),
            ("a missing day count", with("holiday 2026-02-15..2026-02-23 春节\n"),
             "3: expected the notice's day count as `共N天`, found `春节`"),
            ("a holiday without a name", with("holiday 2026-01-01 共1天\n"),
             "3: holiday 2026-01-01..2026-01-01 has no name"),
            ("a day both holiday and working day", with("holiday 2026-02-15..2026-02-23 共9天 春节\nworkday 2026-02-15 春节\n"),
             "4: 2026-02-15 is both an adjusted working day and a day of 春节 (line 3)"),
            ("overlapping holiday ranges", with("holiday 2026-02-15..2026-02-23 共9天 春节\nholiday 2026-02-20..2026-02-25 共6天 测试\n"),
             "4: 测试 2026-02-20..2026-02-25 overlaps 春节 2026-02-15..2026-02-23 (line 3)"),
            ("a holiday listed twice", with("holiday 2026-01-01 共1天 元旦\n# again\nholiday 2026-01-01 共1天 元旦\n"),
             "5: 元旦 2026-01-01..2026-01-01 overlaps 元旦 2026-01-01..2026-01-01 (line 3)"),
            ("a working day listed twice", with("holiday 2026-02-15..2026-02-23 共9天 春节\nworkday 2026-02-14 春节\nworkday 2026-02-14 春节\n"),
             "5: workday 2026-02-14 is listed twice (first on line 4)"),
            ("a working day on a weekday", with("holiday 2026-02-15..2026-02-23 共9天 春节\nworkday 2026-02-13 春节\n"),
             "4: 2026-02-13 is a Fri, a working day anyway; only a weekend day can be an adjusted working day"),
            ("a working day for no holiday of the file", with("holiday 2026-02-15..2026-02-23 共9天 春节\nworkday 2026-02-14 春季\n"),
             "4: workday 2026-02-14 makes up for `春季`, which is no holiday of this file"),
            ("a working day without its holiday", with("holiday 2026-02-15..2026-02-23 共9天 春节\nworkday 2026-02-14\n"),
             "4: workday 2026-02-14 names no holiday it makes up for"),
            ("no source", "year 2026\nholiday 2026-01-01 共1天 元旦\n".to_owned(),
             "1: year 2026 has no `source` line"),
            ("no holiday", "# nothing yet\nyear 2026\nsource test\n".to_owned(),
             "2: year 2026 lists no holiday"),
            ("only comments", "# one\n# two\n".to_owned(), "2: no `year` line"),
            ("an empty file", String::new(), "1: no `year` line"),
        ];
        for (case, text, message) in cases {
            let error =
                HolidayCalendar::from_files(&[("data/holidays/2026.txt", &text)]).expect_err(case);
            assert_eq!(
                error.to_string(),
                format!("data/holidays/2026.txt:{message}"),
                "{case}"
            );
        }
    }

    #[test]
    fn a_year_covered_by_two_files_names_both() {
        let later = format!(
            "# the same year again\n\n{}",
            GOOD.trim_start_matches("# a test schedule\n")
        );
        let error = HolidayCalendar::from_files(&[("a/2026.txt", GOOD), ("b/2026.txt", &later)])
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "b/2026.txt:3: year 2026 is already covered by a/2026.txt:2"
        );
    }

    #[test]
    fn an_operator_directory_adds_years_to_the_built_in_ones() {
        let dir = tempfile::tempdir().unwrap();
        let added = "year 2027\nsource test notice\nholiday 2027-01-01 共1天 元旦\n";
        std::fs::write(dir.path().join("2027.txt"), added).unwrap();
        std::fs::write(dir.path().join("2028.txt.orig"), "not a schedule").unwrap();
        std::fs::create_dir(dir.path().join("old.txt")).unwrap();

        let calendar = HolidayCalendar::with_dir(dir.path()).unwrap();

        assert_eq!(calendar.covered_years(), vec![2025, 2026, 2027]);
        assert_eq!(calendar.holiday_name(date("2027-01-01")), Some("元旦"));
        assert_eq!(
            calendar.last_day(date("2026-12-29"), 3, CalendarDays),
            Ok(date("2027-01-04")),
            "2027-01-01 is a holiday, then a weekend"
        );
    }

    #[test]
    fn an_operator_file_repeating_a_built_in_year_names_both_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("2026.txt");
        std::fs::write(&path, GOOD).unwrap();

        let error = HolidayCalendar::with_dir(dir.path()).unwrap_err();

        let built_in_line = BUILT_IN[1]
            .1
            .lines()
            .position(|line| line.starts_with("year"))
            .unwrap()
            + 1;
        assert_eq!(
            error.to_string(),
            format!(
                "{}:2: year 2026 is already covered by data/holidays/2026.txt:{built_in_line}",
                path.display()
            )
        );
    }

    #[test]
    fn an_operator_file_that_is_malformed_is_named_by_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("2027.txt");
        std::fs::write(
            &path,
            "year 2027\nsource test\nholiday 2027-13-01 共1天 测试\n",
        )
        .unwrap();

        let error = HolidayCalendar::with_dir(dir.path()).unwrap_err();

        assert_eq!(
            error.to_string(),
            format!(
                "{}:3: `2027-13-01` is not a date (YYYY-MM-DD)",
                path.display()
            )
        );
    }

    #[test]
    fn a_missing_operator_directory_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("absent");

        let error = HolidayCalendar::with_dir(&missing).unwrap_err();

        assert!(
            matches!(&error, CalendarError::Unreadable { file, .. } if *file == missing.display().to_string()),
            "{error:?}"
        );
    }

    #[test]
    fn day_counting_is_configured_in_snake_case_and_defaults_to_calendar_days() {
        assert_eq!(DayCounting::default(), CalendarDays);
        assert_eq!(
            serde_json::to_string(&WorkingDays).unwrap(),
            "\"working_days\""
        );
        assert_eq!(
            serde_json::from_str::<DayCounting>("\"calendar_days\"").unwrap(),
            CalendarDays
        );
        assert!(serde_json::from_str::<DayCounting>("\"workdays\"").is_err());
    }
}
