//! Where `vmux ssh` connects, as ssh(1) would decide it: the command line first, then
//! `~/.ssh/config` `Host` blocks in order, the first value obtained winning
//! (ssh_config(5), "for each parameter, the first obtained value will be used").
//! Only the options that change what this client does are read; the others are
//! OpenSSH's own business and are ignored.

use crate::ClientError;
use std::path::{Path, PathBuf};
use vmux_agent::hostnames::host_matches;

/// `StrictHostKeyChecking`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strict {
    /// Unknown keys are refused.
    Yes,
    /// Unknown keys are shown and the person at this terminal decides (the default).
    Ask,
    /// Unknown keys are added; changed keys are still refused.
    AcceptNew,
    /// `no`/`off`: as `accept-new` here (a changed key is never accepted by vmux).
    No,
}

impl Strict {
    fn parse(v: &str) -> Result<Strict, ClientError> {
        match v.to_ascii_lowercase().as_str() {
            "yes" => Ok(Strict::Yes),
            "ask" => Ok(Strict::Ask),
            "accept-new" => Ok(Strict::AcceptNew),
            "no" | "off" => Ok(Strict::No),
            _ => Err(ClientError::Config(format!(
                "StrictHostKeyChecking {v:?}: use yes, ask, accept-new or no"
            ))),
        }
    }
}

/// What the command line says, before the config file is read.
#[derive(Debug, Default, Clone)]
pub struct CommandLine {
    /// The destination as typed: `host`, `user@host`, `ssh://user@host:port`.
    pub destination: String,
    pub user: Option<String>,
    pub port: Option<u16>,
    /// `-o Key=Value` in the order given.
    pub options: Vec<String>,
}

/// Everything resolved: where to dial and how to check the host.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// The name the user typed (an alias, possibly).
    pub alias: String,
    /// The host actually dialled (`HostName`, else the alias).
    pub host: String,
    pub port: u16,
    pub user: String,
    pub strict: Strict,
    pub known_hosts: Vec<PathBuf>,
    /// Write new known_hosts entries hashed (`HashKnownHosts yes`).
    pub hash_known_hosts: bool,
    pub connect_timeout: Option<u64>,
}

impl Target {
    /// The name known_hosts uses for this host: `host`, or `[host]:port` off port 22.
    pub fn known_hosts_name(&self) -> String {
        if self.port == 22 {
            self.host.clone()
        } else {
            format!("[{}]:{}", self.host, self.port)
        }
    }

    /// `host:port` as the signer shows it.
    pub fn host_port(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

#[derive(Default)]
struct Found {
    host_name: Option<String>,
    user: Option<String>,
    port: Option<u16>,
    strict: Option<Strict>,
    known_hosts: Option<Vec<PathBuf>>,
    hash: Option<bool>,
    connect_timeout: Option<u64>,
}

/// Split `ssh://user@host:port`, `user@host`, `host` into (user, host, port).
pub fn split_destination(d: &str) -> Result<(Option<String>, String, Option<u16>), ClientError> {
    let bad = || ClientError::Config(format!("destination {d:?}: expected [user@]host"));
    if let Some(rest) = d.strip_prefix("ssh://") {
        let rest = rest.trim_end_matches('/');
        let (user, hostport) = match rest.rsplit_once('@') {
            Some((u, h)) => (Some(u.to_string()), h),
            None => (None, rest),
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, p) = v6.split_once(']').ok_or_else(bad)?;
            (h.to_string(), p.strip_prefix(':'))
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (hostport.to_string(), None),
            }
        };
        let port = port
            .map(|p| p.parse::<u16>().map_err(|_| bad()))
            .transpose()?;
        return (!host.is_empty())
            .then_some((user, host, port))
            .ok_or_else(bad);
    }
    let (user, host) = match d.rsplit_once('@') {
        Some((u, h)) => (Some(u.to_string()), h),
        None => (None, d),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host.starts_with('-') || host.chars().any(char::is_whitespace) {
        return Err(bad());
    }
    Ok((user.filter(|u| !u.is_empty()), host.to_string(), None))
}

/// Resolve `cl` against ssh config text (`None`: no config file).
pub fn resolve(cl: &CommandLine, config: Option<&str>) -> Result<Target, ClientError> {
    let (dest_user, alias, dest_port) = split_destination(&cl.destination)?;
    let mut f = Found {
        user: cl.user.clone().or(dest_user),
        port: cl.port.or(dest_port),
        ..Found::default()
    };
    for o in &cl.options {
        let (k, v) = o
            .split_once('=')
            .or_else(|| o.split_once(char::is_whitespace))
            .ok_or_else(|| {
                ClientError::Config(format!("-o {o:?}: expected Key=Value (e.g. -o Port=2222)"))
            })?;
        if !apply(&mut f, k.trim(), v.trim(), &alias)? {
            eprintln!(
                "vmux ssh: option {} is not supported here; ignored",
                vmux_proto::text::field(k.trim())
            );
        }
    }
    if let Some(text) = config {
        let mut active = true;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (k, v) = line
                .split_once(|c: char| c.is_whitespace() || c == '=')
                .map(|(k, v)| (k, v.trim_start_matches([' ', '\t', '=']).trim()))
                .unwrap_or((line, ""));
            let v = v.trim_matches('"');
            match k.to_ascii_lowercase().as_str() {
                "host" => active = host_matches(v, &alias),
                // `Match` criteria (exec, user, …) are not evaluated: such blocks are
                // skipped rather than guessed at.
                "match" => active = v.trim().eq_ignore_ascii_case("all"),
                _ if active => {
                    apply(&mut f, k, v, &alias).map_err(|e| {
                        ClientError::Config(format!("ssh config line {}: {e}", n + 1))
                    })?;
                }
                _ => {}
            }
        }
    }
    let home = vmux_proto::store::home_dir();
    Ok(Target {
        host: f.host_name.unwrap_or_else(|| alias.clone()),
        alias,
        port: f.port.unwrap_or(22),
        user: f.user.unwrap_or_else(local_user),
        strict: f.strict.unwrap_or(Strict::Ask),
        known_hosts: f.known_hosts.unwrap_or_else(|| {
            vec![
                home.join(".ssh/known_hosts"),
                home.join(".ssh/known_hosts2"),
            ]
        }),
        hash_known_hosts: f.hash.unwrap_or(false),
        connect_timeout: f.connect_timeout,
    })
}

/// Set `k` if nothing set it before; `Ok(false)` for keys this client does not use.
fn apply(f: &mut Found, k: &str, v: &str, alias: &str) -> Result<bool, ClientError> {
    let bad = |what: &str| ClientError::Config(format!("{k} {v:?}: {what}"));
    let key = k.to_ascii_lowercase();
    const OURS: [&str; 7] = [
        "hostname",
        "user",
        "port",
        "stricthostkeychecking",
        "userknownhostsfile",
        "hashknownhosts",
        "connecttimeout",
    ];
    if OURS.contains(&key.as_str()) && v.trim().is_empty() {
        return Err(ClientError::Config(format!("{k}: missing value")));
    }
    match key.as_str() {
        "hostname" => {
            f.host_name
                .get_or_insert_with(|| v.replace("%h", alias).replace("%%", "%"));
        }
        "user" => {
            f.user.get_or_insert_with(|| v.to_string());
        }
        "port" => {
            if f.port.is_none() {
                f.port = Some(v.parse().map_err(|_| bad("not a port number"))?);
            }
        }
        "stricthostkeychecking" => {
            if f.strict.is_none() {
                f.strict = Some(Strict::parse(v)?);
            }
        }
        "userknownhostsfile" => {
            f.known_hosts
                .get_or_insert_with(|| v.split_whitespace().map(expand_tilde).collect());
        }
        "hashknownhosts" => {
            f.hash.get_or_insert(v.eq_ignore_ascii_case("yes"));
        }
        "connecttimeout" => {
            if f.connect_timeout.is_none() {
                f.connect_timeout = Some(v.parse().map_err(|_| bad("not a number of seconds"))?);
            }
        }
        _ => return Ok(false),
    }
    Ok(true)
}

fn expand_tilde(p: &str) -> PathBuf {
    match p.strip_prefix("~/") {
        Some(rest) => vmux_proto::store::home_dir().join(rest),
        None => PathBuf::from(p),
    }
}

/// The login name of this process's user (`$USER`, else the password database).
pub fn local_user() -> String {
    if let Some(u) = std::env::var("USER").ok().filter(|u| !u.is_empty()) {
        return u;
    }
    // SAFETY: getpwuid returns a pointer into static storage or NULL; read at once.
    unsafe {
        let pw = libc::getpwuid(libc::getuid());
        if !pw.is_null() && !(*pw).pw_name.is_null() {
            return std::ffi::CStr::from_ptr((*pw).pw_name)
                .to_string_lossy()
                .into_owned();
        }
    }
    "root".into()
}

/// `~/.ssh/config` when it exists.
pub fn read_user_config() -> Option<String> {
    read_config(&vmux_proto::store::home_dir().join(".ssh/config"))
}

fn read_config(p: &Path) -> Option<String> {
    std::fs::read_to_string(p).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cl(dest: &str) -> CommandLine {
        CommandLine {
            destination: dest.into(),
            ..Default::default()
        }
    }

    const CONFIG: &str = "\
# comment
Host web
    HostName web.example.org
    User deploy
    Port 2222
Host *.example.org !bad.example.org
    StrictHostKeyChecking yes
Host *
    User fallback
    Port 22
    UserKnownHostsFile /tmp/kh1 /tmp/kh2
";

    #[test]
    fn first_value_wins_and_command_line_first() {
        let t = resolve(&cl("web"), Some(CONFIG)).unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.user.as_str()),
            ("web.example.org", 2222, "deploy")
        );
        assert_eq!(
            t.known_hosts,
            vec![PathBuf::from("/tmp/kh1"), "/tmp/kh2".into()]
        );
        // Host patterns match the alias, not the HostName.
        assert_eq!(t.strict, Strict::Ask);
        let mut c = cl("alice@web");
        c.port = Some(2022);
        c.options = vec!["StrictHostKeyChecking=accept-new".into()];
        let t = resolve(&c, Some(CONFIG)).unwrap();
        assert_eq!(
            (t.user.as_str(), t.port, t.strict),
            ("alice", 2022, Strict::AcceptNew)
        );
    }

    #[test]
    fn negated_patterns_and_fallbacks() {
        let t = resolve(&cl("a.example.org"), Some(CONFIG)).unwrap();
        assert_eq!(
            (t.strict, t.user.as_str(), t.port),
            (Strict::Yes, "fallback", 22)
        );
        let t = resolve(&cl("bad.example.org"), Some(CONFIG)).unwrap();
        assert_eq!(t.strict, Strict::Ask);
        assert_eq!(t.known_hosts_name(), "bad.example.org");
    }

    #[test]
    fn destinations() {
        assert_eq!(
            split_destination("ssh://u@h:2200").unwrap(),
            (Some("u".into()), "h".into(), Some(2200))
        );
        assert_eq!(
            split_destination("ssh://[::1]:22").unwrap(),
            (None, "::1".into(), Some(22))
        );
        assert_eq!(
            split_destination("a@b@host").unwrap(),
            (Some("a@b".into()), "host".into(), None)
        );
        assert!(split_destination("-oProxyCommand=x").is_err());
        assert!(split_destination("u@").is_err());
        let mut t = resolve(&cl("127.0.0.1"), None).unwrap();
        t.port = 2222;
        assert_eq!(t.known_hosts_name(), "[127.0.0.1]:2222");
        assert_eq!(t.host_port(), "127.0.0.1:2222");
    }

    #[test]
    fn bad_values_are_named() {
        let e = resolve(&cl("x"), Some("Port banana\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 1") && e.contains("banana"), "{e}");
        let mut c = cl("x");
        c.options = vec!["StrictHostKeyChecking=maybe".into()];
        assert!(resolve(&c, None).unwrap_err().to_string().contains("maybe"));
        c.options = vec!["NoValue".into()];
        assert!(resolve(&c, None)
            .unwrap_err()
            .to_string()
            .contains("Key=Value"));
    }
}
