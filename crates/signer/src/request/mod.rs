//! One request's path through the signer, in order: `window` (its time window and
//! nonce, never seen before), `inspect` (what the bytes are, what the device claims,
//! who vouches for the destination, the key's policy), the queue (a person decides,
//! through `crate::decide`), the record (on disk before anything leaves), the keystore
//! (signs). `cert` is the same path for a session certificate.

pub mod cert;
pub mod inspect;
pub mod window;

use crate::queue::{Decision, PendingInfo};
use crate::signer::{obj, Signer};
use crate::state::PairedDevice;
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use vmux_proto::envelope::{CertificateResponse, ErrorCode, SignRequest, SignResponse};
use vmux_proto::identity::key_fingerprint;
use vmux_proto::now_unix;

/// A request refused, with the words the requesting side shows its person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: ErrorCode,
    pub why: Option<String>,
}

impl Refusal {
    pub fn new(code: ErrorCode) -> Refusal {
        Refusal { code, why: None }
    }

    pub fn why(mut self, why: impl Into<String>) -> Refusal {
        self.why = Some(why.into());
        self
    }

    pub(crate) fn sign_response(&self, label: uuid::Uuid) -> SignResponse {
        SignResponse {
            request_id: label,
            approved: false,
            signature: None,
            error: Some(self.code),
            message: self.why.clone(),
        }
    }

    pub(crate) fn cert_response(&self, label: uuid::Uuid) -> CertificateResponse {
        CertificateResponse {
            request_id: label,
            certificate: None,
            ca_public_key: None,
            valid_after: 0,
            valid_before: 0,
            error: Some(self.code),
            message: self.why.clone(),
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.why {
            Some(w) => write!(f, "{}: {w}", self.code),
            None => write!(f, "{}", self.code),
        }
    }
}

impl From<ErrorCode> for Refusal {
    fn from(code: ErrorCode) -> Refusal {
        Refusal::new(code)
    }
}

/// Where one of a device's requests stands, by the device's own label.
pub(crate) enum Slot {
    /// Arrived, being checked; not in the queue yet.
    Claimed,
    /// In the queue under this id of the signer's.
    Queued(String),
    /// Cancelled before it reached the queue: it never will.
    Cancelled,
}

/// A device's live requests.
pub(crate) type Labels = Arc<Mutex<HashMap<uuid::Uuid, Slot>>>;

/// Take `label` for a new request; false when the device already has a live request
/// with that label (an id cannot be reused while its request waits).
pub(crate) fn claim(labels: &Labels, label: uuid::Uuid) -> bool {
    let mut l = labels.lock().unwrap();
    if l.contains_key(&label) {
        tracing::warn!("request label {label} reused while its request is live; refused");
        return false;
    }
    l.insert(label, Slot::Claimed);
    true
}

/// A paired device can bury nobody under requests: past a few waiting ones, more are
/// refused as `busy` until some are decided.
const MAX_PENDING_PER_DEVICE: usize = 16;

/// Queue `info` and wait for the person until `expires`. `Ok(None)`: cancelled. The
/// verdict carries the digest of the display the deciding surface showed; it must be
/// the digest of exactly what was queued.
pub(crate) async fn ask(
    signer: &Signer,
    info: PendingInfo,
    expires: u64,
    label: uuid::Uuid,
    labels: &Labels,
) -> Result<Option<(Decision, String)>, Refusal> {
    let waiting = signer
        .queue
        .pending()
        .iter()
        .filter(|p| p.from_id == info.from_id)
        .count();
    if waiting >= MAX_PENDING_PER_DEVICE {
        return Err(Refusal::new(ErrorCode::Busy).why(format!(
            "{MAX_PENDING_PER_DEVICE} requests from this device already wait on the signer"
        )));
    }
    // Queued under the labels' lock: a Cancel sees it either before (and it is never
    // queued) or after (and it leaves the queue).
    let ticket = {
        let mut l = labels.lock().unwrap();
        if matches!(l.get(&label), Some(Slot::Cancelled) | None) {
            return Ok(None);
        }
        let ticket = signer.queue.submit(info);
        l.insert(label, Slot::Queued(ticket.id.clone()));
        ticket
    };
    let id = ticket.id.clone();
    let left = expires.saturating_sub(now_unix());
    let verdict = tokio::select! {
        d = ticket.decision => d.ok(),
        _ = tokio::time::sleep(Duration::from_secs(left)) => {
            signer.queue.remove(&id, "expired");
            None
        }
    };
    match verdict {
        None if now_unix() >= expires => Err(Refusal::new(ErrorCode::RequestExpired)
            .why("nobody decided before the request expired")),
        None => Ok(None),
        Some(v) if v.digest != ticket.digest => {
            tracing::error!("request {id}: a decision for another display; nothing signed");
            Err(Refusal::new(ErrorCode::UserDenied)
                .why("the decision was made on another display of this request; nothing signed"))
        }
        Some(v) => Ok(Some((v.decision, id))),
    }
}

/// The signer's queue id of `label`, once it was queued.
pub(crate) fn queued_id(labels: &Labels, label: uuid::Uuid) -> Option<String> {
    match labels.lock().unwrap().get(&label) {
        Some(Slot::Queued(id)) => Some(id.clone()),
        _ => None,
    }
}

/// The refusal of a muted request (`until`: when the mute ends, `None`: at restart).
fn muted(until: Option<u64>) -> Refusal {
    let left = match until {
        Some(u) => format!(
            "for {} more",
            vmux_proto::time::duration(u.saturating_sub(now_unix()))
        ),
        None => "until the signer restarts".into(),
    };
    Refusal::new(ErrorCode::UserDenied).why(format!("muted on the signer {left}: denied at once"))
}

/// One sign request from a paired device; `None` when it was cancelled (the agent
/// no longer waits for an answer).
pub(crate) async fn sign(
    signer: &Signer,
    device: &PairedDevice,
    req: SignRequest,
    labels: &Labels,
) -> Option<SignResponse> {
    let started = std::time::Instant::now();
    let label = req.request_id;
    let mut fields = obj(json!({"event": "sign", "label": label.to_string(),
        "deviceId": device.id, "device": vmux_proto::text::field(&device.name),
        "key": key_fingerprint(&req.key_blob)}));
    let outcome = async {
        if signer.paired_device(&device.public_key).is_none() {
            return Err(Refusal::new(ErrorCode::PairingInvalid));
        }
        window::check(signer, &device.id, req.issued, req.expires, &req.nonce)?;
        let seen = inspect::inspect(signer, device, &req)?;
        let info = &seen.info;
        fields.insert("purpose".into(), json!(info.purpose));
        fields.insert("destination".into(), json!(info.destination));
        fields.insert("requester".into(), json!(info.requester));
        fields.insert("dataSha256".into(), json!(info.data_digest));
        if let Some(m) = signer.mutes.check(&device.id, info.requester.as_deref()) {
            fields.insert("muted".into(), json!(true));
            return Err(muted(m.until));
        }
        let verdict = ask(signer, seen.info.clone(), req.expires, label, labels).await;
        if let Some(id) = queued_id(labels, label) {
            fields.insert("requestId".into(), json!(id));
        }
        match verdict? {
            None => Ok(None), // cancelled
            Some((Decision::Deny, _)) => {
                Err(Refusal::new(ErrorCode::UserDenied).why("denied by the person at the signer"))
            }
            Some((Decision::Muted, _)) => {
                fields.insert("muted".into(), json!(true));
                Err(muted(
                    signer.mutes.until(&device.id, info.requester.as_deref()),
                ))
            }
            Some((Decision::Unverified, _)) => Err(Refusal::new(ErrorCode::PresenceFailed)
                .why("approved, but user verification failed")),
            Some((Decision::Approve, id)) => {
                // Revoked while the person looked: nothing is signed for it.
                if signer.paired_device(&device.public_key).is_none() {
                    return Err(Refusal::new(ErrorCode::PairingInvalid));
                }
                // The record is on disk before the signature exists.
                let mut approved = fields.clone();
                approved.insert("decision".into(), json!("approved"));
                approved.insert(
                    "latencyMs".into(),
                    json!(started.elapsed().as_millis() as u64),
                );
                durable(signer, approved).await?;
                if req.session_cert {
                    // The device signs with its session key; the approval is the answer.
                    return Ok(Some(vec![]));
                }
                let sig = signer
                    .keystore
                    .sign_async_with(
                        &req.key_blob,
                        &req.data,
                        crate::keystore::SignOptions {
                            flags: req.flags,
                            // Security-key keys: user-verified only if PAM ran for it.
                            user_verified: signer.keystore.take_verified(&id),
                        },
                    )
                    .await
                    .map_err(|code| Refusal::new(code).why("the key could not sign"))?;
                if let Some((name, key)) = &seen.pin {
                    inspect::pin_host(signer, name, key);
                }
                Ok(Some(sig))
            }
        }
    }
    .await;
    match outcome {
        Ok(None) => {
            if !fields.contains_key("requestId") {
                fields.insert("decision".into(), json!("cancelled"));
                signer.record(fields);
            }
            None
        }
        Ok(Some(sig)) => Some(SignResponse {
            request_id: label,
            approved: true,
            signature: (!sig.is_empty()).then_some(sig),
            error: None,
            message: None,
        }),
        Err(r) => {
            let muted = fields.contains_key("muted");
            let decision = if muted { "muted" } else { r.code.as_str() };
            fields.insert("decision".into(), json!(decision));
            if let Some(w) = &r.why {
                fields.insert("reason".into(), json!(w));
            }
            fields.insert(
                "latencyMs".into(),
                json!(started.elapsed().as_millis() as u64),
            );
            signer.record(fields);
            Some(r.sign_response(label))
        }
    }
}

/// Append an approval to the decision log and wait until it is on disk: what follows
/// (a signature, a certificate) may leave only then. A record that cannot be written
/// refuses the request.
pub(crate) async fn durable(
    signer: &Signer,
    fields: serde_json::Map<String, serde_json::Value>,
) -> Result<(), Refusal> {
    let written = match signer.append(fields) {
        Ok(d) => d.wait_async().await.map_err(crate::SignerError::from),
        Err(e) => Err(e),
    };
    written.map_err(|e| {
        tracing::error!("decision log: {e}; nothing signed");
        Refusal::new(ErrorCode::Internal)
            .why("the signer could not write its decision log to disk; nothing was signed")
    })
}
