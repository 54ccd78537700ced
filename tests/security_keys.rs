//! Issue 22: security-key keys (`sk-ecdsa-sha2-nistp256@openssh.com`,
//! `sk-ssh-ed25519@openssh.com`) whose signatures tell a server that a person approved.
//! End to end with real OpenSSH: sshd accepts the login after an approval, refuses it
//! under `verify-required` unless PAM verification ran for that key (a real PAM user,
//! pam_unix), `git commit -S` makes a signature `ssh-keygen -Y verify` (through `git
//! verify-commit`) accepts, and the counter in the signatures grows across a signer
//! restart. In software (P-256 and Ed25519), in swtpm and on a SoftHSM2 token (P-256).

mod common;

use common::hw::{SoftHsm, Swtpm, SOFTHSM};
use common::pam::{PamFixture, PASSWORD};
use common::proc::{run, run_with_stdin, Output};
use common::sshd::Sshd;
use common::vmux::{agent_config, background, pair, set_signer_config, sshsig, Agent, Signer, T};
use std::path::{Path, PathBuf};
use std::process::Command;
use vmux_signer::keystore::{blob::take_string, sk};

struct Fx {
    tmp: tempfile::TempDir,
    shome: PathBuf,
    ahome: PathBuf,
    env: Vec<(String, String)>,
    signer: Option<Signer>,
    agent: Option<Agent>,
}

impl Fx {
    /// A signer (`vmux signer init`) whose commands run with `env`.
    fn new(env: &[(&str, String)]) -> Fx {
        let tmp = tempfile::tempdir().unwrap();
        let fx = Fx {
            shome: tmp.path().join("signer-home"),
            ahome: tmp.path().join("agent-home"),
            tmp,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
            signer: None,
            agent: None,
        };
        let out = fx.vmux(&["signer", "init", "--name", "sk-signer"]);
        assert!(out.success(), "{out:?}");
        set_signer_config(&fx.shome, "discovery", "\"off\"");
        fx
    }

    fn vmux(&self, args: &[&str]) -> Output {
        let mut c = common::vmux::vmux(&self.shome);
        c.args(args);
        for (k, v) in &self.env {
            c.env(k, v);
        }
        run(&mut c, T)
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.vmux(args);
        assert!(out.success(), "vmux {args:?}: {out:?}");
        out.stdout
    }

    /// `vmux signer keys add ARGS`: the new authorized_keys line.
    fn add(&self, args: &[&str]) -> String {
        let mut a = vec!["signer", "keys", "add"];
        a.extend_from_slice(args);
        self.ok(&a).lines().next().unwrap().to_string()
    }

    fn signer(&self) -> &Signer {
        self.signer.as_ref().unwrap()
    }

    fn agent(&self) -> &Agent {
        self.agent.as_ref().unwrap()
    }

    /// Start the signer (where it listened before, on a restart), then pair and start
    /// the agent the first time.
    fn start_signer(&mut self) {
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let addr_file = self.tmp.path().join("signer-addr");
        let listen = std::fs::read_to_string(&addr_file).unwrap_or_else(|_| "127.0.0.1:0".into());
        let signer = Signer::start_env(None, &self.shome, &listen, &env);
        std::fs::write(&addr_file, &signer.addr).unwrap();
        self.signer = Some(signer);
        if self.agent.is_none() {
            agent_config(&self.ahome, "session_certs = false\n");
            pair(&self.ahome, self.signer());
            self.agent = Some(Agent::start(&self.ahome));
        }
        self.agent().wait_connected();
    }

    fn restart_signer(&mut self) {
        self.signer.as_mut().unwrap().stop();
        self.start_signer();
    }

    /// Approve the next request, typing the PAM password when it asks for one.
    fn approve(&self, password: Option<&str>) -> serde_json::Value {
        let s = self.signer();
        let p = s.next_request();
        match password {
            None => {
                assert!(p.get("verify").is_none(), "{p}");
                s.approve_next();
            }
            Some(pw) => {
                assert_eq!(p["verify"], "pam", "{p}");
                let out = run_with_stdin(
                    common::vmux::vmux(&s.home).args([
                        "signer",
                        "approve",
                        p["id"].as_str().unwrap(),
                    ]),
                    &format!("{pw}\n"),
                    T,
                );
                assert!(out.success(), "approve with PAM: {out:?}");
            }
        }
        p
    }

    fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }
}

/// A login to a fresh sshd that has `authorized_keys`, approved on the signer.
fn login(fx: &Fx, authorized_keys: &str, password: Option<&str>) -> (Output, Sshd) {
    let sshd = Sshd::start(authorized_keys);
    let h = background({
        let mut c = sshd.ssh_command(&fx.agent().sock);
        c.arg("echo logged-in");
        c
    });
    let shown = fx.approve(password);
    let store = shown["keyStore"].as_str().unwrap_or_default();
    assert!(
        store.contains("security key (ssh:)"),
        "the prompt names a security-key key: {shown}"
    );
    (h.join().unwrap(), sshd)
}

fn logged_in(out: &Output) -> bool {
    out.success() && out.stdout.contains("logged-in")
}

/// `(flags, counter)` of the security-key signature inside an armored SSHSIG file, and
/// the public key blob it names.
fn sshsig_flags(sig_file: &Path) -> (u8, u32, Vec<u8>) {
    use base64::Engine;
    let text = std::fs::read_to_string(sig_file).unwrap();
    let b64: String = text
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .concat();
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    let mut r = raw.strip_prefix(b"SSHSIG").expect("SSHSIG magic");
    r = &r[4..]; // version
    let public = take_string(&mut r).unwrap().to_vec();
    for _ in 0..3 {
        take_string(&mut r).unwrap(); // namespace, reserved, hash algorithm
    }
    let sig = take_string(&mut r).unwrap();
    let (flags, counter) = sk::flags_and_counter(sig).expect("a security-key signature");
    (flags, counter, public)
}

/// `ssh-keygen -Y sign` of a new file through the agent, approved: its flags and
/// counter, checked by `ssh-keygen -Y verify`.
fn file_signature(fx: &Fx, line: &str, name: &str, password: Option<&str>) -> (u8, u32) {
    let pubf = fx.path("sk.pub");
    std::fs::write(&pubf, line).unwrap();
    let msg = fx.path(name);
    std::fs::write(&msg, format!("{name}\n")).unwrap();
    let h = background(sshsig(&fx.agent().sock, &pubf, &msg, "file"));
    fx.approve(password);
    let out = h.join().unwrap();
    assert!(out.success(), "ssh-keygen -Y sign: {out:?}");
    let allowed = fx.path("allowed_signers");
    std::fs::write(&allowed, format!("me {line}\n")).unwrap();
    let sig = msg.with_extension("sig");
    let v = run(
        Command::new("sh").args([
            "-c",
            &format!(
                "ssh-keygen -Y verify -f '{}' -I me -n file -s '{}' < '{}'",
                allowed.display(),
                sig.display(),
                msg.display()
            ),
        ]),
        T,
    );
    assert!(
        v.success() && v.stdout.contains("Good \"file\" signature"),
        "ssh-keygen -Y verify: {v:?}"
    );
    let (flags, counter, public) = sshsig_flags(&sig);
    let b64 = line.split_whitespace().nth(1).unwrap();
    use base64::Engine;
    assert_eq!(
        base64::engine::general_purpose::STANDARD.encode(public),
        b64
    );
    (flags, counter)
}

/// `git commit -S` (gpg.format ssh) with the key through the agent, approved, and
/// `git verify-commit` (which runs `ssh-keygen -Y verify`) accepts it.
fn git_signature(fx: &Fx, line: &str, password: Option<&str>, sk_label: &str) {
    let repo = fx.path("repo");
    let pubf = fx.path("git-signing.pub");
    std::fs::write(&pubf, line).unwrap();
    let allowed = fx.path("git-allowed");
    std::fs::write(&allowed, format!("me@example.com {line}\n")).unwrap();
    let git = |args: &[&str]| {
        let mut c = Command::new("git");
        c.arg("-C")
            .arg(&repo)
            .args(args)
            .env("SSH_AUTH_SOCK", &fx.agent().sock)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("HOME", fx.tmp.path());
        c
    };
    std::fs::create_dir_all(&repo).unwrap();
    for args in [
        &["init", "-q"][..],
        &["config", "user.name", "Me"],
        &["config", "user.email", "me@example.com"],
        &["config", "gpg.format", "ssh"],
        &["config", "user.signingkey", pubf.to_str().unwrap()],
        &[
            "config",
            "gpg.ssh.allowedSignersFile",
            allowed.to_str().unwrap(),
        ],
    ] {
        let out = run(&mut git(args), T);
        assert!(out.success(), "git {args:?}: {out:?}");
    }
    let h = background({
        let mut c = git(&[
            "commit",
            "-q",
            "-S",
            "--allow-empty",
            "-m",
            "signed by a person",
        ]);
        c.env("GIT_COMMITTER_DATE", "2026-01-01T00:00:00Z");
        c
    });
    let shown = fx.approve(password);
    assert_eq!(shown["purpose"], "git signature", "{shown}");
    let out = h.join().unwrap();
    assert!(out.success(), "git commit -S: {out:?}");
    let v = run(&mut git(&["verify-commit", "HEAD"]), T);
    assert!(
        v.success()
            && v.stderr
                .contains("Good \"git\" signature for me@example.com")
            && v.stderr.contains(sk_label),
        "git verify-commit: {v:?}"
    );
}

/// Everything issue 22 asks of one security-key key `line` (made in the store `fx`
/// has), `label` being how OpenSSH names its type (`ECDSA-SK`, `ED25519-SK`).
fn security_key_end_to_end(fx: &mut Fx, line: &str, label: &str, algorithm: &str) {
    assert!(line.starts_with(&format!("{algorithm} ")), "{line}");
    let b64 = line.split_whitespace().nth(1).unwrap();
    let fp = fx
        .ok(&["signer", "keys", "list"])
        .lines()
        .find(|l| l.contains(algorithm))
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .unwrap_or_else(|| panic!("keys list names no {algorithm} key"));
    let list = fx.ok(&["signer", "keys", "list"]);
    assert!(list.contains("security key (ssh:)"), "{list}");
    assert!(fx.ok(&["signer", "keys", "pub"]).contains(b64));
    fx.start_signer();

    // The agent lists it like any other key.
    let listed = fx.agent().ssh_add(&["-L"]).stdout;
    assert!(listed.contains(b64), "ssh-add -L: {listed}");
    let status = common::vmux::ok(&fx.ahome, &["agent", "status"]);
    assert!(status.contains(algorithm), "{status}");

    // A login, approved: sshd accepts the security-key signature (user presence is
    // required by default) and says what it was.
    let (out, sshd) = login(fx, line, None);
    assert!(logged_in(&out), "{out:?}\n{}", sshd.log());
    assert!(
        sshd.wait_for_log(&format!("ssh2: {label} SHA256:"), T),
        "{}",
        sshd.log()
    );
    // Approved without user verification: the flags say present, not verified.
    let (flags, before) = file_signature(fx, line, "m1", None);
    assert_eq!(flags, sk::USER_PRESENT, "flags {flags:#04x}");

    // verify-required: the person approved, but nothing verified them: refused.
    let strict = format!("verify-required {line}");
    let (out, sshd) = login(fx, &strict, None);
    assert!(!logged_in(&out), "{out:?}");
    assert!(
        sshd.wait_for_log("user verification requirement not met", T),
        "{}",
        sshd.log()
    );

    // PAM verification on for this key: the same login works, and the flags say so.
    let pam = PamFixture::with_auth("pam_unix.so");
    set_signer_config(&fx.shome, "pam_service", &format!("\"{}\"", pam.service));
    set_signer_config(&fx.shome, "pam_user", &format!("\"{}\"", pam.user));
    fx.ok(&["signer", "keys", "policy", &fp, "--verify", "pam"]);
    let (out, sshd) = login(fx, &strict, Some(PASSWORD));
    assert!(logged_in(&out), "{out:?}\n{}", sshd.log());
    git_signature(fx, line, Some(PASSWORD), label);

    // The counter is on disk before a signature leaves, and keeps growing after a
    // restart of the signer.
    let counters: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fx.shome.join("signer/sk-counters.json")).unwrap(),
    )
    .unwrap();
    let stored = counters[&fp].as_u64().unwrap() as u32;
    assert!(stored > before, "{counters}");
    fx.restart_signer();
    let (flags, after) = file_signature(fx, line, "m2", Some(PASSWORD));
    assert_eq!(
        flags,
        sk::USER_PRESENT | sk::USER_VERIFIED,
        "flags {flags:#04x}"
    );
    assert!(
        after > stored,
        "counter {after} after restart, {stored} before"
    );
    drop(pam);
}

#[test]
fn sk_ecdsa_software_keys_prove_a_person_approved() {
    let mut fx = Fx::new(&[]);
    let line = fx.add(&["--type", "sk-ecdsa", "--comment", "sk-p256"]);
    security_key_end_to_end(&mut fx, &line, "ECDSA-SK", sk::SK_ECDSA);
}

#[test]
fn sk_ed25519_software_keys_prove_a_person_approved() {
    let mut fx = Fx::new(&[]);
    let line = fx.add(&[
        "--type",
        "sk-ed25519",
        "--application",
        "ssh:",
        "--comment",
        "sk-ed",
    ]);
    security_key_end_to_end(&mut fx, &line, "ED25519-SK", sk::SK_ED25519);
}

#[test]
fn sk_ecdsa_keys_in_the_tpm_prove_a_person_approved() {
    let tpm = Swtpm::start();
    let mut fx = Fx::new(&[("TPM2TOOLS_TCTI", tpm.tcti())]);
    let line = fx.add(&[
        "--type",
        "sk-ecdsa",
        "--store",
        "tpm",
        "--comment",
        "sk-tpm",
    ]);
    let keys = fx.shome.join("signer/keys");
    assert!(
        std::fs::read_dir(&keys)
            .unwrap()
            .flatten()
            .any(|e| e.path().extension().is_some_and(|x| x == "tpm")),
        "the curve key lives in the TPM"
    );
    assert!(fx
        .ok(&["signer", "keys", "list"])
        .contains("(tpm, security key (ssh:))"));
    security_key_end_to_end(&mut fx, &line, "ECDSA-SK", sk::SK_ECDSA);
}

#[test]
fn sk_ecdsa_keys_on_a_token_prove_a_person_approved() {
    let hsm = SoftHsm::new();
    hsm.token("vmux-sk", "1234");
    let mut fx = Fx::new(&[("SOFTHSM2_CONF", hsm.conf()), ("VMUX_PIN", "1234".into())]);
    let line = fx.add(&[
        "--type",
        "sk-ecdsa",
        "--store",
        "pkcs11",
        "--module",
        SOFTHSM,
        "--token",
        "vmux-sk",
        "--comment",
        "sk-token",
    ]);
    assert!(fx
        .ok(&["signer", "keys", "list"])
        .contains(", security key (ssh:))"));
    security_key_end_to_end(&mut fx, &line, "ECDSA-SK", sk::SK_ECDSA);
}

#[test]
fn security_key_types_are_refused_where_they_cannot_be() {
    let fx = Fx::new(&[]);
    for (args, says) in [
        (
            &["--type", "sk-ed25519", "--store", "tpm"][..],
            "software only",
        ),
        (&["--type", "sk-ecdsa", "--application", "web:x"], "ssh:"),
        (
            &["--type", "ecdsa", "--application", "ssh:"],
            "security-key",
        ),
    ] {
        let mut a = vec!["signer", "keys", "add"];
        a.extend_from_slice(args);
        let out = fx.vmux(&a);
        assert!(
            !out.success() && out.stderr.contains(says),
            "{args:?}: {out:?}"
        );
    }
    // Nothing was made.
    let list = fx.ok(&["signer", "keys", "list"]);
    assert_eq!(list.lines().count(), 1, "{list}");
}
