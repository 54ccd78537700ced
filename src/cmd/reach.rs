//! `vmux signer reach …`, `vmux agent reach …`, `vmux client reach …`: reach beyond
//! the local network, off by default. Each writes the device's `reach.toml`; the
//! running signer and agent follow the file within a second (the signer tells its
//! connected devices), and `vmux ssh` reads it when it starts.

use anyhow::Context;
use clap::{Args, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;
use vmux_proto::reach::{Mode, ReachConfig};

#[derive(Args)]
pub struct ReachArgs {
    #[command(subcommand)]
    action: Option<ReachAction>,
    /// Machine-readable output (with no action: what is configured and in force).
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
pub enum ReachAction {
    /// Reachable (the signer) or dial (the workstation) by iroh endpoint id when the
    /// local network does not connect the two: a hole-punched direct path, else a relay.
    /// Relays see endpoint ids and IP addresses, never what the link carries.
    Anywhere {
        /// A relay to use (self-hosted `iroh-relay`); repeat for several. Without one,
        /// iroh's public relays (and its DNS address lookup) are used.
        #[arg(long = "relay", value_name = "URL")]
        relays: Vec<String>,
        /// A PEM file of CA certificates the relays' TLS certificates chain to, for a
        /// self-hosted relay with a private CA.
        #[arg(long, value_name = "PEM")]
        relay_ca: Option<PathBuf>,
    },
    /// The local network only (the default): no endpoint, no relay connection.
    Local,
}

#[derive(Clone, Copy, PartialEq)]
pub enum Device {
    Signer,
    Agent,
    Client,
}

impl Device {
    fn word(self) -> &'static str {
        match self {
            Device::Signer => "signer",
            Device::Agent => "agent",
            Device::Client => "client",
        }
    }
}

pub async fn run(device: Device, dir: &Path, args: ReachArgs) -> anyhow::Result<ExitCode> {
    let before = ReachConfig::load(dir)?;
    let config = match args.action {
        None => return show(device, dir, &before, args.json),
        Some(ReachAction::Local) => ReachConfig::default(),
        Some(ReachAction::Anywhere { relays, relay_ca }) => {
            anyhow::ensure!(vmux_proto::reach::BUILT, vmux_proto::reach::NOT_BUILT);
            let relay_ca = match relay_ca {
                Some(p) => Some(
                    std::fs::canonicalize(&p)
                        .with_context(|| format!("--relay-ca {}", p.display()))?,
                ),
                None => None,
            };
            let c = ReachConfig {
                mode: Mode::Anywhere,
                relays,
                relay_ca,
            };
            c.check().map_err(anyhow::Error::msg)?;
            c
        }
    };
    config.save(dir)?;
    println!("reach: {}", config.describe());
    if let Some(id) = endpoint_id(dir).filter(|_| config.anywhere()) {
        println!("endpoint id: {id}");
    }
    match device {
        Device::Signer => signer_applied(dir, &config).await,
        Device::Agent => {
            if super::agent::running_status(&super::agent::home())
                .await?
                .is_some()
            {
                println!(
                    "the running agent dials this way from its next connection on (a link that is up stays as it is)"
                );
            } else {
                println!("the agent dials this way when it runs");
            }
        }
        Device::Client => println!("`vmux ssh` dials this way from its next start"),
    }
    if config.anywhere() && config.relays.is_empty() {
        println!(
            "iroh's public relays see this device's endpoint id and IP addresses (never what the link carries); its DNS lookup publishes the endpoint id with its home relay"
        );
    }
    if device == Device::Signer && config.anywhere() && !before.anywhere() {
        println!(
            "paired devices learn how to reach it when they next connect on the local network (or at pairing)"
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Wait (briefly) for the running signer to say it applied the change.
async fn signer_applied(dir: &Path, config: &ReachConfig) {
    let Some(running) =
        vmux_proto::local::read(dir.parent().unwrap_or(dir)).filter(|l| process_alive(l.pid))
    else {
        println!("the signer uses this when it starts");
        return;
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let st: Option<vmux_signer::reach::ReachStatus> =
            vmux_proto::store::read_json(&vmux_signer::reach::status_path(dir))
                .ok()
                .flatten();
        if let Some(st) = st.filter(|s| s.pid == running.pid && s.anywhere == config.anywhere()) {
            if !st.anywhere {
                println!("the running signer (pid {}) is local only now", st.pid);
                return;
            }
            if let Some(e) = st.error {
                println!(
                    "the running signer (pid {}) could not turn it on: {e}",
                    st.pid
                );
                return;
            }
            if let Some(r) = st.home_relay {
                println!(
                    "the running signer (pid {}) is reachable as endpoint {} through {r}",
                    st.pid, st.endpoint_id
                );
                return;
            }
        }
        if tokio::time::Instant::now() >= deadline {
            println!(
                "the running signer (pid {}) has not confirmed it yet; `vmux signer reach` shows its state",
                running.pid
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn process_alive(pid: u32) -> bool {
    // SAFETY: kill with signal 0 only checks that the process exists.
    unsafe { libc::kill(pid as libc::pid_t, 0) == 0 }
}

fn show(device: Device, dir: &Path, config: &ReachConfig, json: bool) -> anyhow::Result<ExitCode> {
    let endpoint = endpoint_id(dir);
    let running: Option<vmux_signer::reach::ReachStatus> = match device {
        Device::Signer => vmux_proto::store::read_json(&vmux_signer::reach::status_path(dir))?
            .filter(|s: &vmux_signer::reach::ReachStatus| process_alive(s.pid)),
        _ => None,
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "mode": match config.mode { Mode::Local => "local", Mode::Anywhere => "anywhere" },
                "relays": config.relays,
                "relayCa": config.relay_ca,
                "endpointId": endpoint,
                "running": running,
            }))?
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!("reach: {}", config.describe());
    if let Some(id) = endpoint {
        println!("endpoint id: {id}");
    }
    if let Some(ca) = &config.relay_ca {
        println!("relay CA: {}", ca.display());
    }
    if let Some(st) = running {
        match (st.anywhere, st.home_relay, st.error) {
            (false, _, _) => println!("running signer (pid {}): local only", st.pid),
            (true, _, Some(e)) => println!("running signer (pid {}): not reachable: {e}", st.pid),
            (true, Some(r), _) => {
                println!("running signer (pid {}): reachable through {r}", st.pid)
            }
            (true, None, _) => println!("running signer (pid {}): connecting to a relay", st.pid),
        }
    }
    if !config.anywhere() {
        println!(
            "turn it on: vmux {} reach anywhere [--relay URL]",
            device.word()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// This device's endpoint id (derived from its link identity), when it has one that
/// needs no TPM to read.
fn endpoint_id(dir: &Path) -> Option<String> {
    let path = dir.join("identity");
    if !path.exists() {
        return None;
    }
    let id = vmux_proto::Identity::load_or_create(&path).ok()?;
    Some(vmux_proto::reach::endpoint_id(&id))
}

/// `reach: anywhere as endpoint …, through https://…/` for the running signer with pid
/// `pid` (`vmux status`), or nothing while it is local.
pub fn signer_line(signer_dir: &Path, pid: u32) -> Option<String> {
    let st: vmux_signer::reach::ReachStatus =
        vmux_proto::store::read_json(&vmux_signer::reach::status_path(signer_dir))
            .ok()
            .flatten()?;
    if st.pid != pid || !st.anywhere {
        return None;
    }
    Some(match (st.home_relay, st.error) {
        (_, Some(e)) => format!("reach: anywhere, but not reachable: {e}"),
        (Some(r), None) => format!(
            "reach: anywhere as endpoint {}, through {r}",
            st.endpoint_id
        ),
        (None, None) => format!(
            "reach: anywhere as endpoint {}, connecting to a relay",
            st.endpoint_id
        ),
    })
}
