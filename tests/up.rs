//! Issue 8: the `vmux up` prompt needs a live person. Driven in tmux as a person would:
//! answers typed before a request appeared do not count, a request decided elsewhere
//! leaves the prompt with a line saying so, and Ctrl-C ends it at once.

mod common;

use common::tmux::Tmux;
use common::vmux::*;
use std::path::Path;
use std::time::{Duration, Instant};

fn sign_in_background(
    sock: &Path,
    pubkey: &Path,
    msg: &Path,
) -> std::thread::JoinHandle<common::proc::Output> {
    std::fs::write(msg, "data").unwrap();
    background(sshsig(sock, pubkey, msg, "file"))
}

#[test]
fn the_up_prompt_needs_a_live_person() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    agent_config(&home, "session_certs = false\n");
    let sock = tmp.path().join("sock/agent.sock");
    let bin = env!("CARGO_BIN_EXE_vmux");
    let t = Tmux::start(&format!(
        "env VMUX_HOME={} {bin} up --no-ui --listen 127.0.0.1:0 --socket {}; echo VMUX-EXITED; sleep 60",
        home.display(),
        sock.display()
    ));
    let screen = t.wait_for("Requests appear below", 1);
    let pubkey_line = screen
        .lines()
        .find_map(|l| l.strip_prefix("public key: "))
        .unwrap()
        .to_string();
    let pubkey = tmp.path().join("k.pub");
    std::fs::write(&pubkey, format!("{pubkey_line}\n")).unwrap();

    // Typed ahead, before any request: must not count.
    t.keys(&["y", "Enter", "y", "Enter"]);
    std::thread::sleep(Duration::from_millis(300));
    let h = sign_in_background(&sock, &pubkey, &tmp.path().join("m1"));
    t.wait_for("Approve? [y/N]", 1);
    std::thread::sleep(Duration::from_secs(1));
    let pending = ok(&home, &["signer", "pending", "--json"]);
    let p: Vec<serde_json::Value> = serde_json::from_str(&pending).unwrap();
    assert_eq!(p.len(), 1, "typed-ahead input decided a request: {pending}");
    assert!(!h.is_finished());

    // Decided from another shell: the prompt withdraws it and says so.
    ok(&home, &["signer", "deny", p[0]["id"].as_str().unwrap()]);
    assert!(!h.join().unwrap().success());
    t.wait_for("was denied elsewhere", 1);

    // An answer typed while the request is on screen counts.
    let h = sign_in_background(&sock, &pubkey, &tmp.path().join("m2"));
    t.wait_for("Approve? [y/N]", 2);
    t.decide(&["y", "Enter"]);
    let out = h.join().unwrap();
    assert!(out.success(), "{out:?}");
    t.wait_for("approved", 1);

    // Ctrl-C ends it at once.
    let started = Instant::now();
    t.keys(&["C-c"]);
    t.wait_for("VMUX-EXITED", 1);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "Ctrl-C took {:?}",
        started.elapsed()
    );
}

#[test]
fn vmux_up_twice_after_a_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let sock = tmp.path().join("sock/agent.sock");
    let bin = env!("CARGO_BIN_EXE_vmux");
    let cmd = format!(
        "env VMUX_HOME={} {bin} up --listen 127.0.0.1:0 --socket {}; echo VMUX-EXITED",
        home.display(),
        sock.display()
    );
    // Day one: the sheet asks for the session certificate first; approve it with `a`.
    let t = Tmux::start(&format!("{cmd}; sleep 60"));
    t.wait_for("Session certificate request", 1);
    let screen = t.wait_for("without asking you again", 1);
    assert!(screen.contains("Grants"), "{screen}");
    t.decide(&["a"]);
    t.wait_for("Approved session certificate", 1);
    let deadline = Instant::now() + T;
    loop {
        let listed = std::process::Command::new("ssh-add")
            .arg("-L")
            .env("SSH_AUTH_SOCK", &sock)
            .output()
            .unwrap();
        if String::from_utf8_lossy(&listed.stdout).contains("-cert-v01@openssh.com") {
            break;
        }
        assert!(Instant::now() < deadline, "{listed:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // One `q` asks first; anything but y keeps both running.
    t.keys(&["q"]);
    t.wait_for("Stop agent and signer? y/N", 1);
    t.decide(&["n"]);
    t.wait_for("Not stopped", 1);
    assert!(std::process::Command::new("ssh-add")
        .arg("-l")
        .env("SSH_AUTH_SOCK", &sock)
        .status()
        .unwrap()
        .success());
    t.keys(&["q"]);
    t.wait_for("Stop agent and signer? y/N", 1);
    t.keys(&["y"]);
    t.wait_for("VMUX-EXITED", 1);
    drop(t);

    // Day two: the same command starts again on what day one left, and serves.
    let t = Tmux::start(&format!("{cmd}; sleep 60"));
    t.wait_for("Session certificate request", 1);
    t.decide(&["n"]);
    t.wait_for("Denied", 1);
    let listed = std::process::Command::new("ssh-add")
        .arg("-l")
        .env("SSH_AUTH_SOCK", &sock)
        .output()
        .unwrap();
    assert!(listed.status.success(), "{listed:?}");
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains("ECDSA"),
        "{listed:?}"
    );
    // The signer it wrote listens on loopback only and does not advertise.
    let config = std::fs::read_to_string(home.join("signer/config.toml")).unwrap();
    assert!(
        config.contains("listen = \"127.0.0.1:") && config.contains("discovery = \"off\""),
        "{config}"
    );
    t.keys(&["q"]);
    t.wait_for("Stop agent and signer? y/N", 1);
    t.keys(&["y"]);
    t.wait_for("VMUX-EXITED", 1);
}

/// Day two: `vmux up`, stopped, then the service units' `ExecStart` lines on the state
/// it left: a login works with no new pairing, also after the signer moved to another
/// loopback port (the agent finds it by its pinned key through the local signer).
#[test]
fn vmux_up_grows_into_services_without_pairing_again() {
    use common::proc::{free_port, run, Daemon};
    use common::sshd::Sshd;
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    agent_config(&home, "session_certs = false\n");
    let mut up = Daemon::spawn_named("vmux up", vmux(&home).args(["up", "--no-ui"]));
    let line = up
        .wait_for_line(|l| l.starts_with("public key: "), T)
        .unwrap_or_else(|| panic!("vmux up did not start: {}", up.output()));
    let pubkey = line.trim_start_matches("public key: ").to_string();
    up.terminate(Duration::from_secs(5));
    let config = std::fs::read_to_string(home.join("signer/config.toml")).unwrap();
    assert!(config.contains("listen = \"127.0.0.1:"), "{config}");

    // The units' commands, as systemd would run them.
    let exec = |daemon: &str| -> Vec<String> {
        let units = ok(&home, &[daemon, "install-service", "--print"]);
        let l = units
            .lines()
            .find_map(|l| l.strip_prefix("ExecStart="))
            .unwrap_or_else(|| panic!("no ExecStart in {units}"))
            .to_string();
        l.split_whitespace().skip(1).map(String::from).collect()
    };
    let sshd = Sshd::start(&pubkey);
    let login = |sock: &Path| {
        let h = background({
            let mut c = sshd.ssh_command(sock);
            c.arg("true");
            c
        });
        let s = Signer {
            home: home.clone(),
            daemon: None,
            addr: String::new(),
        };
        s.approve_next();
        assert!(h.join().unwrap().success());
        assert!(
            !s.pending().iter().any(|p| p["kind"] == "pair"),
            "asked to pair again"
        );
    };
    let mut signer = Daemon::spawn_named("signer unit", vmux(&home).args(exec("signer")));
    signer
        .wait_for_line(|l| l.contains("listening on"), T)
        .unwrap_or_else(|| panic!("{}", signer.output()));
    let mut agent = Daemon::spawn_named("agent unit", vmux(&home).args(exec("agent")));
    agent
        .wait_for_line(|l| l.contains("vmux agent listening on"), T)
        .unwrap_or_else(|| panic!("{}", agent.output()));
    let sock = home.join("agent.sock");
    login(&sock);
    assert_eq!(ok(&home, &["signer", "devices"]).lines().count(), 1);

    // The signer moves to another port: the agent follows it, no pairing.
    signer.terminate(Duration::from_secs(5));
    let moved = format!("127.0.0.1:{}", free_port());
    let mut signer = Daemon::spawn_named(
        "moved signer",
        vmux(&home).args(["signer", "run", "--no-ui", "--listen", &moved]),
    );
    signer
        .wait_for_line(|l| l.contains("listening on"), T)
        .unwrap_or_else(|| panic!("{}", signer.output()));
    login(&sock);
    let status = run(vmux(&home).args(["agent", "status"]), T).stdout;
    assert!(status.contains(&moved), "{status}");
    agent.terminate(Duration::from_secs(5));
    signer.terminate(Duration::from_secs(5));
}
