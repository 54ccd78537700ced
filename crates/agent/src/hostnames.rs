//! Names worth trying against hashed known_hosts entries. Debian and Ubuntu hash
//! known_hosts by default (`|1|salt|HMAC-SHA1(salt, name)`), so the name cannot be read
//! back: it can only be recognised. The requesting `ssh` was given the destination on
//! its command line; with the user's ssh config (`Host`/`Match`/`HostName`/`Port`, read
//! by the tree's one ssh_config parser) that gives the name ssh itself hashed.

use std::path::Path;
use vmux_proto::ssh_config::{self, Config, ConfigError, Directive, Lookup, Visitor};

/// ssh(1) options that take an argument.
const WITH_ARG: &str = ssh_config::GETOPT_WITH_ARG;

/// What an ssh command line says about where it connects.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Target {
    /// The destination as given (an alias, a host name or an address).
    pub host: String,
    pub port: Option<u16>,
    pub host_name: Option<String>,
}

/// Parse ssh's arguments (without argv[0]).
pub fn parse_ssh_args<S: AsRef<str>>(args: &[S]) -> Option<Target> {
    let mut t = Target::default();
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_ref();
        if a == "--" {
            i += 1;
            break;
        }
        if let Some(opts) = a.strip_prefix('-').filter(|o| !o.is_empty()) {
            for (j, c) in opts.char_indices() {
                if WITH_ARG.contains(c) {
                    let rest = &opts[j + c.len_utf8()..];
                    let val = if rest.is_empty() {
                        i += 1;
                        args.get(i).map(|v| v.as_ref().to_string())?
                    } else {
                        rest.to_string()
                    };
                    match c {
                        'p' => t.port = val.parse().ok(),
                        'o' => option(&mut t, &val),
                        _ => {}
                    }
                    break;
                }
            }
            i += 1;
            continue;
        }
        break;
    }
    let dest = args.get(i)?.as_ref();
    let (host, port) = destination(dest);
    t.host = host;
    t.port = t.port.or(port);
    (!t.host.is_empty()).then_some(t)
}

fn option(t: &mut Target, o: &str) {
    let (k, v) = o
        .split_once('=')
        .or_else(|| o.split_once(char::is_whitespace))
        .unwrap_or((o, ""));
    match k.trim().to_ascii_lowercase().as_str() {
        "port" => t.port = v.trim().parse().ok(),
        "hostname" => t.host_name = Some(v.trim().to_string()),
        _ => {}
    }
}

/// `user@host`, `ssh://user@host:port`, `[v6]` → (host, port).
fn destination(d: &str) -> (String, Option<u16>) {
    if let Some(rest) = d.strip_prefix("ssh://") {
        let hostport = rest.rsplit_once('@').map(|(_, h)| h).unwrap_or(rest);
        let hostport = hostport.split('/').next().unwrap_or("");
        if let Some(v6) = hostport.strip_prefix('[') {
            let (h, p) = v6.split_once(']').unwrap_or((v6, ""));
            return (
                h.to_string(),
                p.strip_prefix(':').and_then(|p| p.parse().ok()),
            );
        }
        return match hostport.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p.parse().ok()),
            None => (hostport.to_string(), None),
        };
    }
    let host = d.rsplit_once('@').map(|(_, h)| h).unwrap_or(d);
    (host.trim_matches(['[', ']']).to_string(), None)
}

/// Apply ssh config files to `t`: the first `HostName` and `Port` that apply win,
/// unless the command line set them (as ssh does). Lines ssh would refuse are skipped
/// here: naming a host is best effort, and `vmux ssh` is the one that refuses them.
pub fn apply_config(t: &mut Target, configs: &[&Config]) {
    struct Names {
        alias: String,
        host_name: Option<String>,
        port: Option<u16>,
    }
    impl Visitor for Names {
        fn match_host(&self) -> String {
            self.host_name
                .as_deref()
                .map(|h| h.replace("%h", &self.alias))
                .unwrap_or_else(|| self.alias.clone())
        }
        fn match_user(&self) -> String {
            std::env::var("USER").unwrap_or_default()
        }
        fn option(&mut self, d: &Directive, active: bool) -> Result<(), ConfigError> {
            match d.keyword.as_str() {
                "hostname" if active => {
                    self.host_name.get_or_insert_with(|| d.value().to_string());
                }
                "port" if active && self.port.is_none() => self.port = d.value().parse().ok(),
                _ => {}
            }
            Ok(())
        }
    }
    let mut names = Names {
        alias: t.host.clone(),
        host_name: None,
        port: None,
    };
    let user = std::env::var("USER").unwrap_or_default();
    let _ = ssh_config::evaluate(
        configs,
        &Lookup {
            host: &t.host,
            local_user: &user,
        },
        &mut names,
    );
    if t.host_name.is_none() {
        t.host_name = names.host_name.map(|h| h.replace("%h", &t.host));
    }
    if t.port.is_none() {
        t.port = names.port;
    }
}

/// The names ssh would have written to known_hosts for `t`: `host` or `[host]:port`.
pub fn names(t: &Target) -> Vec<String> {
    let mut hosts = vec![];
    if let Some(h) = &t.host_name {
        hosts.push(h.clone());
    }
    hosts.push(t.host.clone());
    let mut names = vec![];
    for h in hosts {
        match t.port {
            Some(p) if p != 22 => names.push(format!("[{h}]:{p}")),
            // `host` and `[host]:22` are one host; ssh writes the first.
            _ => {
                names.push(format!("[{h}]:22"));
                names.insert(names.len() - 1, h);
            }
        }
    }
    names
}

/// Candidate names for the ssh process `pid` (walking up a little if the agent's peer
/// is a wrapper), from its command line and the user's ~/.ssh/config.
pub fn candidates(pid: Option<i32>) -> Vec<String> {
    let mut pid = match pid {
        Some(p) => p,
        None => return vec![],
    };
    for _ in 0..3 {
        let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            return vec![];
        };
        let args: Vec<String> = raw
            .split(|&b| b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let is_ssh = args
            .first()
            .and_then(|a| Path::new(a).file_name())
            .is_some_and(|n| n == "ssh");
        if is_ssh {
            let Some(mut t) = parse_ssh_args(&args[1..]) else {
                return vec![];
            };
            let configs = ssh_config::user_and_system();
            apply_config(&mut t, &configs.iter().collect::<Vec<_>>());
            return names(&t);
        }
        match parent(pid) {
            Some(p) if p > 1 => pid = p,
            _ => return vec![],
        }
    }
    vec![]
}

fn parent(pid: i32) -> Option<i32> {
    let stat = crate::requester::proc_stat(pid)?;
    let close = stat.rfind(')')?;
    stat.get(close + 1..)?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Whether a hashed known_hosts name (`salt`, `hash`) is `name`: HMAC-SHA1(salt, name).
pub fn hashed_matches(salt: &[u8], hash: &[u8], name: &str) -> bool {
    use hmac::{KeyInit, Mac};
    let Ok(mut mac) = hmac::Hmac::<sha1::Sha1>::new_from_slice(salt) else {
        return false;
    };
    mac.update(name.as_bytes());
    mac.verify_slice(hash).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_command_lines() {
        let t = parse_ssh_args(&["-p", "2222", "-o", "BatchMode=yes", "alice@h.example"]).unwrap();
        assert_eq!((t.host.as_str(), t.port), ("h.example", Some(2222)));
        assert_eq!(names(&t), vec!["[h.example]:2222"]);
        let t = parse_ssh_args(&["-A", "-vp2200", "box", "ls", "-l"]).unwrap();
        assert_eq!((t.host.as_str(), t.port), ("box", Some(2200)));
        let t = parse_ssh_args(&["-oPort=2022", "-i", "k", "ssh://bob@[::1]:2023/x"]).unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", Some(2022)));
        let t = parse_ssh_args(&["-l", "root", "git.example.com"]).unwrap();
        assert_eq!(names(&t), vec!["git.example.com", "[git.example.com]:22"]);
        assert!(parse_ssh_args(&["-p"]).is_none());
    }

    #[test]
    fn ssh_config_hostname_and_port() {
        let mut t = parse_ssh_args(&["work"]).unwrap();
        let c = ssh_config::parse(
            "Host *.other\n  Port 1\nHost work !nope\n  HostName %h.corp.example\n  Port 2200\nHost *\n  Port 22\n",
            "config",
            &Default::default(),
        );
        apply_config(&mut t, &[&c]);
        assert_eq!(names(&t), vec!["[work.corp.example]:2200", "[work]:2200"]);
    }

    #[test]
    fn hmac_sha1_names() {
        use hmac::{KeyInit, Mac};
        let salt = [7u8; 20];
        let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(&salt).unwrap();
        mac.update(b"[127.0.0.1]:2222");
        let hash = mac.finalize().into_bytes();
        assert!(hashed_matches(&salt, &hash, "[127.0.0.1]:2222"));
        assert!(!hashed_matches(&salt, &hash, "127.0.0.1"));
    }
}
