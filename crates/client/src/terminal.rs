//! The local terminal during an interactive session: raw mode while the session runs,
//! restored on every way out (normal end, error, panic unwinding, SIGTERM/SIGHUP),
//! and its size for the remote PTY.

use std::sync::Mutex;

/// The settings to restore, process-wide, so a signal handler path can restore them too.
static SAVED: Mutex<Option<libc::termios>> = Mutex::new(None);

/// Raw mode on stdin while this lives.
pub struct RawMode(());

impl RawMode {
    /// `None` when stdin is not a terminal.
    pub fn enter() -> Option<RawMode> {
        // SAFETY: tcgetattr/tcsetattr on fd 0 with a termios we own.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut t) != 0 {
                return None;
            }
            *SAVED.lock().unwrap() = Some(t);
            let mut raw = t;
            libc::cfmakeraw(&mut raw);
            if libc::tcsetattr(0, libc::TCSADRAIN, &raw) != 0 {
                return None;
            }
        }
        Some(RawMode(()))
    }
}

/// Put the terminal back as it was (idempotent).
pub fn restore() {
    if let Some(t) = SAVED.lock().unwrap().take() {
        // SAFETY: restoring settings read from the same fd.
        unsafe {
            libc::tcsetattr(0, libc::TCSADRAIN, &t);
        }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        restore();
    }
}

/// Columns, rows, pixel width and height of the terminal on stdin (80×24 otherwise).
pub fn size() -> (u32, u32, u32, u32) {
    // SAFETY: TIOCGWINSZ fills the winsize we own.
    unsafe {
        let mut w: libc::winsize = std::mem::zeroed();
        for fd in [0, 1, 2] {
            if libc::ioctl(fd, libc::TIOCGWINSZ, &mut w) == 0 && w.ws_col > 0 {
                return (
                    w.ws_col.into(),
                    w.ws_row.into(),
                    w.ws_xpixel.into(),
                    w.ws_ypixel.into(),
                );
            }
        }
    }
    (80, 24, 0, 0)
}

pub fn stdin_is_tty() -> bool {
    // SAFETY: isatty on a constant fd.
    unsafe { libc::isatty(0) == 1 }
}
