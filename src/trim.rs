//! A daemon's resident code, trimmed to what it runs.
//!
//! The kernel maps a file's pages around each page of code that faults in (fault-around,
//! large page-cache folios: about 100 KB at a time), so a daemon that started up
//! through the command line, the config, D-Bus and the link setup keeps 7-9 MB of vmux's
//! code mapped, of which its requests run under 1 MB (measured with `clear_refs` and
//! smaps' `Referenced`, README, benchmarks). A short while after start, and then now and
//! then, the daemon drops its mappings of the read-only segments of the program and its
//! libraries; the pages stay in the page cache, and whatever still runs is mapped back
//! at its next use, a minor fault, no disk read. What is left mapped is what the daemon
//! runs; the rest becomes page cache the kernel can reclaim without touching this
//! process.
//!
//! Only segments mapped without write permission are trimmed, and only where the
//! mapping holds no private page: their pages are the file's own bytes, so dropping
//! them loses nothing. The relocated data (`PT_GNU_RELRO`), everything writable and the
//! kernel's vDSO are left alone.

use std::time::Duration;

/// First trim: after start-up and the first link attempt are over.
const FIRST: Duration = Duration::from_secs(2);
/// Each pause is this many times the one before, up to `EVERY`: what runs in a daemon's
/// first minutes and then no more (the pairing, the first session certificate, a
/// reconnect) is let go soon after it, not minutes later. Trims come 2, 12, 62 and 312 s
/// after start, then every `EVERY`.
const BACKOFF: u32 = 5;
/// Then: what ran once since (a log rotation, a menu) is let go again.
const EVERY: Duration = Duration::from_secs(300);

/// Trims now and then for as long as the daemon runs.
pub async fn every_while() {
    let mut pause = FIRST;
    loop {
        tokio::time::sleep(pause).await;
        pause = (pause * BACKOFF).min(EVERY);
        let before = resident_kib();
        match trim() {
            Ok(bytes) => tracing::debug!(
                "code pages no longer running unmapped ({} KiB of mappings; resident {} -> {} KiB)",
                bytes / 1024,
                before,
                resident_kib()
            ),
            // Locked memory (mlockall under a generous RLIMIT_MEMLOCK) refuses it: fine.
            Err(e) => {
                tracing::debug!("code pages kept mapped: {e}");
                return;
            }
        }
    }
}

/// The process's resident set in KiB (`VmRSS`), 0 where unknown.
fn resident_kib() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * page_size() / 1024)
}

fn page_size() -> u64 {
    // SAFETY: sysconf with a constant name has no preconditions.
    u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096)
}

/// Drops this process's mappings of the read-only segments of the program and its
/// libraries; returns how many bytes of address space were covered.
#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
pub fn trim() -> std::io::Result<usize> {
    let mut ranges: Vec<(usize, usize)> = Vec::new();
    // SAFETY: the callback only reads the program headers the loader hands it, for the
    // duration of the call, and writes to the Vec passed by pointer.
    unsafe {
        libc::dl_iterate_phdr(
            Some(read_only_segments),
            (&mut ranges as *mut Vec<_>).cast(),
        );
    }
    let clean = unwritten_mappings()?;
    let page = page_size() as usize;
    let mut covered = 0;
    for (start, end) in ranges {
        for &(m_start, m_end) in &clean {
            // Whole pages inside both only: a page the segment shares is left alone.
            let lo = start.max(m_start).div_ceil(page) * page;
            let hi = end.min(m_end) / page * page;
            if hi <= lo {
                continue;
            }
            // SAFETY: [lo, hi) lies in a read-only, file-backed segment of the program
            // or a library, in a mapping with no private (written) page, so
            // MADV_DONTNEED only drops page-table entries; the next access maps the
            // same bytes from the page cache.
            if unsafe { libc::madvise(lo as *mut libc::c_void, hi - lo, libc::MADV_DONTNEED) } != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            covered += hi - lo;
        }
    }
    Ok(covered)
}

/// This process's mappings that hold no private page (`Anonymous: 0 kB` in smaps): a
/// library with text relocations, or a debugger's breakpoint, makes a private copy of
/// a read-only page, which must not be dropped.
#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
fn unwritten_mappings() -> std::io::Result<Vec<(usize, usize)>> {
    let smaps = std::fs::read_to_string("/proc/self/smaps")?;
    let mut out = Vec::new();
    let mut current = None;
    for line in smaps.lines() {
        if let Some(anon) = line.strip_prefix("Anonymous:") {
            if let (Some(range), "0 kB") = (current.take(), anon.trim()) {
                out.push(range);
            }
        } else if let Some((range, _)) = line.split_once(' ') {
            if let Some((a, b)) = range.split_once('-') {
                if let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
                {
                    current = Some((a, b));
                }
            }
        }
    }
    Ok(out)
}

#[cfg(not(all(target_os = "linux", target_pointer_width = "64")))]
pub fn trim() -> std::io::Result<usize> {
    Err(std::io::Error::other("only on 64-bit Linux"))
}

/// For each object `dl_iterate_phdr` visits (the program, then the libraries it loaded):
/// its non-writable `PT_LOAD` segments, minus any part inside `PT_GNU_RELRO`
/// (relocated, so no longer the file's bytes), as address ranges. The kernel's vDSO is
/// not a file and is left out.
#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
unsafe extern "C" fn read_only_segments(
    info: *mut libc::dl_phdr_info,
    _size: libc::size_t,
    out: *mut libc::c_void,
) -> libc::c_int {
    // SAFETY: the loader passes a valid dl_phdr_info whose dlpi_phdr points at
    // dlpi_phnum headers; `out` is the Vec given to dl_iterate_phdr above.
    let (info, out) = unsafe { (&*info, &mut *out.cast::<Vec<(usize, usize)>>()) };
    if !info.dlpi_name.is_null() {
        // SAFETY: a non-null dlpi_name is the loader's NUL-terminated path.
        let name = unsafe { std::ffi::CStr::from_ptr(info.dlpi_name) }.to_bytes();
        if name.starts_with(b"linux-vdso") || name.starts_with(b"linux-gate") {
            return 0;
        }
    }
    let headers = unsafe { std::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum.into()) };
    let base = info.dlpi_addr as usize;
    let span = |h: &libc::Elf64_Phdr| {
        let start = base + h.p_vaddr as usize;
        (start, start + h.p_memsz as usize)
    };
    let relro = headers
        .iter()
        .find(|h| h.p_type == libc::PT_GNU_RELRO)
        .map(span);
    for h in headers {
        if h.p_type != libc::PT_LOAD || h.p_flags & libc::PF_W != 0 || h.p_filesz != h.p_memsz {
            continue;
        }
        let (start, end) = span(h);
        match relro {
            Some((rs, re)) if rs < end && start < re => {
                if start < rs {
                    out.push((start, rs));
                }
                if re < end {
                    out.push((re, end));
                }
            }
            _ => out.push((start, end)),
        }
    }
    0
}
