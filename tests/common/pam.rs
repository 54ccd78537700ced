//! A real PAM user and service for user-verification tests: a test user with a known
//! password (pam_unix checks it against /etc/shadow) and an `/etc/pam.d` entry of its
//! own. Needs root; both are removed on drop.

use super::proc::{is_root, run};
use super::vmux::T;
use std::process::Command;

/// The password the fixture's user has.
pub const PASSWORD: &str = "right horse battery";

/// One account change at a time in this process.
static ACCOUNTS: std::sync::Mutex<()> = std::sync::Mutex::new(());
static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

pub struct PamFixture {
    pub service: String,
    pub user: String,
}

impl PamFixture {
    /// A user and a PAM service whose stack is `stack`.
    pub fn new(stack: &str) -> PamFixture {
        assert!(
            is_root(),
            "the PAM test needs root (a test user and /etc/pam.d entry); run the suite as root"
        );
        // Unique across the test binaries running at once (the pid) and within one.
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let user = format!("vmuxpam{:x}x{n}", std::process::id());
        let service = format!("vmux-test-{}-{n}", std::process::id());
        // useradd takes a lock on /etc/passwd that a test running at once may hold.
        let _one = ACCOUNTS.lock().unwrap_or_else(|e| e.into_inner());
        let mut tries = 0;
        let out = loop {
            let out = run(
                Command::new("useradd").args([
                    "--no-create-home",
                    "--shell",
                    "/usr/sbin/nologin",
                    &user,
                ]),
                T,
            );
            tries += 1;
            if out.success() || !out.stderr.contains("lock") || tries == 20 {
                break out;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        };
        assert!(out.success(), "useradd: {out:?}");
        let mut chpasswd = Command::new("chpasswd");
        chpasswd.stdin(std::process::Stdio::piped());
        let mut child = chpasswd.spawn().unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{user}:{PASSWORD}\n").as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success(), "chpasswd");
        std::fs::write(format!("/etc/pam.d/{service}"), stack).unwrap();
        PamFixture { service, user }
    }

    /// A service that checks the password with `module` (pam_unix.so, pam_deny.so).
    pub fn with_auth(module: &str) -> PamFixture {
        PamFixture::new(&format!(
            "auth required {module}\naccount required pam_permit.so\n"
        ))
    }
}

impl Drop for PamFixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(format!("/etc/pam.d/{}", self.service));
        let _ = Command::new("userdel").arg(&self.user).output();
    }
}
