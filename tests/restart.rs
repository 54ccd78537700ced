//! Issue 9, day two: a signer that issued certificates starts again, serials only grow
//! (even when the counter is lost), old installs are migrated, and a stray file in a key
//! directory is named and skipped instead of bricking the signer.

mod common;

use common::proc::run;
use common::sshd::{Sshd, SshdOptions};
use common::vmux::*;
use std::process::Command;
use std::time::{Duration, Instant};

fn approve_cert(s: &Setup) -> u64 {
    let p = s.signer.wait_pending(1);
    assert_eq!(p[0]["kind"], "cert", "{p:?}");
    s.signer.approve_next();
    let deadline = Instant::now() + T;
    loop {
        let st: serde_json::Value =
            serde_json::from_str(&ok(&s.agent.home, &["agent", "status", "--json"])).unwrap();
        if let Some(serial) = st["certificate"]["serial"].as_u64() {
            return serial;
        }
        assert!(Instant::now() < deadline, "no certificate: {st}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn restart(s: &mut Setup) {
    let addr = s.signer.addr.clone();
    s.agent.stop();
    s.signer.stop();
    s.signer = Signer::start(&s.signer.home, &addr);
    s.agent = Agent::start(&s.agent.home);
    s.agent.wait_connected();
}

#[test]
fn a_signer_that_issued_certificates_lives_through_restarts() {
    let mut s = Setup::with_agent_config("");
    let first = approve_cert(&s);
    let ca = ok(&s.signer.home, &["signer", "ca", "pub"]);
    let sshd = Sshd::start_with(SshdOptions {
        authorized_keys: s.pubkey.clone(),
        trusted_user_ca_keys: Some(ca),
        extra_config: vec![],
    });
    assert!(run(sshd.ssh_command(&s.agent.sock).arg("true"), T).success());
    // The counter lives beside the CA key, never in its directory.
    assert!(!s.signer.home.join("signer/ca/serial").exists());
    assert!(s.signer.home.join("signer/ca-serial").exists());

    // Day two: both daemons restart on what day one left behind.
    restart(&mut s);
    let keys = ok(&s.signer.home, &["signer", "keys", "list"]);
    assert!(keys.contains("SHA256:"), "{keys}");
    let second = approve_cert(&s);
    assert!(second > first, "serial {second} after {first}");
    assert!(run(sshd.ssh_command(&s.agent.sock).arg("true"), T).success());

    // An install from before the move: the counter in ca/ is migrated on start.
    s.agent.stop();
    s.signer.stop();
    let home = s.signer.home.join("signer");
    std::fs::rename(home.join("ca-serial"), home.join("ca/serial")).unwrap();
    let addr = s.signer.addr.clone();
    s.signer = Signer::start(&s.signer.home, &addr);
    assert!(!home.join("ca/serial").exists() && home.join("ca-serial").exists());
    // A stray file in a key directory is skipped and named, not fatal.
    std::fs::write(home.join("keys/notes.txt"), "my keys are here\n").unwrap();
    let list = try_vmux(&s.signer.home, &["signer", "keys", "list"]);
    assert!(list.success(), "{list:?}");
    assert!(
        list.stderr.contains("notes.txt"),
        "the stray file is named: {list:?}"
    );

    // The counter is lost: the next serial starts again from the clock, above the others.
    std::fs::remove_file(home.join("ca-serial")).unwrap();
    s.signer.stop();
    s.signer = Signer::start(&s.signer.home, &addr);
    s.agent = Agent::start(&s.agent.home);
    s.agent.wait_connected();
    let third = approve_cert(&s);
    assert!(third > second, "serial {third} reissued after {second}");

    // A counter that is not a number fails closed, naming it.
    std::fs::write(home.join("ca-serial"), "garbage").unwrap();
    let h = background({
        let mut c = vmux(&s.agent.home);
        c.args(["agent", "request-cert"]);
        c
    });
    let p = s.signer.wait_pending(1);
    assert_eq!(p[0]["kind"], "cert");
    s.signer.approve_next();
    let out = h.join().unwrap();
    assert!(!out.success(), "a corrupt counter must not issue: {out:?}");
    assert!(
        s.signer.log().contains("\"decision\":\"internal\""),
        "{}",
        s.signer.log()
    );
}

#[test]
fn a_login_started_just_after_the_signer_came_back_succeeds() {
    let mut s = Setup::new();
    let sshd = Sshd::start(&s.pubkey);
    let addr = s.signer.addr.clone();
    s.signer.stop();
    s.signer = Signer::start(&s.signer.home, &addr);
    std::thread::sleep(Duration::from_millis(500));
    let h = background({
        let mut c = sshd.ssh_command(&s.agent.sock);
        c.arg("true");
        c
    });
    s.signer.approve_next();
    let out = h.join().unwrap();
    assert!(out.success(), "{out:?}");

    // The signer is down for good: the request fails within connect_timeout, not at once
    // and not never.
    s.signer.stop();
    let started = Instant::now();
    let out = run(sshd.ssh_command(&s.agent.sock).arg("true"), T);
    assert!(!out.success());
    let took = started.elapsed();
    assert!(took >= Duration::from_secs(5), "gave up after {took:?}");
    assert!(
        ok(&s.agent.home, &["agent", "log"]).contains("signerUnavailable"),
        "{}",
        ok(&s.agent.home, &["agent", "log"])
    );
}

#[test]
fn commands_find_an_agent_on_another_socket() {
    let tmp = tempfile::tempdir().unwrap();
    let (shome, ahome) = (tmp.path().join("s"), tmp.path().join("a"));
    agent_config(&ahome, "session_certs = false\n");
    let pubkey = Signer::init(&shome, "test-signer");
    let signer = Signer::start(&shome, "127.0.0.1:0");
    pair(&ahome, &signer);
    // Not running yet: status says so and exits non-zero.
    let st = try_vmux(&ahome, &["agent", "status"]);
    assert!(!st.success() && st.stdout.contains("not running"), "{st:?}");
    let other = tmp.path().join("elsewhere/dir");
    std::fs::create_dir_all(&other).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o700)).unwrap();
    let sock = other.join("s.sock");
    let d = common::proc::Daemon::spawn_named(
        "vmux agent",
        vmux(&ahome).args(["agent", "run", "--socket"]).arg(&sock),
    );
    d.wait_for_line(|l| l.contains("vmux agent listening on"), T)
        .unwrap_or_else(|| panic!("agent did not start: {}", d.output()));
    let a = Agent {
        home: ahome.clone(),
        daemon: Some(d),
        sock: sock.clone(),
    };
    a.wait_connected();
    let st = ok(&ahome, &["agent", "status"]);
    assert!(st.contains(&sock.display().to_string()), "{st}");
    assert!(ok(&ahome, &["agent", "refresh"]).contains("refreshed"));
    let h = background({
        let mut c = vmux(&ahome);
        c.args(["agent", "request-cert"]);
        c
    });
    let p = signer.wait_pending(1);
    assert_eq!(p[0]["kind"], "cert");
    signer.approve_next();
    let out = h.join().unwrap();
    assert!(out.success(), "{out:?}");
    assert!(
        out.stderr.contains("waiting for approval on the signer"),
        "{out:?}"
    );
    assert!(a.ssh_add(&["-L"]).stdout.contains("-cert-v01@openssh.com"));
    assert!(ok(&ahome, &["agent", "reset"]).contains("dropped"));
    assert!(!a.ssh_add(&["-L"]).stdout.contains("-cert-v01@openssh.com"));
    // ssh-add -D with no certificate to drop: success, as with OpenSSH's agent.
    let out = a.ssh_add(&["-D"]);
    assert!(out.success(), "{out:?}");
    // SSH_AUTH_SOCK is honoured when the status file is gone.
    std::fs::remove_file(ahome.join("agent/status.json")).unwrap();
    let out = common::proc::run(
        vmux(&ahome)
            .args(["agent", "reset"])
            .env("SSH_AUTH_SOCK", &sock),
        T,
    );
    assert!(out.success(), "{out:?}");
    let _ = pubkey;
}

#[test]
fn keys_follow_the_running_signer() {
    let s = Setup::new();
    let listed = |s: &Setup| s.agent.ssh_add(&["-l"]).stdout;
    assert_eq!(listed(&s).lines().count(), 1);
    // Added while the signer runs: the agent lists it within 2 s.
    let line = ok(
        &s.signer.home,
        &[
            "signer",
            "keys",
            "add",
            "--type",
            "ed25519",
            "--comment",
            "laptop-git",
        ],
    );
    let fp = ssh_key::PublicKey::from_openssh(line.trim())
        .unwrap()
        .fingerprint(ssh_key::HashAlg::Sha256)
        .to_string();
    let within = |what: &str, f: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(2);
        while !f() {
            assert!(Instant::now() < deadline, "{what} not seen within 2 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    within("the added key", &|| listed(&s).contains(&fp));
    // Disabled: gone from the agent; enabled again: back.
    ok(&s.signer.home, &["signer", "keys", "disable", &fp]);
    within("the disabled key leaving", &|| !listed(&s).contains(&fp));
    assert!(ok(&s.signer.home, &["signer", "keys", "list"]).contains("DISABLED"));
    ok(&s.signer.home, &["signer", "keys", "enable", &fp]);
    within("the enabled key", &|| listed(&s).contains(&fp));
    ok(
        &s.signer.home,
        &["signer", "keys", "rename", &fp, "work-laptop"],
    );
    within("the new name", &|| listed(&s).contains("work-laptop"));
    ok(&s.signer.home, &["signer", "keys", "remove", &fp]);
    within("the removed key leaving", &|| !listed(&s).contains(&fp));
    assert!(
        s.signer.log().contains("\"event\":\"keys\""),
        "{}",
        s.signer.log()
    );

    // A .pub whose private key is missing is marked and never printed as usable.
    let pubs: Vec<_> = std::fs::read_dir(s.signer.home.join("signer/keys"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let private = pubs.iter().find(|p| p.extension().is_none()).unwrap();
    std::fs::rename(private, s.path("aside")).unwrap();
    let list = ok(&s.signer.home, &["signer", "keys", "list"]);
    assert!(list.contains("MISSING PRIVATE KEY"), "{list}");
    std::fs::rename(s.path("aside"), private).unwrap();
}

#[test]
fn an_imported_passphrase_protected_key_logs_in() {
    let s = Setup::new();
    let file = s.path("id_ed25519");
    let out = run(
        Command::new("ssh-keygen")
            .args([
                "-q",
                "-t",
                "ed25519",
                "-N",
                "import me",
                "-C",
                "old-laptop",
                "-f",
            ])
            .arg(&file),
        T,
    );
    assert!(out.success(), "{out:?}");
    let out = common::proc::run_with_stdin(
        vmux(&s.signer.home)
            .args(["signer", "keys", "import"])
            .arg(&file),
        "import me\n",
        T,
    );
    let stderr = &out.stderr;
    assert!(out.success(), "{stderr}");
    assert!(
        stderr.contains("copies of this key still exist"),
        "{stderr}"
    );
    let public = std::fs::read_to_string(file.with_extension("pub")).unwrap();
    let sshd = Sshd::start(&public);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !s.agent.ssh_add(&["-l"]).stdout.contains("old-laptop") {
        assert!(Instant::now() < deadline, "imported key not listed");
        std::thread::sleep(Duration::from_millis(50));
    }
    let h = background({
        let mut c = sshd.ssh_command(&s.agent.sock);
        c.arg("true");
        c
    });
    let p = s.signer.wait_pending(1);
    assert!(
        p[0]["keyComment"].as_str().unwrap().contains("old-laptop"),
        "{p:?}"
    );
    s.signer.approve_next();
    assert!(h.join().unwrap().success());
}

#[test]
fn pairing_assumes_port_7227_and_names_a_port_that_is_not_a_signer() {
    let tmp = tempfile::tempdir().unwrap();
    let ahome = tmp.path().join("a");
    agent_config(&ahome, "");
    let sshd = Sshd::start("");
    let out = try_vmux(
        &ahome,
        &[
            "agent",
            "pair",
            &format!("127.0.0.1:{}", sshd.port()),
            "--wait",
            "5",
        ],
    );
    assert!(!out.success());
    assert!(out.stderr.contains("not a vmux signer"), "{out:?}");
    // No port: 7227. Asked in a network namespace of the test's own, where nothing
    // listens there (a signer of this machine's user might, on the host's loopback).
    let ns = common::netns::Netns::new("port");
    let out = run(
        vmux_in(Some(&ns), &ahome).args(["agent", "pair", "127.0.0.1", "--wait", "5"]),
        T,
    );
    assert!(
        !out.success() && out.stderr.contains("127.0.0.1:7227"),
        "{out:?}"
    );
}
