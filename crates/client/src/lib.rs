//! `vmux ssh`: an SSH client for a device that holds no keys. It finds the paired
//! signer, offers the signer's keys to the server, and asks the signer to sign only
//! for the key the server accepts, with the session binding it verified itself, so
//! the person there sees `user@host:port` and who vouches for it.
//!
//! A connection's path: `args` (ssh's command line) → `config` (where, from the
//! command line and ssh_config) → `dial` (TCP or a channel through each jump host, key
//! exchange, `known_hosts`, authentication through `signer`, keys chosen by
//! `identity`) → `session` (PTY, command, exit status), `forward` (`-L`, `-R`, `-D`
//! with `socks`) and `agent_forward` (`-A`).

pub mod agent_forward;
pub mod args;
pub mod config;
pub mod dial;
pub mod error;
pub mod forward;
pub mod identity;
pub mod known_hosts;
pub mod session;
pub mod signer;
pub mod socks;
pub mod terminal;

pub use error::ClientError;

use config::{CommandLine, Files, RequestTty, Target};
use dial::Services;
use session::{Ended, Tty};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Everything `vmux ssh` was asked to do.
#[derive(Debug, Default, Clone)]
pub struct Options {
    pub command_line: CommandLine,
    pub command: Vec<String>,
    pub tty: Tty,
    /// `-N`: no command, forwards only.
    pub no_command: bool,
    /// `-q`: no warnings.
    pub quiet: bool,
    /// `--signer HOST:PORT` or `ID=HOST:PORT`.
    pub signer: Option<String>,
    /// Reconnect with back-off when the connection drops.
    pub reconnect: bool,
    /// Log in with a session certificate of this process's own (`Some(validity)`).
    pub cert: Option<u64>,
    /// The vmux home (state under `client/`).
    pub vmux_home: PathBuf,
    /// Which ssh config files to read.
    pub files: Files,
}

/// The forwards of one run, parsed before anything connects.
struct Forwards {
    local: Vec<forward::LocalForward>,
    remote: Vec<forward::RemoteForward>,
    dynamic: Vec<(String, u16)>,
}

/// Run the client; the result is the process exit status (255 for failures of the
/// connection itself, as ssh(1)).
pub async fn run(opts: Options) -> Result<i32, ClientError> {
    let target = config::resolve(&opts.command_line, &opts.files)?;
    if !opts.quiet {
        for w in &target.warnings {
            eprintln!("vmux ssh: warning: {w}");
        }
    }
    let forwards = Forwards {
        local: target
            .local_forwards
            .iter()
            .map(|f| forward::parse_local(f, target.gateway_ports))
            .collect::<Result<_, _>>()?,
        remote: target
            .remote_forwards
            .iter()
            .map(|f| forward::parse_remote(f))
            .collect::<Result<_, _>>()?,
        dynamic: target
            .dynamic_forwards
            .iter()
            .map(|f| socks::parse_bind(f, target.gateway_ports))
            .collect::<Result<_, _>>()?,
    };
    for hop in &target.jumps {
        tracing::debug!("jump host {}@{}", hop.user, hop.host_port());
    }
    let mut signers = signer::Signers::open(&opts.vmux_home)?;
    if let Some(r) = &opts.signer {
        signers.route(r)?;
    }
    signers.discover();
    let mut backoff = Duration::from_secs(1);
    loop {
        let started = std::time::Instant::now();
        let ended = once(&opts, &target, &signers, &forwards).await;
        let reason = match ended {
            Ok(Ended::Exit(code)) => return Ok(code.min(255) as i32),
            Ok(Ended::Signal(sig)) => {
                eprintln!("vmux ssh: the remote command was killed by signal {sig}");
                return Ok(255);
            }
            Ok(Ended::Interrupted) => return Ok(255),
            Ok(Ended::Lost(reason)) => reason,
            Err(e @ ClientError::Lost { .. }) => e.to_string(),
            Err(e) => return Err(e),
        };
        if !opts.reconnect {
            return Err(ClientError::Lost {
                host: target.host.clone(),
                reason,
            });
        }
        if started.elapsed() > Duration::from_secs(60) {
            backoff = Duration::from_secs(1);
        }
        eprintln!(
            "vmux ssh: connection to {} lost ({reason}); reconnecting in {}s (the signer will ask again)",
            target.host,
            backoff.as_secs()
        );
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

async fn once(
    opts: &Options,
    target: &Target,
    signers: &signer::Signers,
    forwards: &Forwards,
) -> Result<Ended, ClientError> {
    // The signer and the first server at once: key exchange while the signer wakes up.
    let reach = {
        let s = signers.clone();
        tokio::spawn(async move { s.connect().await })
    };
    let mut reach = Some(reach);
    let mut offers = vec![];
    let mut cert = None;
    let services = Arc::new(Services::default());
    // Every jump host, then the destination, each through the one before.
    let mut chain: Vec<Arc<russh::client::Handle<dial::Client>>> = vec![];
    let mut last = None;
    let hops: Vec<&Target> = target.jumps.iter().chain([target]).collect();
    for (i, hop) in hops.iter().enumerate() {
        let is_target = i + 1 == hops.len();
        let svc = if is_target {
            services.clone()
        } else {
            Arc::new(Services::default())
        };
        let mut conn = dial::connect(hop, chain.last().map(|h| h.as_ref()), svc).await?;
        if let Some(r) = reach.take() {
            offers = r.await.map_err(|_| ClientError::NoSigner)??;
            let config = &signers.agent.config;
            if let Some(validity) = opts.cert.or(config.ssh_cert.then_some(3600)) {
                cert = Some(signers.session_cert(validity).await?);
            }
        }
        let hop_offers = identity::select(hop, &offers)?;
        dial::authenticate(&mut conn, hop, signers, &hop_offers, cert.as_ref()).await?;
        let binding = conn.binding.clone();
        chain.push(Arc::new(conn.handle));
        last = Some(binding);
    }
    let handle = chain.last().expect("the destination").clone();
    if target.forward_agent {
        if let Some(binding) = &last {
            let f =
                agent_forward::Forwarded::new(signers.agent.clone(), binding, &target.host_port());
            let _ = services.agent.set(f);
        }
    }
    services
        .remotes
        .request(&handle, &forwards.remote, target.exit_on_forward_failure)
        .await?;
    let mut tasks = vec![];
    for f in &forwards.local {
        tasks.push(forward::start(handle.clone(), f.clone()).await?);
    }
    for (bind, port) in &forwards.dynamic {
        tasks.push(forward::start_dynamic(handle.clone(), bind.clone(), *port).await?);
    }
    let remote_command: Vec<String> = target.remote_command.iter().cloned().collect();
    let command = if opts.command.is_empty() {
        &remote_command
    } else {
        &opts.command
    };
    let ended = if opts.no_command || target.no_session {
        session::wait_closed(&handle).await
    } else {
        let tty = match (opts.tty, target.request_tty) {
            (Tty::Auto, RequestTty::No) => Tty::No,
            (Tty::Auto, RequestTty::Yes) => Tty::Want,
            (Tty::Auto, RequestTty::Force) => Tty::Force,
            (t, _) => t,
        };
        session::run(
            &handle,
            session::Request {
                command,
                tty,
                host: &target.host,
                forward_agent: target.forward_agent,
                env: environment(target),
            },
        )
        .await?
    };
    for t in tasks {
        t.abort();
    }
    drop(chain);
    Ok(ended)
}

/// `SetEnv` pairs, then the variables of this process `SendEnv` names.
fn environment(t: &Target) -> Vec<(String, String)> {
    let mut env = t.set_env.clone();
    for (k, v) in std::env::vars() {
        if t.send_env
            .iter()
            .any(|p| vmux_proto::ssh_config::glob_exact(p, &k))
            && !env.iter().any(|(x, _)| *x == k)
        {
            env.push((k, v));
        }
    }
    env
}
