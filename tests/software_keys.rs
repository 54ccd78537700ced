//! Issue 20: software signatures are made by ring. For every software key type
//! (ECDSA P-256, ECDSA P-384, Ed25519) a signer key logs in to a real sshd and makes an
//! SSHSIG that `ssh-keygen -Y verify` accepts; a software CA of every type issues a
//! session certificate that `ssh-keygen -L` reads and sshd accepts.

mod common;

use common::proc::{run, run_with_input};
use common::sshd::{Sshd, SshdOptions};
use common::vmux::*;
use std::process::Command;
use std::time::{Duration, Instant};

/// A signer whose first key is `key_type` and whose CA is `ca_type` (both in
/// software), paired with an agent; `session_certs` as the agent config says.
fn setup(
    key_type: &str,
    ca_type: &str,
    agent_toml: &str,
) -> (tempfile::TempDir, Signer, Agent, String) {
    let tmp = tempfile::tempdir().unwrap();
    let (shome, ahome) = (tmp.path().join("s"), tmp.path().join("a"));
    agent_config(&ahome, agent_toml);
    ok(
        &shome,
        &["signer", "init", "--name", "sw", "--type", key_type],
    );
    set_signer_config(&shome, "discovery", "\"off\"");
    ok(
        &shome,
        &[
            "signer", "ca", "init", "--store", "software", "--type", ca_type, "--force",
        ],
    );
    let pubkey = ok(&shome, &["signer", "keys", "pub"]);
    let signer = Signer::start(&shome, "127.0.0.1:0");
    pair(&ahome, &signer);
    let agent = Agent::start(&ahome);
    agent.wait_connected();
    (tmp, signer, agent, pubkey)
}

fn login_and_sshsig(key_type: &str, algorithm: &str) {
    let (tmp, signer, agent, pubkey) = setup(key_type, "ed25519", "session_certs = false\n");
    assert!(pubkey.starts_with(algorithm), "{pubkey}");

    // A login to a real sshd, approved on the signer.
    let sshd = Sshd::start(&pubkey);
    let login = background({
        let mut c = sshd.ssh_command(&agent.sock);
        c.arg("true");
        c
    });
    let p = signer.wait_pending(1);
    assert_eq!(p[0]["purpose"], "login", "{p:?}");
    signer.approve_next();
    let out = login.join().unwrap();
    assert!(out.success(), "{key_type}: sshd refused the login: {out:?}");

    // An SSHSIG that ssh-keygen verifies.
    let msg = tmp.path().join("msg.txt");
    std::fs::write(&msg, "signed by ring\n").unwrap();
    let pubfile = tmp.path().join("key.pub");
    std::fs::write(&pubfile, &pubkey).unwrap();
    let h = background(sshsig(&agent.sock, &pubfile, &msg, "file"));
    signer.wait_pending(1);
    signer.approve_next();
    let out = h.join().unwrap();
    assert!(out.success(), "{key_type}: ssh-keygen -Y sign: {out:?}");
    let allowed = tmp.path().join("allowed_signers");
    std::fs::write(&allowed, format!("me@example.com {pubkey}")).unwrap();
    let verify = run_with_input(
        Command::new("ssh-keygen")
            .args(["-Y", "verify", "-n", "file", "-I", "me@example.com", "-f"])
            .arg(&allowed)
            .arg("-s")
            .arg(tmp.path().join("msg.txt.sig")),
        b"signed by ring\n",
        T,
    );
    assert!(
        verify.success(),
        "{key_type}: ssh-keygen -Y verify: {verify:?}"
    );
}

#[test]
fn a_software_p256_key_logs_in_and_signs() {
    login_and_sshsig("ecdsa", "ecdsa-sha2-nistp256 ");
}

#[test]
fn a_software_p384_key_logs_in_and_signs() {
    login_and_sshsig("ecdsa-p384", "ecdsa-sha2-nistp384 ");
}

#[test]
fn a_software_ed25519_key_logs_in_and_signs() {
    login_and_sshsig("ed25519", "ssh-ed25519 ");
}

/// The session certificate a software CA of `ca_type` issued: read by `ssh-keygen -L`,
/// and a login that sshd accepts through `TrustedUserCAKeys`, signed in the agent.
fn software_ca_certificate(ca_type: &str, shown: &str) {
    let (tmp, signer, agent, _) = setup("ecdsa", ca_type, "");
    let p = signer.wait_pending(1);
    assert_eq!(p[0]["kind"], "cert", "{p:?}");
    signer.approve_next();
    let deadline = Instant::now() + T;
    let cert = loop {
        let l = agent.ssh_add(&["-L"]);
        if let Some(first) = l
            .stdout
            .lines()
            .find(|l| l.contains("-cert-v01@openssh.com"))
        {
            break first.to_string();
        }
        assert!(Instant::now() < deadline, "no certificate listed: {l:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let f = tmp.path().join("cert.pub");
    std::fs::write(&f, format!("{cert}\n")).unwrap();
    let l = run(Command::new("ssh-keygen").arg("-L").arg("-f").arg(&f), T);
    assert!(l.success(), "{l:?}");
    assert!(
        l.stdout.contains(&format!("Signing CA: {shown}")),
        "{}",
        l.stdout
    );

    let ca = ok(&signer.home, &["signer", "ca", "pub"]);
    let sshd = Sshd::start_with(SshdOptions {
        authorized_keys: String::new(),
        trusted_user_ca_keys: Some(ca),
        extra_config: vec![],
    });
    let out = run(sshd.ssh_command(&agent.sock).arg("true"), T);
    assert!(
        out.success(),
        "{ca_type} CA: sshd refused the certificate: {out:?}"
    );
    assert!(signer.pending().is_empty(), "the login asked the signer");
}

#[test]
fn a_software_p256_ca_issues_what_sshd_accepts() {
    software_ca_certificate("ecdsa", "ECDSA");
}

#[test]
fn a_software_p384_ca_issues_what_sshd_accepts() {
    software_ca_certificate("ecdsa-p384", "ECDSA");
}

#[test]
fn a_software_ed25519_ca_issues_what_sshd_accepts() {
    software_ca_certificate("ed25519", "ED25519");
}
