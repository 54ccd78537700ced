//! Pairing from the signer's side: a new device's Noise static key is pinned only after
//! a person approved the pairing on this signer.

use crate::queue::{Decision, PendingInfo};
use crate::signer::{obj, Signer};
use crate::state::PairedDevice;
use serde_json::json;
use std::time::Duration;
use vmux_proto::envelope::*;
use vmux_proto::noise::{self, Outbox};
use vmux_proto::pairing;
use vmux_proto::{now_unix, ProtoError};

/// How long each step of the commitment round may take.
const PAIR_STEP: Duration = Duration::from_secs(10);

/// The device asking to pair: its id, the name it gives itself, its link key.
pub(crate) struct Peer {
    pub id: String,
    pub name: String,
    pub public: Vec<u8>,
}

/// A pairing that ended before anyone could approve it: say so in the log.
fn pairing_failed(signer: &Signer, peer_id: &str, name: &str, why: &str) {
    tracing::warn!(
        "pairing with {} ({peer_id}) failed: {why}",
        vmux_proto::text::field(name)
    );
    signer.record(obj(json!({"event": "pair", "deviceId": peer_id,
        "device": vmux_proto::text::field(name), "decision": "failed", "reason": why})));
}

pub(crate) async fn pair<S: noise::Stream>(
    signer: &Signer,
    mut reader: noise::LinkReader<S>,
    out: Outbox,
    peer: Peer,
    handshake_hash: &[u8],
) -> Result<(), ProtoError> {
    let Peer {
        id: peer_id,
        name,
        public,
    } = peer;
    // The commitment round (vmux_proto::pairing): commit to Nb, learn Na, open Nb.
    let nb = pairing::nonce();
    out.send(Message::PairCommit(PairCommit {
        commitment: pairing::commitment(handshake_hash, &nb),
    }))
    .await?;
    let reveal = tokio::time::timeout(PAIR_STEP, reader.recv()).await;
    let na = match reveal {
        Ok(Ok(Envelope {
            message: Message::PairReveal(r),
            ..
        })) if r.nonce.len() == 32 => r.nonce,
        _ => {
            pairing_failed(
                signer,
                &peer_id,
                &name,
                "the device did not reveal its nonce",
            );
            return Ok(());
        }
    };
    out.send(Message::PairOpen(PairNonce { nonce: nb.to_vec() }))
        .await?;
    let code = pairing::code(handshake_hash, &na, &nb);
    let now = now_unix();
    let verify = signer.home.load_config().ok().and_then(|c| c.verify);
    let ticket = signer.queue.submit(PendingInfo {
        kind: "pair".into(),
        from: vmux_proto::text::field(&name),
        from_id: peer_id.clone(),
        code: Some(code.clone()),
        purpose: Some("pairing: this device would be trusted to ask for signatures".into()),
        verify: verify.clone(),
        created: now,
        expires: now + signer.config.pair_timeout_secs,
        ..Default::default()
    });
    let timeout = tokio::time::sleep(Duration::from_secs(signer.config.pair_timeout_secs));
    tokio::pin!(timeout);
    let decision = tokio::select! {
        d = ticket.decision => d.ok().filter(|v| v.digest == ticket.digest).map(|v| v.decision),
        _ = &mut timeout => None,
        _ = reader.recv() => None, // the agent gave up or sent something else
    };
    if decision.is_none() {
        signer
            .queue
            .remove(&ticket.id, "the pairing was abandoned or timed out");
    }
    // The workstation's code matched: now the person types this signer's code there.
    let (decision, confirm_id) = if decision == Some(Decision::Approve) {
        confirm(
            signer,
            &mut reader,
            &out,
            (&peer_id, &name),
            handshake_hash,
            (&na, &nb),
            &mut timeout,
        )
        .await?
    } else {
        (decision, None)
    };
    let approved = decision == Some(Decision::Approve);
    if approved {
        let saved = signer.add_paired(PairedDevice {
            id: peer_id.clone(),
            name: name.clone(),
            public_key: public,
            paired_at: now_unix(),
            last_seen: now_unix(),
        });
        if let Err(e) = saved {
            tracing::error!("{e}");
            out.send(Message::PairResponse(PairResponse {
                approved: false,
                error: Some(ErrorCode::Internal),
                signer_name: signer.config.name.clone(),
                reach: None,
            }))
            .await?;
            return Ok(());
        }
    }
    let error = match decision {
        Some(Decision::Approve) => None,
        Some(Decision::Deny | Decision::Unverified | Decision::Muted) => {
            Some(ErrorCode::UserDenied)
        }
        None => Some(ErrorCode::RequestExpired),
    };
    signer.record(obj(json!({"event": "pair", "requestId": confirm_id.unwrap_or(ticket.id),
            "deviceId": peer_id, "device": vmux_proto::text::field(&name), "code": code,
            "decision": if approved { "approved" } else { error.map(|e| e.as_str()).unwrap_or("") }})));
    out.send(Message::PairResponse(PairResponse {
        approved,
        error,
        signer_name: signer.config.name.clone(),
        reach: approved.then(|| signer.reach_info()),
    }))
    .await?;
    Ok(())
}

/// After the workstation's code matched: show this signer's code (a queue entry that
/// the sheet, `pending` and `approve --code` show), and wait for the workstation to say
/// that the person typed it there. `Approve` only with the right proof; a denial of the
/// entry, a wrong proof, silence or the pairing's time running out pin nothing.
async fn confirm<S: noise::Stream>(
    signer: &Signer,
    reader: &mut noise::LinkReader<S>,
    out: &Outbox,
    (peer_id, name): (&str, &str),
    h: &[u8],
    (na, nb): (&[u8], &[u8]),
    timeout: &mut std::pin::Pin<&mut tokio::time::Sleep>,
) -> Result<(Option<Decision>, Option<String>), ProtoError> {
    out.send(Message::PairAccepted).await?;
    let now = now_unix();
    let ticket = signer.queue.submit(PendingInfo {
        kind: "pair".into(),
        from: vmux_proto::text::field(name),
        from_id: peer_id.to_string(),
        signer_code: Some(pairing::signer_code(h, na, nb)),
        purpose: Some(format!(
            "pairing: type this signer's code on {} to finish",
            vmux_proto::text::field(name)
        )),
        created: now,
        expires: now + signer.config.pair_timeout_secs,
        ..Default::default()
    });
    let id = ticket.id.clone();
    let want = pairing::confirm(h, na, nb);
    let decision = tokio::select! {
        d = ticket.decision => {
            // Only a denial reaches a confirmation entry (it has no code to approve).
            d.ok().map(|_| Decision::Deny)
        }
        _ = timeout.as_mut() => None,
        m = reader.recv() => match m {
            Ok(Envelope { message: Message::PairConfirm(c), .. }) if pairing::same(&c.proof, &want) => {
                Some(Decision::Approve)
            }
            Ok(_) => {
                pairing_failed(signer, peer_id, name, "the workstation's confirmation does not match this pairing");
                Some(Decision::Deny)
            }
            Err(_) => {
                pairing_failed(signer, peer_id, name, "the workstation left before the signer's code was typed there");
                None
            }
        },
    };
    let why = match decision {
        Some(Decision::Approve) => format!("paired with {}", vmux_proto::text::field(name)),
        _ => "the pairing did not finish".to_string(),
    };
    signer.queue.remove(&id, &why);
    Ok((decision, Some(id)))
}
