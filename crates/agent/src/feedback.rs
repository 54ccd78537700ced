//! Telling the person at the workstation what a request waits for and how it ended.
//! The agent protocol has no field for a reason (a refusal is a bare FAILURE), so the
//! agent says it itself: after 300 ms a line on the requester's own terminal
//! (`vmux: waiting for approval on alice-pi (login root@prod)… Ctrl-C cancels`), then one
//! line with the outcome, and the same as a desktop notification where a session bus
//! exists. A terminal is written to only if it is the requesting process's controlling
//! terminal and belongs to this agent's user, and never for a forwarded connection.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a request may take before the person is told it waits.
pub const WAIT_NOTICE_AFTER: Duration = Duration::from_millis(300);

/// Where feedback goes (`feedback = tty|notify|both|off` in the agent config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Feedback {
    pub tty: bool,
    pub notify: bool,
}

impl Feedback {
    pub fn parse(s: &str) -> Result<Feedback, String> {
        let (tty, notify) = match s {
            "both" => (true, true),
            "tty" => (true, false),
            "notify" => (false, true),
            "off" => (false, false),
            other => {
                return Err(format!(
                    "feedback = {other:?}: use \"both\", \"tty\", \"notify\" or \"off\""
                ))
            }
        };
        Ok(Feedback {
            tty,
            notify: notify && vmux_proto::desktop::session_bus_available(),
        })
    }
}

/// The terminal device of a `tty_nr` from /proc/PID/stat (`requester::caller`), if
/// it is a terminal that belongs to this process's user (root's terminals are not
/// written to by another user's agent, nor the other way round).
pub fn tty_path(tty_nr: u64) -> Option<PathBuf> {
    if tty_nr == 0 {
        return None;
    }
    let (major, minor) = (
        (tty_nr >> 8) & 0xfff,
        (tty_nr & 0xff) | ((tty_nr >> 12) & 0xfff00),
    );
    let mut candidates = vec![];
    if (136..=143).contains(&major) {
        candidates.push(PathBuf::from(format!(
            "/dev/pts/{}",
            (major - 136) * 256 + minor
        )));
    } else if major == 4 && minor < 64 {
        candidates.push(PathBuf::from(format!("/dev/tty{minor}")));
    }
    let me = unsafe { libc::geteuid() };
    candidates.into_iter().find(|p| {
        std::fs::metadata(p).is_ok_and(|m| {
            use std::os::unix::fs::FileTypeExt;
            m.file_type().is_char_device() && m.rdev() == tty_nr && m.uid() == me
        })
    })
}

/// Write one line to a terminal without ever blocking the agent: opened non-blocking,
/// and a full terminal loses the line rather than holding up a signature.
fn write_line(tty: &PathBuf, line: &str) {
    let opened = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(tty);
    if let Ok(mut f) = opened {
        let _ = f.write_all(format!("{line}\r\n").as_bytes());
    }
}

/// One line about a request that never waited (refused at once).
pub fn say(feedback: Feedback, tty: Option<PathBuf>, reason: &str) {
    if let Some(t) = tty.filter(|_| feedback.tty) {
        write_line(&t, &format!("vmux: {reason}"));
    }
}

/// One request's feedback, from its start to its outcome.
pub struct Notice {
    state: Arc<Mutex<State>>,
    timer: Option<tokio::task::JoinHandle<()>>,
}

struct State {
    tty: Option<PathBuf>,
    notify: bool,
    signer: String,
    what: String,
    /// `connecting` or `approval`.
    phase: &'static str,
    /// The waiting line is on screen (written after [`WAIT_NOTICE_AFTER`]).
    shown: bool,
    notification: Option<crate::notify::Handle>,
    done: bool,
}

impl Notice {
    /// Start feedback for a request to `signer` about `what` (`login root@prod`).
    /// `tty`: the requester's terminal, `None` for none (or a forwarded connection).
    pub fn start(
        feedback: Feedback,
        tty: Option<PathBuf>,
        signer: &str,
        what: &str,
        connected: bool,
    ) -> Notice {
        let state = Arc::new(Mutex::new(State {
            tty: tty.filter(|_| feedback.tty),
            notify: feedback.notify,
            signer: signer.to_string(),
            what: what.to_string(),
            phase: if connected { "approval" } else { "connecting" },
            shown: false,
            notification: None,
            done: false,
        }));
        let timer = (feedback.tty || feedback.notify).then(|| {
            let state = state.clone();
            tokio::spawn(async move {
                tokio::time::sleep(WAIT_NOTICE_AFTER).await;
                show_waiting(&state);
            })
        });
        Notice { state, timer }
    }

    /// The link is up and the request is on its way to the person (after a dial or wake).
    pub fn approval_phase(&self) {
        let mut s = self.state.lock().unwrap();
        if s.phase == "approval" {
            return;
        }
        s.phase = "approval";
        if s.shown {
            if let Some(t) = &s.tty {
                write_line(t, &waiting_line(&s));
            }
        }
    }

    /// The request ended: say how, once. A failure is always said; an approval only
    /// when the person was told it waited.
    pub fn finish(mut self, approved: bool, reason: &str) {
        if let Some(t) = self.timer.take() {
            t.abort();
        }
        let mut s = self.state.lock().unwrap();
        s.done = true;
        if s.shown || !approved {
            if let Some(t) = &s.tty {
                write_line(t, &format!("vmux: {reason}"));
            }
        }
        if let Some(n) = s.notification.take() {
            crate::notify::outcome(n, approved, &s.signer, reason);
        }
    }
}

impl Drop for Notice {
    fn drop(&mut self) {
        if let Some(t) = self.timer.take() {
            t.abort();
        }
        // Cancelled (the requester went away): the notification goes; the terminal
        // belongs to whatever runs there now.
        if let Ok(mut s) = self.state.lock() {
            if !s.done {
                if let Some(n) = s.notification.take() {
                    crate::notify::close(n);
                }
            }
        }
    }
}

fn waiting_line(s: &State) -> String {
    match s.phase {
        "connecting" => format!(
            "vmux: waiting for {} to connect ({})… Ctrl-C cancels",
            s.signer, s.what
        ),
        _ => format!(
            "vmux: waiting for approval on {} ({})… Ctrl-C cancels",
            s.signer, s.what
        ),
    }
}

fn show_waiting(state: &Arc<Mutex<State>>) {
    let mut s = state.lock().unwrap();
    if s.done || s.shown {
        return;
    }
    s.shown = true;
    if let Some(t) = &s.tty {
        write_line(t, &waiting_line(&s));
    }
    if s.notify {
        s.notification = crate::notify::waiting(&s.signer, &s.what);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        assert!(Feedback::parse("off").is_ok_and(|f| !f.tty && !f.notify));
        assert!(Feedback::parse("tty").is_ok_and(|f| f.tty && !f.notify));
        assert!(Feedback::parse("loud").is_err());
        let (_, tty_nr) = crate::requester::caller(Some(std::process::id() as i32), 1);
        assert!(tty_path(tty_nr).is_none_or(|p| p.exists()));
        assert!(tty_path(0).is_none());
    }
}
