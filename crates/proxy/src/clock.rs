//! Wall-clock time broken down in UTC (no time-zone database: logs and access logs print
//! UTC, with the `Z` Envoy's access-log default carries).

use std::time::{SystemTime, UNIX_EPOCH};

/// A moment in UTC, broken down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Utc {
    /// Year.
    pub year: i64,
    /// Month, 1..=12.
    pub month: u32,
    /// Day of the month, 1..=31.
    pub day: u32,
    /// Hour, 0..=23.
    pub hour: u32,
    /// Minute.
    pub minute: u32,
    /// Second.
    pub second: u32,
    /// Milliseconds into the second.
    pub millis: u32,
    /// Nanoseconds into the second.
    pub nanos: u32,
    /// Seconds since the Unix epoch.
    pub unix: i64,
}

impl Utc {
    /// Now.
    pub fn now() -> Utc {
        Utc::at(SystemTime::now())
    }

    /// The moment `t`.
    pub fn at(t: SystemTime) -> Utc {
        let (unix, nanos) = match t.duration_since(UNIX_EPOCH) {
            Ok(d) => (d.as_secs() as i64, d.subsec_nanos()),
            Err(e) => (-(e.duration().as_secs() as i64) - 1, 0),
        };
        let days = unix.div_euclid(86_400);
        let secs = unix.rem_euclid(86_400) as u32;
        let (year, month, day) = civil_from_days(days);
        Utc {
            year,
            month,
            day,
            hour: secs / 3600,
            minute: secs / 60 % 60,
            second: secs % 60,
            millis: nanos / 1_000_000,
            nanos,
            unix,
        }
    }

    /// As protobuf's JSON writes a `Timestamp`: `2026-12-04T15:04:05Z`, with 3, 6 or 9
    /// digits of fraction only when there is one.
    pub fn protobuf_timestamp(&self) -> String {
        let fraction = match self.nanos {
            0 => String::new(),
            n if n % 1_000_000 == 0 => format!(".{:03}", n / 1_000_000),
            n if n % 1_000 == 0 => format!(".{:06}", n / 1_000),
            n => format!(".{n:09}"),
        };
        let (y, mo, d, h, mi, s) = (self.year, self.month, self.day, self.hour, self.minute, self.second);
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}{fraction}Z")
    }

    /// As an HTTP date (`Thu, 26 Nov 2026 12:00:43 GMT`).
    pub fn http_date(&self) -> String {
        const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
        const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
        // 1 January 1970 was a Thursday.
        let weekday = DAYS[self.unix.div_euclid(86_400).rem_euclid(7) as usize];
        let month = MONTHS[(self.month - 1) as usize];
        let (d, y, h, m, s) = (self.day, self.year, self.hour, self.minute, self.second);
        format!("{weekday}, {d:02} {month} {y:04} {h:02}:{m:02}:{s:02} GMT")
    }

    /// The date and time fields strftime and spdlog share: `%Y %m %d %H %M %S %T`
    /// (`None` for any other flag).
    pub fn field(&self, flag: char) -> Option<String> {
        Some(match flag {
            'Y' => format!("{:04}", self.year),
            'm' => format!("{:02}", self.month),
            'd' => format!("{:02}", self.day),
            'H' => format!("{:02}", self.hour),
            'M' => format!("{:02}", self.minute),
            'S' => format!("{:02}", self.second),
            'T' => format!("{:02}:{:02}:{:02}", self.hour, self.minute, self.second),
            _ => return None,
        })
    }

    /// `2026-11-26T11:19:28.506Z`, Envoy's access-log `%START_TIME%`.
    pub fn iso8601_millis(&self) -> String {
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            self.year, self.month, self.day, self.hour, self.minute, self.second, self.millis
        )
    }
}

/// Howard Hinnant's days-to-civil: days since 1970-01-01 → (year, month, day).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn dates_break_down_in_utc() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_691_968_506);
        assert_eq!(Utc::at(t).iso8601_millis(), "2026-11-26T11:19:28.506Z");
        assert_eq!(Utc::at(UNIX_EPOCH).iso8601_millis(), "1970-01-01T00:00:00.000Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!((Utc::at(leap).month, Utc::at(leap).day), (2, 29));
        assert_eq!(Utc::at(t).http_date(), "Thu, 26 Nov 2026 11:19:28 GMT");
        assert_eq!(Utc::at(leap).http_date(), "Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(Utc::at(t).protobuf_timestamp(), "2026-11-26T11:19:28.506Z");
        assert_eq!(Utc::at(leap).protobuf_timestamp(), "2000-02-29T00:00:00Z");
        assert_eq!(Utc::at(leap + Duration::from_micros(5)).protobuf_timestamp(), "2000-02-29T00:00:00.000005Z");
    }
}
