//! Issue 23: fitting into a real setup. `vmux git setup` (signed commits, `--undo`,
//! shared connections: three fetches, one approval), `vmux ssh-config` (a server with
//! `MaxAuthTries 2` and the right key last) and `vmux doctor` on five prepared
//! misconfigurations, all with real OpenSSH and git.

mod common;

use common::proc::{run, Daemon, Output};
use common::sshd::{Sshd, SshdOptions};
use common::vmux::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A home directory of its own for `vmux`, `git` and `ssh` (HOME), with no system git
/// config.
fn user_home(s: &Setup) -> PathBuf {
    let h = s.path("home");
    std::fs::create_dir_all(&h).unwrap();
    h
}

/// `vmux ARGS` as the person runs it: their HOME, the agent's state, SSH_AUTH_SOCK set
/// to the vmux agent.
fn vmux_as(s: &Setup, home: &Path, args: &[&str]) -> Output {
    run(
        vmux(&s.agent.home)
            .args(args)
            .env("HOME", home)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("SSH_AUTH_SOCK", &s.agent.sock),
        T,
    )
}

fn git(home: &Path, dir: &Path, sock: &Path, args: &[&str]) -> Command {
    let mut c = Command::new("git");
    c.current_dir(dir)
        .args(args)
        .env("HOME", home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("SSH_AUTH_SOCK", sock);
    c
}

fn git_ok(home: &Path, dir: &Path, sock: &Path, args: &[&str]) -> String {
    let out = run(&mut git(home, dir, sock, args), T);
    assert!(out.success(), "git {args:?}: {out:?}");
    out.stdout
}

/// The global git config as `git config --list` shows it, in order.
fn global_config(home: &Path) -> String {
    let out = run(
        Command::new("git")
            .args(["config", "--global", "--list"])
            .env("HOME", home)
            .env("GIT_CONFIG_NOSYSTEM", "1"),
        T,
    );
    out.stdout
}

#[test]
fn git_setup_signs_commits_and_undo_restores_the_config() {
    let s = Setup::new();
    let home = user_home(&s);
    let sock = s.agent.sock.clone();
    for args in [
        ["config", "--global", "user.name", "Alice"],
        ["config", "--global", "user.email", "alice@example.com"],
        // A value setup replaces, to see it come back.
        ["config", "--global", "commit.gpgsign", "false"],
    ] {
        git_ok(&home, &home, &sock, &args);
    }
    let before = global_config(&home);

    let out = vmux_as(&s, &home, &["git", "setup"]);
    assert!(out.success(), "{out:?}");
    for said in [
        "gpg.format: (unset) → ssh",
        "user.signingkey: (unset) → key::ecdsa-sha2-nistp256",
        "commit.gpgsign: false → true",
        "tag.gpgsign: (unset) → true",
        "gpg.ssh.allowedSignersFile: (unset) → ",
        "undo: vmux git setup --undo",
    ] {
        assert!(out.stdout.contains(said), "missing {said:?}: {out:?}");
    }
    let allowed = git_ok(
        &home,
        &home,
        &sock,
        &["config", "--global", "gpg.ssh.allowedSignersFile"],
    );
    let allowed = std::fs::read_to_string(allowed.trim()).unwrap();
    assert_eq!(
        allowed.trim(),
        format!("alice@example.com namespaces=\"git\" {}", s.pubkey.trim()),
        "the allowed-signers file holds the e-mail and the key"
    );

    // A fresh repository: a signed commit, approved on the signer, verified by git.
    let repo = s.path("repo");
    std::fs::create_dir(&repo).unwrap();
    git_ok(&home, &repo, &sock, &["init", "-q"]);
    std::fs::write(repo.join("f"), "x").unwrap();
    git_ok(&home, &repo, &sock, &["add", "f"]);
    let commit = background(git(
        &home,
        &repo,
        &sock,
        &["commit", "-q", "-S", "-m", "signed"],
    ));
    let p = s.signer.wait_pending(1);
    assert_eq!(p[0]["purpose"], "git signature", "{p:?}");
    s.signer.approve_next();
    let out = commit.join().unwrap();
    assert!(out.success(), "{out:?}");
    let shown = git_ok(&home, &repo, &sock, &["log", "--show-signature", "-1"]);
    assert!(
        shown.contains("Good \"git\" signature for alice@example.com"),
        "{shown}"
    );

    // Undo: the global config is exactly what it was.
    let out = vmux_as(&s, &home, &["git", "setup", "--undo"]);
    assert!(out.success(), "{out:?}");
    assert!(
        out.stdout.contains("commit.gpgsign: true → false"),
        "{out:?}"
    );
    assert_eq!(global_config(&home), before, "{out:?}");
    // Nothing left to undo.
    let again = vmux_as(&s, &home, &["git", "setup", "--undo"]);
    assert!(
        !again.success() && again.stderr.contains("nothing to undo"),
        "{again:?}"
    );
}

#[test]
fn shared_connections_make_three_fetches_one_approval() {
    let s = Setup::new();
    let home = user_home(&s);
    let sock = s.agent.sock.clone();
    let sshd = Sshd::start(&s.pubkey);
    git_ok(
        &home,
        &home,
        &sock,
        &["config", "--global", "user.email", "alice@example.com"],
    );
    git_ok(
        &home,
        &home,
        &sock,
        &["config", "--global", "user.name", "Alice"],
    );
    // The person's own ssh config, which vmux must leave as it is.
    let ssh_dir = home.join(".ssh");
    std::fs::create_dir_all(&ssh_dir).unwrap();
    let own = "Host elsewhere\n    User bob\n";
    std::fs::write(ssh_dir.join("config"), own).unwrap();

    // A repository on the server, with one commit.
    let remote = s.path("remote.git");
    git_ok(
        &home,
        s.tmp.path(),
        &sock,
        &["init", "-q", "--bare", remote.to_str().unwrap()],
    );
    let work = s.path("work");
    std::fs::create_dir(&work).unwrap();
    git_ok(&home, &work, &sock, &["init", "-q"]);
    std::fs::write(work.join("f"), "1").unwrap();
    git_ok(&home, &work, &sock, &["add", "f"]);
    git_ok(
        &home,
        &work,
        &sock,
        &["-c", "commit.gpgsign=false", "commit", "-q", "-m", "one"],
    );
    git_ok(
        &home,
        &work,
        &sock,
        &[
            "push",
            "-q",
            remote.to_str().unwrap(),
            "HEAD:refs/heads/main",
        ],
    );

    let out = vmux_as(
        &s,
        &home,
        &["git", "setup", "--share-connections", "127.0.0.1"],
    );
    assert!(out.success(), "{out:?}");
    assert!(
        out.stdout
            .contains("ssh connections to 127.0.0.1 are shared"),
        "{out:?}"
    );
    let config = std::fs::read_to_string(ssh_dir.join("config")).unwrap();
    assert!(
        config.ends_with(own),
        "the person's lines are kept: {config}"
    );
    assert!(
        config.lines().nth(1).unwrap().starts_with("Include /"),
        "{config}"
    );
    let block = std::fs::read_to_string(ssh_dir.join("config.d/vmux")).unwrap();
    for l in [
        "Host 127.0.0.1",
        "ControlMaster auto",
        "ControlPersist 10m",
        "ControlPath /",
    ] {
        assert!(block.contains(l), "missing {l}: {block}");
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(ssh_dir.join("vmux-control"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);

    // ssh reads the config of the password database's home, so name this one with -F.
    let ssh_command = format!(
        "ssh -F {} -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
         -o GlobalKnownHostsFile=/dev/null -p {}",
        ssh_dir.join("config").display(),
        sshd.port()
    );
    let url = format!("ssh://{}@127.0.0.1{}", sshd.user(), remote.display());
    let clone = s.path("clone");
    std::fs::create_dir(&clone).unwrap();
    git_ok(&home, &clone, &sock, &["init", "-q"]);
    git_ok(&home, &clone, &sock, &["remote", "add", "origin", &url]);
    let fetch = || {
        let mut c = git(&home, &clone, &sock, &["fetch", "-q", "origin"]);
        c.env("GIT_SSH_COMMAND", &ssh_command);
        c
    };
    let first = background(fetch());
    s.signer.wait_pending(1);
    s.signer.approve_next();
    let out = first.join().unwrap();
    assert!(out.success(), "first fetch: {out:?}");
    for i in 2..=3 {
        let out = run(&mut fetch(), T);
        assert!(out.success(), "fetch {i}: {out:?}");
        assert!(
            s.signer.pending().is_empty(),
            "fetch {i} asked the signer again"
        );
    }
    let approvals = s.signer.log().matches("\"approved\"").count();
    let logins = sshd.log().matches("Accepted publickey").count();
    assert_eq!(logins, 1, "three fetches, one login: {}", sshd.log());
    assert!(approvals >= 1, "{}", s.signer.log());
    let signed = ok(&s.agent.home, &["agent", "log"]);
    assert_eq!(
        signed.lines().filter(|l| l.contains("approved")).count(),
        1,
        "one approval for three fetches: {signed}"
    );
    // Stop the shared connection.
    let _ = run(
        Command::new("sh")
            .arg("-c")
            .arg(format!("{ssh_command} -O exit {}@127.0.0.1", sshd.user())),
        T,
    );

    // Undo takes the block and the Include line away again.
    let out = vmux_as(&s, &home, &["git", "setup", "--undo"]);
    assert!(out.success(), "{out:?}");
    assert_eq!(
        std::fs::read_to_string(ssh_dir.join("config")).unwrap(),
        own
    );
    assert!(!ssh_dir.join("config.d/vmux").exists());
}

#[test]
fn ssh_config_offers_only_the_right_key_to_a_strict_server() {
    let s = Setup::new();
    let home = user_home(&s);
    for i in 1..=3 {
        ok(
            &s.signer.home,
            &[
                "signer",
                "keys",
                "add",
                "--type",
                "ed25519",
                "--comment",
                &format!("extra-{i}"),
            ],
        );
    }
    // The agent hears of new keys within a second.
    let deadline = Instant::now() + T;
    let listed = loop {
        let l = s.agent.ssh_add(&["-L"]);
        if l.stdout.lines().count() == 4 {
            break l.stdout;
        }
        assert!(Instant::now() < deadline, "four keys never listed: {l:?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    // The server knows only the key the agent offers last.
    let right = listed.lines().last().unwrap().to_string();
    let sshd = Sshd::start_with(SshdOptions {
        authorized_keys: right.clone(),
        extra_config: vec!["MaxAuthTries 2".into()],
        ..Default::default()
    });
    let plain = run(sshd.ssh_command(&s.agent.sock).arg("true"), T);
    assert!(!plain.success(), "{plain:?}");
    assert!(
        plain.stderr.contains("Too many authentication failures"),
        "{plain:?}"
    );
    assert!(s.signer.pending().is_empty());

    let fp = {
        let f = s.path("right.pub");
        std::fs::write(&f, format!("{right}\n")).unwrap();
        let out = run(Command::new("ssh-keygen").arg("-lf").arg(&f), T);
        out.stdout.split_whitespace().nth(1).unwrap().to_string()
    };
    let ssh_dir = home.join(".ssh");
    std::fs::create_dir_all(&ssh_dir).unwrap();
    let own = "# mine\nHost *\n    ServerAliveInterval 30\n";
    std::fs::write(ssh_dir.join("config"), own).unwrap();

    // Printed first; nothing written without --write.
    let shown = vmux_as(&s, &home, &["ssh-config", "127.0.0.1", "--key", &fp]);
    assert!(shown.success(), "{shown:?}");
    assert!(shown.stdout.starts_with("Host 127.0.0.1\n"), "{shown:?}");
    for l in [
        format!("    IdentityAgent {}", s.agent.sock.display()),
        "    IdentitiesOnly yes".into(),
    ] {
        assert!(shown.stdout.contains(&l), "missing {l}: {shown:?}");
    }
    assert_eq!(shown.stdout.matches("IdentityFile").count(), 1, "{shown:?}");
    assert!(shown.stderr.contains("not written"), "{shown:?}");
    assert_eq!(
        std::fs::read_to_string(ssh_dir.join("config")).unwrap(),
        own
    );

    let out = vmux_as(
        &s,
        &home,
        &["ssh-config", "127.0.0.1", "--key", &fp, "--write"],
    );
    assert!(out.success(), "{out:?}");
    let config = std::fs::read_to_string(ssh_dir.join("config")).unwrap();
    assert!(config.ends_with(own), "{config}");
    assert_eq!(config.matches("Include ").count(), 1);
    // Written twice: still one Include line and one block.
    let out = vmux_as(
        &s,
        &home,
        &["ssh-config", "127.0.0.1", "--key", &fp, "--write"],
    );
    assert!(out.success(), "{out:?}");
    assert_eq!(
        std::fs::read_to_string(ssh_dir.join("config")).unwrap(),
        config
    );
    let block = std::fs::read_to_string(ssh_dir.join("config.d/vmux")).unwrap();
    assert_eq!(block.matches("Host 127.0.0.1").count(), 1, "{block}");
    let key_file = block
        .lines()
        .find_map(|l| l.trim().strip_prefix("IdentityFile "))
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(key_file).unwrap().trim(),
        right.trim()
    );

    // ssh with that config (and no SSH_AUTH_SOCK: IdentityAgent names vmux) logs in.
    let mut ssh = Command::new("ssh");
    ssh.arg("-F")
        .arg(ssh_dir.join("config"))
        .args(["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no"])
        .args([
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "GlobalKnownHostsFile=/dev/null",
        ])
        .args(["-o", "PreferredAuthentications=publickey", "-p"])
        .arg(sshd.port().to_string())
        .arg(format!("{}@127.0.0.1", sshd.user()))
        .arg("true")
        .env_remove("SSH_AUTH_SOCK");
    let login = background(ssh);
    let p = s.signer.wait_pending(1);
    assert_eq!(p[0]["kind"], "sign", "{p:?}");
    s.signer.approve_next();
    let out = login.join().unwrap();
    assert!(out.success(), "login with the written block: {out:?}");

    // --remove takes it away, and the Include line with it.
    let out = vmux_as(&s, &home, &["ssh-config", "127.0.0.1", "--remove"]);
    assert!(out.success(), "{out:?}");
    assert_eq!(
        std::fs::read_to_string(ssh_dir.join("config")).unwrap(),
        own
    );
}

/// `vmux doctor` as the person runs it (their HOME and SSH_AUTH_SOCK); its JSON.
/// The two runs are separate processes: when the state changes between them (a
/// certificate expiring that very second) they may disagree once, so a pair is
/// taken again; a disagreement that persists is a bug.
fn doctor(s: &Setup, home: &Path, auth_sock: &Path) -> (Output, serde_json::Value) {
    let once = |json: bool| {
        let mut cmd = vmux(&s.agent.home);
        cmd.arg("doctor")
            .env("HOME", home)
            .env("SSH_AUTH_SOCK", auth_sock);
        if json {
            cmd.arg("--json");
        }
        run(&mut cmd, T)
    };
    let mut tries = 0;
    loop {
        let (out, json) = (once(false), once(true));
        tries += 1;
        if out.status.code() == json.status.code() || tries == 3 {
            assert_eq!(out.status.code(), json.status.code(), "{out:?} {json:?}");
            return (out, serde_json::from_str(&json.stdout).unwrap());
        }
    }
}

/// `vmux doctor` again until its report says `said` (bounded).
fn doctor_until(s: &Setup, home: &Path, said: &str) -> (Output, serde_json::Value) {
    let deadline = Instant::now() + T;
    loop {
        let (out, json) = doctor(s, home, &s.agent.sock);
        if out.stdout.contains(said) {
            return (out, json);
        }
        assert!(
            Instant::now() < deadline,
            "doctor never said {said:?}: {out:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The problem doctor reported for `check`: its message and fix.
fn problem(out: &Output, json: &serde_json::Value, check: &str) -> (String, String) {
    assert_eq!(
        out.status.code(),
        Some(1),
        "a problem exits non-zero: {out:?}"
    );
    assert_eq!(json["ok"], false);
    let f = json["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == check && c["status"] == "problem")
        .unwrap_or_else(|| panic!("no {check} problem: {out:?}"));
    let (msg, fix) = (
        f["message"].as_str().unwrap().to_string(),
        f["fix"].as_str().unwrap().to_string(),
    );
    assert!(out.stdout.contains(&format!("PROBLEM  {msg}")), "{out:?}");
    assert!(out.stdout.contains(&format!("fix: {fix}")), "{out:?}");
    (msg, fix)
}

fn libfaketime() -> PathBuf {
    let found = std::fs::read_dir("/usr/lib")
        .unwrap()
        .flatten()
        .map(|e| e.path().join("faketime/libfaketime.so.1"))
        .chain([PathBuf::from("/usr/lib/faketime/libfaketime.so.1")])
        .find(|p| p.exists());
    found.expect("libfaketime (Debian package libfaketime) is needed for the skewed-clock test")
}

#[test]
fn doctor_names_five_misconfigurations_with_their_fixes() {
    // Session certificates that live 8 s and are not renewed early, to see one expire.
    let mut s = Setup::with_agent_config("cert_validity_secs = 8\ncert_renew_before_secs = 0\n");
    let home = user_home(&s);
    let p = s.signer.wait_pending(1);
    assert_eq!(p[0]["kind"], "cert", "{p:?}");
    s.signer.approve_next();
    let deadline = Instant::now() + T;
    while !s
        .agent
        .ssh_add(&["-L"])
        .stdout
        .contains("-cert-v01@openssh.com")
    {
        assert!(Instant::now() < deadline, "no certificate");
        std::thread::sleep(Duration::from_millis(50));
    }

    // All is well: exit 0. (The agent writes its status just after it holds the
    // certificate: doctor may read the one before it for a moment.)
    let (out, json) = loop {
        let (out, json) = doctor(&s, &home, &s.agent.sock);
        if out.stdout.contains("session certificate valid until") || Instant::now() > deadline {
            break (out, json);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(out.success(), "{out:?}");
    assert_eq!(json["ok"], true);
    assert!(out.stdout.contains("all is well"), "{out:?}");
    assert!(
        out.stdout.contains("session certificate valid until"),
        "{out:?}"
    );

    // 1. SSH_AUTH_SOCK at another agent (OpenSSH's).
    let other = s.path("other-agent.sock");
    let _ssh_agent = Daemon::spawn_named(
        "ssh-agent",
        Command::new("ssh-agent").arg("-D").arg("-a").arg(&other),
    );
    let deadline = Instant::now() + T;
    while !other.exists() {
        assert!(Instant::now() < deadline, "ssh-agent did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (out, json) = doctor(&s, &home, &other);
    let (msg, fix) = problem(&out, &json, "ssh-auth-sock");
    assert!(
        msg.contains("another agent") && msg.contains(&other.display().to_string()),
        "{msg}"
    );
    assert!(
        fix.starts_with(&format!("export SSH_AUTH_SOCK={}", s.agent.sock.display())),
        "{fix}"
    );

    // 2. An IdentityAgent in ~/.ssh/config that overrides it.
    let ssh_dir = home.join(".ssh");
    std::fs::create_dir_all(&ssh_dir).unwrap();
    std::fs::write(
        ssh_dir.join("config"),
        "# my settings\nHost *\n    IdentityAgent ~/.1password/agent.sock\n",
    )
    .unwrap();
    let (out, json) = doctor(&s, &home, &s.agent.sock);
    let (msg, fix) = problem(&out, &json, "identity-agent");
    assert!(
        msg.contains("config:3") && msg.contains("for every host"),
        "{msg}"
    );
    assert!(
        fix.contains("edit line 3")
            && fix.contains(&format!("IdentityAgent {}", s.agent.sock.display())),
        "{fix}"
    );
    std::fs::remove_file(ssh_dir.join("config")).unwrap();

    // 3. The certificate expired (and the renewal waits for a person).
    let (out, json) = doctor_until(&s, &home, "certificate expired");
    let (msg, fix) = problem(&out, &json, "certificate");
    assert!(msg.contains("expired"), "{msg}");
    assert!(fix.starts_with("vmux agent request-cert"), "{fix}");

    // 4. The signer's clock is five minutes ahead (libfaketime).
    s.signer.stop();
    let lib = libfaketime();
    s.signer = Signer::start_env(
        None,
        &s.signer.home.clone(),
        &s.signer.addr.clone(),
        &[
            ("LD_PRELOAD", lib.to_str().unwrap()),
            ("FAKETIME", "+300s"),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
            ("FAKETIME_DONT_RESET", "1"),
        ],
    );
    s.agent.wait_connected();
    let (out, json) = doctor_until(&s, &home, "ahead of this machine");
    let (msg, fix) = problem(&out, &json, "clock");
    assert!(
        msg.contains("s ahead of this machine's") && msg.contains("60 s"),
        "{msg}"
    );
    let skew: i64 = msg
        .split("clock is ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!((295..=305).contains(&skew), "{msg}");
    assert!(fix.contains("timedatectl set-ntp true"), "{fix}");

    // 5. The agent is down (killed: its socket file stays behind).
    let pid = s.agent.daemon.as_ref().unwrap().pid();
    common::proc::send_signal(pid, common::proc::SIGKILL);
    s.agent.daemon.take().unwrap().wait_exit(T);
    let (out, json) = doctor(&s, &home, &s.agent.sock);
    let (msg, fix) = problem(&out, &json, "agent");
    assert!(msg.contains("not running"), "{msg}");
    assert!(fix.starts_with("vmux agent run"), "{fix}");
    let (msg, fix) = problem(&out, &json, "stale-socket");
    assert!(msg.contains(&s.agent.sock.display().to_string()), "{msg}");
    assert_eq!(fix, format!("rm {}", s.agent.sock.display()));
}
