//! Running as a service and fitting into the shell: systemd user units (launchd plists
//! on macOS), shell completions and man pages.

use anyhow::Context;
use clap::{Args, CommandFactory};
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct InstallArgs {
    /// Where to write the unit files (default: ~/.config/systemd/user, or
    /// ~/Library/LaunchAgents on macOS).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Print the files instead of writing them.
    #[arg(long)]
    print: bool,
    /// The binary the units start (default: this one). A package writes /usr/bin/vmux.
    #[arg(long, value_name = "PATH")]
    exe: Option<PathBuf>,
    /// The agent socket the socket unit listens on (default: the agent's configured
    /// one); a package writes `%h/.ssh/vmux-agent.sock`, systemd's specifier for the
    /// user's home.
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
}

/// Which daemon a unit runs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Daemon {
    Agent,
    Signer,
}

impl Daemon {
    fn name(self) -> &'static str {
        match self {
            Daemon::Agent => "vmux-agent",
            Daemon::Signer => "vmux-signer",
        }
    }
}

/// The unit files for `daemon`: (file name, contents).
pub fn units(daemon: Daemon, exe: &Path, agent_socket: &Path) -> Vec<(String, String)> {
    let env = match std::env::var_os("VMUX_HOME") {
        Some(h) if !h.is_empty() => format!(
            "Environment=VMUX_HOME={}\n",
            systemd_quote(&Path::new(&h).display().to_string())
        ),
        _ => String::new(),
    };
    let exe = systemd_quote(&exe.display().to_string());
    if cfg!(target_os = "macos") {
        let args = match daemon {
            Daemon::Agent => vec!["agent", "run"],
            Daemon::Signer => vec!["signer", "run", "--no-ui"],
        };
        let label = format!("dev.vmux.{}", &daemon.name()[5..]);
        let items: String = args
            .iter()
            .map(|a| format!("    <string>{a}</string>\n"))
            .collect();
        let plist = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
             <!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" \"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n\
             <plist version=\"1.0\">\n<dict>\n  <key>Label</key><string>{label}</string>\n  \
             <key>ProgramArguments</key>\n  <array>\n    <string>{exe}</string>\n{items}  </array>\n  \
             <key>RunAtLoad</key><true/>\n  <key>KeepAlive</key><true/>\n</dict>\n</plist>\n"
        );
        return vec![(format!("{label}.plist"), plist)];
    }
    match daemon {
        Daemon::Agent => vec![
            (
                "vmux-agent.socket".into(),
                format!(
                    "[Unit]\nDescription=vmux SSH agent socket (keys stay on the signer)\n\n\
                     [Socket]\nListenStream={}\nSocketMode=0600\nDirectoryMode=0700\n\n\
                     [Install]\nWantedBy=sockets.target\n",
                    agent_socket.display()
                ),
            ),
            (
                "vmux-agent.service".into(),
                format!(
                    "[Unit]\nDescription=vmux SSH agent (every signature is approved on the signer)\n\
                     Requires=vmux-agent.socket\nAfter=vmux-agent.socket\n\n\
                     [Service]\nType=simple\n{env}ExecStart={exe} agent run\nRestart=on-failure\n\n\
                     [Install]\nWantedBy=default.target\n"
                ),
            ),
        ],
        Daemon::Signer => vec![(
            "vmux-signer.service".into(),
            format!(
                "[Unit]\nDescription=vmux signer (holds the keys; a person approves every signature)\n\
                 After=network-online.target\n\n\
                 [Service]\nType=simple\n{env}ExecStart={exe} signer run --no-ui\nRestart=on-failure\n\n\
                 [Install]\nWantedBy=default.target\n"
            ),
        )],
    }
}

fn systemd_quote(s: &str) -> String {
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+@%:=".contains(c))
    {
        s.to_string()
    } else {
        format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

fn default_dir() -> PathBuf {
    let home = vmux_proto::store::home_dir();
    if cfg!(target_os = "macos") {
        return home.join("Library/LaunchAgents");
    }
    match std::env::var_os("XDG_CONFIG_HOME") {
        Some(x) if !x.is_empty() => PathBuf::from(x).join("systemd/user"),
        _ => home.join(".config/systemd/user"),
    }
}

/// `vmux agent|signer install-service`.
pub fn install(daemon: Daemon, args: InstallArgs, agent_socket: &Path) -> anyhow::Result<()> {
    let exe = match args.exe {
        Some(e) => e,
        None => std::env::current_exe().context("where is this vmux binary?")?,
    };
    let agent_socket = args.socket.as_deref().unwrap_or(agent_socket);
    let files = units(daemon, &exe, agent_socket);
    if args.print {
        for (name, text) in &files {
            println!("# {name}\n{text}");
        }
        return Ok(());
    }
    let dir = args.dir.unwrap_or_else(default_dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for (name, text) in &files {
        let path = dir.join(name);
        vmux_proto::store::write_atomic(&path, text.as_bytes(), 0o644)?;
        println!("wrote {}", path.display());
    }
    let main = &files[0].0;
    if cfg!(target_os = "macos") {
        println!(
            "enable: launchctl load -w {}\nuninstall: launchctl unload -w {0} && rm {0}",
            dir.join(main).display()
        );
    } else {
        let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
        println!(
            "enable:    systemctl --user daemon-reload && systemctl --user enable --now {main}\n\
             logs:      journalctl --user -u {}\n\
             uninstall: systemctl --user disable --now {main} && rm {}",
            daemon.name(),
            names
                .iter()
                .map(|n| dir.join(n).display().to_string())
                .collect::<Vec<_>>()
                .join(" ")
        );
        if daemon == Daemon::Agent {
            println!(
                "then:      export SSH_AUTH_SOCK={}   (in your shell profile)",
                agent_socket.display()
            );
        }
    }
    Ok(())
}

/// `vmux completions SHELL`: the completion script on stdout.
pub fn completions<C: CommandFactory>(shell: clap_complete::Shell) {
    let mut cmd = C::command();
    clap_complete::generate(shell, &mut cmd, "vmux", &mut std::io::stdout());
}

/// `vmux man DIR`: one page per command and subcommand (`vmux-signer-approve.1`, …).
pub fn man_pages<C: CommandFactory>(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut written = vec![];
    let mut cmd = C::command();
    cmd.build();
    write_pages(&cmd, "vmux", dir, &mut written)?;
    Ok(written)
}

fn write_pages(
    cmd: &clap::Command,
    name: &str,
    dir: &Path,
    written: &mut Vec<PathBuf>,
) -> anyhow::Result<()> {
    // clap wants a 'static name; this runs once per page in a short-lived command.
    let page = cmd
        .clone()
        .name(&*Box::leak(name.to_string().into_boxed_str()));
    let mut out = Vec::new();
    clap_mangen::Man::new(page).render(&mut out)?;
    let path = dir.join(format!("{name}.1"));
    std::fs::write(&path, out).with_context(|| format!("writing {}", path.display()))?;
    written.push(path);
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        write_pages(sub, &format!("{name}-{}", sub.get_name()), dir, written)?;
    }
    Ok(())
}

/// A listening socket handed over by systemd (socket activation, `LISTEN_FDS`), if any.
pub fn activated_listener() -> Option<std::os::unix::net::UnixListener> {
    use std::os::fd::FromRawFd;
    let pid: u32 = std::env::var("LISTEN_PID").ok()?.parse().ok()?;
    let fds: i32 = std::env::var("LISTEN_FDS").ok()?.parse().ok()?;
    if pid != std::process::id() || fds < 1 {
        return None;
    }
    // SAFETY: systemd passes the socket as fd 3 (SD_LISTEN_FDS_START) to this pid only;
    // it is ours from here on.
    let l = unsafe { std::os::unix::net::UnixListener::from_raw_fd(3) };
    l.set_nonblocking(true).ok()?;
    Some(l)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_name_the_binary_and_socket() {
        let u = units(
            Daemon::Agent,
            Path::new("/usr/bin/vmux"),
            Path::new("/home/a/.ssh/vmux-agent.sock"),
        );
        if cfg!(target_os = "macos") {
            return;
        }
        assert_eq!(u.len(), 2);
        assert!(u[0].1.contains("ListenStream=/home/a/.ssh/vmux-agent.sock"));
        assert!(u[1].1.contains("ExecStart=/usr/bin/vmux agent run"));
        let s = units(
            Daemon::Signer,
            Path::new("/opt/my vmux/vmux"),
            Path::new("/x"),
        );
        assert!(s[0]
            .1
            .contains("ExecStart=\"/opt/my vmux/vmux\" signer run --no-ui"));
    }
}
