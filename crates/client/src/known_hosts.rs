//! Host keys as OpenSSH checks them (sshd(8) "SSH_KNOWN_HOSTS FILE FORMAT"): plain and
//! hashed (`|1|salt|HMAC-SHA1`) names, `!`-negated and wildcard patterns, `@revoked`
//! keys. A key is known, unknown, changed (another key is recorded for the name, of
//! any type: the client asks for the types it knows first, so a server that still has
//! its recorded key presents it) or revoked. `host` and `[host]:22` are one name.

use ssh_key::known_hosts::{HostPatterns, Marker};
use ssh_key::public::KeyData;
use ssh_key::{HashAlg, PublicKey};
use std::io::Write;
use std::path::{Path, PathBuf};
use vmux_agent::hostnames::hashed_matches;
use vmux_proto::ssh_config::{glob, known_hosts_entries};

#[derive(Debug, Clone, PartialEq)]
pub enum HostStatus {
    /// A line for this name holds this key.
    Known,
    /// No line for this name holds a key of this type.
    Unknown,
    /// A line for this name holds another key (of any type): file and line number.
    Changed { file: PathBuf, line: usize },
    /// An `@revoked` line names this key.
    Revoked { file: PathBuf, line: usize },
}

/// Check `key` for `name` (`host` or `[host]:port`) in `files` (missing files are empty).
/// A revoked key anywhere wins; then a line holding this key; then another key.
pub fn check(files: &[PathBuf], name: &str, key: &KeyData) -> HostStatus {
    let (mut changed, mut known) = (None, false);
    for f in files {
        let Ok(text) = std::fs::read_to_string(f) else {
            continue;
        };
        match check_text(&text, name, key) {
            Found::Known => known = true,
            Found::Revoked(line) => {
                return HostStatus::Revoked {
                    file: f.clone(),
                    line,
                }
            }
            Found::Changed(line) if changed.is_none() => {
                changed = Some(HostStatus::Changed {
                    file: f.clone(),
                    line,
                })
            }
            _ => {}
        }
    }
    match (known, changed) {
        (true, _) => HostStatus::Known,
        (false, Some(c)) => c,
        (false, None) => HostStatus::Unknown,
    }
}

/// What one known_hosts file says about `name` and `key` (line numbers from 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    Known,
    Revoked(usize),
    Changed(usize),
    Nothing,
}

/// One file's text: a revoked key wins, then a match, then another key.
pub fn check_text(text: &str, name: &str, key: &KeyData) -> Found {
    let mut changed = None;
    let mut known = false;
    let names = alternatives(name);
    for (n, entry) in known_hosts_entries(text) {
        let same_key = entry.public_key().key_data() == key;
        match entry.marker() {
            Some(Marker::Revoked) if same_key => return Found::Revoked(n),
            Some(_) => continue,
            None => {}
        }
        if !names.iter().any(|n| names_match(entry.host_patterns(), n)) {
            continue;
        }
        if same_key {
            known = true;
        } else if changed.is_none() {
            changed = Some(n);
        }
    }
    match (known, changed) {
        (true, _) => Found::Known,
        (false, Some(line)) => Found::Changed(line),
        (false, None) => Found::Nothing,
    }
}

/// `host` and `[host]:22` are the same host: either may be written in a file.
fn alternatives(name: &str) -> Vec<String> {
    match name.strip_prefix('[').and_then(|r| r.strip_suffix("]:22")) {
        Some(host) => vec![name.to_string(), host.to_string()],
        None if !name.starts_with('[') => vec![name.to_string(), format!("[{name}]:22")],
        None => vec![name.to_string()],
    }
}

/// The host key algorithms to ask the server for: those of the keys `files` record for
/// `name` first (as OpenSSH orders them), then the rest of `default`.
pub fn preferred_algorithms(
    files: &[PathBuf],
    name: &str,
    default: &[ssh_key::Algorithm],
) -> Vec<ssh_key::Algorithm> {
    let names = alternatives(name);
    let mut known: Vec<ssh_key::Algorithm> = vec![];
    for f in files {
        let Ok(text) = std::fs::read_to_string(f) else {
            continue;
        };
        for (_, entry) in known_hosts_entries(&text) {
            if entry.marker().is_none()
                && names.iter().any(|n| names_match(entry.host_patterns(), n))
            {
                known.push(entry.public_key().algorithm());
            }
        }
    }
    let same_kind = |a: &ssh_key::Algorithm, b: &ssh_key::Algorithm| {
        a == b || (a.clone().is_rsa() && b.clone().is_rsa())
    };
    let (mut first, rest): (Vec<_>, Vec<_>) = default
        .iter()
        .cloned()
        .partition(|a| known.iter().any(|k| same_kind(a, k)));
    first.extend(rest);
    first
}

fn names_match(p: &HostPatterns, name: &str) -> bool {
    match p {
        HostPatterns::HashedName { salt, hash } => hashed_matches(salt, hash, name),
        HostPatterns::Patterns(patterns) => {
            let mut matched = false;
            for p in patterns {
                match p.strip_prefix('!') {
                    Some(neg) if glob(neg, name) => return false,
                    Some(_) => {}
                    None => matched |= glob(p, name),
                }
            }
            matched
        }
    }
}

/// Append `name key` to `file` (created 0600, with its directory), hashed if asked.
pub fn add(file: &Path, name: &str, key: &PublicKey, hash: bool) -> std::io::Result<()> {
    let host = if hash {
        hashed_name(name)
    } else {
        name.to_string()
    };
    let mut key = key.clone();
    key.set_comment("");
    let line = key
        .to_openssh()
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(file)?;
    writeln!(f, "{host} {}", line.trim())?;
    f.sync_all()
}

fn hashed_name(name: &str) -> String {
    use base64::Engine;
    use hmac::{KeyInit, Mac};
    let salt = vmux_proto::random_bytes::<20>();
    let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(&salt).expect("any key length");
    mac.update(name.as_bytes());
    let b64 = base64::engine::general_purpose::STANDARD;
    format!(
        "|1|{}|{}",
        b64.encode(salt),
        b64.encode(mac.finalize().into_bytes())
    )
}

/// `SHA256:…`, as ssh prints it.
pub fn fingerprint(key: &KeyData) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
    const ED2: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILM+rvN+ot98qgEN796jTiQfZfG1KaT0PtFDJ/XFSqti";

    fn key(s: &str) -> PublicKey {
        PublicKey::from_openssh(s).unwrap()
    }

    fn file(name: &str, text: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("vmux-kh-{}-{name}", std::process::id()));
        std::fs::write(&d, text).unwrap();
        d
    }

    #[test]
    fn known_unknown_changed_revoked() {
        let f = file(
            "a",
            &format!("# c\nother {ED2}\n[h]:2222,!bad {ED}\n*.lan {ED2}\n"),
        );
        let k = key(ED);
        let files = [f.clone()];
        assert_eq!(check(&files, "[h]:2222", k.key_data()), HostStatus::Known);
        assert_eq!(check(&files, "h", k.key_data()), HostStatus::Unknown);
        assert_eq!(
            check(&files, "x.lan", k.key_data()),
            HostStatus::Changed {
                file: f.clone(),
                line: 4
            }
        );
        let r = file("r", &format!("@revoked * {ED}\n[h]:2222 {ED}\n"));
        assert!(matches!(
            check(&[r], "[h]:2222", k.key_data()),
            HostStatus::Revoked { line: 1, .. }
        ));
        assert_eq!(
            check(&[PathBuf::from("/nonexistent")], "h", k.key_data()),
            HostStatus::Unknown
        );
    }

    #[test]
    fn another_type_is_a_changed_key_and_port_22_is_the_bare_name() {
        const EC: &str = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBPmLfUqMDYF37QRHn4K5b32sjMMx9R4rqHGT6lfDaql+Gyn3V6ZUIYzrQOvlqWEzswNLOPR5XxAz8Y40OC1AFR4=";
        let f = file("t", &format!("[h]:22 {EC}\n"));
        let files = [f.clone()];
        assert_eq!(
            check(&files, "h", key(ED).key_data()),
            HostStatus::Changed { file: f, line: 1 }
        );
        assert_eq!(check(&files, "h", key(EC).key_data()), HostStatus::Known);
        let f2 = file("t2", &format!("h {ED}\n"));
        assert_eq!(
            check(&[f2], "[h]:22", key(ED).key_data()),
            HostStatus::Known
        );
        let pref = preferred_algorithms(
            &files,
            "h",
            &[ssh_key::Algorithm::Ed25519, key(EC).algorithm()],
        );
        assert_eq!(pref, vec![key(EC).algorithm(), ssh_key::Algorithm::Ed25519]);
    }

    #[test]
    fn hashed_entries_written_and_read() {
        let f = file("h", "garbage line\n");
        add(&f, "[127.0.0.1]:2200", &key(ED), true).unwrap();
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(
            text.contains("|1|") && !text.contains("127.0.0.1"),
            "{text}"
        );
        let files = [f];
        assert_eq!(
            check(&files, "[127.0.0.1]:2200", key(ED).key_data()),
            HostStatus::Known
        );
        assert!(matches!(
            check(&files, "[127.0.0.1]:2200", key(ED2).key_data()),
            HostStatus::Changed { line: 2, .. }
        ));
        assert_eq!(
            check(&files, "127.0.0.1", key(ED).key_data()),
            HostStatus::Unknown
        );
    }
}
