//! Issue 5: the link that just works — discovery, reconnection, wake, cancellation,
//! several devices, and network faults between test hosts in network namespaces.

mod common;

use common::netns::Netns;
use common::proc::run;
use common::sshd::Sshd;
use common::vmux::*;
use std::io::{BufRead, BufReader, Write};
use std::process::Command;
use std::time::{Duration, Instant};

fn sign_cmd(s: &std::path::Path, pubkey: &std::path::Path, msg: &std::path::Path) -> Command {
    sshsig(s, pubkey, msg, "file")
}

fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !f() {
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
    started.elapsed()
}

fn connected(home: &std::path::Path) -> bool {
    let s: serde_json::Value =
        serde_json::from_str(&ok(home, &["agent", "status", "--json"])).unwrap();
    s["signers"]
        .as_array()
        .is_some_and(|a| !a.is_empty() && a.iter().all(|x| x["connected"] == true))
}

#[test]
fn discovery_on_loopback_pairs_and_routes_without_addresses() {
    let ns = Netns::new("disc");
    let tmp = tempfile::tempdir().unwrap();
    let (shome, ahome) = (tmp.path().join("s"), tmp.path().join("a"));
    let pubkey = Signer::init(&shome, "found-me");
    set_signer_config(&shome, "discovery", "\"auto\"");
    let signer = Signer::start_in(Some(&ns), &shome, "127.0.0.1:0");
    agent_config(&ahome, "discovery = \"loopback\"\nsession_certs = false\n");

    // How long discovery takes: `vmux agent discover --id` stops at the first answer.
    let id = ok(&shome, &["signer", "devices"]); // (no devices yet; just proves the CLI)
    assert!(id.contains("no paired devices"));
    let signer_id = {
        let out = run(
            vmux_in(Some(&ns), &ahome).args(["agent", "discover", "--json"]),
            T,
        );
        let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_default();
        v[0]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("not discovered: {out:?}"))
            .to_string()
    };
    let mut times = vec![];
    for _ in 0..7 {
        // mDNS responders answer the same question at most once a second (RFC 6762
        // §6): space the runs so each one measures a first discovery.
        std::thread::sleep(Duration::from_millis(1100));
        let out = run(
            vmux_in(Some(&ns), &ahome).args(["agent", "discover", "--json", "--id", &signer_id]),
            T,
        );
        let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        times.push(v[0]["foundAfterMs"].as_u64().unwrap());
    }
    times.sort();
    eprintln!(
        "MEASURE discovery_ms p50={} all={times:?}",
        times[times.len() / 2]
    );

    // Pair with no address, then run with no --signer: the stored address is wrong on
    // purpose, so only mDNS can route the agent to the signer.
    pair_in(
        Some(&ns),
        &ahome,
        &signer,
        &["agent", "pair", "--id", &signer_id],
    );
    let signers = ahome.join("agent/signers.json");
    let text = std::fs::read_to_string(&signers).unwrap();
    let port = signer.addr.rsplit(':').next().unwrap();
    std::fs::write(&signers, text.replace(&format!(":{port}"), ":1")).unwrap();
    let agent = Agent::start_in(Some(&ns), &ahome, &[]);
    wait_until("discovery to route the agent", T, || connected(&ahome));

    // The agent socket is a file, so ssh and sshd can stay in this namespace.
    let sshd = Sshd::start(&pubkey);
    let mut c = sshd.ssh_command(&agent.sock);
    c.arg("true");
    let h = background(c);
    signer.wait_pending(1);
    signer.approve_next();
    assert!(h.join().unwrap().success());
}

#[test]
fn restarted_signer_serves_again_without_touching_the_agent() {
    let mut s = Setup::new();
    let sshd = Sshd::start(&s.pubkey);
    let login = |s: &Setup| {
        let mut c = sshd.ssh_command(&s.agent.sock);
        c.arg("true");
        let h = background(c);
        s.signer.wait_pending(1);
        s.signer.approve_next();
        h.join().unwrap()
    };
    assert!(login(&s).success());
    let addr = s.signer.addr.clone();
    let shome = s.signer.home.clone();
    s.signer.stop();
    wait_until("the agent to notice", Duration::from_secs(15), || {
        !connected(&s.agent.home)
    });
    std::thread::sleep(Duration::from_secs(2));
    s.signer = Signer::start(&shome, &addr);
    let gap = wait_until("reconnection", Duration::from_secs(10), || {
        connected(&s.agent.home)
    });
    eprintln!("MEASURE reconnect_ms={}", gap.as_millis());
    assert!(login(&s).success());
}

/// A one-shot HTTP receiver on loopback: records the first POST body, answers 200,
/// then calls `on_post`.
fn wake_receiver(
    on_post: impl FnOnce() + Send + 'static,
) -> (String, std::sync::mpsc::Receiver<String>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/wake/topic", l.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let (stream, _) = l.accept().unwrap();
        let mut r = BufReader::new(stream.try_clone().unwrap());
        let mut head = String::new();
        let mut len = 0;
        loop {
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            if line.to_ascii_lowercase().starts_with("content-length:") {
                len = line[15..].trim().parse().unwrap();
            }
            head.push_str(&line);
            if line == "\r\n" {
                break;
            }
        }
        let mut body = vec![0u8; len];
        std::io::Read::read_exact(&mut r, &mut body).unwrap();
        let mut w = stream;
        w.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            .unwrap();
        tx.send(format!("{head}\n{}", String::from_utf8_lossy(&body)))
            .unwrap();
        on_post();
    });
    (url, rx)
}

#[test]
fn wake_post_starts_the_signer_and_the_login_succeeds() {
    let tmp = tempfile::tempdir().unwrap();
    let (shome, ahome) = (tmp.path().join("s"), tmp.path().join("a"));
    let pubkey = Signer::init(&shome, "sleepy");
    // The signer the wake starts; the test holds it, so it is stopped when the test
    // ends, passed or failed (a daemon left running outlives the test binary).
    let woken_daemon = std::sync::Arc::new(std::sync::Mutex::new(None::<Signer>));
    let (url, posted) = {
        let shome = shome.clone();
        let keep = woken_daemon.clone();
        let af = tmp.path().join("addr");
        wake_receiver(move || {
            let addr = std::fs::read_to_string(&af).unwrap();
            *keep.lock().unwrap() = Some(Signer::start(&shome, &addr));
        })
    };
    set_signer_config(&shome, "wake_url", &format!("\"{url}\""));
    // The wake service runs on this machine for the test: said so explicitly.
    agent_config(&ahome, "session_certs = false\nwake_local = true\n");
    let mut signer = Signer::start(&shome, "127.0.0.1:0");
    std::fs::write(tmp.path().join("addr"), &signer.addr).unwrap();
    pair(&ahome, &signer);
    let agent = Agent::start(&ahome);
    wait_until("link", T, || connected(&ahome));
    let stored = std::fs::read_to_string(ahome.join("agent/signers.json")).unwrap();
    assert!(
        stored.contains(&url),
        "the agent keeps the wake URL: {stored}"
    );

    // The signer goes to sleep; a login needs it.
    signer.stop();
    wait_until("the agent to notice", Duration::from_secs(15), || {
        !connected(&ahome)
    });
    let sshd = Sshd::start(&pubkey);
    let mut c = sshd.ssh_command(&agent.sock);
    c.arg("true");
    let h = background(c);
    let request = posted.recv_timeout(T).expect("no wake POST");
    let body = request.rsplit('\n').next().unwrap();
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    let token = v["token"].as_str().unwrap().to_string();
    assert_eq!(v, serde_json::json!({"vmux": "wake", "token": token}));
    assert_eq!(token.len(), 32, "a random per-pairing token: {body}");
    assert!(stored_token(&ahome).as_deref() == Some(token.as_str()));
    assert!(request.starts_with("POST /wake/topic"), "{request}");
    for secret in [
        &pubkey.split_whitespace().nth(1).unwrap()[20..40],
        "127.0.0.1",
        "true",
    ] {
        assert!(!body.contains(secret), "wake body leaks {secret}: {body}");
    }
    // The woken signer (same home, same address) gets the request.
    let woken = Signer {
        home: shome.clone(),
        daemon: None,
        addr: signer.addr.clone(),
    };
    woken.wait_pending(1);
    woken.approve_next();
    let out = h.join().unwrap();
    assert!(out.success(), "{out:?}");
    assert!(
        woken_daemon.lock().unwrap().take().is_some(),
        "the wake started the signer"
    );
}

#[test]
fn cancelled_request_leaves_the_queue() {
    let s = Setup::new();
    let msg = s.path("m");
    std::fs::write(&msg, "x").unwrap();
    let mut child = sign_cmd(&s.agent.sock, &s.pubkey_file(), &msg)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    s.signer.wait_pending(1);
    child.kill().unwrap();
    child.wait().unwrap();
    wait_until(
        "the request to leave pending",
        Duration::from_secs(10),
        || s.signer.pending().is_empty(),
    );
    assert!(s.signer.log().contains("cancelled"), "{}", s.signer.log());
}

#[test]
fn two_agents_one_signer_and_one_agent_two_signers() {
    // Two agents, one signer, one FIFO queue.
    let s = Setup::new();
    let second_home = s.path("agent2");
    agent_config(&second_home, "session_certs = false\n");
    pair(&second_home, &s.signer);
    let second = Agent::start(&second_home);
    second.wait_connected();
    let msg = s.path("m");
    std::fs::write(&msg, "x").unwrap();
    let first = background(sign_cmd(&s.agent.sock, &s.pubkey_file(), &msg));
    s.signer.wait_pending(1);
    let other = background(sign_cmd(&second.sock, &s.pubkey_file(), &msg));
    let p = s.signer.wait_pending(2);
    assert_ne!(p[0]["fromId"], p[1]["fromId"], "{p:?}");
    let devices = ok(&s.signer.home, &["signer", "devices"]);
    assert_eq!(devices.lines().count(), 2, "{devices}");
    s.signer.approve_next();
    s.signer.approve_next();
    assert!(first.join().unwrap().success());
    assert!(other.join().unwrap().success());

    // One agent, two signers: both key sets listed, each request routed to its holder.
    let tmp = tempfile::tempdir().unwrap();
    let (h1, h2, ah) = (
        tmp.path().join("s1"),
        tmp.path().join("s2"),
        tmp.path().join("a"),
    );
    let (k1, k2) = (Signer::init(&h1, "one"), Signer::init(&h2, "two"));
    let (s1, s2) = (
        Signer::start(&h1, "127.0.0.1:0"),
        Signer::start(&h2, "127.0.0.1:0"),
    );
    agent_config(&ah, "session_certs = false\n");
    pair(&ah, &s1);
    pair(&ah, &s2);
    let a = Agent::start(&ah);
    a.wait_connected();
    let listed = a.ssh_add(&["-L"]).stdout;
    assert!(
        listed.contains(k1.trim()) && listed.contains(k2.trim()),
        "{listed}"
    );
    let status = ok(&ah, &["agent", "status"]);
    assert!(
        status.contains("\"one\"") && status.contains("\"two\""),
        "{status}"
    );
    for (key, here, there) in [(&k1, &s1, &s2), (&k2, &s2, &s1)] {
        let kf = tmp.path().join("k.pub");
        std::fs::write(&kf, key).unwrap();
        let h = background(sign_cmd(&a.sock, &kf, &msg));
        here.wait_pending(1);
        assert!(
            there.pending().is_empty(),
            "request went to the wrong signer"
        );
        here.approve_next();
        assert!(h.join().unwrap().success());
    }
}

#[test]
fn faults_between_test_hosts_fail_cleanly_within_the_bound() {
    let (sn, an) = (Netns::new("sig"), Netns::new("agt"));
    let (_, agent_if) = sn.link(&an, "10.77.0.1/24", "10.77.0.2/24");
    let tmp = tempfile::tempdir().unwrap();
    let (shome, ahome) = (tmp.path().join("s"), tmp.path().join("a"));
    let pubkey = Signer::init(&shome, "far");
    let signer = Signer::start_in(Some(&sn), &shome, "10.77.0.1:0");
    agent_config(
        &ahome,
        "session_certs = false\nconnect_timeout_secs = 5\nrequest_window_secs = 20\n",
    );
    pair_in(Some(&an), &ahome, &signer, &["agent", "pair", &signer.addr]);
    let agent = Agent::start_in(Some(&an), &ahome, &[]);
    wait_until("link", T, || connected(&ahome));
    let kf = tmp.path().join("k.pub");
    std::fs::write(&kf, &pubkey).unwrap();
    let msg = tmp.path().join("m");
    std::fs::write(&msg, "x").unwrap();

    // Lossy, slow network: every request succeeds or fails cleanly within its bound.
    // (This kernel has no sch_netem, so loss comes from nftables and slowness from a
    // token-bucket rate limit.)
    an.exec(&[
        "tc", "qdisc", "add", "dev", &agent_if, "root", "tbf", "rate", "256kbit", "burst", "4kb",
        "latency", "300ms",
    ]);
    an.exec(&["nft", "add", "table", "inet", "fault"]);
    an.exec(&[
        "nft",
        "add chain inet fault in { type filter hook input priority 0; }",
    ]);
    an.exec(&[
        "nft",
        &format!("add rule inet fault in iifname \"{agent_if}\" numgen random mod 100 < 20 drop"),
    ]);
    let approver = {
        let shome = shome.clone();
        std::thread::spawn(move || {
            for _ in 0..4 {
                let _ = run(
                    vmux(&shome).args(["signer", "approve", "--next", "--wait", "40"]),
                    T * 2,
                );
            }
        })
    };
    let (mut ok_n, mut fail_n) = (0, 0);
    for _ in 0..4 {
        let started = Instant::now();
        let out = run(
            &mut sign_cmd(&agent.sock, &kf, &msg),
            Duration::from_secs(90),
        );
        assert!(!out.timed_out, "a request hung: {out:?}");
        assert!(
            started.elapsed() < Duration::from_secs(45),
            "took {:?}",
            started.elapsed()
        );
        if out.success() {
            ok_n += 1
        } else {
            fail_n += 1
        }
    }
    approver.join().unwrap();
    eprintln!("MEASURE lossy ok={ok_n} failed={fail_n}");

    // A dead network: the link is declared dead and requests fail within the bound.
    an.exec(&["nft", "flush chain inet fault in"]);
    an.exec(&[
        "nft",
        &format!("add rule inet fault in iifname \"{agent_if}\" drop"),
    ]);
    let started = Instant::now();
    let out = run(
        &mut sign_cmd(&agent.sock, &kf, &msg),
        Duration::from_secs(90),
    );
    assert!(!out.success() && !out.timed_out, "{out:?}");
    let took = started.elapsed();
    eprintln!("MEASURE dead_network_fail_ms={}", took.as_millis());
    assert!(took < Duration::from_secs(40), "took {took:?}");
    assert!(agent.ssh_add(&["-l"]).success(), "the agent still answers");

    // The network heals: requests work again without restarting anything.
    an.exec(&["nft", "delete table inet fault"]);
    an.exec(&["tc", "qdisc", "del", "dev", &agent_if, "root"]);
    wait_until("relink", Duration::from_secs(30), || connected(&ahome));
    let h = background(sign_cmd(&agent.sock, &kf, &msg));
    signer.wait_pending(1);
    signer.approve_next();
    let out = h.join().unwrap();
    assert!(out.success(), "{out:?}\n{}", ok(&ahome, &["agent", "log"]));
}

/// The wake token the agent keeps for its (only) signer.
fn stored_token(ahome: &std::path::Path) -> Option<String> {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ahome.join("agent/signers.json")).ok()?)
            .ok()?;
    v[0]["wakeToken"].as_str().map(String::from)
}

#[test]
fn wake_urls_are_https_except_to_this_machine() {
    let tmp = tempfile::tempdir().unwrap();
    let out = try_vmux(
        &tmp.path().join("s"),
        &[
            "signer",
            "init",
            "--name",
            "x",
            "--wake-url",
            "http://ntfy.example/topic",
        ],
    );
    assert!(!out.success() && out.stderr.contains("https"), "{out:?}");
    let out = try_vmux(
        &tmp.path().join("s"),
        &[
            "signer",
            "init",
            "--name",
            "x",
            "--wake-url",
            "https://ntfy.example/topic",
        ],
    );
    assert!(out.success(), "{out:?}");
}

/// Advertise a signer record for `id` at `addr` from inside the network namespace `ns`
/// (a spoofer on the local network), until the returned handle is dropped.
fn spoof_mdns(ns: &Netns, id: &str, addr: std::net::SocketAddr) -> std::sync::mpsc::Sender<()> {
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
    let (path, id) = (format!("/var/run/netns/{}", ns.name), id.to_string());
    std::thread::spawn(move || {
        // Join the namespace on this thread only; mdns-sd's threads inherit it.
        let f = std::fs::File::open(&path).unwrap();
        use std::os::fd::AsRawFd;
        let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
        if rc != 0 {
            let _ = ready_tx.send(Err(format!("setns: {}", std::io::Error::last_os_error())));
            return;
        }
        let advert = vmux_proto::discovery::advertise(
            vmux_proto::discovery::Scope::Loopback,
            &id,
            "spoofed-signer",
            addr,
        );
        let _ = ready_tx.send(advert.as_ref().map(|_| ()).map_err(|e| e.clone()));
        let _ = stop_rx.recv();
        drop(advert);
    });
    ready_rx.recv().unwrap().expect("spoofed advert");
    stop_tx
}

#[test]
fn a_spoofed_mdns_record_cannot_move_a_pin() {
    let ns = Netns::new("spoof");
    let tmp = tempfile::tempdir().unwrap();
    let (shome, ahome, ehome) = (
        tmp.path().join("s"),
        tmp.path().join("a"),
        tmp.path().join("evil"),
    );
    let pubkey = Signer::init(&shome, "real");
    set_signer_config(&shome, "discovery", "\"auto\"");
    let signer = Signer::start_in(Some(&ns), &shome, "127.0.0.1:0");
    agent_config(&ahome, "discovery = \"loopback\"\nsession_certs = false\n");
    pair_in(Some(&ns), &ahome, &signer, &["agent", "pair", &signer.addr]);
    let real_id = {
        let v: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(ahome.join("agent/signers.json")).unwrap(),
        )
        .unwrap();
        v[0]["id"].as_str().unwrap().to_string()
    };
    // The attacker runs a signer of his own (another key) and advertises it under the
    // real signer's id.
    Signer::init(&ehome, "evil");
    let evil = Signer::start_in(Some(&ns), &ehome, "127.0.0.1:0");
    let _spoof = spoof_mdns(&ns, &real_id, evil.addr.parse().unwrap());
    let before = std::fs::read_to_string(ahome.join("agent/signers.json")).unwrap();
    let agent = Agent::start_in(Some(&ns), &ahome, &[]);
    wait_until("the link", T, || connected(&ahome));
    let d = agent.daemon.as_ref().unwrap();
    d.wait_for_line(
        |l| l.contains("did not answer there") && l.contains("ignored"),
        T,
    )
    .unwrap_or_else(|| panic!("the spoof was not noticed: {}", d.output()));
    let after = std::fs::read_to_string(ahome.join("agent/signers.json")).unwrap();
    assert_eq!(before, after, "a spoofed record moved the pin");
    assert!(
        evil.pending().is_empty(),
        "the agent paired or talked with the spoofer"
    );
    // The next login works, through the real signer.
    let sshd = Sshd::start(&pubkey);
    let mut c = sshd.ssh_command(&agent.sock);
    c.arg("true");
    let h = background(c);
    signer.wait_pending(1);
    signer.approve_next();
    assert!(h.join().unwrap().success());
}
