//! The session certificate: an ephemeral P-256 key made in memory, certified by a
//! signer's CA after one approval, used to sign locally until it expires. The private
//! key is never written anywhere and is zeroized when dropped: ssh-key's key types
//! zeroize themselves, and the key pair that signs (ring's) lives in an allocation that
//! is wiped before it is freed (`vmux_proto::wipe`).
//!
//! [`Lifecycle`] decides when to ask for one, without touching the network: on the first
//! link; after a request nobody answered, a `reset`, `ssh-add -D` or an expiry only at the
//! next login that would use one; after a denial only on `request-cert` or a restart.
//! Renewal asks once per certificate, for the validity last approved.

use ssh_key::encoding::Encode;
use ssh_key::{Algorithm, Certificate, EcdsaCurve, PrivateKey};
use std::sync::Arc;
use vmux_proto::envelope::CertificateResponse;
use vmux_proto::keys::PreparedKey;
use vmux_proto::time::hm;
use vmux_proto::ErrorCode;

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

/// Why no certificate is asked for right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hold {
    /// Ask as soon as a signer is linked.
    Ask,
    /// Ask again at the next login that would use a certificate (`why`: what happened).
    NextLogin(String),
    /// Denied on this signer: asked again only on `request-cert` or a restart.
    Denied(String),
    /// Something failed (not a person's answer): ask again after this time.
    RetryAt(u64),
}

/// The certificate's life in the agent (see the module docs).
pub struct Lifecycle {
    pub cert: Option<Arc<SessionCert>>,
    /// A request in flight, on this signer (by name).
    pub asking: Option<String>,
    pub hold: Hold,
    /// The validity to ask for: the last one approved, else the configured one.
    pub validity: u64,
    /// The serial whose renewal was already asked (asked once per certificate).
    pub renewal_asked: Option<u64>,
    /// Whether certificates are asked for automatically at all (`session_certs`).
    pub enabled: bool,
}

/// How a certificate request ended, as the lifecycle needs to know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Approved(u64),
    Denied(String),
    Unanswered(String),
    Failed,
}

impl Lifecycle {
    pub fn new(enabled: bool, validity: u64) -> Lifecycle {
        Lifecycle {
            cert: None,
            asking: None,
            hold: Hold::Ask,
            validity,
            renewal_asked: None,
            enabled,
        }
    }

    pub fn valid(&self, now: u64) -> Option<Arc<SessionCert>> {
        self.cert.clone().filter(|c| c.is_valid_at(now))
    }

    /// Drop the certificate; nothing is asked again until a login needs one.
    pub fn drop_cert(&mut self, why: &str) -> bool {
        let had = self.cert.take().is_some();
        if had || matches!(self.hold, Hold::Ask | Hold::RetryAt(_)) {
            self.hold = Hold::NextLogin(why.to_string());
        }
        had
    }

    /// Called every second: forget an expired certificate. Returns whether it did.
    pub fn expire(&mut self, now: u64) -> bool {
        match &self.cert {
            Some(c) if !c.is_valid_at(now) => {
                let at = c.valid_before;
                self.cert = None;
                self.hold = Hold::NextLogin(format!("expired at {}", hm(at)));
                true
            }
            _ => false,
        }
    }

    /// What to ask for now without a login (first link, a failure's retry, renewal):
    /// the validity, or `None`. `renew_before`: the configured renewal margin.
    pub fn due(&self, now: u64, linked: bool, renew_before: u64) -> Option<u64> {
        if !self.enabled || !linked || self.asking.is_some() {
            return None;
        }
        match self.valid(now) {
            Some(c) => {
                // A short certificate is renewed near its end, not at once.
                let margin = renew_before.min(self.validity / 4);
                let left = c.valid_before.saturating_sub(now);
                let renew = left < margin
                    && self.renewal_asked != Some(c.serial)
                    && !matches!(self.hold, Hold::Denied(_));
                renew.then_some(self.validity)
            }
            None => match self.hold {
                Hold::Ask => Some(self.validity),
                Hold::RetryAt(t) if now >= t => Some(self.validity),
                _ => None,
            },
        }
    }

    /// Whether a login (a bound, local connection listing keys) should ask now.
    pub fn due_for_login(&self, now: u64) -> bool {
        self.enabled
            && self.asking.is_none()
            && self.valid(now).is_none()
            && !matches!(self.hold, Hold::Denied(_))
    }

    /// Record how a request ended (`renewing`: a certificate was valid when it was asked).
    pub fn answered(&mut self, answer: Answer, now: u64) {
        let renewing = self.valid(now).map(|c| c.serial);
        self.asking = None;
        match answer {
            Answer::Approved(validity) => {
                self.validity = validity;
                self.hold = Hold::Ask;
            }
            Answer::Denied(signer) => self.hold = Hold::Denied(signer),
            Answer::Unanswered(why) => {
                if renewing.is_some() {
                    self.renewal_asked = renewing;
                } else {
                    self.hold = Hold::NextLogin(why);
                }
            }
            Answer::Failed => {
                self.renewal_asked = renewing.or(self.renewal_asked);
                if renewing.is_none() {
                    self.hold = Hold::RetryAt(now + 60);
                }
            }
        }
    }

    /// The certificate in one line, true at this moment.
    pub fn line(&self, now: u64) -> String {
        let asking = self
            .asking
            .as_deref()
            .map(|s| format!("waiting for approval on {s}"));
        if let Some(c) = self.valid(now) {
            let mut s = format!("valid until {}", hm(c.valid_before));
            if let Some(a) = asking {
                s += &format!(" (renewal: {a})");
            }
            return s;
        }
        if let Some(a) = asking {
            return format!("none — {a}");
        }
        if let Some(c) = &self.cert {
            // Expired this very second; `expire` forgets it on its next tick.
            return format!(
                "expired at {} — asks again on the next login",
                hm(c.valid_before)
            );
        }
        if !self.enabled && matches!(self.hold, Hold::Ask | Hold::RetryAt(_)) {
            return "none (session certificates are off in the agent config)".into();
        }
        match &self.hold {
            Hold::Ask => "none — asks when a signer is connected".into(),
            Hold::RetryAt(t) => format!("none — the last request failed; asks again at {}", hm(*t)),
            Hold::NextLogin(why) if !self.enabled => {
                format!("none ({why}); `vmux agent request-cert` asks for one")
            }
            Hold::NextLogin(why) if why.starts_with("expired") => {
                format!("{why} — asks again on the next login")
            }
            Hold::NextLogin(why) => format!("none ({why}) — asks again on the next login"),
            Hold::Denied(s) => {
                format!("none — denied on {s}; `vmux agent request-cert` asks again")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(serial: u64, after: u64, before: u64) -> Arc<SessionCert> {
        let key = ephemeral_key();
        Arc::new(SessionCert {
            plain_blob: public_blob(&key),
            key: PreparedKey::new(&key).unwrap(),
            blob: vec![],
            key_id: "k".into(),
            principals: vec![],
            serial,
            valid_after: after,
            valid_before: before,
            signer_id: "s".into(),
        })
    }

    #[test]
    fn the_life_of_a_certificate() {
        let mut l = Lifecycle::new(true, 28_800);
        assert_eq!(l.due(100, false, 3600), None, "no link, no request");
        assert_eq!(l.due(100, true, 3600), Some(28_800), "first link asks");
        l.asking = Some("pi".into());
        assert_eq!(l.due(100, true, 3600), None, "one at a time");
        l.answered(Answer::Unanswered("nobody answered on pi".into()), 160);
        assert_eq!(l.due(200, true, 3600), None, "not in a loop");
        assert!(l.due_for_login(200), "the next login asks");
        assert!(l.line(200).contains("asks again on the next login"));
        l.answered(Answer::Approved(120), 300);
        l.cert = Some(cert(1, 240, 420));
        assert_eq!(l.validity, 120);
        assert_eq!(
            l.due(300, true, 3600),
            None,
            "a 2-minute certificate is not renewed at once"
        );
        assert_eq!(
            l.due(400, true, 3600),
            Some(120),
            "renewed near its end, for 2 minutes"
        );
        l.answered(Answer::Unanswered("x".into()), 401);
        assert_eq!(
            l.due(402, true, 3600),
            None,
            "renewal asked once per certificate"
        );
        assert!(l.expire(421));
        assert!(l.line(421).starts_with("expired at"), "{}", l.line(421));
        assert!(l.due_for_login(421));
        l.answered(Answer::Denied("pi".into()), 500);
        assert!(!l.due_for_login(500) && l.due(500, true, 3600).is_none());
        assert!(l.line(500).contains("denied on pi"));
        let mut l = Lifecycle::new(true, 28_800);
        l.cert = Some(cert(2, 0, 100_000));
        assert!(l.drop_cert("dropped by ssh-add -D"));
        assert_eq!(
            l.due(10, true, 3600),
            None,
            "a reset does not ask again at once"
        );
        assert!(l.due_for_login(10));
    }
}
