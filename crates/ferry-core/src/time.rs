//! Timestamps as people and the Hub's clients read them, and the one
//! place ferry reads the wall clock.

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// `secs` (Unix seconds) as `YYYY-MM-DDTHH:MM:SS.000Z`, the form the
/// Hugging Face Hub's API uses.
pub fn utc_iso8601(secs: i64) -> String {
    let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.000Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian
/// calendar (Howard Hinnant's algorithm).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

#[cfg(test)]
mod tests {
    use super::utc_iso8601;

    #[test]
    fn known_instants() {
        assert_eq!(utc_iso8601(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(utc_iso8601(951_782_400), "2000-02-29T00:00:00.000Z");
        assert_eq!(utc_iso8601(1_660_893_578), "2022-08-19T07:19:38.000Z");
        assert_eq!(utc_iso8601(-1), "1969-12-31T23:59:59.000Z");
        assert_eq!(utc_iso8601(4_102_444_800), "2100-01-01T00:00:00.000Z");
    }
}
