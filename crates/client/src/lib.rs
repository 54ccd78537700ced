//! `vmux ssh`: an SSH client for a device that holds no keys. It finds the paired
//! signer, offers the signer's keys to the server, and asks the signer to sign only
//! for the key the server accepts, with the session binding it verified itself, so
//! the person there sees `user@host:port` and who vouches for it.
//!
//! A connection's path: `config` (where) → `dial` (TCP, key exchange, `known_hosts`,
//! authentication through `signer`) → `session` (PTY, command, exit status) and
//! `forward` (`-L`).

pub mod config;
pub mod dial;
pub mod error;
pub mod forward;
pub mod known_hosts;
pub mod session;
pub mod signer;
pub mod terminal;

pub use error::ClientError;

use config::{CommandLine, Target};
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
    pub local_forwards: Vec<String>,
    /// `--signer HOST:PORT` or `ID=HOST:PORT`.
    pub signer: Option<String>,
    /// Reconnect with back-off when the connection drops.
    pub reconnect: bool,
    /// Log in with a session certificate of this process's own (`Some(validity)`).
    pub cert: Option<u64>,
    /// The vmux home (state under `client/`).
    pub vmux_home: PathBuf,
    /// ssh config text (`None`: none).
    pub ssh_config: Option<String>,
}

/// Run the client; the result is the process exit status (255 for failures of the
/// connection itself, as ssh(1)).
pub async fn run(opts: Options) -> Result<i32, ClientError> {
    let target = config::resolve(&opts.command_line, opts.ssh_config.as_deref())?;
    let forwards = opts
        .local_forwards
        .iter()
        .map(|f| forward::parse(f))
        .collect::<Result<Vec<_>, _>>()?;
    let signers = signer::Signers::open(&opts.vmux_home)?;
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
    forwards: &[forward::LocalForward],
) -> Result<Ended, ClientError> {
    // The signer and the server at once: key exchange while the signer wakes up.
    let offers = {
        let s = signers.agent.clone();
        let reach = signer::Signers { agent: s };
        tokio::spawn(async move { reach.connect().await })
    };
    let mut conn = dial::connect(target).await?;
    let offers = offers.await.map_err(|_| ClientError::NoSigner)??;
    let config = &signers.agent.config;
    let cert = match opts.cert.or(config.ssh_cert.then_some(3600)) {
        Some(validity) => Some(signers.session_cert(validity).await?),
        None => None,
    };
    dial::authenticate(&mut conn, target, signers, &offers, cert.as_ref()).await?;
    let handle = Arc::new(conn.handle);
    let mut tasks = vec![];
    for f in forwards {
        tasks.push(forward::start(handle.clone(), f.clone()).await?);
    }
    let ended = if opts.no_command {
        session::wait_closed(&handle).await
    } else {
        session::run(&handle, &opts.command, opts.tty, &target.host).await?
    };
    for t in tasks {
        t.abort();
    }
    Ok(ended)
}
