//! Issue 3: session certificates — one approval, then local signatures that sshd
//! verifies through the signer's CA (`TrustedUserCAKeys`).

mod common;

use common::proc::run;
use common::sshd::{Sshd, SshdOptions};
use common::vmux::*;
use std::process::Command;
use std::time::{Duration, Instant};

const CERT_ALG: &str = "ecdsa-sha2-nistp256-cert-v01@openssh.com";

/// Approve the pending certificate request and wait until `ssh-add -L` lists it.
fn approve_cert(s: &Setup) -> String {
    let p = s.signer.wait_pending(1);
    assert_eq!(p[0]["kind"], "cert", "{p:?}");
    s.signer.approve_next();
    wait_cert_listed(s, None)
}

/// Wait until the first listed identity is a certificate (other than `not`).
fn wait_cert_listed(s: &Setup, not: Option<&str>) -> String {
    let deadline = Instant::now() + T;
    loop {
        let l = s.agent.ssh_add(&["-L"]);
        if let Some(first) = l.stdout.lines().next() {
            if first.starts_with(CERT_ALG) && Some(first) != not {
                return first.to_string();
            }
        }
        assert!(Instant::now() < deadline, "no certificate listed: {l:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn keygen_l(s: &Setup, cert_line: &str) -> String {
    let f = s.path("cert.pub");
    std::fs::write(&f, format!("{cert_line}\n")).unwrap();
    let out = run(Command::new("ssh-keygen").arg("-L").arg("-f").arg(&f), T);
    assert!(out.success(), "{out:?}");
    out.stdout
}

fn ca_sshd(s: &Setup, authorized_keys: &str) -> Sshd {
    let ca = ok(&s.signer.home, &["signer", "ca", "pub"]);
    Sshd::start_with(SshdOptions {
        authorized_keys: authorized_keys.into(),
        trusted_user_ca_keys: Some(ca),
        extra_config: vec![],
    })
}

#[test]
fn one_approval_then_twenty_logins_without_prompts() {
    let s = Setup::with_agent_config("");
    let cert = approve_cert(&s);
    // Listed first, with the session comment, before the signer key.
    let listed = s.agent.ssh_add(&["-L"]).stdout;
    assert!(
        listed
            .lines()
            .next()
            .unwrap()
            .ends_with(" vmux-session-cert"),
        "{listed}"
    );
    assert!(
        listed
            .lines()
            .nth(1)
            .unwrap()
            .starts_with("ecdsa-sha2-nistp256 "),
        "{listed}"
    );
    let status = ok(&s.agent.home, &["agent", "status"]);
    assert!(status.contains("certificate: valid until"), "{status}");

    // No authorized_keys: only the CA makes these logins possible.
    let sshd = ca_sshd(&s, "");
    for i in 0..20 {
        let out = run(sshd.ssh_command(&s.agent.sock).arg("true"), T);
        assert!(out.success(), "login {i} failed: {out:?}");
    }
    assert!(
        s.signer.pending().is_empty(),
        "no further approval may be needed"
    );
    assert!(sshd.wait_for_log("Accepted publickey", Duration::from_secs(5)));
    let log = sshd.log();
    assert!(
        log.contains("ECDSA-CERT") && log.contains("CA ECDSA"),
        "{log}"
    );
    let agent_log = ok(&s.agent.home, &["agent", "log"]);
    assert!(agent_log.matches("local-cert").count() >= 20, "{agent_log}");

    // The certificate's fields.
    let l = keygen_l(&s, &cert);
    let user = sshd.user().to_string();
    assert!(
        l.contains("Type: ecdsa-sha2-nistp256-cert-v01@openssh.com user certificate"),
        "{l}"
    );
    assert!(l.contains("Key ID: \"vmux:"), "{l}");
    assert!(
        l.contains(&format!("Principals: \n                {user}")),
        "{l}"
    );
    // What a session certificate carries by default: a terminal and port forwarding;
    // no agent or X11 forwarding, no user rc.
    for e in ["permit-port-forwarding", "permit-pty"] {
        assert!(l.contains(e), "missing {e}: {l}");
    }
    for e in [
        "permit-X11-forwarding",
        "permit-agent-forwarding",
        "permit-user-rc",
    ] {
        assert!(!l.contains(e), "{e} must not be granted by default: {l}");
    }

    // ssh-add -D drops it (the key was in memory only); logins need the signer again.
    assert!(s.agent.ssh_add(&["-D"]).success());
    assert!(!s.agent.ssh_add(&["-L"]).stdout.contains(CERT_ALG));
}

#[test]
fn policy_caps_validity_and_can_turn_issuance_off() {
    // Ask for 24 h; the signer's policy allows 1 h.
    let tmp_policy = |s: &Setup| ok(&s.signer.home, &["signer", "ca", "policy"]);
    let s = Setup::with_agent_config("session_certs = false\n");
    let me = common::sshd::current_user();
    let p = ok(
        &s.signer.home,
        &[
            "signer",
            "ca",
            "policy",
            "--max-validity",
            "1h",
            "--principals",
            "alice,deploy",
        ],
    );
    assert!(
        p.contains("max validity: 1h") && p.contains("only alice, deploy may be asked for"),
        "{p}"
    );
    // The workstation asks for its own user, who is not on the list: refused before
    // anyone is asked, with the reason on the requester's side.
    let out = try_vmux(&s.agent.home, &["agent", "request-cert"]);
    assert!(!out.success(), "{out:?}");
    assert!(
        s.signer.pending().is_empty(),
        "asked a person about a refused principal"
    );
    let log = ok(&s.agent.home, &["agent", "log"]);
    assert!(
        log.contains(&format!("principal {me} is not allowed")),
        "{log}"
    );
    ok(
        &s.signer.home,
        &[
            "signer",
            "ca",
            "policy",
            "--principals",
            &format!("alice,{me}"),
        ],
    );
    let req = background({
        let mut c = vmux(&s.agent.home);
        c.args(["agent", "request-cert", "--validity", "24h"]);
        c
    });
    let pending = s.signer.wait_pending(1);
    assert_eq!(pending[0]["kind"], "cert");
    assert_eq!(pending[0]["validitySecs"], 3600);
    assert_eq!(pending[0]["principals"], serde_json::json!([me.clone()]));
    assert!(
        pending[0]["grants"]
            .as_str()
            .unwrap()
            .contains(&format!("logins as {me} ")),
        "{pending:?}"
    );
    s.signer.approve_next();
    let out = req.join().unwrap();
    assert!(out.success(), "{out:?}");
    let cert = wait_cert_listed(&s, None);
    let l = keygen_l(&s, &cert);
    assert!(l.contains(&me) && !l.contains("alice"), "{l}");
    let status: serde_json::Value =
        serde_json::from_str(&ok(&s.agent.home, &["agent", "status", "--json"])).unwrap();
    let c = &status["certificate"];
    let span = c["validBefore"].as_u64().unwrap() - c["validAfter"].as_u64().unwrap();
    // valid_after is backdated 60 s for clock skew.
    assert!(
        (3600..=3600 + 62).contains(&span),
        "validity span {span}: {status}"
    );

    // Issuance off: refused without a prompt, and logins fall back to per-signature approval.
    ok(
        &s.signer.home,
        &["signer", "ca", "policy", "--issue", "off"],
    );
    assert!(tmp_policy(&s).contains("issue: off"));
    ok(&s.agent.home, &["agent", "reset"]);
    let out = try_vmux(&s.agent.home, &["agent", "request-cert"]);
    assert!(!out.success());
    assert!(
        s.signer.pending().is_empty(),
        "issuance off must not prompt"
    );
    assert!(s.signer.log().contains("policyDenied"));
    let sshd = ca_sshd(&s, &s.pubkey);
    let login = background({
        let mut c = sshd.ssh_command(&s.agent.sock);
        c.arg("true");
        c
    });
    let p = s.signer.wait_pending(1);
    assert_eq!(p[0]["kind"], "sign");
    s.signer.approve_next();
    assert!(login.join().unwrap().success());
}

#[test]
fn renewal_before_expiry_and_fallback_after() {
    // 20 s certificates renewed when under 12 s remain.
    let mut s = Setup::with_agent_config("cert_validity_secs = 20\ncert_renew_before_secs = 12\n");
    let first = approve_cert(&s);
    // About 8 s later the agent asks again, by itself.
    let p = s.signer.wait_pending(1);
    assert_eq!(p[0]["kind"], "cert");
    s.signer.approve_next();
    let second = wait_cert_listed(&s, Some(&first));
    assert_ne!(first, second);

    // Signer gone: the certificate leaves the list at valid_before, signing falls back
    // to the signer key and fails cleanly (the signer is away).
    s.signer.stop();
    let deadline = Instant::now() + Duration::from_secs(40);
    while s.agent.ssh_add(&["-L"]).stdout.contains(CERT_ALG) {
        assert!(Instant::now() < deadline, "certificate never expired");
        std::thread::sleep(Duration::from_millis(200));
    }
    let status = ok(&s.agent.home, &["agent", "status"]);
    assert!(status.contains("certificate: expired at"), "{status}");
    let msg = s.path("m");
    std::fs::write(&msg, "x").unwrap();
    let started = Instant::now();
    let out = run(
        &mut sshsig(&s.agent.sock, &s.pubkey_file(), &msg, "file"),
        T,
    );
    assert!(!out.success());
    assert!(started.elapsed() < Duration::from_secs(12));
    assert!(s.agent.ssh_add(&["-l"]).success(), "the agent survives");
}

#[test]
fn ephemeral_key_never_reaches_disk_and_restart_forgets_it() {
    use base64::Engine;
    let mut s = Setup::with_agent_config("");
    let cert = approve_cert(&s);
    // The certified public point: any serialization of the ephemeral key pair would
    // contain it (OpenSSH, PKCS#8 and raw forms all carry the public key or can be
    // found by the private scalar next to it). Search raw, base64 and hex encodings.
    let blob = base64::engine::general_purpose::STANDARD
        .decode(cert.split_whitespace().nth(1).unwrap())
        .unwrap();
    let c = ssh_key::Certificate::from_bytes(&blob).unwrap();
    let point = match c.public_key() {
        ssh_key::public::KeyData::Ecdsa(k) => k.as_sec1_bytes().to_vec(),
        other => panic!("unexpected key {other:?}"),
    };
    let b64 = base64::engine::general_purpose::STANDARD.encode(&point);
    let hex: String = point.iter().map(|b| format!("{b:02x}")).collect();
    let mut files = vec![];
    let mut stack = vec![s.agent.home.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.is_file() {
                files.push(p);
            }
        }
    }
    assert!(!files.is_empty());
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !bytes.windows(point.len()).any(|w| w == point.as_slice()),
            "{}",
            f.display()
        );
        assert!(
            !text.contains(&b64) && !text.contains(&hex),
            "{} holds the session key",
            f.display()
        );
        assert!(!text.contains("PRIVATE KEY"), "{}", f.display());
    }
    // After a restart there is no certificate until a new one is approved.
    let home = s.agent.home.clone();
    s.agent.stop();
    s.agent = Agent::start(&home);
    let listed = s.agent.ssh_add(&["-L"]);
    assert!(!listed.stdout.contains(CERT_ALG), "{listed:?}");
    let p = s.signer.wait_pending(1);
    assert_eq!(p[0]["kind"], "cert");
}

#[test]
fn the_session_certificate_signs_logins_only() {
    let s = Setup::with_agent_config("");
    let cert = approve_cert(&s);
    // A login signs locally: no prompt.
    let sshd = ca_sshd(&s, "");
    let out = run(sshd.ssh_command(&s.agent.sock).arg("true"), T);
    assert!(out.success(), "{out:?}");
    assert!(s.signer.pending().is_empty());

    // A git signature with the signer's key goes to the signer, certificate or not.
    let msg = s.path("commit");
    std::fs::write(&msg, "tree abc\n").unwrap();
    let h = background(sshsig(&s.agent.sock, &s.pubkey_file(), &msg, "git"));
    let p = s.signer.wait_pending(1);
    assert_eq!(p[0]["purpose"], "git signature");
    s.signer.approve_next();
    assert!(h.join().unwrap().success());

    // Asked to sign a file signature with the certificate itself: refused locally, and
    // nothing reaches the signer (it does not hold that key).
    let certfile = s.path("session-cert.pub");
    std::fs::write(&certfile, format!("{cert}\n")).unwrap();
    std::fs::write(&msg, "data").unwrap();
    let out = run(&mut sshsig(&s.agent.sock, &certfile, &msg, "file"), T);
    assert!(!out.success(), "the certificate signed an SSHSIG: {out:?}");
    assert!(s.signer.pending().is_empty());
    let log = ok(&s.agent.home, &["agent", "log"]);
    assert!(log.contains("local-cert"), "{log}");
}

/// Two workstation users, two homes, one signer: each certificate names its own user
/// (the CA issues for the name asked, and the prompt says so); with `--principals`
/// set, a name outside the list is refused with that reason, before anyone is asked.
#[test]
fn the_certificate_names_the_workstation_user() {
    let tmp = tempfile::tempdir().unwrap();
    let shome = tmp.path().join("s");
    Signer::init(&shome, "shared");
    let signer = Signer::start(&shome, "127.0.0.1:0");
    let mut agents = vec![];
    for user in ["alice", "bob"] {
        let home = tmp.path().join(user);
        agent_config(&home, "session_certs = false\n");
        pair(&home, &signer);
        let a = Agent::start_env(None, &home, &[], &[("USER", user)]);
        a.wait_connected();
        agents.push((user, a));
    }
    for (user, a) in &agents {
        let req = background({
            let mut c = vmux(&a.home);
            c.args(["agent", "request-cert"]);
            c
        });
        let p = signer.next_request();
        assert_eq!(p["principals"], serde_json::json!([user]), "{p}");
        assert!(
            p["grants"]
                .as_str()
                .unwrap()
                .contains(&format!("logins as {user} ")),
            "{p}"
        );
        signer.approve_next();
        assert!(req.join().unwrap().success());
        let l = a.ssh_add(&["-L"]).stdout;
        let cert = l.lines().next().unwrap();
        let f = tmp.path().join(format!("{user}-cert.pub"));
        std::fs::write(&f, format!("{cert}\n")).unwrap();
        let out = run(Command::new("ssh-keygen").arg("-L").arg("-f").arg(&f), T);
        assert!(
            out.stdout.contains(&format!("                {user}")),
            "{out:?}"
        );
    }
    ok(&shome, &["signer", "ca", "policy", "--principals", "alice"]);
    let (_, bob) = &agents[1];
    let out = try_vmux(&bob.home, &["agent", "request-cert"]);
    assert!(!out.success(), "{out:?}");
    assert!(
        out.stderr
            .contains("principal bob is not allowed by this signer's CA policy (allowed: alice"),
        "{out:?}"
    );
    assert!(
        signer.pending().is_empty(),
        "a refused principal was shown to a person"
    );
    let log = ok(&shome, &["signer", "log"]);
    assert!(log.contains("principal bob is not allowed"), "{log}");
}
