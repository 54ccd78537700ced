//! A device's long-term Noise static key, its short id and the pairing code.

use crate::{store, ProtoError};
use base64::{engine::general_purpose::STANDARD, Engine};
use sha2::{Digest, Sha256};
use std::path::Path;
use zeroize::Zeroizing;

pub const NOISE_PARAMS: &str = "Noise_XX_25519_ChaChaPoly_BLAKE2s";

/// Opens an identity file sealed to a TPM (`TSS2 PRIVATE KEY` sealed data), given its
/// path (the device's config lives beside it) and text; the binary registers it when
/// built with TPM support.
pub type Unseal = fn(&Path, &str) -> Result<Zeroizing<Vec<u8>>, String>;

static UNSEAL: std::sync::OnceLock<Unseal> = std::sync::OnceLock::new();

pub fn set_unseal(f: Unseal) {
    let _ = UNSEAL.set(f);
}

/// A Noise static keypair (X25519).
pub struct Identity {
    private: Zeroizing<Vec<u8>>,
    public: Vec<u8>,
}

impl Identity {
    pub fn generate() -> Self {
        let params = NOISE_PARAMS.parse().expect("valid Noise parameters");
        let kp = snow::Builder::new(params)
            .generate_keypair()
            .expect("X25519 key generation");
        Identity {
            private: Zeroizing::new(kp.private),
            public: kp.public,
        }
    }

    pub fn from_private(private: &[u8]) -> Result<Self, ProtoError> {
        let bytes: [u8; 32] = private
            .try_into()
            .map_err(|_| ProtoError::Noise("a static key is 32 bytes".into()))?;
        let public = x25519_public(&bytes);
        Ok(Identity {
            private: Zeroizing::new(bytes.to_vec()),
            public: public.to_vec(),
        })
    }

    /// Load the identity at `path`, creating it (mode 0600) on first use.
    pub fn load_or_create(path: &Path) -> Result<Self, ProtoError> {
        match std::fs::read_to_string(path) {
            Ok(text) if text.contains("-----BEGIN TSS2 PRIVATE KEY-----") => {
                let unseal = UNSEAL.get().ok_or_else(|| {
                    ProtoError::file(
                        path,
                        "this identity is sealed to a TPM and this vmux was built without TPM support (build with --features tpm)",
                    )
                })?;
                let raw = unseal(path, &text).map_err(|e| ProtoError::file(path, e))?;
                Self::from_private(&raw)
                    .map_err(|e| ProtoError::file(path, format!("not a vmux identity: {e}")))
            }
            Ok(text) => {
                let raw =
                    Zeroizing::new(STANDARD.decode(text.trim()).map_err(|e| {
                        ProtoError::file(path, format!("not a vmux identity: {e}"))
                    })?);
                Self::from_private(&raw)
                    .map_err(|e| ProtoError::file(path, format!("not a vmux identity: {e}")))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let id = Self::generate();
                let text = Zeroizing::new(STANDARD.encode(&*id.private) + "\n");
                store::write_atomic(path, text.as_bytes(), 0o600)?;
                Ok(id)
            }
            Err(e) => Err(ProtoError::file(path, e)),
        }
    }

    /// The identity file's text for a plain (unsealed) identity: base64 of the key.
    pub fn to_text(&self) -> Zeroizing<String> {
        Zeroizing::new(STANDARD.encode(&*self.private) + "\n")
    }

    pub fn private(&self) -> &[u8] {
        &self.private
    }

    pub fn public(&self) -> &[u8] {
        &self.public
    }

    pub fn device_id(&self) -> String {
        device_id(&self.public)
    }
}

/// The short, stable id of a device: the first 8 bytes of SHA-256 of its static key, hex.
pub fn device_id(public: &[u8]) -> String {
    hex(&Sha256::digest(public)[..8])
}

/// The fingerprint a person compares: SHA-256 of the static key, base64 without padding.
pub fn fingerprint(public: &[u8]) -> String {
    let d = Sha256::digest(public);
    format!(
        "SHA256:{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(d)
    )
}

pub use crate::keys::key_fingerprint;

pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn x25519_public(private: &[u8; 32]) -> [u8; 32] {
    // snow derives the public half only inside its DH objects; ask one.
    use snow::resolvers::{CryptoResolver, DefaultResolver};
    let mut dh = DefaultResolver
        .resolve_dh(&snow::params::DHChoice::Curve25519)
        .expect("Curve25519 is built in");
    dh.set(private);
    let mut out = [0u8; 32];
    out.copy_from_slice(dh.pubkey());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_key_round_trip_gives_same_public() {
        let id = Identity::generate();
        let again = Identity::from_private(id.private()).unwrap();
        assert_eq!(id.public(), again.public());
        assert_eq!(id.device_id().len(), 16);
    }

    #[test]
    fn hex_round_trip() {
        assert_eq!(unhex(&hex(&[0, 255, 16])).unwrap(), vec![0, 255, 16]);
        assert!(unhex("zz").is_none());
        assert!(unhex("abc").is_none());
    }
}
