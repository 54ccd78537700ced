//! Issue 8: approve exactly what you see. A hostile paired device (tests/common/peer.rs)
//! tries to swap requests behind an id, to label data as something else, to forge
//! bindings and to inject text; CLIs that die decide nothing; revocation is immediate.

mod common;

use common::peer::*;
use common::proc::{send_signal, Daemon, SIGKILL, SIGTERM};
use common::vmux::*;
use std::time::Duration;
use uuid::Uuid;
use vmux_proto::envelope::*;

const SIGINT: i32 = 2;

/// A paired signer whose agent is stopped: the hostile peer takes its identity.
fn hostile() -> (Setup, Peer, Vec<u8>) {
    let mut s = Setup::new();
    s.agent.stop();
    let key = signer_key_blob(&s.agent.home);
    let mut peer = Peer::as_agent(&s.agent.home, &s.signer.addr, "workstation");
    peer.recv_where(|m| matches!(m, Message::Hello(_)).then_some(()));
    (s, peer, key)
}

#[test]
fn a_request_cannot_be_swapped_behind_its_id() {
    let (s, mut peer, key) = hostile();
    let x = Uuid::new_v4();
    let git = sshsig_blob("git", b"commit");
    peer.submit(peer.sign_request(x, &key, &git));
    let shown = s.signer.wait_pending(1)[0].clone();
    assert_eq!(shown["purpose"], "git signature");
    assert_ne!(
        shown["id"],
        x.to_string(),
        "the queue id must be the signer's"
    );
    assert_eq!(shown["label"], x.to_string());

    // The same id again while X is live: refused, whatever it carries.
    let login = userauth(b"sid", "root", &key);
    peer.submit(peer.sign_request(x, &key, &login));
    assert_eq!(peer.sign_response(x).error, Some(ErrorCode::ReplayDetected));
    let mut cert = peer.cert_request(x, &key);
    cert.validity_secs = 8 * 3600;
    peer.send(Message::CertificateRequest(Box::new(cert)));
    assert_eq!(peer.cert_response(x).error, Some(ErrorCode::ReplayDetected));
    assert_eq!(s.signer.pending().len(), 1);

    // Another device cannot cancel it, even knowing both ids.
    let mut other_home = s.path("other");
    std::fs::create_dir_all(&other_home).unwrap();
    agent_config(&other_home, "session_certs = false\n");
    pair(&other_home, &s.signer);
    let mut other = Peer::as_agent(&other_home, &s.signer.addr, "other");
    for id in [
        x,
        Uuid::parse_str(shown["id"].as_str().unwrap()).unwrap_or(x),
    ] {
        other.send(Message::Cancel(Cancel { request_id: id }));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(s.signer.pending().len(), 1, "another device cancelled X");
    other_home.push("unused");

    // Cancel X and resubmit it as a login: a new entry with a new id; the old id is dead.
    peer.send(Message::Cancel(Cancel { request_id: x }));
    let deadline = std::time::Instant::now() + T;
    while !s.signer.pending().is_empty() {
        assert!(std::time::Instant::now() < deadline, "cancel did not land");
        std::thread::sleep(Duration::from_millis(50));
    }
    peer.submit(peer.sign_request(x, &key, &login));
    let again = s.signer.wait_pending(1)[0].clone();
    assert_ne!(again["id"], shown["id"]);
    assert_eq!(again["purpose"], "login");
    let old = try_vmux(
        &s.signer.home,
        &["signer", "approve", shown["id"].as_str().unwrap()],
    );
    assert!(!old.success(), "the displayed id was reused: {old:?}");
    assert!(old.stderr.contains("no pending request"), "{old:?}");

    // Approving the displayed entry signs exactly the displayed data.
    let out = ok(
        &s.signer.home,
        &["signer", "approve", &again["id"].as_str().unwrap()[..10]],
    );
    assert!(out.contains("approved") && out.contains("login"), "{out}");
    let resp = peer.sign_response(x);
    assert!(resp.approved, "{resp:?}");
    assert!(verifies(&key, &login, resp.signature.as_ref().unwrap()));
    assert!(!verifies(&key, &git, resp.signature.as_ref().unwrap()));
    use sha2::Digest;
    assert_eq!(
        again["dataDigest"],
        vmux_proto::identity::hex(&sha2::Sha256::digest(&login))
    );
}

#[test]
fn claims_that_contradict_the_data_are_refused_before_anyone_is_asked() {
    let (s, mut peer, key) = hostile();
    let login = userauth(b"sid", "alice", &key);
    let git = sshsig_blob("git", b"m");
    let cases: Vec<(Vec<u8>, Context)> = vec![
        // A login labelled as a git signature.
        (
            login.clone(),
            Context {
                kind: "sshsig".into(),
                namespace: Some("git".into()),
                ..Default::default()
            },
        ),
        (
            login.clone(),
            Context {
                kind: "git".into(),
                ..Default::default()
            },
        ),
        // A wrong user.
        (
            login.clone(),
            Context {
                kind: "login".into(),
                user: Some("bob".into()),
                ..Default::default()
            },
        ),
        // A wrong namespace.
        (
            git.clone(),
            Context {
                kind: "sshsig".into(),
                namespace: Some("file".into()),
                ..Default::default()
            },
        ),
        // The userauth request is for another key than the one asked to sign.
        (
            userauth(b"sid", "alice", b"another key"),
            Context::default(),
        ),
    ];
    for (data, context) in cases {
        let label = Uuid::new_v4();
        let mut req = peer.sign_request(label, &key, &data);
        req.context = context.clone();
        peer.submit(req);
        let r = peer.sign_response(label);
        assert_eq!(r.error, Some(ErrorCode::ContextMismatch), "{context:?}");
    }
    assert!(s.signer.pending().is_empty());
    assert!(s.signer.log().contains("contextMismatch"));

    // A git-only key never signs a login, whatever the claim.
    let fp = ok(&s.signer.home, &["signer", "keys", "list"])
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    ok(
        &s.signer.home,
        &["signer", "keys", "policy", &fp, "--namespaces", "git"],
    );
    for kind in ["", "login", "unknown"] {
        let label = Uuid::new_v4();
        let mut req = peer.sign_request(label, &key, &login);
        req.context.kind = kind.into();
        peer.submit(req);
        assert_eq!(
            peer.sign_response(label).error,
            Some(ErrorCode::PolicyDenied)
        );
    }
    // Unrecognised data is shown as such and refused by any policy.
    let label = Uuid::new_v4();
    peer.submit(peer.sign_request(label, &key, b"\x00\x01 transfer 1000 EUR"));
    assert_eq!(
        peer.sign_response(label).error,
        Some(ErrorCode::PolicyDenied)
    );
    ok(
        &s.signer.home,
        &["signer", "keys", "policy", &fp, "--clear"],
    );
    let label = Uuid::new_v4();
    peer.submit(peer.sign_request(label, &key, b"\x00\x01 transfer 1000 EUR"));
    assert_eq!(s.signer.wait_pending(1)[0]["purpose"], "unrecognised data");
    s.signer.deny_next();
    assert_eq!(peer.sign_response(label).error, Some(ErrorCode::UserDenied));
}

#[test]
fn bindings_are_verified_on_the_signer_and_claims_stay_claims() {
    let (s, mut peer, key) = hostile();
    let host = HostKey::new();
    let login = userauth(b"session-1", "alice", &key);

    // A forged binding (the signature is by another key): refused, never shown.
    let label = Uuid::new_v4();
    let mut req = peer.sign_request(label, &key, &login);
    let mut forged = host.binding(b"session-1", false);
    forged.signature = HostKey::new().sign(b"session-1");
    req.bindings = vec![forged];
    req.context.host = Some("github.com".into());
    req.context.quality = "verified".into();
    peer.submit(req);
    assert_eq!(
        peer.sign_response(label).error,
        Some(ErrorCode::ContextMismatch)
    );
    assert!(s.signer.pending().is_empty());

    // A genuine binding of another session: not verified, shown as not bound.
    let label = Uuid::new_v4();
    let mut req = peer.sign_request(label, &key, &login);
    req.bindings = vec![host.binding(b"session-OTHER", false)];
    req.context.host = Some("github.com".into());
    req.context.quality = "verified".into();
    peer.submit(req);
    let p = s.signer.wait_pending(1)[0].clone();
    assert_eq!(p["destinationQuality"], "unknown", "{p}");
    let dest = p["destination"].as_str().unwrap();
    assert!(
        dest.contains("session not bound") && !dest.contains("verified"),
        "{dest}"
    );
    assert!(
        dest.contains("the workstation calls it github.com"),
        "{dest}"
    );
    s.signer.deny_next();
    peer.sign_response(label);

    // A verified binding for a host key the signer has never seen: new, named only as
    // the workstation's claim.
    let label = Uuid::new_v4();
    let mut req = peer.sign_request(label, &key, &login);
    req.bindings = vec![host.binding(b"session-1", false)];
    req.context.host = Some("github.com".into());
    peer.submit(req);
    let p = s.signer.wait_pending(1)[0].clone();
    assert_eq!(p["destinationQuality"], "new");
    let dest = p["destination"].as_str().unwrap();
    assert!(
        dest.contains(&format!("new host key {}", host.fingerprint()))
            && dest.contains("(the workstation calls it github.com"),
        "{dest}"
    );
    assert_eq!(p["hostClaim"], "github.com");
    s.signer.approve_next();
    assert!(peer.sign_response(label).approved);
    // Approved with a verified binding: pinned. The workstation now renames it.
    let label = Uuid::new_v4();
    let login2 = userauth(b"session-2", "alice", &key);
    let mut req = peer.sign_request(label, &key, &login2);
    req.bindings = vec![host.binding(b"session-2", false)];
    req.context.host = Some("gitlab.com".into());
    peer.submit(req);
    let p = s.signer.wait_pending(1)[0].clone();
    assert_eq!(p["destinationQuality"], "verified");
    assert!(p["destination"]
        .as_str()
        .unwrap()
        .starts_with("alice@github.com (verified by this signer)"));
    assert!(
        p["warning"]
            .as_str()
            .unwrap()
            .contains("calls it gitlab.com"),
        "{p}"
    );
    s.signer.deny_next();
    peer.sign_response(label);

    // Day two: the pin survives a restart of the signer.
    drop(peer);
    let addr = s.signer.addr.clone();
    let mut s = s;
    s.signer.stop();
    s.signer = Signer::start(&s.signer.home, &addr);
    let mut peer = Peer::as_agent(&s.agent.home, &s.signer.addr, "workstation");
    let label = Uuid::new_v4();
    let login4 = userauth(b"session-4", "alice", &key);
    let mut req = peer.sign_request(label, &key, &login4);
    req.bindings = vec![host.binding(b"session-4", false)];
    req.context.host = Some("github.com".into());
    peer.submit(req);
    let p = s.signer.wait_pending(1)[0].clone();
    assert_eq!(
        p["destination"],
        "alice@github.com (verified by this signer)"
    );
    s.signer.approve_next();
    let r = peer.sign_response(label);
    assert!(r.approved && verifies(&key, &login4, r.signature.as_ref().unwrap()));

    // Forwarded: shown as forwarded via the hop, never as a direct verified login.
    let hop = HostKey::new();
    let label = Uuid::new_v4();
    let login3 = userauth(b"session-3", "alice", &key);
    let mut req = peer.sign_request(label, &key, &login3);
    req.bindings = vec![
        hop.binding(b"hop-session", true),
        host.binding(b"session-3", false),
    ];
    peer.submit(req);
    let p = s.signer.wait_pending(1)[0].clone();
    assert_eq!(p["destinationQuality"], "forwarded");
    assert!(
        p["destination"]
            .as_str()
            .unwrap()
            .contains(&format!("forwarded via {}", hop.fingerprint())),
        "{p}"
    );
    s.signer.deny_next();
    peer.sign_response(label);
}

/// `vmux signer approve --next --wait 20` started in the background.
fn approver(s: &Setup) -> Daemon {
    let d = Daemon::spawn_named(
        "approve --next --wait",
        vmux(&s.signer.home).args(["signer", "approve", "--next", "--wait", "20"]),
    );
    d.wait_for_line(|l| l.contains("waiting up to 20s"), T)
        .unwrap_or_else(|| panic!("approver did not start: {}", d.output()));
    d
}

#[test]
fn a_dead_cli_decides_nothing_and_pairings_need_their_code() {
    let (s, mut peer, key) = hostile();
    for sig in [SIGINT, SIGTERM, SIGKILL] {
        let d = approver(&s);
        assert!(send_signal(d.pid(), sig));
        std::thread::sleep(Duration::from_millis(300));
        let label = Uuid::new_v4();
        peer.submit(peer.sign_request(label, &key, &sshsig_blob("git", b"x")));
        s.signer.wait_pending(1);
        std::thread::sleep(Duration::from_millis(300));
        let p = s.signer.pending();
        assert_eq!(p.len(), 1, "signal {sig}: a dead approver decided: {p:?}");
        s.signer.deny_next();
        assert_eq!(peer.sign_response(label).error, Some(ErrorCode::UserDenied));
        drop(d);
    }

    // A pairing from a new device: --next never applies to it, a wrong code is refused,
    // the code it shows pairs it.
    let d = approver(&s);
    assert!(send_signal(d.pid(), SIGKILL));
    drop(d);
    let new_home = s.path("newcomer");
    agent_config(&new_home, "session_certs = false\n");
    let mut pairing = Daemon::spawn_interactive(
        "vmux agent pair",
        vmux(&new_home).args(["agent", "pair", &s.signer.addr]),
    );
    let code = pairing_code(&pairing);
    let p = s.signer.wait_pending(1);
    assert_eq!(p[0]["kind"], "pair");
    let next = try_vmux(&s.signer.home, &["signer", "approve", "--next"]);
    assert!(!next.success(), "{next:?}");
    assert!(next.stderr.contains("--code"), "{next:?}");
    let by_id = try_vmux(
        &s.signer.home,
        &["signer", "approve", p[0]["id"].as_str().unwrap()],
    );
    assert!(
        !by_id.success() && by_id.stderr.contains("--code"),
        "{by_id:?}"
    );
    let wrong = if code == "000000" { "000001" } else { "000000" };
    let bad = try_vmux(&s.signer.home, &["signer", "approve", "--code", wrong]);
    assert!(
        !bad.success() && bad.stderr.contains("no pending pairing"),
        "{bad:?}"
    );
    assert_eq!(s.signer.pending().len(), 1);
    finish_pairing(&mut pairing, &s.signer, &code);
    pairing
        .wait_for_line(|l| l.starts_with("paired with signer"), T)
        .unwrap_or_else(|| panic!("pairing did not finish: {}", pairing.output()));
    let none = try_vmux(&s.signer.home, &["signer", "approve"]);
    assert!(
        !none.success() && none.stderr.contains("--next") && none.stderr.contains("--code"),
        "{none:?}"
    );
}

fn assert_inert(what: &str, text: &str) {
    for bad in ['\x1b', '\r', '\u{202e}', '\x07'] {
        assert!(!text.contains(bad), "{what} carries {bad:?} raw: {text:?}");
    }
}

#[test]
fn peer_text_is_escaped_everywhere_it_is_shown() {
    let tmp = tempfile::tempdir().unwrap();
    let (shome, ahome) = (tmp.path().join("s"), tmp.path().join("a"));
    let evil_name = "laptop\u{1b}[2J\r\ndestination: bank (verified)\u{202e}";
    agent_config(
        &ahome,
        &format!("session_certs = false\nname = {}\n", toml_string(evil_name)),
    );
    Signer::init(&shome, "s");
    ok(
        &shome,
        &[
            "signer",
            "keys",
            "add",
            "--type",
            "ed25519",
            "--comment",
            "key\u{1b}]0;owned\u{7}\nkey: SHA256:fake",
        ],
    );
    let mut signer = Signer::start(&shome, "127.0.0.1:0");
    pair(&ahome, &signer);
    let keys: Vec<u8> = {
        let a = Agent::start(&ahome);
        a.wait_connected();
        let mut a = a;
        a.stop();
        signer_key_blob(&ahome)
    };
    let mut peer = Peer::as_agent(&ahome, &signer.addr, evil_name);
    // Find the ed25519 key (the one with the hostile comment).
    let cache: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ahome.join("agent/keys.json")).unwrap())
            .unwrap();
    let ed = cache
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["algorithm"] == "ssh-ed25519")
        .map(|k| {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD
                .decode(k["publicKey"].as_str().unwrap())
                .unwrap()
        })
        .unwrap_or(keys);
    let label = Uuid::new_v4();
    let mut req = peer.sign_request(label, &ed, &sshsig_blob("git\u{1b}[31m\r\nkey: x", b"m"));
    req.context.requester = Some("ssh (1) \u{1b}[8m← hidden\r\n".into());
    peer.submit(req);
    let label2 = Uuid::new_v4();
    let mut req2 = peer.sign_request(label2, &ed, &userauth(b"s", "root", &ed));
    req2.context.host = Some("h\u{1b}[1A".into());
    peer.submit(req2);
    // A login user name with a line break would draw a fake line: refused, not shown.
    let label3 = Uuid::new_v4();
    let req3 = peer.sign_request(label3, &ed, &userauth(b"s", "root\r\nuser: nobody", &ed));
    peer.submit(req3);
    assert_eq!(
        peer.sign_response(label3).error,
        Some(ErrorCode::ContextMismatch)
    );
    let mut p = signer.wait_pending(2);
    p.sort_by_key(|e| e["purpose"] == "login");
    let json = ok(&shome, &["signer", "pending", "--json"]);
    let human = ok(&shome, &["signer", "pending"]);
    assert_inert("pending --json", &json);
    assert_inert("pending", &human);
    let (each, list) = human.split_once("\n\n").expect("the two as a list too");
    assert_eq!(each.lines().count(), 2, "one line per request: {human}");
    assert_eq!(
        list.lines().count(),
        4,
        "two list lines, a heading, the digest: {human}"
    );
    for e in &p {
        for (k, v) in e.as_object().unwrap() {
            if let Some(v) = v.as_str() {
                assert!(!v.contains('\n'), "field {k} carries a raw LF: {v:?}");
            }
        }
    }
    assert!(
        p[0]["from"].as_str().unwrap().contains("\\e[2J\\r\\n"),
        "{p:?}"
    );
    assert!(
        p[0]["keyComment"].as_str().unwrap().contains("\\e]0;owned"),
        "{p:?}"
    );
    assert!(
        p[0]["purpose"].as_str().unwrap().contains("\\e[31m"),
        "{p:?}"
    );
    assert!(
        p[1]["destination"].as_str().unwrap().contains("root@"),
        "{p:?}"
    );
    // The text a person reads when deciding: the same, escaped.
    let decided = ok(&shome, &["signer", "deny", p[0]["id"].as_str().unwrap()]);
    assert_inert("deny output", &decided);
    assert!(!decided.contains("\ndestination: bank"), "{decided}");
    ok(&shome, &["signer", "deny", p[1]["id"].as_str().unwrap()]);
    signer.stop();
}

fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() || (c as u32) > 0x7e => {
                out.push_str(&format!("\\u{:04X}", c as u32))
            }
            c => out.push(c),
        }
    }
    out + "\""
}

#[test]
fn revocation_is_immediate() {
    let (s, mut peer, key) = hostile();
    let label = Uuid::new_v4();
    peer.submit(peer.sign_request(label, &key, &sshsig_blob("git", b"x")));
    let p = s.signer.wait_pending(1);
    let id = p[0]["fromId"].as_str().unwrap().to_string();
    ok(&s.signer.home, &["signer", "devices", "revoke", &id]);
    // Denied at once, the link closed, the displayed id can no longer be approved.
    let r = peer.sign_response(label);
    assert_eq!(r.error, Some(ErrorCode::UserDenied));
    assert!(s.signer.pending().is_empty());
    let late = try_vmux(
        &s.signer.home,
        &["signer", "approve", p[0]["id"].as_str().unwrap()],
    );
    assert!(!late.success(), "{late:?}");
    assert!(
        peer.closed_within(T),
        "the revoked device's link stayed open"
    );
    // The revoked identity on a new link: refused.
    let mut again = Peer::as_agent(&s.agent.home, &s.signer.addr, "workstation");
    let e = again.recv_where(|m| match m {
        Message::Error(e) => Some(e.code),
        _ => None,
    });
    assert_eq!(e, ErrorCode::PairingInvalid);
}

/// The signer shows a login as sshd will read it: `user:style` as the user and its
/// style, and users that would read differently refused before anyone is asked; data
/// that starts like a login but does not parse is refused, never "unrecognised data".
#[test]
fn logins_are_shown_as_sshd_reads_them() {
    let (s, mut peer, key) = hostile();
    let sid = [9u8; 32];
    let ask = |peer: &mut Peer, user: &[u8]| {
        let label = Uuid::new_v4();
        peer.submit(peer.sign_request(
            label,
            &key,
            &common::peer::userauth_bytes(&sid, user, &key),
        ));
        label
    };
    for (user, why) in [
        (&b"name:\xff"[..], "not valid UTF-8"),
        (
            b"name:@prod.example.com (verified by this signer)",
            "login style",
        ),
        (b"ro\x1bot", "control or layout"),
        ("root\u{202e}".as_bytes(), "control or layout"),
    ] {
        let label = ask(&mut peer, user);
        let r = peer.sign_response(label);
        assert_eq!(r.error, Some(ErrorCode::ContextMismatch), "{user:?}");
        assert!(
            r.message.as_deref().unwrap_or("").contains(why),
            "{user:?}: {r:?}"
        );
        assert!(
            s.signer.pending().is_empty(),
            "{user:?} was shown to a person"
        );
    }
    // A plain style is shown apart from the name.
    let label = ask(&mut peer, b"alice:pam");
    let p = s.signer.wait_pending(1);
    assert_eq!(
        p[0]["user"], "alice (login style pam, as sshd reads it)",
        "{p:?}"
    );
    assert!(
        p[0]["destination"].as_str().unwrap().starts_with("alice@"),
        "{p:?}"
    );
    s.signer.deny_next();
    peer.sign_response(label);
    // Starts like a userauth request, does not parse: refused.
    let mut bad = vec![0, 0, 0, 32];
    bad.extend_from_slice(&sid);
    bad.push(50);
    bad.extend_from_slice(b"\x00\x00\x00\x04root\xff\xff");
    let label = Uuid::new_v4();
    peer.submit(peer.sign_request(label, &key, &bad));
    let r = peer.sign_response(label);
    assert_eq!(r.error, Some(ErrorCode::ContextMismatch), "{r:?}");
    assert!(s.signer.pending().is_empty());
}
