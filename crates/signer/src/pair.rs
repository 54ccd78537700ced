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
    let ticket = signer.queue.submit(PendingInfo {
        kind: "pair".into(),
        from: vmux_proto::text::field(&name),
        from_id: peer_id.clone(),
        code: Some(code.clone()),
        purpose: Some("pairing: this device would be trusted to ask for signatures".into()),
        created: now,
        expires: now + signer.config.pair_timeout_secs,
        ..Default::default()
    });
    let timeout = tokio::time::sleep(Duration::from_secs(signer.config.pair_timeout_secs));
    let decision = tokio::select! {
        d = ticket.decision => d.ok().filter(|v| v.digest == ticket.digest).map(|v| v.decision),
        _ = timeout => None,
        _ = reader.recv() => None, // the agent gave up or sent something else
    };
    if decision.is_none() {
        signer
            .queue
            .remove(&ticket.id, "the pairing was abandoned or timed out");
    }
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
        Some(Decision::Deny | Decision::Unverified) => Some(ErrorCode::UserDenied),
        None => Some(ErrorCode::RequestExpired),
    };
    signer.record(obj(json!({"event": "pair", "requestId": ticket.id, "deviceId": peer_id,
            "device": vmux_proto::text::field(&name), "code": code,
            "decision": if approved { "approved" } else { error.map(|e| e.as_str()).unwrap_or("") }})));
    out.send(Message::PairResponse(PairResponse {
        approved,
        error,
        signer_name: signer.config.name.clone(),
        reach: approved.then(|| signer.reach_info()),
    }))
    .await?;
    // Give the writer task a moment to flush before the link is dropped.
    tokio::time::sleep(Duration::from_millis(50)).await;
    Ok(())
}
