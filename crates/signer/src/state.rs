//! What the signer keeps on disk, all under `<vmux home>/signer/`:
//! `config.toml`, `identity` (Noise static key), `keys/`, `paired.json`,
//! `decisions.log` and the control socket `control.sock`.

use crate::SignerError;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use vmux_proto::store;

#[derive(Clone, Debug)]
pub struct SignerHome {
    pub dir: PathBuf,
}

impl SignerHome {
    pub fn new(vmux_home: &Path) -> Self {
        SignerHome {
            dir: vmux_home.join("signer"),
        }
    }
    pub fn config(&self) -> PathBuf {
        self.dir.join("config.toml")
    }
    pub fn identity(&self) -> PathBuf {
        self.dir.join("identity")
    }
    pub fn keys(&self) -> PathBuf {
        self.dir.join("keys")
    }
    /// The CA keystore (kept apart from `keys/`: the CA key is never offered for login).
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca")
    }
    /// Nonces of requests whose windows are still open, kept across restarts.
    pub fn replay(&self) -> PathBuf {
        self.dir.join("replay.log")
    }
    /// Per-key state (enabled, name), beside the key directory.
    pub fn key_states(&self) -> PathBuf {
        self.dir.join("keys.json")
    }
    /// Security-key keys' signature counters (beside `keys/`, not in it).
    pub fn sk_counters(&self) -> PathBuf {
        self.dir.join(crate::keystore::sk::COUNTERS)
    }
    /// The CA's certificate serial counter (beside `ca/`, not in it).
    pub fn ca_serial(&self) -> PathBuf {
        self.dir.join("ca-serial")
    }
    /// Bring an older install's state to this layout; never destroys anything it
    /// cannot carry over. Run before any keystore opens.
    pub fn migrate(&self) -> Result<(), SignerError> {
        // Up to 0.1 the serial counter lived in ca/, where the CA keystore then took it
        // for a broken key and the signer never started again.
        let old = self.ca().join("serial");
        if let Ok(text) = std::fs::read_to_string(&old) {
            let old_n: u64 = text.trim().parse().unwrap_or(0);
            let new_n: u64 = std::fs::read_to_string(self.ca_serial())
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0);
            store::write_atomic(
                &self.ca_serial(),
                format!("{}\n", old_n.max(new_n)).as_bytes(),
                0o600,
            )?;
            std::fs::remove_file(&old).map_err(|e| vmux_proto::ProtoError::file(&old, e))?;
            tracing::info!(
                "moved the certificate serial counter from {} to {}",
                old.display(),
                self.ca_serial().display()
            );
        }
        Ok(())
    }
    pub fn paired(&self) -> PathBuf {
        self.dir.join("paired.json")
    }
    pub fn log(&self) -> PathBuf {
        self.dir.join("decisions.log")
    }
    /// Where log output goes while a sheet owns the terminal: `<vmux home>/vmux.log`.
    pub fn output_log(&self) -> PathBuf {
        self.dir.parent().unwrap_or(&self.dir).join("vmux.log")
    }
    pub fn control_socket(&self) -> PathBuf {
        self.dir.join("control.sock")
    }
    pub fn exists(&self) -> bool {
        self.config().exists()
    }

    /// The configuration as the file says now. It is read per request (so that an edit
    /// or `vmux signer ca policy` applies at once), but parsed again only when the file
    /// changed (device, inode, size, modification and change times, and not within the
    /// last seconds): one `stat` instead of a read and a TOML parse on every signature.
    pub fn load_config(&self) -> Result<SignerConfig, SignerError> {
        use std::os::unix::fs::MetadataExt;
        type Cached = (PathBuf, [i64; 7], SignerConfig);
        static CACHE: std::sync::Mutex<Option<Cached>> = std::sync::Mutex::new(None);
        if !self.exists() {
            return Err(SignerError::NotInitialized(self.config()));
        }
        let path = self.config();
        let stamp = std::fs::metadata(&path).ok().map(|m| {
            [
                m.dev() as i64,
                m.ino() as i64,
                m.size() as i64,
                m.mtime(),
                m.mtime_nsec(),
                m.ctime(),
                m.ctime_nsec(),
            ]
        });
        // File times are coarse (a few ms): a file changed within the last second might
        // change again without its stamp changing, so it is always read.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let stamp = stamp.filter(|st| st[3].max(st[5]) < now - 1);
        if let Some(stamp) = stamp {
            if let Some((p, st, c)) = &*CACHE.lock().unwrap() {
                if *p == path && *st == stamp {
                    return Ok(c.clone());
                }
            }
        }
        let config: SignerConfig = store::read_toml(&path)?;
        if let Some(stamp) = stamp {
            *CACHE.lock().unwrap() = Some((path, stamp, config.clone()));
        }
        Ok(config)
    }

    pub fn save_config(&self, c: &SignerConfig) -> Result<(), SignerError> {
        let text = toml::to_string_pretty(c).expect("config serializes");
        Ok(store::write_atomic(&self.config(), text.as_bytes(), 0o600)?)
    }

    pub fn load_paired(&self) -> Result<Vec<PairedDevice>, SignerError> {
        Ok(store::read_json(&self.paired())?.unwrap_or_default())
    }

    pub fn save_paired(&self, p: &[PairedDevice]) -> Result<(), SignerError> {
        Ok(store::write_json(&self.paired(), &p)?)
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SignerConfig {
    /// The name other devices show for this signer.
    pub name: String,
    /// Default address for `vmux signer run`.
    pub listen: String,
    /// How long a pairing request waits for a decision, in seconds.
    pub pair_timeout_secs: u64,
    /// The longest request window (expires − issued) accepted, in seconds (never more
    /// than 60, whatever this says).
    pub max_window_secs: u64,
    /// Clock skew tolerated on `issued`, in seconds.
    pub max_skew_secs: u64,
    /// The decision log rotates when it reaches this many MiB (`decisions.log.1` …
    /// `.8` kept; `vmux signer log --verify` follows the chain across them).
    pub log_max_mb: u64,
    /// This signer's wake URL (its "device token"), sent to paired agents: they POST a
    /// content-free wake message there when they need it and the link is down.
    pub wake_url: Option<String>,
    /// mDNS advertisement: `auto` (where it listens), `loopback` or `off`.
    pub discovery: String,
    /// Session certificate policy.
    pub ca: CaPolicy,
    /// Per-key limits, checked before a person is asked.
    pub policy: Vec<KeyPolicy>,
    /// Desktop notifications for each request; unset: on when a session bus exists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notify: Option<bool>,
    /// An extra approval surface: `askpass` runs `$SSH_ASKPASS` for every request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approver: Option<String>,
    /// User verification after Approve for every key: `pam` (per key: `[[policy]] verify`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verify: Option<String>,
    /// The PAM service verification runs (`/etc/pam.d/<service>`).
    pub pam_service: String,
    /// The user PAM verifies; unset: the user the signer runs as.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pam_user: Option<String>,
    /// The TPM to use (`device:/dev/tpmrm0`, `swtpm:host=127.0.0.1,port=2321`); unset:
    /// `TPM2TOOLS_TCTI`, `TCTI`, else the kernel's resource manager.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcti: Option<String>,
    /// PINs for unattended tokens, by PKCS#11 token label (`tpm` for TPM keys with a
    /// PIN). Anyone who can read this file has them: prefer typing them when the
    /// signer starts on a terminal.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub pins: std::collections::BTreeMap<String, String>,
}

/// What one key may be used for. Lists that are absent do not restrict.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KeyPolicy {
    /// The key's `SHA256:…` fingerprint.
    pub key: String,
    /// Allowed SSHSIG namespaces (`git`, `file`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<Vec<String>>,
    /// Allowed login destinations: host patterns (`*`, `?`), matched only against
    /// `verified` destinations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts: Option<Vec<String>>,
    /// User verification after Approve for this key: `pam`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<String>,
}

impl KeyPolicy {
    /// `Err(PolicyDenied)` when the request falls outside this key's limits, judged on
    /// what the signer parsed: `kind` (`login`, `sshsig`, `unknown`), the SSHSIG
    /// namespace, and for logins the host name the signer can stand behind (`None`
    /// when it cannot name the destination). A policy names what the key is for: a
    /// key with only a namespaces list signs only SSHSIG in those namespaces (a git-only
    /// key never signs a login), one with only a hosts list signs only logins to those
    /// hosts, one with both does both. Data of any other kind is refused by any policy,
    /// since nothing can be checked.
    pub fn check(
        &self,
        kind: &str,
        namespace: Option<&str>,
        host: Option<&str>,
    ) -> Result<(), vmux_proto::ErrorCode> {
        let deny = Err(vmux_proto::ErrorCode::PolicyDenied);
        match kind {
            "sshsig" => match (&self.namespaces, namespace) {
                (Some(allowed), Some(ns)) if !allowed.iter().any(|a| a == ns) => deny,
                (Some(_), None) => deny,
                (None, _) if self.hosts.is_some() => deny,
                _ => Ok(()),
            },
            "login" => match (&self.hosts, host) {
                (None, _) if self.namespaces.is_some() => deny,
                (None, _) => Ok(()),
                (Some(_), None) => deny,
                (Some(patterns), Some(host)) => {
                    let bare = host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host);
                    if patterns.iter().any(|p| glob(p, host) || glob(p, bare)) {
                        Ok(())
                    } else {
                        deny
                    }
                }
            },
            _ if self.namespaces.is_some() || self.hosts.is_some() => deny,
            _ => Ok(()),
        }
    }
}

/// `*` and `?`, case-insensitive: the tree's one glob.
pub use vmux_proto::ssh_config::glob;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_config_is_read_again() {
        let d = std::env::temp_dir().join(format!("vmux-cfg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let home = SignerHome { dir: d.clone() };
        std::fs::create_dir_all(&d).unwrap();
        let mut c = SignerConfig {
            name: "one".into(),
            ..Default::default()
        };
        home.save_config(&c).unwrap();
        assert_eq!(home.load_config().unwrap().name, "one");
        assert_eq!(home.load_config().unwrap().name, "one");
        // Replaced (atomic write) and edited in place with the same length: both seen.
        c.name = "two".into();
        home.save_config(&c).unwrap();
        assert_eq!(home.load_config().unwrap().name, "two");
        let text = std::fs::read_to_string(home.config()).unwrap();
        std::fs::write(home.config(), text.replace("\"two\"", "\"six\"")).unwrap();
        assert_eq!(home.load_config().unwrap().name, "six");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn key_policy() {
        let p = KeyPolicy {
            key: "k".into(),
            namespaces: Some(vec!["git".into()]),
            hosts: Some(vec!["*.example.com".into()]),
            verify: None,
        };
        assert!(p.check("sshsig", Some("git"), None).is_ok());
        assert!(p.check("sshsig", Some("file"), None).is_err());
        assert!(p.check("sshsig", None, None).is_err());
        assert!(p.check("login", None, Some("a.example.com")).is_ok());
        assert!(p.check("login", None, Some("a.example.com:2222")).is_ok());
        assert!(p.check("login", None, None).is_err());
        assert!(p.check("login", None, Some("evil.com")).is_err());
        assert!(p.check("unknown", None, None).is_err());
        let git_only = KeyPolicy {
            key: "k".into(),
            namespaces: Some(vec!["git".into()]),
            hosts: None,
            verify: None,
        };
        assert!(git_only.check("login", None, Some("x")).is_err());
        let hosts_only = KeyPolicy {
            key: "k".into(),
            namespaces: None,
            hosts: Some(vec!["h".into()]),
            verify: None,
        };
        assert!(hosts_only.check("login", None, Some("h")).is_ok());
        assert!(hosts_only.check("sshsig", Some("git"), None).is_err());
        assert!(git_only.check("unknown", None, None).is_err());
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CaPolicy {
    /// Whether the CA issues session certificates at all.
    pub issue: bool,
    /// The longest validity granted, in seconds (requests ask for less or are capped).
    pub max_validity_secs: u64,
    /// Principals written into certificates; empty means the signer's user name.
    pub principals: Vec<String>,
    /// Extensions a certificate carries (PROTOCOL.certkeys): by default a terminal and
    /// port forwarding only, no agent or X11 forwarding, no user rc.
    pub extensions: Vec<String>,
    /// `source-address` critical option: CIDR list the certificate may be used from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_address: Option<String>,
}

/// The extensions a session certificate carries unless the CA policy says otherwise.
pub const DEFAULT_EXTENSIONS: [&str; 2] = ["permit-pty", "permit-port-forwarding"];

impl Default for CaPolicy {
    fn default() -> Self {
        CaPolicy {
            issue: true,
            max_validity_secs: 8 * 3600,
            principals: vec![],
            extensions: DEFAULT_EXTENSIONS.iter().map(|s| s.to_string()).collect(),
            source_address: None,
        }
    }
}

impl Default for SignerConfig {
    fn default() -> Self {
        SignerConfig {
            name: "vmux-signer".into(),
            listen: "0.0.0.0:7227".into(),
            pair_timeout_secs: 120,
            max_window_secs: 60,
            max_skew_secs: 30,
            log_max_mb: 64,
            wake_url: None,
            discovery: "auto".into(),
            ca: CaPolicy::default(),
            policy: vec![],
            notify: None,
            approver: None,
            verify: None,
            pam_service: "vmux".into(),
            pam_user: None,
            tcti: None,
            pins: Default::default(),
        }
    }
}

/// A device this signer trusts: its Noise static key is pinned here.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PairedDevice {
    pub id: String,
    pub name: String,
    #[serde(with = "vmux_proto::envelope::b64")]
    pub public_key: Vec<u8>,
    pub paired_at: u64,
    #[serde(default)]
    pub last_seen: u64,
}
