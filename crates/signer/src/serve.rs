//! The link server: Noise XX with every peer, pairing for new ones (a person approves
//! after comparing codes), and for paired ones the requests they send.

use crate::keystore::Keystore;
use crate::queue::{Decision, PendingInfo, Queue};
use crate::state::{PairedDevice, SignerConfig, SignerHome};
use crate::SignerError;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use vmux_proto::envelope::*;
use vmux_proto::identity::{device_id, fingerprint, key_fingerprint};
use vmux_proto::journal::Journal;
use vmux_proto::noise::{self, Outbox};
use vmux_proto::{now_unix, Identity, ProtoError};

/// How long an unauthenticated connection may take to finish its handshake and say
/// who it is.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
const AGENT_SILENCE: Duration = Duration::from_secs(30);
const MAX_PENDING_PER_DEVICE: usize = 16;

pub struct Signer {
    pub home: SignerHome,
    pub config: SignerConfig,
    pub identity: Identity,
    /// The signing keys (reloadable while running).
    pub keystore: crate::keys::Keys,
    /// The CA keystore; `None` when this signer has no CA key.
    pub ca: Option<Box<dyn Keystore>>,
    pub queue: Queue,
    pub(crate) paired: Mutex<Vec<PairedDevice>>,
    /// Nonces seen until their request's expiry (after it, a replay is refused as
    /// expired anyway).
    pub(crate) seen: Mutex<crate::replay::SeenNonces>,
    /// The live session of each device: a device that reconnects supersedes its old
    /// link, whose queued requests can no longer be answered to anyone.
    sessions: Mutex<HashMap<String, Arc<tokio::sync::Notify>>>,
    log: Mutex<Journal>,
    /// The link of each connected device, to push key-list changes to.
    outboxes: Mutex<HashMap<String, Outbox>>,
    /// Bounds on what unauthenticated peers cost.
    pub(crate) gate: crate::guard::Gate,
    /// The host-key pins (`signer/known_hosts`), re-read when the file changes.
    pub(crate) pins: crate::hosts::PinCache,
}

impl Signer {
    pub fn open(home: SignerHome, keystore: Box<dyn Keystore>) -> Result<Arc<Self>, SignerError> {
        Self::open_with_ca(home, keystore, None)
    }

    pub fn open_with_ca(
        home: SignerHome,
        keystore: Box<dyn Keystore>,
        ca: Option<Box<dyn Keystore>>,
    ) -> Result<Arc<Self>, SignerError> {
        let config = home.load_config()?;
        let identity = Identity::load_or_create(&home.identity())?;
        let paired = Mutex::new(home.load_paired()?);
        let log = Mutex::new(Journal::open(&home.log())?);
        let states = crate::keys::load_states(&home)?;
        let seen = crate::replay::SeenNonces::load(&home)?;
        Ok(Arc::new(Signer {
            home,
            config,
            identity,
            keystore: crate::keys::Keys::new(keystore, states),
            ca,
            queue: Queue::default(),
            paired,
            seen: Mutex::new(seen),
            sessions: Mutex::new(HashMap::new()),
            log,
            pins: Default::default(),
            outboxes: Default::default(),
            gate: Default::default(),
        }))
    }

    /// What a person compares when pairing or pinning this signer by hand.
    pub fn fingerprint(&self) -> String {
        fingerprint(self.identity.public())
    }

    pub fn paired_devices(&self) -> Vec<PairedDevice> {
        self.paired.lock().unwrap().clone()
    }

    /// Accept links until the listener fails.
    /// Accept links; a failing `accept()` is retried with back-off, never fatal. A
    /// connection beyond the unauthenticated caps is closed at once.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) -> std::io::Result<()> {
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
                if let Err(e) = s.clone().handle(stream, peer.ip(), permit).await {
                    s.refusal(peer.ip(), "", &e.to_string());
                }
            });
        }
    }

    /// A refused or failed connection from `addr`: logged at most once a minute per
    /// address, the rest summarised ("37 refused connections from 10.0.0.5 in the last
    /// minute"), so a peer cannot grow the log faster than that.
    pub(crate) fn refusal(&self, addr: std::net::IpAddr, device: &str, why: &str) {
        let (note, summary) = self.gate.refused(addr);
        for (a, n) in summary {
            self.record(obj(json!({"event": "refusedSummary", "address": a,
                "count": n, "window": "1m"})));
            tracing::info!("{n} more refused connections from {a} in the last minute");
        }
        if matches!(note, crate::guard::Note::Log) {
            let why = vmux_proto::text::inert(why, 200);
            tracing::info!("link from {addr}: {why}");
            self.record(obj(json!({"event": "refused", "address": addr.to_string(),
                "device": vmux_proto::text::inert(device, 64), "reason": why})));
        }
    }

    pub(crate) fn record(&self, mut fields: Map<String, Value>) {
        fields.insert("time".into(), json!(now_unix()));
        if let Err(e) = self.log.lock().unwrap().append(fields) {
            tracing::error!("decision log: {e}");
        }
    }

    /// Work out one request in its own task (it may wait minutes for a person) and send
    /// the answer, if any; an answer nobody can receive any more is logged.
    fn respond(
        self: &Arc<Self>,
        out: &Outbox,
        device_id: &str,
        request_id: uuid::Uuid,
        work: impl std::future::Future<Output = Option<Message>> + Send + 'static,
    ) {
        let (s, out, device_id) = (self.clone(), out.clone(), device_id.to_string());
        tokio::spawn(async move {
            if let Some(answer) = work.await {
                if out.send(answer).await.is_err() {
                    s.delivery_failed(&request_id.to_string(), &device_id);
                }
            }
        });
    }

    /// A decision was made but its requester was gone: say so in the log rather than
    /// letting the answer vanish.
    pub fn delivery_failed(&self, request_id: &str, device_id: &str) {
        tracing::warn!("request {request_id}: decided, but the requester had gone");
        self.record(obj(
            json!({"event": "deliveryFailed", "requestId": request_id,
            "deviceId": device_id}),
        ));
    }

    /// Read the keys from disk again and tell every connected device the new list.
    pub async fn reload_keys(&self) -> Result<usize, SignerError> {
        self.keystore.reload(&self.home)?;
        let keys = self.keystore.listed();
        let outs: Vec<Outbox> = self.outboxes.lock().unwrap().values().cloned().collect();
        for o in &outs {
            let _ = o
                .send(Message::KeyList(KeyList { keys: keys.clone() }))
                .await;
        }
        self.record(obj(json!({"event": "keysReloaded", "keys": keys.len(),
            "pushedTo": outs.len()})));
        Ok(keys.len())
    }

    /// Remove a paired device (by id); `Ok(false)` when there is none.
    pub fn revoke(&self, id: &str) -> Result<bool, SignerError> {
        let mut p = self.paired.lock().unwrap();
        let before = p.len();
        p.retain(|d| d.id != id);
        if p.len() == before {
            return Ok(false);
        }
        self.home.save_paired(&p)?;
        drop(p);
        // Its waiting requests are denied now and its link is closed: nothing it asked
        // for before the revocation can be approved afterwards.
        let denied = self.queue.deny_device(id);
        if let Some(session) = self.sessions.lock().unwrap().remove(id) {
            session.notify_one();
        }
        self.outboxes.lock().unwrap().remove(id);
        self.record(obj(
            json!({"event": "revoke", "deviceId": id, "denied": denied}),
        ));
        Ok(true)
    }

    pub(crate) fn paired_device(&self, public: &[u8]) -> Option<PairedDevice> {
        self.paired
            .lock()
            .unwrap()
            .iter()
            .find(|d| d.public_key == public)
            .cloned()
    }

    fn touch(&self, id: &str) {
        let mut p = self.paired.lock().unwrap();
        if let Some(d) = p.iter_mut().find(|d| d.id == id) {
            d.last_seen = now_unix();
        }
        if let Err(e) = self.home.save_paired(&p) {
            tracing::warn!("{e}");
        }
    }

    async fn handle(
        self: Arc<Self>,
        stream: TcpStream,
        addr: std::net::IpAddr,
        permit: crate::guard::Permit,
    ) -> Result<(), ProtoError> {
        let link = tokio::time::timeout(HANDSHAKE_TIMEOUT, noise::accept(stream, &self.identity))
            .await
            .map_err(|_| ProtoError::Noise("handshake timed out".into()))??;
        let noise::Link {
            mut reader,
            writer,
            remote_static,
            handshake_hash,
        } = link;
        let out = writer.spawn();
        let peer_id = device_id(&remote_static);
        let hello = match tokio::time::timeout(HANDSHAKE_TIMEOUT, reader.recv()).await {
            Ok(Ok(Envelope {
                message: Message::Hello(h),
                ..
            })) => h,
            _ => return Err(ProtoError::BadEnvelope("expected Hello first".into())),
        };
        // Peer text is capped where it arrives.
        let hello_name = vmux_proto::text::clip(&hello.device_name, 64);
        // An unpaired peer learns nothing but `pairingInvalid` (or, once a person approves
        // its pairing, this signer's name in the PairResponse): no Hello for it.
        let Some(device) = self.paired_device(&remote_static) else {
            let first = tokio::time::timeout(HANDSHAKE_TIMEOUT, reader.recv()).await;
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
                let Some(waiting) = self.gate.pairing(addr) else {
                    self.refusal(addr, &name, "too many pairings are waiting");
                    out.send(Message::Error(LinkError {
                        code: ErrorCode::Busy,
                        message: "too many pairings are waiting on this signer; try again later"
                            .into(),
                    }))
                    .await?;
                    return Ok(());
                };
                let r = self
                    .pair(reader, out, peer_id, name, remote_static, &handshake_hash)
                    .await;
                drop(waiting);
                return r;
            }
            self.refusal(addr, &hello_name, "not paired (pairingInvalid)");
            out.send(Message::Error(LinkError {
                code: ErrorCode::PairingInvalid,
                message: "this device is not paired with this signer; run `vmux agent pair`".into(),
            }))
            .await?;
            return Ok(());
        };
        drop(permit);
        self.touch(&device.id);
        tracing::info!(
            "{} ({}) connected",
            vmux_proto::text::field(&device.name),
            device.id
        );
        out.send(Message::Hello(Hello {
            device_id: self.identity.device_id(),
            device_name: self.config.name.clone(),
            role: Role::Signer,
            software: concat!("vmux ", env!("CARGO_PKG_VERSION")).into(),
            time: Some(vmux_proto::now_unix()),
        }))
        .await?;
        if let Some(url) = &self.config.wake_url {
            out.send(Message::DeviceToken(DeviceToken {
                wake_url: url.clone(),
            }))
            .await?;
        }
        self.session(reader, out, device).await
    }

    async fn session<S: noise::Stream>(
        self: Arc<Self>,
        mut reader: noise::LinkReader<S>,
        out: Outbox,
        device: PairedDevice,
    ) -> Result<(), ProtoError> {
        let device = Arc::new(device);
        // The device's live requests: its own label → the signer's queue id (once queued).
        let live: Live = Default::default();
        let superseded = Arc::new(tokio::sync::Notify::new());
        self.outboxes
            .lock()
            .unwrap()
            .insert(device.id.clone(), out.clone());
        if let Some(old) = self
            .sessions
            .lock()
            .unwrap()
            .insert(device.id.clone(), superseded.clone())
        {
            old.notify_one();
        }
        let result = loop {
            // Agents ping every few seconds; a long silence means the link is dead.
            let next = tokio::select! {
                r = tokio::time::timeout(AGENT_SILENCE, reader.recv()) => r,
                _ = superseded.notified() => break Ok(()),
            };
            let Ok(received) = next else {
                break Err(ProtoError::Noise(format!(
                    "{} silent for {}s",
                    vmux_proto::text::field(&device.name),
                    AGENT_SILENCE.as_secs()
                )));
            };
            let env = match received {
                Ok(env) => env,
                Err(ProtoError::BadEnvelope(e)) => {
                    tracing::warn!(
                        "{}: dropped a bad frame: {}",
                        vmux_proto::text::field(&device.name),
                        vmux_proto::text::field(&e)
                    );
                    continue;
                }
                Err(ProtoError::Closed) => break Ok(()),
                Err(e) => break Err(e),
            };
            match env.message {
                Message::KeyListRequest => {
                    out.send(Message::KeyList(KeyList {
                        keys: self.keystore.listed(),
                    }))
                    .await?
                }
                Message::SignRequest(req) => {
                    let label = req.request_id;
                    if !claim_label(&live, label) {
                        out.send(Message::SignResponse(refused_sign(
                            label,
                            ErrorCode::ReplayDetected,
                        )))
                        .await?;
                        continue;
                    }
                    let (s, d, l) = (self.clone(), device.clone(), live.clone());
                    self.respond(&out, &device.id, label, async move {
                        let r = s.sign(&d, *req, &l).await.map(Message::SignResponse);
                        l.lock().unwrap().remove(&label);
                        r
                    });
                }
                Message::CertificateRequest(req) => {
                    let label = req.request_id;
                    if !claim_label(&live, label) {
                        out.send(Message::CertificateResponse(Box::new(refused_cert(
                            label,
                            ErrorCode::ReplayDetected,
                        ))))
                        .await?;
                        continue;
                    }
                    let (s, d, l) = (self.clone(), device.clone(), live.clone());
                    self.respond(&out, &device.id, label, async move {
                        let resp = s.certificate(&d, *req, &l).await;
                        l.lock().unwrap().remove(&label);
                        resp.map(|r| Message::CertificateResponse(Box::new(r)))
                    });
                }
                Message::Cancel(c) => {
                    // Only this device's own request, found by its own label.
                    let queued = live.lock().unwrap().get(&c.request_id).cloned().flatten();
                    if let Some(id) = queued {
                        if self
                            .queue
                            .remove(&id, "cancelled by its requester")
                            .is_some()
                        {
                            self.record(obj(json!({"event": "sign", "requestId": id,
                                "label": c.request_id.to_string(),
                                "deviceId": device.id, "decision": "cancelled"})));
                        }
                    }
                }
                Message::Ping => out.send(Message::Pong).await?,
                _ => {}
            }
        };
        {
            let mut sessions = self.sessions.lock().unwrap();
            if sessions
                .get(&device.id)
                .is_some_and(|s| Arc::ptr_eq(s, &superseded))
            {
                sessions.remove(&device.id);
            }
        }
        {
            let mut outboxes = self.outboxes.lock().unwrap();
            if outboxes.get(&device.id).is_some_and(|o| o.same(&out)) {
                outboxes.remove(&device.id);
            }
        }
        // The requester is gone: its requests leave the queue, and say so in the log.
        let ids: Vec<String> = live
            .lock()
            .unwrap()
            .drain()
            .filter_map(|(_, q)| q)
            .collect();
        for id in ids {
            if self.queue.remove(&id, "its device went away").is_some() {
                self.record(obj(json!({"event": "sign", "requestId": id,
                    "deviceId": device.id, "decision": "requesterGone"})));
            }
        }
        result
    }

    /// Queue `info` and wait for the person until `expires`. `Ok(None)`: cancelled.
    /// The verdict must carry the digest of exactly what was queued.
    pub(crate) async fn decision(
        &self,
        info: PendingInfo,
        expires: u64,
        label: uuid::Uuid,
        live: &Live,
    ) -> Result<Option<Decision>, ErrorCode> {
        // A paired device cannot bury the person under requests: past a few waiting
        // ones, more are refused as `busy` until some are decided.
        let waiting = self
            .queue
            .pending()
            .iter()
            .filter(|p| p.from_id == info.from_id)
            .count();
        if waiting >= MAX_PENDING_PER_DEVICE {
            return Err(ErrorCode::Busy);
        }
        let ticket = self.queue.submit(info);
        let id = ticket.id.clone();
        if let Some(slot) = live.lock().unwrap().get_mut(&label) {
            *slot = Some(id.clone());
        }
        let left = expires.saturating_sub(now_unix());
        let verdict = tokio::select! {
            d = ticket.decision => d.ok(),
            _ = tokio::time::sleep(Duration::from_secs(left)) => {
                self.queue.remove(&id, "expired");
                None
            }
        };
        match verdict {
            None if now_unix() >= expires => Err(ErrorCode::RequestExpired),
            None => Ok(None),
            Some(v) if v.digest != ticket.digest => {
                tracing::error!("request {id}: a decision for another display; nothing signed");
                Err(ErrorCode::UserDenied)
            }
            Some(v) => Ok(Some(v.decision)),
        }
    }

    /// One sign request from a paired device; `None` when it was cancelled (the agent
    /// no longer waits for an answer).
    async fn sign(
        &self,
        device: &PairedDevice,
        req: SignRequest,
        live: &Live,
    ) -> Option<SignResponse> {
        let started = std::time::Instant::now();
        let label = req.request_id;
        let key_fp = key_fingerprint(&req.key_blob);
        let mut fields = obj(json!({"event": "sign", "label": label.to_string(),
            "deviceId": device.id, "device": vmux_proto::text::field(&device.name),
            "key": key_fp}));
        let outcome = async {
            if self.paired_device(&device.public_key).is_none() {
                return Err(ErrorCode::PairingInvalid);
            }
            self.check_window_and_nonce(&device.id, req.issued, req.expires, &req.nonce)?;
            let seen = self.inspect(device, &req)?;
            let info = &seen.info;
            fields.insert("purpose".into(), json!(info.purpose));
            fields.insert("destination".into(), json!(info.destination));
            fields.insert("requester".into(), json!(info.requester));
            fields.insert("dataSha256".into(), json!(info.data_digest));
            let decided = self.decision(seen.info.clone(), req.expires, label, live);
            let verdict = decided.await?;
            if let Some(id) = live.lock().unwrap().get(&label).cloned().flatten() {
                fields.insert("requestId".into(), json!(id));
            }
            match verdict {
                None => Ok(None), // cancelled
                Some(Decision::Deny) => Err(ErrorCode::UserDenied),
                Some(Decision::Unverified) => Err(ErrorCode::PresenceFailed),
                Some(Decision::Approve) => {
                    // Revoked while the person looked: nothing is signed for it.
                    if self.paired_device(&device.public_key).is_none() {
                        return Err(ErrorCode::PairingInvalid);
                    }
                    let sig = self
                        .keystore
                        .sign_async(&req.key_blob, &req.data, req.flags)
                        .await?;
                    if let Some((name, key)) = &seen.pin {
                        self.pin_host(name, key);
                    }
                    Ok(Some(sig))
                }
            }
        }
        .await;
        fields.insert(
            "latencyMs".into(),
            json!(started.elapsed().as_millis() as u64),
        );
        let resp = match outcome {
            Ok(None) => return None,
            Ok(Some(sig)) => {
                fields.insert("decision".into(), json!("approved"));
                SignResponse {
                    request_id: label,
                    approved: true,
                    signature: Some(sig),
                    error: None,
                }
            }
            Err(code) => {
                fields.insert("decision".into(), json!(code.as_str()));
                refused_sign(label, code)
            }
        };
        self.record(fields);
        Some(resp)
    }
}

/// A device's live requests: its label → the signer's queue id once queued.
pub(crate) type Live = Arc<Mutex<HashMap<uuid::Uuid, Option<String>>>>;

/// Take `label` for a new request; false when the device already has a live request
/// with that label (an id cannot be reused while its request waits).
fn claim_label(live: &Live, label: uuid::Uuid) -> bool {
    let mut l = live.lock().unwrap();
    if l.contains_key(&label) {
        tracing::warn!("request label {label} reused while its request is live; refused");
        return false;
    }
    l.insert(label, None);
    true
}

fn refused_sign(label: uuid::Uuid, code: ErrorCode) -> SignResponse {
    SignResponse {
        request_id: label,
        approved: false,
        signature: None,
        error: Some(code),
    }
}

pub(crate) fn refused_cert(label: uuid::Uuid, code: ErrorCode) -> CertificateResponse {
    CertificateResponse {
        request_id: label,
        certificate: None,
        ca_public_key: None,
        valid_after: 0,
        valid_before: 0,
        error: Some(code),
    }
}

pub(crate) fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}
