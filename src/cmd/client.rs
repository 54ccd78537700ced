//! `vmux client …` and `vmux ssh …`: the SSH client for a device without keys.

use clap::{ArgAction, Args, Subcommand};
use std::process::ExitCode;
use vmux_agent::AgentHome;
use vmux_client::config::{CommandLine, Files};
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

/// `vmux ssh`: ssh(1)'s options; the keys are the paired signer's. Options may follow
/// the destination, as with ssh; ssh options vmux does not implement are refused or
/// named (`-C` like `Compression`), never ignored in silence.
#[derive(Args)]
pub struct SshArgs {
    /// Port to connect to on the remote host.
    #[arg(short = 'p')]
    port: Option<u16>,
    /// User to log in as.
    #[arg(short = 'l')]
    login: Option<String>,
    /// An ssh_config option as Key=Value (an unknown one is an error, as in ssh).
    #[arg(short = 'o')]
    option: Vec<String>,
    /// Local port forward: [bind_address:]port:host:hostport.
    #[arg(short = 'L')]
    local: Vec<String>,
    /// Remote port forward: [bind_address:]port:host:hostport, or [bind_address:]port
    /// for a SOCKS server on this side.
    #[arg(short = 'R')]
    remote: Vec<String>,
    /// Dynamic port forward: a SOCKS4/5 server on [bind_address:]port whose connections
    /// go through the server.
    #[arg(short = 'D')]
    dynamic: Vec<String>,
    /// Jump hosts: [user@]host[:port][,…], each authenticated through the signer.
    #[arg(short = 'J')]
    jump: Option<String>,
    /// Offer only this key: a public key file (or a key whose .pub is beside it).
    #[arg(short = 'i')]
    identity: Vec<String>,
    /// Forward an agent that reaches the signer through this client (shown on the
    /// signer as forwarded via the host).
    #[arg(short = 'A')]
    forward_agent: bool,
    /// Do not forward the agent.
    #[arg(short = 'a')]
    no_forward_agent: bool,
    /// Debug lines to stderr (-vv, -vvv: more).
    #[arg(short = 'v', action = ArgAction::Count)]
    verbose: u8,
    /// Quiet: no warnings.
    #[arg(short = 'q')]
    quiet: bool,
    /// No remote command: only forward ports.
    #[arg(short = 'N')]
    no_command: bool,
    /// No pseudo-terminal.
    #[arg(short = 'T', conflicts_with = "tty")]
    no_tty: bool,
    /// Ask for a pseudo-terminal (twice: even when stdin is not a terminal).
    #[arg(short = 't', action = ArgAction::Count)]
    tty: u8,
    /// Read this ssh config instead of ~/.ssh/config and /etc/ssh/ssh_config (`none`: no config).
    #[arg(short = 'F')]
    config_file: Option<std::path::PathBuf>,
    /// The signer to use, and the only route tried: HOST:PORT (one paired signer) or
    /// ID=HOST:PORT; default: the paired signer where it was last seen, or found by mDNS.
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

impl SshArgs {
    /// The log filter `-q` (errors only) or `-v`, `-vv`, `-vvv` (debug lines) ask for.
    pub fn log_flag(&self) -> Option<&'static str> {
        match (self.quiet, self.verbose) {
            (true, _) => Some("error"),
            (_, 0) => None,
            (_, 1) => Some("warn,vmux_client=debug,vmux_agent=debug,vmux_proto=debug"),
            (_, 2) => Some("debug"),
            _ => Some("trace"),
        }
    }
}

/// `vmux ssh`'s arguments as ssh reads them (see `vmux_client::args`): the process
/// arguments with those after `ssh` normalized, or the message and exit status.
pub fn normalize_args(argv: Vec<std::ffi::OsString>) -> Result<Vec<std::ffi::OsString>, i32> {
    if argv.get(1).is_none_or(|a| a != "ssh") {
        return Ok(argv);
    }
    let rest: Vec<String> = match argv[2..]
        .iter()
        .map(|a| a.clone().into_string())
        .collect::<Result<_, _>>()
    {
        Ok(r) => r,
        Err(a) => {
            eprintln!("vmux ssh: argument {a:?} is not UTF-8");
            return Err(255);
        }
    };
    match vmux_client::args::normalize(&rest) {
        Ok(n) => Ok(argv[..2]
            .iter()
            .cloned()
            .chain(n.into_iter().map(Into::into))
            .collect()),
        Err(vmux_client::args::ArgError::Version) => {
            println!("vmux {}", env!("CARGO_PKG_VERSION"));
            Err(0)
        }
        Err(vmux_client::args::ArgError::Bad(m)) => {
            eprintln!("vmux ssh: {m}\n{USAGE}");
            Err(255)
        }
    }
}

const USAGE: &str =
    "usage: vmux ssh [-AaNqTtv] [-D [bind_address:]port] [-F configfile] [-i identity_file]\n\
     \x20               [-J destination] [-L address] [-l login_name] [-o option] [-p port]\n\
     \x20               [-R address] [--signer HOST:PORT] [--cert] [--reconnect]\n\
     \x20               destination [command [argument ...]]\n\
     (vmux ssh --help describes each option)";

/// A clap error for `vmux ssh`, said as ssh would say it (no advice to put options
/// after `--`: options after the destination are options, as in ssh).
pub fn ssh_usage_error(e: &clap::Error) -> i32 {
    let text = e.render().to_string();
    let first: Vec<&str> = text
        .lines()
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("tip:"))
        .collect();
    let first = first.join(" ");
    let first = first.trim_start_matches("error: ");
    eprintln!("vmux ssh: {first}\n{USAGE}");
    255
}

pub async fn ssh(a: SshArgs) -> i32 {
    let files = match &a.config_file {
        Some(p) if p.as_os_str() == "none" => Files::None,
        Some(p) => Files::Given(p.clone()),
        None => Files::Default,
    };
    let opts = vmux_client::Options {
        command_line: CommandLine {
            destination: a.destination,
            user: a.login,
            port: a.port,
            options: a.option,
            jump: a.jump,
            identity_files: a.identity,
            forward_agent: match (a.forward_agent, a.no_forward_agent) {
                (true, _) => Some(true),
                (_, true) => Some(false),
                _ => None,
            },
            local_forwards: a.local,
            remote_forwards: a.remote,
            dynamic_forwards: a.dynamic,
        },
        command: a.command,
        tty: match (a.no_tty, a.tty) {
            (true, _) => Tty::No,
            (_, 0) => Tty::Auto,
            (_, 1) => Tty::Want,
            _ => Tty::Force,
        },
        no_command: a.no_command,
        quiet: a.quiet,
        signer: a.signer,
        reconnect: a.reconnect,
        cert: a.cert.then_some(a.cert_validity),
        vmux_home: vmux_proto::store::vmux_home(),
        files,
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
