//! Bad input gets a clear one-line error and changes nothing.

mod common;

use common::proc::{free_port, run, Daemon};
use common::vmux::*;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

fn one_line_error(out: &common::proc::Output, needle: &str) {
    assert!(!out.success(), "expected failure: {out:?}");
    let err = out.stderr.trim();
    assert_eq!(err.lines().count(), 1, "want one line: {out:?}");
    assert!(err.contains(needle), "want {needle:?} in {err:?}");
}

#[test]
fn unknown_request_id_and_nothing_pending() {
    let s = Setup::new();
    one_line_error(
        &try_vmux(&s.signer.home, &["signer", "approve", "nope"]),
        "no pending request with id nope",
    );
    one_line_error(
        &try_vmux(&s.signer.home, &["signer", "deny", "--next"]),
        "nothing is pending",
    );
}

#[test]
fn pair_with_a_closed_port() {
    let tmp = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let out = try_vmux(tmp.path(), &["agent", "pair", &addr]);
    one_line_error(&out, &format!("cannot reach signer at {addr}"));
    assert!(!tmp.path().join("agent/signers.json").exists());
}

#[test]
fn control_socket_missing_says_what_to_run() {
    let tmp = tempfile::tempdir().unwrap();
    Signer::init(tmp.path(), "s");
    one_line_error(
        &try_vmux(tmp.path(), &["signer", "pending"]),
        "is the signer running (`vmux signer run`, or `vmux up`)?",
    );
}

#[test]
fn corrupt_state_files_are_named_and_kept() {
    let mut s = Setup::new();
    s.agent.stop();
    let f = s.agent.home.join("agent/signers.json");
    std::fs::write(&f, "{ not json").unwrap();
    let out = run(vmux(&s.agent.home).args(["agent", "run"]), T);
    one_line_error(&out, "signers.json");
    assert!(out.stderr.contains("corrupt"), "{out:?}");
    assert_eq!(
        std::fs::read_to_string(&f).unwrap(),
        "{ not json",
        "the file must not be replaced"
    );

    s.signer.stop();
    let f = s.signer.home.join("signer/paired.json");
    std::fs::write(&f, "[1,2").unwrap();
    let out = run(
        vmux(&s.signer.home).args(["signer", "run", "--listen", "127.0.0.1:0"]),
        T,
    );
    one_line_error(&out, "paired.json");

    let f = s.signer.home.join("signer/config.toml");
    std::fs::write(&f, "name = [").unwrap();
    one_line_error(
        &try_vmux(&s.signer.home, &["signer", "keys", "pub"]),
        "config.toml",
    );
}

#[test]
fn init_twice_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    Signer::init(tmp.path(), "s");
    let before = std::fs::read_to_string(tmp.path().join("signer/config.toml")).unwrap();
    one_line_error(
        &try_vmux(tmp.path(), &["signer", "init", "--name", "t"]),
        "already exists",
    );
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("signer/config.toml")).unwrap(),
        before
    );
}

#[test]
fn passphrase_encrypted_keystore() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    let out = run(
        vmux(home)
            .args(["signer", "init", "--name", "enc", "--passphrase"])
            .env("VMUX_PASSPHRASE", "correct horse"),
        T,
    );
    assert!(out.success(), "{out:?}");
    set_signer_config(home, "discovery", "\"off\"");
    let key = std::fs::read_dir(home.join("signer/keys"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_none())
        .unwrap();
    // Encrypted OpenSSH key: ssh-keygen cannot read it without the passphrase.
    let probe = run(
        Command::new("ssh-keygen")
            .args(["-y", "-P", "", "-f"])
            .arg(&key),
        T,
    );
    assert!(!probe.success(), "{probe:?}");
    let probe = run(
        Command::new("ssh-keygen")
            .args(["-y", "-P", "correct horse", "-f"])
            .arg(&key),
        T,
    );
    assert!(probe.success(), "{probe:?}");

    let run_with = |pass: Option<&str>| {
        let mut c = vmux(home);
        c.args(["signer", "run", "--listen", "127.0.0.1:0"]);
        if let Some(p) = pass {
            c.env("VMUX_PASSPHRASE", p);
        }
        c
    };
    one_line_error(&run(&mut run_with(Some("wrong")), T), "wrong passphrase");
    one_line_error(&run(&mut run_with(None), T), "VMUX_PASSPHRASE");
    let d = Daemon::spawn(&mut run_with(Some("correct horse")));
    assert!(
        d.wait_for_line(|l| l.contains("listening on"), T).is_some(),
        "{}",
        d.output()
    );
}

#[test]
fn up_runs_everything_and_asks_in_the_terminal() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    // Per-signature prompts only; `vmux up` with certificates is covered in tests/certs.rs.
    agent_config(&home, "session_certs = false\n");
    // A port of its own: 7227 (up's default) may be in use on a test machine.
    let mut child = vmux(&home)
        .args(["up", "--listen", "127.0.0.1:0"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Stopped however the test ends, so a failure leaves no daemon behind.
    struct Stop(i32);
    impl Drop for Stop {
        fn drop(&mut self) {
            unsafe { libc::kill(self.0, libc::SIGTERM) };
        }
    }
    let _stop = Stop(child.id() as i32);
    let mut stdin = child.stdin.take().unwrap();
    let lines = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let reader = {
        let lines = lines.clone();
        let mut out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            use std::io::Read;
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 {
                    break;
                }
                lines
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        })
    };
    let wait_for = |needle: &str| {
        let deadline = std::time::Instant::now() + T;
        while !lines.lock().unwrap().contains(needle) {
            assert!(
                std::time::Instant::now() < deadline,
                "no {needle:?} in {}",
                lines.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait_for("export SSH_AUTH_SOCK");
    wait_for("public key: ");
    let sock = home.join("agent.sock");
    let pubkey = lines
        .lock()
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("public key: ").map(String::from))
        .unwrap();
    let pubfile = tmp.path().join("k.pub");
    std::fs::write(&pubfile, &pubkey).unwrap();
    let listed = run(
        Command::new("ssh-add")
            .arg("-L")
            .env("SSH_AUTH_SOCK", &sock),
        T,
    );
    assert_eq!(listed.stdout.trim(), pubkey.trim(), "{listed:?}");

    let msg = tmp.path().join("m");
    std::fs::write(&msg, "x").unwrap();
    let sign = |answer: &str, stdin: &mut std::process::ChildStdin| {
        let c = sshsig(&sock, &pubfile, &msg, "file");
        let before = lines.lock().unwrap().matches("Approve? [y/N]").count();
        let h = background(c);
        let deadline = std::time::Instant::now() + T;
        while lines.lock().unwrap().matches("Approve? [y/N]").count() == before {
            assert!(
                std::time::Instant::now() < deadline,
                "no prompt: {}",
                lines.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // A person reads the request first: an answer within a second is not taken.
        std::thread::sleep(Duration::from_millis(1100));
        writeln!(stdin, "{answer}").unwrap();
        h.join().unwrap()
    };
    assert!(sign("y", &mut stdin).success());
    assert!(!sign("n", &mut stdin).success());
    let shown = lines.lock().unwrap().clone();
    assert!(
        shown.contains("requester:   ssh-keygen") && shown.contains("(claimed by the device)"),
        "{shown}"
    );

    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    drop(stdin);
    reader.join().unwrap();
}

#[test]
fn a_log_filter_that_does_not_parse_is_named_and_the_command_still_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run(
        vmux(tmp.path())
            .env("VMUX_LOG", "info,vmux_signer=loud")
            .args(["signer", "init", "--name", "lab"]),
        Duration::from_secs(30),
    );
    assert!(out.success(), "{out:?}");
    let warned: Vec<_> = out
        .stderr
        .lines()
        .filter(|l| l.contains("VMUX_LOG"))
        .collect();
    assert_eq!(warned.len(), 1, "{out:?}");
    assert!(
        warned[0].contains("\"info,vmux_signer=loud\" ignored"),
        "{out:?}"
    );
    assert!(
        warned[0].contains("VMUX_LOG=debug"),
        "says what would parse: {out:?}"
    );
    // A valid filter is taken as it is, without a word about it.
    let out = run(
        vmux(tmp.path())
            .env("VMUX_LOG", "warn,vmux_signer=info")
            .args(["signer", "keys", "list"]),
        Duration::from_secs(30),
    );
    assert!(out.success() && !out.stderr.contains("VMUX_LOG"), "{out:?}");
}
