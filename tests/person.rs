//! Issue 18: the person at the workstation always knows what vmux is doing. Driven as a
//! person would, with real OpenSSH and git in tmux: the waiting line on the requester's
//! own terminal and the outcome with its reason (denied, expired, not reachable), on no
//! other terminal and never for a forwarded connection; `feedback = off` is silent;
//! `vmux status`; the session certificate's life; config errors that point at the line.

mod common;

use common::proc::run;
use common::sshd::{Sshd, SshdOptions};
use common::tmux::Tmux;
use common::vmux::*;
use std::path::Path;
use std::time::{Duration, Instant};

/// A shell command line that logs in to `sshd` through the agent at `sock`, then says
/// how it ended.
fn ssh_line(sshd: &Sshd, sock: &Path, extra: &str) -> String {
    format!(
        "SSH_AUTH_SOCK={} ssh -F /dev/null -o BatchMode=yes -o StrictHostKeyChecking=no \
         -o UserKnownHostsFile=/dev/null -o PreferredAuthentications=publickey {extra} \
         -p {} {}@127.0.0.1 true; echo SSH\"\"-EXIT-$?",
        sock.display(),
        sshd.port(),
        sshd.user()
    )
}

/// Run `line` in the shell of `t` (a fresh prompt).
fn type_line(t: &Tmux, line: &str) {
    t.keys(&[line, "Enter"]);
}

/// A clean screen and no scrollback: what follows is all the screen shows.
fn fresh(t: &Tmux) {
    type_line(t, "clear");
    std::thread::sleep(Duration::from_millis(300));
    t.command(&["clear-history", "-t", "0"]);
}

fn shell() -> Tmux {
    Tmux::start("env PS1='$ ' bash --norc --noprofile")
}

#[test]
fn the_requesters_terminal_says_what_waits_and_why_it_ended() {
    let s = Setup::with_agent_config(
        "session_certs = false\nrequest_window_secs = 6\nconnect_timeout_secs = 2\n",
    );
    let sshd = Sshd::start(&s.pubkey);
    let t = shell();
    let other = shell();
    type_line(&other, "echo OTHER-TERMINAL");
    other.wait_for("OTHER-TERMINAL", 2);

    // Denied: a waiting line naming the signer and the login, then the reason.
    type_line(&t, &ssh_line(&sshd, &s.agent.sock, ""));
    let screen = t.wait_for("vmux: waiting for approval on test-signer (login ", 1);
    assert!(
        screen.contains(&format!("{}@127.0.0.1", sshd.user())) && screen.contains("Ctrl-C cancels"),
        "{screen}"
    );
    s.signer.deny_next();
    let screen = t.wait_for("SSH-EXIT-", 1);
    assert!(screen.contains("vmux: denied on test-signer"), "{screen}");

    // Nobody answers: it expires, and the line says after how long, where.
    fresh(&t);
    type_line(&t, &ssh_line(&sshd, &s.agent.sock, ""));
    t.wait_for("vmux: waiting for approval on test-signer", 1);
    let screen = t.wait_for("SSH-EXIT-", 1);
    assert!(
        screen.contains("vmux: expired after 6 s on test-signer"),
        "{screen}"
    );

    // Approved: the outcome says so too.
    fresh(&t);
    type_line(&t, &ssh_line(&sshd, &s.agent.sock, ""));
    t.wait_for("vmux: waiting for approval", 1);
    s.signer.approve_next();
    let screen = t.wait_for("SSH-EXIT-0", 1);
    assert!(screen.contains("vmux: approved on test-signer"), "{screen}");

    // The status and the log carry each outcome's reason.
    let status = ok(&s.agent.home, &["agent", "status"]);
    assert!(
        status.contains("denied on test-signer")
            && status.contains("expired after 6 s on test-signer"),
        "{status}"
    );
    let log = ok(&s.agent.home, &["agent", "log"]);
    assert!(log.contains("(denied on test-signer)"), "{log}");

    // The signer is gone: the line names it, where it was tried and when it was seen.
    let mut s = s;
    s.signer.stop();
    fresh(&t);
    type_line(&t, &ssh_line(&sshd, &s.agent.sock, ""));
    let screen = t.wait_for("SSH-EXIT-", 1);
    assert!(
        screen.contains("vmux: test-signer not reachable at 127.0.0.1:")
            && screen.contains("last seen"),
        "{screen}"
    );

    // No other terminal heard any of it.
    let other_screen = other.screen();
    assert!(!other_screen.contains("vmux:"), "{other_screen}");
}

#[test]
fn feedback_off_writes_nothing_and_git_shows_the_waiting_line() {
    let s = Setup::with_agent_config("session_certs = false\n");
    // git commit -S through the agent (gpg.format ssh): the waiting line on its terminal.
    let repo = s.path("repo");
    std::fs::create_dir_all(&repo).unwrap();
    let key = s.pubkey_file();
    let git = |args: &str| {
        format!(
            "git -C {} -c user.name=A -c user.email=a@example.com -c gpg.format=ssh \
             -c user.signingkey={} {args}",
            repo.display(),
            key.display()
        )
    };
    let t = shell();
    type_line(
        &t,
        &format!(
            "export SSH_AUTH_SOCK={}; git init -q {} && {}; echo GIT\"\"-EXIT-$?",
            s.agent.sock.display(),
            repo.display(),
            git("commit -q -S --allow-empty -m signed")
        ),
    );
    let screen = t.wait_for(
        "vmux: waiting for approval on test-signer (git signature)",
        1,
    );
    assert!(screen.contains("Ctrl-C cancels"), "{screen}");
    s.signer.approve_next();
    t.wait_for("GIT-EXIT-0", 1);

    // feedback = off: the same request, and nothing on the terminal.
    let mut s = s;
    s.agent.stop();
    let config = s.agent.home.join("agent/config.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("feedback = \"off\"\n{text}")).unwrap();
    let agent = Agent::start(&s.agent.home);
    agent.wait_connected();
    fresh(&t);
    type_line(
        &t,
        &format!(
            "{}; echo GIT2\"\"-EXIT-$?",
            git("commit -q -S --allow-empty -m quiet")
        ),
    );
    std::thread::sleep(Duration::from_millis(800));
    s.signer.approve_next();
    let screen = t.wait_for("GIT2-EXIT-0", 1);
    assert!(!screen.contains("vmux:"), "{screen}");
}

#[test]
fn a_forwarded_request_writes_to_no_terminal() {
    let s = Setup::new();
    let hop = Sshd::start_with(SshdOptions {
        authorized_keys: s.pubkey.clone(),
        trusted_user_ca_keys: None,
        extra_config: vec!["AllowAgentForwarding yes".into()],
    });
    let far = Sshd::start(&s.pubkey);
    let remote = format!(
        "ssh -F /dev/null -o BatchMode=yes -o StrictHostKeyChecking=no \
         -o UserKnownHostsFile=/dev/null -p {} {}@127.0.0.1 echo reached-far",
        far.port(),
        far.user()
    );
    let t = shell();
    type_line(
        &t,
        &format!(
            "SSH_AUTH_SOCK={} ssh -F /dev/null -o BatchMode=yes -o StrictHostKeyChecking=no \
             -o UserKnownHostsFile=/dev/null -A -p {} {}@127.0.0.1 '{remote}'; echo OUTER\"\"-EXIT-$?",
            s.agent.sock.display(),
            hop.port(),
            hop.user()
        ),
    );
    // The login to the hop is this terminal's own: its line shows.
    t.wait_for("vmux: waiting for approval", 1);
    s.signer.approve_next();
    // The login to the far host comes through forwarding: asked on the signer, shown
    // as forwarded there, and never written to this terminal.
    let p = s.signer.next_request();
    assert_eq!(p["destinationQuality"], "forwarded", "{p}");
    std::thread::sleep(Duration::from_millis(800));
    s.signer.approve_next();
    let screen = t.wait_for("OUTER-EXIT-", 1);
    assert!(screen.contains("reached-far"), "{screen}");
    assert_eq!(
        screen.matches("vmux: waiting").count(),
        1,
        "a forwarded request wrote to the terminal:\n{screen}"
    );
    let far_port = format!(":{}", far.port());
    assert!(
        !screen
            .lines()
            .any(|l| l.starts_with("vmux:") && l.contains(&far_port)),
        "{screen}"
    );
}

#[test]
fn the_certificates_life_is_calm_and_status_is_true_at_each_step() {
    // A short window, so an unanswered request lapses quickly.
    let s = Setup::with_agent_config("request_window_secs = 5\n");
    let ca = ok(&s.signer.home, &["signer", "ca", "pub"]);
    let sshd = Sshd::start_with(SshdOptions {
        authorized_keys: s.pubkey.clone(),
        trusted_user_ca_keys: Some(ca),
        extra_config: vec![],
    });
    let status = || ok(&s.agent.home, &["agent", "status"]);
    let cert_line = || {
        status()
            .lines()
            .find(|l| l.contains("certificate:"))
            .unwrap_or_default()
            .to_string()
    };
    // The first request appears when the link is up; nobody answers it.
    let p = s.signer.wait_pending(1);
    assert_eq!(p[0]["kind"], "cert");
    assert!(
        cert_line().contains("waiting for approval on test-signer"),
        "{}",
        status()
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while !s.signer.pending().is_empty() {
        assert!(Instant::now() < deadline, "the request never lapsed");
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(500));
    let line = cert_line();
    assert!(
        line.contains("nobody answered on test-signer")
            && line.contains("asks again on the next login"),
        "{line}"
    );
    // Not in a loop: nothing is asked again by itself.
    std::thread::sleep(Duration::from_secs(3));
    assert!(s.signer.pending().is_empty(), "asked again without a login");

    // The next login that would use one asks, waits, and then uses it.
    let login = background({
        let mut c = sshd.ssh_command(&s.agent.sock);
        c.arg("true");
        c
    });
    let p = s.signer.wait_pending(1);
    assert_eq!(p[0]["kind"], "cert", "{p:?}");
    s.signer.approve_next();
    assert!(login.join().unwrap().success());
    assert!(
        s.signer.pending().is_empty(),
        "the login needed a second approval"
    );
    assert!(cert_line().contains("valid until"), "{}", status());

    // reset: dropped, and not asked again until a login needs one.
    ok(&s.agent.home, &["agent", "reset"]);
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        s.signer.pending().is_empty(),
        "reset asked for a new certificate"
    );
    assert!(
        cert_line().contains("dropped by vmux agent reset")
            && cert_line().contains("asks again on the next login"),
        "{}",
        status()
    );
    // ssh-add -D: the same.
    let login = background({
        let mut c = sshd.ssh_command(&s.agent.sock);
        c.arg("true");
        c
    });
    s.signer.approve_next();
    assert!(login.join().unwrap().success());
    assert!(s.agent.ssh_add(&["-D"]).success());
    std::thread::sleep(Duration::from_secs(2));
    assert!(s.signer.pending().is_empty(), "ssh-add -D asked again");
    assert!(
        cert_line().contains("dropped by ssh-add -D"),
        "{}",
        status()
    );

    // A short certificate is not followed at once by an 8-hour "renewal".
    let req = background({
        let mut c = vmux(&s.agent.home);
        c.args(["agent", "request-cert", "--validity", "40s"]);
        c
    });
    let p = s.signer.wait_pending(1);
    assert_eq!(p[0]["validitySecs"], 40, "{p:?}");
    s.signer.approve_next();
    assert!(req.join().unwrap().success());
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        s.signer.pending().is_empty(),
        "a 2-minute certificate was renewed at once: {:?}",
        s.signer.pending()
    );
    // Its renewal, near its end (the last quarter), asks for the same 40 s again.
    let p = s.signer.wait_pending(1);
    assert_eq!(p[0]["kind"], "cert");
    assert_eq!(p[0]["validitySecs"], 40, "{p:?}");
    // While it waits, the line says the certificate is still valid and what is asked.
    assert!(cert_line().contains("valid until"), "{}", status());
    s.signer.deny_next();
    std::thread::sleep(Duration::from_millis(500));
    assert!(cert_line().contains("valid until"), "{}", status());
}

#[test]
fn vmux_status_shows_both_sides_with_exit_codes() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("one");
    // Nothing set up.
    let out = run(vmux(&home).args(["status"]), T);
    assert_eq!(out.status.code(), Some(6), "{out:?}");
    // Signer and agent in one home, both running and linked.
    agent_config(&home, "session_certs = false\n");
    Signer::init(&home, "both");
    let mut signer = Signer::start(&home, "127.0.0.1:0");
    pair(&home, &signer);
    let mut agent = Agent::start(&home);
    agent.wait_connected();
    let out = run(vmux(&home).args(["status"]), T);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    for want in [
        "agent: running",
        "connection:  Connected to both",
        "certificate:",
        "signer \"both\": running",
        "device ",
        "connected",
        "key SHA256:",
        "CA: ecdsa-sha2-nistp256 AAAA",
        "pending: 0",
    ] {
        assert!(
            out.stdout.contains(want),
            "missing {want:?}:\n{}",
            out.stdout
        );
    }
    let json: serde_json::Value =
        serde_json::from_str(&run(vmux(&home).args(["status", "--json"]), T).stdout).unwrap();
    assert_eq!(json["ok"], true);
    assert_eq!(json["signer"]["status"]["devices"][0]["connected"], true);
    // The signer stops: exit 4 (it is set up here and not running).
    signer.stop();
    let out = run(vmux(&home).args(["status"]), T);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    assert!(out.stdout.contains("signer: not running"), "{out:?}");
    agent.stop();
    let out = run(vmux(&home).args(["status"]), T);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
}

#[test]
fn a_config_typo_names_its_line() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("h");
    agent_config(
        &home,
        "# agent\ndiscovery = \"off\"\n\nname = \"laptop\"\n\n\nsesion_certs = false\n",
    );
    let out = run(vmux(&home).args(["agent", "run"]), T);
    assert!(!out.success());
    assert!(
        out.stderr.contains("config.toml:7:1") && out.stderr.contains("sesion_certs"),
        "{out:?}"
    );
    // A key in the wrong table says which table it landed in.
    Signer::init(&home, "s");
    let path = home.join("signer/config.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace("[ca]\n", "[ca]\nwake_url = \"https://x\"\n"),
    )
    .unwrap();
    let out = run(vmux(&home).args(["signer", "keys", "list"]), T);
    assert!(!out.success());
    assert!(out.stderr.contains("inside table [ca]"), "{out:?}");
}
