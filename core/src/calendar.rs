//! Working days and deadlines in China Standard Time (Asia/Shanghai, UTC+8, no daylight saving).
//!
//! Time limits in the catalog are either hours (emergencies) or working days (工作日). Working days
//! skip weekends and public holidays, and count the make-up workdays (调休上班) that fall on weekends.

use std::collections::BTreeSet;

use chrono::{DateTime, Datelike, Duration, FixedOffset, NaiveDate, TimeZone, Weekday};
use serde::{Deserialize, Serialize};

use crate::error::{CoreError, Result};

/// China Standard Time.
pub fn china_tz() -> FixedOffset {
    FixedOffset::east_opt(8 * 3600).expect("UTC+8 is a valid offset")
}

/// Unix milliseconds to a local date-time.
pub fn local_time(ms: i64) -> DateTime<FixedOffset> {
    china_tz().timestamp_millis_opt(ms).single().unwrap_or_else(|| china_tz().timestamp_millis_opt(0).unwrap())
}

/// A time limit from the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeLimit {
    /// Calendar hours from dispatch (emergencies).
    Hours(u32),
    /// Working days: the deadline is the end of the Nth working day after the day of dispatch;
    /// 0 means the end of the same day.
    WorkingDays(u32),
}

impl TimeLimit {
    /// Chinese description, e.g. `1个工作日` or `24小时`.
    pub fn label(&self) -> String {
        match self {
            TimeLimit::Hours(h) => format!("{h}小时"),
            TimeLimit::WorkingDays(0) => "当日".to_owned(),
            TimeLimit::WorkingDays(d) => format!("{d}个工作日"),
        }
    }
}

/// Which days are working days. Holidays are configurable per year (data file per town).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkCalendar {
    /// Public holidays (法定节假日及调休放假), including weekdays off.
    #[serde(default)]
    pub holidays: BTreeSet<NaiveDate>,
    /// Weekend days that are working days (调休上班).
    #[serde(default)]
    pub workdays: BTreeSet<NaiveDate>,
}

impl WorkCalendar {
    /// The calendar shipped with the repository (national holidays of the current years).
    pub fn bundled() -> Self {
        Self::from_json(include_str!("../catalog/holidays.json")).expect("bundled holiday file is valid")
    }

    /// Loads a calendar from its JSON form (`{"holidays": ["2026-01-01", …], "workdays": [...]}`).
    pub fn from_json(text: &str) -> Result<Self> {
        let cal: Self = serde_json::from_str(text).map_err(|e| CoreError::Catalog(format!("节假日文件: {e}")))?;
        if let Some(d) = cal.holidays.intersection(&cal.workdays).next() {
            return Err(CoreError::Catalog(format!("节假日文件: {d} 同时是假日和工作日")));
        }
        Ok(cal)
    }

    /// True on working days.
    pub fn is_working_day(&self, date: NaiveDate) -> bool {
        if self.workdays.contains(&date) {
            return true;
        }
        if self.holidays.contains(&date) {
            return false;
        }
        !matches!(date.weekday(), Weekday::Sat | Weekday::Sun)
    }

    /// The deadline (unix ms) of a task started at `start_ms` with the given limit.
    pub fn deadline(&self, start_ms: i64, limit: TimeLimit) -> i64 {
        match limit {
            TimeLimit::Hours(h) => start_ms + i64::from(h) * 3_600_000,
            TimeLimit::WorkingDays(n) => {
                let mut day = local_time(start_ms).date_naive();
                let mut left = n;
                while left > 0 {
                    day = day.succ_opt().expect("date in range");
                    if self.is_working_day(day) {
                        left -= 1;
                    }
                }
                end_of_day_ms(day)
            }
        }
    }

    /// Working days between two instants (whole days, start day excluded), used for reporting.
    pub fn working_days_between(&self, from_ms: i64, to_ms: i64) -> i64 {
        let (a, b) = (local_time(from_ms).date_naive(), local_time(to_ms).date_naive());
        let mut n = 0;
        let mut d = a;
        while d < b {
            d = d.succ_opt().expect("date in range");
            if self.is_working_day(d) {
                n += 1;
            }
        }
        n
    }
}

/// Midnight at the end of a local date, in unix ms.
fn end_of_day_ms(day: NaiveDate) -> i64 {
    let next = day.and_hms_opt(0, 0, 0).expect("midnight exists") + Duration::days(1);
    china_tz().from_local_datetime(&next).single().expect("fixed offset is unambiguous").timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(y: i32, m: u32, d: u32, h: u32) -> i64 {
        china_tz().with_ymd_and_hms(y, m, d, h, 0, 0).unwrap().timestamp_millis()
    }

    #[test]
    fn working_days_skip_weekends_and_holidays() {
        let cal = WorkCalendar::bundled();
        // Friday 2026-11-20 10:00 + 1 working day = end of Monday 2026-11-23.
        assert_eq!(cal.deadline(at(2026, 11, 20, 10), TimeLimit::WorkingDays(1)), at(2026, 11, 24, 0));
        // 2026-09-30 (Wed) + 1 working day skips the National Day week to 2026-10-08.
        assert_eq!(cal.deadline(at(2026, 9, 30, 9), TimeLimit::WorkingDays(1)), at(2026, 10, 9, 0));
        // 2026-10-09 (Fri) + 1: Saturday 10-10 is a make-up workday.
        assert_eq!(cal.deadline(at(2026, 10, 9, 9), TimeLimit::WorkingDays(1)), at(2026, 10, 11, 0));
        assert_eq!(cal.deadline(at(2026, 11, 20, 22), TimeLimit::WorkingDays(0)), at(2026, 11, 21, 0));
        assert_eq!(cal.deadline(at(2026, 11, 20, 10), TimeLimit::Hours(4)), at(2026, 11, 20, 14));
        assert_eq!(cal.working_days_between(at(2026, 11, 20, 10), at(2026, 11, 24, 10)), 2);
    }

    #[test]
    fn bad_calendar_file_is_refused() {
        assert!(WorkCalendar::from_json("{\"holidays\": [\"2026-13-01\"]}").is_err());
        assert!(WorkCalendar::from_json("{\"holidays\": [\"2026-10-10\"], \"workdays\": [\"2026-10-10\"]}").is_err());
    }
}
