//! One paired device's link: its messages, one at a time. Each sign or certificate
//! request becomes a task of its own (it may wait minutes for a person) under the
//! device's own label, which no other live request of the device may reuse; a Cancel
//! reaches only the device's own request, whether or not it was queued yet.

use crate::request::{self, Labels, Slot};
use crate::signer::{obj, Live, Signer};
use crate::state::PairedDevice;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use vmux_proto::envelope::*;
use vmux_proto::noise::{self, Outbox};
use vmux_proto::ProtoError;

/// Agents ping every few seconds; a long silence means the link is dead.
const AGENT_SILENCE: Duration = Duration::from_secs(30);

pub(crate) async fn run<S: noise::Stream>(
    signer: Arc<Signer>,
    mut reader: noise::LinkReader<S>,
    out: Outbox,
    device: PairedDevice,
) -> Result<(), ProtoError> {
    let device = Arc::new(device);
    let labels: Labels = Default::default();
    let superseded = Arc::new(tokio::sync::Notify::new());
    signer.link_up(
        &device.id,
        Live {
            superseded: superseded.clone(),
            outbox: out.clone(),
        },
    );
    let result = loop {
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
                    keys: signer.keystore.listed(),
                }))
                .await?
            }
            Message::SignRequest(req) => {
                let label = req.request_id;
                if !request::claim(&labels, label) {
                    let r = request::Refusal::new(ErrorCode::ReplayDetected)
                        .why("a request with this id is still waiting");
                    out.send(Message::SignResponse(r.sign_response(label)))
                        .await?;
                    continue;
                }
                let (s, d, l) = (signer.clone(), device.clone(), labels.clone());
                respond(&signer, &out, &device.id, label, async move {
                    let r = request::sign(&s, &d, *req, &l).await;
                    l.lock().unwrap().remove(&label);
                    r.map(Message::SignResponse)
                });
            }
            Message::CertificateRequest(req) => {
                let label = req.request_id;
                if !request::claim(&labels, label) {
                    let r = request::Refusal::new(ErrorCode::ReplayDetected)
                        .why("a request with this id is still waiting");
                    out.send(Message::CertificateResponse(Box::new(
                        r.cert_response(label),
                    )))
                    .await?;
                    continue;
                }
                let (s, d, l) = (signer.clone(), device.clone(), labels.clone());
                respond(&signer, &out, &device.id, label, async move {
                    let resp = request::cert::certificate(&s, &d, *req, &l).await;
                    l.lock().unwrap().remove(&label);
                    resp.map(|r| Message::CertificateResponse(Box::new(r)))
                });
            }
            Message::Cancel(c) => cancel(&signer, &device, &labels, c.request_id),
            Message::Ping => out.send(Message::Pong).await?,
            _ => {}
        }
    };
    signer.link_down(&device.id, &superseded);
    // The requester is gone: its requests leave the queue, and say so in the log.
    let ids: Vec<String> = labels
        .lock()
        .unwrap()
        .drain()
        .filter_map(|(_, s)| match s {
            Slot::Queued(id) => Some(id),
            _ => None,
        })
        .collect();
    for id in ids {
        if signer.queue.remove(&id, "its device went away").is_some() {
            signer.record(obj(json!({"event": "sign", "requestId": id,
                "deviceId": device.id, "decision": "requesterGone"})));
        }
    }
    result
}

/// The device cancels its own request `label`: taken out of the queue if it is there,
/// or marked so that it never gets there.
fn cancel(signer: &Signer, device: &PairedDevice, labels: &Labels, label: uuid::Uuid) {
    let mut l = labels.lock().unwrap();
    match l.get(&label) {
        Some(Slot::Queued(id)) => {
            let id = id.clone();
            drop(l);
            if signer
                .queue
                .remove(&id, "cancelled by its requester")
                .is_some()
            {
                signer.record(obj(json!({"event": "sign", "requestId": id,
                    "label": label.to_string(),
                    "deviceId": device.id, "decision": "cancelled"})));
            }
        }
        Some(Slot::Claimed) => {
            l.insert(label, Slot::Cancelled);
        }
        _ => {}
    }
}

/// Work out one request in its own task and send the answer, if any; an answer nobody
/// can receive any more is logged.
fn respond(
    signer: &Arc<Signer>,
    out: &Outbox,
    device_id: &str,
    label: uuid::Uuid,
    work: impl std::future::Future<Output = Option<Message>> + Send + 'static,
) {
    let (s, out, device_id) = (signer.clone(), out.clone(), device_id.to_string());
    tokio::spawn(async move {
        if let Some(answer) = work.await {
            if out.send(answer).await.is_err() {
                s.delivery_failed(&label.to_string(), &device_id);
            }
        }
    });
}
