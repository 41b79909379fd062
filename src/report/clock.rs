//! UTC wall-clock time as text, for output names and report dates (no date crate needed).

/// `(year, month, day, seconds into the day)` of a Unix time (civil-from-days).
fn civil(seconds: i64) -> (i64, i64, i64, i64) {
    let (days, rest) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day, rest)
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// `YYYYMMDD-HHMMSS` of a Unix time.
pub fn compact(seconds: i64) -> String {
    let (year, month, day, rest) = civil(seconds);
    format!("{year:04}{month:02}{day:02}-{:02}{:02}{:02}", rest / 3600, rest % 3600 / 60, rest % 60)
}

/// `YYYY-MM-DD HH:MM:SS UTC` of a Unix time.
pub fn readable(seconds: i64) -> String {
    let (year, month, day, rest) = civil(seconds);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// The current time, [`compact`].
pub fn timestamp_now() -> String {
    compact(now())
}

/// The current time, [`readable`].
pub fn readable_now() -> String {
    readable(now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        assert_eq!(compact(0), "19700101-000000");
        assert_eq!(readable(951_782_400 + 3661), "2000-02-29 01:01:01 UTC");
        assert_eq!(compact(1_795_000_000), "20261118-110640");
    }
}
