//! Issue 13: the approval surfaces beyond the terminal (desktop notifications through a
//! private D-Bus session, ssh-askpass), user verification with PAM after Approve, and
//! what a service install needs (systemd units, completions, man pages).

mod common;

use common::pam::{PamFixture, PASSWORD};
use common::proc::{run, Daemon};
use common::vmux::*;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// A paired signer + agent whose signer runs with `env` and `config` lines added.
fn setup_with(env: &[(&str, String)], config: &str) -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let (shome, ahome) = (tmp.path().join("s"), tmp.path().join("a"));
    agent_config(&ahome, "session_certs = false\n");
    let pubkey = Signer::init(&shome, "test-signer");
    // User verification is configured once the agent is paired (pairing would ask for
    // it too); the signer reads it per request.
    let (later, now): (Vec<&str>, Vec<&str>) =
        config.lines().partition(|l| l.starts_with("verify"));
    for line in now {
        let (k, v) = line.split_once(" = ").unwrap();
        set_signer_config(&shome, k, v);
    }
    let mut cmd = vmux(&shome);
    cmd.args(["signer", "run", "--listen", "127.0.0.1:0", "--no-ui"]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let d = Daemon::spawn_named("vmux signer", &mut cmd);
    let line = d
        .wait_for_line(|l| l.contains("listening on"), T)
        .unwrap_or_else(|| panic!("signer did not start: {}", d.output()));
    let signer = Signer {
        home: shome.clone(),
        addr: line.rsplit(' ').next().unwrap().to_string(),
        daemon: Some(d),
    };
    pair(&ahome, &signer);
    for line in later {
        let (k, v) = line.split_once(" = ").unwrap();
        set_signer_config(&shome, k, v);
    }
    let agent = Agent::start(&ahome);
    agent.wait_connected();
    Setup {
        tmp,
        signer,
        agent,
        pubkey,
    }
}

fn sign(s: &Setup, name: &str) -> std::thread::JoinHandle<common::proc::Output> {
    let msg = s.path(name);
    std::fs::write(&msg, name).unwrap();
    background(sshsig(&s.agent.sock, &s.pubkey_file(), &msg, "file"))
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + T;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn records(log: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[test]
fn desktop_notifications_show_approve_and_withdraw() {
    let tmp = tempfile::tempdir().unwrap();
    let mut bus = Daemon::spawn_named(
        "dbus-daemon",
        Command::new("dbus-daemon").args(["--session", "--nofork", "--print-address"]),
    );
    let address = bus
        .wait_for_line(|l| l.starts_with("unix:"), T)
        .unwrap_or_else(|| panic!("dbus-daemon (apt-get install dbus): {}", bus.output()));
    let log = tmp.path().join("notifications.jsonl");
    let server = Daemon::spawn_named(
        "notification server",
        Command::new("/usr/bin/python3")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/fixtures/notification_server.py"
            ))
            .arg(&log)
            .env("DBUS_SESSION_BUS_ADDRESS", &address),
    );
    wait_until("the notification server", || {
        records(&log).iter().any(|r| r["method"] == "ready")
    });
    let s = setup_with(
        &[("DBUS_SESSION_BUS_ADDRESS", address.clone())],
        "notify = true",
    );

    // A request: a critical "SSH Sign Request" with Approve and Deny.
    let h = sign(&s, "m1");
    let signs = || -> Vec<serde_json::Value> {
        records(&log)
            .into_iter()
            .filter(|r| r["method"] == "Notify" && r["summary"] != "Pairing Request")
            .collect()
    };
    // The pairing itself was announced, without an Approve button (it needs its code).
    let pairing = records(&log)
        .into_iter()
        .find(|r| r["summary"] == "Pairing Request")
        .expect("the pairing was notified");
    assert_eq!(pairing["actions"], serde_json::json!(["deny", "Deny"]));
    wait_until("Notify", || !signs().is_empty());
    let n = signs().remove(0);
    assert_eq!(n["summary"], "SSH Sign Request", "{n}");
    let body = n["body"].as_str().unwrap();
    // The whole display, every field an Approve binds.
    assert!(
        body.starts_with("SIGNATURE request from ")
            && body.contains("purpose:     file signature")
            && body.contains("requester:")
            && body.contains("key:         SHA256:"),
        "{n}"
    );
    assert_eq!(n["urgency"], 2, "critical urgency: {n}");
    let actions: Vec<&str> = n["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(
        actions.contains(&"approve") && actions.contains(&"deny"),
        "{n}"
    );
    // Pressing Approve decides through the digest-bound path.
    let invoke = |id: &serde_json::Value, action: &str| {
        // A person reads the notification before pressing a button.
        std::thread::sleep(Duration::from_millis(1100));
        let out = run(
            Command::new("gdbus")
                .args([
                    "call",
                    "--session",
                    "--dest",
                    "org.freedesktop.Notifications",
                    "--object-path",
                    "/org/freedesktop/Notifications",
                    "--method",
                    "test.Control.Invoke",
                ])
                .arg(id.to_string())
                .arg(action)
                .env("DBUS_SESSION_BUS_ADDRESS", &address),
            T,
        );
        assert!(out.success(), "{out:?}");
    };
    invoke(&n["id"], "approve");
    let out = h.join().unwrap();
    assert!(out.success(), "approve from the notification: {out:?}");

    // Decided elsewhere: the notification is withdrawn.
    let h = sign(&s, "m2");
    wait_until("a second Notify", || signs().len() >= 2);
    let second = signs().remove(1);
    s.signer.deny_next();
    assert!(!h.join().unwrap().success());
    wait_until("CloseNotification", || {
        records(&log)
            .iter()
            .any(|r| r["method"] == "CloseNotification" && r["id"] == second["id"])
    });

    // A request that needs user verification is never approved from a notification:
    // no Approve button, and a forged approve action is ignored.
    set_signer_config(&s.signer.home, "verify", "\"pam\"");
    let h = sign(&s, "m3");
    wait_until("a third Notify", || signs().len() >= 3);
    let third = signs().remove(2);
    assert_eq!(
        third["actions"],
        serde_json::json!(["deny", "Deny"]),
        "{third}"
    );
    invoke(&third["id"], "approve");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        s.signer.pending().len(),
        1,
        "an approve action bypassed verification"
    );
    s.signer.deny_next();
    assert!(!h.join().unwrap().success());
    drop(server);
    bus.terminate(Duration::from_secs(2));
}

/// A script for SSH_ASKPASS: records its prompt and answers as `answer` says.
fn askpass_script(dir: &Path) -> std::path::PathBuf {
    let p = dir.join("askpass.sh");
    std::fs::write(
        &p,
        format!(
            "#!/bin/sh\nprintf '%s\\n---\\n' \"$SSH_ASKPASS_PROMPT $1\" >> {d}/asked\n\
             sleep 1.2\n[ \"$(cat {d}/answer)\" = yes ] && exit 0\nexit 1\n",
            d = dir.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

#[test]
fn ssh_askpass_confirms_like_ssh_add_c() {
    let dir = tempfile::tempdir().unwrap();
    let script = askpass_script(dir.path());
    std::fs::write(dir.path().join("answer"), "yes").unwrap();
    let s = setup_with(
        &[("SSH_ASKPASS", script.display().to_string())],
        "approver = \"askpass\"",
    );
    let out = sign(&s, "m1").join().unwrap();
    assert!(out.success(), "askpass said yes: {out:?}");
    let asked = std::fs::read_to_string(dir.path().join("asked")).unwrap();
    let last = asked.trim_end().rsplit("---").nth(1).unwrap_or("").trim();
    assert!(
        last.starts_with("confirm ") && last.contains("file signature"),
        "{asked}"
    );
    std::fs::write(dir.path().join("answer"), "no").unwrap();
    let out = sign(&s, "m2").join().unwrap();
    assert!(
        !out.success() && out.stderr.contains("agent refused"),
        "{out:?}"
    );
    assert!(s.signer.log().contains("userDenied"));
}

/// `vmux signer approve ID` with the password on standard input.
fn approve_with(s: &Setup, password: &str) -> common::proc::Output {
    let p = s.signer.wait_pending(1);
    assert_eq!(p[0]["verify"], "pam", "{p:?}");
    common::proc::run_with_stdin(
        vmux(&s.signer.home).args(["signer", "approve", p[0]["id"].as_str().unwrap()]),
        &format!("{password}\n"),
        T,
    )
}

/// A signer that verifies with a PAM service whose auth is `module` (for a test user).
fn with_pam(module: &str) -> (PamFixture, Setup) {
    let pam = PamFixture::with_auth(module);
    let s = setup_with(
        &[],
        &format!(
            "verify = \"pam\"\npam_service = \"{}\"\npam_user = \"{}\"",
            pam.service, pam.user
        ),
    );
    (pam, s)
}

#[test]
fn pam_verifies_after_approve_and_before_signing() {
    let (_pam, s) = with_pam("pam_unix.so");
    // Approve + the right password: signed.
    let h = sign(&s, "m1");
    let out = approve_with(&s, PASSWORD);
    assert!(out.success(), "{out:?}");
    assert!(h.join().unwrap().success());
    // Approve + a wrong password: presenceFailed, nothing signed.
    let h = sign(&s, "m2");
    let out = approve_with(&s, "wrong");
    assert!(
        !out.success() && out.stderr.contains("verification failed"),
        "{out:?}"
    );
    let r = h.join().unwrap();
    assert!(!r.success(), "{r:?}");
    assert!(s.signer.log().contains("presenceFailed"));
    assert!(s.signer.pending().is_empty());
    // --next cannot answer a verification: nothing is decided.
    let h = sign(&s, "m3");
    s.signer.wait_pending(1);
    let next = try_vmux(&s.signer.home, &["signer", "approve", "--next"]);
    assert!(
        !next.success() && next.stderr.contains("--digest"),
        "{next:?}"
    );
    assert_eq!(s.signer.pending().len(), 1);
    s.signer.deny_next();
    assert!(!h.join().unwrap().success());
}

#[test]
fn pam_deny_refuses_every_approval() {
    let (_pam, s) = with_pam("pam_deny.so");
    let h = sign(&s, "m1");
    let out = approve_with(&s, PASSWORD);
    assert!(!out.success(), "{out:?}");
    assert!(!h.join().unwrap().success());
    assert!(s.signer.log().contains("presenceFailed"));
}

#[test]
fn services_completions_and_man_pages() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("h");
    let units = tmp.path().join("units");
    for side in ["agent", "signer"] {
        let out = ok(
            &home,
            &[side, "install-service", "--dir", units.to_str().unwrap()],
        );
        assert!(
            out.contains("systemctl --user") && out.contains("uninstall:"),
            "{out}"
        );
    }
    let files: Vec<_> = [
        "vmux-agent.socket",
        "vmux-agent.service",
        "vmux-signer.service",
    ]
    .iter()
    .map(|f| units.join(f))
    .collect();
    let text = std::fs::read_to_string(&files[1]).unwrap();
    assert!(
        text.contains(env!("CARGO_BIN_EXE_vmux")) && text.contains("agent run"),
        "{text}"
    );
    let out = run(
        Command::new("systemd-analyze").arg("verify").args(&files),
        T,
    );
    assert!(
        out.success(),
        "systemd-analyze verify (apt-get install systemd): {out:?}"
    );

    let bin = env!("CARGO_BIN_EXE_vmux");
    let out = run(
        Command::new("bash").args([
            "-c",
            &format!("source <({bin} completions bash); complete -p vmux"),
        ]),
        T,
    );
    assert!(out.success() && out.stdout.contains("vmux"), "{out:?}");

    let man = tmp.path().join("man");
    let listed = ok(&home, &["man", man.to_str().unwrap()]);
    assert!(listed.contains("vmux-signer-approve.1"), "{listed}");
    let out = run(
        Command::new("man")
            .arg("-l")
            .arg(man.join("vmux-signer-approve.1"))
            .env("MANPAGER", "cat")
            .env("PAGER", "cat"),
        T,
    );
    assert!(
        out.success() && out.stdout.contains("--code"),
        "man -l (apt-get install man-db): {out:?}"
    );
}
