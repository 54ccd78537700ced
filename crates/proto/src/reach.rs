//! Reach beyond the local network (`reach anywhere`, off by default): a signer that
//! turned it on also accepts links by its iroh endpoint id, and an agent or `vmux ssh`
//! that turned it on dials that id when the local routes (saved address, mDNS,
//! `--signer`) fail or stay silent for [`LOCAL_BUDGET`]. iroh finds a direct path
//! (hole punching) or carries the packets through a relay; the link inside is the same
//! Noise XX session with pinned keys, so a relay sees ciphertext only and nobody on the
//! path can stand in for either side.
//!
//! The endpoint id is derived from the device's link identity (so it survives restarts
//! and needs no file of its own) and reaches the workstation inside the Noise session:
//! in the pairing's `PairResponse` and in a `Reach` message after every `Hello`.
//! Each device keeps its choice in `reach.toml` beside its config.

use crate::envelope::Reach;
use crate::{Identity, ProtoError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::Duration;
use zeroize::Zeroize;

#[cfg(feature = "reach")]
mod net;
#[cfg(feature = "reach")]
pub use net::*;

/// Whether this build can reach beyond the local network (cargo feature `reach`, on by
/// default; off, the binary is about 13 MB smaller and `reach anywhere` says so).
pub const BUILT: bool = cfg!(feature = "reach");

/// What a build without the `reach` feature says when asked to reach anywhere.
pub const NOT_BUILT: &str =
    "this vmux was built without reach support (cargo feature `reach`, on by default)";

/// The application protocol on iroh connections: one bidirectional stream carrying the
/// link exactly as TCP does.
pub const ALPN: &[u8] = b"vmux/link/1";

/// How long the local routes may take before the endpoint id is dialled as well.
pub const LOCAL_BUDGET: Duration = Duration::from_millis(300);

/// `reach.toml`: `mode = "local"` (default) or `"anywhere"`, the relays to use (none:
/// iroh's public relays) and, for a self-hosted relay whose certificate a private CA
/// signed, that CA.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ReachConfig {
    pub mode: Mode,
    pub relays: Vec<String>,
    pub relay_ca: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Local,
    Anywhere,
}

impl ReachConfig {
    pub fn path(dir: &Path) -> PathBuf {
        dir.join("reach.toml")
    }

    /// The device's choice (`local` when it never made one).
    pub fn load(dir: &Path) -> Result<Self, ProtoError> {
        let c: ReachConfig = crate::store::read_toml(&Self::path(dir))?;
        c.check()
            .map_err(|e| ProtoError::file(Self::path(dir), e))?;
        Ok(c)
    }

    pub fn save(&self, dir: &Path) -> Result<(), ProtoError> {
        crate::store::ensure_dir(dir, 0o700)?;
        let text = toml::to_string(self).map_err(|e| ProtoError::file(Self::path(dir), e))?;
        crate::store::write_atomic(&Self::path(dir), text.as_bytes(), 0o600)
    }

    pub fn anywhere(&self) -> bool {
        self.mode == Mode::Anywhere
    }

    /// Relay URLs must parse (`https://relay.example.com`, `http://` for a test relay).
    pub fn check(&self) -> Result<(), String> {
        for r in &self.relays {
            relay_url(r)?;
        }
        Ok(())
    }

    /// How a person reads it: `anywhere (relays: https://…)`, `local`.
    pub fn describe(&self) -> String {
        match (self.mode, self.relays.is_empty()) {
            (Mode::Local, _) => "local (this network only; no relay)".into(),
            (Mode::Anywhere, true) => "anywhere (iroh's public relays)".into(),
            (Mode::Anywhere, false) => format!("anywhere (relays: {})", self.relays.join(", ")),
        }
    }
}

fn relay_url(s: &str) -> Result<&str, String> {
    let rest = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .ok_or_else(|| format!("relay {s:?}: not an http(s) URL"))?;
    if rest.is_empty() || rest.starts_with('/') || s.chars().any(char::is_whitespace) {
        return Err(format!("relay {s:?}: no host"));
    }
    Ok(s)
}

/// The seed of the device's iroh secret key, derived from its link identity: stable
/// across restarts, and a different key from the Noise one (domain-separated).
fn seed(identity: &Identity) -> zeroize::Zeroizing<[u8; 32]> {
    let mut h = Sha256::new();
    h.update(b"vmux iroh endpoint key v1");
    h.update(identity.private());
    let mut seed: [u8; 32] = h.finalize().into();
    let out = zeroize::Zeroizing::new(seed);
    seed.zeroize();
    out
}

/// The device's endpoint id (its iroh public key, hex), as `Reach` carries it.
pub fn endpoint_id(identity: &Identity) -> String {
    let key = ed25519_dalek::SigningKey::from_bytes(&seed(identity));
    crate::identity::hex(key.verifying_key().as_bytes())
}

/// What a signer tells its paired devices.
pub fn info(identity: &Identity, config: &ReachConfig) -> Reach {
    Reach {
        anywhere: config.anywhere(),
        endpoint_id: endpoint_id(identity),
        relays: config.relays.clone(),
    }
}

/// How a link travels now.
#[derive(Clone, Debug, Default)]
pub enum Route {
    /// TCP to a local address (saved, found by mDNS, or `--signer`).
    #[default]
    Lan,
    /// An iroh connection: its selected path says direct or relayed.
    #[cfg(feature = "reach")]
    Iroh(iroh::endpoint::WeakConnectionHandle),
}

impl Route {
    /// `direct (LAN)`, `direct (hole-punched)` or `via relay <url>`, and the QUIC
    /// round-trip time of that path when iroh measured one. `None` once the connection
    /// is gone.
    pub fn describe(&self) -> Option<(String, Option<Duration>)> {
        match self {
            Route::Lan => Some(("direct (LAN)".into(), None)),
            #[cfg(feature = "reach")]
            Route::Iroh(weak) => {
                let conn = weak.upgrade()?;
                let paths = conn.paths();
                let selected = paths.iter().find(|p| p.is_selected())?;
                let line = match selected.remote_addr() {
                    iroh::TransportAddr::Relay(url) => format!("via relay {url}"),
                    _ => "direct (hole-punched)".into(),
                };
                Some((line, conn.rtt(selected.id())))
            }
        }
    }

    pub fn is_iroh(&self) -> bool {
        !matches!(self, Route::Lan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_id_is_stable_and_not_the_noise_key() {
        let id = Identity::generate();
        assert_eq!(endpoint_id(&id), endpoint_id(&id));
        assert_ne!(endpoint_id(&id), endpoint_id(&Identity::generate()));
        assert_ne!(
            crate::identity::unhex(&endpoint_id(&id)).unwrap(),
            id.public()
        );
        #[cfg(feature = "reach")]
        assert_eq!(secret_key(&id).public().to_string(), endpoint_id(&id));
    }

    #[test]
    fn config_round_trips_and_checks_relays() {
        let dir = tempdir();
        assert_eq!(ReachConfig::load(&dir).unwrap(), ReachConfig::default());
        let c = ReachConfig {
            mode: Mode::Anywhere,
            relays: vec!["https://relay.example.com/".into()],
            relay_ca: None,
        };
        c.save(&dir).unwrap();
        assert_eq!(ReachConfig::load(&dir).unwrap(), c);
        assert!(ReachConfig {
            relays: vec!["not a url".into()],
            ..Default::default()
        }
        .check()
        .is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn tempdir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "vmux-reach-{}-{}",
            std::process::id(),
            crate::identity::hex(&crate::random_bytes::<4>())
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
