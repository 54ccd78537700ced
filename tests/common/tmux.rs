//! A terminal for tests, as a person would use one: tmux with send-keys to type and
//! capture-pane to read the screen.

use super::proc::run;
use super::vmux::T;
use std::process::Command;
use std::time::{Duration, Instant};

static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

pub struct Tmux {
    socket: String,
}

impl Tmux {
    pub fn start(cmd: &str) -> Tmux {
        let socket = format!(
            "vmux-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let out = run(
            Command::new("tmux").args([
                "-L",
                &socket,
                "new-session",
                "-d",
                "-x",
                "200",
                "-y",
                "60",
                cmd,
            ]),
            T,
        );
        assert!(out.success(), "tmux (apt-get install tmux): {out:?}");
        Tmux { socket }
    }

    pub fn keys(&self, keys: &[&str]) {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.socket, "send-keys", "-t", "0"])
            .args(keys);
        assert!(run(&mut c, T).success());
    }

    /// Keys that decide, pressed as a person would: after reading the request for a
    /// moment (a surface counts a key only once its request was on screen for a second).
    pub fn decide(&self, keys: &[&str]) {
        std::thread::sleep(std::time::Duration::from_millis(1100));
        self.keys(keys);
    }

    /// Any other tmux command on this server (e.g. `resize-window -x 120`).
    pub fn command(&self, args: &[&str]) {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.socket]).args(args);
        let out = run(&mut c, T);
        assert!(out.success(), "tmux {args:?}: {out:?}");
    }

    pub fn screen(&self) -> String {
        run(
            Command::new("tmux").args([
                "-L",
                &self.socket,
                "capture-pane",
                "-p",
                "-t",
                "0",
                "-S",
                "-200",
            ]),
            T,
        )
        .stdout
    }

    pub fn wait_for(&self, what: &str, min_count: usize) -> String {
        let deadline = Instant::now() + T;
        loop {
            let s = self.screen();
            if s.matches(what).count() >= min_count {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "never saw {what:?} x{min_count}:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}
