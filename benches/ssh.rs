//! `vmux ssh host true` next to `ssh host true` with OpenSSH's `ssh-agent` holding a key
//! of the same type, alternating in one run against one real sshd on loopback.
//!
//! `cargo bench --bench ssh`
//!
//! The signer runs in this process (software keystore, link on 127.0.0.1) with the
//! benchmark's own approver, so the figure is the machinery (process start, key
//! exchange, the signer round trip, the session) without a person's reaction time.
//! Environment: `VMUX_BENCH_SSH_N` logins per client (default 30).

#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;

use anyhow::{bail, Context as _};
use common::sshd::Sshd;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use vmux_signer::keystore::software::{self, SoftwareKeystore};
use vmux_signer::state::SignerConfig;
use vmux_signer::{Signer, SignerHome};

fn main() {
    if let Err(e) = run() {
        eprintln!("bench ssh: {e:#}");
        std::process::exit(1);
    }
}

fn quiet(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd.stdin(Stdio::null()).output()?;
    if !out.status.success() {
        bail!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

fn login(cmd: &mut Command) -> anyhow::Result<f64> {
    let t = Instant::now();
    let out = cmd.stdin(Stdio::null()).output()?;
    let ms = t.elapsed().as_secs_f64() * 1e3;
    if !out.status.success() {
        bail!(
            "{:?} failed: {}",
            cmd.get_program(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(ms)
}

fn p50(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn run() -> anyhow::Result<()> {
    let n: usize = std::env::var("VMUX_BENCH_SSH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let tmp = tempfile::Builder::new()
        .prefix("vmux-bench-ssh")
        .tempdir()?;
    let home = tmp.path().join("home");
    let ref_sock = tmp.path().join("ref.sock");
    let kh = tmp.path().join("known_hosts");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let vmux_key = rt.block_on(async {
        let shome = SignerHome::new(&home);
        shome.save_config(&SignerConfig {
            name: "bench".into(),
            ..Default::default()
        })?;
        vmux_proto::Identity::load_or_create(&shome.identity())?;
        let public = software::generate(
            &shome.keys(),
            software::parse_algorithm("ed25519")?,
            "bench",
            None,
        )?;
        let ks = SoftwareKeystore::open(&shome.keys(), None)?;
        let signer = Signer::open_with_ca(shome, Box::new(ks), None)?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        tokio::spawn(signer.clone().serve(listener));
        // BENCHMARK-ONLY AUTO-APPROVER (see benches/sign.rs): measures the machinery,
        // not a person. The product has no such path.
        let s = signer.clone();
        tokio::spawn(async move {
            loop {
                if let Some(p) = s.queue.next(Duration::from_secs(3600), true).await {
                    if p.signer_code.is_some() {
                        // A pairing's last step is typed on the agent's side.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                    let _ = match p.code.as_deref() {
                        Some(code) => vmux_signer::decide::pair_by_code(&s, code, None).await,
                        None => vmux_signer::decide::approve(&s, &p.id, &p.digest, None).await,
                    };
                }
            }
        });
        let chome = vmux_agent::AgentHome::client(&home);
        std::fs::create_dir_all(&chome.dir)?;
        std::fs::write(chome.config(), "discovery = \"off\"\n")?;
        let identity = vmux_proto::Identity::load_or_create(&chome.identity())?;
        vmux_agent::pair::pair(
            &chome,
            &identity,
            "bench-client",
            &addr,
            Duration::from_secs(10),
            |_| {},
            bench_signer_code(&signer),
        )
        .await?;
        anyhow::Ok(public.to_openssh()?)
    })?;

    let ref_key = tmp.path().join("ref_ed25519");
    quiet(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&ref_key),
    )?;
    let mut agent = Command::new("ssh-agent")
        .args(["-D", "-a"])
        .arg(&ref_sock)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("ssh-agent")?;
    for _ in 0..100 {
        if ref_sock.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    quiet(
        Command::new("ssh-add")
            .env("SSH_AUTH_SOCK", &ref_sock)
            .arg(&ref_key),
    )?;
    let ref_pub = std::fs::read_to_string(ref_key.with_extension("pub"))?;
    let sshd = Sshd::start(&format!("{vmux_key}\n{ref_pub}"));
    std::fs::write(&kh, format!("{}\n", sshd.known_hosts_line()))?;
    let dest = format!("{}@127.0.0.1", sshd.user());
    let port = sshd.port().to_string();
    let khopt = format!("UserKnownHostsFile={}", kh.display());

    let vmux = |h: &Path| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_vmux"));
        c.env("VMUX_HOME", h)
            .env_remove("SSH_AUTH_SOCK")
            .args(["ssh", "-F", "none", "-p", &port, "-o", &khopt, "-o"])
            .args(["StrictHostKeyChecking=yes", &dest, "true"]);
        c
    };
    let openssh = || {
        let mut c = Command::new("ssh");
        c.env("SSH_AUTH_SOCK", &ref_sock)
            .args(["-F", "none", "-p", &port, "-o", &khopt, "-o"])
            .args(["StrictHostKeyChecking=yes", "-o", "BatchMode=yes"])
            .args(["-o", "IdentitiesOnly=no", &dest, "true"]);
        c
    };
    // Warm both paths (page cache, sshd's first fork) before timing.
    login(&mut vmux(&home))?;
    login(&mut openssh())?;
    let (mut v, mut o) = (vec![], vec![]);
    for _ in 0..n {
        v.push(login(&mut vmux(&home))?);
        o.push(login(&mut openssh())?);
    }
    let (vp, op) = (p50(&mut v), p50(&mut o));
    let vmean = v.iter().sum::<f64>() / n as f64;
    let omean = o.iter().sum::<f64>() / n as f64;
    println!("vmux ssh vs ssh + ssh-agent: `… host true`, ed25519, {n} logins each, alternating");
    println!("  vmux ssh: p50 {vp:.1} ms, mean {vmean:.1} ms (signer in this process, benchmark approver)");
    println!("  ssh:      p50 {op:.1} ms, mean {omean:.1} ms");
    println!(
        "RESULT ssh-login vmux_p50_ms={vp:.1} openssh_p50_ms={op:.1} ratio={:.2}",
        vp / op
    );
    let _ = agent.kill();
    let _ = agent.wait();
    Ok(())
}

/// BENCHMARK-ONLY: the signer's code of the pairing in progress, read from the
/// in-process signer's queue (a person types it on the workstation).
fn bench_signer_code(
    signer: &std::sync::Arc<vmux_signer::Signer>,
) -> impl FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<String>> + Send>> {
    let s = signer.clone();
    move || {
        Box::pin(async move {
            loop {
                if let Some(c) = s.queue.pending().iter().find_map(|p| p.signer_code.clone()) {
                    return Some(c);
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        })
    }
}
