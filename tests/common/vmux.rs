//! Driving the real `vmux` binary: a signer and an agent under temporary VMUX_HOMEs,
//! approvals through `vmux signer approve/deny`, as a person would.

use super::proc::{run, Daemon, Output};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

pub const T: Duration = Duration::from_secs(30);

pub fn vmux(home: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vmux"));
    c.env("VMUX_HOME", home)
        .env("VMUX_LOG", "info")
        .env_remove("VMUX_PASSPHRASE")
        .env_remove("SSH_AUTH_SOCK");
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
    /// `vmux signer init` (no terminal) and return the authorized_keys lines.
    pub fn init(home: &Path, name: &str) -> String {
        ok(home, &["signer", "init", "--name", name]);
        ok(home, &["signer", "keys", "pub"])
    }

    pub fn start(home: &Path, listen: &str) -> Signer {
        let d = Daemon::spawn_named(
            "vmux signer",
            vmux(home).args(["signer", "run", "--listen", listen]),
        );
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

    /// Wait until `n` requests are pending.
    pub fn wait_pending(&self, n: usize) -> Vec<serde_json::Value> {
        let deadline = std::time::Instant::now() + T;
        loop {
            let p = self.pending();
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

    pub fn approve_next(&self) -> String {
        ok(&self.home, &["signer", "approve", "--next", "--wait", "30"])
    }

    pub fn deny_next(&self) -> String {
        ok(&self.home, &["signer", "deny", "--next", "--wait", "30"])
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.home.join("signer/decisions.log")).unwrap_or_default()
    }
}

/// `vmux agent pair` with the signer, approving on the signer after checking that both
/// sides show the same code.
pub fn pair(agent_home: &Path, signer: &Signer) {
    let p = Daemon::spawn_named(
        "vmux agent pair",
        vmux(agent_home).args(["agent", "pair", &signer.addr]),
    );
    let line = p
        .wait_for_line(|l| l.starts_with("pairing code "), T)
        .unwrap_or_else(|| panic!("no pairing code: {}", p.output()));
    let code = line
        .split_whitespace()
        .nth(2)
        .unwrap()
        .trim_end_matches(':')
        .to_string();
    let pending = signer.wait_pending(1);
    assert_eq!(pending[0]["kind"], "pair");
    assert_eq!(pending[0]["code"], code.as_str(), "codes differ");
    ok(
        &signer.home,
        &["signer", "approve", pending[0]["id"].as_str().unwrap()],
    );
    p.wait_for_line(|l| l.starts_with("paired with signer"), T)
        .unwrap_or_else(|| panic!("pairing did not finish: {}", p.output()));
}

pub struct Agent {
    pub home: PathBuf,
    pub daemon: Option<Daemon>,
    pub sock: PathBuf,
}

impl Agent {
    pub fn start(home: &Path) -> Agent {
        let d = Daemon::spawn_named("vmux agent", vmux(home).args(["agent", "run"]));
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

/// Write the agent's config.toml before it first runs.
pub fn agent_config(ahome: &Path, toml: &str) {
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
        let tmp = tempfile::tempdir().unwrap();
        let (shome, ahome) = (
            tmp.path().join("signer-home"),
            tmp.path().join("agent-home"),
        );
        agent_config(&ahome, config);
        let pubkey = Signer::init(&shome, "test-signer");
        let signer = Signer::start(&shome, "127.0.0.1:0");
        pair(&ahome, &signer);
        let agent = Agent::start(&ahome);
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
