//! The remote signing path, measured next to OpenSSH's own `ssh-agent`.
//!
//! `cargo bench --bench sign`
//!
//! In one process: a vmux signer (software keystore, link server on 127.0.0.1) and a
//! vmux agent (Unix socket) paired with it, exactly as `vmux up` wires them. Next to
//! it, as a child process, OpenSSH's `ssh-agent` holding keys of the same types. The
//! same blocking client (std `UnixStream`, the agent protocol) signs an SSH
//! userauth-shaped blob through both, alternating rounds (vmux, openssh, vmux, …) with
//! 1 client and with 8 concurrent clients, and prints p50/p99 latency, throughput and
//! the ratios, then one `RESULT …` line per configuration.
//!
//! Environment: `VMUX_BENCH_N` requests per client per round (default 400),
//! `VMUX_BENCH_ROUNDS` rounds per agent (default 5), `VMUX_BENCH_CLIENTS` comma
//! separated client counts (default `1,8`), `VMUX_BENCH_KEYS` (default `ecdsa,ed25519,cert`:
//! `cert` is the session-certificate path, signed in the agent with no link at all,
//! compared with ssh-agent holding a P-256 key).
//!
//! No tracing subscriber is installed: logging is off, as it would distort the numbers.
//! The signer's decision log and the agent's request log are still written on every
//! request (append, no fsync): they are part of the real path.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

#[path = "support/stores.rs"]
mod stores;
use vmux_signer::keystore::software::{self, SoftwareKeystore};
use vmux_signer::keystore::Keystore;
use vmux_signer::state::SignerConfig;
use vmux_signer::{Signer, SignerHome};

const REQUEST_IDENTITIES: u8 = 11;
const IDENTITIES_ANSWER: u8 = 12;
const SIGN_REQUEST: u8 = 13;
const SIGN_RESPONSE: u8 = 14;

// ---------------------------------------------------------------------------------
// A minimal blocking ssh-agent client.
// ---------------------------------------------------------------------------------

struct Client {
    s: UnixStream,
    buf: Vec<u8>,
}

impl Client {
    fn connect(path: &Path) -> anyhow::Result<Client> {
        let s = UnixStream::connect(path).with_context(|| format!("connect {}", path.display()))?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        s.set_write_timeout(Some(Duration::from_secs(30)))?;
        Ok(Client {
            s,
            buf: Vec::with_capacity(1024),
        })
    }

    /// One request (type ‖ body), one answer (type, body).
    fn call(&mut self, msg: &[u8]) -> std::io::Result<(u8, Vec<u8>)> {
        self.buf.clear();
        self.buf
            .extend_from_slice(&(msg.len() as u32).to_be_bytes());
        self.buf.extend_from_slice(msg);
        self.s.write_all(&self.buf)?;
        let mut len = [0u8; 4];
        self.s.read_exact(&mut len)?;
        let n = u32::from_be_bytes(len) as usize;
        if n == 0 || n > 256 * 1024 {
            return Err(std::io::Error::other(format!("bad answer length {n}")));
        }
        let mut body = vec![0u8; n];
        self.s.read_exact(&mut body)?;
        let kind = body[0];
        body.remove(0);
        Ok((kind, body))
    }

    fn identities(&mut self) -> anyhow::Result<Vec<Vec<u8>>> {
        let (kind, body) = self.call(&[REQUEST_IDENTITIES])?;
        if kind != IDENTITIES_ANSWER {
            bail!("REQUEST_IDENTITIES answered with type {kind}");
        }
        let mut r = body.as_slice();
        let n = take_u32(&mut r)?;
        let mut out = vec![];
        for _ in 0..n {
            let blob = take_string(&mut r)?.to_vec();
            let _comment = take_string(&mut r)?;
            out.push(blob);
        }
        Ok(out)
    }

    /// A SIGN_REQUEST; `Ok(Some(signature blob))`, `Ok(None)` when the agent failed it.
    fn sign(&mut self, req: &[u8]) -> std::io::Result<Option<Vec<u8>>> {
        let (kind, body) = self.call(req)?;
        if kind != SIGN_RESPONSE {
            return Ok(None);
        }
        let mut r = body.as_slice();
        Ok(take_string(&mut r).ok().map(|s| s.to_vec()))
    }
}

fn take_u32(r: &mut &[u8]) -> anyhow::Result<u32> {
    if r.len() < 4 {
        bail!("short agent message");
    }
    let v = u32::from_be_bytes(r[..4].try_into().unwrap());
    *r = &r[4..];
    Ok(v)
}

fn take_string<'a>(r: &mut &'a [u8]) -> anyhow::Result<&'a [u8]> {
    let n = take_u32(r)? as usize;
    if r.len() < n {
        bail!("short agent message");
    }
    let (s, rest) = r.split_at(n);
    *r = rest;
    Ok(s)
}

fn put_string(v: &mut Vec<u8>, s: &[u8]) {
    v.extend_from_slice(&(s.len() as u32).to_be_bytes());
    v.extend_from_slice(s);
}

/// What `ssh` asks an agent to sign: an SSH_MSG_USERAUTH_REQUEST (RFC 4252 §7).
fn userauth_data(alg: &str, blob: &[u8]) -> Vec<u8> {
    let mut d = vec![];
    put_string(&mut d, &[0x5a; 32]); // session identifier (an exchange hash)
    d.push(50); // SSH_MSG_USERAUTH_REQUEST
    put_string(&mut d, b"git");
    put_string(&mut d, b"ssh-connection");
    put_string(&mut d, b"publickey");
    d.push(1); // TRUE: a signature follows
    put_string(&mut d, alg.as_bytes());
    put_string(&mut d, blob);
    d
}

fn sign_request(blob: &[u8], data: &[u8]) -> Vec<u8> {
    let mut m = vec![SIGN_REQUEST];
    put_string(&mut m, blob);
    put_string(&mut m, data);
    m.extend_from_slice(&0u32.to_be_bytes()); // flags
    m
}

fn blob_alg(blob: &[u8]) -> Option<String> {
    let mut r = blob;
    take_string(&mut r)
        .ok()
        .map(|s| String::from_utf8_lossy(s).into_owned())
}

fn verify(blob: &[u8], data: &[u8], sig: &[u8]) -> anyhow::Result<()> {
    use signature::Verifier;
    use ssh_key::encoding::Decode;
    let key = match ssh_key::Certificate::from_bytes(blob) {
        Ok(cert) => cert.public_key().clone(),
        Err(_) => ssh_key::public::KeyData::decode(&mut &*blob).context("key blob")?,
    };
    let sig = ssh_key::Signature::decode(&mut &*sig).context("signature blob")?;
    key.verify(data, &sig)
        .context("signature does not verify")?;
    Ok(())
}

// ---------------------------------------------------------------------------------
// Key types and agents.
// ---------------------------------------------------------------------------------

#[derive(Clone, Copy)]
struct KeyType {
    name: &'static str,     // for vmux's parse_algorithm and the RESULT line
    ssh_name: &'static str, // the blob's algorithm string in vmux's list
    ref_name: &'static str, // the key ssh-agent signs with for comparison
    keygen: &'static [&'static str],
    /// The session-certificate path: signed inside the vmux agent by the ephemeral
    /// P-256 key the signer's CA certified (no link, no signer).
    cert: bool,
}

const KEY_TYPES: &[KeyType] = &[
    KeyType {
        name: "ecdsa",
        ssh_name: "ecdsa-sha2-nistp256",
        ref_name: "ecdsa-sha2-nistp256",
        keygen: &["-t", "ecdsa", "-b", "256"],
        cert: false,
    },
    KeyType {
        name: "ed25519",
        ssh_name: "ssh-ed25519",
        ref_name: "ssh-ed25519",
        keygen: &["-t", "ed25519"],
        cert: false,
    },
    KeyType {
        name: "cert",
        ssh_name: "ecdsa-sha2-nistp256-cert-v01@openssh.com",
        ref_name: "ecdsa-sha2-nistp256",
        keygen: &["-t", "ecdsa", "-b", "256"],
        cert: true,
    },
];

/// One agent socket and the request the client sends it.
struct Target {
    label: &'static str,
    sock: PathBuf,
    request: Arc<Vec<u8>>,
    /// Where the serving side's CPU time is read: `None` for this process (vmux runs
    /// in-process), `Some(pid)` for ssh-agent.
    server_pid: Option<u32>,
}

/// CPU time of this whole process (all threads), in µs.
fn self_cpu_us() -> f64 {
    // SAFETY: getrusage fills a plain struct we own.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 * 1e6 + t.tv_usec as f64;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// CPU time of a (single-threaded) process, in µs, from the scheduler's ns counter.
fn pid_cpu_us(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .map(|ns| ns / 1000.0)
        .unwrap_or(f64::NAN)
}

/// Kills `ssh-agent` whatever way the bench ends.
struct ChildGuard(Child);
impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run_quiet(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("{cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

fn wait_for_socket(path: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if UnixStream::connect(path).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("nothing listens on {} after 10s", path.display())
}

// ---------------------------------------------------------------------------------
// Measurement.
// ---------------------------------------------------------------------------------

#[derive(Default)]
struct Stats {
    lat_us: Vec<f64>,
    requests: u64,
    failures: u64,
    wall: Duration,
    round_p50: Vec<f64>,
    /// CPU time spent during the rounds: by this process, and by the server process
    /// when it is another one.
    self_cpu_us: f64,
    server_cpu_us: f64,
}

impl Stats {
    fn p(&self, q: f64) -> f64 {
        percentile(&self.lat_us, q)
    }
    fn rps(&self) -> f64 {
        self.requests as f64 / self.wall.as_secs_f64()
    }
}

/// Server CPU µs per request for (vmux, openssh). ssh-agent's is read from its process;
/// vmux serves in this process, so its share is this process's CPU per request in vmux
/// rounds minus the same in openssh rounds (which is the client threads alone).
fn server_cpu(v: &Stats, o: &Stats) -> (f64, f64) {
    let client = o.self_cpu_us / o.requests as f64;
    (
        v.self_cpu_us / v.requests as f64 - client,
        o.server_cpu_us / o.requests as f64,
    )
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn percentile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    // Nearest rank.
    let rank = ((q / 100.0) * s.len() as f64).ceil().max(1.0) as usize;
    s[rank.min(s.len()) - 1]
}

/// One round: `clients` threads, each on its own connection, `n` requests each, all
/// released together. Returns latencies, failures and the round's wall time.
fn round(t: &Target, clients: usize, n: usize, stats: Option<&mut Stats>) -> anyhow::Result<()> {
    let barrier = Arc::new(Barrier::new(clients + 1));
    // Connect everyone first: a failed connect must not leave threads at the barrier.
    let conns = (0..clients)
        .map(|_| Client::connect(&t.sock))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut handles = vec![];
    for mut c in conns {
        let (barrier, req) = (barrier.clone(), t.request.clone());
        handles.push(std::thread::spawn(move || {
            let mut lat = Vec::with_capacity(n);
            let mut failures = 0u64;
            let mut io_error = None;
            barrier.wait();
            for _ in 0..n {
                let t0 = Instant::now();
                match c.sign(&req) {
                    Ok(Some(_)) => lat.push(t0.elapsed().as_nanos() as f64 / 1000.0),
                    Ok(None) => failures += 1,
                    Err(e) => {
                        failures += 1;
                        io_error = Some(e.to_string());
                        break;
                    }
                }
            }
            (lat, failures, io_error, Instant::now())
        }));
    }
    let (cpu0, srv0) = (self_cpu_us(), t.server_pid.map(pid_cpu_us));
    barrier.wait();
    let start = Instant::now();
    let mut end = start;
    let mut all = vec![];
    let mut failures = 0;
    let mut errors = vec![];
    for h in handles {
        let (lat, f, e, done) = h.join().expect("client thread panicked");
        all.extend(lat);
        failures += f;
        errors.extend(e);
        end = end.max(done);
    }
    let (cpu1, srv1) = (self_cpu_us(), t.server_pid.map(pid_cpu_us));
    if let Some(s) = stats {
        s.self_cpu_us += cpu1 - cpu0;
        s.server_cpu_us += srv1.unwrap_or(0.0) - srv0.unwrap_or(0.0);
        s.round_p50.push(percentile(&all, 50.0));
        s.requests += all.len() as u64;
        s.lat_us.extend(all);
        s.failures += failures;
        s.wall += end - start;
    } else if failures > 0 {
        bail!(
            "{}: {failures} sign requests failed during warmup {errors:?}",
            t.label
        );
    }
    if !errors.is_empty() {
        bail!("{}: connection error: {}", t.label, errors[0]);
    }
    Ok(())
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .filter(|&v| v > 0)
        .unwrap_or(default)
}

// ---------------------------------------------------------------------------------
// Setup and run.
// ---------------------------------------------------------------------------------

fn main() {
    // `cargo bench` passes `--bench`; nothing else is understood.
    match run() {
        Ok(()) => {}
        Err(e) => {
            eprintln!("\nBENCH FAILED: {e:#}");
            std::process::exit(1);
        }
    }
}

fn run() -> anyhow::Result<()> {
    let began = Instant::now();
    // libtss2's own log lines would interleave with the report.
    if std::env::var_os("TSS2_LOG").is_none() {
        std::env::set_var("TSS2_LOG", "all+none");
    }
    let n = env_usize("VMUX_BENCH_N", 400);
    let rounds = env_usize("VMUX_BENCH_ROUNDS", 5);
    let clients_list: Vec<usize> = std::env::var("VMUX_BENCH_CLIENTS")
        .unwrap_or_else(|_| "1,8".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .filter(|&c| c > 0)
        .collect();
    let wanted_keys =
        std::env::var("VMUX_BENCH_KEYS").unwrap_or_else(|_| "ecdsa,ed25519,cert".into());
    let key_types: Vec<KeyType> = KEY_TYPES
        .iter()
        .copied()
        .filter(|k| wanted_keys.split(',').any(|w| w.trim() == k.name))
        .collect();

    let tmp = tempfile::Builder::new().prefix("vmux-bench").tempdir()?;
    // The agent socket's directory must be private (the agent refuses anything else).
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o700))?;
    }
    let home = tmp.path().join("home");
    let ping_home = tmp.path().join("ping-home");
    let vmux_sock = tmp.path().join("vmux.sock");
    let ref_sock = tmp.path().join("ref.sock");

    // --- OpenSSH reference agent ---------------------------------------------------
    let ssh_agent = ChildGuard(
        Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&ref_sock)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start ssh-agent (is OpenSSH installed?)")?,
    );
    let ssh_agent_pid = ssh_agent.0.id();
    wait_for_socket(&ref_sock)?;
    for k in &key_types {
        let file = tmp.path().join(format!("k_{}", k.name));
        run_quiet(
            Command::new("ssh-keygen")
                .args(["-q", "-N", "", "-C", "bench", "-f"])
                .arg(&file)
                .args(k.keygen),
        )?;
        run_quiet(
            Command::new("ssh-add")
                .env("SSH_AUTH_SOCK", &ref_sock)
                .arg(&file),
        )?;
    }

    // --- vmux signer + agent, wired as `vmux up` does --------------------------------
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let (signer, agent) = rt.block_on(async {
        let shome = SignerHome::new(&home);
        shome.save_config(&SignerConfig {
            name: "bench".into(),
            ..Default::default()
        })?;
        vmux_proto::Identity::load_or_create(&shome.identity())?;
        for k in key_types.iter().filter(|k| !k.cert) {
            software::generate(
                &shome.keys(),
                software::parse_algorithm(k.name)?,
                "bench",
                None,
            )?;
        }
        software::generate(
            &shome.ca(),
            software::parse_algorithm("ed25519")?,
            "bench-ca",
            None,
        )?;
        let ks = SoftwareKeystore::open(&shome.keys(), None)?;
        let ca = SoftwareKeystore::open(&shome.ca(), None)?;
        let signer = Signer::open_with_ca(shome, Box::new(ks), Some(Box::new(ca)))?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        tokio::spawn(signer.clone().serve(listener));

        // BENCHMARK-ONLY AUTO-APPROVER. It exists only in this file, to measure the
        // machinery around the decision (queue, link, keystore, logs) without a person's
        // reaction time. The product has no such path and must never get one: every
        // signature (and every pairing) waits for an explicit human decision. Do not
        // copy this into crates/ or src/.
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

        let ahome = vmux_agent::AgentHome::new(&home);
        let identity = vmux_proto::Identity::load_or_create(&ahome.identity())?;
        vmux_agent::pair::pair(
            &ahome,
            &identity,
            "bench-agent",
            &addr,
            Duration::from_secs(10),
            |_code| {},
            bench_signer_code(&signer),
        )
        .await
        .context("pairing the bench agent")?;
        // A second paired device, only for the breakdown's link ping: the signer keeps one
        // session per device, so pinging as the agent itself would supersede its link.
        let phome = vmux_agent::AgentHome::new(&ping_home);
        let pid = vmux_proto::Identity::load_or_create(&phome.identity())?;
        vmux_agent::pair::pair(
            &phome,
            &pid,
            "bench-ping",
            &addr,
            Duration::from_secs(10),
            |_code| {},
            bench_signer_code(&signer),
        )
        .await
        .context("pairing the bench ping device")?;

        let agent = vmux_agent::Agent::open(ahome)?;
        let listener = vmux_agent::socket::bind(&vmux_sock).await?;
        agent.write_status_at(&vmux_sock);
        agent.spawn_keepers();
        tokio::spawn(vmux_agent::socket::serve(agent.clone(), listener));
        anyhow::Ok((signer, agent))
    })?;

    // The keeper brings the link up and caches the signer's keys; wait for them.
    let want = key_types.len();
    let deadline = Instant::now() + Duration::from_secs(15);
    let vmux_blobs = loop {
        let blobs = Client::connect(&vmux_sock)?.identities()?;
        if blobs.len() >= want {
            break blobs;
        }
        if Instant::now() > deadline {
            bail!(
                "the vmux agent lists {} keys after 15s, wanted {want}",
                blobs.len()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let ref_blobs = Client::connect(&ref_sock)?.identities()?;

    // Nothing should run while nobody asks: a busy task would skew everything below.
    let (c0, w0) = (self_cpu_us(), Instant::now());
    std::thread::sleep(Duration::from_millis(500));
    let idle_pct = (self_cpu_us() - c0) / w0.elapsed().as_micros() as f64 * 100.0;

    println!(
        "vmux sign benchmark: remote signing path vs OpenSSH ssh-agent (same client, same run)"
    );
    println!(
        "  {} cores, {} requests/client/round, {} rounds/agent, clients {:?}, loopback TCP link, logging off",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        n,
        rounds,
        clients_list
    );
    if let Ok(o) = Command::new("ssh").arg("-V").output() {
        println!("  reference: {}", String::from_utf8_lossy(&o.stderr).trim());
    }
    println!(
        "  load average at start: {} (other work on the machine skews wall-clock numbers)",
        loadavg()
    );
    println!("  vmux signer+agent CPU while idle: {idle_pct:.1}% of one core");

    let mut results = vec![];
    let mut breakdowns = vec![];
    for k in &key_types {
        let pick = |blobs: &[Vec<u8>], who: &str| -> anyhow::Result<Vec<u8>> {
            blobs
                .iter()
                .find(|b| blob_alg(b).as_deref() == Some(k.ssh_name))
                .cloned()
                .with_context(|| format!("{who} has no {} key", k.ssh_name))
        };
        let vblob = pick(&vmux_blobs, "the vmux agent")?;
        let rblob = ref_blobs
            .iter()
            .find(|b| blob_alg(b).as_deref() == Some(k.ref_name))
            .cloned()
            .with_context(|| format!("ssh-agent has no {} key", k.ref_name))?;
        let vdata = userauth_data(k.ssh_name, &vblob);
        let rdata = userauth_data(k.ref_name, &rblob);

        // Both must produce signatures that verify before anything is timed.
        for (sock, blob, data, who) in [
            (&vmux_sock, &vblob, &vdata, "vmux"),
            (&ref_sock, &rblob, &rdata, "openssh"),
        ] {
            let sig = Client::connect(sock)?
                .sign(&sign_request(blob, data))?
                .with_context(|| format!("{who}: the first {} sign request failed", k.name))?;
            verify(blob, data, &sig).with_context(|| format!("{who} {}", k.name))?;
        }

        let targets = [
            Target {
                label: "vmux",
                sock: vmux_sock.clone(),
                request: Arc::new(sign_request(&vblob, &vdata)),
                server_pid: None,
            },
            Target {
                label: "openssh",
                sock: ref_sock.clone(),
                request: Arc::new(sign_request(&rblob, &rdata)),
                server_pid: Some(ssh_agent_pid),
            },
        ];

        for &clients in &clients_list {
            for t in &targets {
                round(t, clients, (n / 4).max(20), None)?;
            }
            let mut stats = [Stats::default(), Stats::default()];
            for _ in 0..rounds {
                for (t, s) in targets.iter().zip(stats.iter_mut()) {
                    round(t, clients, n, Some(s))?;
                }
            }
            for (t, s) in targets.iter().zip(&stats) {
                if s.failures > 0 {
                    bail!(
                        "{} {} clients={clients}: {} of {} sign requests FAILED",
                        t.label,
                        k.name,
                        s.failures,
                        s.failures + s.requests
                    );
                }
            }
            results.push((k.name, clients, stats, vdata.len()));
        }

        if k.cert {
            continue; // the breakdown is of the remote path
        }
        breakdowns.push(breakdown(
            &rt,
            &agent,
            &home,
            &ping_home,
            k,
            &vblob,
            &vdata,
            n.max(500),
        )?);
    }

    // --- Report ------------------------------------------------------------------
    println!();
    println!(
        "{:<8} {:>7}  {:<8} {:>9} {:>9} {:>9} {:>12}   per-round p50 µs",
        "key", "clients", "agent", "p50 µs", "p99 µs", "req/s", "srv cpu µs/r"
    );
    for (key, clients, stats, _) in &results {
        let (vcpu, ocpu) = server_cpu(&stats[0], &stats[1]);
        for ((label, s), cpu) in ["vmux", "openssh"].iter().zip(stats).zip([vcpu, ocpu]) {
            let per_round: Vec<String> = s.round_p50.iter().map(|p| format!("{p:.0}")).collect();
            println!(
                "{:<8} {:>7}  {:<8} {:>9.0} {:>9.0} {:>9.0} {:>12.0}   {}",
                key,
                clients,
                label,
                s.p(50.0),
                s.p(99.0),
                s.rps(),
                cpu,
                per_round.join(" ")
            );
        }
        let (v, o) = (&stats[0], &stats[1]);
        println!(
            "{:<8} {:>7}  added p50 {:+.0} µs (goal < 1000), p99 ×{:.1}, throughput vmux/openssh {:.3}, server CPU vmux/openssh {:.2}",
            "",
            "",
            v.p(50.0) - o.p(50.0),
            v.p(99.0) / o.p(99.0),
            v.rps() / o.rps(),
            vcpu / ocpu
        );
    }
    println!("(srv cpu = CPU time of the serving side per request: ssh-agent's process; for vmux, in-process signer+agent,\n this process's CPU in vmux rounds minus the client threads' cost measured in openssh rounds)");

    println!();
    println!(
        "breakdown, 1 client, vmux (p50 µs; each measured alone, {} samples):",
        n.max(500)
    );
    println!(
        "  {:<8} {:>10} {:>12} {:>14} {:>12}   rest of signer+agent path",
        "key", "keystore", "link ping", "Agent::sign", "via socket"
    );
    for b in &breakdowns {
        println!(
            "  {:<8} {:>10.1} {:>12.1} {:>14.1} {:>12.1}   {:.1}",
            b.key,
            b.keystore,
            b.ping,
            b.agent_sign,
            b.socket,
            b.agent_sign - b.ping - b.keystore
        );
    }
    println!(
        "  (keystore = SoftwareKeystore::sign alone; link ping = Ping/Pong over a fresh Noise link to the\n   signer; Agent::sign = in-process, no Unix socket; via socket = the full path from the client.)"
    );
    let (cfg, journal, fp, kh, durable) = pieces(&home, &vmux_blobs[0], n.max(500))?;
    println!(
        "  per-request pieces alone: signer config.toml read+parse {cfg:.1}, journal append {journal:.1} (x2: agent and signer logs),\n  key_fingerprint {fp:.1}; with a session binding (real ssh, not this client) also known_hosts lookup {kh:.1}\n  (200 entries, match on the last)\n  one durable journal round (fsync + anchor; by the flusher thread, off the request path, at most every 20 ms) {durable:.1}"
    );
    let (plain, bound, pins_parse) = signer_checks(&home, &vmux_blobs[0], n.max(500))?;
    println!(
        "  the signer's own checks (inspect: parse the data, compare claims, verify the binding, name the host\n  from 200 pins): login without a binding {plain:.1}, with an Ed25519 session binding {bound:.1};\n  re-reading a changed 200-pin file {pins_parse:.1} (cached between changes)"
    );

    println!();
    for (key, clients, stats, data_len) in &results {
        let (v, o) = (&stats[0], &stats[1]);
        let (vcpu, ocpu) = server_cpu(v, o);
        println!(
            "RESULT key={key} clients={clients} vmux_p50_us={:.0} vmux_p99_us={:.0} vmux_rps={:.0} ssh_p50_us={:.0} ssh_p99_us={:.0} ssh_rps={:.0} added_p50_us={:.0} rps_ratio={:.3} vmux_cpu_us={vcpu:.0} ssh_cpu_us={ocpu:.0} data_bytes={data_len}",
            v.p(50.0),
            v.p(99.0),
            v.rps(),
            o.p(50.0),
            o.p(99.0),
            o.rps(),
            v.p(50.0) - o.p(50.0),
            v.rps() / o.rps()
        );
    }

    // --- Per-store signing cost ----------------------------------------------------
    if let Some(rblob) = ref_blobs
        .iter()
        .find(|b| blob_alg(b).as_deref() == Some("ecdsa-sha2-nistp256"))
    {
        let rdata = userauth_data("ecdsa-sha2-nistp256", rblob);
        let request = sign_request(rblob, &rdata);
        let mut client = Client::connect(&ref_sock)?;
        let mut ref_sign = || {
            client
                .sign(&request)?
                .context("ssh-agent refused")
                .map(|_| ())
        };
        stores::run(
            tmp.path(),
            &mut ref_sign,
            &userauth_data("ecdsa-sha2-nistp256", &vmux_blobs[0]),
            (n / 8).max(25),
            rounds,
        )?;
    }

    // --- Teardown: runtime (signer, agent, approver), ssh-agent, tempdir -------------
    drop((signer, agent));
    rt.shutdown_timeout(Duration::from_secs(2));
    drop(ssh_agent);
    drop(tmp);
    println!(
        "done in {:.1}s (load average at end: {})",
        began.elapsed().as_secs_f64(),
        loadavg()
    );
    Ok(())
}

/// p50 in µs of `f` over `samples` calls.
fn p50_of(samples: usize, mut f: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    let mut lat = Vec::with_capacity(samples);
    for _ in 0..samples {
        let t = Instant::now();
        f()?;
        lat.push(t.elapsed().as_nanos() as f64 / 1000.0);
    }
    Ok(percentile(&lat, 50.0))
}

/// Small things the signing path does on every request, each timed alone.
fn pieces(home: &Path, blob: &[u8], samples: usize) -> anyhow::Result<(f64, f64, f64, f64, f64)> {
    let shome = SignerHome::new(home);
    let cfg = p50_of(samples, || {
        std::hint::black_box(shome.load_config()?);
        Ok(())
    })?;
    let mut j = vmux_proto::journal::Journal::open(&home.join("bench-scratch.log"))?;
    let record = serde_json::json!({"event": "sign", "requestId": uuid::Uuid::new_v4().to_string(),
        "deviceId": "x".repeat(20), "device": "bench-agent", "key": vmux_proto::identity::key_fingerprint(blob),
        "kind": "login", "requester": "ssh (4242) ← git ← zsh", "decision": "approved", "latencyMs": 1, "time": 1});
    let journal = p50_of(samples, || {
        let serde_json::Value::Object(m) = record.clone() else {
            unreachable!()
        };
        j.append(m)?;
        Ok(())
    })?;
    // One durable round of the flusher thread: fsync of the log, then the anchor
    // written atomically (temp file, fsync, rename). It runs off the request path, at
    // most every 20 ms, for all appends in between.
    j.sync();
    let scratch = std::fs::OpenOptions::new()
        .append(true)
        .open(home.join("bench-scratch.log"))?;
    let anchor = home.join("bench-scratch.log.anchor");
    let durable = p50_of(samples.min(300), || {
        use std::io::Write;
        (&scratch).write_all(b"{}\n")?;
        scratch.sync_data()?;
        vmux_proto::store::write_atomic(&anchor, br#"{"seq":1,"hash":"00"}"#, 0o600)?;
        Ok(())
    })?;
    let fp = p50_of(samples, || {
        std::hint::black_box(vmux_proto::identity::key_fingerprint(blob));
        Ok(())
    })?;
    Ok((
        cfg,
        journal,
        fp,
        known_hosts_lookup(home, samples)?,
        durable,
    ))
}

/// The agent's known_hosts name lookup, which runs on every sign request of a
/// connection with a session binding (real `ssh` sends session-bind@openssh.com; this
/// bench's client does not, so the rounds above do not include it): a 200-entry file,
/// the host key on its last line.
fn known_hosts_lookup(home: &Path, samples: usize) -> anyhow::Result<f64> {
    let mut rng = ssh_key::rand_core::UnwrapErr(ssh_key::getrandom::SysRng);
    let mut text = String::new();
    let mut last = vec![];
    for i in 0..200 {
        let k = ssh_key::PrivateKey::random(&mut rng, ssh_key::Algorithm::Ed25519)?;
        let pk = k.public_key();
        text += &format!(
            "host{i}.example.com,10.0.{}.{} {}\n",
            i / 256,
            i % 256,
            pk.to_openssh()?
        );
        last = pk.to_bytes()?;
    }
    let file = home.join("bench_known_hosts");
    std::fs::write(&file, text)?;
    let files = [file];
    let found = vmux_agent::destination::host_name(&last, &files, &[]);
    if found.as_deref() != Some("host199.example.com") {
        bail!("known_hosts lookup found {found:?}");
    }
    p50_of(samples.min(200), || {
        std::hint::black_box(vmux_agent::destination::host_name(&last, &files, &[]));
        Ok(())
    })
}

/// What the signer checks per request before anyone is asked (issue 8): the data parsed,
/// the claims compared, the session binding verified, the host named from its pins.
fn signer_checks(home: &Path, blob: &[u8], samples: usize) -> anyhow::Result<(f64, f64, f64)> {
    use vmux_proto::envelope::{Context, Origin, SessionBinding, SignRequest};
    let mut rng = ssh_key::rand_core::UnwrapErr(ssh_key::getrandom::SysRng);
    let mut text = String::new();
    let mut host = None;
    for i in 0..200 {
        let k = ssh_key::PrivateKey::random(&mut rng, ssh_key::Algorithm::Ed25519)?;
        text += &format!("host{i}.example.com {}\n", k.public_key().to_openssh()?);
        host = Some(k);
    }
    let host = host.context("no host key")?;
    let path = home.join("bench_pins");
    std::fs::write(&path, &text)?;
    let pins = vmux_signer::hosts::HostPins::load(&path);
    let sid = [7u8; 32];
    let data = userauth_data("ecdsa-sha2-nistp256", blob);
    let mut with_sid = vec![];
    put_string(&mut with_sid, &sid);
    with_sid.extend_from_slice(&data[4 + 32..]);
    use signature::Signer as _;
    let sig: ssh_key::Signature = host.try_sign(&sid)?;
    let mut req = SignRequest {
        request_id: uuid::Uuid::nil(),
        key_blob: blob.to_vec(),
        algorithm: String::new(),
        flags: 0,
        device_id: String::new(),
        device_name: String::new(),
        origin: Origin::Agent,
        data: data.clone(),
        nonce: vec![],
        issued: 0,
        expires: 0,
        context: Context {
            kind: "login".into(),
            host: Some("host199.example.com".into()),
            ..Default::default()
        },
        bindings: vec![],
        session_cert: false,
    };
    let plain = p50_of(samples, || {
        std::hint::black_box(
            vmux_signer::request::inspect::examine(&req, &pins)
                .map_err(|e| anyhow::anyhow!("{e}"))?,
        );
        Ok(())
    })?;
    req.data = with_sid;
    req.bindings = vec![SessionBinding {
        host_key: host.public_key().to_bytes()?,
        session_id: sid.to_vec(),
        signature: ssh_key::encoding::Encode::encode_vec(&sig)?,
        is_forwarding: false,
    }];
    let seen =
        vmux_signer::request::inspect::examine(&req, &pins).map_err(|e| anyhow::anyhow!("{e}"))?;
    match seen.destination() {
        Some((_, "verified", _)) => {}
        d => bail!("bench binding not verified: {d:?}"),
    }
    let bound = p50_of(samples, || {
        std::hint::black_box(
            vmux_signer::request::inspect::examine(&req, &pins)
                .map_err(|e| anyhow::anyhow!("{e}"))?,
        );
        Ok(())
    })?;
    let pins_parse = p50_of(samples.min(200), || {
        std::hint::black_box(vmux_signer::hosts::HostPins::load(&path));
        Ok(())
    })?;
    Ok((plain, bound, pins_parse))
}

struct Breakdown {
    key: &'static str,
    keystore: f64,
    ping: f64,
    agent_sign: f64,
    socket: f64,
}

/// Where the time goes on the vmux side, one piece at a time, one client.
#[allow(clippy::too_many_arguments)]
fn breakdown(
    rt: &tokio::runtime::Runtime,
    agent: &Arc<vmux_agent::Agent>,
    home: &Path,
    ping_home: &Path,
    k: &KeyType,
    blob: &[u8],
    data: &[u8],
    samples: usize,
) -> anyhow::Result<Breakdown> {
    // The keystore alone (a second instance over the same key files).
    let ks = SoftwareKeystore::open(&SignerHome::new(home).keys(), None)?;
    let mut lat = Vec::with_capacity(samples);
    for _ in 0..samples {
        let t = Instant::now();
        ks.sign(blob, data, 0)
            .map_err(|e| anyhow::anyhow!("keystore sign: {e}"))?;
        lat.push(t.elapsed().as_nanos() as f64 / 1000.0);
    }
    let keystore = percentile(&lat, 50.0);

    // Link round trip: Ping/Pong as a second paired device (its own session), answered
    // by the signer's session loop like any other message.
    let ping = rt.block_on(async {
        let phome = vmux_agent::AgentHome::new(ping_home);
        let identity = vmux_proto::Identity::load_or_create(&phome.identity())?;
        let addr = phome.load_signers()?[0].address.clone();
        let stream = tokio::net::TcpStream::connect(&addr).await?;
        stream.set_nodelay(true)?;
        let link = vmux_proto::noise::connect(stream, &identity).await?;
        let (mut reader, mut writer) = (link.reader, link.writer);
        use vmux_proto::{Envelope, Message};
        writer
            .send(&Envelope::new(vmux_agent::link::hello(
                &identity,
                "bench-ping",
            )))
            .await?;
        match reader.recv().await?.message {
            Message::Hello(_) => {}
            m => bail!("expected Hello, got {m:?}"),
        }
        let mut lat = Vec::with_capacity(samples);
        for _ in 0..samples {
            let t = Instant::now();
            writer.send(&Envelope::new(Message::Ping)).await?;
            loop {
                if reader.recv().await?.message == Message::Pong {
                    break;
                }
            }
            lat.push(t.elapsed().as_nanos() as f64 / 1000.0);
        }
        anyhow::Ok(percentile(&lat, 50.0))
    })?;

    // The agent's sign in-process: forward, link, signer, queue, approver, keystore,
    // both logs; no Unix socket.
    let agent_sign = rt.block_on(async {
        let caller = vmux_agent::agent::Caller::default();
        let mut lat = Vec::with_capacity(samples);
        for _ in 0..samples {
            let t = Instant::now();
            agent
                .sign(blob, data, 0, &caller, &[])
                .await
                .map_err(|e| anyhow::anyhow!("Agent::sign: {e}"))?;
            lat.push(t.elapsed().as_nanos() as f64 / 1000.0);
        }
        anyhow::Ok(percentile(&lat, 50.0))
    })?;

    // The full path from a client, for comparison in the same conditions.
    let mut c = Client::connect(&home.parent().unwrap().join("vmux.sock"))?;
    let req = sign_request(blob, data);
    let mut lat = Vec::with_capacity(samples);
    for _ in 0..samples {
        let t = Instant::now();
        c.sign(&req)?.context("sign via socket failed")?;
        lat.push(t.elapsed().as_nanos() as f64 / 1000.0);
    }
    let socket = percentile(&lat, 50.0);

    Ok(Breakdown {
        key: k.name,
        keystore,
        ping,
        agent_sign,
        socket,
    })
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
