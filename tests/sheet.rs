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
    let pairing = Daemon::spawn_named(
        "vmux agent pair",
        vmux(&ahome).args(["agent", "pair", &addr]),
    );
    let code = pairing_code(&pairing);
    let screen = t.wait_for("Pairing request", 1);
    assert!(
        screen.contains(&code) && screen.contains("laptop"),
        "{screen}"
    );
    t.keys(&["a"]);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(pending(&shome).len(), 1, "`a` approved a pairing");
    for c in code.chars() {
        t.keys(&[&c.to_string()]);
    }
    t.keys(&["Enter"]);
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
    t.keys(&["d"]);
    let out = h.join().unwrap();
    assert!(
        !out.success() && out.stderr.contains("agent refused operation"),
        "{out:?}"
    );
    t.wait_for("Denied", 1);

    // Two at once: the queue depth is shown; `a` approves the one on screen.
    let h1 = sign("m2");
    t.wait_for("SSH Sign Request", 1);
    let h2 = sign("m3");
    t.wait_for("1 more waiting", 1);
    t.keys(&["a"]);
    t.wait_for("Approved remote sign request", 1);
    let h1_ok = wait_done(&h1);
    let screen = t.wait_for("SSH Sign Request", 1);
    assert!(screen.contains("file signature"), "{screen}");
    t.keys(&["a"]);
    assert!(h1_ok && h1.join().unwrap().success());
    assert!(h2.join().unwrap().success());

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
