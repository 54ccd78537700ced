//! What the signer knows of its reach beyond the local network (`vmux signer reach
//! anywhere`; off by default): the configuration in force, the endpoint serving it and
//! what it reports. The door itself (accepting over iroh, following `reach.toml`) is
//! `listener::reach`.

#[cfg(feature = "reach")]
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::AtomicBool;
use std::sync::Mutex;
use std::time::SystemTime;
use vmux_proto::reach::ReachConfig;

/// QUIC handshakes in progress at once (beyond them, new connections are refused
/// unanswered); each is bounded by the same deadline as a TCP handshake.
pub const MAX_HANDSHAKES: usize = 64;

/// What the signer knows of its reach: the configuration in force and the endpoint
/// that serves it.
pub struct Reachability {
    pub(crate) config: Mutex<ReachConfig>,
    pub(crate) file_time: Mutex<Option<SystemTime>>,
    #[cfg(feature = "reach")]
    pub(crate) endpoint: Mutex<Option<iroh::Endpoint>>,
    #[cfg(feature = "reach")]
    pub(crate) handshakes: std::sync::Arc<tokio::sync::Semaphore>,
    /// The caps on unauthenticated work for iroh peers (per endpoint id), a pool of
    /// their own: a flood through a relay cannot crowd out the local network.
    #[cfg(feature = "reach")]
    pub(crate) gate: crate::guard::Gate,
    pub(crate) watching: AtomicBool,
}

impl Reachability {
    pub fn load(dir: &std::path::Path) -> Result<Self, vmux_proto::ProtoError> {
        let config = ReachConfig::load(dir)?;
        Ok(Reachability {
            config: Mutex::new(config),
            file_time: Mutex::new(modified(dir)),
            #[cfg(feature = "reach")]
            endpoint: Mutex::new(None),
            #[cfg(feature = "reach")]
            handshakes: std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES)),
            #[cfg(feature = "reach")]
            gate: Default::default(),
            watching: AtomicBool::new(false),
        })
    }

    pub fn config(&self) -> ReachConfig {
        self.config.lock().unwrap().clone()
    }
}

pub(crate) fn modified(dir: &std::path::Path) -> Option<SystemTime> {
    std::fs::metadata(ReachConfig::path(dir))
        .and_then(|m| m.modified())
        .ok()
}

/// Where the status of reach is written for `vmux signer reach` and `vmux status`.
pub fn status_path(signer_dir: &std::path::Path) -> std::path::PathBuf {
    signer_dir.join("reach-status.json")
}

/// What the running signer says about its reach.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReachStatus {
    pub pid: u32,
    pub anywhere: bool,
    pub endpoint_id: String,
    /// The relay this signer is connected to and reachable through (none yet, or local).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub home_relay: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[cfg(feature = "reach")]
/// An address for the bounds of `guard`, one per iroh endpoint id: a unique-local IPv6
/// address (`fd69:726f:6800::/40`, "iroh") made from the id, never routed anywhere.
pub fn peer_addr(id: &iroh::EndpointId) -> IpAddr {
    let mut b = [0u8; 16];
    b[..5].copy_from_slice(&[0xfd, 0x69, 0x72, 0x6f, 0x68]);
    b[5..].copy_from_slice(&id.as_bytes()[..11]);
    IpAddr::V6(Ipv6Addr::from(b))
}

#[cfg(all(test, feature = "reach"))]
mod tests {
    use super::*;

    #[test]
    fn peer_addresses_are_unique_local_and_per_id() {
        let a = iroh::SecretKey::from_bytes(&[1u8; 32]).public();
        let b = iroh::SecretKey::from_bytes(&[2u8; 32]).public();
        assert_ne!(peer_addr(&a), peer_addr(&b));
        assert_eq!(peer_addr(&a), peer_addr(&a));
        assert!(peer_addr(&a).to_string().starts_with("fd69:726f:68"));
    }
}
