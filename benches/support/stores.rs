//! Per-store signing cost: one P-256 signature by the keystore alone, in software, on a
//! SoftHSM2 token and in swtpm, beside OpenSSH's `ssh-agent` signing with a P-256 key
//! over its socket, alternating in the same run. swtpm is a software model of a TPM:
//! its figure is vmux's overhead around the TPM, not a real TPM's speed (those take
//! tens of milliseconds per ECDSA signature).

use anyhow::{bail, Context as _};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Instant;
use vmux_signer::keystore::{pkcs11, software, Keystore};

const SOFTHSM: &str = "/usr/lib/softhsm/libsofthsm2.so";

fn p50(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

struct Guard(std::process::Child);
impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port_pair() -> anyhow::Result<u16> {
    for _ in 0..50 {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        let p = l.local_addr()?.port();
        drop(l);
        if p < 65535 && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return Ok(p);
        }
    }
    bail!("no free port pair for swtpm")
}

/// The stores to compare: (name, keystore, public blob).
type Store = (&'static str, Box<dyn Keystore>, Vec<u8>);

fn stores(tmp: &Path) -> anyhow::Result<(Vec<Store>, Vec<Guard>)> {
    let mut out: Vec<Store> = vec![];
    #[allow(unused_mut)] // only the TPM needs a process kept alive
    let mut guards = vec![];
    let d = tmp.join("store-software");
    software::generate(&d, software::parse_algorithm("ecdsa")?, "bench", None)?;
    let ks = software::SoftwareKeystore::open(&d, None)?;
    let blob = ks.keys()[0].public_key.clone();
    out.push(("software", Box::new(ks), blob));

    if !Path::new(SOFTHSM).exists() {
        bail!("{SOFTHSM} missing: apt-get install softhsm2 (or VMUX_BENCH_STORES=off)");
    }
    let hsm = tmp.join("softhsm");
    std::fs::create_dir_all(hsm.join("tokens"))?;
    std::fs::write(
        hsm.join("conf"),
        format!("directories.tokendir = {}\n", hsm.join("tokens").display()),
    )?;
    // SoftHSM reads its config when the module initialises, in this process.
    std::env::set_var("SOFTHSM2_CONF", hsm.join("conf"));
    let st = Command::new("softhsm2-util")
        .args([
            "--init-token",
            "--free",
            "--label",
            "bench",
            "--pin",
            "1234",
            "--so-pin",
            "5678",
        ])
        .stdout(Stdio::null())
        .status()
        .context("softhsm2-util")?;
    anyhow::ensure!(st.success(), "softhsm2-util --init-token failed");
    let d = tmp.join("store-pkcs11");
    std::fs::create_dir_all(&d)?;
    pkcs11::generate(
        &d,
        Path::new(SOFTHSM),
        "bench",
        "1234",
        pkcs11::Kind::P256,
        "bench",
    )?;
    let pins: pkcs11::PinSource = Arc::new(|_| Some(zeroize::Zeroizing::new("1234".into())));
    let ks = pkcs11::Pkcs11Keystore::open(&d, pins.clone());
    let blob = ks.keys()[0].public_key.clone();
    out.push(("pkcs11", Box::new(ks), blob));

    #[cfg(feature = "tpm")]
    {
        use vmux_signer::keystore::{tpm, Open};
        let port = free_port_pair()?;
        let state = tmp.join("swtpm");
        std::fs::create_dir_all(&state)?;
        guards.push(Guard(
            Command::new("swtpm")
                .args(["socket", "--tpm2", "--server"])
                .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"))
                .arg("--ctrl")
                .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1))
                .arg("--tpmstate")
                .arg(format!("dir={}", state.display()))
                .args(["--flags", "not-need-init,startup-clear"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("swtpm (apt-get install swtpm)")?,
        ));
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            anyhow::ensure!(Instant::now() < deadline, "swtpm did not start");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let tcti = format!("swtpm:host=127.0.0.1,port={port}");
        let d = tmp.join("store-tpm");
        std::fs::create_dir_all(&d)?;
        tpm::generate(&d, &tcti, tpm::Kind::P256, None, "bench")?;
        let ks = tpm::TpmKeystore::open(
            &d,
            &Open {
                passphrase: None,
                pins,
                tcti: Some(tcti),
            },
        )?;
        let blob = ks.keys()[0].public_key.clone();
        out.push(("swtpm", Box::new(ks), blob));
    }
    #[cfg(not(feature = "tpm"))]
    {
        let _ = free_port_pair;
        println!("  (swtpm: not measured, the bench was built without --features tpm)");
    }
    Ok((out, guards))
}

/// Time `n` signatures per store and per ssh-agent round, alternating, `rounds` times.
pub fn run(
    tmp: &Path,
    ref_sign: &mut dyn FnMut() -> anyhow::Result<()>,
    data: &[u8],
    n: usize,
    rounds: usize,
) -> anyhow::Result<()> {
    if std::env::var("VMUX_BENCH_STORES").as_deref() == Ok("off") {
        return Ok(());
    }
    let (stores, _guards) = stores(tmp)?;
    for (name, ks, blob) in &stores {
        ks.sign(blob, data, 0)
            .map_err(|e| anyhow::anyhow!("{name}: first signature failed: {e}"))?;
    }
    let mut samples: Vec<Vec<f64>> = vec![vec![]; stores.len()];
    let mut reference = vec![];
    for _ in 0..rounds {
        for (i, (_, ks, blob)) in stores.iter().enumerate() {
            for _ in 0..n {
                let t = Instant::now();
                ks.sign(blob, data, 0)
                    .map_err(|e| anyhow::anyhow!("store sign: {e}"))?;
                samples[i].push(t.elapsed().as_secs_f64() * 1e6);
            }
        }
        for _ in 0..n {
            let t = Instant::now();
            ref_sign()?;
            reference.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    let r = p50(reference);
    println!();
    println!("per-store signing cost, ECDSA P-256, the keystore alone ({rounds} rounds x {n}), beside ssh-agent over its socket:");
    println!("  ssh-agent (socket round trip included): p50 {r:.0} µs");
    for ((name, _, _), s) in stores.iter().zip(samples) {
        let p = p50(s);
        println!("  {name:<9} p50 {p:>8.0} µs   x{:.2} of ssh-agent", p / r);
        println!(
            "RESULT store={name} p50_us={p:.0} ssh_agent_p50_us={r:.0} ratio={:.2}",
            p / r
        );
    }
    println!("  (swtpm is a software TPM model: its figure is vmux's overhead around the TPM, not a real TPM's speed)");
    Ok(())
}
