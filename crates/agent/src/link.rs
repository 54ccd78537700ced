//! The agent's end of a link to one signer: connect, check the pinned key, exchange
//! Hello, fetch the key list, then carry sign requests and match their responses.

use crate::AgentError;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::{oneshot, watch};
use uuid::Uuid;
use vmux_proto::envelope::*;
use vmux_proto::identity::fingerprint;
use vmux_proto::noise::{self, Outbox};
use vmux_proto::reach::Route;
use vmux_proto::{Identity, ProtoError};

/// Requests waiting for their response, by request id.
type Waiters = Arc<Mutex<HashMap<Uuid, oneshot::Sender<Message>>>>;

/// A live link. Cheap to clone; dropped links close when the signer or network goes.
#[derive(Clone)]
pub struct SignerLink {
    outbox: Outbox,
    waiters: Waiters,
    closed: watch::Receiver<Option<String>>,
    pub signer_name: String,
    /// The signer's wake URL, if it sent one.
    pub wake_url: Option<String>,
    /// Key lists the signer pushed (its keys changed) or sent for a refresh.
    pub keys: watch::Receiver<Option<Vec<KeyRecord>>>,
    /// The signer's clock minus this machine's, from its Hello (seconds; positive: the
    /// signer is ahead). Requests are valid for a minute, so a skew near that fails them.
    pub clock_skew_secs: Option<i64>,
    /// How the link travels: TCP on the local network, or iroh (`reach`).
    pub route: Route,
    /// How the signer says it can be reached from anywhere (after Hello, and again when
    /// it changes).
    pub reach: watch::Receiver<Option<Reach>>,
    rtt: Rtt,
}

/// When the last Ping left, and the round-trip time of the last one answered.
type Rtt = Arc<Mutex<(Option<std::time::Instant>, Option<Duration>)>>;

/// How often the agent pings a signer, and how long silence means the link is dead
/// (a signer answers every Ping, so a live link is never silent for long).
pub const PING_EVERY: Duration = Duration::from_secs(3);
pub const DEAD_AFTER: Duration = Duration::from_secs(9);

/// Open a TCP connection with a bound, naming the address in the error.
pub async fn dial(addr: &str, timeout: Duration) -> Result<TcpStream, AgentError> {
    let unreachable = |reason: String| AgentError::Unreachable {
        addr: addr.to_string(),
        reason,
    };
    let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| unreachable(format!("no answer within {}s", timeout.as_secs())))?
        .map_err(|e| unreachable(e.to_string()))?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

pub fn hello(identity: &Identity, name: &str) -> Message {
    Message::Hello(Hello {
        device_id: identity.device_id(),
        device_name: name.to_string(),
        role: Role::Agent,
        software: concat!("vmux ", env!("CARGO_PKG_VERSION")).into(),
        time: Some(vmux_proto::now_unix()),
    })
}

impl SignerLink {
    /// Connect to `addr`, insist on `pinned` as the signer's static key, and return the
    /// link with the signer's current key list.
    pub async fn connect(
        addr: &str,
        identity: &Identity,
        my_name: &str,
        pinned: &[u8],
        timeout: Duration,
    ) -> Result<(SignerLink, Vec<KeyRecord>), AgentError> {
        let setup = async {
            let stream = dial(addr, timeout).await?;
            Self::connect_over(stream, Route::Lan, addr, identity, my_name, pinned, timeout).await
        };
        tokio::time::timeout(timeout, setup)
            .await
            .map_err(|_| AgentError::Unreachable {
                addr: addr.to_string(),
                reason: format!("link not up within {}s", timeout.as_secs()),
            })?
    }

    /// The link over a stream already open to the signer (TCP, or an iroh connection's
    /// stream: `reach`): the same Noise session with the pinned key, Hello, key list.
    /// `addr` names the route in errors.
    pub async fn connect_over<S: noise::Stream>(
        stream: S,
        route: Route,
        addr: &str,
        identity: &Identity,
        my_name: &str,
        pinned: &[u8],
        timeout: Duration,
    ) -> Result<(SignerLink, Vec<KeyRecord>), AgentError> {
        let setup = async {
            let link = match noise::connect_pinned(stream, identity, Some(pinned)).await {
                Ok(l) => l,
                Err(ProtoError::PinMismatch(got)) => {
                    return Err(AgentError::PinMismatch {
                        addr: addr.to_string(),
                        got,
                        pinned: fingerprint(pinned),
                    })
                }
                Err(e) => return Err(e.into()),
            };
            if link.remote_static != pinned {
                return Err(AgentError::PinMismatch {
                    addr: addr.to_string(),
                    got: fingerprint(&link.remote_static),
                    pinned: fingerprint(pinned),
                });
            }
            let noise::Link {
                mut reader, writer, ..
            } = link;
            // The pinned signer answered: its frames may be as large as the link allows.
            reader.authenticated();
            let outbox = writer.spawn();
            outbox.send(hello(identity, my_name)).await?;
            outbox.send(Message::KeyListRequest).await?;
            let (mut signer_name, mut wake_url, mut skew, mut reach) =
                (String::new(), None, None, None);
            let keys = loop {
                match reader.recv().await?.message {
                    Message::Hello(h) => {
                        signer_name = h.device_name;
                        skew = h.time.map(|t| t as i64 - vmux_proto::now_unix() as i64);
                    }
                    Message::DeviceToken(t) => wake_url = Some(t.wake_url),
                    Message::Reach(r) => reach = Some(r),
                    Message::KeyList(k) => break k.keys,
                    Message::Error(e) => return Err(AgentError::Refused(e.code, e.message)),
                    m => return Err(unexpected(&m)),
                }
            };
            Ok((reader, outbox, signer_name, wake_url, keys, skew, reach))
        };
        let (reader, outbox, signer_name, wake_url, keys, clock_skew_secs, reach) =
            tokio::time::timeout(timeout, setup)
                .await
                .map_err(|_| AgentError::Unreachable {
                    addr: addr.to_string(),
                    reason: format!("link not up within {}s", timeout.as_secs()),
                })??;
        let waiters: Waiters = Default::default();
        let (closed_tx, closed) = watch::channel(None);
        let (keys_tx, keys_rx) = watch::channel(None);
        let (reach_tx, reach_rx) = watch::channel(reach);
        let rtt: Rtt = Default::default();
        tokio::spawn(pinger(outbox.clone(), closed.clone(), rtt.clone()));
        tokio::spawn(read_loop(
            reader,
            waiters.clone(),
            closed_tx,
            outbox.clone(),
            keys_tx,
            reach_tx,
            rtt.clone(),
        ));
        Ok((
            SignerLink {
                outbox,
                waiters,
                closed,
                signer_name,
                wake_url,
                keys: keys_rx,
                clock_skew_secs,
                route,
                reach: reach_rx,
                rtt,
            },
            keys,
        ))
    }

    /// How the link travels now (`direct (LAN)`, `direct (hole-punched)`, `via relay
    /// <url>`) and its round-trip time: the last Ping answered, else the path's own.
    pub fn path(&self) -> Option<(String, Option<Duration>)> {
        let (line, path_rtt) = self.route.describe()?;
        let pinged = self.rtt.lock().unwrap().1;
        Some((line, pinged.or(path_rtt)))
    }

    /// Ask the signer for its key list now; the answer arrives on `keys`.
    pub async fn refresh(&self) -> Result<(), AgentError> {
        Ok(self.outbox.send(Message::KeyListRequest).await?)
    }

    pub fn is_up(&self) -> bool {
        self.closed.borrow().is_none() && !self.outbox.is_closed()
    }

    /// Wait until the link goes down; returns why.
    pub async fn wait_closed(&self) -> String {
        let mut rx = self.closed.clone();
        loop {
            if let Some(why) = rx.borrow().clone() {
                return why;
            }
            if rx.changed().await.is_err() {
                return "link task ended".into();
            }
        }
    }

    /// Send a sign request and wait (up to `wait`) for its response.
    pub async fn sign(&self, req: SignRequest, wait: Duration) -> Result<SignResponse, AgentError> {
        let id = req.request_id;
        match self
            .request(id, Message::SignRequest(Box::new(req)), wait)
            .await?
        {
            Message::SignResponse(r) => Ok(r),
            m => Err(unexpected(&m)),
        }
    }

    /// Send a certificate request and wait (up to `wait`) for its response.
    pub async fn certificate(
        &self,
        req: CertificateRequest,
        wait: Duration,
    ) -> Result<CertificateResponse, AgentError> {
        let id = req.request_id;
        match self
            .request(id, Message::CertificateRequest(Box::new(req)), wait)
            .await?
        {
            Message::CertificateResponse(r) => Ok(*r),
            m => Err(unexpected(&m)),
        }
    }

    async fn request(&self, id: Uuid, msg: Message, wait: Duration) -> Result<Message, AgentError> {
        let (tx, rx) = oneshot::channel();
        self.waiters.lock().unwrap().insert(id, tx);
        let guard = CancelOnDrop {
            link: Some(self.clone()),
            id,
        };
        self.outbox.send(msg).await?;
        match tokio::time::timeout(wait, rx).await {
            Ok(Ok(resp)) => {
                guard.disarm();
                Ok(resp)
            }
            Ok(Err(_)) => {
                guard.disarm();
                Err(AgentError::LinkLost(
                    self.closed.borrow().clone().unwrap_or_default(),
                ))
            }
            Err(_) => Err(AgentError::Timeout(wait.as_secs())),
        }
    }
}

/// If the requester goes away (its future is dropped) or the wait times out, tell the
/// signer so the request leaves its queue instead of waiting for a person in vain.
struct CancelOnDrop {
    link: Option<SignerLink>,
    id: Uuid,
}

impl CancelOnDrop {
    fn disarm(mut self) {
        self.link = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(link) = self.link.take() {
            link.waiters.lock().unwrap().remove(&self.id);
            let id = self.id;
            tokio::spawn(async move {
                let _ = link
                    .outbox
                    .send(Message::Cancel(Cancel { request_id: id }))
                    .await;
            });
        }
    }
}

fn unexpected(m: &Message) -> AgentError {
    AgentError::Proto(ProtoError::BadEnvelope(format!(
        "unexpected message from signer: {m:?}"
    )))
}

async fn pinger(outbox: Outbox, closed: watch::Receiver<Option<String>>, rtt: Rtt) {
    loop {
        tokio::time::sleep(PING_EVERY).await;
        rtt.lock().unwrap().0 = Some(std::time::Instant::now());
        if closed.borrow().is_some() || outbox.send(Message::Ping).await.is_err() {
            return;
        }
    }
}

async fn read_loop<S: noise::Stream>(
    mut reader: noise::LinkReader<S>,
    waiters: Waiters,
    closed: watch::Sender<Option<String>>,
    outbox: Outbox,
    keys: watch::Sender<Option<Vec<KeyRecord>>>,
    reach: watch::Sender<Option<Reach>>,
    rtt: Rtt,
) {
    let why = loop {
        let Ok(received) = tokio::time::timeout(DEAD_AFTER, reader.recv()).await else {
            break format!("no answer for {}s", DEAD_AFTER.as_secs());
        };
        match received {
            Ok(env) => match env.message {
                m @ (Message::SignResponse(_) | Message::CertificateResponse(_)) => {
                    let id = match &m {
                        Message::SignResponse(r) => r.request_id,
                        Message::CertificateResponse(r) => r.request_id,
                        _ => unreachable!("matched above"),
                    };
                    if let Some(tx) = waiters.lock().unwrap().remove(&id) {
                        let _ = tx.send(m);
                    }
                }
                Message::Ping => {
                    let _ = outbox.send(Message::Pong).await;
                }
                Message::KeyList(k) => {
                    let _ = keys.send(Some(k.keys));
                }
                Message::Pong => {
                    let mut r = rtt.lock().unwrap();
                    if let Some(sent) = r.0.take() {
                        r.1 = Some(sent.elapsed());
                    }
                }
                Message::Reach(r) => {
                    let _ = reach.send(Some(r));
                }
                Message::Error(e) => break format!("signer refused: {} ({})", e.code, e.message),
                _ => {}
            },
            Err(ProtoError::BadEnvelope(e)) => {
                tracing::warn!("dropped a bad frame from signer: {e}")
            }
            Err(e) => break e.to_string(),
        }
    };
    tracing::info!("link to signer closed: {why}");
    let _ = closed.send(Some(why));
    // Dropping the senders fails every request still waiting on this link.
    waiters.lock().unwrap().clear();
}
