//! SSH keys as both sides use them: a private key made ready to sign once (the curve
//! library's signing key, with its precomputed tables), so that a signature costs one
//! curve operation; and the fingerprint people compare.

use ssh_key::encoding::Encode;
use ssh_key::private::{EcdsaKeypair, KeypairData};
use ssh_key::{Algorithm, PrivateKey, Signature};

/// A decrypted private key, ready to sign. Zeroized on drop (the curve crates' signing
/// keys zeroize themselves).
pub enum PreparedKey {
    P256(p256::ecdsa::SigningKey),
    Ed25519(Box<ed25519_dalek::SigningKey>),
}

/// Why a key cannot be prepared.
#[derive(Debug, thiserror::Error)]
#[error("unsupported key type {0}: ed25519 and ecdsa-sha2-nistp256 only")]
pub struct Unsupported(pub String);

impl PreparedKey {
    pub fn new(key: &PrivateKey) -> Result<Self, Unsupported> {
        match key.key_data() {
            KeypairData::Ecdsa(EcdsaKeypair::NistP256 { private, .. }) => {
                p256::ecdsa::SigningKey::from_slice(private.as_slice())
                    .map(PreparedKey::P256)
                    .map_err(|_| Unsupported("invalid P-256 scalar".into()))
            }
            KeypairData::Ed25519(kp) => Ok(PreparedKey::Ed25519(Box::new(
                ed25519_dalek::SigningKey::from(&kp.private),
            ))),
            _ => Err(Unsupported(key.algorithm().as_str().to_string())),
        }
    }

    /// An SSH signature blob (RFC 4253 §6.6; RFC 5656 §3.1.2 for ECDSA, RFC 8709 §6 for
    /// Ed25519) over `data`.
    pub fn sign(&self, data: &[u8]) -> Result<Vec<u8>, signature::Error> {
        use signature::Signer;
        let sig = match self {
            PreparedKey::P256(k) => {
                let s: p256::ecdsa::Signature = k.try_sign(data)?;
                Signature::try_from(s).map_err(|_| signature::Error::new())?
            }
            PreparedKey::Ed25519(k) => {
                let s = k.try_sign(data)?;
                Signature::new(Algorithm::Ed25519, s.to_bytes().to_vec())
                    .map_err(|_| signature::Error::new())?
            }
        };
        sig.encode_vec().map_err(|_| signature::Error::new())
    }
}

/// `SHA256:…` of an SSH public key blob, as `ssh-keygen -l` prints it.
pub fn key_fingerprint(blob: &[u8]) -> String {
    use ssh_key::encoding::Decode;
    match ssh_key::public::KeyData::decode(&mut &blob[..]) {
        Ok(k) => k.fingerprint(ssh_key::HashAlg::Sha256).to_string(),
        Err(_) => "unparseable key".into(),
    }
}

/// Check a `session-bind@openssh.com` signature: the server's `host_key` signed
/// `session_id` (PROTOCOL.agent §1). `Some(true)` verified, `Some(false)` wrong or
/// unparseable, `None` when the key type cannot be checked in this build (RSA: no RSA
/// code in the tree).
pub fn verify_session_bind(host_key: &[u8], session_id: &[u8], signature: &[u8]) -> Option<bool> {
    use signature::Verifier;
    use ssh_key::encoding::Decode;
    use ssh_key::public::KeyData;
    let Ok(key) = KeyData::decode(&mut &host_key[..]) else {
        return Some(false);
    };
    if matches!(key, KeyData::Rsa(_)) {
        return None;
    }
    let Ok(sig) = Signature::decode(&mut &signature[..]) else {
        return Some(false);
    };
    Some(key.verify(session_id, &sig).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use signature::Verifier;
    use ssh_key::encoding::Decode;

    #[test]
    fn prepared_signatures_verify() {
        let mut rng = ssh_key::rand_core::UnwrapErr(ssh_key::getrandom::SysRng);
        for alg in [
            Algorithm::Ed25519,
            Algorithm::Ecdsa {
                curve: ssh_key::EcdsaCurve::NistP256,
            },
        ] {
            let key = PrivateKey::random(&mut rng, alg).unwrap();
            let blob = PreparedKey::new(&key).unwrap().sign(b"data").unwrap();
            let sig = Signature::decode(&mut blob.as_slice()).unwrap();
            key.public_key().key_data().verify(b"data", &sig).unwrap();
        }
    }
}
