//! Pairing from the agent's side: run XX, show the code derived from the handshake,
//! wait for the person to type it on the signer, then ask the person for the code the
//! signer shows in return and pin the signer's key only when it matches (the steps
//! are in `vmux_proto::pairing`). A signer that merely answers "approved" is pinned by
//! nobody.

use crate::link::{dial, hello};
use crate::state::{AgentHome, PairedSigner};
use crate::AgentError;
use std::time::Duration;
use vmux_proto::envelope::*;
use vmux_proto::identity::device_id;
use vmux_proto::{noise, now_unix, pairing, Identity};

/// Pair with the signer at `addr`. `show_code` is called with the 6-digit code as soon
/// as it is known; `ask_signer_code` asks the person for the code the signer shows once
/// ours was typed there (`None`: nothing typed). All of it is bounded by `wait`.
pub async fn pair(
    home: &AgentHome,
    identity: &Identity,
    my_name: &str,
    addr: &str,
    wait: Duration,
    show_code: impl FnOnce(&str),
    ask_signer_code: impl FnOnce() -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Option<String>> + Send>,
    >,
) -> Result<PairedSigner, AgentError> {
    let stream = dial(addr, Duration::from_secs(10)).await?;
    let not_vmux = |why: String| {
        AgentError::Unreachable {
        addr: addr.into(),
        reason: format!("something answered there, but not a vmux signer ({why}); is that the right port? (a signer listens on 7227 by default)"),
    }
    };
    let link = tokio::time::timeout(Duration::from_secs(10), noise::connect(stream, identity))
        .await
        .map_err(|_| not_vmux("no Noise handshake within 10s".into()))?
        .map_err(|e| not_vmux(e.to_string()))?;
    let noise::Link {
        mut reader,
        mut writer,
        remote_static,
        handshake_hash,
    } = link;
    writer
        .send(&Envelope::new(hello(identity, my_name)))
        .await?;
    writer
        .send(&Envelope::new(Message::PairRequest(PairRequest {
            device_name: my_name.into(),
        })))
        .await?;
    // The commitment round (vmux_proto::pairing): the signer commits to Nb before it
    // sees our Na, then opens it; the code depends on both and on this handshake.
    let tampered = |why: &str| {
        AgentError::Refused(
        ErrorCode::PairingInvalid,
        format!("pairing aborted: {why} (someone may be in the middle; try again on a network you trust)"),
    )
    };
    let commitment = match next_message(&mut reader).await? {
        Message::PairCommit(c) => c.commitment,
        Message::Error(e) => return Err(AgentError::Refused(e.code, e.message)),
        _ => return Err(tampered("the signer did not commit first")),
    };
    let na = pairing::nonce();
    writer
        .send(&Envelope::new(Message::PairReveal(PairNonce {
            nonce: na.to_vec(),
        })))
        .await?;
    let nb = match next_message(&mut reader).await? {
        Message::PairOpen(o) => o.nonce,
        Message::Error(e) => return Err(AgentError::Refused(e.code, e.message)),
        _ => return Err(tampered("the signer did not open its commitment")),
    };
    if !pairing::opens(&commitment, &handshake_hash, &nb) {
        return Err(tampered("the signer's nonce does not open its commitment"));
    }
    let code = pairing::code(&handshake_hash, &na, &nb);
    show_code(&code);
    let deadline = tokio::time::Instant::now() + wait;
    // The person typed our code on the signer: the signer shows its own code now.
    let accepted =
        async {
            loop {
                match reader.recv().await?.message {
                    Message::Hello(_) => continue,
                    Message::PairAccepted => return Ok(None),
                    Message::PairResponse(r) if !r.approved => return Ok(Some(r)),
                    Message::PairResponse(_) => return Err(tampered(
                        "the signer said \"approved\" without showing its code for this pairing",
                    )),
                    Message::Error(e) => return Err(AgentError::Refused(e.code, e.message)),
                    _ => continue,
                }
            }
        };
    let refused = tokio::time::timeout_at(deadline, accepted)
        .await
        .map_err(|_| AgentError::Timeout(wait.as_secs()))??;
    let resp = match refused {
        Some(r) => r,
        None => {
            let typed = tokio::time::timeout_at(deadline, ask_signer_code())
                .await
                .map_err(|_| AgentError::Timeout(wait.as_secs()))?
                .ok_or_else(|| {
                    AgentError::Refused(
                        ErrorCode::PairingInvalid,
                        "no code was typed: nothing paired".into(),
                    )
                })?;
            let want = pairing::signer_code(&handshake_hash, &na, &nb);
            if !pairing::same(typed.trim().as_bytes(), want.as_bytes()) {
                return Err(tampered(
                    "the code typed is not the one this pairing's signer shows: nothing paired",
                ));
            }
            writer
                .send(&Envelope::new(Message::PairConfirm(PairConfirm {
                    proof: pairing::confirm(&handshake_hash, &na, &nb),
                })))
                .await?;
            let answer = async {
                loop {
                    match reader.recv().await?.message {
                        Message::Hello(_) => continue,
                        Message::PairResponse(r) => return Ok(r),
                        Message::Error(e) => return Err(AgentError::Refused(e.code, e.message)),
                        _ => continue,
                    }
                }
            };
            tokio::time::timeout(Duration::from_secs(15), answer)
                .await
                .map_err(|_| AgentError::Timeout(15))??
        }
    };
    if !resp.approved {
        let code = resp.error.unwrap_or(ErrorCode::UserDenied);
        return Err(AgentError::Refused(
            code,
            "pairing was not approved on the signer".into(),
        ));
    }
    let signer = PairedSigner {
        id: device_id(&remote_static),
        name: resp.signer_name,
        public_key: remote_static,
        address: addr.to_string(),
        paired_at: now_unix(),
        wake_url: None,
        wake_token: Some(crate::wake::new_token()),
        reach: resp.reach,
    };
    let mut all = home.load_signers()?;
    all.retain(|s| s.id != signer.id);
    all.push(signer.clone());
    home.save_signers(&all)?;
    Ok(signer)
}

/// The next message of the pairing exchange (Hello skipped), within 15 s.
async fn next_message<S: noise::Stream>(
    reader: &mut noise::LinkReader<S>,
) -> Result<Message, AgentError> {
    let step = Duration::from_secs(15);
    loop {
        match tokio::time::timeout(step, reader.recv()).await {
            Ok(Ok(e)) if matches!(e.message, Message::Hello(_)) => continue,
            Ok(Ok(e)) => return Ok(e.message),
            Ok(Err(e)) => return Err(AgentError::from(e)),
            Err(_) => return Err(AgentError::Timeout(step.as_secs())),
        }
    }
}
