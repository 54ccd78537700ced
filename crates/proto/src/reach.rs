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
use iroh::endpoint::{presets, Connection, QuicTransportConfig, VarInt, WeakConnectionHandle};
use iroh::{Endpoint, EndpointAddr, EndpointId, RelayMode, RelayUrl, SecretKey, TransportAddr};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use zeroize::Zeroize;

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
        c.check().map_err(|e| ProtoError::file(Self::path(dir), e))?;
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

fn relay_url(s: &str) -> Result<RelayUrl, String> {
    match s.parse::<RelayUrl>() {
        Ok(u) if matches!(u.scheme(), "https" | "http") => Ok(u),
        Ok(_) => Err(format!("relay {s:?}: not an http(s) URL")),
        Err(e) => Err(format!("relay {s:?}: {e}")),
    }
}

/// The device's iroh secret key, derived from its link identity: stable across
/// restarts, and a different key from the Noise one (domain-separated).
pub fn secret_key(identity: &Identity) -> SecretKey {
    let mut h = Sha256::new();
    h.update(b"vmux iroh endpoint key v1");
    h.update(identity.private());
    let mut seed: [u8; 32] = h.finalize().into();
    let key = SecretKey::from_bytes(&seed);
    seed.zeroize();
    key
}

/// The device's endpoint id, as `Reach` carries it.
pub fn endpoint_id(identity: &Identity) -> String {
    secret_key(identity).public().to_string()
}

/// What a signer tells its paired devices.
pub fn info(identity: &Identity, config: &ReachConfig) -> Reach {
    Reach {
        anywhere: config.anywhere(),
        endpoint_id: endpoint_id(identity),
        relays: config.relays.clone(),
    }
}

/// QUIC limits for link connections: the dialler opens one bidirectional stream and
/// nothing else; a peer cannot open more.
fn transport() -> QuicTransportConfig {
    QuicTransportConfig::builder()
        .max_concurrent_bidi_streams(VarInt::from_u32(1))
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        .build()
}

/// Bind this device's endpoint. `accept`: take link connections (the signer). With no
/// relays configured, iroh's defaults: its public relays and its DNS address lookup
/// (which publishes the endpoint id with its home relay); with relays, only those and
/// no lookup (the relays come with the signer's `Reach`).
pub async fn bind(
    identity: &Identity,
    config: &ReachConfig,
    accept: bool,
) -> Result<Endpoint, ProtoError> {
    let mut b = if config.relays.is_empty() {
        Endpoint::builder(presets::N0)
    } else {
        let urls = config
            .relays
            .iter()
            .map(|r| relay_url(r))
            .collect::<Result<Vec<_>, _>>()
            .map_err(ProtoError::Reach)?;
        Endpoint::builder(presets::Minimal).relay_mode(RelayMode::custom(urls))
    };
    b = b.secret_key(secret_key(identity)).transport_config(transport());
    if accept {
        b = b.alpns(vec![ALPN.to_vec()]);
    }
    if let Some(ca) = &config.relay_ca {
        b = b.ca_tls_config(iroh::tls::CaTlsConfig::embedded().with_extra_roots(read_ca(ca)?));
    }
    b.bind()
        .await
        .map_err(|e| ProtoError::Reach(format!("iroh endpoint: {e}")))
}

fn read_ca(path: &Path) -> Result<Vec<rustls_pki_types::CertificateDer<'static>>, ProtoError> {
    use rustls_pki_types::pem::PemObject;
    let certs = rustls_pki_types::CertificateDer::pem_file_iter(path)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| ProtoError::file(path, format!("relay CA: {e}")))?;
    if certs.is_empty() {
        return Err(ProtoError::file(path, "relay CA: no certificate in the file"));
    }
    Ok(certs)
}

/// Dial a signer by its endpoint id (through its relays, and directly once hole
/// punching finds a path) and open the link's stream.
pub async fn dial(endpoint: &Endpoint, to: &Reach) -> Result<IrohStream, ProtoError> {
    let id: EndpointId = to
        .endpoint_id
        .parse()
        .map_err(|e| ProtoError::Reach(format!("endpoint id {:?}: {e}", to.endpoint_id)))?;
    let mut addr = EndpointAddr::new(id);
    for r in &to.relays {
        addr = addr.with_relay_url(relay_url(r).map_err(ProtoError::Reach)?);
    }
    let conn = endpoint
        .connect(addr, ALPN)
        .await
        .map_err(|e| ProtoError::Reach(format!("iroh connect: {e}")))?;
    let (send, recv) = conn
        .open_bi()
        .await
        .map_err(|e| ProtoError::Reach(format!("iroh stream: {e}")))?;
    Ok(IrohStream::new(conn, send, recv))
}

/// Take the link stream of an accepted connection (at most one per connection).
pub async fn accept_stream(conn: Connection) -> Result<IrohStream, ProtoError> {
    let (send, recv) = conn
        .accept_bi()
        .await
        .map_err(|e| ProtoError::Reach(format!("iroh stream: {e}")))?;
    Ok(IrohStream::new(conn, send, recv))
}

/// The link's byte stream over an iroh connection; the connection closes with it,
/// once the peer has read what was sent last (a refusal, a final answer), or after
/// [`LINGER`].
pub struct IrohStream {
    conn: Connection,
    send: Option<iroh::endpoint::SendStream>,
    recv: iroh::endpoint::RecvStream,
}

/// How long a closing stream waits for the peer to read its last bytes.
const LINGER: Duration = Duration::from_secs(3);

impl IrohStream {
    fn new(
        conn: Connection,
        send: iroh::endpoint::SendStream,
        recv: iroh::endpoint::RecvStream,
    ) -> Self {
        IrohStream {
            conn,
            send: Some(send),
            recv,
        }
    }

    /// How the link travels, for status: a weak handle, so status never keeps a dead
    /// connection open.
    pub fn route(&self) -> Route {
        Route::Iroh(self.conn.weak_handle())
    }

    fn send(&mut self) -> std::io::Result<Pin<&mut iroh::endpoint::SendStream>> {
        match self.send.as_mut() {
            Some(s) => Ok(Pin::new(s)),
            None => Err(std::io::ErrorKind::BrokenPipe.into()),
        }
    }
}

impl Drop for IrohStream {
    fn drop(&mut self) {
        let conn = self.conn.clone();
        let Some(mut send) = self.send.take() else {
            return;
        };
        let _ = send.finish();
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    let _ = tokio::time::timeout(LINGER, send.stopped()).await;
                    conn.close(VarInt::from_u32(0), b"link closed");
                });
            }
            Err(_) => conn.close(VarInt::from_u32(0), b"link closed"),
        }
    }
}

impl AsyncRead for IrohStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.recv).poll_read(cx, buf)
    }
}

impl AsyncWrite for IrohStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.send() {
            Ok(s) => s.poll_write(cx, buf).map_err(std::io::Error::other),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.send() {
            Ok(s) => s.poll_flush(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.send() {
            Ok(s) => s.poll_shutdown(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

/// How a link travels now.
#[derive(Clone, Debug, Default)]
pub enum Route {
    /// TCP to a local address (saved, found by mDNS, or `--signer`).
    #[default]
    Lan,
    /// An iroh connection: its selected path says direct or relayed.
    Iroh(WeakConnectionHandle),
}

impl Route {
    /// `direct (LAN)`, `direct (hole-punched)` or `via relay <url>`, and the QUIC
    /// round-trip time of that path when iroh measured one. `None` once the connection
    /// is gone.
    pub fn describe(&self) -> Option<(String, Option<Duration>)> {
        match self {
            Route::Lan => Some(("direct (LAN)".into(), None)),
            Route::Iroh(weak) => {
                let conn = weak.upgrade()?;
                let paths = conn.paths();
                let selected = paths.iter().find(|p| p.is_selected())?;
                let line = match selected.remote_addr() {
                    TransportAddr::Relay(url) => format!("via relay {url}"),
                    _ => "direct (hole-punched)".into(),
                };
                Some((line, conn.rtt(selected.id())))
            }
        }
    }

    pub fn is_iroh(&self) -> bool {
        matches!(self, Route::Iroh(_))
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
        assert_ne!(secret_key(&id).public().as_bytes().as_slice(), id.public());
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
