//! Proves (and documents) the test harness in `tests/common` using only
//! OpenSSH's own tools: ssh-keygen, ssh-agent, ssh-add, ssh and sshd.
//! Nothing here depends on vmux code.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::proc::{run, Daemon};
use common::sshd::{Sshd, SshdOptions};

const T: Duration = Duration::from_secs(30);

/// Generate an ed25519 key pair at `path`; returns the public key line.
fn keygen(path: &Path) -> String {
    let out = run(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "harness-user", "-f"])
            .arg(path),
        T,
    );
    assert!(out.success(), "ssh-keygen failed: {out:?}");
    std::fs::read_to_string(path.with_extension("pub"))
        .unwrap()
        .trim()
        .to_string()
}

/// Start `ssh-agent -D -a SOCK` holding the key at `key`.
fn agent_with_key(sock: &Path, key: &Path) -> Daemon {
    let agent = Daemon::spawn_named(
        "ssh-agent",
        Command::new("ssh-agent").arg("-D").arg("-a").arg(sock),
    );
    // ssh-agent prints `SSH_AUTH_SOCK=...; export SSH_AUTH_SOCK;` once bound.
    agent
        .wait_for_line(|l| l.starts_with("SSH_AUTH_SOCK="), T)
        .unwrap_or_else(|| panic!("ssh-agent did not start\n{}", agent.output()));
    assert!(sock.exists(), "agent socket missing\n{}", agent.output());
    let out = run(
        Command::new("ssh-add").arg(key).env("SSH_AUTH_SOCK", sock),
        T,
    );
    assert!(out.success(), "ssh-add failed: {out:?}");
    agent
}

#[test]
fn sshd_accepts_agent_key_and_rejects_unknown() {
    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("id_ed25519");
    let pubkey = keygen(&key);
    let sock = tmp.path().join("agent.sock");
    let _agent = agent_with_key(&sock, &key);

    // Authorized: login through the agent succeeds.
    let sshd = Sshd::start(&pubkey);
    let out = run(sshd.ssh_command(&sock).arg("true"), T);
    assert!(
        out.success(),
        "ssh through agent failed: {out:?}\n--- sshd log ---\n{}",
        sshd.log()
    );
    assert!(
        sshd.wait_for_log("Accepted publickey", Duration::from_secs(5)),
        "sshd log lacks 'Accepted publickey':\n{}",
        sshd.log()
    );

    // Host key verification against a known_hosts file.
    let kh = tmp.path().join("known_hosts");
    std::fs::write(&kh, format!("{}\n", sshd.known_hosts_line())).unwrap();
    let out = run(
        sshd.ssh_command_known_hosts(&sock, &kh)
            .arg("echo")
            .arg("hello"),
        T,
    );
    assert!(out.success(), "ssh with known_hosts failed: {out:?}");
    assert_eq!(out.stdout.trim(), "hello");

    // Wrong host key in known_hosts: must be refused.
    let other = sshd_other_host_key(tmp.path());
    std::fs::write(&kh, format!("[127.0.0.1]:{} {other}\n", sshd.port())).unwrap();
    let out = run(sshd.ssh_command_known_hosts(&sock, &kh).arg("true"), T);
    assert!(!out.success(), "ssh accepted a wrong host key: {out:?}");
    drop(sshd);

    // Not authorized: empty authorized_keys, login fails.
    let sshd = Sshd::start_with(SshdOptions::default());
    let out = run(sshd.ssh_command(&sock).arg("true"), T);
    assert!(
        !out.success(),
        "ssh succeeded with empty authorized_keys: {out:?}"
    );
    assert!(!out.timed_out, "ssh hung: {out:?}");
    assert!(
        out.stderr.contains("Permission denied"),
        "unexpected ssh error: {out:?}"
    );
    assert!(!sshd.log().contains("Accepted publickey"), "{}", sshd.log());
}

/// A fresh ed25519 public key (type + base64) that is not the server's.
fn sshd_other_host_key(dir: &Path) -> String {
    let line = keygen(&dir.join("other_host_key"));
    line.split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn daemon_collects_lines_and_run_times_out() {
    let d = Daemon::spawn(
        Command::new("sh")
            .arg("-c")
            .arg("echo out-1; echo err-1 >&2; sleep 0.2; echo ready; exec sleep 60"),
    );
    let l = d.wait_for_line(|l| l == "ready", T);
    assert_eq!(l.as_deref(), Some("ready"), "{}", d.output());
    let all = d.lines();
    assert!(all.contains(&"err-1".to_string()), "{}", d.output());
    assert_eq!(d.stdout_lines(), vec!["out-1", "ready"]);
    assert!(d
        .wait_for_line(|l| l == "never", Duration::from_millis(100))
        .is_none());

    let out = run(Command::new("sleep").arg("30"), Duration::from_millis(300));
    assert!(out.timed_out && !out.success(), "{out:?}");
    assert!(out.elapsed < Duration::from_secs(5), "{out:?}");

    let out = run(Command::new("sh").arg("-c").arg("echo hi; exit 3"), T);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(out.stdout, "hi\n");
}
