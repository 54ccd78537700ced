//! Who is asking: the peer's pid from SO_PEERCRED, then its parents from /proc,
//! rendered as `ssh (4242) ← git ← zsh`.

/// The calling process chain, up to `depth` processes.
pub fn describe(pid: Option<i32>, depth: usize) -> Option<String> {
    caller(pid, depth).0
}

/// The calling process chain and the first process's controlling terminal (its
/// `tty_nr`, 0 for none), from one read of each process's stat: the agent asks both
/// for every connection it accepts.
pub fn caller(pid: Option<i32>, depth: usize) -> (Option<String>, u64) {
    let Some(mut pid) = pid else {
        return (None, 0);
    };
    let mut parts = vec![];
    let mut tty = 0;
    for i in 0..depth {
        let Some((comm, ppid, tty_nr)) = proc_info(pid) else {
            break;
        };
        if i == 0 {
            tty = tty_nr;
        }
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
    ((!parts.is_empty()).then(|| parts.join(" ← ")), tty)
}

/// Command name, parent pid and `tty_nr` from /proc/PID/stat (proc(5)). The command
/// sits in parentheses and may itself contain spaces and parentheses, so split at the
/// last `)`.
fn proc_info(pid: i32) -> Option<(String, i32, u64)> {
    let stat = proc_stat(pid)?;
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_string();
    let mut rest = stat.get(close + 1..)?.split_whitespace();
    let _state = rest.next()?;
    let ppid = rest.next()?.parse().ok()?;
    // After ppid: pgrp session tty_nr.
    let tty_nr = rest.nth(2).and_then(|t| t.parse().ok()).unwrap_or(0);
    Some((comm, ppid, tty_nr))
}

/// `/proc/PID/stat`, usually in one read: procfs reports a size of 0, and
/// `read_to_string` then stats the file and reads in growing steps from 32 bytes (eight
/// calls a file; the agent reads four of these for every connection it accepts). The
/// line is a few hundred bytes (the command name is at most 64) and ends in a newline,
/// which tells that it is whole without a read that returns nothing.
pub fn proc_stat(pid: i32) -> Option<String> {
    use std::io::Read;
    let mut f = std::fs::File::open(format!("/proc/{pid}/stat")).ok()?;
    let (mut buf, mut n) = ([0u8; 2048], 0);
    loop {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) if n + k < buf.len() => {
                n += k;
                if buf[n - 1] == b'\n' {
                    break;
                }
            }
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

    #[test]
    fn a_command_with_spaces_parentheses_and_a_newline_is_read_whole() {
        let dir = std::env::temp_dir().join(format!("vmux-req-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let exe = dir.join("x) (y\n1");
        // The kernel names a process after the path it was started by, a link's too.
        std::os::unix::fs::symlink("/bin/sleep", &exe).unwrap();
        let mut child = std::process::Command::new(&exe).arg("5").spawn().unwrap();
        let pid = child.id() as i32;
        // Until exec is done the child still carries the test's name.
        let mut info = super::proc_info(pid);
        for _ in 0..200 {
            if info.as_ref().is_some_and(|i| i.0 == "x) (y\n1") {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
            info = super::proc_info(pid);
        }
        let stat = super::proc_stat(pid).unwrap();
        let _ = child.kill();
        let _ = child.wait();
        let _ = std::fs::remove_dir_all(&dir);
        let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 1..]
            .split_whitespace()
            .collect();
        let (comm, ppid, tty) = info.unwrap();
        assert_eq!(comm, "x) (y\n1");
        assert_eq!(ppid, std::process::id() as i32);
        assert_eq!(tty, fields[4].parse::<u64>().unwrap());
        assert_eq!(super::caller(None, 4), (None, 0));
    }
}
