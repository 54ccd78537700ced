//! Helpers for driving external processes (daemons and one-shot commands) in
//! integration tests. Only `std` is used.

use std::fmt;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

pub const SIGTERM: i32 = 15;
pub const SIGKILL: i32 = 9;
pub const SIGSTOP: i32 = 19;
pub const SIGCONT: i32 = 18;

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

/// Send `sig` to process `pid`. Returns false if the process does not exist
/// (or the signal could not be delivered).
pub fn send_signal(pid: u32, sig: i32) -> bool {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { libc_kill(pid as i32, sig) == 0 }
}

/// True when the test process runs with effective uid 0.
pub fn is_root() -> bool {
    // SAFETY: geteuid(2) cannot fail and has no preconditions.
    unsafe { libc_geteuid() == 0 }
}

/// A free TCP port on 127.0.0.1 (bind to port 0, read the port, release it).
/// Another process may grab it before the caller binds it; callers that
/// start servers should retry on "address in use".
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

#[derive(Default)]
struct LineState {
    /// Lines from both streams, in arrival order.
    all: Vec<String>,
    /// Lines from stdout only.
    stdout: Vec<String>,
    /// Number of streams that reached EOF (0..=2).
    eof: usize,
}

type Shared = Arc<(Mutex<LineState>, Condvar)>;

/// A long-running child process whose stdout and stderr are collected line
/// by line in the background. Dropping it terminates the child (SIGTERM,
/// then SIGKILL after 2 s) and reaps it.
pub struct Daemon {
    name: String,
    child: Child,
    shared: Shared,
    stdin: Option<std::process::ChildStdin>,
}

impl Daemon {
    /// Spawn `cmd` with stdin from /dev/null and piped stdout/stderr.
    /// Panics if the program cannot be started.
    pub fn spawn(cmd: &mut Command) -> Daemon {
        let name = format!("{:?}", cmd.get_program());
        Self::spawn_named(&name, cmd)
    }

    /// Like [`Daemon::spawn`], with a name used in panic messages.
    pub fn spawn_named(name: &str, cmd: &mut Command) -> Daemon {
        cmd.stdin(Stdio::null());
        Self::spawn_with(name, cmd)
    }

    /// Like [`Daemon::spawn_named`], with a standard input to write lines to
    /// ([`Daemon::send_line`]), as a person types answers.
    pub fn spawn_interactive(name: &str, cmd: &mut Command) -> Daemon {
        cmd.stdin(Stdio::piped());
        Self::spawn_with(name, cmd)
    }

    /// Write one line to the process's standard input.
    pub fn send_line(&mut self, line: &str) {
        use std::io::Write;
        let stdin = self.stdin.as_mut().expect("spawned with spawn_interactive");
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .and_then(|_| stdin.flush())
            .unwrap_or_else(|e| panic!("writing to {}: {e}", self.name));
    }

    fn spawn_with(name: &str, cmd: &mut Command) -> Daemon {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("failed to spawn {name} ({cmd:?}): {e}"));
        let shared: Shared = Arc::new((Mutex::new(LineState::default()), Condvar::new()));
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        spawn_line_reader(stdout, Arc::clone(&shared), true);
        spawn_line_reader(stderr, Arc::clone(&shared), false);
        let stdin = child.stdin.take();
        Daemon {
            name: name.to_string(),
            child,
            shared,
            stdin,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// `None` while running, `Some(status)` once it has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }

    pub fn is_running(&mut self) -> bool {
        self.try_wait().is_none()
    }

    /// Wait up to `timeout` for the child to exit on its own.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.try_wait() {
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Send a signal (e.g. [`SIGTERM`]) to the child.
    pub fn signal(&self, sig: i32) -> bool {
        send_signal(self.pid(), sig)
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL; always reaps the child.
    pub fn terminate(&mut self, grace: Duration) -> ExitStatus {
        if let Some(st) = self.try_wait() {
            return st;
        }
        self.signal(SIGTERM);
        if let Some(st) = self.wait_exit(grace) {
            return st;
        }
        let _ = self.child.kill();
        self.child.wait().expect("wait after SIGKILL")
    }

    /// Number of lines collected so far (both streams). Use as the `since`
    /// argument of [`Daemon::wait_for_new_line`].
    pub fn line_count(&self) -> usize {
        self.shared.0.lock().unwrap().all.len()
    }

    /// All lines so far from both streams, in arrival order.
    pub fn lines(&self) -> Vec<String> {
        self.shared.0.lock().unwrap().all.clone()
    }

    /// All stdout lines so far.
    pub fn stdout_lines(&self) -> Vec<String> {
        self.shared.0.lock().unwrap().stdout.clone()
    }

    /// Wait until any line (already collected or future) satisfies `pred`.
    /// Returns `None` on timeout or when both streams closed without a match.
    pub fn wait_for_line(&self, pred: impl Fn(&str) -> bool, timeout: Duration) -> Option<String> {
        self.wait_for_new_line(pred, 0, timeout)
    }

    /// Like [`Daemon::wait_for_line`], considering only lines with index
    /// `>= since` (see [`Daemon::line_count`]).
    pub fn wait_for_new_line(
        &self,
        pred: impl Fn(&str) -> bool,
        since: usize,
        timeout: Duration,
    ) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let (lock, cvar) = &*self.shared;
        let mut st = lock.lock().unwrap();
        let mut next = since;
        loop {
            while next < st.all.len() {
                if pred(&st.all[next]) {
                    return Some(st.all[next].clone());
                }
                next += 1;
            }
            if st.eof >= 2 {
                return None;
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            st = cvar.wait_timeout(st, deadline - now).unwrap().0;
        }
    }

    /// Everything collected so far, for panic messages.
    pub fn output(&self) -> String {
        let lines = self.lines();
        let mut s = format!("--- output of {} (pid {}) ---\n", self.name, self.pid());
        for l in lines {
            s.push_str(&l);
            s.push('\n');
        }
        s.push_str("--- end ---");
        s
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.terminate(Duration::from_secs(2));
        // Reader threads are detached: they end when the pipes close, which
        // may be later if the daemon left children holding them.
    }
}

fn spawn_line_reader(stream: impl Read + Send + 'static, shared: Shared, is_stdout: bool) {
    thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    while matches!(buf.last(), Some(b'\n' | b'\r')) {
                        buf.pop();
                    }
                    let line = String::from_utf8_lossy(&buf).into_owned();
                    let (lock, cvar) = &*shared;
                    let mut st = lock.lock().unwrap();
                    if is_stdout {
                        st.stdout.push(line.clone());
                    }
                    st.all.push(line);
                    cvar.notify_all();
                }
            }
        }
        let (lock, cvar) = &*shared;
        lock.lock().unwrap().eof += 1;
        cvar.notify_all();
    });
}

/// Result of [`run`].
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
    /// True if the command was killed because it exceeded the timeout.
    pub timed_out: bool,
}

impl Output {
    pub fn success(&self) -> bool {
        !self.timed_out && self.status.success()
    }
}

impl fmt::Debug for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "status: {}{}, elapsed: {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}\n--- end ---",
            self.status,
            if self.timed_out {
                " (TIMED OUT, killed)"
            } else {
                ""
            },
            self.elapsed,
            self.stdout,
            self.stderr
        )
    }
}

/// Run `cmd` to completion with stdin from /dev/null, killing it (SIGKILL)
/// if it runs longer than `timeout`. Panics if it cannot be started.
pub fn run(cmd: &mut Command, timeout: Duration) -> Output {
    run_inner(cmd, None, timeout)
}

/// Like [`run`], feeding `input` on stdin (then closing it).
pub fn run_with_input(cmd: &mut Command, input: &[u8], timeout: Duration) -> Output {
    run_inner(cmd, Some(input.to_vec()), timeout)
}

fn run_inner(cmd: &mut Command, input: Option<Vec<u8>>, timeout: Duration) -> Output {
    let start = Instant::now();
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("failed to spawn {cmd:?}: {e}"));
    if let (Some(data), Some(mut stdin)) = (input, child.stdin.take()) {
        thread::spawn(move || {
            let _ = stdin.write_all(&data);
        });
    }
    let rx_out = read_all(child.stdout.take().expect("piped stdout"));
    let rx_err = read_all(child.stderr.take().expect("piped stderr"));

    let deadline = start + timeout;
    let mut timed_out = false;
    let status = loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            break st;
        }
        if Instant::now() >= deadline {
            timed_out = true;
            let _ = child.kill();
            break child.wait().expect("wait after kill");
        }
        thread::sleep(Duration::from_millis(5));
    };
    let elapsed = start.elapsed();
    // Grandchildren may keep the pipes open; don't hang on them forever.
    let grace = Duration::from_secs(2);
    let stdout = rx_out.recv_timeout(grace).unwrap_or_default();
    let stderr = rx_err.recv_timeout(grace).unwrap_or_default();
    Output {
        status,
        stdout,
        stderr,
        elapsed,
        timed_out,
    }
}

fn read_all(mut stream: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stream.read_to_end(&mut buf);
        let _ = tx.send(String::from_utf8_lossy(&buf).into_owned());
    });
    rx
}

/// Run `cmd` with `input` on its standard input (then closed); bounded by `timeout`.
pub fn run_with_stdin(cmd: &mut Command, input: &str, timeout: Duration) -> Output {
    let started = Instant::now();
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(input.as_bytes());
    }
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(Ok(out)) => Output {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into(),
            stderr: String::from_utf8_lossy(&out.stderr).into(),
            elapsed: started.elapsed(),
            timed_out: false,
        },
        _ => {
            send_signal(pid, SIGKILL);
            panic!("{cmd:?} did not finish within {timeout:?}");
        }
    }
}
