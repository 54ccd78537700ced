//! `vmux agent …`

use anyhow::{bail, Context};
use clap::Subcommand;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;
use vmux_agent::status::Status;
use vmux_agent::{Agent, AgentHome};
use vmux_proto::identity::key_fingerprint;

#[derive(Subcommand)]
pub enum AgentCmd {
    /// Dial paired signers beyond the local network: `anywhere [--relay URL]...` (by
    /// iroh endpoint id, when the local route fails) or `local` (the default).
    Reach(super::reach::ReachArgs),
    /// Where the agent's link identity lives: `--store tpm` seals it to this machine's
    /// TPM (the same key, so pairings stay; a copied file is useless elsewhere),
    /// `--store file` turns it back into a 0600 file.
    Init {
        /// tpm or file.
        #[arg(long, value_parser = ["tpm", "file"], default_value = "file")]
        store: String,
    },
    /// Pair with the signer at HOST:PORT (or one found by mDNS): shows a 6-digit code
    /// and waits for approval there.
    Pair {
        /// The signer's HOST:PORT (port 7227 when only HOST is given); none: find it by mDNS.
        address: Option<String>,
        /// With no address: the id of the signer to pair with, when several are found.
        #[arg(long)]
        id: Option<String>,
        /// How long to wait for the person at the signer, in seconds.
        #[arg(long, default_value_t = 120)]
        wait: u64,
    },
    /// Write a systemd user unit (socket-activated) or a launchd plist that runs the
    /// agent at login, and say how to enable and remove it.
    InstallService(super::service::InstallArgs),
    /// Run the SSH agent.
    Run {
        /// Where to put the agent socket (default `~/.ssh/vmux-agent.sock`, or
        /// `$VMUX_HOME/agent.sock` when VMUX_HOME is set).
        #[arg(long)]
        socket: Option<PathBuf>,
        /// A static route to a signer, for networks without multicast: HOST:PORT (when
        /// one signer is paired) or ID=HOST:PORT.
        #[arg(long)]
        signer: Vec<String>,
        /// Another agent's socket whose keys are listed after vmux's and sign without a
        /// prompt (outside vmux's promise); `ssh-add` adds keys there. Overrides
        /// `upstream` in the agent's config.
        #[arg(long)]
        upstream: Option<PathBuf>,
    },
    /// Print `SSH_AUTH_SOCK=…; export SSH_AUTH_SOCK;` for eval.
    Env {
        /// The socket to print (default: the configured one).
        #[arg(long)]
        socket: Option<PathBuf>,
    },
    /// Signers visible on the local network (mDNS), with how long each took to appear.
    Discover {
        /// How long to listen, in seconds.
        #[arg(long, default_value_t = 2)]
        wait: u64,
        /// Stop as soon as this signer id is seen.
        #[arg(long)]
        id: Option<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Link state and the keys the agent lists.
    Status {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// The request log; `--verify` checks its hash chain.
    Log {
        /// Check the hash chain and say where it breaks, if anywhere.
        #[arg(long)]
        verify: bool,
    },
    /// Ask the signer for a new session certificate now (approved there).
    RequestCert {
        /// e.g. 8h, 30m; default: the agent's `cert_validity_secs`.
        #[arg(long, value_parser = super::parse_duration)]
        validity: Option<u64>,
    },
    /// Drop the session certificate and its key.
    Reset,
    /// Ask every connected signer for its key list now.
    Refresh,
}

pub fn home() -> AgentHome {
    AgentHome::new(&vmux_proto::store::vmux_home())
}

pub async fn run(cmd: AgentCmd) -> anyhow::Result<ExitCode> {
    let home = home();
    match cmd {
        AgentCmd::Init { store } => init_identity(&home, &store)?,
        AgentCmd::Reach(a) => {
            return super::reach::run(super::reach::Device::Agent, &home.dir, a).await
        }
        AgentCmd::Pair { address, id, wait } => pair(&home, address, id, wait).await?,
        AgentCmd::InstallService(args) => {
            let config = home.load_config()?;
            let socket = home.socket(&config);
            super::service::install(super::service::Daemon::Agent, args, &socket)?;
        }
        AgentCmd::Run {
            socket,
            signer,
            upstream,
        } => {
            let agent = Agent::open(home.clone())?;
            if let Some(u) = upstream {
                agent.set_upstream(u);
            }
            for route in &signer {
                let paired = agent.signers();
                let (id, addr) = match route.split_once('=') {
                    Some((id, addr)) => (id.to_string(), addr),
                    None if paired.len() == 1 => (paired[0].id.clone(), route.as_str()),
                    None => {
                        bail!("--signer {route}: several signers are paired; write ID=HOST:PORT")
                    }
                };
                anyhow::ensure!(
                    agent.set_address(&id, addr),
                    "--signer {route}: no paired signer with id {id}"
                );
            }
            spawn_discovery(&agent)?;
            let path = socket.unwrap_or_else(|| home.socket(&agent.config));
            let listener = bind(&agent, &path).await?;
            println!("vmux agent listening on {}", path.display());
            println!(
                "SSH_AUTH_SOCK={}; export SSH_AUTH_SOCK;",
                shell_quote(&path)
            );
            serve(agent, listener, &path).await?;
        }
        AgentCmd::Env { socket } => {
            let config = home.load_config()?;
            let path = socket.unwrap_or_else(|| home.socket(&config));
            println!(
                "SSH_AUTH_SOCK={}; export SSH_AUTH_SOCK;",
                shell_quote(&path)
            );
        }
        AgentCmd::Status { json } => {
            if !status(&home, json).await? {
                return Ok(ExitCode::from(3));
            }
        }
        AgentCmd::Discover { wait, id, json } => {
            let config = home.load_config()?;
            let scope = vmux_proto::discovery::scope_for(&config.discovery, None)
                .map_err(|e| anyhow::anyhow!("agent config: {e}"))?
                .ok_or_else(|| anyhow::anyhow!("discovery is off in the agent config"))?;
            let found =
                vmux_proto::discovery::browse(scope, Duration::from_secs(wait), id.as_deref())
                    .await
                    .map_err(|e| anyhow::anyhow!(e))?;
            if json {
                let v: Vec<_> = found
                    .iter()
                    .map(|(f, t)| {
                        serde_json::json!({"id": f.id, "name": f.name,
                        "addresses": f.addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
                        "foundAfterMs": t.as_millis() as u64})
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else if found.is_empty() {
                println!("no signer found");
            }
            if !json {
                for (f, t) in &found {
                    let addrs: Vec<String> = f.addrs.iter().map(|a| a.to_string()).collect();
                    println!(
                        "{}  {:?}  {}  (after {} ms)",
                        f.id,
                        f.name,
                        addrs.join(", "),
                        t.as_millis()
                    );
                }
            }
        }
        AgentCmd::Log { verify } => return print_log(&home.log(), verify),
        AgentCmd::RequestCert { validity } => {
            let names: Vec<String> = home
                .load_signers()?
                .iter()
                .map(|s| format!("{:?}", s.name))
                .collect();
            eprintln!(
                "asking for a session certificate: waiting for approval on the signer {} (up to {}s)…",
                names.join(" or "),
                home.load_config()?.request_window_secs
            );
            let contents = validity.map(|v| (v.min(u32::MAX as u64) as u32).to_be_bytes().to_vec());
            extension(
                &home,
                vmux_agent::session::REQUEST_CERT,
                &contents.unwrap_or_default(),
            )
            .await?;
            println!("session certificate issued");
            status(&home, false).await?;
        }
        AgentCmd::Reset => {
            extension(&home, vmux_agent::session::RESET, &[]).await?;
            println!("session certificate dropped");
        }
        AgentCmd::Refresh => {
            extension(&home, vmux_agent::session::REFRESH, &[]).await?;
            println!("key lists refreshed from the connected signers");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Seal the link identity to the TPM, or unseal it to a file (same key either way).
pub fn init_identity(home: &AgentHome, store: &str) -> anyhow::Result<()> {
    let path = home.identity();
    let sealed = std::fs::read_to_string(&path)
        .is_ok_and(|t| t.contains("-----BEGIN TSS2 PRIVATE KEY-----"));
    let identity = vmux_proto::Identity::load_or_create(&path)?;
    match (store, sealed) {
        ("tpm", true) => println!("{} is already sealed to the TPM", path.display()),
        ("tpm", false) => {
            let tcti = home.load_config()?.tcti;
            let pem = seal(tcti.as_deref(), identity.private())?;
            vmux_proto::store::write_atomic(&path, pem.as_bytes(), 0o600)?;
            println!(
                "sealed {} to this machine's TPM (device {}; pairings are kept). A copy of the file is useless on another machine.",
                path.display(),
                identity.device_id()
            );
        }
        ("file", false) => println!("{} is a plain 0600 file", path.display()),
        _ => {
            vmux_proto::store::write_atomic(&path, identity.to_text().as_bytes(), 0o600)?;
            println!(
                "{} is a plain 0600 file again (device {})",
                path.display(),
                identity.device_id()
            );
        }
    }
    Ok(())
}

#[cfg(feature = "tpm")]
fn seal(tcti: Option<&str>, secret: &[u8]) -> anyhow::Result<String> {
    use vmux_signer::keystore::tpm;
    Ok(tpm::seal(&tpm::tcti(tcti), secret)?)
}

#[cfg(not(feature = "tpm"))]
fn seal(_: Option<&str>, _: &[u8]) -> anyhow::Result<String> {
    Err(vmux_signer::SignerError::NoTpmSupport.into())
}

/// The `tcti` of the device whose identity file is `identity` (its `config.toml`
/// lives beside it).
#[cfg(feature = "tpm")]
pub fn configured_tcti(identity: &Path) -> Result<Option<String>, String> {
    let config: vmux_agent::state::AgentConfig =
        vmux_proto::store::read_toml(&identity.with_file_name("config.toml"))
            .map_err(|e| e.to_string())?;
    Ok(config.tcti)
}

/// Pair the device whose state is in `home` (the agent's, or `vmux ssh`'s own) with a
/// signer: show the code and wait for the person there to type it.
pub async fn pair(
    home: &AgentHome,
    address: Option<String>,
    id: Option<String>,
    wait: u64,
) -> anyhow::Result<()> {
    let config = home.load_config()?;
    let address = match address {
        Some(a) => with_default_port(&a),
        None => discover_one(&config, id.as_deref()).await?,
    };
    let identity = vmux_proto::Identity::load_or_create(&home.identity())?;
    let (shown_tx, shown_rx) = tokio::sync::oneshot::channel::<()>();
    let countdown = tokio::spawn(async move {
        if shown_rx.await.is_err() {
            return;
        }
        let started = std::time::Instant::now();
        loop {
            tokio::time::sleep(Duration::from_secs(15)).await;
            let left = wait.saturating_sub(started.elapsed().as_secs());
            eprintln!("waiting for the signer to accept the code… {left}s left");
        }
    });
    let paired = vmux_agent::pair::pair(
            home,
            &identity,
            &home.device_name(&config),
            &address,
            Duration::from_secs(wait),
            |code| {
                println!("pairing code {code}: check that the signer shows the same code, then type it there (`vmux signer approve --code {code}`)");
                println!("waiting up to {wait}s…");
                let _ = shown_tx.send(());
            },
            || Box::pin(read_signer_code()),
        )
        .await;
    countdown.abort();
    let signer = paired?;
    println!(
        "paired with signer {:?} ({}) at {}; fingerprint {}",
        signer.name,
        signer.id,
        signer.address,
        vmux_proto::identity::fingerprint(&signer.public_key)
    );
    Ok(())
}

/// The code the signer shows once ours was typed there, from this terminal (or one
/// line of standard input when it is not one).
async fn read_signer_code() -> Option<String> {
    use std::io::{IsTerminal, Write};
    println!("the signer accepted the code and now shows a code of its own");
    if std::io::stdin().is_terminal() {
        print!("type the code the signer shows: ");
    } else {
        println!("type the code the signer shows (one line on standard input)");
    }
    let _ = std::io::stdout().flush();
    tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        match std::io::stdin().read_line(&mut line) {
            Ok(n) if n > 0 => Some(line.trim().to_string()),
            _ => None,
        }
    })
    .await
    .ok()
    .flatten()
}

/// `HOST` → `HOST:7227` (the signer's default port); `HOST:PORT` and `[v6]:PORT` as given.
fn with_default_port(a: &str) -> String {
    let has_port = if let Some(rest) = a.strip_prefix('[') {
        rest.contains("]:")
    } else {
        a.matches(':').count() == 1
    };
    if has_port {
        a.to_string()
    } else if a.contains(':') {
        format!("[{a}]:7227")
    } else {
        format!("{a}:7227")
    }
}

/// Follow paired signers as mDNS finds them (new address after a restart or a move).
fn spawn_discovery(agent: &std::sync::Arc<Agent>) -> anyhow::Result<()> {
    let scope = vmux_proto::discovery::scope_for(&agent.config.discovery, None)
        .map_err(|e| anyhow::anyhow!("{}: {e}", agent.home.config().display()))?;
    let Some(scope) = scope else {
        return Ok(());
    };
    let mut found = match vmux_proto::discovery::watch(scope) {
        Ok(rx) => rx,
        Err(e) => {
            tracing::warn!("discovery unavailable: {e}");
            return Ok(());
        }
    };
    let agent = agent.clone();
    tokio::spawn(async move {
        while let Some(f) = found.recv().await {
            if let Some(addr) = f.addrs.first() {
                agent.try_address(&f.id, &addr.to_string()).await;
            }
        }
    });
    Ok(())
}

/// With no address given: browse, then pick the signer by `--id`, or the only one seen.
async fn discover_one(
    config: &vmux_agent::state::AgentConfig,
    id: Option<&str>,
) -> anyhow::Result<String> {
    use vmux_proto::discovery;
    let scope = discovery::scope_for(&config.discovery, None)
        .map_err(|e| anyhow::anyhow!("agent config: {e}"))?
        .ok_or_else(|| anyhow::anyhow!("discovery is off in the agent config: give HOST:PORT"))?;
    let found = discovery::browse(scope, Duration::from_secs(3), id)
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    let found: Vec<_> = found.into_iter().map(|(f, _)| f).collect();
    for f in &found {
        let addrs: Vec<String> = f.addrs.iter().map(|a| a.to_string()).collect();
        println!(
            "found signer {:?} id {} at {}",
            f.name,
            f.id,
            addrs.join(", ")
        );
    }
    let chosen = match id {
        Some(id) => found.iter().find(|f| f.id == id),
        None if found.len() == 1 => found.first(),
        None if found.is_empty() => {
            bail!("no signer found on the local network (mDNS); give HOST:PORT")
        }
        None => bail!("{} signers found: choose one with --id ID", found.len()),
    };
    let f = chosen
        .ok_or_else(|| anyhow::anyhow!("no signer with id {} was found", id.unwrap_or("")))?;
    let addr = f
        .addrs
        .first()
        .ok_or_else(|| anyhow::anyhow!("signer {} has no IPv4 address", f.id))?;
    Ok(addr.to_string())
}

/// Bind the agent socket (refusing a live agent's), so callers can announce it.
pub async fn bind(agent: &Agent, path: &Path) -> anyhow::Result<tokio::net::UnixListener> {
    if agent.signers().is_empty() {
        tracing::warn!("no paired signer yet: run `vmux agent pair HOST:PORT`");
    }
    // Started by systemd's vmux-agent.socket: serve the socket it made.
    if let Some(l) = super::service::activated_listener() {
        agent.write_status_at(path);
        return Ok(tokio::net::UnixListener::from_std(l)?);
    }
    let listener = vmux_agent::socket::bind(path).await?;
    agent.write_status_at(path);
    Ok(listener)
}

/// Serve a bound socket until a signal, then remove the socket and status file.
pub async fn serve(
    agent: std::sync::Arc<Agent>,
    listener: tokio::net::UnixListener,
    path: &Path,
) -> anyhow::Result<()> {
    agent.spawn_keepers();
    tokio::spawn(vmux_agent::tray::run(agent.clone()));
    // The accept loop runs as a task, on the runtime's worker: a connection's task then
    // starts on the thread that accepted it. Run on this (the main) thread instead, every
    // connection cost two cross-thread wake-ups (scripts/bench, `ssh-add -l`).
    let accept = tokio::spawn(vmux_agent::socket::serve(agent.clone(), listener));
    let stop = accept.abort_handle();
    let res = tokio::select! {
        r = accept => match r {
            Ok(r) => r.context("agent socket"),
            Err(e) => Err(anyhow::anyhow!("agent socket: the accept loop ended: {e}")),
        },
        _ = super::shutdown_signal() => Ok(()),
    };
    stop.abort();
    let _ = std::fs::remove_file(path);
    let _ = std::fs::remove_file(agent.home.status_file());
    res
}

pub fn shell_quote(p: &Path) -> String {
    let s = p.display().to_string();
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+@%:".contains(c))
    {
        s
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// The running agent's status (`None` when it does not run: the status file is only
/// as good as the agent behind it, so the socket must answer).
pub async fn running_status(home: &AgentHome) -> anyhow::Result<Option<Status>> {
    let file: Option<Status> = vmux_proto::store::read_json(&home.status_file())?;
    let mut candidates: Vec<PathBuf> = file.iter().map(|s| PathBuf::from(&s.socket)).collect();
    candidates.push(home.socket(&home.load_config()?));
    for c in candidates {
        if let Some(s) = status_from(&c).await {
            return Ok(Some(s));
        }
    }
    Ok(None)
}

/// The agent's state as JSON (for `agent status --json` and `vmux status --json`).
pub fn status_json(
    home: &AgentHome,
    status: Option<&Status>,
    upstream: &super::upstream::Report,
) -> anyhow::Result<serde_json::Value> {
    let signers = home.load_signers()?;
    let keys = home.load_keys()?;
    let link = |id: &str| status.and_then(|s| s.signers.iter().find(|x| x.id == id).cloned());
    Ok(serde_json::json!({
        "running": status.is_some(),
        "pid": status.map(|s| s.pid),
        "socket": status.map(|s| s.socket.clone()),
        "connection": status.map(|s| s.connection_line.clone()),
        "certificate": status.and_then(|s| s.certificate.clone()),
        "certificateLine": status.map(|s| s.certificate_line.clone()),
        "certificateExpired": status.is_some_and(|s| s.certificate_expired),
        "state": status.map(|s| s.state()),
        "waiting": status.map(|s| s.waiting.clone()).unwrap_or_default(),
        "recent": status.map(|s| s.recent.clone()).unwrap_or_default(),
        "signers": signers.iter().map(|s| {
            let l = link(&s.id);
            serde_json::json!({
                "id": s.id, "name": s.name, "address": s.address,
                "connected": l.as_ref().is_some_and(|l| l.connected),
                "lastError": l.as_ref().and_then(|l| l.last_error.clone()),
                "lastSeen": l.as_ref().and_then(|l| l.last_seen),
                "since": l.as_ref().and_then(|l| l.since),
                "path": l.as_ref().filter(|l| l.connected).and_then(|l| l.path.clone()),
                "rttMs": l.as_ref().filter(|l| l.connected).and_then(|l| l.rtt_ms),
                "reach": s.reach.as_ref().map(|r| if r.anywhere { "anywhere" } else { "local" }),
            })
        }).collect::<Vec<_>>(),
        "keys": keys.iter().map(|k| serde_json::json!({
            "fingerprint": key_fingerprint(&k.record.public_key),
            "algorithm": k.record.algorithm,
            "comment": k.record.comment,
            "provider": k.record.provider,
            "providerKind": k.record.provider,
            "enabled": k.record.enabled,
            "signer": k.signer_id,
            "heldBy": "signer",
        })).chain(upstream.keys_json()).collect::<Vec<_>>(),
        "upstream": upstream.json(),
    }))
}

/// The agent's state for a person, one fact a line.
pub fn status_lines(home: &AgentHome, status: Option<&Status>) -> anyhow::Result<Vec<String>> {
    let signers = home.load_signers()?;
    let keys = home.load_keys()?;
    let mut out = vec![];
    match status {
        Some(s) => {
            out.push(format!("agent: running (pid {}) on {}", s.pid, s.socket));
            out.push(format!("  connection:  {}", s.connection_line));
            out.push(format!("  certificate: {}", cert_line(s)));
            for w in &s.waiting {
                out.push(format!("  waiting:     {}", w.line()));
            }
            for o in s.recent.iter().take(5) {
                out.push(format!(
                    "  {}  {}: {}",
                    vmux_proto::time::clock(o.time),
                    o.what,
                    o.reason
                ));
            }
        }
        None => out.push("agent: not running (start it with `vmux agent run` or `vmux up`)".into()),
    }
    if signers.is_empty() {
        out.push("  no paired signer: run `vmux agent pair HOST:PORT`".into());
    }
    for s in &signers {
        let l = status.and_then(|st| st.signers.iter().find(|x| x.id == s.id));
        let state = match l {
            Some(l) if l.connected => format!(
                "connected{}{}",
                l.path_line().map(|p| format!(" {p}")).unwrap_or_default(),
                l.since
                    .map(|t| format!(" since {}", vmux_proto::time::hm(t)))
                    .unwrap_or_default()
            ),
            Some(l) => format!(
                "not connected{}{}",
                l.last_seen
                    .map(|t| format!(", last seen {}", vmux_proto::time::hm(t)))
                    .unwrap_or_default(),
                l.last_error
                    .as_deref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            ),
            None => "not connected".into(),
        };
        out.push(format!(
            "  signer {:?} ({}) at {}: {state}",
            s.name, s.id, s.address
        ));
    }
    for k in &keys {
        out.push(format!(
            "  key {}  {}  {}  [{}]{}",
            key_fingerprint(&k.record.public_key),
            k.record.comment,
            k.record.algorithm,
            k.record.provider,
            if k.record.enabled { "" } else { " (disabled)" }
        ));
    }
    Ok(out)
}

/// The certificate line, judged by this clock (the file may lag the agent by a tick).
fn cert_line(s: &Status) -> String {
    let now = vmux_proto::now_unix();
    match &s.certificate {
        Some(c) if c.valid_before <= now => format!(
            "expired at {} — asks again on the next login",
            vmux_proto::time::hm(c.valid_before)
        ),
        Some(c) => format!(
            "{} (principals {}, key id {})",
            s.certificate_line,
            c.principals.join(","),
            c.key_id
        ),
        None => s.certificate_line.clone(),
    }
}

/// Print the agent's state; returns whether it is running.
async fn status(home: &AgentHome, json: bool) -> anyhow::Result<bool> {
    let status = running_status(home).await?;
    let upstream = super::upstream::Report::probe(home, status.as_ref()).await?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&status_json(home, status.as_ref(), &upstream)?)?
        );
    } else {
        for l in status_lines(home, status.as_ref())? {
            println!("{l}");
        }
        upstream.print();
    }
    Ok(status.is_some())
}

/// The socket of the running agent: the one its status file records, else
/// `SSH_AUTH_SOCK`, else the configured default; the first that answers.
pub async fn running_socket(home: &AgentHome) -> anyhow::Result<PathBuf> {
    let config = home.load_config()?;
    let mut candidates = vec![];
    if let Ok(Some(s)) = vmux_proto::store::read_json::<Status>(&home.status_file()) {
        candidates.push(PathBuf::from(s.socket));
    }
    if let Some(s) = std::env::var_os("SSH_AUTH_SOCK").filter(|s| !s.is_empty()) {
        candidates.push(PathBuf::from(s));
    }
    candidates.push(home.socket(&config));
    for c in &candidates {
        if tokio::net::UnixStream::connect(c).await.is_ok() {
            return Ok(c.clone());
        }
    }
    bail!(
        "the vmux agent is not running (tried {}); start it with `vmux agent run` or `vmux up`",
        candidates
            .iter()
            .map(|c| c.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// Call one of the agent's own extensions on its socket and require SUCCESS.
async fn extension(home: &AgentHome, name: &str, contents: &[u8]) -> anyhow::Result<()> {
    let path = running_socket(home).await?;
    let resp = extension_at(&path, name, contents).await?;
    if resp.first() != Some(&vmux_agent::wire::SUCCESS) {
        // The agent protocol carries no reason: the agent's status has the latest one.
        let why = status_from(&path)
            .await
            .and_then(|s| s.recent.first().map(|o| o.reason.clone()));
        match why {
            Some(w) => bail!("{w}"),
            None => bail!("the agent could not do it; `vmux agent log` says why"),
        }
    }
    Ok(())
}

/// Send one of the agent's own extensions to the socket at `path`; the raw answer.
async fn extension_at(path: &Path, name: &str, contents: &[u8]) -> anyhow::Result<Vec<u8>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut c = tokio::net::UnixStream::connect(path)
        .await
        .with_context(|| format!("agent socket {}", path.display()))?;
    let mut body = vec![vmux_agent::wire::EXTENSION];
    body.extend_from_slice(&(name.len() as u32).to_be_bytes());
    body.extend_from_slice(name.as_bytes());
    body.extend_from_slice(contents);
    let mut msg = (body.len() as u32).to_be_bytes().to_vec();
    msg.extend_from_slice(&body);
    c.write_all(&msg).await?;
    let mut len = [0u8; 4];
    c.read_exact(&mut len)
        .await
        .context("the agent closed the connection")?;
    let mut resp = vec![0u8; (u32::from_be_bytes(len) as usize).min(vmux_agent::wire::MAX_MESSAGE)];
    c.read_exact(&mut resp).await?;
    Ok(resp)
}

/// The live status of the agent serving `path` (its `status@vmux.dev` extension).
async fn status_from(path: &Path) -> Option<Status> {
    let resp = extension_at(path, vmux_agent::session::STATUS, &[])
        .await
        .ok()?;
    let rest = resp.strip_prefix(&[vmux_agent::wire::EXTENSION_RESPONSE])?;
    let n = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    serde_json::from_slice(rest.get(4 + n..)?).ok()
}

/// Print a hash-chained log, or verify it.
pub fn print_log(path: &Path, verify: bool) -> anyhow::Result<ExitCode> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => bail!("{}: {e}", path.display()),
    };
    if verify {
        return match vmux_proto::journal::verify_rotated(path) {
            Ok(files) if files.iter().all(|(_, v)| v.lines == 0) => {
                println!("{}: no log yet", path.display());
                Ok(ExitCode::SUCCESS)
            }
            Ok(files) => {
                for (f, v) in &files {
                    if v.lines == 0 {
                        continue;
                    }
                    let tail = if f != path {
                        ", rotated; its tail is vouched for by the next file's first line"
                    } else if v.anchored {
                        ", tail matches its anchor"
                    } else {
                        " (no anchor yet: lines after the last one cannot be vouched for)"
                    };
                    println!("{}: {} lines, chain intact{tail}", f.display(), v.lines);
                }
                if let Some((f, v)) = files.iter().find(|(_, v)| v.lines > 0) {
                    if let Some(h) = &v.continues {
                        println!(
                            "note: {} continues an earlier log that is no longer beside it (moved or \
                             rotated away); that log's last line hashed to {h}; verify it on its own",
                            f.display()
                        );
                    }
                }
                Ok(ExitCode::SUCCESS)
            }
            Err((f, t)) => {
                eprintln!("{}: {t}", f.display());
                Ok(ExitCode::FAILURE)
            }
        };
    }
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            println!("(unreadable line) {}", vmux_proto::text::field(line));
            continue;
        };
        println!("{}", log_line(&v));
    }
    Ok(ExitCode::SUCCESS)
}

/// One log record for a person: when, what kind, which request, what it was for and
/// where it went, the decision and why, who asked; a change says what changed.
fn log_line(v: &serde_json::Value) -> String {
    let get = |k: &str| {
        v.get(k)
            .and_then(|x| match x {
                serde_json::Value::String(s) => Some(vmux_proto::text::field(s)),
                serde_json::Value::Null => None,
                other => Some(vmux_proto::text::field(&other.to_string())),
            })
            .filter(|s| !s.is_empty())
    };
    let mut parts = vec![v
        .get("time")
        .and_then(|t| t.as_u64())
        .map(super::local_time)
        .unwrap_or_default()];
    parts.push(
        get("event")
            .or_else(|| get("kind"))
            .unwrap_or_else(|| "-".into()),
    );
    if let Some(id) = get("requestId").or_else(|| get("label")) {
        parts.push(id.chars().take(12).collect());
    }
    let what = get("purpose").or_else(|| get("what"));
    let dest = get("destination").or_else(|| get("host"));
    match (what, dest) {
        (Some(w), Some(d)) => parts.push(format!("{w} → {d}")),
        (Some(w), None) => parts.push(w),
        (None, Some(d)) => parts.push(format!("→ {d}")),
        (None, None) => {}
    }
    if let Some(c) = get("change") {
        parts.push(format!("changed: {c}"));
    }
    if let Some(d) = get("decision") {
        parts.push(d);
    }
    if let Some(r) = get("reason") {
        parts.push(format!("({r})"));
    }
    if let Some(d) = get("device") {
        parts.push(format!("from {d}"));
    }
    if let Some(r) = get("requester") {
        parts.push(format!("requester {r}"));
    }
    if let Some(k) = get("key") {
        parts.push(format!("key {k}"));
    }
    if let Some(l) = v.get("latencyMs").and_then(|t| t.as_u64()) {
        parts.push(format!("{l}ms"));
    }
    parts.join("  ")
}
