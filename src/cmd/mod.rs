pub mod agent;
pub mod client;
pub mod service;
pub mod signer;
pub mod stores;
pub mod up;
pub mod upstream;

use anyhow::Context;
use std::io::IsTerminal;
use zeroize::Zeroizing;

static PASSPHRASE: std::sync::OnceLock<Zeroizing<String>> = std::sync::OnceLock::new();

/// Read `VMUX_PASSPHRASE` once, keep it in memory, and remove it from the environment
/// including the original bytes (which `/proc/PID/environ` shows even after
/// `remove_var`). Call before any thread starts.
pub fn take_passphrase_from_env() {
    const NAME: &[u8] = b"VMUX_PASSPHRASE=";
    let Some(value) = std::env::var_os("VMUX_PASSPHRASE") else {
        return;
    };
    let _ = PASSPHRASE.set(Zeroizing::new(value.to_string_lossy().into_owned()));
    extern "C" {
        static mut environ: *mut *mut libc::c_char;
    }
    // SAFETY: single-threaded at this point; `environ` is a NULL-terminated array of
    // NUL-terminated strings; we overwrite the value bytes in place, within each string.
    unsafe {
        let mut p = environ;
        while !p.is_null() && !(*p).is_null() {
            let s = *p;
            let len = libc::strlen(s);
            let bytes = std::slice::from_raw_parts_mut(s as *mut u8, len);
            if bytes.starts_with(NAME) {
                for b in &mut bytes[NAME.len()..] {
                    std::ptr::write_volatile(b, b'*');
                }
            }
            p = p.add(1);
        }
    }
    std::env::remove_var("VMUX_PASSPHRASE");
}

/// Daemons keep secrets in memory: no core dumps, no ptrace or /proc/PID/mem by other
/// processes of the same user (PR_SET_DUMPABLE=0), key memory locked when the limits
/// allow it, and enough file descriptors for their caps to matter before the OS's.
pub fn harden_daemon() {
    // SAFETY: prctl/setrlimit/mlockall with constant arguments on this process.
    unsafe {
        let no_core = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        libc::setrlimit(libc::RLIMIT_CORE, &no_core);
        #[cfg(target_os = "linux")]
        if libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) != 0 {
            tracing::warn!("could not make this process non-dumpable");
        }
        // Locking all memory with a small RLIMIT_MEMLOCK would make allocations fail:
        // only when the limit is generous.
        let mut l: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut l) == 0
            && (l.rlim_cur == libc::RLIM_INFINITY || l.rlim_cur >= 1 << 30)
        {
            libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE);
        }
    }
    vmux_signer::guard::raise_nofile_limit();
}

/// The keystore passphrase: `VMUX_PASSPHRASE` (taken at start), else asked on the
/// terminal, else none.
pub fn passphrase(prompt: &str, confirm: bool) -> anyhow::Result<Option<Zeroizing<String>>> {
    if let Some(p) = PASSPHRASE.get() {
        return Ok(Some(p.clone()));
    }
    if !std::io::stdin().is_terminal() {
        return Ok(None);
    }
    let p = Zeroizing::new(rpassword::prompt_password(prompt).context("reading passphrase")?);
    if confirm {
        let again =
            Zeroizing::new(rpassword::prompt_password("Again: ").context("reading passphrase")?);
        anyhow::ensure!(*p == *again, "the passphrases differ; nothing was written");
    }
    Ok(Some(p))
}

/// `8h`, `30m`, `90s`, `1d` or plain seconds.
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

/// Wait for Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
}

/// `2026-11-22 09:41:07 CET`: the C library's idea of local time (TZ, /etc/localtime).
pub fn local_time(unix: u64) -> String {
    let t = unix as libc::time_t;
    // SAFETY: localtime_r writes into the tm we own; strftime into our buffer, bounded.
    unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if !libc::localtime_r(&t, &mut tm).is_null() {
            let mut buf = [0u8; 64];
            let n = libc::strftime(
                buf.as_mut_ptr().cast(),
                buf.len(),
                c"%Y-%m-%d %H:%M:%S %Z".as_ptr(),
                &tm,
            );
            if n > 0 {
                return String::from_utf8_lossy(&buf[..n]).into_owned();
            }
        }
    }
    utc_time(unix)
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

#[cfg(test)]
mod tests {
    #[test]
    fn durations() {
        assert_eq!(super::parse_duration("8h"), Ok(28_800));
        assert_eq!(super::parse_duration("90"), Ok(90));
        assert_eq!(super::parse_duration("2d"), Ok(172_800));
        assert!(super::parse_duration("8x").is_err());
        assert!(super::parse_duration("h").is_err());
    }

    #[test]
    fn utc_dates() {
        assert_eq!(super::utc_time(0), "1970-01-01 00:00:00Z");
        assert_eq!(super::utc_time(1_700_000_000), "2023-11-14 22:13:20Z");
        assert!(super::local_time(1_700_000_000).starts_with("2023-11-1"));
    }
}
