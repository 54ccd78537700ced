//! What reach adds to a remote signature: p50 latency of one SIGN_REQUEST through the
//! vmux agent to the signer and back, over loopback TCP, over the iroh relay (two
//! symmetric NATs) and over a hole-punched path (two port-preserving NATs), in one run.
//!
//! `cargo bench --bench reach` (as root: it builds network namespaces; see
//! `tests/common/internet.rs`). `VMUX_BENCH_N` signatures per path (default 200).
//!
//! Each path: a signer (software Ed25519 key) and an agent in this process, each on a
//! runtime whose threads live in its own namespace, the relay in a third; the two are
//! paired by pinning each other's keys (pairing is not what is measured), and the
//! client is a blocking agent-protocol client on the agent's socket. Logging is off.

#[path = "../tests/common/internet.rs"]
mod internet;

use anyhow::{bail, Context as _};
use internet::{Internet, Nat, Ns};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use vmux_proto::reach::{Mode, ReachConfig};

const SIGN_REQUEST: u8 = 13;
const SIGN_RESPONSE: u8 = 14;

fn put_string(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s);
}

fn sign_once(sock: &Path, blob: &[u8]) -> anyhow::Result<Duration> {
    let mut data = vec![];
    put_string(&mut data, &vmux_proto::random_bytes::<32>());
    data.push(50);
    put_string(&mut data, b"bench");
    put_string(&mut data, b"ssh-connection");
    put_string(&mut data, b"publickey");
    data.push(1);
    put_string(&mut data, b"ssh-ed25519");
    put_string(&mut data, blob);
    let mut m = vec![SIGN_REQUEST];
    put_string(&mut m, blob);
    put_string(&mut m, &data);
    m.extend_from_slice(&0u32.to_be_bytes());
    let mut s = UnixStream::connect(sock)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let started = Instant::now();
    let mut framed = (m.len() as u32).to_be_bytes().to_vec();
    framed.extend_from_slice(&m);
    s.write_all(&framed)?;
    let mut len = [0u8; 4];
    s.read_exact(&mut len)?;
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut body)?;
    let took = started.elapsed();
    if body.first() != Some(&SIGN_RESPONSE) {
        bail!("the agent did not sign (answer {:?})", body.first());
    }
    Ok(took)
}

/// One signer + agent pair on `signer_ns` / `agent_ns` (None: this namespace), the
/// signer listening on `listen`, the agent dialling `dial`.
struct Pair {
    sock: PathBuf,
    blob: Vec<u8>,
    _runtimes: Vec<tokio::runtime::Runtime>,
}

fn runtime_in(ns: Option<&Ns>) -> tokio::runtime::Runtime {
    let build = || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    };
    match ns {
        Some(ns) => ns.spawn(build).join().unwrap(),
        None => build(),
    }
}

fn pair(
    dir: &Path,
    signer_ns: Option<&Ns>,
    agent_ns: Option<&Ns>,
    listen: &str,
    dial: &str,
    reach: Option<ReachConfig>,
) -> anyhow::Result<Pair> {
    use vmux_signer::keystore::software::{self, SoftwareKeystore};
    let (svmux, avmux) = (dir.join("s"), dir.join("a"));
    let shome = vmux_signer::SignerHome::new(&svmux);
    shome.save_config(&vmux_signer::state::SignerConfig {
        name: "bench".into(),
        ..Default::default()
    })?;
    let sid = vmux_proto::Identity::load_or_create(&shome.identity())?;
    software::generate(
        &shome.keys(),
        software::parse_algorithm("ed25519")?,
        "bench",
        None,
    )?;
    let ahome = vmux_agent::AgentHome::new(&avmux);
    vmux_proto::store::ensure_dir(&ahome.dir, 0o700)?;
    std::fs::write(
        ahome.config(),
        "discovery = \"off\"\nsession_certs = false\nfeedback = \"off\"\ntray = \"off\"\n",
    )?;
    let aid = vmux_proto::Identity::load_or_create(&ahome.identity())?;
    if let Some(r) = &reach {
        r.save(&shome.dir)?;
        r.save(&ahome.dir)?;
    }
    // Pinned both ways, as a pairing would leave them.
    shome.save_paired(&[vmux_signer::state::PairedDevice {
        id: aid.device_id(),
        name: "bench-agent".into(),
        public_key: aid.public().to_vec(),
        paired_at: 0,
        last_seen: 0,
    }])?;
    ahome.save_signers(&[vmux_agent::state::PairedSigner {
        id: sid.device_id(),
        name: "bench".into(),
        public_key: sid.public().to_vec(),
        address: dial.to_string(),
        paired_at: 0,
        wake_url: None,
        wake_token: None,
        reach: reach.as_ref().map(|r| vmux_proto::reach::info(&sid, r)),
    }])?;

    let srt = runtime_in(signer_ns);
    let listen = listen.to_string();
    let blob = srt.block_on(async move {
        let ks = SoftwareKeystore::open(&shome.keys(), None)?;
        let signer = vmux_signer::Signer::open(shome, Box::new(ks))?;
        let listener = tokio::net::TcpListener::bind(&listen).await?;
        tokio::spawn(signer.clone().serve(listener));
        // BENCHMARK-ONLY AUTO-APPROVER (as in benches/sign.rs): it exists only in this
        // file, to time the path around the decision without a person's reaction time.
        // The product has no such path and must never get one.
        let s = signer.clone();
        tokio::spawn(async move {
            loop {
                if let Some(p) = s.queue.next(Duration::from_secs(3600), true).await {
                    let _ = vmux_signer::decide::approve(&s, &p.id, &p.digest, None).await;
                }
            }
        });
        let blob = signer.keystore.listed()[0].public_key.clone();
        anyhow::Ok(blob)
    })?;
    let art = runtime_in(agent_ns);
    let sock = avmux.join("agent.sock");
    let s2 = sock.clone();
    art.block_on(async move {
        let agent = vmux_agent::Agent::open(ahome)?;
        let listener = vmux_agent::socket::bind(&s2).await?;
        agent.spawn_keepers();
        tokio::spawn(vmux_agent::socket::serve(agent, listener));
        anyhow::Ok(())
    })?;
    Ok(Pair {
        sock,
        blob,
        _runtimes: vec![srt, art],
    })
}

fn measure(name: &str, p: &Pair, n: usize, settle: impl Fn() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    // Warm up: the first signatures bring the link up.
    while sign_once(&p.sock, &p.blob).is_err() || !settle() {
        if Instant::now() > deadline {
            bail!("{name}: the path never settled");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut t = vec![];
    for _ in 0..n {
        t.push(sign_once(&p.sock, &p.blob).with_context(|| name.to_string())?);
    }
    t.sort();
    let us = |d: Duration| d.as_micros();
    println!(
        "  {name:<22} p50 {:>7} µs   p90 {:>7} µs   p99 {:>7} µs   ({n} signatures)",
        us(t[n / 2]),
        us(t[n * 9 / 10]),
        us(t[n * 99 / 100])
    );
    println!("RESULT path={name:?} p50_us={} n={n}", us(t[n / 2]));
    Ok(())
}

fn status_path(dir: &Path) -> Option<String> {
    let s: vmux_agent::status::Status =
        vmux_proto::store::read_json(&dir.join("a/agent/status.json"))
            .ok()
            .flatten()?;
    s.signers.first()?.path.clone()
}

fn main() -> anyhow::Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    let n: usize = std::env::var("VMUX_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    println!("vmux reach benchmark: one remote Ed25519 signature, approval scripted");
    let tmp = tempfile::tempdir()?;

    let dir = tmp.path().join("tcp");
    let p = pair(&dir, None, None, "127.0.0.1:17227", "127.0.0.1:17227", None)?;
    measure("loopback TCP", &p, n, || status_path(&dir).is_some())?;
    drop(p);

    for (nat, name, want) in [
        (Nat::Symmetric, "relay", "via relay"),
        (Nat::PortPreserving, "hole-punched", "direct (hole-punched)"),
    ] {
        let dir = tmp.path().join(name);
        std::fs::create_dir_all(&dir)?;
        let net = Internet::new(nat, &dir);
        let reach = ReachConfig {
            mode: Mode::Anywhere,
            relays: vec![net.relay_url()],
            relay_ca: Some(net.ca.clone()),
        };
        let p = pair(
            &dir,
            Some(&net.home),
            Some(&net.cafe),
            "0.0.0.0:7227",
            // The LAN address the agent once knew: unreachable from the cafe.
            "10.9.0.2:7227",
            Some(reach),
        )?;
        measure(name, &p, n, || {
            status_path(&dir).is_some_and(|s| s.starts_with(want))
        })?;
        drop(p);
    }
    Ok(())
}
