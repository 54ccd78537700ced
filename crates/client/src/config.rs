//! Where `vmux ssh` connects and how, as ssh(1) decides it: the command line first, then
//! the config files (`~/.ssh/config`, then `/etc/ssh/ssh_config`, or `-F FILE`), the
//! first value obtained winning (ssh_config(5)). The files are read by the tree's one
//! ssh_config parser (`vmux_proto::ssh_config`), as strictly as ssh reads them: an
//! unknown keyword is an error naming file and line. Of the keywords OpenSSH knows,
//! each is used here, or is refused when vmux cannot do what it asks and that matters
//! (`ProxyCommand`), or is named once in a warning when it does not (`Ciphers`), or has
//! nothing to do with a client whose keys are on a signer (`IdentityAgent`).

use crate::ClientError;
use std::collections::BTreeSet;
use std::path::PathBuf;
use vmux_proto::ssh_config::{self, Config, ConfigError, Directive, Lookup, Visitor};

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
    fn parse(v: &str) -> Option<Strict> {
        match v.to_ascii_lowercase().as_str() {
            "yes" | "true" => Some(Strict::Yes),
            "ask" => Some(Strict::Ask),
            "accept-new" => Some(Strict::AcceptNew),
            "no" | "off" | "false" => Some(Strict::No),
            _ => None,
        }
    }
}

/// `RequestTTY`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestTty {
    Auto,
    No,
    Yes,
    Force,
}

/// What the command line says, before the config files are read.
#[derive(Debug, Default, Clone)]
pub struct CommandLine {
    /// The destination as typed: `host`, `user@host`, `ssh://user@host:port`.
    pub destination: String,
    pub user: Option<String>,
    pub port: Option<u16>,
    /// `-o Key=Value` in the order given.
    pub options: Vec<String>,
    /// `-J` jump hosts (`none` turns off a configured ProxyJump).
    pub jump: Option<String>,
    /// `-i FILE`: offer only these keys (public key files, or a key whose `.pub` is beside it).
    pub identity_files: Vec<String>,
    /// `-A` (true) / `-a` (false).
    pub forward_agent: Option<bool>,
    /// `-L`, `-R`, `-D` specs.
    pub local_forwards: Vec<String>,
    pub remote_forwards: Vec<String>,
    pub dynamic_forwards: Vec<String>,
}

/// Everything resolved: where to dial, how to check the host, what to set up.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// The name the user typed (an alias, possibly).
    pub alias: String,
    /// The host actually dialled (`HostName`, else the alias).
    pub host: String,
    pub port: u16,
    pub user: String,
    pub strict: Strict,
    /// `UserKnownHostsFile`: read, and the first is where new keys are added.
    pub known_hosts: Vec<PathBuf>,
    /// `GlobalKnownHostsFile`: read only.
    pub global_known_hosts: Vec<PathBuf>,
    /// Write new known_hosts entries hashed (`HashKnownHosts yes`).
    pub hash_known_hosts: bool,
    /// `HostKeyAlias`: the name host keys are looked up and recorded under.
    pub host_key_alias: Option<String>,
    pub connect_timeout: Option<u64>,
    /// `BatchMode yes`: never ask at the terminal.
    pub batch_mode: bool,
    /// Hosts to go through first (`ProxyJump`/`-J`), the first hop first.
    pub jumps: Vec<Target>,
    /// `IdentityFile`s (command line first) and whether only they are offered.
    pub identity_files: Vec<PathBuf>,
    pub identities_only: bool,
    pub forward_agent: bool,
    pub local_forwards: Vec<String>,
    pub remote_forwards: Vec<String>,
    pub dynamic_forwards: Vec<String>,
    pub exit_on_forward_failure: bool,
    /// `GatewayPorts yes`: local forwards without a bind address listen on every address.
    pub gateway_ports: bool,
    pub server_alive_interval: Option<u64>,
    pub server_alive_count_max: Option<usize>,
    pub request_tty: RequestTty,
    pub remote_command: Option<String>,
    /// `SessionType none` (as `-N`).
    pub no_session: bool,
    /// `SendEnv` patterns and `SetEnv` pairs.
    pub send_env: Vec<String>,
    pub set_env: Vec<(String, String)>,
    /// One line for each option that was given but does nothing here (printed once).
    pub warnings: Vec<String>,
}

impl Target {
    /// The name known_hosts uses for this host: `host`, or `[host]:port` off port 22
    /// (`HostKeyAlias` instead of the host when set).
    pub fn known_hosts_name(&self) -> String {
        ssh_config::known_hosts_name(
            self.host_key_alias.as_ref().unwrap_or(&self.host),
            self.port,
        )
    }

    /// `host` on port 22, else `host:port`: how the signer shows and pins it.
    pub fn host_port(&self) -> String {
        ssh_config::host_port_name(&self.host, self.port)
    }

    /// Every known_hosts file that is read: the user's, then the global ones.
    pub fn all_known_hosts(&self) -> Vec<PathBuf> {
        self.known_hosts
            .iter()
            .chain(&self.global_known_hosts)
            .cloned()
            .collect()
    }
}

/// What one keyword means to vmux ssh.
enum Support {
    /// Read and used.
    Used,
    /// Nothing to do with a client whose keys live on a signer (or without effect in
    /// OpenSSH itself): accepted silently.
    Quiet,
    /// Not done here, and the connection is the same without it: named once.
    Warn(&'static str),
    /// Not done here, and it would change where or how the connection goes: refused,
    /// unless the value is one of these (off).
    Refuse(&'static str, &'static [&'static str]),
}

fn support(keyword: &str) -> Support {
    use Support::*;
    match keyword {
        "hostname" | "user" | "port" | "stricthostkeychecking" | "userknownhostsfile"
        | "globalknownhostsfile" | "hashknownhosts" | "connecttimeout" | "hostkeyalias"
        | "batchmode" | "proxyjump" | "identityfile" | "identityfile2" | "identitiesonly"
        | "forwardagent" | "localforward" | "remoteforward" | "dynamicforward"
        | "exitonforwardfailure" | "gatewayports" | "clearallforwardings"
        | "serveraliveinterval" | "serveralivecountmax" | "requesttty" | "remotecommand"
        | "sessiontype" | "sendenv" | "setenv" => Used,
        "proxycommand" => Refuse(
            "vmux ssh cannot run a proxy command; use ProxyJump (-J) instead",
            &["none"],
        ),
        "knownhostscommand" => Refuse(
            "vmux ssh reads known_hosts files only, not a command's output",
            &["none"],
        ),
        "revokedhostkeys" => Refuse(
            "vmux ssh does not read RevokedHostKeys files (mark revoked keys with @revoked in known_hosts)",
            &["none"],
        ),
        "canonicalizehostname" => Refuse(
            "vmux ssh does not canonicalize host names",
            &["no", "false"],
        ),
        "tunnel" => Refuse("vmux ssh does not forward tun devices", &["no", "false"]),
        "forkafterauthentication" => Refuse(
            "vmux ssh does not go to the background (-f)",
            &["no", "false"],
        ),
        "pubkeyauthentication" | "dsaauthentication" => Refuse(
            "vmux ssh authenticates with the signer's public keys only",
            &["yes", "true", "unbound", "host-bound"],
        ),
        "ciphers" | "macs" | "kexalgorithms" | "hostkeyalgorithms" | "pubkeyacceptedalgorithms"
        | "pubkeyacceptedkeytypes" | "casignaturealgorithms" | "hostbasedacceptedalgorithms"
        | "hostbasedkeytypes" | "rekeylimit" | "requiredrsasize" => {
            Warn("vmux ssh negotiates its own algorithms (russh's defaults)")
        }
        "compression" => Warn("vmux ssh does not compress"),
        "controlmaster" | "controlpath" | "controlpersist" => {
            Warn("vmux ssh does not share connections; each one is its own login")
        }
        "forwardx11" | "forwardx11trusted" => Warn("vmux ssh does not forward X11"),
        "localcommand" => Warn("vmux ssh does not run local commands"),
        "bindaddress" | "bindinterface" => Warn("vmux ssh binds no particular local address"),
        "addressfamily" => Warn("vmux ssh uses every address family"),
        "connectionattempts" => Warn("vmux ssh dials once"),
        "stdinnull" => Warn("vmux ssh reads stdin (use -N or </dev/null)"),
        "verifyhostkeydns" => Warn("vmux ssh does not look host keys up in DNS"),
        "permitremoteopen" => Warn("vmux ssh does not restrict remote opens"),
        "certificatefile" => {
            Warn("vmux ssh logs in with the signer's keys, or with --cert a certificate of its own")
        }
        "pkcs11provider" | "smartcarddevice" | "securitykeyprovider" => {
            Warn("vmux ssh offers only the signer's keys")
        }
        "updatehostkeys" => Warn("vmux ssh does not learn new host keys from the server"),
        _ => Quiet,
    }
}

/// The values that leave an option off, so no warning is due.
fn is_off(keyword: &str, v: &str) -> bool {
    let v = v.to_ascii_lowercase();
    match keyword {
        "compression" | "forwardx11" | "forwardx11trusted" | "verifyhostkeydns" | "stdinnull" => {
            v == "no" || v == "false"
        }
        "controlmaster" => v == "no" || v == "false",
        "controlpath" | "localcommand" | "certificatefile" | "pkcs11provider"
        | "smartcarddevice" | "bindaddress" | "bindinterface" => v == "none",
        "controlpersist" => v == "no" || v == "false" || v == "0",
        "addressfamily" => v == "any",
        "connectionattempts" => v == "1",
        "updatehostkeys" => v == "no" || v == "false",
        "securitykeyprovider" => v == "internal",
        _ => false,
    }
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

/// One `-J`/`ProxyJump` hop: `[user@]host[:port]` or `ssh://[user@]host[:port]`.
fn split_jump(j: &str) -> Result<(Option<String>, String, Option<u16>), ClientError> {
    if j.starts_with("ssh://") {
        return split_destination(j);
    }
    let (user, hostport) = match j.rsplit_once('@') {
        Some((u, h)) => (Some(u.to_string()), h),
        None => (None, j),
    };
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, p) = v6
            .split_once(']')
            .ok_or_else(|| ClientError::Config(format!("jump host {j:?}: unclosed [")))?;
        (h.to_string(), p.strip_prefix(':'))
    } else {
        match hostport.split_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (hostport.to_string(), None),
        }
    };
    let port = port
        .map(|p| {
            p.parse::<u16>()
                .map_err(|_| ClientError::Config(format!("jump host {j:?}: bad port {p:?}")))
        })
        .transpose()?;
    let (_, host, _) = split_destination(&host)?;
    Ok((user.filter(|u| !u.is_empty()), host, port))
}

/// The config files to read: `~/.ssh/config` then `/etc/ssh/ssh_config` (ssh's
/// default), the text of `-F FILE`, or none.
#[derive(Debug, Clone, Default)]
pub enum Files {
    #[default]
    Default,
    /// `-F FILE` (its includes relative to `~/.ssh`).
    Given(PathBuf),
    /// `-F none`, or config text given inline (tests, fuzzing).
    None,
    Text(String),
}

impl Files {
    fn load(&self) -> Result<Vec<Config>, ClientError> {
        let ssh_dir = vmux_proto::store::home_dir().join(".ssh");
        let includes = ssh_config::Includes {
            base: Some(ssh_dir),
        };
        Ok(match self {
            Files::Default => ssh_config::user_and_system(),
            Files::Given(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| {
                    ClientError::Config(format!("Can't open user config file {}: {e}", p.display()))
                })?;
                vec![ssh_config::parse(
                    &text,
                    &p.display().to_string(),
                    &includes,
                )]
            }
            Files::None => vec![],
            Files::Text(t) => vec![ssh_config::parse(t, "config", &Default::default())],
        })
    }
}

/// Resolve `cl` against the config files.
pub fn resolve(cl: &CommandLine, files: &Files) -> Result<Target, ClientError> {
    let configs = files.load()?;
    let refs: Vec<&Config> = configs.iter().collect();
    resolve_with(cl, &refs, 0)
}

fn resolve_with(cl: &CommandLine, files: &[&Config], depth: usize) -> Result<Target, ClientError> {
    if depth > 8 {
        return Err(ClientError::Config(
            "ProxyJump: more than 8 hops (is there a loop in the jump hosts?)".into(),
        ));
    }
    let (dest_user, alias, dest_port) = split_destination(&cl.destination)?;
    let mut f = Found {
        alias: alias.clone(),
        user: cl.user.clone().or(dest_user),
        port: cl.port.or(dest_port),
        jump: cl.jump.clone(),
        forward_agent: cl.forward_agent,
        identity_files: cl.identity_files.clone(),
        identities_only: (!cl.identity_files.is_empty()).then_some(true),
        local_forwards: cl.local_forwards.clone(),
        remote_forwards: cl.remote_forwards.clone(),
        dynamic_forwards: cl.dynamic_forwards.clone(),
        ..Found::default()
    };
    let mut command_line = vec![];
    for o in &cl.options {
        command_line.push(ssh_config::command_line_option(o).map_err(|e| config_errors(&[e]))?);
    }
    let mut all: Vec<&Config> = command_line.iter().collect();
    all.extend_from_slice(files);
    let local = local_user();
    let errors = ssh_config::evaluate(
        &all,
        &Lookup {
            host: &alias,
            local_user: &local,
        },
        &mut f,
    );
    if !errors.is_empty() {
        return Err(config_errors(&errors));
    }
    if let Some((d, why)) = f.refused.first() {
        return Err(ClientError::Config(format!(
            "{}: line {}: {} {}: {why}",
            d.file,
            d.line,
            d.keyword,
            d.args.join(" ")
        )));
    }
    let home = vmux_proto::store::home_dir();
    let host = f.host_name.clone().unwrap_or_else(|| alias.clone());
    let port = f.port.unwrap_or(22);
    let user = f.user.clone().unwrap_or_else(|| local.clone());
    let tokens = Tokens {
        host: &host,
        alias: &alias,
        port,
        user: &user,
        local: &local,
    };
    let mut jumps = vec![];
    if let Some(j) = f
        .jump
        .as_deref()
        .filter(|j| !j.eq_ignore_ascii_case("none"))
    {
        for hop in j.split(',') {
            let (user, host, port) = split_jump(hop.trim())?;
            // A host is not its own jump host (a `ProxyJump` under `Host *`).
            if host == alias && port.is_none_or(|p| Some(p) == f.port.or(Some(22))) {
                continue;
            }
            let hop_cl = CommandLine {
                destination: host,
                user,
                port,
                ..Default::default()
            };
            let mut t = resolve_with(&hop_cl, files, depth + 1)?;
            // A jump host's own jump hosts come before it.
            jumps.append(&mut t.jumps);
            f.warnings.append(&mut t.warnings);
            jumps.push(t);
        }
    }
    let warnings = unique(f.warnings.clone());
    // A final pass (`Match final`) sees list options a second time.
    let (mut local_forwards, mut remote_forwards, mut dynamic_forwards) = (
        unique(f.local_forwards),
        unique(f.remote_forwards),
        unique(f.dynamic_forwards),
    );
    if f.clear_all_forwardings == Some(true) {
        local_forwards.clear();
        remote_forwards.clear();
        dynamic_forwards.clear();
    }
    Ok(Target {
        jumps,
        alias: alias.clone(),
        port,
        strict: f.strict.unwrap_or(Strict::Ask),
        known_hosts: f
            .known_hosts
            .map(|v| v.iter().map(|p| tokens.path(p)).collect())
            .unwrap_or_else(|| {
                vec![
                    home.join(".ssh/known_hosts"),
                    home.join(".ssh/known_hosts2"),
                ]
            }),
        global_known_hosts: f
            .global_known_hosts
            .map(|v| v.iter().map(|p| tokens.path(p)).collect())
            .unwrap_or_else(|| {
                vec![
                    PathBuf::from("/etc/ssh/ssh_known_hosts"),
                    PathBuf::from("/etc/ssh/ssh_known_hosts2"),
                ]
            }),
        hash_known_hosts: f.hash.unwrap_or(false),
        host_key_alias: f.host_key_alias,
        connect_timeout: f.connect_timeout,
        batch_mode: f.batch_mode.unwrap_or(false),
        identity_files: unique(f.identity_files)
            .iter()
            .map(|p| tokens.path(p))
            .collect(),
        identities_only: f.identities_only.unwrap_or(false),
        forward_agent: f.forward_agent.unwrap_or(false),
        local_forwards,
        remote_forwards,
        dynamic_forwards,
        exit_on_forward_failure: f.exit_on_forward_failure.unwrap_or(false),
        gateway_ports: f.gateway_ports.unwrap_or(false),
        server_alive_interval: f.server_alive_interval,
        server_alive_count_max: f.server_alive_count_max,
        request_tty: f.request_tty.unwrap_or(RequestTty::Auto),
        remote_command: f.remote_command,
        no_session: f.no_session.unwrap_or(false),
        send_env: unique(f.send_env),
        set_env: f.set_env,
        user,
        host,
        warnings,
    })
}

/// `v` without repeats, in first-seen order.
fn unique(v: Vec<String>) -> Vec<String> {
    let mut seen = BTreeSet::new();
    v.into_iter().filter(|x| seen.insert(x.clone())).collect()
}

/// Every bad line, then the count, as ssh reports them.
fn config_errors(errors: &[ConfigError]) -> ClientError {
    let mut lines: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    if let Some(first) = errors.first() {
        lines.push(format!(
            "{}: terminating, {} bad configuration options",
            first.file,
            errors.len()
        ));
    }
    ClientError::Config(lines.join("\n"))
}

/// `%h`, `%n`, `%p`, `%r`, `%u`, `%d`, `%%` and a leading `~`, as ssh expands paths.
struct Tokens<'a> {
    host: &'a str,
    alias: &'a str,
    port: u16,
    user: &'a str,
    local: &'a str,
}

impl Tokens<'_> {
    fn expand(&self, s: &str) -> String {
        let home = vmux_proto::store::home_dir().display().to_string();
        let mut out = String::new();
        let mut chars = s.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                out.push(c);
                continue;
            }
            match chars.next() {
                Some('h') => out.push_str(self.host),
                Some('n') => out.push_str(self.alias),
                Some('p') => out.push_str(&self.port.to_string()),
                Some('r') => out.push_str(self.user),
                Some('u') => out.push_str(self.local),
                Some('d') => out.push_str(&home),
                Some('%') => out.push('%'),
                Some(o) => {
                    out.push('%');
                    out.push(o);
                }
                None => out.push('%'),
            }
        }
        out
    }

    fn path(&self, p: &str) -> PathBuf {
        let p = self.expand(p);
        match p.strip_prefix("~/") {
            Some(rest) => vmux_proto::store::home_dir().join(rest),
            None if p == "~" => vmux_proto::store::home_dir(),
            None => PathBuf::from(p),
        }
    }
}

/// Values as found, the first one winning (lists accumulate, as in ssh).
#[derive(Default)]
struct Found {
    alias: String,
    host_name: Option<String>,
    user: Option<String>,
    port: Option<u16>,
    strict: Option<Strict>,
    known_hosts: Option<Vec<String>>,
    global_known_hosts: Option<Vec<String>>,
    hash: Option<bool>,
    host_key_alias: Option<String>,
    connect_timeout: Option<u64>,
    batch_mode: Option<bool>,
    jump: Option<String>,
    identity_files: Vec<String>,
    identities_only: Option<bool>,
    forward_agent: Option<bool>,
    local_forwards: Vec<String>,
    remote_forwards: Vec<String>,
    dynamic_forwards: Vec<String>,
    exit_on_forward_failure: Option<bool>,
    gateway_ports: Option<bool>,
    clear_all_forwardings: Option<bool>,
    server_alive_interval: Option<u64>,
    server_alive_count_max: Option<usize>,
    request_tty: Option<RequestTty>,
    remote_command: Option<String>,
    no_session: Option<bool>,
    send_env: Vec<String>,
    set_env: Vec<(String, String)>,
    /// Keywords already warned about (once each).
    warned: BTreeSet<String>,
    warnings: Vec<String>,
    refused: Vec<(Directive, &'static str)>,
}

fn flag(d: &Directive) -> Result<bool, ConfigError> {
    match d.value().to_ascii_lowercase().as_str() {
        "yes" | "true" => Ok(true),
        "no" | "false" => Ok(false),
        other => Err(d.error(format!("unsupported option \"{other}\"."))),
    }
}

fn number<T: std::str::FromStr>(d: &Directive, what: &str) -> Result<T, ConfigError> {
    d.value()
        .parse()
        .map_err(|_| d.error(format!("{what} \"{}\"", d.value())))
}

/// `ConnectTimeout`, `ServerAliveInterval`: seconds, or ssh's time format (`1m30s`).
fn seconds(d: &Directive) -> Result<u64, ConfigError> {
    let v = d.value().to_ascii_lowercase();
    let (mut total, mut n) = (0u64, String::new());
    for c in v.chars() {
        if c.is_ascii_digit() {
            n.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            'w' => 604800,
            _ => return Err(d.error("invalid time value.")),
        };
        let x: u64 = n.parse().map_err(|_| d.error("invalid time value."))?;
        total = total.saturating_add(x.saturating_mul(unit));
        n.clear();
    }
    if !n.is_empty() {
        total = total.saturating_add(
            n.parse::<u64>()
                .map_err(|_| d.error("invalid time value."))?,
        );
    }
    Ok(total)
}

impl Visitor for Found {
    fn match_host(&self) -> String {
        match &self.host_name {
            Some(h) => h.replace("%h", &self.alias),
            None => self.alias.clone(),
        }
    }

    fn match_user(&self) -> String {
        self.user.clone().unwrap_or_else(local_user)
    }

    fn option(&mut self, d: &Directive, active: bool) -> Result<(), ConfigError> {
        match support(&d.keyword) {
            Support::Used => self.used(d, active),
            Support::Quiet => Ok(()),
            Support::Warn(why) => {
                if active && !is_off(&d.keyword, d.value()) && self.warned.insert(d.keyword.clone())
                {
                    self.warnings.push(format!(
                        "{} ({} line {}) is not used: {why}",
                        d.keyword, d.file, d.line
                    ));
                }
                Ok(())
            }
            Support::Refuse(why, off) => {
                let is_off = off.iter().any(|o| d.value().eq_ignore_ascii_case(o));
                // First value wins: a refused option matters only if it is the one
                // obtained (ProxyJump and ProxyCommand exclude each other, the first wins).
                let shadowed = d.keyword == "proxycommand" && self.jump.is_some();
                let first = !(self.warned.contains(&d.keyword) || shadowed);
                if active && first {
                    self.warned.insert(d.keyword.clone());
                    if !is_off {
                        self.refused.push((d.clone(), why));
                    } else if d.keyword == "proxycommand" {
                        // `ProxyCommand none` sets the proxy: no ProxyJump after it.
                        self.jump.get_or_insert_with(|| "none".into());
                    }
                }
                Ok(())
            }
        }
    }
}

impl Found {
    fn used(&mut self, d: &Directive, active: bool) -> Result<(), ConfigError> {
        let v = d.value();
        // Every value is checked, whether or not its block applies (as ssh does).
        match d.keyword.as_str() {
            "port" => {
                let p: u16 = number(d, "Bad port")?;
                if p == 0 {
                    return Err(d.error("Bad port \"0\""));
                }
                if active && self.port.is_none() {
                    self.port = Some(p);
                }
            }
            "stricthostkeychecking" => {
                let s = Strict::parse(v)
                    .ok_or_else(|| d.error(format!("unsupported option \"{v}\".")))?;
                if active {
                    self.strict.get_or_insert(s);
                }
            }
            "connecttimeout" => {
                let s = (!v.eq_ignore_ascii_case("none"))
                    .then(|| seconds(d))
                    .transpose()?;
                if active && self.connect_timeout.is_none() {
                    self.connect_timeout = s;
                }
            }
            "serveraliveinterval" => {
                let s = seconds(d)?;
                if active && self.server_alive_interval.is_none() {
                    self.server_alive_interval = Some(s);
                }
            }
            "serveralivecountmax" => {
                let n: usize = number(d, "Bad number")?;
                if active {
                    self.server_alive_count_max.get_or_insert(n);
                }
            }
            "hashknownhosts"
            | "batchmode"
            | "identitiesonly"
            | "exitonforwardfailure"
            | "gatewayports"
            | "clearallforwardings" => {
                let b = flag(d)?;
                if active {
                    let slot = match d.keyword.as_str() {
                        "hashknownhosts" => &mut self.hash,
                        "batchmode" => &mut self.batch_mode,
                        "identitiesonly" => &mut self.identities_only,
                        "exitonforwardfailure" => &mut self.exit_on_forward_failure,
                        "gatewayports" => &mut self.gateway_ports,
                        _ => &mut self.clear_all_forwardings,
                    };
                    slot.get_or_insert(b);
                }
            }
            "forwardagent" => {
                // yes/no, or a socket to forward instead: vmux forwards its signer.
                let b = match v.to_ascii_lowercase().as_str() {
                    "yes" | "true" => true,
                    "no" | "false" => false,
                    _ => {
                        if active && self.warned.insert("forwardagent".into()) {
                            self.warnings.push(format!(
                                "ForwardAgent {v} ({} line {}): vmux ssh forwards an agent that reaches its signer, not another agent",
                                d.file, d.line
                            ));
                        }
                        true
                    }
                };
                if active {
                    self.forward_agent.get_or_insert(b);
                }
            }
            "requesttty" => {
                let t = match v.to_ascii_lowercase().as_str() {
                    "auto" => RequestTty::Auto,
                    "no" | "false" => RequestTty::No,
                    "yes" | "true" => RequestTty::Yes,
                    "force" => RequestTty::Force,
                    _ => return Err(d.error(format!("unsupported option \"{v}\"."))),
                };
                if active {
                    self.request_tty.get_or_insert(t);
                }
            }
            "sessiontype" => {
                let none = match v.to_ascii_lowercase().as_str() {
                    "none" => true,
                    "default" => false,
                    "subsystem" => {
                        return Err(d.error("SessionType subsystem is not supported by vmux ssh"))
                    }
                    _ => return Err(d.error(format!("unsupported option \"{v}\"."))),
                };
                if active {
                    self.no_session.get_or_insert(none);
                }
            }
            _ if !active => {}
            "hostname" => {
                self.host_name
                    .get_or_insert_with(|| v.replace("%h", &self.alias).replace("%%", "%"));
            }
            "user" => {
                self.user.get_or_insert_with(|| v.to_string());
            }
            "hostkeyalias" => {
                self.host_key_alias.get_or_insert_with(|| v.to_string());
            }
            "remotecommand" if self.remote_command.is_none() && !v.eq_ignore_ascii_case("none") => {
                self.remote_command = Some(d.args.join(" "));
            }
            "userknownhostsfile" => {
                self.known_hosts.get_or_insert_with(|| d.args.clone());
            }
            "globalknownhostsfile" => {
                self.global_known_hosts
                    .get_or_insert_with(|| d.args.clone());
            }
            "proxyjump" => {
                self.jump.get_or_insert_with(|| v.to_string());
            }
            "identityfile" | "identityfile2" if !v.eq_ignore_ascii_case("none") => {
                self.identity_files.push(v.to_string());
            }
            "localforward" | "remoteforward" => {
                let spec = match d.args.get(1) {
                    Some(to) => format!("{v}:{to}"),
                    None if d.keyword == "remoteforward" => v.to_string(),
                    None => return Err(d.error("Missing target argument.")),
                };
                if d.keyword == "localforward" {
                    self.local_forwards.push(spec);
                } else {
                    self.remote_forwards.push(spec);
                }
            }
            "dynamicforward" => self.dynamic_forwards.push(v.to_string()),
            "sendenv" => {
                for a in &d.args {
                    match a.strip_prefix('-') {
                        Some(p) => self.send_env.retain(|e| !ssh_config::glob_exact(p, e)),
                        None => self.send_env.push(a.clone()),
                    }
                }
            }
            "setenv" => {
                for a in &d.args {
                    let (k, val) = a
                        .split_once('=')
                        .ok_or_else(|| d.error(format!("Invalid environment \"{a}\".")))?;
                    if !self.set_env.iter().any(|(x, _)| x == k) {
                        self.set_env.push((k.to_string(), val.to_string()));
                    }
                }
            }
            _ => {}
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn cl(dest: &str) -> CommandLine {
        CommandLine {
            destination: dest.into(),
            ..Default::default()
        }
    }

    fn text(t: &str) -> Files {
        Files::Text(t.into())
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
        let t = resolve(&cl("web"), &text(CONFIG)).unwrap();
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
        let t = resolve(&c, &text(CONFIG)).unwrap();
        assert_eq!(
            (t.user.as_str(), t.port, t.strict),
            ("alice", 2022, Strict::AcceptNew)
        );
    }

    #[test]
    fn negated_patterns_and_fallbacks() {
        let t = resolve(&cl("a.example.org"), &text(CONFIG)).unwrap();
        assert_eq!(
            (t.strict, t.user.as_str(), t.port),
            (Strict::Yes, "fallback", 22)
        );
        let t = resolve(&cl("bad.example.org"), &text(CONFIG)).unwrap();
        assert_eq!(t.strict, Strict::Ask);
        assert_eq!(t.known_hosts_name(), "bad.example.org");
        assert_eq!(t.host_port(), "bad.example.org");
        assert!(t
            .all_known_hosts()
            .contains(&PathBuf::from("/etc/ssh/ssh_known_hosts")));
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
        let mut t = resolve(&cl("127.0.0.1"), &Files::None).unwrap();
        t.port = 2222;
        assert_eq!(t.known_hosts_name(), "[127.0.0.1]:2222");
        assert_eq!(t.host_port(), "127.0.0.1:2222");
    }

    #[test]
    fn bad_lines_are_named_with_file_and_line() {
        let e = resolve(&cl("x"), &text("Port banana\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 1") && e.contains("banana"), "{e}");
        // A typo is an error, not a connection to port 22.
        let e = resolve(&cl("x"), &text("Host x\n  Prot 2213\n"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("config: line 2: Bad configuration option: prot"),
            "{e}"
        );
        assert!(
            e.contains("terminating, 1 bad configuration options"),
            "{e}"
        );
        let mut c = cl("x");
        c.options = vec!["StrictHostKeyChecking=maybe".into()];
        assert!(resolve(&c, &Files::None)
            .unwrap_err()
            .to_string()
            .contains("maybe"));
        c.options = vec!["Colour=blue".into()];
        let e = resolve(&c, &Files::None).unwrap_err().to_string();
        assert!(
            e.contains("command-line: line 0: Bad configuration option: colour"),
            "{e}"
        );
    }

    #[test]
    fn options_that_matter_are_refused_and_others_named_once() {
        let e = resolve(&cl("x"), &text("Host x\n ProxyCommand nc %h %p\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2") && e.contains("ProxyJump"), "{e}");
        // Not for another host, not when off, not after a ProxyJump.
        assert!(resolve(&cl("y"), &text("Host x\n ProxyCommand nc %h %p\n")).is_ok());
        assert!(resolve(&cl("x"), &text("ProxyCommand none\n")).is_ok());
        let t = resolve(&cl("x"), &text("Host x\nProxyJump j\nProxyCommand nc\n")).unwrap();
        assert_eq!(t.jumps.len(), 1);
        let t = resolve(
            &cl("x"),
            &text("Ciphers aes128-ctr\nHost *\nCiphers aes256-ctr\nCompression no\nIdentityAgent /x\n"),
        )
        .unwrap();
        assert_eq!(t.warnings.len(), 1, "{:?}", t.warnings);
        assert!(
            t.warnings[0].contains("ciphers (config line 1)"),
            "{:?}",
            t.warnings
        );
    }

    #[test]
    fn jump_hosts_resolve_through_the_config() {
        let cfg = "Host j1\n HostName jump.example\n User hop\n Port 2201\nHost far\n ProxyJump j1,me@j2:2202\n";
        let t = resolve(&cl("far"), &text(cfg)).unwrap();
        let hops: Vec<(String, u16, String)> = t
            .jumps
            .iter()
            .map(|j| (j.host.clone(), j.port, j.user.clone()))
            .collect();
        assert_eq!(
            hops,
            vec![
                ("jump.example".into(), 2201, "hop".into()),
                ("j2".into(), 2202, "me".into())
            ]
        );
        let mut c = cl("far");
        c.jump = Some("none".into());
        assert!(resolve(&c, &text(cfg)).unwrap().jumps.is_empty());
        let e = resolve(
            &cl("a"),
            &text("Host a\n ProxyJump b\nHost b\n ProxyJump a\n"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("loop"), "{e}");
    }

    #[test]
    fn identities_forwards_and_session_options() {
        let cfg = "Host h\n IdentityFile ~/.ssh/%r.pub\n LocalForward 8080 localhost:80\n RemoteForward 9000\n DynamicForward 1080\n ForwardAgent yes\n RequestTTY force\n RemoteCommand echo hi\n SendEnv LANG LC_*\n SetEnv A=1\n";
        let mut c = cl("bob@h");
        c.identity_files = vec!["/k.pub".into()];
        let t = resolve(&c, &text(cfg)).unwrap();
        let home = vmux_proto::store::home_dir();
        assert_eq!(
            t.identity_files,
            vec![PathBuf::from("/k.pub"), home.join(".ssh/bob.pub")]
        );
        assert!(t.identities_only && t.forward_agent);
        assert_eq!(t.local_forwards, vec!["8080:localhost:80"]);
        assert_eq!(t.remote_forwards, vec!["9000"]);
        assert_eq!(t.dynamic_forwards, vec!["1080"]);
        assert_eq!(t.request_tty, RequestTty::Force);
        assert_eq!(t.remote_command.as_deref(), Some("echo hi"));
        assert_eq!(t.send_env, vec!["LANG", "LC_*"]);
        assert_eq!(t.set_env, vec![("A".to_string(), "1".to_string())]);
        let t = resolve(
            &cl("h"),
            &text("ClearAllForwardings yes\nLocalForward 1 a:2\n"),
        )
        .unwrap();
        assert!(t.local_forwards.is_empty());
    }
}
