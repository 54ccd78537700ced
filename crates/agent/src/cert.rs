//! The session certificate: an ephemeral P-256 key made in memory, certified by a
//! signer's CA after one approval, used to sign locally until it expires. The private
//! key is never written anywhere and is zeroized when dropped: ssh-key's key types
//! zeroize themselves, and the key pair that signs (ring's) lives in an allocation that
//! is wiped before it is freed (`vmux_proto::wipe`).

use crate::forward::Agent;
use crate::AgentError;
use serde_json::json;
use ssh_key::encoding::Encode;
use ssh_key::{Algorithm, Certificate, EcdsaCurve, PrivateKey};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;
use vmux_proto::envelope::CertificateRequest;
use vmux_proto::envelope::CertificateResponse;
use vmux_proto::keys::PreparedKey;
use vmux_proto::ErrorCode;
use vmux_proto::{now_unix, random_bytes};

pub const COMMENT: &str = "vmux-session-cert";

pub struct SessionCert {
    key: PreparedKey,
    /// The certificate blob, as listed and as clients name it in SIGN_REQUEST.
    pub blob: Vec<u8>,
    /// The certified key's plain public blob: `ssh-keygen -Y sign` names the key this way.
    pub plain_blob: Vec<u8>,
    pub key_id: String,
    pub principals: Vec<String>,
    pub serial: u64,
    pub valid_after: u64,
    pub valid_before: u64,
    pub signer_id: String,
}

/// A fresh ephemeral key (P-256, like the Secure Enclave keys of the original), on the
/// heap: the key is held across awaits, and a task keeps what it holds in its own heap
/// memory, where every move would leave a copy that nothing wipes. A box moves as a
/// pointer; ssh-key zeroes the key itself when the box is dropped.
pub fn ephemeral_key() -> Box<PrivateKey> {
    let key = generate_boxed();
    // The generator's temporaries (the scalar) were on the stack below this frame.
    vmux_proto::wipe::scrub_stack();
    key
}

#[inline(never)]
fn generate_boxed() -> Box<PrivateKey> {
    let mut rng = ssh_key::rand_core::UnwrapErr(ssh_key::getrandom::SysRng);
    Box::new(
        PrivateKey::random(
            &mut rng,
            Algorithm::Ecdsa {
                curve: EcdsaCurve::NistP256,
            },
        )
        .expect("P-256 key generation"),
    )
}

pub fn public_blob(key: &PrivateKey) -> Vec<u8> {
    key.public_key()
        .key_data()
        .encode_vec()
        .expect("encode public key")
}

impl SessionCert {
    /// Accept a CA's answer only if it certifies our key, is signed by the CA key it
    /// names, and is a user certificate.
    pub fn from_response(
        key: Box<PrivateKey>,
        resp: &CertificateResponse,
        signer_id: &str,
    ) -> Result<SessionCert, String> {
        let blob = resp
            .certificate
            .as_ref()
            .ok_or("no certificate in the answer")?;
        let cert = Certificate::from_bytes(blob)
            .map_err(|e| format!("certificate does not parse: {e}"))?;
        if cert.public_key() != key.public_key().key_data() {
            return Err("certificate is for another key".into());
        }
        let ca = resp
            .ca_public_key
            .as_ref()
            .ok_or("no CA key in the answer")?;
        let named = cert
            .signature_key()
            .encode_vec()
            .map_err(|e| e.to_string())?;
        if &named != ca {
            return Err("certificate is signed by another CA than the one named".into());
        }
        cert.verify_signature()
            .map_err(|e| format!("CA signature does not verify: {e}"))?;
        if cert.cert_type() != ssh_key::certificate::CertType::User {
            return Err("not a user certificate".into());
        }
        Ok(SessionCert {
            plain_blob: public_blob(&key),
            key: PreparedKey::new(&key).map_err(|e| e.to_string())?,
            blob: blob.clone(),
            key_id: cert.key_id().to_string(),
            principals: cert.valid_principals().to_vec(),
            serial: cert.serial(),
            valid_after: cert.valid_after(),
            valid_before: cert.valid_before(),
            signer_id: signer_id.to_string(),
        })
    }

    /// Whether a SIGN_REQUEST's key blob names this certificate or its key.
    pub fn matches(&self, key_blob: &[u8]) -> bool {
        key_blob == self.blob || key_blob == self.plain_blob
    }

    pub fn is_valid_at(&self, now: u64) -> bool {
        now < self.valid_before
    }

    /// Where the key pair lives (for the test that proves it is wiped when dropped).
    #[doc(hidden)]
    pub fn key_allocation(&self) -> (usize, usize) {
        self.key.key_allocation()
    }

    /// Sign locally: an ordinary `ecdsa-sha2-nistp256` signature by the certified key.
    pub fn sign(&self, data: &[u8]) -> Result<Vec<u8>, ErrorCode> {
        self.key.sign(data).map_err(|_| ErrorCode::Internal)
    }
}

/// The certificate's life in the agent: asked for, renewed, dropped.
impl Agent {
    /// The session certificate, if there is one and it has not expired.
    pub fn valid_cert(&self) -> Option<Arc<SessionCert>> {
        let c = self.cert.lock().unwrap().clone()?;
        c.is_valid_at(now_unix()).then_some(c)
    }

    /// Forget the session certificate and its key (`ssh-add -D`, LOCK, reset, expiry).
    pub fn drop_cert(&self, why: &str) -> bool {
        let had = self.cert.lock().unwrap().take().is_some();
        if had {
            tracing::info!("session certificate dropped: {why}");
            self.write_status();
        }
        had
    }

    /// Ask a reachable signer's CA for a session certificate (a person approves there).
    pub async fn request_cert(&self, validity_secs: u64) -> Result<(), AgentError> {
        if self.cert_in_flight.swap(true, Ordering::SeqCst) {
            return Err(AgentError::Refused(
                ErrorCode::Busy,
                "a certificate request is already waiting".into(),
            ));
        }
        let res = self.request_cert_inner(validity_secs).await;
        self.cert_in_flight.store(false, Ordering::SeqCst);
        let retry = match &res {
            Ok(()) => 0,
            Err(AgentError::Refused(ErrorCode::UserDenied | ErrorCode::PolicyDenied, _)) => 3600,
            Err(_) => 60,
        };
        self.cert_retry_at
            .store(now_unix() + retry, Ordering::Relaxed);
        res
    }

    async fn request_cert_inner(&self, validity_secs: u64) -> Result<(), AgentError> {
        // The first paired signer that answers; its CA certifies the key.
        let mut last = AgentError::NoSuchSigner("(none paired)".into());
        let mut link = None;
        for s in &self.signers() {
            match self.link_or_wake(&s.id).await {
                Ok(l) => {
                    link = Some((s.id.clone(), l));
                    break;
                }
                Err(e) => last = e,
            }
        }
        let (signer_id, link) = link.ok_or(last)?;
        let key = ephemeral_key();
        let issued = now_unix();
        let window = self.config.request_window_secs;
        let req = CertificateRequest {
            request_id: Uuid::new_v4(),
            public_key: public_blob(&key),
            validity_secs,
            principals: vec![],
            device_id: self.identity.device_id(),
            device_name: self.name.clone(),
            nonce: random_bytes::<16>().to_vec(),
            issued,
            expires: issued + window,
        };
        let id = req.request_id;
        let resp = link.certificate(req, Duration::from_secs(window + 5)).await;
        let outcome = resp.and_then(|r| match r.error {
            Some(code) => Err(AgentError::Refused(code, "certificate not issued".into())),
            None => SessionCert::from_response(key, &r, &signer_id)
                .map_err(|e| AgentError::Refused(ErrorCode::Internal, e)),
        });
        self.record(json!({
            "time": now_unix(),
            "requestId": id.to_string(),
            "kind": "cert",
            "decision": match &outcome { Ok(_) => "approved".to_string(), Err(e) => e.code().to_string() },
            "validBefore": outcome.as_ref().ok().map(|c| c.valid_before),
        }));
        let c = outcome?;
        tracing::info!(
            "session certificate {} valid until {}",
            c.key_id,
            c.valid_before
        );
        *self.cert.lock().unwrap() = Some(Arc::new(c));
        self.cert_expired.store(false, Ordering::Relaxed);
        self.write_status();
        Ok(())
    }

    /// Once a second: drop an expired certificate; request or renew one when a signer
    /// is reachable and it is due.
    pub(crate) fn spawn_cert_keeper(self: &Arc<Self>) {
        let agent = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let now = now_unix();
                let current = agent.cert.lock().unwrap().clone();
                if let Some(c) = &current {
                    if !c.is_valid_at(now) {
                        agent.drop_cert("expired");
                        agent.cert_expired.store(true, Ordering::Relaxed);
                        agent.write_status();
                    }
                }
                if !agent.config.session_certs || agent.is_locked() {
                    continue;
                }
                let due = match agent.valid_cert() {
                    None => true,
                    Some(c) => {
                        c.valid_before.saturating_sub(now) < agent.config.cert_renew_before_secs
                    }
                };
                let reachable = agent.links.lock().unwrap().values().any(|l| l.is_up());
                if due
                    && reachable
                    && now >= agent.cert_retry_at.load(Ordering::Relaxed)
                    && !agent.cert_in_flight.load(Ordering::SeqCst)
                {
                    let a = agent.clone();
                    tokio::spawn(async move {
                        if let Err(e) = a.request_cert(a.config.cert_validity_secs).await {
                            tracing::warn!("session certificate: {e}");
                        }
                    });
                }
            }
        });
    }
}
