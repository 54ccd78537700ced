//! A session-certificate request, on the same path as a signature: window and nonce,
//! inspection (a key type the agent makes, principals checked against the CA policy,
//! never silently replaced), a person, the record on disk, then the CA.

use super::{ask, durable, queued_id, window, Labels, Refusal};
use crate::ca::{ca_key, grants, issue, principals};
use crate::queue::{Decision, PendingInfo};
use crate::signer::{obj, Signer};
use crate::state::PairedDevice;
use serde_json::json;
use ssh_key::encoding::Decode;
use ssh_key::public::KeyData;
use vmux_proto::envelope::{CertificateRequest, CertificateResponse};
use vmux_proto::identity::key_fingerprint;
use vmux_proto::{now_unix, ErrorCode};

/// Session keys the agent makes; nothing else is certified.
const SESSION_KEY_TYPES: [&str; 2] = ["ecdsa-sha2-nistp256", "ssh-ed25519"];
/// At most this many principals in one request, each at most this long.
const MAX_PRINCIPALS: usize = 8;
const MAX_PRINCIPAL_LEN: usize = 64;

/// The principals a request asks for, checked: each a plain name, allowed by the CA
/// policy's list when it has one; none asked: what the policy gives.
pub fn checked_principals(
    policy: &crate::state::CaPolicy,
    asked: &[String],
) -> Result<Vec<String>, Refusal> {
    let refuse = |why: String| Err(Refusal::new(ErrorCode::PolicyDenied).why(why));
    if asked.is_empty() {
        return Ok(principals(policy));
    }
    if asked.len() > MAX_PRINCIPALS {
        return refuse(format!("more than {MAX_PRINCIPALS} principals asked for"));
    }
    for p in asked {
        let plain = !p.is_empty()
            && p.chars().count() <= MAX_PRINCIPAL_LEN
            && !p
                .chars()
                .any(|c| c.is_control() || c == ',' || c.is_whitespace());
        if !plain {
            return refuse(format!(
                "principal {:?} is not a plain user name",
                vmux_proto::text::field(p)
            ));
        }
        if !policy.principals.is_empty() && !policy.principals.contains(p) {
            return refuse(format!(
                "principal {p} is not allowed by this signer's CA policy (allowed: {}; `vmux signer ca policy --principals`)",
                policy.principals.join(", ")
            ));
        }
    }
    Ok(asked.to_vec())
}

/// One certificate request: inspection first (no prompt when it cannot be issued),
/// then a person, then the CA.
pub(crate) async fn certificate(
    signer: &Signer,
    device: &PairedDevice,
    req: CertificateRequest,
    labels: &Labels,
) -> Option<CertificateResponse> {
    let label = req.request_id;
    let mut fields = obj(
        json!({"event": "cert", "label": label.to_string(), "deviceId": device.id,
        "device": vmux_proto::text::field(&device.name), "key": key_fingerprint(&req.public_key),
        "validitySecs": req.validity_secs}),
    );
    let outcome = async {
        if signer.paired_device(&device.public_key).is_none() {
            return Err(Refusal::new(ErrorCode::PairingInvalid));
        }
        window::check(signer, &device.id, req.issued, req.expires, &req.nonce)?;
        // The policy is read per request so that `vmux signer ca policy` applies at once.
        let config = signer.home.load_config().map_err(|e| {
            tracing::error!("{e}");
            Refusal::new(ErrorCode::Internal).why("the signer could not read its config")
        })?;
        let policy = config.ca;
        let ca = signer.ca.as_deref().ok_or_else(|| {
            Refusal::new(ErrorCode::PolicyDenied)
                .why("this signer has no CA key (`vmux signer ca init` makes one)")
        })?;
        if !policy.issue {
            return Err(Refusal::new(ErrorCode::PolicyDenied).why(
                "this signer's CA issues no session certificates (`vmux signer ca policy --issue on`)",
            ));
        }
        let subject = KeyData::decode(&mut req.public_key.as_slice()).map_err(|_| {
            Refusal::new(ErrorCode::UnsupportedAlgorithm).why("the session key does not parse")
        })?;
        let alg = subject.algorithm();
        if !SESSION_KEY_TYPES.contains(&alg.as_str()) {
            return Err(Refusal::new(ErrorCode::UnsupportedAlgorithm).why(format!(
                "a session key of type {} is not certified (only {})",
                alg.as_str(),
                SESSION_KEY_TYPES.join(", ")
            )));
        }
        let principals = checked_principals(&policy, &req.principals)?;
        fields.insert("principals".into(), json!(principals));
        let validity = req.validity_secs.min(policy.max_validity_secs).max(1);
        let info = PendingInfo {
            kind: "cert".into(),
            from: vmux_proto::text::field(&device.name),
            from_id: device.id.clone(),
            origin: Some("agent".into()),
            label: Some(label.to_string()),
            key: Some(key_fingerprint(&req.public_key)),
            key_comment: Some(format!("session key sent by {}", vmux_proto::text::field(&device.name))),
            purpose: Some("session certificate".into()),
            validity_secs: Some(validity),
            principals: Some(principals.clone()),
            grants: Some(grants(&policy, &principals, validity)),
            verify: config.verify,
            created: now_unix(),
            expires: req.expires,
            ..Default::default()
        };
        let verdict = ask(signer, info, req.expires, label, labels).await;
        if let Some(id) = queued_id(labels, label) {
            fields.insert("requestId".into(), json!(id));
        }
        match verdict? {
            None => Ok(None),
            Some((Decision::Deny | Decision::Muted, _)) => Err(Refusal::new(ErrorCode::UserDenied)
                .why("denied by the person at the signer")),
            Some((Decision::Unverified, _)) => Err(Refusal::new(ErrorCode::PresenceFailed)
                .why("approved, but user verification failed")),
            Some((Decision::Approve, _)) => {
                // Revoked while the person looked: no certificate for it.
                if signer.paired_device(&device.public_key).is_none() {
                    return Err(Refusal::new(ErrorCode::PairingInvalid));
                }
                // A CA on a token or in the TPM may take a while: off the runtime's
                // core threads when the runtime has others.
                let go = || issue(ca, &signer.home, &policy, device, &req, &principals);
                let issued = match tokio::runtime::Handle::current().runtime_flavor() {
                    tokio::runtime::RuntimeFlavor::MultiThread
                        if ca_key(ca).is_some_and(|b| ca.blocking(&b)) =>
                    {
                        tokio::task::block_in_place(go)
                    }
                    _ => go(),
                }
                .map_err(|code| Refusal::new(code).why("the CA could not issue the certificate"))?;
                // The record (with its serial) is on disk before the certificate leaves.
                let mut approved = fields.clone();
                approved.insert("decision".into(), json!("approved"));
                approved.insert("serial".into(), json!(issued.serial));
                approved.insert("keyId".into(), json!(issued.key_id));
                approved.insert("validBefore".into(), json!(issued.valid_before));
                durable(signer, approved).await?;
                Ok(Some(issued))
            }
        }
    }
    .await;
    match outcome {
        Ok(None) => None,
        Ok(Some(issued)) => Some(CertificateResponse {
            request_id: label,
            certificate: Some(issued.certificate),
            ca_public_key: Some(issued.ca_public_key),
            valid_after: issued.valid_after,
            valid_before: issued.valid_before,
            error: None,
            message: None,
        }),
        Err(r) => {
            fields.insert("decision".into(), json!(r.code.as_str()));
            if let Some(w) = &r.why {
                fields.insert("reason".into(), json!(w));
            }
            signer.record(fields);
            Some(r.cert_response(label))
        }
    }
}
