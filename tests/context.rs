//! Issue 4: know what you approve — destination, requester and purpose on every request,
//! policies refused before prompting, and tamper-evident logs on both sides.

mod common;

use common::proc::run;
use common::sshd::Sshd;
use common::vmux::*;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;

fn setup_with_known_hosts() -> (Setup, tempfile::TempDir) {
    let kh = tempfile::tempdir().unwrap();
    let file = kh.path().join("known_hosts");
    std::fs::write(&file, "").unwrap();
    let s = Setup::with_agent_config(&format!(
        "session_certs = false\nknown_hosts = [\"{}\"]\n",
        file.display()
    ));
    (s, kh)
}

/// Make the test's known_hosts name the sshd's host key `name` (and its `[127.0.0.1]:port`).
fn name_host(kh: &tempfile::TempDir, sshd: &Sshd, name: &str) {
    let host_key = sshd.host_key_pub();
    let mut fields = host_key.split_whitespace();
    let (alg, b64) = (fields.next().unwrap(), fields.next().unwrap());
    let line = format!("{name},[127.0.0.1]:{} {alg} {b64}\n", sshd.port());
    std::fs::write(kh.path().join("known_hosts"), line).unwrap();
}

fn login(s: &Setup, sshd: &Sshd) -> std::thread::JoinHandle<common::proc::Output> {
    let mut c = sshd.ssh_command(&s.agent.sock);
    c.arg("true");
    background(c)
}

#[test]
fn destinations_are_named_by_the_signer_and_claims_are_labelled() {
    let (s, kh) = setup_with_known_hosts();
    let sshd = Sshd::start(&s.pubkey);
    name_host(&kh, &sshd, "testhost");
    let user = sshd.user();
    let fp = run(
        Command::new("ssh-keygen")
            .arg("-lf")
            .arg(sshd.dir().join("ssh_host_ed25519_key.pub")),
        T,
    )
    .stdout
    .split_whitespace()
    .nth(1)
    .unwrap()
    .to_string();

    // First sight: the server proved its key, but only the workstation names it.
    let h = login(&s, &sshd);
    let p = s.signer.wait_pending(1);
    assert_eq!(p[0]["purpose"], "login");
    assert_eq!(p[0]["user"], user);
    assert_eq!(p[0]["destinationQuality"], "new", "{p:?}");
    let dest = p[0]["destination"].as_str().unwrap();
    assert!(
        dest.contains(&format!("new host key {fp}"))
            && dest.contains("the workstation calls it testhost"),
        "{dest}"
    );
    assert!(
        p[0]["requester"].as_str().unwrap().starts_with("ssh ("),
        "{p:?}"
    );
    assert!(p[0]["keyComment"].as_str().unwrap().contains("test-signer"));
    let human = ok(&s.signer.home, &["signer", "pending"]);
    assert!(human.contains("new host key"), "{human}");
    s.signer.approve_next();
    assert!(h.join().unwrap().success());
    // Approving that login pinned the key under the name that was shown.
    let pins = ok(&s.signer.home, &["signer", "hosts"]);
    assert!(pins.contains("testhost") && pins.contains(&fp), "{pins}");

    // From now on the signer names the host itself.
    let h = login(&s, &sshd);
    let p = s.signer.wait_pending(1);
    assert_eq!(
        p[0]["destination"],
        format!("{user}@testhost (verified by this signer)"),
        "{p:?}"
    );
    assert!(p[0].get("warning").is_none(), "{p:?}");
    s.signer.approve_next();
    assert!(h.join().unwrap().success());

    // The workstation now calls the pinned key something else: a warning, and the
    // signer's own name stays the one shown; the claim is labelled as a claim.
    name_host(&kh, &sshd, "bank.example.com");
    let h = login(&s, &sshd);
    let p = s.signer.wait_pending(1);
    assert!(p[0]["destination"]
        .as_str()
        .unwrap()
        .starts_with(&format!("{user}@testhost (verified by this signer)")));
    let warning = p[0]["warning"].as_str().unwrap();
    assert!(
        warning.contains("testhost") && warning.contains("calls it bank.example.com"),
        "{warning}"
    );
    assert_eq!(p[0]["hostClaim"], "bank.example.com");
    s.signer.deny_next();
    assert!(!h.join().unwrap().success());

    // Another server that the workstation calls `testhost`: its key differs from the
    // pin, like OpenSSH's REMOTE HOST IDENTIFICATION HAS CHANGED.
    let other = Sshd::start(&s.pubkey);
    name_host(&kh, &other, "testhost");
    let h = login(&s, &other);
    let p = s.signer.wait_pending(1);
    assert_eq!(p[0]["destinationQuality"], "changed", "{p:?}");
    assert!(
        p[0]["warning"]
            .as_str()
            .unwrap()
            .contains("REMOTE HOST IDENTIFICATION HAS CHANGED"),
        "{p:?}"
    );
    s.signer.deny_next();
    assert!(!h.join().unwrap().success());
    // Forgetting the pin makes it new again.
    ok(&s.signer.home, &["signer", "hosts", "remove", "testhost"]);
    assert!(!ok(&s.signer.home, &["signer", "hosts"]).contains("testhost"));
    // The signer's log carries what was shown and the decision.
    let log = s.signer.log();
    assert!(
        log.contains("testhost (verified by this signer)") && log.contains("userDenied"),
        "{log}"
    );
}

#[test]
fn sshsig_namespaces_are_shown() {
    let s = Setup::new();
    for (ns, purpose) in [
        ("git", "git signature"),
        ("file", "file signature"),
        ("backup", "signature (backup)"),
    ] {
        let msg = s.path(&format!("m-{ns}"));
        std::fs::write(&msg, ns).unwrap();
        let c = sshsig(&s.agent.sock, &s.pubkey_file(), &msg, ns);
        let h = background(c);
        let p = s.signer.wait_pending(1);
        assert_eq!(p[0]["purpose"], purpose);
        s.signer.approve_next();
        assert!(h.join().unwrap().success());
    }
}

// --- crafted agent-protocol traffic -------------------------------------------------

fn sstr(v: &mut Vec<u8>, b: &[u8]) {
    v.extend_from_slice(&(b.len() as u32).to_be_bytes());
    v.extend_from_slice(b);
}

fn call(c: &mut UnixStream, body: &[u8]) -> Vec<u8> {
    c.write_all(&(body.len() as u32).to_be_bytes()).unwrap();
    c.write_all(body).unwrap();
    let mut len = [0u8; 4];
    c.read_exact(&mut len).unwrap();
    let mut r = vec![0u8; u32::from_be_bytes(len) as usize];
    c.read_exact(&mut r).unwrap();
    r
}

fn bind_msg(host_key: &[u8], session_id: &[u8], sig: &[u8]) -> Vec<u8> {
    let mut b = vec![27];
    sstr(&mut b, b"session-bind@openssh.com");
    sstr(&mut b, host_key);
    sstr(&mut b, session_id);
    sstr(&mut b, sig);
    b.push(0);
    b
}

fn userauth(session_id: &[u8], user: &str, key_blob: &[u8], host_key: &[u8]) -> Vec<u8> {
    let mut d = vec![];
    sstr(&mut d, session_id);
    d.push(50);
    sstr(&mut d, user.as_bytes());
    sstr(&mut d, b"ssh-connection");
    sstr(&mut d, b"publickey-hostbound-v00@openssh.com");
    d.push(1);
    sstr(&mut d, b"ecdsa-sha2-nistp256");
    sstr(&mut d, key_blob);
    sstr(&mut d, host_key);
    d
}

fn sign_msg(key_blob: &[u8], data: &[u8]) -> Vec<u8> {
    let mut b = vec![13];
    sstr(&mut b, key_blob);
    sstr(&mut b, data);
    b.extend_from_slice(&0u32.to_be_bytes());
    b
}

struct HostKey {
    key: ssh_key::PrivateKey,
}

impl HostKey {
    fn new() -> HostKey {
        let mut rng = ssh_key::rand_core::UnwrapErr(ssh_key::getrandom::SysRng);
        HostKey {
            key: ssh_key::PrivateKey::random(&mut rng, ssh_key::Algorithm::Ed25519).unwrap(),
        }
    }
    fn blob(&self) -> Vec<u8> {
        self.key.public_key().to_bytes().unwrap()
    }
    fn sign(&self, data: &[u8]) -> Vec<u8> {
        use signature::Signer;
        use ssh_key::encoding::Encode;
        let sig: ssh_key::Signature = self.key.try_sign(data).unwrap();
        sig.encode_vec().unwrap()
    }
}

fn signer_key_blob(s: &Setup) -> Vec<u8> {
    let k = ssh_key::PublicKey::from_openssh(s.pubkey.lines().next().unwrap()).unwrap();
    k.to_bytes().unwrap()
}

fn agent_log(home: &Path) -> String {
    std::fs::read_to_string(home.join("agent/requests.log")).unwrap_or_default()
}

#[test]
fn forged_bindings_are_refused_unbound_sessions_shown_and_forwarding_marked() {
    let s = Setup::new();
    let key = signer_key_blob(&s);
    let hk = HostKey::new();

    // A binding whose signature does not verify.
    let mut c = UnixStream::connect(&s.agent.sock).unwrap();
    let mut bogus = vec![];
    sstr(&mut bogus, b"ssh-ed25519");
    sstr(&mut bogus, &[0u8; 64]);
    assert_eq!(
        call(&mut c, &bind_msg(&hk.blob(), b"sid-1", &bogus)),
        vec![5]
    );
    let data = userauth(b"sid-1", "alice", &key, &hk.blob());
    assert_eq!(call(&mut c, &sign_msg(&key, &data)), vec![5]);
    assert!(s.signer.pending().is_empty());

    let log = agent_log(&s.agent.home);
    assert!(
        log.contains("bindingRefused") && log.contains("does not verify"),
        "{log}"
    );

    // A valid binding, but the userauth request belongs to another session (a client
    // that does not send session-bind): not refused, shown as not bound.
    let mut c = UnixStream::connect(&s.agent.sock).unwrap();
    assert_eq!(
        call(&mut c, &bind_msg(&hk.blob(), b"sid-2", &hk.sign(b"sid-2"))),
        vec![6]
    );
    let data = userauth(b"sid-OTHER", "alice", &key, &hk.blob());
    let t = std::thread::spawn(move || call(&mut c, &sign_msg(&key, &data)));
    let p = s.signer.wait_pending(1);
    assert_eq!(p[0]["destinationQuality"], "unknown", "{p:?}");
    assert!(
        p[0]["destination"]
            .as_str()
            .unwrap()
            .contains("destination unknown (session not bound"),
        "{p:?}"
    );
    s.signer.deny_next();
    assert_eq!(t.join().unwrap(), vec![5]);
    let key = signer_key_blob(&s);

    // Two valid bindings on one connection: agent forwarding, shown as a hop chain.
    let hop1 = HostKey::new();
    let mut c = UnixStream::connect(&s.agent.sock).unwrap();
    assert_eq!(
        call(&mut c, &bind_msg(&hop1.blob(), b"s-a", &hop1.sign(b"s-a"))),
        vec![6]
    );
    assert_eq!(
        call(&mut c, &bind_msg(&hk.blob(), b"s-b", &hk.sign(b"s-b"))),
        vec![6]
    );
    let data = userauth(b"s-b", "alice", &key, &hk.blob());
    let sock = s.agent.sock.clone();
    let t = std::thread::spawn(move || {
        let r = call(&mut c, &sign_msg(&key, &data));
        drop(sock);
        r
    });
    let p = s.signer.wait_pending(1);
    let dest = p[0]["destination"].as_str().unwrap().to_string();
    assert!(
        dest.starts_with("alice@") && dest.contains("forwarded via SHA256:"),
        "{dest}"
    );
    assert_eq!(p[0]["destinationQuality"], "forwarded");
    s.signer.deny_next();
    assert_eq!(t.join().unwrap(), vec![5]);
}

#[test]
fn namespace_and_host_policies_refuse_before_prompting() {
    let (s, kh) = setup_with_known_hosts();
    let fp = ok(&s.signer.home, &["signer", "keys", "list"])
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let shown = ok(
        &s.signer.home,
        &[
            "signer",
            "keys",
            "policy",
            &fp,
            "--namespaces",
            "git",
            "--hosts",
            "testhost",
        ],
    );
    assert!(
        shown.contains("namespaces: git") && shown.contains("hosts: testhost"),
        "{shown}"
    );

    let sign = |ns: &str| {
        let msg = s.path(&format!("m-{ns}"));
        std::fs::write(&msg, ns).unwrap();
        sshsig(&s.agent.sock, &s.pubkey_file(), &msg, ns)
    };
    let out = run(&mut sign("file"), T);
    assert!(!out.success());
    assert!(
        s.signer.pending().is_empty(),
        "policy must refuse before prompting"
    );
    assert!(s.signer.log().contains("policyDenied"));
    let h = background(sign("git"));
    assert_eq!(s.signer.wait_pending(1)[0]["purpose"], "git signature");
    s.signer.approve_next();
    assert!(h.join().unwrap().success());

    // Hosts: only a verified `testhost` is allowed.
    let sshd = Sshd::start(&s.pubkey);
    let out = run(sshd.ssh_command(&s.agent.sock).arg("true"), T);
    assert!(
        !out.success(),
        "bound (unnamed) destination must be refused: {out:?}"
    );
    assert!(s.signer.pending().is_empty());
    // The workstation names it `otherhost`: not allowed.
    name_host(&kh, &sshd, "otherhost");
    assert!(!run(sshd.ssh_command(&s.agent.sock).arg("true"), T).success());
    assert!(s.signer.pending().is_empty());
    // Named `testhost` on first sight: a name the workstation gives an unknown key is
    // not enough for a hosts policy; refused before anyone is asked.
    name_host(&kh, &sshd, "testhost");
    assert!(!run(sshd.ssh_command(&s.agent.sock).arg("true"), T).success());
    assert!(s.signer.pending().is_empty());
    // Pinned on the signer by hand: allowed, shown as verified by this signer.
    let hk = s.path("hostkey.pub");
    std::fs::write(&hk, sshd.host_key_pub()).unwrap();
    ok(
        &s.signer.home,
        &["signer", "hosts", "add", "testhost", hk.to_str().unwrap()],
    );
    let h = login(&s, &sshd);
    let p = s.signer.wait_pending(1);
    assert!(
        p[0]["destination"]
            .as_str()
            .unwrap()
            .contains("testhost (verified by this signer)"),
        "{p:?}"
    );
    s.signer.approve_next();
    assert!(h.join().unwrap().success());
    // Pinned now: the signer's own name decides, whatever the workstation claims.
    name_host(&kh, &sshd, "otherhost");
    let h = login(&s, &sshd);
    let p = s.signer.wait_pending(1);
    assert!(p[0]["destination"].as_str().unwrap().starts_with(&format!(
        "{}@testhost (verified by this signer)",
        sshd.user()
    )));
    s.signer.approve_next();
    assert!(h.join().unwrap().success());
    ok(
        &s.signer.home,
        &["signer", "keys", "policy", &fp, "--clear"],
    );
}

#[test]
fn tampering_with_either_log_is_detected_and_named() {
    let s = Setup::new();
    for i in 0..3 {
        let msg = s.path(&format!("m{i}"));
        std::fs::write(&msg, "x").unwrap();
        let c = sshsig(&s.agent.sock, &s.pubkey_file(), &msg, "file");
        let h = background(c);
        s.signer.wait_pending(1);
        if i == 1 {
            s.signer.deny_next();
        } else {
            s.signer.approve_next();
        }
        h.join().unwrap();
    }
    for (home, side, file) in [
        (&s.agent.home, "agent", "agent/requests.log"),
        (&s.signer.home, "signer", "signer/decisions.log"),
    ] {
        let path = home.join(file);
        let original = std::fs::read_to_string(&path).unwrap();
        assert!(ok(home, &[side, "log", "--verify"]).contains("chain intact"));
        let lines: Vec<&str> = original.lines().collect();
        assert!(lines.len() >= 3, "{original}");
        let edited = original.replacen(
            "\"decision\":\"userDenied\"",
            "\"decision\":\"approved\"",
            1,
        );
        assert_ne!(edited, original);
        let deleted = [&lines[..1], &lines[2..]].concat().join("\n") + "\n";
        let mut reordered = lines.clone();
        reordered.swap(1, 2);
        let reordered = reordered.join("\n") + "\n";
        for (what, text) in [
            ("edited", edited),
            ("deleted", deleted),
            ("reordered", reordered),
        ] {
            std::fs::write(&path, &text).unwrap();
            let out = try_vmux(home, &[side, "log", "--verify"]);
            assert!(!out.success(), "{side} {what}: {out:?}");
            assert!(out.stderr.contains("line "), "{side} {what}: {out:?}");
        }
        std::fs::write(&path, &original).unwrap();
    }
}

#[test]
fn hashed_known_hosts_name_the_host_on_a_non_default_port() {
    let (s, kh) = setup_with_known_hosts();
    let sshd = Sshd::start(&s.pubkey);
    let file = kh.path().join("known_hosts");
    // As Debian's ssh does by default: HashKnownHosts yes, the key learned on first use.
    let ssh = |extra: &[&str]| {
        let mut c = Command::new("ssh");
        c.args([
            "-F",
            "/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "HashKnownHosts=yes",
        ])
        .args(["-o", "StrictHostKeyChecking=accept-new"])
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", file.display()))
        .args(["-o", "GlobalKnownHostsFile=/dev/null"])
        .arg("-o")
        .arg(format!("IdentityAgent={}", s.agent.sock.display()))
        .args(["-o", "PreferredAuthentications=publickey"])
        .args(extra)
        .args(["-p", &sshd.port().to_string()])
        .arg(format!("{}@127.0.0.1", sshd.user()))
        .arg("true")
        .env("SSH_AUTH_SOCK", &s.agent.sock);
        c
    };
    let h = background(ssh(&[]));
    s.signer.deny_next();
    let _ = h.join().unwrap();
    let hashed = std::fs::read_to_string(&file).unwrap();
    assert!(hashed.starts_with("|1|"), "ssh did not hash: {hashed}");

    // The agent recognises the hashed entry from the requesting ssh's command line.
    let fp = ok(&s.signer.home, &["signer", "keys", "list"])
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let host = format!("127.0.0.1:{}", sshd.port());
    ok(
        &s.signer.home,
        &["signer", "keys", "policy", &fp, "--hosts", &host],
    );
    // A hosts policy matches only what this signer pinned: the host key, by hand.
    ok(
        &s.signer.home,
        &["signer", "hosts", "add", &host, &sshd.host_key_pub()],
    );
    let h = background(ssh(&[]));
    let p = s.signer.wait_pending(1);
    assert_eq!(p[0]["hostClaim"], host.as_str(), "{p:?}");
    assert!(
        p[0]["destination"].as_str().unwrap().contains(&host),
        "{p:?}"
    );
    s.signer.approve_next();
    assert!(
        h.join().unwrap().success(),
        "the --hosts policy let it through"
    );
}

/// One approved SSHSIG through the agent (a line in both logs).
fn one_signature(s: &Setup, name: &str) {
    let msg = s.path(name);
    std::fs::write(&msg, name).unwrap();
    let h = background(sshsig(&s.agent.sock, &s.pubkey_file(), &msg, "file"));
    s.signer.approve_next();
    assert!(h.join().unwrap().success());
}

/// Wait until `--verify` on `home`'s `side` log succeeds and says `needle`.
fn verify_says(home: &Path, side: &str, needle: &str) -> String {
    let deadline = std::time::Instant::now() + T;
    loop {
        let out = try_vmux(home, &[side, "log", "--verify"]);
        if out.success() && out.stdout.contains(needle) {
            return out.stdout;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{side} log --verify never said {needle:?}: {out:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn logs_survive_rotation_and_report_truncation_rewrites_and_deletion() {
    let mut s = Setup::new();
    one_signature(&s, "m1");
    // Rotated while the agent runs: new entries go to a new file, which verifies and
    // names the earlier chain.
    let log = s.agent.home.join("agent/requests.log");
    std::fs::rename(&log, s.path("requests.log.1")).unwrap();
    one_signature(&s, "m2");
    let said = verify_says(&s.agent.home, "agent", "chain intact");
    assert!(said.contains("continues an earlier log"), "{said}");
    assert!(std::fs::read_to_string(&log)
        .unwrap()
        .contains("chainStart"));

    // The signer's log, tampered with after its daemon wrote it.
    one_signature(&s, "m3");
    verify_says(&s.signer.home, "signer", "tail matches its anchor");
    let dlog = s.signer.home.join("signer/decisions.log");
    let original = std::fs::read_to_string(&dlog).unwrap();
    let lines: Vec<&str> = original.lines().collect();
    // Tail cut off.
    std::fs::write(&dlog, lines[..lines.len() - 1].join("\n") + "\n").unwrap();
    let out = try_vmux(&s.signer.home, &["signer", "log", "--verify"]);
    assert!(
        !out.success() && out.stderr.contains("tail was cut off"),
        "{out:?}"
    );
    // A line rewritten and everything after it rehashed: a consistent chain, but not
    // the one the anchor recorded.
    let mut rehashed = vec![];
    let mut prev = "0".repeat(64);
    for (i, l) in lines.iter().enumerate() {
        let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
        if i == 1 {
            v["decision"] = serde_json::json!("userDenied");
        }
        v["prev"] = serde_json::json!(prev);
        let text = v.to_string();
        use sha2::Digest;
        prev = vmux_proto::identity::hex(&sha2::Sha256::digest(text.as_bytes()));
        rehashed.push(text);
    }
    std::fs::write(&dlog, rehashed.join("\n") + "\n").unwrap();
    let out = try_vmux(&s.signer.home, &["signer", "log", "--verify"]);
    assert!(
        !out.success() && out.stderr.contains("rewritten"),
        "{out:?}"
    );
    // Deleted.
    std::fs::remove_file(&dlog).unwrap();
    let out = try_vmux(&s.signer.home, &["signer", "log", "--verify"]);
    assert!(!out.success() && out.stderr.contains("deleted"), "{out:?}");

    // A torn last line (a crash mid-write) is cut at the next start; the chain goes on.
    std::fs::write(&dlog, &original).unwrap();
    let addr = s.signer.addr.clone();
    s.signer.stop();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&dlog)
        .unwrap();
    use std::io::Write;
    f.write_all(b"{\"event\":\"sign\",\"se").unwrap();
    drop(f);
    s.signer = Signer::start(&s.signer.home, &addr);
    s.agent.wait_connected();
    one_signature(&s, "m4");
    verify_says(&s.signer.home, "signer", "chain intact");
}

/// The decision log rotates by size (`log_max_mb`): the full log becomes
/// `decisions.log.1`, a new chain starts that names its last line, and `log --verify`
/// follows the chain across the files; a rotated file changed or removed is named.
#[test]
fn the_decision_log_rotates_by_size_and_verifies_across_files() {
    let tmp = tempfile::tempdir().unwrap();
    let (shome, ahome) = (tmp.path().join("s"), tmp.path().join("a"));
    Signer::init(&shome, "rotating");
    set_signer_config(&shome, "log_max_mb", "1");
    // A log just over 1 MiB, written the way the signer writes it.
    let dlog = shome.join("signer/decisions.log");
    {
        let mut j = vmux_proto::journal::Journal::open(&dlog).unwrap();
        let filler = "x".repeat(1000);
        for _ in 0..1100 {
            let mut r = serde_json::Map::new();
            r.insert("event".into(), serde_json::json!("filler"));
            r.insert("note".into(), serde_json::json!(filler));
            j.append(r).unwrap().wait().unwrap();
        }
    }
    let signer = Signer::start(&shome, "127.0.0.1:0");
    agent_config(&ahome, "session_certs = false\n");
    pair(&ahome, &signer);
    let agent = Agent::start(&ahome);
    agent.wait_connected();
    let pubkey = tmp.path().join("k.pub");
    std::fs::write(&pubkey, ok(&shome, &["signer", "keys", "pub"])).unwrap();
    let msg = tmp.path().join("m");
    std::fs::write(&msg, "m").unwrap();
    let h = background(sshsig(&agent.sock, &pubkey, &msg, "file"));
    signer.approve_next();
    assert!(h.join().unwrap().success());
    let rotated = shome.join("signer/decisions.log.1");
    assert!(rotated.exists(), "no rotation");
    assert!(std::fs::metadata(&dlog).unwrap().len() < 1 << 20);
    let current = std::fs::read_to_string(&dlog).unwrap();
    assert!(current.lines().next().unwrap().contains("chainStart"));
    assert!(current.contains("\"decision\":\"approved\""), "{current}");
    let out = ok(&shome, &["signer", "log", "--verify"]);
    assert!(
        out.contains("decisions.log.1: 110") && out.contains("tail matches its anchor"),
        "{out}"
    );
    // The rotated file edited: named.
    let text = std::fs::read_to_string(&rotated).unwrap();
    std::fs::write(&rotated, text.replacen("filler", "fillet", 1)).unwrap();
    let out = try_vmux(&shome, &["signer", "log", "--verify"]);
    assert!(
        !out.success() && out.stderr.contains("decisions.log.1: line"),
        "{out:?}"
    );
    // Removed: the current chain no longer starts where anything ends here, and says so.
    std::fs::remove_file(&rotated).unwrap();
    let out = ok(&shome, &["signer", "log", "--verify"]);
    assert!(out.contains("continues an earlier log"), "{out}");
}
