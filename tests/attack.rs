//! Issue 10: an attacker on the network. A man in the middle of a pairing, replays
//! across restarts, oversized fields, floods; every hostile side is driven by the test.

mod common;

use common::proc::{run, Daemon};
use common::vmux::*;
use std::time::{Duration, Instant};
use vmux_proto::envelope::*;
use vmux_proto::{noise, pairing, Identity};

/// What the man in the middle saw: both codes.
struct Mitm {
    agent_code: String,
    signer_code: String,
}

/// Sit between an agent (which dials `listen`) and the signer at `signer_addr`, playing
/// the signer toward the agent and the agent toward the signer. With `honest_open`
/// false it also lies when opening its commitment.
async fn man_in_the_middle(
    listen: tokio::net::TcpListener,
    signer_addr: String,
    honest_open: bool,
) -> Option<Mitm> {
    let (me_a, me_s) = (Identity::generate(), Identity::generate());
    let (stream, _) = listen.accept().await.ok()?;
    let a = noise::accept(stream, &me_a).await.ok()?;
    let s = noise::connect(
        tokio::net::TcpStream::connect(&signer_addr).await.ok()?,
        &me_s,
    )
    .await
    .ok()?;
    let (h1, h2) = (a.handshake_hash.clone(), s.handshake_hash.clone());
    let (mut ar, mut aw, mut sr, mut sw) = (a.reader, a.writer, s.reader, s.writer);
    // Relay Hello and PairRequest to the signer.
    for _ in 0..2 {
        let m = ar.recv().await.ok()?;
        sw.send(&m).await.ok()?;
    }
    let c2 = loop {
        if let Message::PairCommit(c) = sr.recv().await.ok()?.message {
            break c;
        }
    };
    let _ = c2;
    // Toward the agent he must commit before he sees its nonce.
    let nb1 = pairing::nonce();
    aw.send(&Envelope::new(Message::PairCommit(PairCommit {
        commitment: pairing::commitment(&h1, &nb1),
    })))
    .await
    .ok()?;
    let na1 = match ar.recv().await.ok()?.message {
        Message::PairReveal(r) => r.nonce,
        _ => return None,
    };
    // Toward the signer he must reveal before he sees the signer's nonce: the best
    // grinding can do is try many Na2 against a code it cannot compute yet.
    let na2 = na1.clone();
    sw.send(&Envelope::new(Message::PairReveal(PairNonce {
        nonce: na2.clone(),
    })))
    .await
    .ok()?;
    let nb2 = match sr.recv().await.ok()?.message {
        Message::PairOpen(o) => o.nonce,
        _ => return None,
    };
    let opened = if honest_open {
        nb1.to_vec()
    } else {
        nb2.clone()
    };
    aw.send(&Envelope::new(Message::PairOpen(PairNonce {
        nonce: opened,
    })))
    .await
    .ok()?;
    let found = Mitm {
        agent_code: pairing::code(&h1, &na1, &nb1),
        signer_code: pairing::code(&h2, &na2, &nb2),
    };
    // Hold both links for a while, as an attacker waiting for a careless approval.
    tokio::time::sleep(Duration::from_secs(3)).await;
    Some(found)
}

#[test]
fn a_man_in_the_middle_of_a_pairing_cannot_match_the_codes() {
    let tmp = tempfile::tempdir().unwrap();
    let (shome, ahome) = (tmp.path().join("s"), tmp.path().join("a"));
    Signer::init(&shome, "real-signer");
    let signer = Signer::start(&shome, "127.0.0.1:0");
    agent_config(&ahome, "session_certs = false\n");
    let rt = tokio::runtime::Runtime::new().unwrap();
    for honest_open in [true, false] {
        let listen = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let mitm_addr = listen.local_addr().unwrap().to_string();
        let mitm = rt.spawn(man_in_the_middle(listen, signer.addr.clone(), honest_open));
        let pairing = Daemon::spawn_named(
            "vmux agent pair",
            vmux(&ahome).args(["agent", "pair", &mitm_addr, "--wait", "20"]),
        );
        if !honest_open {
            // A commitment that does not open: the agent aborts and says why.
            let line = pairing
                .wait_for_line(|l| l.contains("pairing aborted"), T)
                .unwrap_or_else(|| panic!("no abort: {}", pairing.output()));
            assert!(line.contains("does not open its commitment"), "{line}");
            let _ = rt.block_on(mitm);
            continue;
        }
        let shown = pairing_code(&pairing);
        let pending = signer.wait_pending(1);
        let signer_code = pending[0]["code"].as_str().unwrap().to_string();
        let m = rt.block_on(mitm).unwrap().expect("the MITM ran");
        assert_eq!(m.agent_code, shown);
        assert_eq!(m.signer_code, signer_code);
        assert_ne!(
            shown, signer_code,
            "the man in the middle matched the codes"
        );
        // The person types the code the workstation shows: nothing pairs.
        let typed = try_vmux(&shome, &["signer", "approve", "--code", &shown]);
        assert!(!typed.success(), "{typed:?}");
        // The middleman gives up: the signer drops the pairing and says so.
        let deadline = Instant::now() + T;
        while !signer.pending().is_empty() {
            assert!(Instant::now() < deadline, "the abandoned pairing stayed");
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(
            signer.log().contains("\"event\":\"pair\""),
            "{}",
            signer.log()
        );
        drop(pairing);
    }
    assert!(ok(&shome, &["signer", "devices"]).contains("no paired devices"));
    assert!(
        !ahome.join("agent/signers.json").exists()
            || !std::fs::read_to_string(ahome.join("agent/signers.json"))
                .unwrap()
                .contains("address")
    );
}

/// A raw link to the signer as `identity`, with Hello sent.
fn raw(addr: &str, identity: Identity, name: &str) -> common::peer::Peer {
    common::peer::Peer::connect(identity, addr, name)
}

#[test]
fn replays_oversized_nonces_and_long_windows_are_refused_across_restarts() {
    let mut s = Setup::new();
    s.agent.stop();
    let key = common::peer::signer_key_blob(&s.agent.home);
    let mut peer = common::peer::Peer::as_agent(&s.agent.home, &s.signer.addr, "w");
    let label = uuid::Uuid::new_v4();
    let data = common::peer::sshsig_blob("git", b"x");
    let captured = peer.sign_request(label, &key, &data);
    peer.submit(captured.clone());
    s.signer.approve_next();
    assert!(peer.sign_response(label).approved);
    // The signer restarts; the captured request is replayed byte for byte.
    drop(peer);
    let addr = s.signer.addr.clone();
    s.signer.stop();
    s.signer = Signer::start(&s.signer.home, &addr);
    let mut peer = common::peer::Peer::as_agent(&s.agent.home, &s.signer.addr, "w");
    peer.submit(captured.clone());
    assert_eq!(
        peer.sign_response(label).error,
        Some(ErrorCode::ReplayDetected)
    );
    // A 300 s window, a 200 KB nonce, a short nonce: refused before anyone is asked.
    let mut long = peer.sign_request(uuid::Uuid::new_v4(), &key, &data);
    long.expires = long.issued + 300;
    let mut big = peer.sign_request(uuid::Uuid::new_v4(), &key, &data);
    big.nonce = vec![7; 200_000];
    let mut short = peer.sign_request(uuid::Uuid::new_v4(), &key, &data);
    short.nonce = vec![7; 8];
    for (r, want) in [
        (long, ErrorCode::RequestExpired),
        (big, ErrorCode::ReplayDetected),
        (short, ErrorCode::ReplayDetected),
    ] {
        let l = r.request_id;
        peer.submit(r);
        assert_eq!(peer.sign_response(l).error, Some(want));
    }
    assert!(s.signer.pending().is_empty());
    let _ = raw;
}

#[test]
fn huge_device_names_never_reach_the_logs_whole() {
    let s = Setup::new();
    let huge = "A".repeat(900_000);
    // Unpaired peers with 1 MB names, again and again: a stranger's frame is read only
    // up to 4 KiB, so the link is closed at the length prefix.
    let started = Instant::now();
    let mut n = 0;
    while started.elapsed() < Duration::from_secs(5) && n < 200 {
        let mut p = raw(&s.signer.addr, Identity::generate(), &huge);
        assert!(
            p.closed_within(T),
            "a huge pre-authentication frame was read"
        );
        n += 1;
    }
    let log = s.signer.log();
    assert!(
        log.contains("over the limit (4 KiB before authentication"),
        "{log}"
    );
    let longest = log.lines().map(str::len).max().unwrap_or(0);
    assert!(longest < 2048, "a log line of {longest} bytes");
    assert!(
        log.len() < 200_000,
        "{n} refused peers grew the log by {} bytes",
        log.len()
    );
    // The signer still serves its paired agent.
    let msg = s.path("m");
    std::fs::write(&msg, "m").unwrap();
    let h = background(sshsig(&s.agent.sock, &s.pubkey_file(), &msg, "file"));
    s.signer.approve_next();
    assert!(h.join().unwrap().success());
    let _ = run;
}

/// Run `args` as uid 65534 with `VMUX_HOME=home` (and `extra` env).
fn as_nobody(
    home: &std::path::Path,
    args: &[&str],
    extra: &[(&str, &str)],
) -> std::process::Command {
    let mut c = std::process::Command::new("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "env"])
        .arg(format!("VMUX_HOME={}", home.display()))
        .arg("VMUX_LOG=info");
    for (k, v) in extra {
        c.arg(format!("{k}={v}"));
    }
    c.arg(env!("CARGO_BIN_EXE_vmux")).args(args);
    c
}

#[test]
fn daemon_memory_and_environment_stay_private() {
    assert!(
        common::proc::is_root(),
        "this test runs the daemons as uid 65534 with setpriv and needs root (CI runs as root)"
    );
    let dir = std::path::PathBuf::from(format!("/run/vmux-dump-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let chown = run(
        std::process::Command::new("chown")
            .args(["65534:65534"])
            .arg(&dir),
        T,
    );
    assert!(chown.success());
    let secret = "dump-test-passphrase-42";
    let pin = "dump-test-pin-77";
    let out = run(
        &mut as_nobody(
            &dir,
            &["signer", "init", "--name", "n", "--passphrase"],
            &[("VMUX_PASSPHRASE", secret)],
        ),
        T,
    );
    assert!(out.success(), "{out:?}");
    set_signer_config(&dir, "discovery", "\"off\"");
    let _ = run(
        std::process::Command::new("chown")
            .args(["-R", "65534:65534"])
            .arg(&dir),
        T,
    );
    let signer = Daemon::spawn_named(
        "signer as nobody",
        &mut as_nobody(
            &dir,
            &["signer", "run", "--listen", "127.0.0.1:0", "--no-ui"],
            &[("VMUX_PASSPHRASE", secret), ("VMUX_PIN", pin)],
        ),
    );
    signer
        .wait_for_line(|l| l.contains("listening on"), T)
        .unwrap_or_else(|| panic!("signer: {}", signer.output()));
    let sockdir = dir.join("sock");
    std::fs::create_dir_all(&sockdir).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&sockdir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let _ = run(
        std::process::Command::new("chown")
            .args(["-R", "65534:65534"])
            .arg(&dir),
        T,
    );
    let agent = Daemon::spawn_named(
        "agent as nobody",
        &mut as_nobody(
            &dir,
            &[
                "agent",
                "run",
                "--socket",
                &format!("{}/a.sock", sockdir.display()),
            ],
            &[],
        ),
    );
    agent
        .wait_for_line(|l| l.contains("listening on"), T)
        .unwrap_or_else(|| panic!("agent: {}", agent.output()));
    // The daemon processes themselves (setpriv execs env, env execs vmux: same pid).
    for (what, d) in [("signer", &signer), ("agent", &agent)] {
        let pid = d.pid();
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
        assert!(
            !String::from_utf8_lossy(&environ).contains(secret),
            "{what}: the passphrase is readable in /proc/{pid}/environ"
        );
        assert!(
            !String::from_utf8_lossy(&environ).contains(pin),
            "{what}: VMUX_PIN is readable in /proc/{pid}/environ"
        );
        use std::os::unix::fs::MetadataExt;
        let owner = std::fs::metadata(format!("/proc/{pid}/mem")).unwrap().uid();
        assert_eq!(
            owner, 0,
            "{what} is dumpable: /proc/{pid}/mem belongs to uid {owner}"
        );
        // The same uid cannot read its memory or environment.
        let peek = run(
            std::process::Command::new("setpriv")
                .args(["--reuid=65534", "--regid=65534", "--clear-groups", "cat"])
                .arg(format!("/proc/{pid}/environ")),
            T,
        );
        assert!(
            !peek.success(),
            "{what}: uid 65534 read its environment: {peek:?}"
        );
    }
    drop(signer);
    drop(agent);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A stranger asking to pair from `source`, going as far as the commitment round so its
/// pairing waits for a person; holds the link open until dropped.
async fn hostile_pairing(
    source: &str,
    signer: &str,
    name: &str,
) -> Option<noise::LinkReader<tokio::net::TcpStream>> {
    let sock = tokio::net::TcpSocket::new_v4().ok()?;
    sock.bind(format!("{source}:0").parse().ok()?).ok()?;
    let stream = sock.connect(signer.parse().ok()?).await.ok()?;
    let me = Identity::generate();
    let link = noise::connect(stream, &me).await.ok()?;
    let (mut r, mut w) = (link.reader, link.writer);
    w.send(&Envelope::new(Message::Hello(Hello {
        device_id: me.device_id(),
        device_name: name.into(),
        role: Role::Agent,
        software: "flood".into(),
        time: None,
    })))
    .await
    .ok()?;
    w.send(&Envelope::new(Message::PairRequest(PairRequest {
        device_name: name.into(),
    })))
    .await
    .ok()?;
    match tokio::time::timeout(Duration::from_secs(10), r.recv()).await {
        Ok(Ok(Envelope {
            message: Message::PairCommit(_),
            ..
        })) => {}
        _ => return None,
    }
    w.send(&Envelope::new(Message::PairReveal(PairNonce {
        nonce: pairing::nonce().to_vec(),
    })))
    .await
    .ok()?;
    // Keep the writer alive with the reader: leak it into a task that holds it.
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(60)).await;
        drop(w);
    });
    Some(r)
}

#[test]
fn a_pairing_flood_from_one_address_leaves_room_for_the_real_user() {
    let tmp = tempfile::tempdir().unwrap();
    let (shome, ahome) = (tmp.path().join("s"), tmp.path().join("a"));
    Signer::init(&shome, "s");
    let signer = Signer::start(&shome, "127.0.0.1:0");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let held: Vec<_> = rt.block_on(async {
        let mut v = vec![];
        for i in 0..30 {
            v.push(hostile_pairing("127.0.0.2", &signer.addr, &format!("flood-{i}")).await);
        }
        v
    });
    let admitted = held.iter().filter(|h| h.is_some()).count();
    assert!(
        admitted <= 2,
        "{admitted} pairings from one address were let in"
    );
    let pending = signer.pending();
    assert!(pending.len() <= 2, "{pending:?}");
    // The real user, from another address, still pairs.
    agent_config(&ahome, "session_certs = false\n");
    pair(&ahome, &signer);
    let devices = ok(&shome, &["signer", "devices"]);
    assert_eq!(devices.lines().count(), 1, "{devices}");
    assert!(!devices.contains("flood-"), "{devices}");
    drop(held);
}

#[test]
fn connection_floods_at_1024_descriptors_do_not_stop_either_daemon() {
    // The signer and the agent at the usual soft and hard limit of 1024 descriptors.
    let tmp = tempfile::tempdir().unwrap();
    let (shome, ahome) = (tmp.path().join("s"), tmp.path().join("a"));
    agent_config(&ahome, "session_certs = false\n");
    let pubkey = Signer::init(&shome, "s");
    let sd = Daemon::spawn_named(
        "signer at 1024 fds",
        std::process::Command::new("prlimit")
            .arg("--nofile=1024:1024")
            .arg("--")
            .arg(env!("CARGO_BIN_EXE_vmux"))
            .args(["signer", "run", "--listen", "127.0.0.1:0", "--no-ui"])
            .env("VMUX_HOME", &shome),
    );
    let line = sd
        .wait_for_line(|l| l.contains("listening on"), T)
        .unwrap_or_else(|| panic!("{}", sd.output()));
    let signer = Signer {
        home: shome.clone(),
        addr: line.rsplit(' ').next().unwrap().to_string(),
        daemon: Some(sd),
    };
    pair(&ahome, &signer);
    let ad = Daemon::spawn_named(
        "agent at 1024 fds",
        std::process::Command::new("prlimit")
            .arg("--nofile=1024:1024")
            .arg("--")
            .arg(env!("CARGO_BIN_EXE_vmux"))
            .args(["agent", "run"])
            .env("VMUX_HOME", &ahome)
            .env("VMUX_LOG", "info"),
    );
    ad.wait_for_line(|l| l.contains("listening on"), T)
        .unwrap_or_else(|| panic!("{}", ad.output()));
    let agent = Agent {
        home: ahome.clone(),
        daemon: Some(ad),
        sock: ahome.join("agent.sock"),
    };
    agent.wait_connected();
    let keyfile = tmp.path().join("k.pub");
    std::fs::write(&keyfile, &pubkey).unwrap();
    let sign = |name: &str| {
        let msg = tmp.path().join(name);
        std::fs::write(&msg, name).unwrap();
        let h = background(sshsig(&agent.sock, &keyfile, &msg, "file"));
        signer.approve_next();
        h.join().unwrap()
    };
    // 1500 idle TCP connections to the signer: the paired agent's link is served
    // throughout.
    let idle_tcp: Vec<_> = (0..1500)
        .filter_map(|_| std::net::TcpStream::connect(&signer.addr).ok())
        .collect();
    let out = sign("during");
    assert!(out.success(), "during the flood: {out:?}");
    drop(idle_tcp);
    // 1500 idle connections to the agent socket: beyond its cap they are closed as
    // they arrive, so its descriptors never run out.
    let idle_unix: Vec<_> = (0..1500)
        .filter_map(|_| std::os::unix::net::UnixStream::connect(&agent.sock).ok())
        .collect();
    assert!(!idle_unix.is_empty());
    drop(idle_unix);
    std::thread::sleep(Duration::from_millis(500));
    // Both alive afterwards, and serving new connections.
    assert!(agent.ssh_add(&["-l"]).success());
    let out = sign("after");
    assert!(out.success(), "after the flood: {out:?}");
    assert!(ok(&ahome, &["agent", "status"]).contains("connected"));
}

/// A rogue "signer" (found by mDNS, or at an address someone gave): it runs the
/// handshake and the commitment round honestly, then either just answers "approved",
/// or asks for its code; nothing the person can type on the workstation matches a code
/// the real signer never showed. Nothing is pinned either way.
async fn rogue_signer(listen: tokio::net::TcpListener, ask_code: bool) -> Option<()> {
    let me = Identity::generate();
    let (stream, _) = listen.accept().await.ok()?;
    let l = noise::accept(stream, &me).await.ok()?;
    let (h, mut r, mut w) = (l.handshake_hash.clone(), l.reader, l.writer);
    for _ in 0..2 {
        r.recv().await.ok()?; // Hello, PairRequest
    }
    let nb = pairing::nonce();
    w.send(&Envelope::new(Message::PairCommit(PairCommit {
        commitment: pairing::commitment(&h, &nb),
    })))
    .await
    .ok()?;
    let _na = match r.recv().await.ok()?.message {
        Message::PairReveal(x) => x.nonce,
        _ => return None,
    };
    w.send(&Envelope::new(Message::PairOpen(PairNonce {
        nonce: nb.to_vec(),
    })))
    .await
    .ok()?;
    if ask_code {
        w.send(&Envelope::new(Message::PairAccepted)).await.ok()?;
        // Whatever comes back, it says "approved".
        let _ = tokio::time::timeout(std::time::Duration::from_secs(20), r.recv()).await;
    }
    w.send(&Envelope::new(Message::PairResponse(PairResponse {
        approved: true,
        error: None,
        signer_name: "rogue".into(),
        reach: None,
    })))
    .await
    .ok()?;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    Some(())
}

#[test]
fn a_rogue_signer_that_says_approved_pins_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let ahome = tmp.path().join("a");
    agent_config(&ahome, "session_certs = false\n");
    let rt = tokio::runtime::Runtime::new().unwrap();
    for ask_code in [false, true] {
        let listen = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listen.local_addr().unwrap().to_string();
        let rogue = rt.spawn(rogue_signer(listen, ask_code));
        let mut pairing = Daemon::spawn_interactive(
            "vmux agent pair",
            vmux(&ahome).args(["agent", "pair", &addr, "--wait", "20"]),
        );
        pairing_code(&pairing);
        if ask_code {
            pairing
                .wait_for_line(|l| l.contains("type the code the signer shows"), T)
                .unwrap_or_else(|| panic!("{}", pairing.output()));
            // The person looks at the real signer: it shows no code; they type a guess.
            pairing.send_line("123456");
        }
        let st = pairing.wait_exit(T).expect("pairing ended");
        assert!(!st.success(), "{}", pairing.output());
        let out = pairing.output();
        assert!(out.contains("pairing aborted"), "{out}");
        let _ = rt.block_on(rogue);
        let signers = std::fs::read_to_string(ahome.join("agent/signers.json")).unwrap_or_default();
        assert!(
            !signers.contains("rogue"),
            "a rogue signer was pinned: {signers}"
        );
    }
}

/// A connection from `from` (a loopback source address) to `to`.
async fn from(from: &str, to: &str) -> Option<tokio::net::TcpStream> {
    let sock = tokio::net::TcpSocket::new_v4().ok()?;
    sock.bind(format!("{from}:0").parse().ok()?).ok()?;
    sock.connect(to.parse().ok()?).await.ok()
}

/// One pairing attempt from `src`: true when the signer took it (sent its commitment).
async fn pairing_attempt(src: &str, to: &str) -> bool {
    let Some(stream) = from(src, to).await else {
        return false;
    };
    let me = Identity::generate();
    let Ok(Ok(l)) = tokio::time::timeout(Duration::from_secs(2), noise::connect(stream, &me)).await
    else {
        return false;
    };
    let (mut r, mut w) = (l.reader, l.writer);
    for m in [
        Message::Hello(Hello {
            device_id: me.device_id(),
            device_name: "grinder".into(),
            role: Role::Agent,
            software: "grinder".into(),
            time: None,
        }),
        Message::PairRequest(PairRequest {
            device_name: "grinder".into(),
        }),
    ] {
        if w.send(&Envelope::new(m)).await.is_err() {
            return false;
        }
    }
    matches!(
        tokio::time::timeout(Duration::from_secs(2), r.recv()).await,
        Ok(Ok(Envelope {
            message: Message::PairCommit(_),
            ..
        }))
    )
}

#[test]
fn a_pairing_grinder_gets_a_handful_while_a_real_pairing_completes() {
    let tmp = tempfile::tempdir().unwrap();
    let (shome, ahome) = (tmp.path().join("s"), tmp.path().join("a"));
    Signer::init(&shome, "grinded");
    let signer = Signer::start(&shome, "127.0.0.1:0");
    agent_config(&ahome, "session_certs = false\n");
    let addr = signer.addr.clone();
    let grinder = std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let started = Instant::now();
            let (mut tried, mut taken) = (0, 0);
            while started.elapsed() < Duration::from_secs(8) {
                tried += 1;
                if pairing_attempt("127.0.0.2", &addr).await {
                    taken += 1;
                }
                tokio::time::sleep(Duration::from_millis(18)).await; // about 56 a second
            }
            (tried, taken)
        })
    });
    std::thread::sleep(Duration::from_secs(1));
    // The person pairs their workstation meanwhile.
    pair(&ahome, &signer);
    let (tried, taken) = grinder.join().unwrap();
    assert!(tried > 100, "the grinder only tried {tried} times");
    assert!(
        taken <= common::vmux::PAIRINGS_PER_MINUTE_PER_ADDR,
        "the grinder got {taken} pairing attempts in 8 s"
    );
    let log = signer.log();
    assert!(
        log.lines().filter(|l| l.contains("\"refused\"")).count() < 20,
        "{log}"
    );
}

#[test]
fn slow_handshakes_from_many_addresses_do_not_stop_a_paired_device() {
    let mut s = Setup::new();
    s.agent.stop();
    let addr = s.signer.addr.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async {
                let mut held = vec![];
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    // Ten addresses, each keeping connections open that never finish a
                    // handshake.
                    for i in 10..20 {
                        if let Some(c) = from(&format!("127.0.0.{i}"), &addr).await {
                            held.push(c);
                        }
                    }
                    held.retain(|c| c.peer_addr().is_ok());
                    if held.len() > 400 {
                        held.drain(..100);
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                held.len()
            })
        })
    };
    std::thread::sleep(Duration::from_secs(2));
    // The paired agent connects and signs through the flood, again and again.
    let agent = Agent::start(&s.agent.home);
    agent.wait_connected();
    for i in 0..3 {
        let msg = s.path(&format!("m{i}"));
        std::fs::write(&msg, "m").unwrap();
        let h = background(sshsig(&agent.sock, &s.pubkey_file(), &msg, "file"));
        s.signer.approve_next();
        assert!(h.join().unwrap().success());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    flood.join().unwrap();
}

/// A client of the control socket (same uid, but any process of the user's) that lies
/// about framing and fields: a line that never ends is cut at 64 KiB with a one-line
/// answer, a misspelt field is named rather than dropped; the signer goes on deciding.
#[test]
fn the_control_socket_cuts_an_endless_line_and_names_an_unknown_field() {
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixStream;
    let s = Setup::new();
    let sock = s.signer.home.join("signer/control.sock");

    let endless = UnixStream::connect(&sock).unwrap();
    let mut w = endless.try_clone().unwrap();
    // The signer stops reading at the cap; the rest of the writes fail when it closes.
    let writer = std::thread::spawn(move || {
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..64 {
            if w.write_all(&chunk).is_err() {
                return true;
            }
        }
        false
    });
    endless.set_read_timeout(Some(T)).unwrap();
    let mut r = BufReader::new(endless);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["ok"], false, "{line}");
    let e = v["error"].as_str().unwrap();
    assert!(e.contains("longer than 65536 bytes"), "{e}");
    line.clear();
    // Closed: an end of stream, or a reset when the signer left unread bytes behind.
    match r.read_line(&mut line) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("the connection stays open: {other:?} {line:?}"),
    }
    assert!(writer.join().unwrap(), "4 MiB of one line were all read");

    let mut c = UnixStream::connect(&sock).unwrap();
    c.write_all(b"{\"op\":\"next\",\"wait_sec\":30}\n{\"op\":\"pending\",\"all\":true}\n{\"op\":\"pending\"}\n")
        .unwrap();
    let mut r = BufReader::new(c);
    let mut answers = vec![];
    for _ in 0..3 {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        answers.push(serde_json::from_str::<serde_json::Value>(&line).unwrap());
    }
    assert!(
        answers[0]["error"]
            .as_str()
            .unwrap()
            .contains("unknown field `wait_sec`"),
        "{}",
        answers[0]
    );
    assert!(
        answers[1]["error"]
            .as_str()
            .unwrap()
            .contains("unknown field `all`"),
        "{}",
        answers[1]
    );
    assert_eq!(answers[2]["ok"], true, "{}", answers[2]);

    // The signer still serves its paired agent.
    let msg = s.path("m");
    std::fs::write(&msg, "m").unwrap();
    let h = background(sshsig(&s.agent.sock, &s.pubkey_file(), &msg, "file"));
    s.signer.approve_next();
    assert!(h.join().unwrap().success());
}
