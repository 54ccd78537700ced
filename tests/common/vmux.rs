//! Driving the real `vmux` binary: a signer and an agent under temporary VMUX_HOMEs,
//! approvals through `vmux signer approve/deny`, as a person would.

use super::proc::{run, Daemon, Output};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

pub const T: Duration = Duration::from_secs(30);

/// The signer's pairing attempts per address per minute (crates/signer/src/guard.rs).
pub const PAIRINGS_PER_MINUTE_PER_ADDR: usize = 3;

pub fn vmux(home: &Path) -> Command {
    vmux_in(None, home)
}

/// `vmux` under `home`, inside a network namespace when one is given.
pub fn vmux_in(ns: Option<&super::netns::Netns>, home: &Path) -> Command {
    let bin = env!("CARGO_BIN_EXE_vmux");
    let mut c = match ns {
        Some(ns) => ns.command(bin),
        None => Command::new(bin),
    };
    c.env("VMUX_HOME", home)
        .env("VMUX_LOG", "info")
        .env_remove("VMUX_PASSPHRASE")
        .env_remove("SSH_AUTH_SOCK");
    c
}

/// `vmux ssh` under `home` to `sshd` on loopback, checking host keys against
/// `known_hosts` only (no ssh_config); the caller adds options and the destination.
pub fn vmux_ssh(home: &Path, sshd: &super::sshd::Sshd, known_hosts: &Path) -> Command {
    let mut c = vmux(home);
    c.args([
        "ssh",
        "-F",
        "none",
        "-p",
        &sshd.port().to_string(),
        "-o",
        &format!("UserKnownHostsFile={}", known_hosts.display()),
    ]);
    c
}

/// Run `vmux ARGS` under `home` and require success.
pub fn ok(home: &Path, args: &[&str]) -> String {
    let out = run(vmux(home).args(args), T);
    assert!(out.success(), "vmux {args:?} failed: {out:?}");
    out.stdout
}

pub fn try_vmux(home: &Path, args: &[&str]) -> Output {
    run(vmux(home).args(args), T)
}

pub struct Signer {
    pub home: PathBuf,
    pub daemon: Option<Daemon>,
    pub addr: String,
}

impl Signer {
    /// `vmux signer init` (no terminal) and return the authorized_keys lines. mDNS is
    /// turned off: tests that exercise discovery run in a network namespace of their own.
    pub fn init(home: &Path, name: &str) -> String {
        ok(home, &["signer", "init", "--name", name]);
        set_signer_config(home, "discovery", "\"off\"");
        ok(home, &["signer", "keys", "pub"])
    }

    pub fn start(home: &Path, listen: &str) -> Signer {
        Signer::start_in(None, home, listen)
    }

    pub fn start_in(ns: Option<&super::netns::Netns>, home: &Path, listen: &str) -> Signer {
        Signer::start_env(ns, home, listen, &[])
    }

    /// With extra environment (SOFTHSM2_CONF, TPM2TOOLS_TCTI, …).
    pub fn start_env(
        ns: Option<&super::netns::Netns>,
        home: &Path,
        listen: &str,
        env: &[(&str, &str)],
    ) -> Signer {
        let mut cmd = vmux_in(ns, home);
        cmd.args(["signer", "run", "--listen", listen]);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let d = Daemon::spawn_named("vmux signer", &mut cmd);
        let line = d
            .wait_for_line(|l| l.contains("listening on"), T)
            .unwrap_or_else(|| panic!("signer did not start: {}", d.output()));
        let addr = line.rsplit(' ').next().unwrap().to_string();
        Signer {
            home: home.to_path_buf(),
            daemon: Some(d),
            addr,
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            d.terminate(Duration::from_secs(5));
        }
    }

    pub fn pending(&self) -> Vec<serde_json::Value> {
        serde_json::from_str(&ok(&self.home, &["signer", "pending", "--json"])).unwrap()
    }

    /// Wait until `n` requests are pending (and the signer's control socket is up).
    pub fn wait_pending(&self, n: usize) -> Vec<serde_json::Value> {
        let deadline = std::time::Instant::now() + T;
        loop {
            let out = try_vmux(&self.home, &["signer", "pending", "--json"]);
            let p: Vec<serde_json::Value> = if out.success() {
                serde_json::from_str(&out.stdout).unwrap()
            } else {
                vec![]
            };
            if p.len() >= n {
                return p;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "never saw {n} pending requests"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The oldest pending request that is not a pairing, as `pending --json` shows it
    /// (waiting for one to arrive).
    pub fn next_request(&self) -> serde_json::Value {
        let deadline = std::time::Instant::now() + T;
        loop {
            let out = try_vmux(&self.home, &["signer", "pending", "--json"]);
            if out.success() {
                let p: Vec<serde_json::Value> = serde_json::from_str(&out.stdout).unwrap();
                if let Some(r) = p.into_iter().find(|p| p["kind"] != "pair") {
                    return r;
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no request arrived on the signer"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Approve the oldest request as a person would: read it, then approve that entry
    /// bound to the digest of what was read.
    pub fn approve_next(&self) -> String {
        self.decide_next("approve")
    }

    pub fn deny_next(&self) -> String {
        self.decide_next("deny")
    }

    fn decide_next(&self, verb: &str) -> String {
        let r = self.next_request();
        let (id, digest) = (r["id"].as_str().unwrap(), r["digest"].as_str().unwrap());
        ok(&self.home, &["signer", verb, id, "--digest", digest])
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.home.join("signer/decisions.log")).unwrap_or_default()
    }
}

/// `vmux agent pair` with the signer, approving on the signer after checking that both
/// sides show the same code.
pub fn pair(agent_home: &Path, signer: &Signer) {
    pair_in(None, agent_home, signer, &["agent", "pair", &signer.addr]);
}

/// The code a running `vmux agent pair` printed (`pairing code NNNNNN: …`).
pub fn pairing_code(pairing: &Daemon) -> String {
    let line = pairing
        .wait_for_line(|l| l.starts_with("pairing code "), T)
        .unwrap_or_else(|| panic!("no pairing code: {}", pairing.output()));
    line.split_whitespace()
        .nth(2)
        .unwrap()
        .trim_end_matches(':')
        .to_string()
}

/// Pairing with explicit `vmux` arguments (e.g. no address: found by mDNS).
pub fn pair_in(
    ns: Option<&super::netns::Netns>,
    agent_home: &Path,
    signer: &Signer,
    args: &[&str],
) {
    let mut p = Daemon::spawn_interactive("vmux agent pair", vmux_in(ns, agent_home).args(args));
    let code = pairing_code(&p);
    finish_pairing(&mut p, signer, &code);
    p.wait_for_line(|l| l.starts_with("paired with signer"), T)
        .unwrap_or_else(|| panic!("pairing did not finish: {}", p.output()));
}

/// The person at the signer: check that the pairing shows `code`, type it there, read
/// the signer's own code and type it on the pairing device (`pairing`).
pub fn finish_pairing(pairing: &mut Daemon, signer: &Signer, code: &str) {
    let deadline = std::time::Instant::now() + T;
    let entry = loop {
        let pending = signer.wait_pending(1);
        if let Some(p) = pending
            .iter()
            .find(|p| p["kind"] == "pair" && p["code"] == code)
        {
            break p.clone();
        }
        assert!(std::time::Instant::now() < deadline, "no pairing pending");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(entry["code"], code, "codes differ");
    // Pairings this person did not start are denied first: a typed code approves only
    // while one pairing waits.
    for other in signer.pending() {
        if other["kind"] == "pair" && other["code"].is_string() && other["code"] != code {
            let _ = try_vmux(
                &signer.home,
                &["signer", "deny", other["id"].as_str().unwrap()],
            );
        }
    }
    let out = ok(&signer.home, &["signer", "approve", "--code", code]);
    let signer_code = out
        .lines()
        .find_map(|l| l.strip_prefix("signer code "))
        .and_then(|l| l.split(':').next())
        .unwrap_or_else(|| panic!("no signer code: {out}"))
        .to_string();
    pairing
        .wait_for_line(|l| l.contains("type the code the signer shows"), T)
        .unwrap_or_else(|| {
            panic!(
                "the device did not ask for the signer's code: {}",
                pairing.output()
            )
        });
    pairing.send_line(&signer_code);
}

pub struct Agent {
    pub home: PathBuf,
    pub daemon: Option<Daemon>,
    pub sock: PathBuf,
}

impl Agent {
    pub fn start(home: &Path) -> Agent {
        Agent::start_in(None, home, &[])
    }

    pub fn start_in(ns: Option<&super::netns::Netns>, home: &Path, extra: &[&str]) -> Agent {
        Agent::start_env(ns, home, extra, &[])
    }

    /// With extra environment (TPM2TOOLS_TCTI, …).
    pub fn start_env(
        ns: Option<&super::netns::Netns>,
        home: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Agent {
        let mut cmd = vmux_in(ns, home);
        cmd.args(["agent", "run"]).args(extra);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let d = Daemon::spawn_named("vmux agent", &mut cmd);
        d.wait_for_line(|l| l.contains("vmux agent listening on"), T)
            .unwrap_or_else(|| panic!("agent did not start: {}", d.output()));
        Agent {
            home: home.to_path_buf(),
            daemon: Some(d),
            sock: home.join("agent.sock"),
        }
    }

    /// Wait until the agent's link to its signer is up (status says connected).
    pub fn wait_connected(&self) {
        let deadline = std::time::Instant::now() + T;
        loop {
            let s: serde_json::Value =
                serde_json::from_str(&ok(&self.home, &["agent", "status", "--json"])).unwrap();
            if s["signers"]
                .as_array()
                .is_some_and(|a| a.iter().all(|x| x["connected"] == true))
            {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "agent never connected: {s}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            d.terminate(Duration::from_secs(5));
        }
    }

    pub fn ssh_add(&self, args: &[&str]) -> Output {
        run(
            Command::new("ssh-add")
                .args(args)
                .env("SSH_AUTH_SOCK", &self.sock),
            T,
        )
    }
}

/// A paired signer + agent, both running, under one temporary directory.
pub struct Setup {
    pub tmp: tempfile::TempDir,
    pub signer: Signer,
    pub agent: Agent,
    pub pubkey: String,
}

/// Set a top-level key of the signer's config.toml (before any table).
pub fn set_signer_config(home: &Path, key: &str, value: &str) {
    let path = home.join("signer/config.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with(&format!("{key} =")))
        .collect();
    std::fs::write(&path, format!("{key} = {value}\n{}\n", kept.join("\n"))).unwrap();
}

/// Write the agent's config.toml before it first runs (mDNS off unless it says).
pub fn agent_config(ahome: &Path, toml: &str) {
    let toml = if toml.contains("discovery") {
        toml.to_string()
    } else {
        format!("discovery = \"off\"\n{toml}")
    };
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(ahome.join("agent"))
        .unwrap();
    std::fs::write(ahome.join("agent/config.toml"), toml).unwrap();
}

impl Setup {
    /// Per-signature approval only (no session certificate requests in the queue).
    pub fn new() -> Setup {
        Setup::with_agent_config("session_certs = false\n")
    }

    pub fn with_agent_config(config: &str) -> Setup {
        Setup::with_env(config, &[])
    }

    /// Both daemons with extra environment (VMUX_LOG, …).
    pub fn with_env(config: &str, env: &[(&str, &str)]) -> Setup {
        let tmp = tempfile::tempdir().unwrap();
        let (shome, ahome) = (
            tmp.path().join("signer-home"),
            tmp.path().join("agent-home"),
        );
        agent_config(&ahome, config);
        let pubkey = Signer::init(&shome, "test-signer");
        let signer = Signer::start_env(None, &shome, "127.0.0.1:0", env);
        pair(&ahome, &signer);
        let agent = Agent::start_env(None, &ahome, &[], env);
        agent.wait_connected();
        Setup {
            tmp,
            signer,
            agent,
            pubkey,
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// Write the signer's public key to a file (for `ssh-keygen -Y sign -f`).
    pub fn pubkey_file(&self) -> PathBuf {
        let p = self.path("signer.pub");
        std::fs::write(&p, &self.pubkey).unwrap();
        p
    }
}

/// Start `cmd` in a thread and return its handle (for a request that waits for approval).
pub fn background(mut cmd: Command) -> std::thread::JoinHandle<Output> {
    std::thread::spawn(move || run(&mut cmd, Duration::from_secs(90)))
}

/// `ssh-keygen -Y sign -n NAMESPACE -f PUBKEY MSG` through the agent at `sock`.
pub fn sshsig(sock: &Path, pubkey: &Path, msg: &Path, namespace: &str) -> Command {
    let mut c = Command::new("ssh-keygen");
    c.args(["-Y", "sign", "-n", namespace, "-f"])
        .arg(pubkey)
        .arg(msg)
        .env("SSH_AUTH_SOCK", sock);
    c
}
