//! Who is asking: the peer's pid from SO_PEERCRED, then its parents from /proc,
//! rendered as `ssh (4242) ← git ← zsh`.

/// The calling process chain, up to `depth` processes.
pub fn describe(pid: Option<i32>, depth: usize) -> Option<String> {
    let mut pid = pid?;
    let mut parts = vec![];
    for i in 0..depth {
        let Some((comm, ppid)) = proc_info(pid) else {
            break;
        };
        parts.push(if i == 0 {
            format!("{comm} ({pid})")
        } else {
            comm
        });
        if ppid <= 1 {
            break;
        }
        pid = ppid;
    }
    (!parts.is_empty()).then(|| parts.join(" ← "))
}

/// Command name and parent pid from /proc/PID/stat. The command sits in parentheses
/// and may itself contain spaces and parentheses, so split at the last `)`.
fn proc_info(pid: i32) -> Option<(String, i32)> {
    let stat = proc_stat(pid)?;
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_string();
    let mut rest = stat.get(close + 1..)?.split_whitespace();
    let _state = rest.next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some((comm, ppid))
}

/// `/proc/PID/stat`, read in two system calls: procfs reports a size of 0, and
/// `read_to_string` then stats the file and reads in growing steps from 32 bytes (eight
/// calls a file; the agent reads four of these for every connection it accepts). The
/// line is a few hundred bytes (the command name is at most 64).
pub fn proc_stat(pid: i32) -> Option<String> {
    use std::io::Read;
    let mut f = std::fs::File::open(format!("/proc/{pid}/stat")).ok()?;
    let (mut buf, mut n) = ([0u8; 2048], 0);
    loop {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) if n + k < buf.len() => n += k,
            Ok(_) => return None,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    String::from_utf8(buf[..n].to_vec()).ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn describes_this_process() {
        let me = std::process::id() as i32;
        let d = super::describe(Some(me), 4).unwrap();
        assert!(d.contains(&format!("({me})")), "{d}");
        assert!(super::describe(None, 4).is_none());
    }
}
