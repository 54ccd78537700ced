//! Issue 8: agent forwarding is shown and fenced. `ssh -A` into a first real sshd (the
//! hop), and from there OpenSSH's ssh and a paramiko client reach a second sshd through
//! the forwarded agent: both reach the signer, shown as forwarded via the hop; the
//! session certificate does not sign for them; vmux's own extensions are refused there.

mod common;

use common::proc::run;
use common::sshd::{Sshd, SshdOptions};
use common::vmux::*;
use std::process::Command;
use std::time::Duration;

/// Debian's python3 (the one with python3-paramiko), not a pyenv shim.
const PYTHON: &str = "/usr/bin/python3";

fn ssh_a(s: &Setup, hop: &Sshd, remote: &str) -> Command {
    let mut c = hop.ssh_command(&s.agent.sock);
    c.arg("-A").arg(remote);
    c
}

#[test]
fn forwarded_requests_reach_the_signer_and_are_shown_as_forwarded() {
    assert!(
        run(Command::new(PYTHON).args(["-c", "import paramiko"]), T).success(),
        "python3-paramiko is required (apt-get install python3-paramiko)"
    );
    let s = Setup::with_agent_config("");
    // The session certificate, approved once: the login to the hop signs locally.
    let p = s.signer.wait_pending(1);
    assert_eq!(p[0]["kind"], "cert");
    s.signer.approve_next();
    let deadline = std::time::Instant::now() + T;
    while !s
        .agent
        .ssh_add(&["-L"])
        .stdout
        .contains("-cert-v01@openssh.com")
    {
        assert!(std::time::Instant::now() < deadline, "no certificate");
        std::thread::sleep(Duration::from_millis(50));
    }
    let ca = ok(&s.signer.home, &["signer", "ca", "pub"]);
    // The hop takes the signer key (a session certificate carries no
    // permit-agent-forwarding, so sshd would not forward the agent for it).
    let hop = Sshd::start_with(SshdOptions {
        authorized_keys: s.pubkey.clone(),
        trusted_user_ca_keys: None,
        extra_config: vec!["AllowAgentForwarding yes".into()],
    });
    // The far server trusts the signer key and the CA: a certificate would work there,
    // so a prompt proves the certificate was not used for a forwarded request.
    let far = Sshd::start_with(SshdOptions {
        authorized_keys: s.pubkey.clone(),
        trusted_user_ca_keys: Some(ca),
        extra_config: vec![],
    });
    let user = far.user().to_string();
    let port = far.port();

    // OpenSSH's ssh on the hop.
    let remote = format!(
        "ssh -F /dev/null -o BatchMode=yes -o StrictHostKeyChecking=no \
         -o UserKnownHostsFile=/dev/null -o PreferredAuthentications=publickey \
         -p {port} {user}@127.0.0.1 echo reached-far"
    );
    let h = background(ssh_a(&s, &hop, &remote));
    approve_hop_login(&s);
    let p = s.signer.wait_pending(1);
    assert_eq!(p[0]["kind"], "sign");
    assert_eq!(p[0]["purpose"], "login");
    assert_eq!(p[0]["destinationQuality"], "forwarded", "{p:?}");
    assert!(
        p[0]["destination"]
            .as_str()
            .unwrap()
            .contains("forwarded via "),
        "{p:?}"
    );
    s.signer.approve_next();
    let out = h.join().unwrap();
    assert!(
        out.success() && out.stdout.contains("reached-far"),
        "{out:?}"
    );

    // paramiko on the hop: it sends no session-bind, so its session is not bound; it
    // still reaches the signer (as with OpenSSH's agent), shown as forwarded.
    let script = format!(
        "import paramiko\n\
         c = paramiko.SSHClient()\n\
         c.set_missing_host_key_policy(paramiko.AutoAddPolicy())\n\
         c.connect('127.0.0.1', port={port}, username='{user}', allow_agent=True, look_for_keys=False, timeout=20, auth_timeout=60, banner_timeout=20)\n\
         _, out, _ = c.exec_command('echo paramiko-ok')\n\
         print(out.read().decode().strip())\n"
    );
    let remote = format!("{PYTHON} -c \"$(echo {} | base64 -d)\"", b64(&script));
    let h = background(ssh_a(&s, &hop, &remote));
    approve_hop_login(&s);
    let p = s.signer.wait_pending(1);
    assert_eq!(p[0]["purpose"], "login");
    let dest = p[0]["destination"].as_str().unwrap();
    assert!(
        dest.contains("session not bound") && dest.contains("forwarded via "),
        "{dest}"
    );
    s.signer.approve_next();
    let out = h.join().unwrap();
    assert!(
        out.success() && out.stdout.contains("paramiko-ok"),
        "{out:?}"
    );

    // The forwarded agent does not even list the session certificate.
    let h = background(ssh_a(&s, &hop, "ssh-add -L"));
    approve_hop_login(&s);
    let out = h.join().unwrap();
    assert!(out.success(), "{out:?}");
    assert!(!out.stdout.contains("-cert-v01@openssh.com"), "{out:?}");
    assert!(out.stdout.contains("ecdsa-sha2-nistp256"), "{out:?}");

    // vmux's own extensions from the hop: refused (SSH_AGENT_FAILURE = 5).
    let ext = "import os, socket, struct\n\
         s = socket.socket(socket.AF_UNIX); s.connect(os.environ['SSH_AUTH_SOCK'])\n\
         name = b'request-cert@vmux.dev'\n\
         body = bytes([27]) + struct.pack('>I', len(name)) + name\n\
         s.sendall(struct.pack('>I', len(body)) + body)\n\
         n = struct.unpack('>I', s.recv(4))[0]\n\
         print('answer', s.recv(n)[0])\n";
    let remote = format!("{PYTHON} -c \"$(echo {} | base64 -d)\"", b64(ext));
    let h = background(ssh_a(&s, &hop, &remote));
    approve_hop_login(&s);
    let out = h.join().unwrap();
    assert!(out.stdout.contains("answer 5"), "{out:?}");
    assert!(s.signer.pending().is_empty());
    // The certificate still serves this workstation's own logins without a prompt.
    assert!(run(far.ssh_command(&s.agent.sock).arg("true"), T).success());
    assert!(s.signer.pending().is_empty());
    let log = ok(&s.agent.home, &["agent", "log"]);
    assert!(log.contains("local-cert"), "{log}");
}

/// The login to the hop itself: this workstation's own ssh, not forwarded.
fn approve_hop_login(s: &Setup) {
    let p = s.signer.wait_pending(1);
    assert_eq!(p[0]["purpose"], "login", "{p:?}");
    assert_ne!(p[0]["destinationQuality"], "forwarded", "{p:?}");
    s.signer.approve_next();
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// A client that binds no session (paramiko, as Ansible and Fabric use it) may be
/// relaying a forwarded agent for a server: the session certificate does not sign for
/// it without a prompt; its login goes to the signer with the signer's key.
#[test]
fn a_client_without_session_bind_gets_no_certificate_signature() {
    let s = Setup::with_agent_config("");
    let p = s.signer.wait_pending(1);
    assert_eq!(p[0]["kind"], "cert");
    s.signer.approve_next();
    let deadline = std::time::Instant::now() + T;
    while !s
        .agent
        .ssh_add(&["-L"])
        .stdout
        .contains("-cert-v01@openssh.com")
    {
        assert!(std::time::Instant::now() < deadline, "no certificate");
        std::thread::sleep(Duration::from_millis(50));
    }
    let ca = ok(&s.signer.home, &["signer", "ca", "pub"]);
    // The server trusts the CA (the certificate would work) and nothing else.
    let sshd = Sshd::start_with(SshdOptions {
        authorized_keys: String::new(),
        trusted_user_ca_keys: Some(ca),
        extra_config: vec![],
    });
    let script = format!(
        "import paramiko\n\
         c = paramiko.SSHClient()\n\
         c.set_missing_host_key_policy(paramiko.AutoAddPolicy())\n\
         c.connect('127.0.0.1', port={}, username='{}', allow_agent=True, look_for_keys=False, timeout=20, auth_timeout=60, banner_timeout=20)\n\
         _, out, _ = c.exec_command('echo paramiko-ok')\n\
         print(out.read().decode().strip())\n",
        sshd.port(),
        sshd.user()
    );
    let h = background({
        let mut c = Command::new(PYTHON);
        c.args(["-c", &script]).env("SSH_AUTH_SOCK", &s.agent.sock);
        c
    });
    // A person is asked on the signer, shown the session certificate as the key.
    let p = s.signer.wait_pending(1);
    assert_eq!(p[0]["purpose"], "login", "{p:?}");
    assert_eq!(p[0]["keyStore"], "session", "{p:?}");
    assert!(
        p[0]["destination"]
            .as_str()
            .unwrap()
            .contains("session not bound"),
        "{p:?}"
    );
    s.signer.approve_next();
    let out = h.join().unwrap();
    assert!(
        out.success() && out.stdout.contains("paramiko-ok"),
        "{out:?}"
    );
    // Denied: nothing is signed with the certificate.
    let h = background({
        let mut c = Command::new(PYTHON);
        c.args(["-c", &script]).env("SSH_AUTH_SOCK", &s.agent.sock);
        c
    });
    s.signer.deny_next();
    assert!(!h.join().unwrap().success());
}
