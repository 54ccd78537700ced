//! The one way anything is decided. Every surface (sheet, line prompt, control socket
//! and CLI, ssh-askpass, desktop notification) passes the id of the entry it showed and
//! the digest of exactly what it displayed; the entry is decided only if that is still
//! what waits, and the request checks the digest again before anything is signed.
//! User verification (PAM) runs here, after the person said yes and before the
//! decision reaches the request. Nothing here decides on its own.

use crate::queue::{Decision, PendingInfo};
use crate::signer::{obj, Signer};
use crate::SignerError;
use zeroize::Zeroizing;

/// How long a request must have been on a surface before input there decides it
/// (after it appeared, or after a withdrawal notice replaced what was shown).
pub const SETTLE: std::time::Duration = std::time::Duration::from_secs(1);

/// What was decided, and whether its requester was still there to hear it.
#[derive(Debug, Clone)]
pub struct Decided {
    pub info: PendingInfo,
    pub delivered: bool,
}

fn done(signer: &Signer, (info, delivered): (PendingInfo, bool)) -> Decided {
    if !delivered {
        signer.delivery_failed(&info.id, &info.from_id);
    }
    Decided { info, delivered }
}

/// Approve the entry `id` that was displayed with `digest`, running the user
/// verification it asks for first (`secret`: what the surface collected). A failed
/// verification refuses the request (`presenceFailed`), logged; no answer to a
/// verification decides nothing. A pairing is approved only by its code.
pub async fn approve(
    signer: &Signer,
    id: &str,
    digest: &str,
    secret: Option<Zeroizing<String>>,
) -> Result<Decided, SignerError> {
    let p = exact(signer, id, digest)?;
    if p.kind == "pair" {
        return Err(SignerError::PairingNeedsCode);
    }
    if p.verify.as_deref() == Some("pam") {
        let Some(secret) = secret else {
            return Err(SignerError::VerificationNeeded(p.id.clone()));
        };
        if let Err(e) = verify(signer, secret).await {
            tracing::warn!("request {}: {e}", p.id);
            signer.record(obj(serde_json::json!({
                "event": "verify", "requestId": p.id, "decision": "presenceFailed",
                "reason": e.to_string()})));
            signer.queue.decide(id, digest, Decision::Unverified)?;
            return Err(SignerError::VerificationFailed(e.to_string()));
        }
        // Verification ran for this decision: a security-key signature may say so.
        signer.keystore.note_verified(&p.id);
    }
    Ok(done(
        signer,
        signer.queue.decide(id, digest, Decision::Approve)?,
    ))
}

/// Decide every request of a list displayed as one (`ids` in the order shown, `digest`
/// over them): all of them, or none when one changed or left. A request that arrived
/// after the list was drawn is not in `ids` and stays pending.
pub fn list(
    signer: &Signer,
    ids: &[String],
    digest: &str,
    approve: bool,
) -> Result<Vec<Decided>, SignerError> {
    let d = if approve {
        Decision::Approve
    } else {
        Decision::Deny
    };
    Ok(signer
        .queue
        .decide_list(ids, digest, d)?
        .into_iter()
        .map(|r| done(signer, r))
        .collect())
}

/// The list whose digest is `digest`, among the lists the pending sign requests could
/// have been displayed as (a list is drawn from the oldest; later arrivals only append).
pub fn find_list(signer: &Signer, digest: &str) -> Result<Vec<String>, SignerError> {
    let all = signer.queue.list().unwrap_or_default();
    (2..=all.len())
        .find(|n| crate::queue::list_digest(&all[..*n]) == digest)
        .map(|n| all[..n].iter().map(|p| p.id.clone()).collect())
        .ok_or_else(|| SignerError::ListChanged(digest.to_string()))
}

/// How long a mute lasts, as the sheet offers it: 5 minutes, an hour, or until the
/// signer restarts (`None`).
pub const MUTE_CHOICES: [(&str, Option<u64>); 3] = [
    ("5 minutes", Some(300)),
    ("1 hour", Some(3600)),
    ("until the signer restarts", None),
];

/// Deny the sign request `id` displayed with `digest`, and mute its device and
/// requester chain for `secs` (`None`: until restart). Requests from them already
/// waiting are denied as muted too (a mute only ever denies). Returns the decided entry
/// and how many waiting ones the mute denied.
pub fn deny_and_mute(
    signer: &Signer,
    id: &str,
    digest: &str,
    secs: Option<u64>,
) -> Result<(Decided, usize), SignerError> {
    let p = exact(signer, id, digest)?;
    if p.kind != "sign" {
        return Err(SignerError::NotMutable(p.id));
    }
    let d = deny(signer, id, digest)?;
    signer
        .mutes
        .add(&p.from_id, &p.from, p.requester.as_deref(), secs);
    signer.record(obj(serde_json::json!({
        "event": "mute", "deviceId": p.from_id, "device": vmux_proto::text::field(&p.from),
        "requester": p.requester.as_deref().map(crate::mute::chain),
        "until": secs.map(|s| vmux_proto::now_unix() + s)})));
    let mut n = 0;
    for w in signer.queue.pending() {
        if w.kind == "sign" && signer.mutes.matches(&w.from_id, w.requester.as_deref()) {
            if let Ok(r) = signer.queue.decide(&w.id, &w.digest, Decision::Muted) {
                signer.mutes.count(&w.from_id, w.requester.as_deref());
                done(signer, r);
                n += 1;
            }
        }
    }
    Ok((d, n))
}

/// Deny the entry `id` that was displayed with `digest` (pairings included).
pub fn deny(signer: &Signer, id: &str, digest: &str) -> Result<Decided, SignerError> {
    Ok(done(
        signer,
        signer.queue.decide(id, digest, Decision::Deny)?,
    ))
}

/// A surface that shows one pairing (`id`, displayed with `digest`) and read a code
/// for it: the code of that pairing approves it, any other denies it (one guess).
/// `secret` answers the user verification the signer asks for (`verify`), if any.
pub async fn pair_shown(
    signer: &Signer,
    id: &str,
    digest: &str,
    code: &str,
    secret: Option<Zeroizing<String>>,
) -> Result<Decided, SignerError> {
    let p = exact(signer, id, digest)?;
    if p.kind != "pair" || p.code.is_none() {
        return Err(SignerError::UnknownRequest(id.to_string()));
    }
    if code.is_empty() || p.code.as_deref() != Some(code.trim()) {
        deny(signer, id, digest)?;
        return Err(SignerError::NoPairingWithCode);
    }
    verified(signer, &p, secret).await?;
    Ok(done(signer, signer.queue.approve_entry(id, digest)?))
}

/// Approve the one waiting pairing whose code is `code` (what the other device shows).
pub async fn pair_by_code(
    signer: &Signer,
    code: &str,
    secret: Option<Zeroizing<String>>,
) -> Result<Decided, SignerError> {
    let waiting = signer
        .queue
        .pending()
        .into_iter()
        .find(|p| p.kind == "pair" && p.code.as_deref() == Some(code.trim()));
    if let Some(p) = &waiting {
        verified(signer, p, secret).await?;
    }
    Ok(done(signer, signer.queue.approve_code(code)?))
}

/// The user verification a pairing asks for (`verify` in the signer's config), before
/// a new device is trusted.
async fn verified(
    signer: &Signer,
    p: &PendingInfo,
    secret: Option<Zeroizing<String>>,
) -> Result<(), SignerError> {
    if p.verify.as_deref() != Some("pam") {
        return Ok(());
    }
    let Some(secret) = secret else {
        return Err(SignerError::VerificationNeeded(p.id.clone()));
    };
    verify(signer, secret).await.map_err(|e| {
        tracing::warn!("pairing {}: {e}", p.id);
        SignerError::VerificationFailed(e.to_string())
    })
}

/// The pending entry `id`, if it still shows exactly `digest`.
fn exact(signer: &Signer, id: &str, digest: &str) -> Result<PendingInfo, SignerError> {
    let p = signer
        .queue
        .pending()
        .into_iter()
        .find(|p| p.id == id)
        .ok_or_else(|| SignerError::UnknownRequest(id.to_string()))?;
    if p.digest != digest || p.compute_digest() != digest {
        return Err(SignerError::DisplayChanged(id.to_string()));
    }
    Ok(p)
}

async fn verify(
    signer: &Signer,
    secret: Zeroizing<String>,
) -> Result<(), crate::verify::VerifyError> {
    let config = signer
        .home
        .load_config()
        .map_err(|e| crate::verify::VerifyError::NoPam(format!("the signer's config: {e}")))?;
    let user = config
        .pam_user
        .clone()
        .unwrap_or_else(crate::verify::current_user);
    let service = config.pam_service.clone();
    tokio::task::spawn_blocking(move || crate::verify::pam(&service, &user, vec![secret]))
        .await
        .unwrap_or_else(|e| Err(crate::verify::VerifyError::NoPam(e.to_string())))
}
