//! The session certificate: an ephemeral P-256 key made in memory, certified by a
//! signer's CA after one approval, used to sign locally until it expires. The private
//! key is never written anywhere and is zeroized when dropped (the curve crate's signing
//! key, and ssh-key's key types, zeroize on drop).

use ssh_key::encoding::Encode;
use ssh_key::{Algorithm, Certificate, EcdsaCurve, PrivateKey};
use vmux_proto::envelope::CertificateResponse;
use vmux_proto::keys::PreparedKey;
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

/// A fresh ephemeral key (P-256, like the Secure Enclave keys of the original).
pub fn ephemeral_key() -> PrivateKey {
    let mut rng = ssh_key::rand_core::UnwrapErr(ssh_key::getrandom::SysRng);
    PrivateKey::random(
        &mut rng,
        Algorithm::Ecdsa {
            curve: EcdsaCurve::NistP256,
        },
    )
    .expect("P-256 key generation")
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
        key: PrivateKey,
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

    /// Sign locally: an ordinary `ecdsa-sha2-nistp256` signature by the certified key.
    pub fn sign(&self, data: &[u8]) -> Result<Vec<u8>, ErrorCode> {
        self.key.sign(data).map_err(|_| ErrorCode::Internal)
    }
}
