//! `vmux client …` and `vmux ssh …`: the SSH client for a device without keys.

use clap::{ArgAction, Args, Subcommand};
use std::process::ExitCode;
use vmux_agent::AgentHome;
use vmux_client::config::CommandLine;
use vmux_client::session::Tty;

#[derive(Subcommand)]
pub enum ClientCmd {
    /// How `vmux ssh` reaches the signer beyond the local network: `anywhere [--relay
    /// URL]...` or `local` (the default).
    Reach(super::reach::ReachArgs),
    /// Pair this device's `vmux ssh` with the signer at HOST:PORT (or one found by
    /// mDNS): a device of its own on the signer, with its own link key.
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
    /// The signers `vmux ssh` is paired with and the keys it last saw.
    Status,
    /// `--store tpm` seals this client's link identity (`client/identity`) to the
    /// machine's TPM (the same key, so the pairing stays; a copied file is useless
    /// elsewhere), `--store file` turns it back into a 0600 file.
    Init {
        /// tpm or file.
        #[arg(long, value_parser = ["tpm", "file"], default_value = "file")]
        store: String,
    },
}

pub fn home() -> AgentHome {
    AgentHome::client(&vmux_proto::store::vmux_home())
}

pub async fn run(cmd: ClientCmd) -> anyhow::Result<ExitCode> {
    let home = home();
    match cmd {
        ClientCmd::Pair { address, id, wait } => {
            super::agent::pair(&home, address, id, wait).await?;
            println!("`vmux ssh USER@HOST` now signs through this signer");
        }
        ClientCmd::Init { store } => super::agent::init_identity(&home, &store)?,
        ClientCmd::Reach(a) => {
            return super::reach::run(super::reach::Device::Client, &home.dir, a).await
        }
        ClientCmd::Status => {
            let signers = home.load_signers()?;
            if signers.is_empty() {
                println!("not paired: run `vmux client pair HOST`");
                return Ok(ExitCode::from(3));
            }
            for s in &signers {
                println!(
                    "signer {:?} ({}) at {}",
                    vmux_proto::text::field(&s.name),
                    s.id,
                    s.address
                );
            }
            for k in home.load_keys()? {
                println!(
                    "  {}  {}  {}",
                    k.record.algorithm,
                    vmux_proto::identity::key_fingerprint(&k.record.public_key),
                    vmux_proto::text::field(&k.record.comment)
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `vmux ssh`: ssh(1)'s common options; the keys are the paired signer's.
#[derive(Args)]
pub struct SshArgs {
    /// Port to connect to on the remote host.
    #[arg(short = 'p')]
    port: Option<u16>,
    /// User to log in as.
    #[arg(short = 'l')]
    login: Option<String>,
    /// An ssh_config option as Key=Value (Port, User, HostName, StrictHostKeyChecking,
    /// UserKnownHostsFile, HashKnownHosts, ConnectTimeout).
    #[arg(short = 'o')]
    option: Vec<String>,
    /// Local port forward: [bind_address:]port:host:hostport.
    #[arg(short = 'L')]
    local: Vec<String>,
    /// No remote command: only forward ports.
    #[arg(short = 'N')]
    no_command: bool,
    /// No pseudo-terminal.
    #[arg(short = 'T', conflicts_with = "tty")]
    no_tty: bool,
    /// Ask for a pseudo-terminal (twice: even when stdin is not a terminal).
    #[arg(short = 't', action = ArgAction::Count)]
    tty: u8,
    /// Read this ssh config instead of ~/.ssh/config (`none`: no config).
    #[arg(short = 'F')]
    config_file: Option<std::path::PathBuf>,
    /// The signer to use: HOST:PORT (one paired signer) or ID=HOST:PORT; default: the
    /// paired signer where it was last seen, or found by mDNS.
    #[arg(long)]
    signer: Option<String>,
    /// When the connection drops, connect again with back-off (each time a new
    /// signature, approved on the signer).
    #[arg(long)]
    reconnect: bool,
    /// Log in with a session certificate of this process's own, from the signer's CA
    /// (approved once, kept in memory only, for --cert-validity), when the server
    /// trusts that CA; otherwise the signer's keys are used.
    #[arg(long)]
    cert: bool,
    /// How long the --cert certificate is valid: 30m, 1h, … (the signer caps it).
    #[arg(long, value_parser = super::parse_duration, default_value = "1h")]
    cert_validity: u64,
    /// [user@]host or ssh://[user@]host[:port].
    destination: String,
    /// The command to run instead of a shell.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

pub async fn ssh(a: SshArgs) -> i32 {
    let ssh_config = match &a.config_file {
        Some(p) if p.as_os_str() == "none" => None,
        Some(p) => match std::fs::read_to_string(p) {
            Ok(t) => Some(t),
            Err(e) => {
                eprintln!("vmux: ssh config {}: {e}", p.display());
                return 255;
            }
        },
        None => vmux_client::config::read_user_config(),
    };
    let opts = vmux_client::Options {
        command_line: CommandLine {
            destination: a.destination,
            user: a.login,
            port: a.port,
            options: a.option,
        },
        command: a.command,
        tty: match (a.no_tty, a.tty) {
            (true, _) => Tty::No,
            (_, 0) => Tty::Auto,
            (_, 1) => Tty::Want,
            _ => Tty::Force,
        },
        no_command: a.no_command,
        local_forwards: a.local,
        signer: a.signer,
        reconnect: a.reconnect,
        cert: a.cert.then_some(a.cert_validity),
        vmux_home: vmux_proto::store::vmux_home(),
        ssh_config,
    };
    match vmux_client::run(opts).await {
        Ok(code) => code.clamp(0, 255),
        Err(e) => {
            vmux_client::terminal::restore();
            eprintln!("vmux: {e}");
            255
        }
    }
}
