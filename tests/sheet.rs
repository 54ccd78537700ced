//! Issue 13: the approval sheet of `vmux signer run` on a terminal, driven in tmux as a
//! person would: a request appears with every field, `d` denies, `a` approves, keys
//! typed before a request was on screen do not count, a cancelled request disappears,
//! the pairing code must be typed.

mod common;

use common::proc::{free_port, run, Daemon};
use common::tmux::Tmux;
use common::vmux::*;
use std::time::{Duration, Instant};

#[test]
fn the_sheet_shows_every_field_and_decides_only_on_deliberate_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let (shome, ahome) = (tmp.path().join("s"), tmp.path().join("a"));
    agent_config(&ahome, "session_certs = false\nname = \"laptop\"\n");
    let pubkey = Signer::init(&shome, "pi");
    let addr = format!("127.0.0.1:{}", free_port());
    let bin = env!("CARGO_BIN_EXE_vmux");
    let t = Tmux::start(&format!(
        "env VMUX_HOME={} {bin} signer run --listen {addr}; echo SHEET-EXITED; sleep 60",
        shome.display()
    ));
    t.wait_for("Nothing waiting", 1);

    // Pairing: the code has to be typed; `a` does nothing for it.
    let mut pairing = Daemon::spawn_interactive(
        "vmux agent pair",
        vmux(&ahome).args(["agent", "pair", &addr]),
    );
    let code = pairing_code(&pairing);
    let screen = t.wait_for("Pairing request", 1);
    assert!(
        screen.contains(&code) && screen.contains("laptop"),
        "{screen}"
    );
    t.decide(&["a"]);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(pending(&shome).len(), 1, "`a` approved a pairing");
    for c in code.chars() {
        t.keys(&[&c.to_string()]);
    }
    t.decide(&["Enter"]);
    // The sheet now shows the signer's own code, to be typed on the laptop.
    let screen = t.wait_for("Signer's code", 1);
    let signer_code = pending(&shome)[0]["signerCode"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(screen.contains(&signer_code), "{screen}");
    pairing
        .wait_for_line(|l| l.contains("type the code the signer shows"), T)
        .unwrap_or_else(|| panic!("{}", pairing.output()));
    pairing.send_line(&signer_code);
    pairing
        .wait_for_line(|l| l.starts_with("paired with signer"), T)
        .unwrap_or_else(|| panic!("pairing did not finish: {}", pairing.output()));
    t.wait_for("Paired with laptop", 1);

    let agent = Agent::start(&ahome);
    agent.wait_connected();
    let keyfile = tmp.path().join("k.pub");
    std::fs::write(&keyfile, &pubkey).unwrap();
    let sign = |name: &str| {
        let msg = tmp.path().join(name);
        std::fs::write(&msg, name).unwrap();
        background(sshsig(&agent.sock, &keyfile, &msg, "file"))
    };

    // Keys pressed before a request is on screen do not count.
    t.keys(&["a", "a"]);
    std::thread::sleep(Duration::from_millis(200));
    let shown_at = Instant::now();
    let h = sign("m1");
    let screen = t.wait_for("SSH Sign Request", 1);
    let appeared = shown_at.elapsed();
    for f in [
        "From device",
        "laptop",
        "Purpose",
        "file signature",
        "Requester",
        "ssh-keygen (",
        "(claimed)",
        "Key",
        "SHA256:",
        "[software]",
        "Expires in",
        "[a] approve  [d] deny",
    ] {
        assert!(screen.contains(f), "missing {f:?}:\n{screen}");
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        pending(&shome).len(),
        1,
        "typed-ahead keys decided:\n{}",
        t.screen()
    );
    eprintln!("request on screen {appeared:?} after it was sent");

    // Details, then deny: ssh-keygen hears "agent refused operation".
    t.keys(&["?"]);
    t.wait_for("Data SHA-256", 1);
    t.decide(&["d"]);
    let out = h.join().unwrap();
    assert!(
        !out.success() && out.stderr.contains("agent refused operation"),
        "{out:?}"
    );
    t.wait_for("Denied", 1);

    // Two at once: shown as one list; `l` shows them one at a time, with the queue
    // depth; `a` approves the one on screen.
    let h1 = sign("m2");
    t.wait_for("SSH Sign Request", 1);
    let h2 = sign("m3");
    t.wait_for("2 SSH Sign Requests, as one list", 1);
    t.keys(&["l"]);
    t.wait_for("1 more waiting", 1);
    t.decide(&["a"]);
    t.wait_for("Approved remote sign request", 1);
    let h1_ok = wait_done(&h1);
    let screen = t.wait_for("SSH Sign Request", 1);
    assert!(screen.contains("file signature"), "{screen}");
    t.decide(&["a"]);
    assert!(h1_ok && h1.join().unwrap().success());
    assert!(h2.join().unwrap().success());
    t.keys(&["l"]);
    t.wait_for("shown as one list", 1);

    // A request whose client gives up leaves the sheet.
    let msg = tmp.path().join("m4");
    std::fs::write(&msg, "m4").unwrap();
    let mut c = sshsig(&agent.sock, &keyfile, &msg, "file");
    let mut child = c.spawn().unwrap();
    t.wait_for("SSH Sign Request", 1);
    child.kill().unwrap();
    let _ = child.wait();
    t.wait_for("Request withdrawn", 1);
    assert!(pending(&shome).is_empty());

    // q leaves the sheet and the terminal is given back.
    t.keys(&["q"]);
    let screen = t.wait_for("SHEET-EXITED", 1);
    assert!(!screen.contains("recent decisions"), "{screen}");
    drop(agent);
    let _ = run(vmux(&shome).args(["signer", "pending"]), T);
}

fn pending(home: &std::path::Path) -> Vec<serde_json::Value> {
    serde_json::from_str(&ok(home, &["signer", "pending", "--json"])).unwrap()
}

fn wait_done(h: &std::thread::JoinHandle<common::proc::Output>) -> bool {
    let deadline = Instant::now() + T;
    while !h.is_finished() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

/// `vmux up`'s sheet at 80×24 and then 200×50, with debug logging, while the agent
/// connects, a pairing arrives and is decided elsewhere and a request waits: the screen
/// holds no log text, every field of the request is whole, and `q` asks first.
#[test]
fn nothing_writes_over_the_sheet_at_80x24() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    agent_config(&home, "session_certs = false\n");
    let sock = tmp.path().join("sock/agent.sock");
    let bin = env!("CARGO_BIN_EXE_vmux");
    let t = Tmux::start(&format!(
        "env VMUX_HOME={} VMUX_LOG=debug {bin} up --listen 127.0.0.1:0 --socket {}; echo UP-EXITED; sleep 60",
        home.display(),
        sock.display()
    ));
    t.command(&["resize-window", "-x", "80", "-y", "24"]);
    let screen = t.wait_for("Nothing waiting", 1);
    let no_logs = |screen: &str| {
        for bad in [
            " INFO ",
            " DEBUG ",
            " WARN ",
            "TRACE",
            "vmux_agent",
            "vmux_signer",
            "zbus",
        ] {
            assert!(
                !screen.contains(bad),
                "log text {bad:?} on the sheet:\n{screen}"
            );
        }
    };
    no_logs(&screen);
    // The log went to the file the header names.
    assert!(screen.contains("vmux.log"), "{screen}");
    let addr = std::fs::read_to_string(home.join("signer/config.toml"))
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix("listen = ")
                .map(|a| a.trim_matches('"').to_string())
        })
        .unwrap();

    // A pairing from another device, then decided elsewhere: the sheet says so.
    let other = tmp.path().join("other");
    agent_config(&other, "session_certs = false\nname = \"visitor\"\n");
    let pairing = Daemon::spawn_named(
        "vmux agent pair",
        vmux(&other).args(["agent", "pair", &addr]),
    );
    let code = pairing_code(&pairing);
    let screen = t.wait_for("Pairing request", 1);
    assert!(
        screen.contains(&code) && screen.contains("visitor"),
        "{screen}"
    );
    no_logs(&screen);
    let id = pending(&home)[0]["id"].as_str().unwrap().to_string();
    ok(&home, &["signer", "deny", &id]);
    let screen = t.wait_for("Denied elsewhere", 1);
    no_logs(&screen);

    // A request waits: every field is on screen, whole.
    let pubkey = tmp.path().join("k.pub");
    std::fs::write(&pubkey, ok(&home, &["signer", "keys", "pub"])).unwrap();
    let fp = ok(&home, &["signer", "keys", "list"])
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let msg = tmp.path().join("m");
    std::fs::write(&msg, "m").unwrap();
    let h = background(sshsig(&sock, &pubkey, &msg, "file"));
    let fields = [
        "SSH Sign Request",
        "From device",
        "Purpose",
        "file signature",
        "Requester",
        "ssh-keygen (",
        "Key",
        fp.as_str(),
        "[software]",
        "Expires in",
        "[a] approve",
    ];
    let screen = t.wait_for("SSH Sign Request", 1);
    for f in fields {
        assert!(screen.contains(f), "missing {f:?} at 80x24:\n{screen}");
    }
    no_logs(&screen);
    assert!(screen.lines().count() <= 24 + 1, "{screen}");
    // A resize redraws; at 200×50 everything is still there.
    t.command(&["resize-window", "-x", "200", "-y", "50"]);
    std::thread::sleep(Duration::from_millis(700));
    let screen = t.screen();
    for f in fields {
        assert!(screen.contains(f), "missing {f:?} at 200x50:\n{screen}");
    }
    assert!(screen.contains("recent decisions"), "{screen}");
    no_logs(&screen);
    // `?` labels every id.
    t.keys(&["?"]);
    let screen = t.wait_for("this signer's id for the request", 1);
    assert!(
        screen.contains("the requesting device's own id for it")
            && screen.contains("what a decision is bound to"),
        "{screen}"
    );
    // `k` shows the public keys and the CA line.
    t.keys(&["k"]);
    let screen = t.wait_for("TrustedUserCAKeys", 2);
    assert!(screen.contains("ecdsa-sha2-nistp256 AAAA"), "{screen}");
    t.keys(&["k"]);
    std::thread::sleep(Duration::from_millis(1100));
    t.decide(&["a"]);
    assert!(h.join().unwrap().success());
    t.wait_for("Approved remote sign request", 1);
    // One denied elsewhere: the agent logs it, into the file, summarised on the sheet.
    let h = background(sshsig(&sock, &pubkey, &msg, "file"));
    t.wait_for("SSH Sign Request", 1);
    let id = pending(&home)[0]["id"].as_str().unwrap().to_string();
    ok(&home, &["signer", "deny", &id]);
    assert!(!h.join().unwrap().success());
    let screen = t.wait_for("failed: userDenied", 1);
    no_logs(&screen);

    // q asks; n keeps it running; y stops both.
    t.keys(&["q"]);
    t.wait_for("Stop agent and signer? y/N", 1);
    t.decide(&["n"]);
    t.wait_for("Not stopped", 1);
    t.keys(&["q"]);
    t.wait_for("Stop agent and signer? y/N", 1);
    t.keys(&["y"]);
    t.wait_for("UP-EXITED", 1);
    let log = std::fs::read_to_string(home.join("vmux.log")).unwrap();
    assert!(
        log.contains("failed: userDenied") && !log.contains('\x1b'),
        "the log lines went to the log file, plain: {log}"
    );
}
