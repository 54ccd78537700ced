//! The Noise XX session over a byte stream (TCP in practice).
//!
//! Wire: every Noise message is `uint16 length ‖ message`, as the Noise spec suggests
//! for stream transports. Both sides learn each other's static key during XX; callers
//! compare it with their pins (or start pairing) before they trust anything else.

use crate::envelope::{Envelope, PROTOCOL_VERSION};
use crate::frame::{self, FrameBuffer};
use crate::identity::{Identity, NOISE_PARAMS};
use crate::ProtoError;
use snow::StatelessTransportState;
use std::sync::Arc;
use tokio::io::{
    AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, ReadHalf, WriteHalf,
};
use tokio::sync::mpsc;

const PROLOGUE: &[u8] = b"vmux link v1";
const MAX_NOISE_MSG: usize = 65_535;
/// Handshake messages carry keys and empty payloads: a few hundred bytes at most. Before
/// a peer is authenticated nothing bigger is read or allocated.
const MAX_HANDSHAKE_MSG: usize = 1024;
const TAG_LEN: usize = 16;
const MAX_PLAINTEXT: usize = MAX_NOISE_MSG - TAG_LEN;

/// Anything the link can run over.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Stream for T {}

/// An established, encrypted link; `remote_static` is not yet trusted by anyone.
pub struct Link<S: Stream> {
    pub reader: LinkReader<S>,
    pub writer: LinkWriter<S>,
    pub remote_static: Vec<u8>,
    pub handshake_hash: Vec<u8>,
}

pub struct LinkReader<S: Stream> {
    transport: Arc<StatelessTransportState>,
    nonce: u64,
    /// Buffered: a message's length and body (and often the next message) arrive in
    /// one read instead of two or more system calls.
    io: BufReader<ReadHalf<S>>,
    frames: FrameBuffer,
    /// The largest frame accepted: small until the peer is known (`authenticated`).
    limit: usize,
}

pub struct LinkWriter<S: Stream> {
    transport: Arc<StatelessTransportState>,
    nonce: u64,
    io: WriteHalf<S>,
}

/// Run XX as the initiator (the agent or client side).
pub async fn connect<S: Stream>(io: S, me: &Identity) -> Result<Link<S>, ProtoError> {
    connect_pinned(io, me, None).await
}

/// Run XX as the initiator, and when `pinned` is given, stop before our own static key
/// is sent (message 3) if the responder's is not the pinned one: a spoofed address
/// learns nothing about us.
pub async fn connect_pinned<S: Stream>(
    mut io: S,
    me: &Identity,
    pinned: Option<&[u8]>,
) -> Result<Link<S>, ProtoError> {
    let mut hs = builder(me)?.build_initiator()?;
    let mut buf = [0u8; MAX_HANDSHAKE_MSG];
    let mut payload = [0u8; MAX_HANDSHAKE_MSG];
    let n = hs.write_message(&[], &mut buf)?; // -> e
    write_msg(&mut io, &buf[..n]).await?;
    let m = read_handshake_msg(&mut io).await?; // <- e, ee, s, es
    hs.read_message(&m, &mut payload)?;
    if let Some(pin) = pinned {
        if hs.get_remote_static() != Some(pin) {
            return Err(ProtoError::PinMismatch(crate::identity::fingerprint(
                hs.get_remote_static().unwrap_or_default(),
            )));
        }
    }
    let n = hs.write_message(&[], &mut buf)?; // -> s, se
    write_msg(&mut io, &buf[..n]).await?;
    finish(io, hs)
}

/// Run XX as the responder (the signer side).
pub async fn accept<S: Stream>(mut io: S, me: &Identity) -> Result<Link<S>, ProtoError> {
    let mut hs = builder(me)?.build_responder()?;
    let mut buf = [0u8; MAX_HANDSHAKE_MSG];
    let mut payload = [0u8; MAX_HANDSHAKE_MSG];
    let m = read_handshake_msg(&mut io).await?;
    hs.read_message(&m, &mut payload)?;
    let n = hs.write_message(&[], &mut buf)?;
    write_msg(&mut io, &buf[..n]).await?;
    let m = read_handshake_msg(&mut io).await?;
    hs.read_message(&m, &mut payload)?;
    finish(io, hs)
}

fn builder(me: &Identity) -> Result<snow::Builder<'_>, ProtoError> {
    let params = NOISE_PARAMS.parse().expect("valid Noise parameters");
    Ok(snow::Builder::new(params)
        .local_private_key(me.private())?
        .prologue(PROLOGUE)?)
}

fn finish<S: Stream>(io: S, hs: snow::HandshakeState) -> Result<Link<S>, ProtoError> {
    let remote_static = hs
        .get_remote_static()
        .ok_or_else(|| ProtoError::Noise("peer sent no static key".into()))?
        .to_vec();
    let handshake_hash = hs.get_handshake_hash().to_vec();
    let transport = Arc::new(hs.into_stateless_transport_mode()?);
    let (r, w) = tokio::io::split(io);
    Ok(Link {
        reader: LinkReader {
            transport: transport.clone(),
            nonce: 0,
            io: BufReader::with_capacity(16 * 1024, r),
            frames: FrameBuffer::default(),
            limit: frame::MAX_PREAUTH_FRAME,
        },
        writer: LinkWriter {
            transport,
            nonce: 0,
            io: w,
        },
        remote_static,
        handshake_hash,
    })
}

async fn write_msg<W: AsyncWrite + Unpin>(io: &mut W, msg: &[u8]) -> Result<(), ProtoError> {
    let mut out = Vec::with_capacity(2 + msg.len());
    out.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    out.extend_from_slice(msg);
    io.write_all(&out).await?;
    Ok(())
}

/// A handshake message: refused unread when it announces more than a handshake needs.
async fn read_handshake_msg<R: AsyncRead + Unpin>(io: &mut R) -> Result<Vec<u8>, ProtoError> {
    let mut len = [0u8; 2];
    match io.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(ProtoError::Closed),
        Err(e) => return Err(e.into()),
    }
    let n = u16::from_be_bytes(len) as usize;
    if n > MAX_HANDSHAKE_MSG {
        return Err(ProtoError::Noise(format!(
            "a handshake message of {n} bytes (at most {MAX_HANDSHAKE_MSG})"
        )));
    }
    let mut msg = vec![0u8; n];
    io.read_exact(&mut msg).await?;
    Ok(msg)
}

async fn read_msg<R: AsyncRead + Unpin>(io: &mut R) -> Result<Vec<u8>, ProtoError> {
    let mut len = [0u8; 2];
    match io.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(ProtoError::Closed),
        Err(e) => return Err(e.into()),
    }
    let mut msg = vec![0u8; u16::from_be_bytes(len) as usize];
    io.read_exact(&mut msg).await?;
    Ok(msg)
}

impl<S: Stream> LinkReader<S> {
    /// The peer proved a pinned key: frames up to the full size are read from now on.
    pub fn authenticated(&mut self) {
        self.limit = frame::MAX_FRAME;
    }

    /// The next envelope. `BadEnvelope` leaves the link usable (that frame alone is
    /// dropped); every other error means the link is finished.
    pub async fn recv(&mut self) -> Result<Envelope, ProtoError> {
        loop {
            if let Some(f) = self.frames.next_frame_within(self.limit)? {
                let env = Envelope::from_json(&f)?;
                if env.version > PROTOCOL_VERSION {
                    return Err(ProtoError::Version(env.version, PROTOCOL_VERSION));
                }
                return Ok(env);
            }
            let msg = read_msg(&mut self.io).await?;
            let mut plain = vec![0u8; msg.len()];
            let n = self
                .transport
                .read_message(self.nonce, &msg, &mut plain)
                .map_err(|e| ProtoError::Noise(format!("message {}: {e}", self.nonce)))?;
            self.nonce += 1;
            self.frames.push(&plain[..n]);
        }
    }
}

impl<S: Stream> LinkWriter<S> {
    pub async fn send(&mut self, env: &Envelope) -> Result<(), ProtoError> {
        let frame = frame::encode(&env.to_json())?;
        let chunks = frame.len().div_ceil(MAX_PLAINTEXT).max(1);
        let mut out = Vec::with_capacity(frame.len() + chunks * (2 + TAG_LEN));
        // Each ciphertext is written in place after its length (no 64 KiB scratch
        // buffer per message).
        for chunk in frame.chunks(MAX_PLAINTEXT) {
            let at = out.len() + 2;
            out.resize(at + chunk.len() + TAG_LEN, 0);
            let n = self
                .transport
                .write_message(self.nonce, chunk, &mut out[at..])?;
            self.nonce += 1;
            out.truncate(at + n);
            out[at - 2..at].copy_from_slice(&(n as u16).to_be_bytes());
        }
        self.io.write_all(&out).await?;
        self.io.flush().await?;
        Ok(())
    }

    /// Move the writer into its own task; the returned sender queues envelopes for it.
    /// The task ends when every sender is dropped or the peer goes away.
    pub fn spawn(mut self) -> Outbox {
        let (tx, mut rx) = mpsc::channel::<Envelope>(256);
        tokio::spawn(async move {
            while let Some(env) = rx.recv().await {
                if let Err(e) = self.send(&env).await {
                    tracing::debug!("link writer stopped: {e}");
                    break;
                }
            }
            let _ = self.io.shutdown().await;
        });
        Outbox(tx)
    }
}

/// A cloneable handle to a link writer task.
#[derive(Clone)]
pub struct Outbox(mpsc::Sender<Envelope>);

impl Outbox {
    pub async fn send(&self, message: crate::Message) -> Result<(), ProtoError> {
        self.0
            .send(Envelope::new(message))
            .await
            .map_err(|_| ProtoError::Closed)
    }

    pub fn is_closed(&self) -> bool {
        self.0.is_closed()
    }

    /// Whether both handles feed the same link.
    pub fn same(&self, other: &Outbox) -> bool {
        self.0.same_channel(&other.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{Message, SignResponse};

    #[tokio::test]
    async fn handshake_and_large_frames() {
        let (a, b) = tokio::io::duplex(1 << 16);
        let (ia, ib) = (Identity::generate(), Identity::generate());
        let (pa, pb) = (ia.public().to_vec(), ib.public().to_vec());
        let server = tokio::spawn(async move { accept(b, &ib).await.unwrap() });
        let mut la = connect(a, &ia).await.unwrap();
        let mut lb = server.await.unwrap();
        assert_eq!(la.remote_static, pb);
        assert_eq!(lb.remote_static, pa);
        assert_eq!(la.handshake_hash, lb.handshake_hash);
        let big = Envelope::new(Message::SignResponse(SignResponse {
            request_id: uuid::Uuid::new_v4(),
            approved: true,
            signature: Some(vec![9u8; 200_000]),
            error: None,
            message: None,
        }));
        let sent = big.clone();
        let w = tokio::spawn(async move {
            la.writer.send(&sent).await.unwrap();
            la.writer.send(&Envelope::new(Message::Ping)).await.unwrap();
            la
        });
        // Large frames only once the peer is known (a pinned key or a pairing).
        lb.reader.authenticated();
        assert_eq!(lb.reader.recv().await.unwrap(), big);
        assert_eq!(lb.reader.recv().await.unwrap().message, Message::Ping);
        w.await.unwrap();
    }
}
