//! Keys in hardware: SoftHSM2 tokens (PKCS#11) and swtpm (TPM 2.0), through the real
//! agent and signer, with real sshd logins and `ssh-keygen -Y sign`, approved as a
//! person would. TPM tests need the binary built with `--features tpm` (the test
//! command does); they fail rather than skip without it.

mod common;

use common::hw::{SoftHsm, Swtpm, SOFTHSM};
use common::proc::run;
use common::sshd::{Sshd, SshdOptions};
use common::vmux::{
    agent_config, background, ok, pair, set_signer_config, sshsig, try_vmux, Agent, Signer, T,
};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

struct Hw {
    tmp: tempfile::TempDir,
    shome: PathBuf,
    ahome: PathBuf,
    env: Vec<(String, String)>,
}

impl Hw {
    fn new(env: &[(&str, String)]) -> Hw {
        Hw::init(env, &[])
    }

    /// `vmux signer init` with `args` (`--store tpm`, …) in `env`.
    fn init(env: &[(&str, String)], args: &[&str]) -> Hw {
        let tmp = tempfile::tempdir().unwrap();
        let shome = tmp.path().join("signer-home");
        let ahome = tmp.path().join("agent-home");
        let hw = Hw {
            tmp,
            shome,
            ahome,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        };
        let mut a = vec!["signer", "init", "--name", "hw-signer"];
        a.extend_from_slice(args);
        let out = hw.vmux(&a);
        assert!(out.success(), "{a:?}: {out:?}");
        set_signer_config(&hw.shome, "discovery", "\"off\"");
        hw
    }

    fn vmux(&self, args: &[&str]) -> common::proc::Output {
        let mut c = common::vmux::vmux(&self.shome);
        c.args(args);
        for (k, v) in &self.env {
            c.env(k, v);
        }
        run(&mut c, T)
    }

    /// `vmux signer keys add …`, returning the new authorized_keys line.
    fn add(&self, args: &[&str]) -> String {
        let mut c = common::vmux::vmux(&self.shome);
        c.args(["signer", "keys", "add"]).args(args);
        // The default log filter, as a user has it.
        c.env_remove("VMUX_LOG");
        for (k, v) in &self.env {
            c.env(k, v);
        }
        let out = run(&mut c, T);
        assert!(out.success(), "keys add {args:?}: {out:?}");
        // What the TPM library says about its own housekeeping stays out of the way.
        assert!(!out.stderr.contains("Context closed"), "{out:?}");
        out.stdout.lines().last().unwrap().to_string()
    }

    /// Start the signer (where it listened before, on a restart) and the agent.
    fn start(&self, agent_toml: &str) -> (Signer, Agent) {
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let addr_file = self.tmp.path().join("signer-addr");
        let listen = std::fs::read_to_string(&addr_file).unwrap_or_else(|_| "127.0.0.1:0".into());
        let signer = Signer::start_env(None, &self.shome, &listen, &env);
        std::fs::write(&addr_file, &signer.addr).unwrap();
        if !self.ahome.join("agent/identity").exists() {
            agent_config(&self.ahome, agent_toml);
            pair(&self.ahome, &signer);
        }
        let agent = Agent::start(&self.ahome);
        agent.wait_connected();
        (signer, agent)
    }
}

/// `ssh` with only `key` authorized at a fresh sshd, approved on the signer.
fn login_with(signer: &Signer, agent: &Agent, key: &str) -> String {
    let sshd = Sshd::start(key);
    let h = background({
        let mut c = sshd.ssh_command(&agent.sock);
        c.arg("echo logged-in");
        c
    });
    let p = signer.wait_pending(1);
    signer.approve_next();
    let out = h.join().unwrap();
    assert!(
        out.success() && out.stdout.contains("logged-in"),
        "{out:?}\n--- signer ---\n{}",
        signer
            .daemon
            .as_ref()
            .map(|d| d.output())
            .unwrap_or_default()
    );
    p[0].to_string()
}

/// An RSA key signs rsa-sha2-256 when that is all sshd accepts (approved like any
/// login), and plain `ssh-rsa` (SHA-1) is refused before anyone is asked.
fn rsa_hashes(signer: &Signer, agent: &Agent, key: &str) {
    let only = |alg: &str| {
        let sshd = Sshd::start_with(SshdOptions {
            authorized_keys: key.to_string(),
            trusted_user_ca_keys: None,
            extra_config: vec![format!("PubkeyAcceptedAlgorithms {alg}")],
        });
        let mut c = sshd.ssh_command(&agent.sock);
        c.args([
            "-o",
            &format!("PubkeyAcceptedAlgorithms={alg}"),
            "echo logged-in",
        ]);
        (sshd, c)
    };
    let (sshd, c) = only("rsa-sha2-256");
    let h = background(c);
    signer.wait_pending(1);
    signer.approve_next();
    let out = h.join().unwrap();
    assert!(
        out.success() && out.stdout.contains("logged-in"),
        "rsa-sha2-256: {out:?}\n{}",
        sshd.log()
    );
    assert!(
        sshd.log().contains("RSA-SHA2-256") || sshd.log().contains("rsa-sha2-256"),
        "{}",
        sshd.log()
    );
    let before = signer.log().matches("unsupportedAlgorithm").count();
    let (_sshd, mut c) = only("ssh-rsa");
    let out = run(&mut c, T);
    assert!(!out.success(), "an ssh-rsa (SHA-1) login: {out:?}");
    assert!(signer.pending().is_empty(), "nobody is asked for SHA-1");
    assert_eq!(
        signer.log().matches("unsupportedAlgorithm").count(),
        before + 1,
        "{}",
        signer.log()
    );
}

fn sign_file(tmp: &Path, signer: &Signer, agent: &Agent, key: &str) {
    let pubf = tmp.join("key.pub");
    std::fs::write(&pubf, key).unwrap();
    let msg = tmp.join("msg");
    std::fs::write(&msg, "hello hardware\n").unwrap();
    let h = background(sshsig(&agent.sock, &pubf, &msg, "git"));
    signer.wait_pending(1);
    signer.approve_next();
    let out = h.join().unwrap();
    assert!(out.success(), "ssh-keygen -Y sign: {out:?}");
    // The signature verifies against the key, with OpenSSH's verifier.
    let allowed = tmp.join("allowed");
    std::fs::write(&allowed, format!("me {key}\n")).unwrap();
    let v = run(
        Command::new("sh").args([
            "-c",
            &format!(
                "ssh-keygen -Y verify -f '{}' -I me -n git -s '{}' < '{}'",
                allowed.display(),
                msg.with_extension("sig").display(),
                msg.display()
            ),
        ]),
        T,
    );
    assert!(v.success(), "verify: {v:?}");
    std::fs::remove_file(msg.with_extension("sig")).unwrap();
}

fn listed(agent: &Agent) -> String {
    agent.ssh_add(&["-L"]).stdout
}

#[test]
fn pkcs11_keys_log_in_and_sign() {
    let hsm = SoftHsm::new();
    hsm.token("vmux-a", "1234");
    let hw = Hw::new(&[("SOFTHSM2_CONF", hsm.conf()), ("VMUX_PIN", "1234".into())]);
    let keys: Vec<String> = ["ecdsa", "ecdsa-p384", "rsa"]
        .iter()
        .map(|t| {
            hw.add(&[
                "--store",
                "pkcs11",
                "--module",
                SOFTHSM,
                "--token",
                "vmux-a",
                "--type",
                t,
                "--comment",
                &format!("hsm-{t}"),
            ])
        })
        .collect();
    let list = hw.vmux(&["signer", "keys", "list"]).stdout;
    assert_eq!(
        list.matches("(pkcs11: token vmux-a, slot ").count(),
        3,
        "{list}"
    );
    assert!(list.contains("(software)"), "{list}");
    let (mut signer, mut agent) = hw.start("session_certs = false\n");
    let pubs = ok(&hw.shome, &["signer", "keys", "pub"]);
    let l = listed(&agent);
    for k in &keys {
        let b64 = k.split_whitespace().nth(1).unwrap();
        assert!(l.contains(b64) && pubs.contains(b64), "{k} not listed: {l}");
    }
    let status = ok(&hw.ahome, &["agent", "status"]);
    assert_eq!(status.matches("[pkcs11]").count(), 3, "{status}");
    for k in &keys {
        let shown = login_with(&signer, &agent, k);
        assert!(
            shown.contains("pkcs11"),
            "the prompt names the store: {shown}"
        );
    }
    for k in &keys {
        sign_file(hw.tmp.path(), &signer, &agent, k);
    }
    rsa_hashes(&signer, &agent, &keys[2]);
    // Day two: both daemons restart and the token keys still sign.
    signer.stop();
    agent.stop();
    let (_signer, _agent) = hw.start("");
    login_with(&_signer, &_agent, &keys[2]);
}

#[test]
fn an_existing_token_key_is_used_and_its_private_value_cannot_be_read() {
    let hsm = SoftHsm::new();
    hsm.token("vmux-b", "1234");
    let hw = Hw::new(&[("SOFTHSM2_CONF", hsm.conf()), ("VMUX_PIN", "1234".into())]);
    // A key made by vmux in another key directory stands for "a key already there".
    let other = hw.tmp.path().join("other");
    let made = {
        let mut c = common::vmux::vmux(&other);
        c.env("SOFTHSM2_CONF", hsm.conf()).env("VMUX_PIN", "1234");
        ok(&other, &["signer", "init", "--name", "x"]);
        c.args([
            "signer",
            "keys",
            "add",
            "--store",
            "pkcs11",
            "--module",
            SOFTHSM,
            "--token",
            "vmux-b",
            "--comment",
            "existing",
        ]);
        let out = run(&mut c, T);
        assert!(out.success(), "{out:?}");
        out.stdout.trim().to_string()
    };
    let used = hw.add(&[
        "--store",
        "pkcs11",
        "--module",
        SOFTHSM,
        "--token",
        "vmux-b",
        "--use-existing",
        "--label",
        "vmux existing",
    ]);
    assert_eq!(
        made.split_whitespace().nth(1),
        used.split_whitespace().nth(1),
        "{made} vs {used}"
    );
    // Through the module itself: the private key is sensitive and not extractable.
    let out = run(
        Command::new(env!("CARGO_BIN_EXE_vmux"))
            .args(["signer", "keys", "list"])
            .env("VMUX_HOME", &hw.shome),
        T,
    );
    assert!(out.stdout.contains("existing"), "{out:?}");
    let value = common::hw::private_value_readable(&hsm, "vmux-b", "1234");
    assert!(!value, "CKA_VALUE of a vmux token key was readable");
}

#[test]
fn a_wrong_pin_fails_that_request_alone_and_is_not_retried() {
    let hsm = SoftHsm::new();
    hsm.token("vmux-c", "1234");
    let hw = Hw::new(&[("SOFTHSM2_CONF", hsm.conf()), ("VMUX_PIN", "1234".into())]);
    let token_key = hw.add(&[
        "--store",
        "pkcs11",
        "--module",
        SOFTHSM,
        "--token",
        "vmux-c",
        "--comment",
        "hsm",
    ]);
    // The signer runs with a wrong PIN in its config (an unattended token).
    set_signer_config(&hw.shome, "discovery", "\"off\"");
    let cfg = hw.shome.join("signer/config.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, format!("{text}\n[pins]\nvmux-c = \"0000\"\n")).unwrap();
    let hw = Hw {
        env: vec![("SOFTHSM2_CONF".into(), hsm.conf())],
        ..hw
    };
    let (signer, agent) = hw.start("session_certs = false\n");
    // A login with the token key, approved: the token refuses, the login fails.
    let refused_login = |what: &str| {
        let sshd = Sshd::start(&token_key);
        let h = background({
            let mut c = sshd.ssh_command(&agent.sock);
            c.arg("true");
            c
        });
        signer.wait_pending(1);
        signer.approve_next();
        let out = h.join().unwrap();
        assert!(!out.success(), "{what} logged in with a wrong PIN: {out:?}");
        assert!(out.stderr.contains("agent refused operation"), "{out:?}");
    };
    for attempt in 0..2 {
        refused_login(&format!("attempt {attempt}"));
    }
    let log = signer.log();
    assert_eq!(log.matches("presenceFailed").count(), 2, "{log}");
    let out = signer.daemon.as_ref().unwrap().output();
    assert_eq!(
        out.matches("refused the PIN").count(),
        1,
        "one try at the token: {out}"
    );
    assert!(out.contains("not trying again"), "{out}");
    // The software key still signs.
    let soft = ok(&hw.shome, &["signer", "keys", "pub"])
        .lines()
        .next()
        .unwrap()
        .to_string();
    login_with(&signer, &agent, &soft);
    // Reloading the keys (any `keys …` command does) does not make it try again.
    ok(
        &hw.shome,
        &[
            "signer",
            "keys",
            "add",
            "--type",
            "ed25519",
            "--comment",
            "extra",
        ],
    );
    refused_login("after a reload");
    let out = signer.daemon.as_ref().unwrap().output();
    assert_eq!(out.matches("refused the PIN").count(), 1, "{out}");
    // Fixed in the config, then `pin reset`: tried again, and it signs.
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, text.replace("vmux-c = \"0000\"", "vmux-c = \"1234\"")).unwrap();
    refused_login("fixed but not reset");
    let reset = ok(&hw.shome, &["signer", "pin", "reset"]);
    assert!(reset.contains("vmux-c"), "{reset}");
    login_with(&signer, &agent, &token_key);
    assert!(signer.log().contains("pinReset"), "{}", signer.log());
}

#[test]
fn a_token_pin_is_typed_on_the_signers_terminal_and_checked_at_once() {
    let hsm = SoftHsm::new();
    hsm.token("vmux-t", "1234");
    let hw = Hw::new(&[("SOFTHSM2_CONF", hsm.conf()), ("VMUX_PIN", "1234".into())]);
    let key = hw.add(&[
        "--store",
        "pkcs11",
        "--module",
        SOFTHSM,
        "--token",
        "vmux-t",
        "--comment",
        "typed",
    ]);
    let addr = format!("127.0.0.1:{}", common::proc::free_port());
    let t = common::tmux::Tmux::start(&format!(
        "env -u VMUX_PIN VMUX_HOME={} SOFTHSM2_CONF={} {} signer run --no-ui --listen {addr}; sleep 60",
        hw.shome.display(),
        hsm.conf(),
        env!("CARGO_BIN_EXE_vmux"),
    ));
    t.wait_for("PIN for token vmux-t:", 1);
    t.keys(&["0000", "Enter"]);
    // A typo is told at once, and asked again.
    t.wait_for("refused the PIN", 1);
    t.wait_for("PIN for token vmux-t:", 2);
    t.keys(&["1234", "Enter"]);
    t.wait_for("listening on", 1);
    let signer = Signer {
        home: hw.shome.clone(),
        daemon: None,
        addr: addr.clone(),
    };
    agent_config(&hw.ahome, "session_certs = false\n");
    pair(&hw.ahome, &signer);
    let agent = Agent::start(&hw.ahome);
    agent.wait_connected();
    login_with(&signer, &agent, &key);
    let screen = t.screen();
    let echoed = screen.lines().any(|l| {
        let l = l.trim();
        l == "1234" || l == "0000" || (l.contains("PIN for token") && l.ends_with(['0', '4']))
    });
    assert!(!echoed, "a PIN was echoed: {screen}");
}

#[test]
fn a_removed_token_fails_its_requests_alone() {
    let hsm = SoftHsm::new();
    hsm.token("vmux-d", "1234");
    let hw = Hw::new(&[("SOFTHSM2_CONF", hsm.conf()), ("VMUX_PIN", "1234".into())]);
    let token_key = hw.add(&[
        "--store",
        "pkcs11",
        "--module",
        SOFTHSM,
        "--token",
        "vmux-d",
        "--comment",
        "hsm",
    ]);
    let (signer, agent) = hw.start("session_certs = false\n");
    login_with(&signer, &agent, &token_key);
    // Pull the token: its directory goes away while the signer runs.
    let gone = hw.tmp.path().join("pulled");
    std::fs::rename(hsm.tokens(), &gone).unwrap();
    std::fs::create_dir(hsm.tokens()).unwrap();
    let list = hw.vmux(&["signer", "keys", "list"]).stdout;
    assert!(
        list.contains("(pkcs11: token vmux-d, not present, "),
        "{list}"
    );
    let sshd = Sshd::start(&token_key);
    let h = background({
        let mut c = sshd.ssh_command(&agent.sock);
        c.arg("true");
        c
    });
    signer.wait_pending(1);
    signer.approve_next();
    assert!(!h.join().unwrap().success());
    assert!(
        signer.log().contains("\"decision\":\"internal\""),
        "{}",
        signer.log()
    );
    let soft = ok(&hw.shome, &["signer", "keys", "pub"])
        .lines()
        .next()
        .unwrap()
        .to_string();
    login_with(&signer, &agent, &soft);
    // Plugged back in: it signs again, no restart.
    std::fs::remove_dir(hsm.tokens()).unwrap();
    std::fs::rename(&gone, hsm.tokens()).unwrap();
    login_with(&signer, &agent, &token_key);
}

#[test]
fn tpm_keys_log_in_and_sign() {
    let tpm = Swtpm::start();
    let hw = Hw::new(&[("TPM2TOOLS_TCTI", tpm.tcti())]);
    let ecdsa = hw.add(&["--store", "tpm", "--comment", "tpm-ecdsa"]);
    let rsa = hw.add(&["--store", "tpm", "--type", "rsa", "--comment", "tpm-rsa"]);
    let blob = std::fs::read_dir(hw.shome.join("signer/keys"))
        .unwrap()
        .flatten()
        .find(|e| e.path().extension().is_some_and(|x| x == "tpm"))
        .unwrap()
        .path();
    let pem = std::fs::read_to_string(&blob).unwrap();
    assert!(pem.starts_with("-----BEGIN TSS2 PRIVATE KEY-----"), "{pem}");
    let list = ok(&hw.shome, &["signer", "keys", "list"]);
    assert_eq!(list.matches("(tpm)").count(), 2, "{list}");
    let (mut signer, mut agent) = hw.start("session_certs = false\n");
    let status = ok(&hw.ahome, &["agent", "status"]);
    assert_eq!(status.matches("[tpm]").count(), 2, "{status}");
    let pubs = ok(&hw.shome, &["signer", "keys", "pub"]);
    for k in [&ecdsa, &rsa] {
        let b64 = k.split_whitespace().nth(1).unwrap();
        assert!(listed(&agent).contains(b64) && pubs.contains(b64), "{k}");
        login_with(&signer, &agent, k);
    }
    sign_file(hw.tmp.path(), &signer, &agent, &ecdsa);
    sign_file(hw.tmp.path(), &signer, &agent, &rsa);
    rsa_hashes(&signer, &agent, &rsa);

    // The same blobs in front of another TPM: listed, but nothing signs.
    signer.stop();
    agent.stop();
    let other = Swtpm::start();
    let hw2 = Hw {
        env: vec![("TPM2TOOLS_TCTI".into(), other.tcti())],
        ..hw
    };
    let (signer, agent) = hw2.start("");
    let sshd = Sshd::start(&ecdsa);
    let h = background({
        let mut c = sshd.ssh_command(&agent.sock);
        c.arg("true");
        c
    });
    signer.wait_pending(1);
    signer.approve_next();
    assert!(!h.join().unwrap().success());
    let out = signer.daemon.as_ref().unwrap().output();
    assert!(out.contains("this TPM cannot load the key"), "{out}");
}

/// `tpm2_TOOL ARGS` against `tpm`, then flush what it left loaded but `keep` (swtpm has
/// no resource manager to do it, and holds three objects).
fn tpm2(tpm: &Swtpm, keep: &str, tool: &str, args: &[&str]) -> String {
    let tools = |tool: &str, args: &[&str]| {
        let out = run(
            Command::new(format!("tpm2_{tool}"))
                .args(args)
                .env("TPM2TOOLS_TCTI", tpm.tcti()),
            T,
        );
        assert!(out.success(), "tpm2_{tool} {args:?}: {out:?}");
        out.stdout
    };
    let out = tools(tool, args);
    tools("flushcontext", &["-l"]);
    tools("flushcontext", &["-s"]);
    for h in tools("getcap", &["handles-transient"]).lines() {
        let h = h.trim_start_matches("- ").trim();
        if !h.is_empty() && h != keep {
            tools("flushcontext", &[h]);
        }
    }
    out
}

/// The TCG storage key (ECC P-256, AES-128-CFB, noDA, unique = two 32-byte zero
/// coordinates: go-tpm's ECCSRKTemplate, which ssh-tpm-agent uses), made with a raw
/// TPM2_CreatePrimary through `tpm2_send`, independently of vmux's code. tpm2-tools
/// 5.4 cannot make it: its `-u` file reader keeps x and drops y. Returns the handle.
fn tcg_srk(tpm: &Swtpm) -> String {
    let mut public = vec![];
    for v in [0x23u16, 0x0b] {
        public.extend(v.to_be_bytes()); // ECC, SHA-256 names
    }
    public.extend(0x0003_0472u32.to_be_bytes()); // fixedTPM|fixedParent|sensitiveDataOrigin|userWithAuth|noDA|restricted|decrypt
    for v in [0u16, 6, 128, 0x43, 0x10, 3, 0x10, 32] {
        public.extend(v.to_be_bytes()); // no policy, AES-128-CFB, no scheme, P-256, no KDF
    }
    public.extend([0; 32]);
    public.extend(32u16.to_be_bytes());
    public.extend([0; 32]);
    let mut params = vec![0, 4, 0, 0, 0, 0]; // empty TPM2B_SENSITIVE_CREATE
    params.extend((public.len() as u16).to_be_bytes());
    params.extend(public);
    params.extend([0, 0, 0, 0, 0, 0]); // no outsideInfo, no PCRs
    let mut body = 0x131u32.to_be_bytes().to_vec(); // TPM2_CC_CreatePrimary
    body.extend(0x4000_0001u32.to_be_bytes()); // the owner hierarchy
    body.extend(9u32.to_be_bytes());
    body.extend(0x4000_0009u32.to_be_bytes()); // password session, empty password
    body.extend([0, 0, 0, 0, 0]);
    body.extend(params);
    let mut cmd = 0x8002u16.to_be_bytes().to_vec();
    cmd.extend(((body.len() + 6) as u32).to_be_bytes());
    cmd.extend(body);
    let mut child = Command::new("tpm2_send")
        .env("TPM2TOOLS_TCTI", tpm.tcti())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child.stdin.take().unwrap().write_all(&cmd).unwrap();
    let out = child.wait_with_output().unwrap();
    let r = out.stdout;
    assert!(
        out.status.success() && r.len() > 14 && r[6..10] == [0, 0, 0, 0],
        "CreatePrimary: {r:02x?}"
    );
    format!("0x{:08x}", u32::from_be_bytes([r[10], r[11], r[12], r[13]]))
}

#[test]
fn tpm_keys_move_between_vmux_and_tpm2_tools() {
    let tpm = Swtpm::start();
    let hw = Hw::new(&[("TPM2TOOLS_TCTI", tpm.tcti()), ("VMUX_PIN", "2468".into())]);
    let d = hw.tmp.path().join("tpm2-tools");
    std::fs::create_dir_all(&d).unwrap();
    let f = |name: &str| d.join(name).display().to_string();
    let srk = tcg_srk(&tpm);

    // tpm2-tools -> vmux: a key with a PIN, encoded as a TSS2 PRIVATE KEY, imported.
    // (tpm2_encodeobject 5.4 writes emptyAuth FALSE unless -p: right for a PIN key.)
    tpm2(
        &tpm,
        &srk,
        "create",
        &[
            "-C",
            &srk,
            "-G",
            "ecc256:ecdsa-sha256",
            "-p",
            "2468",
            "-u",
            &f("tools.pub"),
            "-r",
            &f("tools.priv"),
        ],
    );
    tpm2(
        &tpm,
        &srk,
        "encodeobject",
        &[
            "-C",
            &srk,
            "-u",
            &f("tools.pub"),
            "-r",
            &f("tools.priv"),
            "-o",
            &f("id_tools.tpm"),
        ],
    );
    let out = hw.vmux(&["signer", "keys", "import", &f("id_tools.tpm")]);
    assert!(out.success(), "{out:?}");
    let from_tools = out.stdout.trim().to_string();
    assert!(from_tools.starts_with("ecdsa-sha2-nistp256 "), "{out:?}");
    let list = ok(&hw.shome, &["signer", "keys", "list"]);
    assert_eq!(list.matches("(tpm)").count(), 1, "{list}");

    // vmux -> tpm2-tools: the public and private parts of vmux's file load under
    // tpm2-tools' storage key (the key-file spec's: an empty `unique`) and sign there.
    tpm2(
        &tpm,
        "",
        "createprimary",
        &[
            "-C",
            "o",
            "-G",
            "ecc256:aes128cfb",
            "-a",
            "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|noda|restricted|decrypt",
            "-c",
            &f("spec-srk.ctx"),
        ],
    );
    let srk = f("spec-srk.ctx");
    let made = hw.add(&["--store", "tpm", "--comment", "made-by-vmux"]);
    let (_, key) = common::hw::tpm_key_file(&hw.shome.join("signer/keys"), "made-by-vmux");
    // The comment lives in the .pub: tpm2-openssl refuses the optional description.
    assert_eq!(key.description, None);
    std::fs::write(d.join("vmux.pub"), &key.public).unwrap();
    std::fs::write(d.join("vmux.priv"), &key.private).unwrap();
    std::fs::write(d.join("msg"), "signed by tpm2-tools\n").unwrap();
    tpm2(
        &tpm,
        &srk,
        "load",
        &[
            "-C",
            &srk,
            "-u",
            &f("vmux.pub"),
            "-r",
            &f("vmux.priv"),
            "-c",
            &f("vmux.ctx"),
        ],
    );
    tpm2(
        &tpm,
        &srk,
        "sign",
        &[
            "-c",
            &f("vmux.ctx"),
            "-g",
            "sha256",
            "-o",
            &f("sig"),
            &f("msg"),
        ],
    );
    tpm2(
        &tpm,
        &srk,
        "verifysignature",
        &[
            "-c",
            &f("vmux.ctx"),
            "-g",
            "sha256",
            "-m",
            &f("msg"),
            "-s",
            &f("sig"),
        ],
    );

    // Both log in through vmux, the imported one with its PIN.
    let (signer, agent) = hw.start("session_certs = false\n");
    login_with(&signer, &agent, &from_tools);
    login_with(&signer, &agent, &made);
}

#[test]
fn a_tpm_that_goes_away_fails_its_requests_alone() {
    let mut tpm = Swtpm::start();
    let hw = Hw::new(&[("TPM2TOOLS_TCTI", tpm.tcti())]);
    let key = hw.add(&["--store", "tpm", "--comment", "tpm-gone"]);
    let (signer, agent) = hw.start("session_certs = false\n");
    login_with(&signer, &agent, &key);
    // The TPM stops answering while the signer runs.
    tpm.stop();
    let sshd = Sshd::start(&key);
    let h = background({
        let mut c = sshd.ssh_command(&agent.sock);
        c.arg("true");
        c
    });
    signer.wait_pending(1);
    signer.approve_next();
    assert!(!h.join().unwrap().success());
    assert!(
        signer.log().contains("\"decision\":\"internal\""),
        "{}",
        signer.log()
    );
    let out = signer.daemon.as_ref().unwrap().output();
    assert!(
        out.contains("TPM key") && out.contains("cannot reach the TPM"),
        "{out}"
    );
    let soft = ok(&hw.shome, &["signer", "keys", "pub"])
        .lines()
        .next()
        .unwrap()
        .to_string();
    login_with(&signer, &agent, &soft);
    // Back (same TPM, same seeds): its keys sign again, no restart of the signer.
    tpm.restart();
    login_with(&signer, &agent, &key);
}

#[test]
fn a_tpm_pin_is_checked_by_the_tpm_and_its_lockout_respected() {
    let tpm = Swtpm::start();
    let hw = Hw::new(&[("TPM2TOOLS_TCTI", tpm.tcti()), ("VMUX_PIN", "2468".into())]);
    let key = hw.add(&["--store", "tpm", "--pin", "--comment", "tpm-pin"]);
    let pem = std::fs::read_dir(hw.shome.join("signer/keys"))
        .unwrap()
        .flatten()
        .find(|e| e.path().extension().is_some_and(|x| x == "tpm"))
        .unwrap()
        .path();
    assert!(std::fs::read_to_string(pem).unwrap().contains("BEGIN TSS2"));
    // The right PIN signs.
    {
        let (signer, agent) = hw.start("session_certs = false\n");
        login_with(&signer, &agent, &key);
    }
    let before = tpm.lockout_counter();
    // A wrong PIN: refused by the TPM, counted once, not retried.
    let hw = Hw {
        env: vec![
            ("TPM2TOOLS_TCTI".into(), tpm.tcti()),
            ("VMUX_PIN".into(), "1111".into()),
        ],
        ..hw
    };
    let (signer, agent) = hw.start("");
    for _ in 0..2 {
        let sshd = Sshd::start(&key);
        let h = background({
            let mut c = sshd.ssh_command(&agent.sock);
            c.arg("true");
            c
        });
        signer.wait_pending(1);
        signer.approve_next();
        assert!(!h.join().unwrap().success());
    }
    assert_eq!(
        signer.log().matches("presenceFailed").count(),
        2,
        "{}",
        signer.log()
    );
    assert_eq!(
        tpm.lockout_counter(),
        before + 1,
        "the TPM counted more than one guess"
    );
    let soft = ok(&hw.shome, &["signer", "keys", "pub"])
        .lines()
        .next()
        .unwrap()
        .to_string();
    login_with(&signer, &agent, &soft);
}

/// The signer's CA issues a session certificate that `ssh-keygen -L` reads and sshd
/// accepts through TrustedUserCAKeys.
fn ca_issues(hw: &Hw, ca_alg: &str) {
    let ca = ok(&hw.shome, &["signer", "ca", "pub"]);
    assert!(ca.starts_with(&format!("{ca_alg} ")), "{ca}");
    let (signer, agent) = hw.start("");
    let p = signer.wait_pending(1);
    assert_eq!(p[0]["kind"], "cert", "{p:?}");
    signer.approve_next();
    let deadline = std::time::Instant::now() + T;
    let cert = loop {
        let l = listed(&agent);
        if let Some(c) = l.lines().find(|l| l.ends_with("vmux-session-cert")) {
            break c.to_string();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no certificate: {l}\n{}",
            signer.daemon.as_ref().unwrap().output()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let f = hw.tmp.path().join("cert.pub");
    std::fs::write(&f, &cert).unwrap();
    let shown = run(Command::new("ssh-keygen").arg("-L").arg("-f").arg(&f), T);
    let ca_fp = run(
        Command::new("sh").args(["-c", &format!("echo '{ca}' | ssh-keygen -lf -")]),
        T,
    );
    let ca_fp = ca_fp.stdout.split_whitespace().nth(1).unwrap().to_string();
    assert!(
        shown.success()
            && shown.stdout.contains("Signing CA: ECDSA")
            && shown.stdout.contains(&ca_fp),
        "{shown:?} (CA {ca_fp})"
    );
    let sshd = Sshd::start_with(SshdOptions {
        authorized_keys: String::new(),
        trusted_user_ca_keys: Some(ca),
        extra_config: vec![],
    });
    let out = run(sshd.ssh_command(&agent.sock).arg("echo by-cert"), T);
    assert!(
        out.success() && out.stdout.contains("by-cert"),
        "{out:?}\n{}",
        sshd.log()
    );
}

#[test]
fn signer_init_in_the_tpm_puts_the_first_key_and_the_ca_there() {
    let tpm = Swtpm::start();
    let hw = Hw::init(&[("TPM2TOOLS_TCTI", tpm.tcti())], &["--store", "tpm"]);
    let list = ok(&hw.shome, &["signer", "keys", "list"]);
    assert!(
        list.lines().count() == 1 && list.contains("(tpm)"),
        "{list}"
    );
    for dir in ["signer/keys", "signer/ca"] {
        let names: Vec<String> = std::fs::read_dir(hw.shome.join(dir))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            names.iter().any(|n| n.ends_with(".tpm"))
                && names
                    .iter()
                    .all(|n| n.ends_with(".tpm") || n.ends_with(".pub")),
            "{dir}: {names:?}"
        );
    }
    // An RSA CA is refused: vmux checks every certificate it issues and carries no RSA
    // code (RSA lives only in hardware, for login keys).
    let out = hw.vmux(&[
        "signer", "ca", "init", "--store", "tpm", "--type", "rsa", "--force",
    ]);
    assert!(!out.success() && out.stderr.contains("ECDSA"), "{out:?}");
    ca_issues(&hw, "ecdsa-sha2-nistp256");
}

#[test]
fn a_ca_on_a_token_issues_certificates_sshd_accepts() {
    let hsm = SoftHsm::new();
    hsm.token("vmux-ca", "1234");
    let hw = Hw::new(&[("SOFTHSM2_CONF", hsm.conf()), ("VMUX_PIN", "1234".into())]);
    let out = hw.vmux(&[
        "signer",
        "ca",
        "init",
        "--force",
        "--store",
        "pkcs11",
        "--module",
        SOFTHSM,
        "--token",
        "vmux-ca",
        "--type",
        "ecdsa-p384",
    ]);
    assert!(out.success(), "{out:?}");
    ca_issues(&hw, "ecdsa-sha2-nistp384");
}

#[test]
fn stores_are_refused_with_a_clear_message_when_misused() {
    let tmp = tempfile::tempdir().unwrap();
    Signer::init(tmp.path(), "x");
    let out = try_vmux(tmp.path(), &["signer", "keys", "add", "--store", "pkcs11"]);
    assert!(
        !out.success() && out.stderr.contains("--module PATH and --token LABEL"),
        "{out:?}"
    );
    let out = try_vmux(
        tmp.path(),
        &[
            "signer",
            "keys",
            "add",
            "--store",
            "pkcs11",
            "--module",
            "/nonexistent.so",
            "--token",
            "t",
        ],
    );
    assert!(
        !out.success() && out.stderr.contains("/nonexistent.so"),
        "{out:?}"
    );
    let out = try_vmux(tmp.path(), &["signer", "ca", "init", "--store", "software"]);
    assert!(!out.success() && out.stderr.contains("--force"), "{out:?}");
}

/// `init --store tpm` said it kept the pairing and left a sealed identity at `ident`.
fn assert_sealed(out: &common::proc::Output, ident: &Path) -> String {
    assert!(
        out.success() && out.stdout.contains("pairings are kept"),
        "{out:?}"
    );
    let sealed = std::fs::read_to_string(ident).unwrap();
    assert!(
        sealed.starts_with("-----BEGIN TSS2 PRIVATE KEY-----"),
        "{sealed}"
    );
    sealed
}

#[test]
fn the_agent_identity_sealed_to_the_tpm_is_useless_elsewhere() {
    let tpm = Swtpm::start();
    let hw = Hw::new(&[]);
    let (signer, agent) = hw.start("session_certs = false\n");
    let mut agent = agent;
    agent.stop();
    let ident = hw.ahome.join("agent/identity");
    let before = std::fs::read_to_string(&ident).unwrap();
    let out = run(
        common::vmux::vmux(&hw.ahome)
            .args(["agent", "init", "--store", "tpm"])
            .env("TPM2TOOLS_TCTI", tpm.tcti()),
        T,
    );
    let sealed = assert_sealed(&out, &ident);
    assert!(!sealed.contains(before.trim()));
    // The same device, still paired: it signs.
    let tcti = tpm.tcti();
    let agent = Agent::start_env(None, &hw.ahome, &[], &[("TPM2TOOLS_TCTI", &tcti)]);
    agent.wait_connected();
    let soft = ok(&hw.shome, &["signer", "keys", "pub"])
        .lines()
        .next()
        .unwrap()
        .to_string();
    login_with(&signer, &agent, &soft);
    // The file copied to another machine (another TPM) opens nothing.
    let other = Swtpm::start();
    let copy = hw.tmp.path().join("thief");
    std::fs::create_dir_all(copy.join("agent")).unwrap();
    std::fs::copy(&ident, copy.join("agent/identity")).unwrap();
    let out = run(
        common::vmux::vmux(&copy)
            .args(["agent", "init", "--store", "file"])
            .env("TPM2TOOLS_TCTI", other.tcti()),
        T,
    );
    assert!(!out.success(), "{out:?}");
    assert!(out.stderr.contains("sealed by another TPM"), "{out:?}");
}

/// `vmux client init --store tpm` with the TPM named in `client/config.toml` only (no
/// TCTI in the environment, as for a client started from a desktop launcher).
#[test]
fn the_client_identity_sealed_to_the_tpm_named_in_its_config() {
    let tpm = Swtpm::start();
    let hw = Hw::new(&[]);
    let (signer, _agent) = hw.start("session_certs = false\n");
    let chome = hw.tmp.path().join("client-home");
    std::fs::create_dir_all(chome.join("client")).unwrap();
    std::fs::write(
        chome.join("client/config.toml"),
        format!("discovery = \"off\"\ntcti = \"{}\"\n", tpm.tcti()),
    )
    .unwrap();
    common::vmux::pair_in(None, &chome, &signer, &["client", "pair", &signer.addr]);
    let ident = chome.join("client/identity");
    let before = std::fs::read_to_string(&ident).unwrap();
    let seal = |store: &str| {
        let mut c = common::vmux::vmux(&chome);
        c.args(["client", "init", "--store", store])
            .env_remove("TPM2TOOLS_TCTI")
            .env_remove("TCTI");
        run(&mut c, T)
    };
    let out = seal("tpm");
    assert_sealed(&out, &ident);
    // Still the same paired device: a login through the signer, approved once.
    let key = ok(&hw.shome, &["signer", "keys", "pub"])
        .lines()
        .next()
        .unwrap()
        .to_string();
    let sshd = Sshd::start(&key);
    let h = background({
        let mut c = common::vmux::vmux_ssh(&chome, &sshd, &hw.tmp.path().join("known_hosts"));
        c.env_remove("TPM2TOOLS_TCTI").env_remove("TCTI").args([
            "-o",
            "StrictHostKeyChecking=accept-new",
            &format!("{}@127.0.0.1", sshd.user()),
            "echo sealed-client",
        ]);
        c
    });
    let p = signer.wait_pending(1);
    assert_eq!(p[0]["origin"], "client", "{p:?}");
    signer.approve_next();
    let out = h.join().unwrap();
    assert!(
        out.success() && out.stdout.contains("sealed-client"),
        "{out:?}"
    );
    // And back to a plain file, the same key as before sealing.
    let out = seal("file");
    assert!(out.success(), "{out:?}");
    assert_eq!(std::fs::read_to_string(&ident).unwrap(), before);
}

#[test]
fn broken_hardware_key_files_are_named_and_skipped() {
    let tpm = Swtpm::start();
    let hw = Hw::new(&[("TPM2TOOLS_TCTI", tpm.tcti())]);
    let keys = hw.shome.join("signer/keys");
    std::fs::write(
        keys.join("evil.tpm"),
        "-----BEGIN TSS2 PRIVATE KEY-----\nMAA=\n-----END TSS2 PRIVATE KEY-----\n",
    )
    .unwrap();
    std::fs::write(keys.join("junk.tpm"), [0xffu8; 300]).unwrap();
    std::fs::write(
        keys.join("evil.pkcs11"),
        r#"{"module":"/bin/sh","token":"x","id":"zz"}"#,
    )
    .unwrap();
    std::fs::write(keys.join("deep.pkcs11"), "[".repeat(100_000)).unwrap();
    // A TPM key dropped in under another name is named for what it is.
    std::fs::write(
        keys.join("id_ecdsa"),
        "-----BEGIN TSS2 PRIVATE KEY-----\nMAA=\n-----END TSS2 PRIVATE KEY-----\n",
    )
    .unwrap();
    let (signer, agent) = hw.start("session_certs = false\n");
    let out = signer.daemon.as_ref().unwrap().output();
    assert!(
        out.contains("id_ecdsa") && out.contains("vmux signer keys import"),
        "{out}"
    );
    for f in ["evil.tpm", "junk.tpm", "evil.pkcs11", "deep.pkcs11"] {
        assert!(
            out.contains(&format!("skipped {}", keys.join(f).display())),
            "{f}: {out}"
        );
    }
    let soft = ok(&hw.shome, &["signer", "keys", "pub"])
        .lines()
        .next()
        .unwrap()
        .to_string();
    login_with(&signer, &agent, &soft);
}
