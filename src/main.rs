//! The `vmux` command: argument parsing and wiring only. The work happens in the
//! `vmux-agent`, `vmux-signer` and `vmux-proto` libraries.

mod cmd;
mod trim;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "vmux",
    version,
    about = "SSH keys that never leave a trusted device; a person approves every signature"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// One machine, one command: initialize (first run), pair, run signer and agent,
    /// and ask "Approve? [y/N]" here for every request.
    Up(cmd::up::UpArgs),
    /// The workstation side: an ssh-agent that forwards signatures to a paired signer.
    #[command(subcommand)]
    Agent(cmd::agent::AgentCmd),
    /// An SSH client for a device without keys: the paired signer signs each login.
    Ssh(cmd::client::SshArgs),
    /// The agent and the signer on this machine in one view (exit 0 when all is well;
    /// 3 agent not running, 4 signer not running, 5 a signer not connected, 6 nothing set up).
    Status {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// `vmux ssh`'s pairing with a signer.
    #[command(subcommand)]
    Client(cmd::client::ClientCmd),
    /// The key-holding side: keys, approval queue, link server.
    #[command(subcommand)]
    Signer(cmd::signer::SignerCmd),
    /// git commit and tag signing with a signer key, in one command.
    #[command(subcommand)]
    Git(cmd::git::GitCmd),
    /// A Host block that offers only the chosen keys through vmux (printed; --write
    /// puts it in ~/.ssh/config.d/vmux, included from ~/.ssh/config).
    SshConfig(cmd::ssh_config::SshConfigArgs),
    /// Check the setup; for each problem say what is wrong and the command that fixes it.
    Doctor(cmd::doctor::DoctorArgs),
    /// Print a shell completion script: `source <(vmux completions bash)`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Write a man page for every command into DIR (`man -l DIR/vmux-signer-approve.1`).
    Man {
        /// The directory to write the pages to (created if missing).
        dir: std::path::PathBuf,
    },
}

fn main() -> ExitCode {
    // Before any thread exists: take the passphrase out of the environment, so it is
    // not readable in /proc/PID/environ for as long as the process lives.
    cmd::take_secrets_from_env();
    // libtss2 prints its own warnings for every failed TCTI; vmux says what failed and
    // what to do. `TSS2_LOG=all+warning` brings them back.
    if std::env::var_os("TSS2_LOG").is_none() {
        std::env::set_var("TSS2_LOG", "all+none");
    }
    // Identities sealed with `vmux agent|client init --store tpm` open through the TPM
    // named by `tcti` in the config beside them, else TPM2TOOLS_TCTI / TCTI (default:
    // the kernel's resource manager).
    #[cfg(feature = "tpm")]
    vmux_proto::identity::set_unseal(|path, text| {
        use vmux_signer::keystore::tpm;
        let tcti = cmd::agent::configured_tcti(path)?;
        tpm::unseal(&tpm::tcti(tcti.as_deref()), text).map_err(|e| e.to_string())
    });
    // `vmux ssh` reads its arguments as ssh does (options after the destination,
    // ssh's other options named); its errors are said as ssh says them.
    let argv = match cmd::client::normalize_args(std::env::args_os().collect()) {
        Ok(a) => a,
        Err(code) => std::process::exit(code),
    };
    let is_ssh = argv.get(1).is_some_and(|a| a == "ssh");
    let cli = match Cli::try_parse_from(&argv) {
        Ok(c) => c,
        Err(e) if is_ssh && e.use_stderr() => std::process::exit(cmd::client::ssh_usage_error(&e)),
        Err(e) => e.exit(),
    };
    // One-shot commands end quietly when their reader goes away (`vmux signer log |
    // head`), as Unix tools do; daemons keep Rust's default (EPIPE as an error) so a
    // vanished socket peer never kills them.
    let daemon = matches!(
        cli.command,
        Command::Up(_)
            | Command::Agent(cmd::agent::AgentCmd::Run { .. })
            | Command::Signer(cmd::signer::SignerCmd::Run { .. })
    );
    if daemon {
        cmd::harden_daemon();
    } else {
        // SAFETY: restoring the default SIGPIPE disposition before any thread starts.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    use std::io::IsTerminal;
    use tracing_subscriber::{filter::Targets, prelude::*};
    // An SSH client's stderr belongs to the session: warnings only, unless -v asks for
    // debug lines or -q for errors only (both over VMUX_LOG, as flags given to this run).
    let (flag, default) = match &cli.command {
        Command::Ssh(a) => (a.log_flag(), "warn"),
        _ => (None, "info"),
    };
    // tss-esapi narrates every context it opens and closes, and repeats each failure in
    // its own words; vmux logs one line of its own for each TPM failure
    // (VMUX_LOG=info,tss_esapi=debug shows the library's).
    let with =
        |level: &str| -> Targets { format!("{level},tss_esapi=off").parse().unwrap_or_default() };
    // VMUX_LOG: `debug`, `warn,vmux_signer=trace` and the like (a level, then
    // `target=level` for the crates to tell apart); one that does not parse is named.
    let env_log = std::env::var("VMUX_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty());
    let (filter, bad_log) = match (flag, env_log) {
        (Some(level), _) => (with(level), None),
        (None, Some(v)) => match v.parse::<Targets>() {
            Ok(t) => (t, None),
            Err(e) => (with(default), Some(format!("VMUX_LOG={v:?} ignored: {e}"))),
        },
        (None, None) => (with(default), None),
    };
    // A sheet on the terminal sends stderr to a file and shows the latest line itself.
    let sheet_events = daemon.then_some(cmd::SheetEvents);
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                // A sheet sends stderr to a file: no colour codes for the daemons.
                .with_ansi(std::io::stderr().is_terminal() && !daemon)
                .with_writer(std::io::stderr)
                .with_target(false),
        )
        .with(sheet_events)
        .init();
    if let Some(why) = bad_log {
        tracing::warn!("{why} (example: VMUX_LOG=debug or VMUX_LOG=info,vmux_signer=debug)");
    }
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    // The agent and signer daemons answer small requests one after another: one worker
    // thread (blocking work still moves off it) saves the wake-ups and work stealing
    // between two, which cost more than they gave (8 clients signing with the session
    // certificate: p50 33 µs instead of 114-130 µs, as many or more requests a second;
    // the remote path's p50 a little lower too).
    if matches!(
        cli.command,
        Command::Agent(cmd::agent::AgentCmd::Run { .. })
            | Command::Signer(cmd::signer::SignerCmd::Run { .. })
    ) {
        rt.worker_threads(1);
    }
    let rt = rt.enable_all().build().expect("tokio runtime");
    if daemon {
        rt.spawn(trim::every_while());
    }
    let result = rt.block_on(async {
        match cli.command {
            Command::Up(a) => cmd::up::run(a).await,
            Command::Agent(c) => cmd::agent::run(c).await,
            Command::Signer(c) => cmd::signer::run(c).await,
            Command::Client(c) => cmd::client::run(c).await,
            Command::Status { json } => cmd::status::run(json).await,
            Command::Git(c) => cmd::git::run(c).await,
            Command::SshConfig(a) => cmd::ssh_config::run(a).await,
            Command::Doctor(a) => cmd::doctor::run(a).await,
            Command::Ssh(a) => {
                // The remote command's status, at once: a thread may still be blocked
                // reading stdin, which no runtime shutdown can interrupt.
                let code = cmd::client::ssh(a).await;
                use std::io::Write;
                let _ = std::io::stdout().flush();
                std::process::exit(code);
            }
            Command::Completions { shell } => {
                cmd::service::completions::<Cli>(shell);
                Ok(ExitCode::SUCCESS)
            }
            Command::Man { dir } => {
                for p in cmd::service::man_pages::<Cli>(&dir)? {
                    println!("{}", p.display());
                }
                Ok(ExitCode::SUCCESS)
            }
        }
    });
    // A thread blocked reading the terminal (the `vmux up` prompt) must not delay exit.
    rt.shutdown_timeout(std::time::Duration::from_millis(500));
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("vmux: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every subcommand and argument says what it is for in `--help`.
    #[test]
    fn every_command_and_argument_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for a in cmd.get_arguments() {
                let id = a.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                if a.get_help().is_none() && a.get_long_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for s in cmd.get_subcommands() {
                let p = format!("{path} {}", s.get_name());
                if s.get_about().is_none() && s.get_long_about().is_none() {
                    missing.push(p.clone());
                }
                walk(s, &p, missing);
            }
        }
        let mut missing = vec![];
        walk(&super::Cli::command(), "vmux", &mut missing);
        assert!(missing.is_empty(), "no --help text for: {missing:#?}");
    }
}
