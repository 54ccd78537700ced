//! Where a request enters the signer: accept a TCP connection (within the bounds on
//! unauthenticated work, `guard`), run Noise XX, read the peer's Hello, then hand a
//! paired device to its `session` and an unpaired one to `pair` (or `pairingInvalid`).

mod reach;

use crate::signer::Signer;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use vmux_proto::envelope::*;
use vmux_proto::identity::device_id;
use vmux_proto::noise;
use vmux_proto::ProtoError;

impl Signer {
    /// Accept links; a failing `accept()` is retried with back-off, never fatal. A
    /// connection beyond the unauthenticated caps is closed at once.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) -> std::io::Result<()> {
        if let Ok(addr) = listener.local_addr() {
            self.write_listening(addr);
        }
        self.start_reach();
        let mut backoff = Duration::from_millis(10);
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    crate::guard::accept_failed("link listener", &e, &mut backoff).await;
                    continue;
                }
            };
            backoff = Duration::from_millis(10);
            let Some(permit) = self.gate.admit(peer.ip()) else {
                self.refusal(peer.ip(), "", "too many unauthenticated connections");
                continue;
            };
            let _ = stream.set_nodelay(true);
            let s = self.clone();
            tokio::spawn(async move {
                if let Err(e) = accept(&s, stream, peer.ip(), permit).await {
                    s.refusal(peer.ip(), "", &e.to_string());
                }
            });
        }
    }

    /// Say where this signer listens, for a workstation process on this machine whose
    /// loopback signer moved (`vmux_proto::local`).
    pub fn write_listening(&self, addr: std::net::SocketAddr) {
        let Some(vmux_home) = self.home.dir.parent() else {
            return;
        };
        let l = vmux_proto::local::Listening {
            pid: std::process::id(),
            address: addr.to_string(),
            device_id: self.identity.device_id(),
            name: self.config.name.clone(),
        };
        if let Err(e) = vmux_proto::store::write_json(&vmux_proto::local::path(vmux_home), &l) {
            tracing::warn!("{e}");
        }
    }

    /// Forget `listening.json` (the signer stops).
    pub fn remove_listening(&self) {
        if let Some(vmux_home) = self.home.dir.parent() {
            let p = vmux_proto::local::path(vmux_home);
            if vmux_proto::local::read(vmux_home).is_some_and(|l| l.pid == std::process::id()) {
                let _ = std::fs::remove_file(p);
            }
        }
    }
}

/// One connection (TCP, or a stream of an iroh connection: `reach`) up to the point
/// where the peer is known: a paired device goes on to its session, an unpaired one may
/// ask to pair, and learns nothing else.
pub(crate) async fn accept<S: noise::Stream>(
    signer: &Arc<Signer>,
    stream: S,
    addr: std::net::IpAddr,
    permit: crate::guard::Permit,
) -> Result<(), ProtoError> {
    // A stranger gets a deadline (shorter when many strangers wait) and loses its slot
    // to a newer connection when every slot is taken.
    let deadline = signer.gate.handshake_deadline();
    let greet = async {
        let link = noise::accept(stream, &signer.identity).await?;
        let noise::Link {
            mut reader,
            writer,
            remote_static,
            handshake_hash,
        } = link;
        let hello = match reader.recv().await? {
            Envelope {
                message: Message::Hello(h),
                ..
            } => h,
            _ => return Err(ProtoError::BadEnvelope("expected Hello first".into())),
        };
        Ok((reader, writer, remote_static, handshake_hash, hello))
    };
    let (mut reader, writer, remote_static, handshake_hash, hello) = tokio::select! {
        r = tokio::time::timeout(deadline, greet) => {
            r.map_err(|_| ProtoError::Noise("handshake timed out".into()))??
        }
        _ = permit.evicted() => {
            return Err(ProtoError::Noise("handshake too slow while the signer was busy".into()));
        }
    };
    let out = writer.spawn();
    let peer_id = device_id(&remote_static);
    // Peer text is capped where it arrives.
    let hello_name = vmux_proto::text::clip(&hello.device_name, 64);
    // An unpaired peer learns nothing but `pairingInvalid` (or, once a person approves
    // its pairing, this signer's name in the PairResponse): no Hello for it.
    let Some(device) = signer.paired_device(&remote_static) else {
        let first = tokio::select! {
            r = tokio::time::timeout(deadline, reader.recv()) => r,
            _ = permit.evicted() => return Ok(()),
        };
        if let Ok(Ok(Envelope {
            message: Message::PairRequest(p),
            ..
        })) = first
        {
            let name = if p.device_name.is_empty() {
                hello_name
            } else {
                vmux_proto::text::clip(&p.device_name, 64)
            };
            drop(permit);
            let Some(waiting) = signer.gate.pairing(addr) else {
                signer.refusal(addr, &name, "too many pairing attempts");
                out.send(Message::Error(LinkError {
                    code: ErrorCode::Busy,
                    message: "too many pairings are waiting or were tried on this signer; try again in a minute".into(),
                }))
                .await?;
                return Ok(());
            };
            let peer = crate::pair::Peer {
                id: peer_id,
                name,
                public: remote_static,
            };
            let r = crate::pair::pair(signer, reader, out, peer, &handshake_hash).await;
            // The pairing is over: its slot is free for the next one at once, while the
            // writer task gets a moment to flush the answer before the link is dropped.
            drop(waiting);
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            return r;
        }
        signer.refusal(addr, &hello_name, "not paired (pairingInvalid)");
        out.send(Message::Error(LinkError {
            code: ErrorCode::PairingInvalid,
            message: "this device is not paired with this signer; run `vmux agent pair`".into(),
        }))
        .await?;
        return Ok(());
    };
    drop(permit);
    signer.touch(&device.id);
    tracing::info!(
        "{} ({}) connected",
        vmux_proto::text::field(&device.name),
        device.id
    );
    out.send(Message::Hello(Hello {
        device_id: signer.identity.device_id(),
        device_name: signer.config.name.clone(),
        role: Role::Signer,
        software: concat!("vmux ", env!("CARGO_PKG_VERSION")).into(),
        time: Some(vmux_proto::now_unix()),
    }))
    .await?;
    if let Some(url) = &signer.config.wake_url {
        out.send(Message::DeviceToken(DeviceToken {
            wake_url: url.clone(),
        }))
        .await?;
    }
    out.send(Message::Reach(signer.reach_info())).await?;
    // A paired device: its frames may be as large as the link allows.
    let mut reader = reader;
    reader.authenticated();
    crate::session::run(signer.clone(), reader, out, device).await
}
