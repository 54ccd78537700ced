//! Host keys as OpenSSH checks them (sshd(8) "SSH_KNOWN_HOSTS FILE FORMAT"): plain and
//! hashed (`|1|salt|HMAC-SHA1`) names, `!`-negated and wildcard patterns, `@revoked`
//! keys. A key is known, unknown, changed (another key of the same type is recorded for
//! the name) or revoked.

use ssh_key::known_hosts::{Entry, HostPatterns, Marker};
use ssh_key::public::KeyData;
use ssh_key::{HashAlg, PublicKey};
use std::io::Write;
use std::path::{Path, PathBuf};
use vmux_agent::hostnames::{glob, hashed_matches};

#[derive(Debug, Clone, PartialEq)]
pub enum HostStatus {
    /// A line for this name holds this key.
    Known,
    /// No line for this name holds a key of this type.
    Unknown,
    /// A line for this name holds another key of the same type: file and line number.
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

/// One file's text: a revoked key wins, then a match, then another key of the type.
pub fn check_text(text: &str, name: &str, key: &KeyData) -> Found {
    let mut changed = None;
    let mut known = false;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        // Lines that do not parse (other key types, typos) are skipped, as ssh does.
        let Ok(entry) = line.parse::<Entry>() else {
            continue;
        };
        let same_key = entry.public_key().key_data() == key;
        match entry.marker() {
            Some(Marker::Revoked) if same_key => return Found::Revoked(n + 1),
            Some(_) => continue,
            None => {}
        }
        if !names_match(entry.host_patterns(), name) {
            continue;
        }
        if same_key {
            known = true;
        } else if changed.is_none() && entry.public_key().algorithm() == key.algorithm() {
            changed = Some(n + 1);
        }
    }
    match (known, changed) {
        (true, _) => Found::Known,
        (false, Some(line)) => Found::Changed(line),
        (false, None) => Found::Nothing,
    }
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
