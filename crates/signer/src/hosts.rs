//! The signer's own host-key pins (`signer/known_hosts`): which server host key it has
//! seen under which name. One `NAME KEYTYPE BASE64` line per pin, the plain OpenSSH
//! known_hosts form. A name is recorded when a person approves a login whose session
//! binding verified; from then on the signer names that host itself.

use ssh_key::encoding::Decode;
use ssh_key::public::KeyData;
use ssh_key::HashAlg;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    pub name: String,
    pub key: Vec<u8>,
}

impl Pin {
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.key)
    }
}

pub fn fingerprint(blob: &[u8]) -> String {
    KeyData::decode(&mut &blob[..])
        .map(|k| k.fingerprint(HashAlg::Sha256).to_string())
        .unwrap_or_else(|_| "(unparseable host key)".into())
}

#[derive(Debug, Clone, Default)]
pub struct HostPins {
    pub pins: Vec<Pin>,
}

impl HostPins {
    /// Read the pins; lines that do not parse are skipped with a warning naming them.
    pub fn load(path: &Path) -> HostPins {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text, path),
            Err(_) => HostPins::default(),
        }
    }

    /// Pins from the text of a pins file (`path` only names it in warnings).
    pub fn parse(text: &str, path: &Path) -> HostPins {
        let mut pins = vec![];
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match parse_line(line) {
                Some(p) => pins.push(p),
                None => {
                    tracing::warn!("{} line {}: not a host pin, skipped", path.display(), n + 1)
                }
            }
        }
        HostPins { pins }
    }

    pub fn save(&self, path: &Path) -> Result<(), vmux_proto::ProtoError> {
        let mut text = String::from("# vmux signer host-key pins: NAME KEYTYPE BASE64\n");
        for p in &self.pins {
            if let Ok(k) = KeyData::decode(&mut &p.key[..]) {
                if let Ok(line) = ssh_key::PublicKey::new(k, "").to_openssh() {
                    text += &format!("{} {}\n", p.name, line.trim());
                }
            }
        }
        vmux_proto::store::write_atomic(path, text.as_bytes(), 0o600)
    }

    /// Names pinned to `key`.
    pub fn names_for(&self, key: &[u8]) -> Vec<&str> {
        self.pins
            .iter()
            .filter(|p| p.key == key)
            .map(|p| p.name.as_str())
            .collect()
    }

    /// Keys pinned under `name`.
    pub fn keys_for(&self, name: &str) -> Vec<&[u8]> {
        self.pins
            .iter()
            .filter(|p| p.name.eq_ignore_ascii_case(name))
            .map(|p| p.key.as_slice())
            .collect()
    }

    /// Pin `key` under `name` (no-op when it already is).
    pub fn add(&mut self, name: &str, key: &[u8]) -> bool {
        if self.pins.iter().any(|p| p.name == name && p.key == key) {
            return false;
        }
        self.pins.push(Pin {
            name: name.to_string(),
            key: key.to_vec(),
        });
        true
    }

    /// Remove pins by name or by key fingerprint; returns how many went.
    pub fn remove(&mut self, what: &str) -> usize {
        let before = self.pins.len();
        self.pins
            .retain(|p| !(p.name.eq_ignore_ascii_case(what) || p.fingerprint() == what));
        before - self.pins.len()
    }
}

/// The pins as last read, re-read only when the file changes (size or mtime), so a
/// request does not pay for parsing the file.
#[derive(Default)]
pub struct PinCache {
    cached: std::sync::Mutex<Option<Cached>>,
}

/// The file's modification time and size when read, and what it held.
type Cached = (Option<std::time::SystemTime>, u64, std::sync::Arc<HostPins>);

impl PinCache {
    pub fn get(&self, path: &Path) -> std::sync::Arc<HostPins> {
        let meta = std::fs::metadata(path).ok();
        let stamp = (
            meta.as_ref().and_then(|m| m.modified().ok()),
            meta.as_ref().map(|m| m.len()).unwrap_or(0),
        );
        let mut c = self.cached.lock().unwrap();
        if let Some((t, len, pins)) = c.as_ref() {
            if (*t, *len) == stamp {
                return pins.clone();
            }
        }
        let pins = std::sync::Arc::new(HostPins::load(path));
        *c = Some((stamp.0, stamp.1, pins.clone()));
        pins
    }

    /// Forget what was read (after this process wrote the file).
    pub fn invalidate(&self) {
        *self.cached.lock().unwrap() = None;
    }
}

/// Pins worth keeping are real host names: no spaces or controls, not one of the
/// placeholders an agent uses when it could not name a host.
pub fn pinnable_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with("SHA256:")
        && !name.starts_with("hashed entry")
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._:[]@".contains(c))
}

fn parse_line(line: &str) -> Option<Pin> {
    let (name, rest) = line.split_once(char::is_whitespace)?;
    let key = ssh_key::PublicKey::from_openssh(rest.trim()).ok()?;
    Some(Pin {
        // Pins written as `host:22` before names were made one are read as `host`.
        name: vmux_proto::ssh_config::canonical_name(name),
        key: key.key_data().encode_vec().ok()?,
    })
}

use ssh_key::encoding::Encode;

/// Where the pins live.
pub fn path(signer_dir: &Path) -> PathBuf {
    signer_dir.join("known_hosts")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_round_trip_and_remove() {
        let d = tempdir();
        let mut rng = ssh_key::rand_core::UnwrapErr(ssh_key::getrandom::SysRng);
        let k = ssh_key::PrivateKey::random(&mut rng, ssh_key::Algorithm::Ed25519).unwrap();
        let blob = k.public_key().key_data().encode_vec().unwrap();
        let mut pins = HostPins::default();
        assert!(pins.add("git.example.com", &blob));
        assert!(!pins.add("git.example.com", &blob));
        let p = d.join("known_hosts");
        pins.save(&p).unwrap();
        std::fs::write(&p, std::fs::read_to_string(&p).unwrap() + "garbage line\n").unwrap();
        let back = HostPins::load(&p);
        assert_eq!(back.names_for(&blob), vec!["git.example.com"]);
        assert_eq!(back.keys_for("GIT.example.com").len(), 1);
        let mut back = back;
        assert_eq!(back.remove(&fingerprint(&blob)), 1);
        assert!(back.pins.is_empty());
        assert!(pinnable_name("h:2222") && !pinnable_name("SHA256:x") && !pinnable_name("a b"));
    }

    fn tempdir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("vmux-pins-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
