//! TPM key files move between vmux and the tools Debian packages: keys vmux makes load
//! and sign in tpm2-openssl and tpm2-tools, and keys those tools make import into vmux
//! and log in through it (swtpm, real sshd, approved as a person would). Keys under
//! go-tpm's storage key (ssh-tpm-agent's; not packaged in Debian) are covered by
//! `tests/hardware.rs`, which makes that storage key with a raw TPM2_CreatePrimary.

mod common;

use common::hw::Swtpm;
use common::proc::{run, Output};
use common::sshd::Sshd;
use common::vmux::{agent_config, background, pair, set_signer_config, Agent, Signer, T};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The storage key of the key-file spec and tpm2-openssl, made by tpm2-tools: ECC
/// P-256, AES-128-CFB, noDA, an empty `unique`.
const SRK_ATTRS: &str =
    "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|noda|restricted|decrypt";

struct Env {
    tpm: Swtpm,
    dir: PathBuf,
}

impl Env {
    fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.current_dir(&self.dir)
            .env("TPM2TOOLS_TCTI", self.tpm.tcti())
            .env("TPM2OPENSSL_TCTI", self.tpm.tcti());
        c
    }

    /// Run and require success; then flush what the tool left loaded (swtpm has no
    /// resource manager and holds three objects).
    fn ok(&self, program: &str, args: &[&str]) -> Output {
        let out = run(self.cmd(program).args(args), T);
        assert!(out.success(), "{program} {args:?}: {out:?}");
        let flush = run(self.cmd("tpm2_flushcontext").arg("-t"), T);
        assert!(flush.success(), "{flush:?}");
        out
    }

    /// `openssl COMMAND ARGS` with the TPM provider preferred (options before operands).
    fn openssl(&self, args: &[&str]) -> Output {
        let mut a = vec![args[0]];
        a.extend([
            "-provider",
            "tpm2",
            "-provider",
            "default",
            "-propquery",
            "?provider=tpm2",
        ]);
        a.extend(&args[1..]);
        self.ok("openssl", &a)
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    fn vmux(&self, home: &Path, args: &[&str]) -> Output {
        let out = run(
            common::vmux::vmux(home)
                .args(args)
                .env("TPM2TOOLS_TCTI", self.tpm.tcti())
                .env("VMUX_PIN", "2468"),
            T,
        );
        assert!(out.success(), "vmux {args:?}: {out:?}");
        out
    }
}

/// An ssh public key line as a PEM public key, for `openssl dgst -verify`.
fn pem_public(env: &Env, line: &str, name: &str) -> String {
    let f = env.path(&format!("{name}.ssh.pub"));
    std::fs::write(&f, format!("{line}\n")).unwrap();
    let out = run(
        Command::new("ssh-keygen").args(["-e", "-m", "PKCS8", "-f", &f]),
        T,
    );
    assert!(out.success(), "{out:?}");
    let pem = env.path(&format!("{name}.pem.pub"));
    std::fs::write(&pem, out.stdout).unwrap();
    pem
}

fn login(signer: &Signer, agent: &Agent, key: &str) {
    let sshd = Sshd::start(key);
    let h = background({
        let mut c = sshd.ssh_command(&agent.sock);
        c.arg("echo logged-in");
        c
    });
    signer.wait_pending(1);
    signer.approve_next();
    let out = h.join().unwrap();
    assert!(
        out.success() && out.stdout.contains("logged-in"),
        "{key}: {out:?}\n{}",
        signer
            .daemon
            .as_ref()
            .map(|d| d.output())
            .unwrap_or_default()
    );
}

#[test]
fn tpm_keys_move_between_vmux_tpm2_openssl_and_tpm2_tools() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tools");
    std::fs::create_dir_all(&dir).unwrap();
    let env = Env {
        tpm: Swtpm::start(),
        dir,
    };
    let shome = tmp.path().join("signer-home");
    env.vmux(&shome, &["signer", "init", "--name", "interop"]);
    set_signer_config(&shome, "discovery", "\"off\"");
    std::fs::write(env.dir.join("msg"), "signed in the TPM\n").unwrap();

    // vmux -> tpm2-openssl: the file as vmux wrote it signs there.
    let made = env
        .vmux(
            &shome,
            &[
                "signer",
                "keys",
                "add",
                "--store",
                "tpm",
                "--comment",
                "made-by-vmux",
            ],
        )
        .stdout
        .lines()
        .last()
        .unwrap()
        .to_string();
    let (file, key) = common::hw::tpm_key_file(&shome.join("signer/keys"), "made-by-vmux");
    assert_eq!(
        key.description, None,
        "tpm2-openssl refuses the description field"
    );
    let f = file.display().to_string();
    env.openssl(&[
        "dgst",
        "-sha256",
        "-sign",
        &f,
        "-out",
        &env.path("vmux.sig"),
        &env.path("msg"),
    ]);
    let pem = pem_public(&env, &made, "vmux");
    env.ok(
        "openssl",
        &[
            "dgst",
            "-sha256",
            "-verify",
            &pem,
            "-signature",
            &env.path("vmux.sig"),
            &env.path("msg"),
        ],
    );

    // vmux -> tpm2-tools: loaded under tpm2-tools' own storage key, it signs there.
    env.ok(
        "tpm2_createprimary",
        &[
            "-C",
            "o",
            "-G",
            "ecc256:aes128cfb",
            "-a",
            SRK_ATTRS,
            "-c",
            &env.path("srk.ctx"),
        ],
    );
    std::fs::write(env.dir.join("vmux.pub"), &key.public).unwrap();
    std::fs::write(env.dir.join("vmux.priv"), &key.private).unwrap();
    env.ok(
        "tpm2_load",
        &[
            "-C",
            &env.path("srk.ctx"),
            "-u",
            &env.path("vmux.pub"),
            "-r",
            &env.path("vmux.priv"),
            "-c",
            &env.path("vmux.ctx"),
        ],
    );
    env.ok(
        "tpm2_sign",
        &[
            "-c",
            &env.path("vmux.ctx"),
            "-g",
            "sha256",
            "-o",
            &env.path("tools.sig"),
            &env.path("msg"),
        ],
    );
    env.ok(
        "tpm2_verifysignature",
        &[
            "-c",
            &env.path("vmux.ctx"),
            "-g",
            "sha256",
            "-m",
            &env.path("msg"),
            "-s",
            &env.path("tools.sig"),
        ],
    );

    // tpm2-openssl -> vmux: an ECDSA and an RSA key, imported.
    let mut imported = vec![];
    for (name, args) in [
        (
            "openssl-ec",
            vec!["-algorithm", "EC", "-pkeyopt", "group:P-256"],
        ),
        (
            "openssl-rsa",
            vec!["-algorithm", "RSA", "-pkeyopt", "bits:2048"],
        ),
    ] {
        let out = env.path(&format!("{name}.pem"));
        let mut a = vec!["genpkey"];
        a.extend(args);
        a.extend(["-out", &out]);
        env.openssl(&a);
        let line = env
            .vmux(&shome, &["signer", "keys", "import", &out])
            .stdout
            .trim()
            .to_string();
        assert!(
            line.starts_with("ecdsa-sha2-nistp256 ") || line.starts_with("ssh-rsa "),
            "{line}"
        );
        imported.push(line);
    }

    // tpm2-tools -> vmux: a key with a PIN under the same storage key, encoded as a
    // TSS2 PRIVATE KEY (emptyAuth FALSE: the PIN is VMUX_PIN here).
    env.ok(
        "tpm2_create",
        &[
            "-C",
            &env.path("srk.ctx"),
            "-G",
            "ecc256:ecdsa-sha256",
            "-p",
            "2468",
            "-u",
            &env.path("t.pub"),
            "-r",
            &env.path("t.priv"),
        ],
    );
    env.ok(
        "tpm2_encodeobject",
        &[
            "-C",
            &env.path("srk.ctx"),
            "-u",
            &env.path("t.pub"),
            "-r",
            &env.path("t.priv"),
            "-o",
            &env.path("t.pem"),
        ],
    );
    let from_tools = env
        .vmux(&shome, &["signer", "keys", "import", &env.path("t.pem")])
        .stdout
        .trim()
        .to_string();
    imported.push(from_tools);
    let list = env.vmux(&shome, &["signer", "keys", "list"]).stdout;
    assert_eq!(list.matches("(tpm)").count(), 4, "{list}");

    // Every one of them logs in through vmux.
    let tcti = env.tpm.tcti();
    let signer = Signer::start_env(
        None,
        &shome,
        "127.0.0.1:0",
        &[("TPM2TOOLS_TCTI", tcti.as_str()), ("VMUX_PIN", "2468")],
    );
    let ahome = tmp.path().join("agent-home");
    agent_config(&ahome, "session_certs = false\n");
    pair(&ahome, &signer);
    let agent = Agent::start(&ahome);
    agent.wait_connected();
    login(&signer, &agent, &made);
    for key in &imported {
        login(&signer, &agent, key);
    }
}
