//! Issue 22: fewer prompts, never blind. A burst of real `ssh` logins is shown on the
//! sheet as one list and approved with one key (only what was on the list), the same
//! through `vmux signer approve --list DIGEST`; deny-and-mute silences one requester and
//! no other; a list decision for a list nobody saw, or one that changed, signs nothing.

mod common;

use common::proc::free_port;
use common::sshd::Sshd;
use common::tmux::Tmux;
use common::vmux::*;
use std::path::Path;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A signer paired with an agent, the signer's sheet in tmux, sshd trusting its key.
struct Bench {
    tmp: tempfile::TempDir,
    signer: Signer,
    agent: Agent,
    sshd: Sshd,
    sheet: Option<Tmux>,
}

impl Bench {
    /// `sheet`: run the signer in tmux (its sheet); otherwise as a plain daemon.
    fn start(sheet: bool) -> Bench {
        let tmp = tempfile::tempdir().unwrap();
        let (shome, ahome) = (tmp.path().join("s"), tmp.path().join("a"));
        agent_config(&ahome, "session_certs = false\nname = \"laptop\"\n");
        let pubkey = Signer::init(&shome, "phone");
        let addr = format!("127.0.0.1:{}", free_port());
        let mut signer = Signer::start(&shome, &addr);
        pair(&ahome, &signer);
        let sheet = sheet.then(|| {
            signer.stop();
            let t = Tmux::start(&format!(
                "env VMUX_HOME={} {} signer run --listen {addr}; echo SHEET-EXITED; sleep 60",
                shome.display(),
                env!("CARGO_BIN_EXE_vmux")
            ));
            t.wait_for("Nothing waiting", 1);
            t
        });
        let agent = Agent::start(&ahome);
        agent.wait_connected();
        let sshd = Sshd::start(&pubkey);
        Bench {
            tmp,
            signer,
            agent,
            sshd,
            sheet,
        }
    }

    fn t(&self) -> &Tmux {
        self.sheet.as_ref().unwrap()
    }

    /// `ssh host true` through the agent, in the background.
    fn login(&self) -> JoinHandle<common::proc::Output> {
        let mut c = self.sshd.ssh_command(&self.agent.sock);
        c.arg("true");
        background(c)
    }

    fn home(&self) -> &Path {
        &self.signer.home
    }

    fn log(&self) -> String {
        self.signer.log()
    }
}

fn done(h: &JoinHandle<common::proc::Output>, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while !h.is_finished() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

/// Sign records in the decision log whose decision is `decision`.
fn count(log: &str, decision: &str) -> usize {
    let want = format!("\"decision\":\"{decision}\"");
    log.lines()
        .filter(|l| l.contains("\"event\":\"sign\"") && l.contains(&want))
        .count()
}

#[test]
fn a_burst_of_logins_is_one_list_and_one_key_approves_exactly_it() {
    let b = Bench::start(true);
    let t = b.t();
    let five: Vec<_> = (0..5).map(|_| b.login()).collect();
    let screen = t.wait_for("5 SSH Sign Requests, as one list", 1);
    assert_eq!(
        screen.matches("requester (claimed) ssh").count(),
        5,
        "every line names its requester:\n{screen}"
    );
    for f in ["sign  from laptop", "[a] approve all 5", "[d] deny all 5"] {
        assert!(screen.contains(f), "missing {f:?}:\n{screen}");
    }
    assert_eq!(
        screen.matches("login → ").count(),
        5,
        "every line names the destination:\n{screen}"
    );

    // A sixth, after the list was drawn: not on it.
    let sixth = b.login();
    b.signer.wait_pending(6);
    let screen = t.wait_for("1 more arrived after this list was drawn", 1);
    assert!(
        screen.contains("5 SSH Sign Requests"),
        "the list grew:\n{screen}"
    );
    t.decide(&["a"]);
    for h in five {
        assert!(done(&h, T), "a listed login never finished");
        let out = h.join().unwrap();
        assert!(out.success(), "a listed login failed: {out:?}");
    }
    t.wait_for("Approved 5 remote sign requests", 1);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(!sixth.is_finished(), "the sixth was decided with the list");
    assert_eq!(b.signer.pending().len(), 1, "the sixth stays pending");
    // It is asked about on its own.
    let screen = t.wait_for(" SSH Sign Request ", 1);
    assert!(screen.contains("[m] deny & mute"), "{screen}");
    t.decide(&["a"]);
    assert!(sixth.join().unwrap().success());
    assert_eq!(count(&b.log(), "approved"), 6, "{}", b.log());
}

#[test]
fn approve_list_digest_decides_the_printed_list_and_a_stale_digest_nothing() {
    let b = Bench::start(false);
    let three: Vec<_> = (0..3).map(|_| b.login()).collect();
    b.signer.wait_pending(3);
    let out = ok(b.home(), &["signer", "approve", "--list"]);
    assert!(out.contains("3 sign requests"), "{out}");
    assert_eq!(out.matches("requester (claimed) ssh").count(), 3, "{out}");
    let digest = out
        .lines()
        .find_map(|l| l.strip_prefix("approve exactly these: vmux signer approve --list "))
        .unwrap_or_else(|| panic!("no digest in {out}"))
        .to_string();
    let pending = ok(b.home(), &["signer", "pending"]);
    assert!(
        pending.contains(&digest),
        "pending names the list: {pending}"
    );

    // A request that arrives after the list was printed stays pending.
    let fourth = b.login();
    b.signer.wait_pending(4);
    // A digest nobody was shown decides nothing.
    let forged = "0".repeat(64);
    let out = try_vmux(b.home(), &["signer", "approve", "--list", &forged]);
    assert!(!out.success(), "{out:?}");
    assert!(out.stderr.contains("list"), "{out:?}");
    assert_eq!(b.signer.pending().len(), 4);

    let out = ok(b.home(), &["signer", "approve", "--list", &digest]);
    assert!(out.contains("approved: 3 requests"), "{out}");
    for h in three {
        assert!(h.join().unwrap().success());
    }
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !fourth.is_finished(),
        "the fourth was approved with the list"
    );
    assert_eq!(b.signer.pending().len(), 1);
    // The same digest again: that list is gone.
    let again = try_vmux(b.home(), &["signer", "approve", "--list", &digest]);
    assert!(!again.success(), "{again:?}");

    // One listed request leaves: the printed list is stale and approves nothing.
    let fifth = b.login();
    b.signer.wait_pending(2);
    let out = ok(b.home(), &["signer", "deny", "--list"]);
    let stale = out
        .lines()
        .find_map(|l| l.strip_prefix("deny exactly these: vmux signer deny --list "))
        .unwrap_or_else(|| panic!("no digest in {out}"))
        .to_string();
    let first = b.signer.pending()[0]["id"].as_str().unwrap().to_string();
    let r = b.signer.pending()[0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    ok(b.home(), &["signer", "approve", &first, "--digest", &r]);
    assert!(fourth.join().unwrap().success());
    let out = try_vmux(b.home(), &["signer", "deny", "--list", &stale]);
    assert!(
        !out.success() && out.stderr.contains("changed"),
        "a stale list decided: {out:?}"
    );
    assert_eq!(b.signer.pending().len(), 1, "the fifth was decided");
    b.signer.deny_next();
    assert!(!fifth.join().unwrap().success());
    let log = b.log();
    assert_eq!(count(&log, "approved"), 4, "{log}");
}

#[test]
fn deny_and_mute_silences_one_requester_and_asks_about_others() {
    let b = Bench::start(true);
    let t = b.t();
    let first = b.login();
    t.wait_for(" SSH Sign Request ", 1);
    t.decide(&["m"]);
    t.wait_for("[1] 5 minutes", 1);
    t.keys(&["1"]);
    t.wait_for("Denied, and muted laptop", 1);
    assert!(!first.join().unwrap().success());

    // Three more from the same requester: denied at once, never shown.
    for _ in 0..3 {
        let started = Instant::now();
        let out = b.login().join().unwrap();
        assert!(!out.success(), "{out:?}");
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "a muted login waited"
        );
        assert!(b.signer.pending().is_empty());
    }
    let screen = t.wait_for("3 requests denied", 1);
    assert!(screen.contains("muted: 1 requesters"), "{screen}");
    assert!(!screen.contains(" SSH Sign Request "), "{screen}");
    let log = b.log();
    assert_eq!(count(&log, "muted"), 3, "{log}");
    let mutes = ok(b.home(), &["signer", "mute", "--list"]);
    assert!(
        mutes.contains("laptop") && mutes.contains("denied 3 so far"),
        "{mutes}"
    );

    // Another requester (ssh-keygen) is still asked.
    let key = b.tmp.path().join("k.pub");
    std::fs::write(&key, ok(b.home(), &["signer", "keys", "pub"])).unwrap();
    let msg = b.tmp.path().join("msg");
    std::fs::write(&msg, "m").unwrap();
    let sig = background(sshsig(&b.agent.sock, &key, &msg, "file"));
    let screen = t.wait_for(" SSH Sign Request ", 1);
    assert!(screen.contains("ssh-keygen"), "{screen}");
    t.decide(&["a"]);
    assert!(sig.join().unwrap().success());

    // Unmute from the sheet: the requester is asked again.
    t.keys(&["u"]);
    t.wait_for("Lifted 1 mutes", 1);
    assert!(ok(b.home(), &["signer", "mute", "--list"]).contains("no mutes"));
    let again = b.login();
    t.wait_for(" SSH Sign Request ", 1);
    t.decide(&["a"]);
    assert!(again.join().unwrap().success());

    // `mute --clear` lifts a mute too.
    let one = b.login();
    t.wait_for(" SSH Sign Request ", 1);
    t.decide(&["m"]);
    t.wait_for("[3] until the signer restarts", 1);
    t.keys(&["3"]);
    assert!(!one.join().unwrap().success());
    assert!(!b.login().join().unwrap().success());
    let cleared = ok(b.home(), &["signer", "mute", "--clear"]);
    assert!(cleared.contains("lifted 1 mutes"), "{cleared}");
    let asked = b.login();
    b.signer.wait_pending(1);
    t.decide(&["d"]);
    assert!(!asked.join().unwrap().success());
}

/// A client of the control socket that lies: a list decision for entries it never saw,
/// for a digest over a list that then changed, with ids smuggled in. Nothing is signed.
#[test]
fn a_list_decision_for_what_was_never_shown_signs_nothing() {
    let b = Bench::start(false);
    let sock = b.home().join("signer/control.sock");
    let call = |json: &str| -> serde_json::Value {
        use std::io::{BufRead, Write};
        let mut s = std::os::unix::net::UnixStream::connect(&sock).unwrap();
        s.write_all(format!("{json}\n").as_bytes()).unwrap();
        let mut line = String::new();
        std::io::BufReader::new(s).read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap()
    };
    // Nothing pending: nothing to decide.
    let r = call(r#"{"op":"decideList","digest":"00","approve":true}"#);
    assert_eq!(r["ok"], false, "{r}");

    let two: Vec<_> = (0..2).map(|_| b.login()).collect();
    b.signer.wait_pending(2);
    // The digest of one entry is not a list's digest.
    let p = b.signer.pending();
    for d in [p[0]["digest"].as_str().unwrap(), "", &"f".repeat(64)] {
        let r = call(&format!(
            r#"{{"op":"decideList","digest":"{d}","approve":true}}"#
        ));
        assert_eq!(r["ok"], false, "{r}");
        assert!(r["error"].as_str().unwrap().contains("list"), "{r}");
    }
    // Unknown fields (ids the client would like decided) are not read.
    let r = call(r#"{"op":"decideList","digest":"ab","approve":true,"ids":["x"]}"#);
    assert_eq!(r["ok"], false, "{r}");
    let listed = call(r#"{"op":"list"}"#);
    let digest = listed["list_digest"].as_str().unwrap().to_string();
    // The list changes before the decision: a third arrives and the first is decided alone.
    let mut third = b.sshd.ssh_command(&b.agent.sock);
    let mut child = third.arg("true").spawn().unwrap();
    b.signer.wait_pending(3);
    let id0 = b.signer.pending()[0]["id"].as_str().unwrap().to_string();
    let d0 = b.signer.pending()[0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    ok(b.home(), &["signer", "deny", &id0, "--digest", &d0]);
    let r = call(&format!(
        r#"{{"op":"decideList","digest":"{digest}","approve":true}}"#
    ));
    assert_eq!(r["ok"], false, "a changed list was decided: {r}");
    assert_eq!(b.signer.pending().len(), 2);
    let log = b.log();
    assert_eq!(count(&log, "approved"), 0, "{log}");
    let _ = child.kill();
    let _ = child.wait();
    let deadline = Instant::now() + T;
    while b.signer.pending().len() > 1 {
        assert!(
            Instant::now() < deadline,
            "the cancelled login stayed pending"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    b.signer.deny_next();
    for h in two {
        assert!(!h.join().unwrap().success());
    }
    assert_eq!(count(&b.log(), "approved"), 0);
}
