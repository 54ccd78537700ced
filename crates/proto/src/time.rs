//! Times and durations as people read them, on both devices.

/// `14:03:07`: a Unix time as local wall-clock time.
pub fn clock(unix: u64) -> String {
    with_tm(unix, |tm| {
        format!("{:02}:{:02}:{:02}", tm.tm_hour, tm.tm_min, tm.tm_sec)
    })
    .unwrap_or_default()
}

/// `14:03`: hours and minutes, local time.
pub fn hm(unix: u64) -> String {
    with_tm(unix, |tm| format!("{:02}:{:02}", tm.tm_hour, tm.tm_min)).unwrap_or_default()
}

/// `2026-11-22 09:41:07 CET`: the C library's idea of local time (TZ, /etc/localtime).
pub fn local_time(unix: u64) -> String {
    with_tm(unix, |tm| {
        let mut buf = [0u8; 64];
        // SAFETY: strftime writes at most buf.len() bytes into our buffer.
        let n = unsafe {
            libc::strftime(
                buf.as_mut_ptr().cast(),
                buf.len(),
                c"%Y-%m-%d %H:%M:%S %Z".as_ptr(),
                tm,
            )
        };
        (n > 0).then(|| String::from_utf8_lossy(&buf[..n]).into_owned())
    })
    .flatten()
    .unwrap_or_else(|| utc_time(unix))
}

fn with_tm<R>(unix: u64, f: impl FnOnce(&libc::tm) -> R) -> Option<R> {
    let t = unix as libc::time_t;
    // SAFETY: localtime_r writes only into the tm we own.
    unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&t, &mut tm).is_null() {
            return None;
        }
        Some(f(&tm))
    }
}

/// The same in UTC, computed here (no time-zone database needed).
pub fn utc_time(unix: u64) -> String {
    let secs = unix as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's method).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// `8h`, `30m`, `90s`, `1d 2h`: a duration for people.
pub fn duration(secs: u64) -> String {
    let (d, h, m, s) = (
        secs / 86_400,
        secs % 86_400 / 3600,
        secs % 3600 / 60,
        secs % 60,
    );
    let parts: Vec<String> = [(d, "d"), (h, "h"), (m, "m"), (s, "s")]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, u)| format!("{n}{u}"))
        .collect();
    if parts.is_empty() {
        "0s".into()
    } else {
        parts.join(" ")
    }
}

/// `8h`, `30m`, `90s`, `1d` or plain seconds, as a number of seconds.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 8h, 30m or 90s"))?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use s, m, h or d)")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_for_people() {
        assert_eq!(duration(28_800), "8h");
        assert_eq!(duration(2_592_000), "30d");
        assert_eq!(duration(5_400), "1h 30m");
        assert_eq!(duration(0), "0s");
        assert_eq!(parse_duration("8h"), Ok(28_800));
        assert_eq!(parse_duration("90"), Ok(90));
        assert_eq!(parse_duration("2d"), Ok(172_800));
        assert!(parse_duration("8x").is_err());
        assert!(parse_duration("h").is_err());
    }

    #[test]
    fn dates() {
        assert_eq!(utc_time(0), "1970-01-01 00:00:00Z");
        assert_eq!(utc_time(1_700_000_000), "2023-11-14 22:13:20Z");
        assert!(local_time(1_700_000_000).starts_with("2023-11-1"));
        assert_eq!(clock(1_700_000_000).len(), 8);
        assert_eq!(hm(1_700_000_000).len(), 5);
    }
}
