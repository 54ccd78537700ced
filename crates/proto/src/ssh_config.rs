//! ssh_config(5) as OpenSSH reads it, and the one glob of the tree. `vmux ssh` (which
//! must be as strict as ssh), the agent (which only wants `HostName` and `Port` to name
//! hosts in hashed known_hosts) and the signer's host policy all use this module.
//!
//! - [`glob`]: `*` and `?`, ASCII case-insensitive, without backtracking beyond the last
//!   `*` (the pattern is cut at its stars and each piece is found leftmost, which is
//!   exact for globs): at worst pattern × text steps, never exponential.
//! - [`parse`] / [`parse_file`]: a config file into `Host`, `Match`, `Include` and option
//!   lines, quoting as OpenSSH's `argv_split`, `Include` followed (globs, `~`, relative to
//!   `~/.ssh` or `/etc/ssh`, 16 deep at most).
//! - [`evaluate`]: which lines apply to one host, in order; every option line is passed
//!   to a [`Visitor`] (with whether it applies), and an unknown keyword is an error naming
//!   file and line, unless `IgnoreUnknown` covers it, as in OpenSSH.

use std::path::{Path, PathBuf};
use std::sync::Arc;

/// `*` and `?` globbing, ASCII case-insensitive, as ssh_config, known_hosts and the
/// signer's host policy match names.
pub fn glob(pattern: &str, text: &str) -> bool {
    glob_bytes(pattern.as_bytes(), text.as_bytes(), true)
}

/// [`glob`], case-sensitive (user names, as `Match user`).
pub fn glob_exact(pattern: &str, text: &str) -> bool {
    glob_bytes(pattern.as_bytes(), text.as_bytes(), false)
}

fn glob_bytes(p: &[u8], t: &[u8], fold: bool) -> bool {
    let same = |a: &[u8], b: &[u8]| {
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|(&x, &y)| x == b'?' || x == y || (fold && x.eq_ignore_ascii_case(&y)))
    };
    let first = p.split(|&c| c == b'*').next().unwrap_or_default();
    let Some(last_star) = p.iter().rposition(|&c| c == b'*') else {
        return same(p, t);
    };
    let last = &p[last_star + 1..];
    if t.len() < first.len() + last.len()
        || !same(first, &t[..first.len()])
        || !same(last, &t[t.len() - last.len()..])
    {
        return false;
    }
    // The pieces between the first and the last star, each at its leftmost place:
    // taking the leftmost never loses a match, so nothing is ever tried twice.
    let (mut at, end) = (first.len(), t.len() - last.len());
    let middle: Vec<&[u8]> = p[first.len()..last_star]
        .split(|&c| c == b'*')
        .filter(|s| !s.is_empty())
        .collect();
    for piece in middle {
        let mut i = at;
        while i + piece.len() <= end && !same(piece, &t[i..i + piece.len()]) {
            i += 1;
        }
        if i + piece.len() > end {
            return false;
        }
        at = i + piece.len();
    }
    true
}

/// A comma-separated pattern list with `!` negation (OpenSSH's `match_pattern_list`):
/// false as soon as a negated pattern matches, else whether any other matches.
pub fn pattern_list(list: &str, text: &str, fold: bool) -> bool {
    patterns_match(list.split(','), text, fold)
}

/// `Host` line patterns (each a glob, `!` negates): as [`pattern_list`].
pub fn host_matches<'a>(patterns: impl IntoIterator<Item = &'a str>, host: &str) -> bool {
    patterns_match(patterns, host, true)
}

fn patterns_match<'a>(patterns: impl IntoIterator<Item = &'a str>, text: &str, fold: bool) -> bool {
    let mut matched = false;
    for p in patterns {
        let (neg, p) = match p.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, p),
        };
        if glob_bytes(p.as_bytes(), text.as_bytes(), fold) {
            if neg {
                return false;
            }
            matched = true;
        }
    }
    matched
}

/// How vmux names a host on a port, everywhere (the signer's pins and prompt, the
/// agent's claims, `vmux ssh`): `host` on port 22, `host:port` otherwise, `[v6]:port`.
pub fn host_port_name(host: &str, port: u16) -> String {
    match (port, host.contains(':')) {
        (22, _) => host.to_string(),
        (_, true) => format!("[{host}]:{port}"),
        (_, false) => format!("{host}:{port}"),
    }
}

/// A name as someone wrote it, in the form of [`host_port_name`]: `host:22`, `[host]:22`
/// and `host` are one host; `[host]:2222` is `host:2222`.
pub fn canonical_name(name: &str) -> String {
    let split = match name.strip_prefix('[') {
        Some(rest) => rest.split_once("]:"),
        // One colon: host:port. More: a bare IPv6 address (no port).
        None if name.matches(':').count() == 1 => name.split_once(':'),
        None => None,
    };
    match split.and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?))) {
        Some((h, port)) if !h.is_empty() => host_port_name(h, port),
        _ => name.to_string(),
    }
}

/// The name known_hosts files use: `host` on port 22, `[host]:port` otherwise.
pub fn known_hosts_name(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    }
}

/// The entries of known_hosts text with their line numbers (from 1): blank lines,
/// comments and lines that do not parse (other key types, typos) are passed over, as
/// ssh passes them over. Marked lines (`@revoked`, `@cert-authority`) are included.
pub fn known_hosts_entries(
    text: &str,
) -> impl Iterator<Item = (usize, ssh_key::known_hosts::Entry)> + '_ {
    text.lines().enumerate().filter_map(|(n, line)| {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            return None;
        }
        line.parse().ok().map(|e| (n + 1, e))
    })
}

/// Why a config line is refused: the file (or `command-line`), the line, the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: line {line}: {message}")]
pub struct ConfigError {
    pub file: Arc<str>,
    pub line: usize,
    pub message: String,
}

/// One option line: its keyword in lower case and its arguments, unquoted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    pub file: Arc<str>,
    pub line: usize,
    pub keyword: String,
    pub args: Vec<String>,
}

impl Directive {
    /// An error about this line.
    pub fn error(&self, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.clone(),
            line: self.line,
            message: message.into(),
        }
    }

    /// The first argument (every directive has one).
    pub fn value(&self) -> &str {
        self.args.first().map(String::as_str).unwrap_or("")
    }
}

/// One criterion of a `Match` line.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Criterion {
    negate: bool,
    attribute: String,
    /// The pattern list (none for `all`, `canonical`, `final`).
    arg: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    Option(Directive),
    Host(Vec<String>),
    Match(usize, Vec<Criterion>),
    /// The files an `Include` named, parsed (none when nothing matched).
    Include(Vec<Config>),
    /// A line that could not be read at all (quotes, a missing argument, a bad Match).
    Broken(ConfigError),
}

/// A parsed config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    file: Arc<str>,
    entries: Vec<Entry>,
}

/// Where `Include` finds relative paths (`~/.ssh` for the user's file, `/etc/ssh` for the
/// system's), or `None` to leave includes out (fuzzing, text given inline).
#[derive(Debug, Clone, Default)]
pub struct Includes {
    pub base: Option<PathBuf>,
}

/// Nesting limit for `Include`, as OpenSSH's READCONF_MAX_DEPTH.
const MAX_DEPTH: usize = 16;

/// Parse config text; `file` names it in errors.
pub fn parse(text: &str, file: &str, includes: &Includes) -> Config {
    parse_depth(text, file, includes, 0)
}

/// Read and parse a file (`None` when it does not exist or cannot be read).
pub fn parse_file(path: &Path, includes: &Includes) -> Option<Config> {
    parse_file_depth(path, includes, 0)
}

fn parse_file_depth(path: &Path, includes: &Includes, depth: usize) -> Option<Config> {
    let text = std::fs::read_to_string(path).ok()?;
    Some(parse_depth(
        &text,
        &path.display().to_string(),
        includes,
        depth,
    ))
}

fn parse_depth(text: &str, file: &str, includes: &Includes, depth: usize) -> Config {
    let file: Arc<str> = Arc::from(file);
    let mut entries = vec![];
    for (n, raw) in text.lines().enumerate() {
        let error = |message: String| {
            Entry::Broken(ConfigError {
                file: file.clone(),
                line: n + 1,
                message,
            })
        };
        let (keyword, args) = match split_line(raw) {
            Ok(Some(x)) => x,
            Ok(None) => continue,
            Err(e) => {
                entries.push(error(e));
                continue;
            }
        };
        entries.push(match keyword.as_str() {
            "host" => Entry::Host(args),
            "match" => match parse_match(&args) {
                Ok(c) => Entry::Match(n + 1, c),
                Err(e) => error(e),
            },
            "include" if depth >= MAX_DEPTH => {
                error("Include nested too deeply (16 files at most)".into())
            }
            "include" => Entry::Include(
                args.iter()
                    .flat_map(|a| include_paths(a, includes))
                    .filter_map(|p| parse_file_depth(&p, includes, depth + 1))
                    .collect(),
            ),
            _ => Entry::Option(Directive {
                file: file.clone(),
                line: n + 1,
                keyword,
                args,
            }),
        });
    }
    Config { file, entries }
}

/// One line into its keyword (lower case) and arguments; `None` for blank and comment
/// lines. `Key value`, `Key=value` and `Key = value` are the same.
pub fn split_line(raw: &str) -> Result<Option<(String, Vec<String>)>, String> {
    let line = raw.trim_matches([' ', '\t', '\r', '\n', '\x0c']);
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let end = line.find([' ', '\t', '=']).unwrap_or(line.len());
    let keyword = line[..end].to_ascii_lowercase();
    let mut rest = line[end..].trim_start_matches([' ', '\t']);
    if let Some(r) = rest.strip_prefix('=') {
        rest = r.trim_start_matches([' ', '\t']);
    }
    if rest.is_empty() {
        return Err(format!("no argument after keyword \"{keyword}\""));
    }
    let args = split_args(rest).ok_or_else(|| "invalid quotes".to_string())?;
    if args.is_empty() {
        return Err(format!("no argument after keyword \"{keyword}\""));
    }
    Ok(Some((keyword, args)))
}

/// Split arguments as OpenSSH's `argv_split`: whitespace separates, `"` and `'` quote,
/// a backslash escapes a quote, a backslash or (unquoted) a space, and an unquoted `#`
/// at the start of a word ends the line. `None` when a quote is not closed.
pub fn split_args(s: &str) -> Option<Vec<String>> {
    let mut args = vec![];
    let mut chars = s.chars().peekable();
    loop {
        while chars.next_if(|c| *c == ' ' || *c == '\t').is_some() {}
        match chars.peek() {
            None | Some('#') => return Some(args),
            _ => {}
        }
        let (mut arg, mut quote) = (String::new(), None);
        while let Some(c) = chars.next() {
            match (c, quote) {
                ('\\', _) => match chars.peek() {
                    Some(&n @ ('\'' | '"' | '\\')) => {
                        arg.push(n);
                        chars.next();
                    }
                    Some(' ') if quote.is_none() => {
                        arg.push(' ');
                        chars.next();
                    }
                    _ => arg.push('\\'),
                },
                (' ' | '\t', None) => break,
                ('"' | '\'', None) => quote = Some(c),
                (c, Some(q)) if c == q => quote = None,
                (c, _) => arg.push(c),
            }
        }
        if quote.is_some() {
            return None;
        }
        args.push(arg);
    }
}

fn parse_match(args: &[String]) -> Result<Vec<Criterion>, String> {
    let mut out = vec![];
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let (negate, name) = match a.strip_prefix('!') {
            Some(n) => (true, n),
            None => (false, a.as_str()),
        };
        let attribute = name.to_ascii_lowercase();
        let arg = match attribute.as_str() {
            "all" => {
                if args.len() > 1 {
                    return Err(format!(
                        "'{a}' cannot be combined with other Match attributes"
                    ));
                }
                None
            }
            "canonical" | "final" => None,
            "host" | "originalhost" | "user" | "localuser" | "exec" | "localnetwork" | "tagged"
            | "version" | "sessiontype" | "command" => Some(
                it.next()
                    .ok_or_else(|| format!("Missing Match criteria for {name}"))?
                    .clone(),
            ),
            _ => return Err(format!("Unsupported Match attribute {name}")),
        };
        out.push(Criterion {
            negate,
            attribute,
            arg,
        });
    }
    if out.is_empty() {
        return Err("One or more attributes required for Match".into());
    }
    Ok(out)
}

/// The files an `Include` argument names: `~` expanded, relative to the base, the last
/// path components globbed (sorted, as glob(3)).
fn include_paths(arg: &str, includes: &Includes) -> Vec<PathBuf> {
    let Some(base) = &includes.base else {
        return vec![];
    };
    let path = match arg.strip_prefix("~/") {
        Some(rest) => crate::store::home_dir().join(rest),
        None if Path::new(arg).is_absolute() => PathBuf::from(arg),
        None => base.join(arg),
    };
    let mut found = vec![PathBuf::from("/")];
    for part in path.components().skip(1) {
        let part = part.as_os_str().to_string_lossy().into_owned();
        if !part.contains(['*', '?']) {
            found.iter_mut().for_each(|p| p.push(&part));
            continue;
        }
        let mut next = vec![];
        for dir in &found {
            let Ok(rd) = std::fs::read_dir(dir) else {
                continue;
            };
            let mut names: Vec<String> = rd
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.') && glob_exact(&part, n))
                .collect();
            names.sort();
            next.extend(names.into_iter().map(|n| dir.join(n)));
        }
        found = next;
    }
    found.into_iter().filter(|p| p.is_file()).collect()
}

/// What [`evaluate`] asks of the caller.
pub trait Visitor {
    /// The name `Match host` compares: the `HostName` found so far (`%h` expanded),
    /// else the host as given.
    fn match_host(&self) -> String;
    /// The remote user found so far, else the local user (`Match user`).
    fn match_user(&self) -> String;
    /// A known option line; `active` when it applies to this host. Values should be
    /// checked either way (OpenSSH refuses a bad value in any block).
    fn option(&mut self, d: &Directive, active: bool) -> Result<(), ConfigError>;
}

/// The host being looked up.
#[derive(Debug, Clone)]
pub struct Lookup<'a> {
    /// The host as given on the command line (what `Host` patterns match).
    pub host: &'a str,
    /// This process's user (`Match localuser`).
    pub local_user: &'a str,
}

/// Run `configs` (command line first, then the user's file, then the system's) for one
/// host. Every option line goes to the visitor; errors are collected, every one of
/// them, as OpenSSH reports every bad option before it stops. When a `Match final`
/// exists, a second pass follows with `final`/`canonical` true, as OpenSSH's final pass.
pub fn evaluate(configs: &[&Config], lookup: &Lookup, v: &mut dyn Visitor) -> Vec<ConfigError> {
    let wants_final = configs.iter().any(|c| c.wants_final());
    let mut errors = vec![];
    let mut state = Pass {
        lookup,
        final_pass: false,
        ignore_unknown: None,
        errors: &mut errors,
    };
    for c in configs {
        state.run(c, true, v);
    }
    if wants_final && state.errors.is_empty() {
        state.final_pass = true;
        for c in configs {
            state.run(c, true, v);
        }
    }
    errors
}

impl Config {
    fn wants_final(&self) -> bool {
        self.entries.iter().any(|e| match e {
            Entry::Match(_, c) => c.iter().any(|c| c.attribute == "final"),
            Entry::Include(cs) => cs.iter().any(Config::wants_final),
            _ => false,
        })
    }
}

struct Pass<'a, 'b> {
    lookup: &'a Lookup<'a>,
    final_pass: bool,
    ignore_unknown: Option<String>,
    errors: &'b mut Vec<ConfigError>,
}

impl Pass<'_, '_> {
    /// One file; `outer` is false for a file included from a block that does not apply.
    fn run(&mut self, c: &Config, outer: bool, v: &mut dyn Visitor) {
        let mut active = true;
        for e in &c.entries {
            match e {
                Entry::Host(patterns) => {
                    active = host_matches(patterns.iter().map(String::as_str), self.lookup.host)
                }
                Entry::Match(line, criteria) => {
                    active = match self.criteria(criteria, outer, v) {
                        Ok(m) => m,
                        Err(message) => {
                            self.errors.push(ConfigError {
                                file: c.file.clone(),
                                line: *line,
                                message,
                            });
                            false
                        }
                    }
                }
                Entry::Include(files) => {
                    for f in files {
                        self.run(f, outer && active, v);
                    }
                }
                Entry::Broken(err) => self.errors.push(err.clone()),
                Entry::Option(d) => {
                    let applies = outer && active;
                    if d.keyword == "ignoreunknown" {
                        if applies && self.ignore_unknown.is_none() {
                            self.ignore_unknown = Some(d.value().to_string());
                        }
                    } else if !KNOWN.contains(&d.keyword.as_str()) {
                        let ignored = self
                            .ignore_unknown
                            .as_deref()
                            .is_some_and(|l| pattern_list(l, &d.keyword, true));
                        if !ignored && !self.final_pass {
                            self.errors
                                .push(d.error(format!("Bad configuration option: {}", d.keyword)));
                        }
                    } else if let Err(e) = v.option(d, applies) {
                        if !self.final_pass {
                            self.errors.push(e);
                        }
                    }
                }
            }
        }
    }

    /// Whether a `Match` line applies (criteria left to right; an `exec` after a
    /// criterion that failed is skipped, as OpenSSH skips it).
    fn criteria(&self, cs: &[Criterion], reached: bool, v: &dyn Visitor) -> Result<bool, String> {
        // A file included from a block that does not apply matches nothing.
        if !reached {
            return Ok(false);
        }
        let mut result = true;
        for c in cs {
            let hit = match (c.attribute.as_str(), c.arg.as_deref()) {
                ("all", _) => true,
                ("canonical" | "final", _) => self.final_pass,
                ("host", Some(l)) => pattern_list(l, &v.match_host(), true),
                ("originalhost", Some(l)) => pattern_list(l, self.lookup.host, true),
                ("user", Some(l)) => pattern_list(l, &v.match_user(), false),
                ("localuser", Some(l)) => pattern_list(l, self.lookup.local_user, false),
                (other, _) if result => {
                    return Err(format!(
                        "Match {other} is not supported by vmux ssh (it cannot tell whether this block applies)"
                    ))
                }
                _ => false,
            };
            if hit == c.negate {
                result = false;
            }
        }
        Ok(result)
    }
}

/// Parse one `-o` option (file `command-line`, line 0, as OpenSSH names it).
pub fn command_line_option(o: &str) -> Result<Config, ConfigError> {
    let file: Arc<str> = Arc::from("command-line");
    let err = |message: String| ConfigError {
        file: file.clone(),
        line: 0,
        message,
    };
    match split_line(o).map_err(err)? {
        None => Err(err(format!("-o {o:?}: expected Key=Value"))),
        Some((k, _)) if matches!(k.as_str(), "host" | "match" | "include") => Err(err(format!(
            "{k} directive not supported as a command-line option"
        ))),
        Some((keyword, args)) => Ok(Config {
            file: file.clone(),
            entries: vec![Entry::Option(Directive {
                file,
                line: 0,
                keyword,
                args,
            })],
        }),
    }
}

/// `~/.ssh/config` and `/etc/ssh/ssh_config` as ssh reads them (missing files are empty).
pub fn user_and_system() -> Vec<Config> {
    let ssh_dir = crate::store::home_dir().join(".ssh");
    let mut out = vec![];
    if let Some(c) = parse_file(
        &ssh_dir.join("config"),
        &Includes {
            base: Some(ssh_dir.clone()),
        },
    ) {
        out.push(c);
    }
    out.extend(system());
    out
}

/// `/etc/ssh/ssh_config` (includes relative to `/etc/ssh`).
pub fn system() -> Option<Config> {
    parse_file(
        Path::new("/etc/ssh/ssh_config"),
        &Includes {
            base: Some(PathBuf::from("/etc/ssh")),
        },
    )
}

/// ssh(1)'s options that take an argument (OpenSSH 9's getopt string), for reading an
/// ssh command line.
pub const GETOPT_WITH_ARG: &str = "BbcDEeFIiJLlmOoPpQRSWw";

/// Every keyword OpenSSH's ssh (9.x, with Debian's GSSAPI options) knows; anything else
/// is a bad configuration option.
pub const KNOWN: &[&str] = &[
    "host",
    "match",
    "include",
    "ignoreunknown",
    // Deprecated or unsupported in OpenSSH, accepted without effect.
    "protocol",
    "cipher",
    "fallbacktorsh",
    "globalknownhostsfile2",
    "rhostsauthentication",
    "userknownhostsfile2",
    "useroaming",
    "usersh",
    "useprivilegedport",
    "afstokenpassing",
    "kerberosauthentication",
    "kerberostgtpassing",
    "rsaauthentication",
    "rhostsrsaauthentication",
    "compressionlevel",
    "gssapiauthentication",
    "gssapidelegatecredentials",
    "gssapikeyexchange",
    "gssapiclientidentity",
    "gssapiserveridentity",
    "gssapirenewalforcesrekey",
    "gssapitrustdns",
    "gssapikexalgorithms",
    "pkcs11provider",
    "smartcarddevice",
    "forwardagent",
    "forwardx11",
    "forwardx11trusted",
    "forwardx11timeout",
    "exitonforwardfailure",
    "xauthlocation",
    "gatewayports",
    "passwordauthentication",
    "kbdinteractiveauthentication",
    "kbdinteractivedevices",
    "challengeresponseauthentication",
    "skeyauthentication",
    "tisauthentication",
    "pubkeyauthentication",
    "dsaauthentication",
    "hostbasedauthentication",
    "identityfile",
    "identityfile2",
    "identitiesonly",
    "certificatefile",
    "addkeystoagent",
    "identityagent",
    "hostname",
    "hostkeyalias",
    "proxycommand",
    "port",
    "ciphers",
    "macs",
    "remoteforward",
    "localforward",
    "permitremoteopen",
    "user",
    "escapechar",
    "globalknownhostsfile",
    "userknownhostsfile",
    "connectionattempts",
    "batchmode",
    "checkhostip",
    "stricthostkeychecking",
    "compression",
    "tcpkeepalive",
    "keepalive",
    "numberofpasswordprompts",
    "syslogfacility",
    "loglevel",
    "logverbose",
    "dynamicforward",
    "preferredauthentications",
    "hostkeyalgorithms",
    "casignaturealgorithms",
    "bindaddress",
    "bindinterface",
    "clearallforwardings",
    "enablesshkeysign",
    "verifyhostkeydns",
    "nohostauthenticationforlocalhost",
    "rekeylimit",
    "connecttimeout",
    "addressfamily",
    "serveraliveinterval",
    "serveralivecountmax",
    "sendenv",
    "setenv",
    "controlpath",
    "controlmaster",
    "controlpersist",
    "hashknownhosts",
    "tunnel",
    "tunneldevice",
    "localcommand",
    "permitlocalcommand",
    "remotecommand",
    "visualhostkey",
    "kexalgorithms",
    "ipqos",
    "requesttty",
    "sessiontype",
    "stdinnull",
    "forkafterauthentication",
    "proxyusefdpass",
    "canonicaldomains",
    "canonicalizefallbacklocal",
    "canonicalizehostname",
    "canonicalizemaxdots",
    "canonicalizepermittedcnames",
    "streamlocalbindmask",
    "streamlocalbindunlink",
    "revokedhostkeys",
    "fingerprinthash",
    "updatehostkeys",
    "hostbasedacceptedalgorithms",
    "hostbasedkeytypes",
    "pubkeyacceptedalgorithms",
    "pubkeyacceptedkeytypes",
    "proxyjump",
    "securitykeyprovider",
    "knownhostscommand",
    "requiredrsasize",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("*.example.com", "git.example.com"));
        assert!(!glob("*.example.com", "example.com"));
        assert!(glob("h?st", "HOST"));
        assert!(glob("*", ""));
        assert!(!glob("a", "ab"));
        assert!(glob("a*b*c", "aXbYbZc"));
        assert!(!glob("a*b*c", "aXcYb"));
        assert!(glob("*a*", "bab"));
        assert!(glob("**", "x"));
        assert!(!glob("ab*ba", "aba"));
        assert!(glob("ab*ba", "abba"));
        assert!(!glob_exact("Alice", "alice"));
        // What the backtracking glob took exponential time for, at once.
        let text = "a".repeat(5000);
        let started = std::time::Instant::now();
        assert!(!glob(&format!("{}b", "a*".repeat(200)), &text));
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
    }

    #[test]
    fn pattern_lists() {
        assert!(pattern_list("a,b*,!bad", "bee", true));
        assert!(!pattern_list("a,b*,!bad", "bad", true));
        assert!(!pattern_list("!x", "y", true));
        assert!(host_matches(["web", "*.lan", "!nope.lan"], "x.lan"));
        assert!(!host_matches(["*.lan", "!nope.lan"], "nope.lan"));
    }

    #[test]
    fn names_of_hosts() {
        assert_eq!(host_port_name("h", 22), "h");
        assert_eq!(host_port_name("h", 2222), "h:2222");
        assert_eq!(host_port_name("::1", 2222), "[::1]:2222");
        assert_eq!(canonical_name("h:22"), "h");
        assert_eq!(canonical_name("[h]:22"), "h");
        assert_eq!(canonical_name("[h]:2222"), "h:2222");
        assert_eq!(canonical_name("[::1]:22"), "::1");
        assert_eq!(canonical_name("::1"), "::1");
        assert_eq!(canonical_name("h"), "h");
        assert_eq!(canonical_name("h:x"), "h:x");
        assert_eq!(known_hosts_name("h", 22), "h");
        assert_eq!(known_hosts_name("h", 2), "[h]:2");
    }

    #[test]
    fn lines_and_quotes() {
        assert_eq!(
            split_line("  Port=2222 ").unwrap(),
            Some(("port".into(), vec!["2222".into()]))
        );
        assert_eq!(
            split_line("HostName = a.b # c").unwrap(),
            Some(("hostname".into(), vec!["a.b".into()]))
        );
        assert_eq!(
            split_line(r#"ProxyCommand "a b" 'c d' e\ f \"g"#).unwrap(),
            Some((
                "proxycommand".into(),
                vec!["a b".into(), "c d".into(), "e f".into(), "\"g".into()]
            ))
        );
        assert_eq!(split_line("# x").unwrap(), None);
        assert!(split_line("Port").is_err());
        assert!(split_line("User \"open").is_err());
    }

    struct Seen {
        host_name: Option<String>,
        port: Option<String>,
        lines: Vec<(usize, bool)>,
    }

    impl Visitor for Seen {
        fn match_host(&self) -> String {
            self.host_name.clone().unwrap_or_else(|| "alias".into())
        }
        fn match_user(&self) -> String {
            "me".into()
        }
        fn option(&mut self, d: &Directive, active: bool) -> Result<(), ConfigError> {
            self.lines.push((d.line, active));
            if d.keyword == "port" && d.value().parse::<u16>().is_err() {
                return Err(d.error("Bad port"));
            }
            if active {
                match d.keyword.as_str() {
                    "hostname" => {
                        self.host_name.get_or_insert(d.value().into());
                    }
                    "port" => {
                        self.port.get_or_insert(d.value().into());
                    }
                    _ => {}
                }
            }
            Ok(())
        }
    }

    fn run(text: &str, host: &str) -> (Seen, Vec<ConfigError>) {
        run_config(&parse(text, "cfg", &Includes::default()), host)
    }

    fn run_config(c: &Config, host: &str) -> (Seen, Vec<ConfigError>) {
        let mut s = Seen {
            host_name: None,
            port: None,
            lines: vec![],
        };
        let errs = evaluate(
            &[c],
            &Lookup {
                host,
                local_user: "me",
            },
            &mut s,
        );
        (s, errs)
    }

    #[test]
    fn unknown_options_are_errors_with_file_and_line() {
        let (_, errs) = run("Host x\n  Prot 2213\nHost *\n  Port 22\n", "y");
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(
            errs[0].to_string(),
            "cfg: line 2: Bad configuration option: prot"
        );
        // IgnoreUnknown, set before, covers it.
        let (_, errs) = run("IgnoreUnknown prot,UseKeychain\nHost x\n Prot 1\n", "x");
        assert!(errs.is_empty(), "{errs:?}");
        // A bad value in a block that does not apply is still an error.
        let (_, errs) = run("Host other\n Port banana\n", "x");
        assert_eq!(errs[0].line, 2);
    }

    #[test]
    fn host_and_match_blocks() {
        let (s, errs) = run(
            "Host web\n HostName web.example.org\nMatch host web.example.org user me\n Port 2200\nMatch originalhost nope\n Port 1\nMatch all\n Port 3\n",
            "web",
        );
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(s.host_name.as_deref(), Some("web.example.org"));
        assert_eq!(s.port.as_deref(), Some("2200"));
        assert_eq!(s.lines, vec![(2, true), (4, true), (6, false), (8, true)]);
        // `exec` reached is refused; after a failed criterion it is skipped.
        let (_, errs) = run("Match host other exec true\n Port 1\n", "web");
        assert!(errs.is_empty(), "{errs:?}");
        let (_, errs) = run("Match exec true\n Port 1\n", "web");
        assert!(errs[0].message.contains("exec"), "{errs:?}");
        let (_, errs) = run("Match colour blue\n", "web");
        assert!(errs[0].message.contains("Unsupported Match attribute"));
        // `Match final` applies in the final pass.
        let (s, _) = run("Match final\n Port 4\n", "web");
        assert_eq!(s.port.as_deref(), Some("4"));
    }

    #[test]
    fn includes_follow_globs_in_order() {
        let dir = std::env::temp_dir().join(format!("vmux-sshcfg-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("conf.d")).unwrap();
        std::fs::write(dir.join("conf.d/b.conf"), "Port 2\n").unwrap();
        std::fs::write(dir.join("conf.d/a.conf"), "Host web\n Port 1\n").unwrap();
        std::fs::write(dir.join("conf.d/c.txt"), "Bogus 1\n").unwrap();
        let c = parse(
            "Host nothere\nInclude conf.d/*.conf\nHost *\nInclude conf.d/*.conf\n",
            "main",
            &Includes {
                base: Some(dir.clone()),
            },
        );
        let (s, errs) = run_config(&c, "web");
        assert!(errs.is_empty(), "{errs:?}");
        // First include is under a block that does not apply; the second: a.conf first.
        assert_eq!(s.port.as_deref(), Some("1"));
        assert_eq!(s.lines, vec![(2, false), (1, false), (2, true), (1, true)]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn command_line_options() {
        let c = command_line_option("Port=2").unwrap();
        assert_eq!(c.entries.len(), 1);
        let e = command_line_option("Host x").unwrap_err();
        assert_eq!(e.line, 0);
        assert_eq!(&*e.file, "command-line");
    }
}
