//! Issue 23: an upstream agent for keys vmux does not hold. OpenSSH's ssh-agent is the
//! upstream, with an Ed25519 key: vmux lists it after its own keys, logs in with it
//! without asking anyone, passes `ssh-add` and `ssh-add -d` to it, shows it in
//! `vmux agent status`, hides it from forwarded connections, and loses nothing of its
//! own when the upstream is killed.

mod common;

use common::proc::{run, Daemon, Output};
use common::sshd::{Sshd, SshdOptions};
use common::vmux::*;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// `ssh-keygen` an Ed25519 key at `path` (no passphrase); its `.pub` line.
fn keygen(path: &Path, comment: &str) -> String {
    let out = run(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
            .arg(path),
        T,
    );
    assert!(out.success(), "{out:?}");
    std::fs::read_to_string(path.with_extension("pub"))
        .unwrap()
        .trim()
        .to_string()
}

/// The SHA256 fingerprint of a public key line.
fn fingerprint(line: &str) -> String {
    let out = run(
        Command::new("sh").args(["-c", &format!("echo '{line}' | ssh-keygen -lf -")]),
        T,
    );
    out.stdout.split_whitespace().nth(1).unwrap().to_string()
}

fn ssh_add(sock: &Path, args: &[&str]) -> Output {
    run(
        Command::new("ssh-add")
            .args(args)
            .env("SSH_AUTH_SOCK", sock),
        T,
    )
}

/// OpenSSH's ssh-agent in the foreground on `sock`.
fn ssh_agent(sock: &Path) -> Daemon {
    let d = Daemon::spawn_named(
        "ssh-agent",
        Command::new("ssh-agent").arg("-D").arg("-a").arg(sock),
    );
    let deadline = Instant::now() + T;
    while !sock.exists() {
        assert!(
            Instant::now() < deadline,
            "ssh-agent did not start: {}",
            d.output()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    d
}

fn status_json(home: &Path) -> serde_json::Value {
    serde_json::from_str(&ok(home, &["agent", "status", "--json"])).unwrap()
}

#[test]
fn an_upstream_agent_serves_the_keys_vmux_does_not_hold() {
    let tmp = tempfile::tempdir().unwrap();
    let (shome, ahome) = (
        tmp.path().join("signer-home"),
        tmp.path().join("agent-home"),
    );
    let up_sock = tmp.path().join("upstream.sock");
    let mut upstream = ssh_agent(&up_sock);
    let legacy = tmp.path().join("legacy");
    let legacy_pub = keygen(&legacy, "legacy-box");
    assert!(ssh_add(&up_sock, &[legacy.to_str().unwrap()]).success());

    agent_config(&ahome, "session_certs = false\n");
    let signer_pub = Signer::init(&shome, "test-signer");
    let signer = Signer::start(&shome, "127.0.0.1:0");
    pair(&ahome, &signer);
    let agent = Agent::start_in(None, &ahome, &["--upstream", up_sock.to_str().unwrap()]);
    agent.wait_connected();

    // ssh-add -l: vmux's keys, then the upstream's.
    let listed = agent.ssh_add(&["-l"]);
    assert!(listed.success(), "{listed:?}");
    let (mine, theirs) = (fingerprint(&signer_pub), fingerprint(&legacy_pub));
    let at = |fp: &str| {
        listed
            .stdout
            .find(fp)
            .unwrap_or_else(|| panic!("{fp} not in {listed:?}"))
    };
    assert!(at(&mine) < at(&theirs), "{listed:?}");

    // A login with the upstream key: no one is asked.
    let sshd = Sshd::start(&legacy_pub);
    let out = run(sshd.ssh_command(&agent.sock).arg("echo upstream-login"), T);
    assert!(
        out.success() && out.stdout.contains("upstream-login"),
        "{out:?}"
    );
    assert!(signer.pending().is_empty());
    let log = ok(&ahome, &["agent", "log"]);
    assert!(log.contains("upstream"), "{log}");

    // ssh-add KEY through vmux lands in the upstream; ssh-add -d takes it out again.
    let deploy = tmp.path().join("deploy");
    let deploy_pub = keygen(&deploy, "deploy-key");
    let added = agent.ssh_add(&[deploy.to_str().unwrap()]);
    assert!(added.success(), "{added:?}");
    let there = ssh_add(&up_sock, &["-l"]);
    assert!(
        there.stdout.contains(&fingerprint(&deploy_pub)),
        "{there:?}"
    );
    let deploy_pub_file = deploy.with_extension("pub");
    let removed = agent.ssh_add(&["-d", deploy_pub_file.to_str().unwrap()]);
    assert!(removed.success(), "{removed:?}");
    let there = ssh_add(&up_sock, &["-l"]);
    assert!(
        !there.stdout.contains(&fingerprint(&deploy_pub)),
        "{there:?}"
    );

    // Status: the upstream's key, marked as not held by a signer.
    let s = status_json(&ahome);
    assert_eq!(s["upstream"]["reachable"], true, "{s}");
    let keys = s["keys"].as_array().unwrap();
    let legacy_entry = keys
        .iter()
        .find(|k| k["fingerprint"] == theirs.as_str())
        .unwrap();
    assert_eq!(legacy_entry["heldBy"], "upstream", "{s}");
    assert_eq!(legacy_entry["note"], "not held by a signer", "{s}");
    let text = ok(&ahome, &["agent", "status"]);
    assert!(text.contains("[upstream: not held by a signer]"), "{text}");

    // A forwarded connection does not see the upstream's keys (upstream_forwarded is off).
    let hop = Sshd::start_with(SshdOptions {
        authorized_keys: legacy_pub.clone(),
        trusted_user_ca_keys: None,
        extra_config: vec!["AllowAgentForwarding yes".into()],
    });
    let out = run(hop.ssh_command(&agent.sock).arg("-A").arg("ssh-add -l"), T);
    assert!(out.stdout.contains(&mine), "{out:?}");
    assert!(!out.stdout.contains(&theirs), "{out:?}");

    // The upstream goes away: vmux's own keys still list and sign; status says so.
    upstream.terminate(Duration::from_secs(5));
    let listed = agent.ssh_add(&["-l"]);
    assert!(
        listed.success() && listed.stdout.contains(&mine),
        "{listed:?}"
    );
    assert!(!listed.stdout.contains(&theirs), "{listed:?}");
    let own = Sshd::start(&signer_pub);
    let h = background({
        let mut c = own.ssh_command(&agent.sock);
        c.arg("echo own-key");
        c
    });
    let p = signer.wait_pending(1);
    assert_eq!(p[0]["purpose"], "login", "{p:?}");
    signer.approve_next();
    let out = h.join().unwrap();
    assert!(out.success() && out.stdout.contains("own-key"), "{out:?}");
    let s = status_json(&ahome);
    assert_eq!(s["upstream"]["reachable"], false, "{s}");
    let text = ok(&ahome, &["agent", "status"]);
    assert!(
        text.contains("upstream agent") && text.contains("gone"),
        "{text}"
    );
}

#[test]
fn without_an_upstream_ssh_add_is_refused_and_the_config_names_one() {
    // `upstream = "…"` in config.toml, and upstream_forwarded = true lets a forwarded
    // connection see the keys.
    let tmp = tempfile::tempdir().unwrap();
    let up_sock = tmp.path().join("upstream.sock");
    let _upstream = ssh_agent(&up_sock);
    let legacy = tmp.path().join("legacy");
    let legacy_pub = keygen(&legacy, "legacy-box");
    assert!(ssh_add(&up_sock, &[legacy.to_str().unwrap()]).success());
    let s = Setup::with_agent_config(&format!(
        "session_certs = false\nupstream = \"{}\"\nupstream_forwarded = true\n",
        up_sock.display()
    ));
    let hop = Sshd::start_with(SshdOptions {
        authorized_keys: legacy_pub.clone(),
        trusted_user_ca_keys: None,
        extra_config: vec!["AllowAgentForwarding yes".into()],
    });
    let out = run(
        hop.ssh_command(&s.agent.sock).arg("-A").arg("ssh-add -l"),
        T,
    );
    assert!(out.stdout.contains(&fingerprint(&legacy_pub)), "{out:?}");

    // An agent without an upstream still refuses additions.
    let plain = Setup::new();
    let extra = tmp.path().join("extra");
    keygen(&extra, "extra");
    let added = plain.agent.ssh_add(&[extra.to_str().unwrap()]);
    assert!(!added.success(), "{added:?}");
}
