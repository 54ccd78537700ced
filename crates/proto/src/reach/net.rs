//! The iroh side of reach (cargo feature `reach`): endpoints, the link's stream over
//! a QUIC connection, and how that connection travels.

use super::{relay_url, seed, ReachConfig, Route, ALPN};
use crate::envelope::Reach;
use crate::{Identity, ProtoError};
use iroh::endpoint::{presets, Connection, QuicTransportConfig, VarInt};
use iroh::{Endpoint, EndpointAddr, EndpointId, RelayMode, RelayUrl, SecretKey};
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The device's iroh secret key (see `endpoint_id`).
pub fn secret_key(identity: &Identity) -> SecretKey {
    SecretKey::from_bytes(&seed(identity))
}

fn parse_relay(s: &str) -> Result<RelayUrl, ProtoError> {
    relay_url(s)
        .and_then(|s| {
            s.parse::<RelayUrl>()
                .map_err(|e| format!("relay {s:?}: {e}"))
        })
        .map_err(ProtoError::Reach)
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
            .map(|r| parse_relay(r))
            .collect::<Result<Vec<_>, _>>()?;
        Endpoint::builder(presets::Minimal).relay_mode(RelayMode::custom(urls))
    };
    b = b
        .secret_key(secret_key(identity))
        .transport_config(transport());
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
        return Err(ProtoError::file(
            path,
            "relay CA: no certificate in the file",
        ));
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
        addr = addr.with_relay_url(parse_relay(r)?);
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
