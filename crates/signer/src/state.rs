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
    pub fn paired(&self) -> PathBuf {
        self.dir.join("paired.json")
    }
    pub fn log(&self) -> PathBuf {
        self.dir.join("decisions.log")
    }
    pub fn control_socket(&self) -> PathBuf {
        self.dir.join("control.sock")
    }
    pub fn exists(&self) -> bool {
        self.config().exists()
    }

    pub fn load_config(&self) -> Result<SignerConfig, SignerError> {
        if !self.exists() {
            return Err(SignerError::NotInitialized(self.config()));
        }
        Ok(store::read_toml(&self.config())?)
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
    /// The longest request window (expires − issued) accepted, in seconds.
    pub max_window_secs: u64,
    /// Clock skew tolerated on `issued`, in seconds.
    pub max_skew_secs: u64,
    /// Session certificate policy.
    pub ca: CaPolicy,
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
}

impl Default for CaPolicy {
    fn default() -> Self {
        CaPolicy {
            issue: true,
            max_validity_secs: 8 * 3600,
            principals: vec![],
        }
    }
}

impl Default for SignerConfig {
    fn default() -> Self {
        SignerConfig {
            name: "vmux-signer".into(),
            listen: "0.0.0.0:7227".into(),
            pair_timeout_secs: 120,
            max_window_secs: 300,
            max_skew_secs: 60,
            ca: CaPolicy::default(),
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
