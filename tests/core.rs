//! Issue 2: the core path, with real OpenSSH (`ssh`, `sshd`, `ssh-add`, `ssh-keygen`)
//! and `git`, a real signer and a real agent on loopback.

mod common;

use common::proc::run;
use common::sshd::Sshd;
use common::vmux::*;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn ssh_login_succeeds_when_approved_and_fails_when_denied() {
    let s = Setup::new();
    let sshd = Sshd::start(&s.pubkey);

    let mut ssh = sshd.ssh_command(&s.agent.sock);
    ssh.arg("true");
    let login = background(ssh);
    let pending = s.signer.wait_pending(1);
    assert_eq!(pending[0]["kind"], "sign");
    assert_eq!(
        pending[0]["from"].as_str().map(|f| !f.is_empty()),
        Some(true)
    );
    assert!(pending[0]["key"].as_str().unwrap().starts_with("SHA256:"));
    assert!(
        pending[0]["requester"]
            .as_str()
            .unwrap()
            .starts_with("ssh ("),
        "{pending:?}"
    );
    s.signer.approve_next();
    let out = login.join().unwrap();
    assert!(out.success(), "approved login failed: {out:?}");
    assert!(
        sshd.wait_for_log("Accepted publickey", Duration::from_secs(5)),
        "{}",
        sshd.log()
    );

    let mut ssh = sshd.ssh_command(&s.agent.sock);
    ssh.arg("true");
    let login = background(ssh);
    s.signer.deny_next();
    let out = login.join().unwrap();
    assert!(!out.success(), "denied login succeeded: {out:?}");
    assert!(out.stderr.contains("agent refused operation"), "{out:?}");

    let log = ok(&s.agent.home, &["agent", "log"]);
    assert!(
        log.contains("approved") && log.contains("userDenied"),
        "{log}"
    );
    assert!(ok(&s.agent.home, &["agent", "log", "--verify"]).contains("chain intact"));
}

#[test]
fn listed_keys_match_the_signer_keys() {
    let s = Setup::new();
    ok(
        &s.signer.home,
        &[
            "signer",
            "keys",
            "add",
            "--type",
            "ed25519",
            "--comment",
            "second",
        ],
    );
    // The running signer loaded its keys at start; restart it so it serves both.
    let shome = s.signer.home.clone();
    let mut s = s;
    s.signer.stop();
    let addr = s.signer.addr.clone();
    s.signer = Signer::start(&shome, &addr);
    s.agent.stop();
    s.agent = Agent::start(&s.agent.home.clone());
    s.agent.wait_connected();
    let pubs = ok(&shome, &["signer", "keys", "pub"]);
    assert_eq!(pubs.lines().count(), 2);

    let listed = s.agent.ssh_add(&["-L"]);
    assert!(listed.success(), "{listed:?}");
    let mut want: Vec<&str> = pubs.lines().collect();
    let mut got: Vec<&str> = listed.stdout.lines().collect();
    want.sort();
    got.sort();
    assert_eq!(
        got, want,
        "ssh-add -L must match the signer's keys byte for byte"
    );

    let pubfile = s.path("all.pub");
    std::fs::write(&pubfile, &pubs).unwrap();
    let keygen = run(Command::new("ssh-keygen").arg("-lf").arg(&pubfile), T);
    let fp = |text: &str| -> Vec<String> {
        let mut v: Vec<String> = text
            .lines()
            .map(|l| l.split_whitespace().nth(1).unwrap().to_string())
            .collect();
        v.sort();
        v
    };
    assert_eq!(fp(&s.agent.ssh_add(&["-l"]).stdout), fp(&keygen.stdout));
}

#[test]
fn sshsig_and_git_commit_signing() {
    let s = Setup::new();
    let msg = s.path("msg.txt");
    std::fs::write(&msg, "hello\n").unwrap();
    let sign = sshsig(&s.agent.sock, &s.pubkey_file(), &msg, "git");
    let h = background(sign);
    let p = s.signer.wait_pending(1);
    assert_eq!(p[0]["purpose"], "git signature");
    s.signer.approve_next();
    let out = h.join().unwrap();
    assert!(out.success(), "{out:?}");
    let allowed = s.path("allowed_signers");
    std::fs::write(&allowed, format!("alice@example.com {}", s.pubkey)).unwrap();
    let verify = common::proc::run_with_input(
        Command::new("ssh-keygen")
            .args(["-Y", "verify", "-n", "git", "-I", "alice@example.com", "-f"])
            .arg(&allowed)
            .arg("-s")
            .arg(s.path("msg.txt.sig")),
        b"hello\n",
        T,
    );
    assert!(verify.success(), "{verify:?}");

    // A real signed commit.
    let repo = s.path("repo");
    std::fs::create_dir(&repo).unwrap();
    let git = |args: &[&str]| {
        let mut c = Command::new("git");
        c.current_dir(&repo)
            .args(args)
            .env("SSH_AUTH_SOCK", &s.agent.sock)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("HOME", s.tmp.path());
        c
    };
    for args in [
        vec!["init", "-q"],
        vec!["config", "user.name", "Alice"],
        vec!["config", "user.email", "alice@example.com"],
        vec!["config", "gpg.format", "ssh"],
        vec![
            "config",
            "user.signingkey",
            &format!("key::{}", s.pubkey.trim()),
        ],
        vec![
            "config",
            "gpg.ssh.allowedSignersFile",
            allowed.to_str().unwrap(),
        ],
    ] {
        assert!(run(&mut git(&args), T).success());
    }
    std::fs::write(repo.join("f"), "x").unwrap();
    assert!(run(&mut git(&["add", "f"]), T).success());
    let commit = background(git(&["commit", "-q", "-S", "-m", "signed"]));
    let p = s.signer.wait_pending(1);
    assert_eq!(p[0]["purpose"], "git signature");
    s.signer.approve_next();
    let out = commit.join().unwrap();
    assert!(out.success(), "{out:?}");
    let shown = run(&mut git(&["log", "--show-signature", "-1"]), T);
    assert!(shown.stdout.contains("Good \"git\" signature"), "{shown:?}");
}

#[test]
fn two_requests_at_once_are_queued_not_dropped() {
    let s = Setup::new();
    let mut handles = vec![];
    for i in 0..2 {
        let msg = s.path(&format!("m{i}"));
        std::fs::write(&msg, format!("{i}")).unwrap();
        let c = sshsig(&s.agent.sock, &s.pubkey_file(), &msg, "file");
        handles.push(background(c));
    }
    let p = s.signer.wait_pending(2);
    assert_eq!(p.len(), 2);
    assert_eq!(p[0]["purpose"], "file signature");
    s.signer.approve_next();
    s.signer.approve_next();
    for h in handles {
        let out = h.join().unwrap();
        assert!(out.success(), "{out:?}");
    }
}

#[test]
fn signer_stopped_keys_still_listed_and_signing_fails_in_bounded_time() {
    let mut s = Setup::new();
    s.signer.stop();
    let listed = s.agent.ssh_add(&["-l"]);
    assert!(
        listed.success() && listed.stdout.contains("SHA256:"),
        "{listed:?}"
    );
    // After an agent restart too: the list comes from the on-disk cache.
    let home = s.agent.home.clone();
    s.agent.stop();
    s.agent = Agent::start(&home);
    let listed = s.agent.ssh_add(&["-l"]);
    assert!(
        listed.success() && listed.stdout.contains("SHA256:"),
        "{listed:?}"
    );

    let msg = s.path("msg");
    std::fs::write(&msg, "x").unwrap();
    let started = Instant::now();
    let out = run(
        &mut sshsig(&s.agent.sock, &s.pubkey_file(), &msg, "file"),
        T,
    );
    assert!(!out.success(), "{out:?}");
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "took {:?}",
        started.elapsed()
    );
    // The agent survives and still answers.
    assert!(s.agent.ssh_add(&["-l"]).success());
    assert!(ok(&home, &["agent", "log"]).contains("signerUnavailable"));
}

#[test]
fn unpaired_agent_and_wrong_signer_key_are_refused() {
    use std::os::unix::fs::PermissionsExt;
    let private_dir = |p: &std::path::Path| {
        agent_config(p, "");
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o700)).unwrap();
    };
    let s = Setup::new();
    // A fresh agent that copies the paired agent's signer list (and key cache) but has
    // its own identity: the signer has never approved it.
    let other = s.path("intruder");
    private_dir(&other);
    for f in ["signers.json", "keys.json"] {
        std::fs::copy(
            s.agent.home.join("agent").join(f),
            other.join("agent").join(f),
        )
        .unwrap();
    }
    let intruder = Agent::start(&other);
    let msg = s.path("msg");
    std::fs::write(&msg, "x").unwrap();
    let sign = |sock: &std::path::Path| run(&mut sshsig(sock, &s.pubkey_file(), &msg, "file"), T);
    assert!(!sign(&intruder.sock).success());
    assert!(
        s.signer.pending().is_empty(),
        "an unpaired agent reached the queue"
    );
    assert!(
        s.signer.log().contains("pairingInvalid"),
        "{}",
        s.signer.log()
    );
    let status = ok(&other, &["agent", "status"]);
    assert!(status.contains("pairingInvalid"), "{status}");

    // An agent whose pinned key for the signer is wrong refuses to talk to it.
    let pinned = s.path("pinned");
    private_dir(&pinned);
    let mut signers: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(s.agent.home.join("agent/signers.json")).unwrap(),
    )
    .unwrap();
    signers[0]["publicKey"] = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".into();
    std::fs::write(pinned.join("agent/signers.json"), signers.to_string()).unwrap();
    std::fs::copy(
        s.agent.home.join("agent/keys.json"),
        pinned.join("agent/keys.json"),
    )
    .unwrap();
    let wrong = Agent::start(&pinned);
    assert!(!sign(&wrong.sock).success());
    let status = ok(&pinned, &["agent", "status"]);
    assert!(status.contains("pinned"), "{status}");
    assert!(s.signer.pending().is_empty());
}

#[test]
fn replayed_and_expired_sign_requests_are_refused() {
    use vmux_proto::envelope::*;
    let mut s = Setup::new();
    // The raw link below uses the agent's identity: one live link per device, so the
    // agent itself steps aside.
    s.agent.stop();
    let identity =
        vmux_proto::Identity::load_or_create(&s.agent.home.join("agent/identity")).unwrap();
    let keys: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(s.agent.home.join("agent/keys.json")).unwrap(),
    )
    .unwrap();
    let blob = base64_decode(keys[0]["publicKey"].as_str().unwrap());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (mut rx, mut tx) = raw_link(&s.signer.addr, &identity, "replayer").await;
        assert!(matches!(
            rx.recv().await.unwrap().message,
            Message::Hello(_)
        ));
        let now = vmux_proto::now_unix();
        let req = SignRequest {
            request_id: uuid_v4(),
            key_blob: blob.clone(),
            algorithm: "ecdsa-sha2-nistp256".into(),
            flags: 0,
            device_id: identity.device_id(),
            device_name: "replayer".into(),
            origin: Origin::Agent,
            data: b"data".to_vec(),
            nonce: vec![7; 16],
            issued: now,
            expires: now + 60,
            context: Context::default(),
            bindings: vec![],
            session_cert: false,
        };
        tx.send(&Envelope::new(Message::SignRequest(Box::new(req.clone()))))
            .await
            .unwrap();
        s.signer.wait_pending(1);
        // Same nonce again (a captured request sent twice): refused before the queue.
        let mut replay = req.clone();
        replay.request_id = uuid_v4();
        tx.send(&Envelope::new(Message::SignRequest(Box::new(
            replay.clone(),
        ))))
        .await
        .unwrap();
        let resp = next_response(&mut rx).await;
        assert_eq!(resp.request_id, replay.request_id);
        assert_eq!(resp.error, Some(ErrorCode::ReplayDetected));
        // Expired.
        let mut old = req.clone();
        old.request_id = uuid_v4();
        old.nonce = vec![8; 16];
        old.issued = now - 300;
        old.expires = now - 200;
        tx.send(&Envelope::new(Message::SignRequest(Box::new(old.clone()))))
            .await
            .unwrap();
        let resp = next_response(&mut rx).await;
        assert_eq!(resp.error, Some(ErrorCode::RequestExpired));
        assert_eq!(s.signer.pending().len(), 1);
        s.signer.deny_next();
        let resp = next_response(&mut rx).await;
        assert_eq!(
            (resp.request_id, resp.error),
            (req.request_id, Some(ErrorCode::UserDenied))
        );
        // A flood from one device: past 16 waiting requests, the rest are `busy`.
        for i in 0..17u8 {
            let mut r = req.clone();
            r.request_id = uuid_v4();
            r.nonce = vec![100 + i; 16];
            tx.send(&Envelope::new(Message::SignRequest(Box::new(r))))
                .await
                .unwrap();
        }
        let resp = next_response(&mut rx).await;
        assert_eq!(resp.error, Some(ErrorCode::Busy));
        assert_eq!(s.signer.pending().len(), 16);
    });
    // The link is gone: its requests leave the queue.
    let deadline = std::time::Instant::now() + T;
    while !s.signer.pending().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "requests of a closed link stayed queued"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A link to the signer at `addr` as `identity`, Hello sent: what an agent does first.
async fn raw_link(
    addr: &str,
    identity: &vmux_proto::Identity,
    name: &str,
) -> (
    vmux_proto::noise::LinkReader<tokio::net::TcpStream>,
    vmux_proto::noise::LinkWriter<tokio::net::TcpStream>,
) {
    use vmux_proto::envelope::*;
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let link = vmux_proto::noise::connect(stream, identity).await.unwrap();
    let (rx, mut tx) = (link.reader, link.writer);
    let hello = Message::Hello(Hello {
        device_id: identity.device_id(),
        device_name: name.into(),
        role: Role::Agent,
        software: "test".into(),
        time: None,
    });
    tx.send(&Envelope::new(hello)).await.unwrap();
    (rx, tx)
}

async fn next_response<S: vmux_proto::noise::Stream>(
    rx: &mut vmux_proto::noise::LinkReader<S>,
) -> vmux_proto::envelope::SignResponse {
    loop {
        let env = tokio::time::timeout(T, rx.recv()).await.unwrap().unwrap();
        if let vmux_proto::Message::SignResponse(r) = env.message {
            return r;
        }
    }
}

fn uuid_v4() -> uuid::Uuid {
    uuid::Uuid::new_v4()
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

/// One raw agent-protocol exchange; `None` when the agent closed the connection.
fn agent_call(sock: &std::path::Path, bytes: &[u8]) -> Option<Vec<u8>> {
    let mut c = UnixStream::connect(sock).unwrap();
    c.set_read_timeout(Some(T)).unwrap();
    c.write_all(bytes).ok()?;
    read_answer(&mut c)
}

/// One agent-protocol message read from `c` (its body); `None` when it was closed.
fn read_answer(c: &mut UnixStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    c.read_exact(&mut len).ok()?;
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    c.read_exact(&mut body).ok()?;
    Some(body)
}

#[test]
fn garbage_on_the_agent_socket_fails_alone() {
    let s = Setup::new();
    let sock = &s.agent.sock;
    let frame = |body: &[u8]| [&(body.len() as u32).to_be_bytes()[..], body].concat();
    // Unknown type, malformed sign request, empty message: FAILURE (5).
    assert_eq!(agent_call(sock, &frame(&[200, 1, 2, 3])), Some(vec![5]));
    assert_eq!(
        agent_call(sock, &frame(&[13, 0, 0, 0, 50, 1])),
        Some(vec![5])
    );
    assert_eq!(agent_call(sock, &frame(&[])), Some(vec![5]));
    // Adding keys is refused: this agent holds none.
    assert_eq!(agent_call(sock, &frame(&[17, 0, 0, 0, 0])), Some(vec![5]));
    // Oversized: the connection is closed.
    assert_eq!(agent_call(sock, &(300 * 1024u32).to_be_bytes()), None);
    // Truncated: announce 100 bytes, send 3, hang up.
    {
        let mut c = UnixStream::connect(sock).unwrap();
        c.write_all(&[0, 0, 0, 100, 13, 0, 0]).unwrap();
    }
    // Random bytes.
    let mut noise = vec![0u8; 4096];
    for (i, b) in noise.iter_mut().enumerate() {
        *b = (i * 7919 % 251) as u8;
    }
    let _ = agent_call(sock, &noise);
    // `query` lists the extensions.
    let mut q = vec![27];
    q.extend_from_slice(&5u32.to_be_bytes());
    q.extend_from_slice(b"query");
    let resp = agent_call(sock, &frame(&q)).unwrap();
    assert_eq!(resp[0], 29);
    assert!(String::from_utf8_lossy(&resp).contains("session-bind@openssh.com"));
    // Two requests in one write (read ahead together): two answers, in order.
    {
        let mut c = UnixStream::connect(sock).unwrap();
        c.set_read_timeout(Some(T)).unwrap();
        c.write_all(&[frame(&[200]), frame(&[11])].concat())
            .unwrap();
        let answer = |c: &mut UnixStream| read_answer(c).expect("an answer");
        assert_eq!(answer(&mut c), vec![5]);
        assert_eq!(answer(&mut c)[0], 12);
        // One request a byte at a time, split inside its length: answered all the same.
        for b in frame(&[11]) {
            c.write_all(&[b]).unwrap();
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(answer(&mut c)[0], 12);
    }
    // A well-formed request on a new connection still works.
    let ids = agent_call(sock, &frame(&[11])).unwrap();
    assert_eq!(ids[0], 12);
    assert_eq!(u32::from_be_bytes(ids[1..5].try_into().unwrap()), 1);
    assert!(s.agent.ssh_add(&["-l"]).success());
}

#[test]
fn lock_and_unlock_work_as_in_openssh() {
    let s = Setup::new();
    // ssh-add -x reads the passphrase from a terminal; without one, speak the protocol.
    let frame = |body: &[u8]| [&(body.len() as u32).to_be_bytes()[..], body].concat();
    let with_pass = |t: u8, p: &[u8]| {
        let mut b = vec![t];
        b.extend_from_slice(&(p.len() as u32).to_be_bytes());
        b.extend_from_slice(p);
        frame(&b)
    };
    assert_eq!(
        agent_call(&s.agent.sock, &with_pass(22, b"pw")),
        Some(vec![6])
    );
    let ids = agent_call(&s.agent.sock, &frame(&[11])).unwrap();
    assert_eq!(&ids[1..5], &[0, 0, 0, 0], "a locked agent lists nothing");
    assert_eq!(
        agent_call(&s.agent.sock, &with_pass(22, b"pw")),
        Some(vec![5]),
        "already locked"
    );
    assert_eq!(
        agent_call(&s.agent.sock, &with_pass(23, b"wrong")),
        Some(vec![5])
    );
    assert_eq!(
        agent_call(&s.agent.sock, &with_pass(23, b"pw")),
        Some(vec![6])
    );
    let ids = agent_call(&s.agent.sock, &frame(&[11])).unwrap();
    assert_eq!(&ids[1..5], &[0, 0, 0, 1]);
}

#[test]
fn socket_permissions() {
    use std::os::unix::fs::PermissionsExt;
    let s = Setup::new();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&s.agent.sock), 0o600);
    assert_eq!(mode(s.agent.sock.parent().unwrap()), 0o700);
    let key_dir = s.signer.home.join("signer/keys");
    for e in std::fs::read_dir(&key_dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_none() {
            assert_eq!(mode(&p), 0o600, "{}", p.display());
            assert!(std::fs::read_to_string(&p)
                .unwrap()
                .contains("BEGIN OPENSSH PRIVATE KEY"));
        }
    }
    // Nothing under the agent's state is a private key.
    for e in std::fs::read_dir(s.agent.home.join("agent")).unwrap() {
        let text = std::fs::read_to_string(e.unwrap().path()).unwrap_or_default();
        assert!(!text.contains("PRIVATE KEY"));
    }
}

#[test]
fn revoked_device_is_refused() {
    let s = Setup::new();
    let devices = ok(&s.signer.home, &["signer", "devices"]);
    let id = devices.split_whitespace().next().unwrap().to_string();
    ok(&s.signer.home, &["signer", "devices", "revoke", &id]);
    assert!(ok(&s.signer.home, &["signer", "devices"]).contains("no paired devices"));
    let msg = s.path("m");
    std::fs::write(&msg, "x").unwrap();
    let out = run(
        &mut sshsig(&s.agent.sock, &s.pubkey_file(), &msg, "file"),
        T,
    );
    assert!(!out.success());
    assert!(s.signer.pending().is_empty());
    assert!(ok(&s.agent.home, &["agent", "log"]).contains("pairingInvalid"));
    let bad = try_vmux(&s.signer.home, &["signer", "devices", "revoke", "nope"]);
    assert!(
        !bad.success() && bad.stderr.contains("no paired device with id nope"),
        "{bad:?}"
    );
}

#[test]
fn an_unpaired_peer_gets_pairing_invalid_and_nothing_else() {
    use vmux_proto::envelope::*;
    let s = Setup::new();
    let stranger = vmux_proto::Identity::generate();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (mut rx, mut tx) = raw_link(&s.signer.addr, &stranger, "stranger").await;
        tx.send(&Envelope::new(Message::KeyListRequest))
            .await
            .unwrap();
        let first = tokio::time::timeout(T, rx.recv()).await.unwrap().unwrap();
        match first.message {
            Message::Error(e) => assert_eq!(e.code, ErrorCode::PairingInvalid),
            m => panic!("an unpaired peer was told {m:?}"),
        }
        assert!(
            tokio::time::timeout(T, rx.recv()).await.unwrap().is_err(),
            "link must close"
        );
    });
    assert!(s.signer.pending().is_empty());
}

#[test]
fn another_uid_is_refused_even_through_open_permissions() {
    use std::os::unix::fs::PermissionsExt;
    assert!(
        common::proc::is_root(),
        "this test switches to uid 65534 with setpriv and needs root (CI runs as root)"
    );
    let mut s = Setup::new();
    s.agent.stop();
    // A socket where uid 65534 can reach it (the temp dir may be root-only).
    let dir = std::path::PathBuf::from(format!("/run/vmux-uid-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let set = |p: &std::path::Path, m: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
    };
    set(&dir, 0o700);
    let sock = dir.join("agent.sock");
    let d = common::proc::Daemon::spawn(vmux(&s.agent.home).args([
        "agent",
        "run",
        "--socket",
        sock.to_str().unwrap(),
    ]));
    assert!(
        d.wait_for_line(|l| l.contains("listening on"), T).is_some(),
        "{}",
        d.output()
    );
    // Open the file-system gate on purpose: the agent must still refuse by peer uid.
    set(&dir, 0o711);
    set(&sock, 0o666);
    let out = run(
        Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "ssh-add",
                "-l",
            ])
            .env("SSH_AUTH_SOCK", &sock),
        T,
    );
    assert!(!out.success(), "uid 65534 got an answer: {out:?}");
    assert!(
        !out.stderr.contains("Permission denied"),
        "the file-system gate was not open: {out:?}"
    );
    assert!(!out.stdout.contains("SHA256:"), "{out:?}");
    // The owner still gets one.
    let mine = run(
        Command::new("ssh-add")
            .arg("-l")
            .env("SSH_AUTH_SOCK", &sock),
        T,
    );
    assert!(mine.stdout.contains("SHA256:"), "{mine:?}");
    drop(d);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Two seconds after start each daemon unmaps the read-only pages of code and data it
/// stopped running (src/trim.rs); what runs afterwards is mapped back from the page
/// cache. Each trim says what it let go, and a login approved after both trims works.
#[test]
fn a_login_after_both_daemons_trimmed_their_code_pages_works() {
    let s = Setup::with_env(
        "session_certs = false\n",
        &[("VMUX_LOG", "info,vmux::trim=debug")],
    );
    for d in [&s.signer.daemon, &s.agent.daemon] {
        let d = d.as_ref().unwrap();
        let line = d
            .wait_for_line(|l| l.contains("code pages"), Duration::from_secs(20))
            .unwrap_or_else(|| panic!("{} never trimmed: {}", d.name(), d.output()));
        assert!(line.contains("no longer running unmapped"), "{line}");
        let kib: Vec<u64> = line
            .rsplit_once("resident ")
            .unwrap()
            .1
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|n| n.parse().ok())
            .collect();
        assert!(kib.len() == 2 && kib[1] < kib[0], "{}: {line}", d.name());
    }
    let sshd = Sshd::start(&s.pubkey);
    let mut ssh = sshd.ssh_command(&s.agent.sock);
    ssh.arg("true");
    let login = background(ssh);
    s.signer.approve_next();
    let out = login.join().unwrap();
    assert!(out.success(), "login after the trim failed: {out:?}");
}
