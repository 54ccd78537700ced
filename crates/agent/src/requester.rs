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
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_string();
    let mut rest = stat.get(close + 1..)?.split_whitespace();
    let _state = rest.next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some((comm, ppid))
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
