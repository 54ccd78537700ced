//! SSH keys as both sides use them: a private key made ready to sign once, so that a
//! signature costs one curve operation; and the fingerprint people compare.
//!
//! Signatures are made by `ring` (constant-time P-256, P-384 and Ed25519, several times
//! faster than the pure-Rust curves; no OpenSSL). ssh-key stays the format layer: keys
//! are read and written by it, and ring gets their raw scalars once. ring's key pairs
//! do not wipe themselves, so each lives in a [`Wiped`] heap allocation that is zeroed
//! (volatile writes over the whole allocation) before it is freed, and the stack a
//! signature used is scrubbed after it.

use crate::wipe::{scrub_stack, Wiped};
use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair};
use ssh_key::private::{EcdsaKeypair, KeypairData};
use ssh_key::{PrivateKey, Signature};

/// A decrypted private key, ready to sign. Its key material sits in one heap allocation
/// that is wiped before it is freed (drop, `reset`, lock, expiry).
pub struct PreparedKey {
    pair: Pair,
}

enum Pair {
    P256(Wiped<EcdsaKeyPair>),
    P384(Wiped<EcdsaKeyPair>),
    Ed25519(Wiped<Ed25519KeyPair>),
}

/// Why a key cannot be prepared.
#[derive(Debug, thiserror::Error)]
#[error("unsupported key type {0}: ed25519, ecdsa-sha2-nistp256 and ecdsa-sha2-nistp384 only")]
pub struct Unsupported(pub String);

impl PreparedKey {
    pub fn new(key: &PrivateKey) -> Result<Self, Unsupported> {
        let rng = ring::rand::SystemRandom::new();
        let ecdsa = |alg, private: &[u8], public: &[u8]| {
            Wiped::try_new(|| {
                EcdsaKeyPair::from_private_key_and_public_key(alg, private, public, &rng)
            })
            .map_err(|_| Unsupported("invalid ECDSA key pair".into()))
        };
        let pair = match key.key_data() {
            KeypairData::Ecdsa(EcdsaKeypair::NistP256 { private, public }) => Pair::P256(ecdsa(
                &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                private.as_slice(),
                public.as_bytes(),
            )?),
            KeypairData::Ecdsa(EcdsaKeypair::NistP384 { private, public }) => Pair::P384(ecdsa(
                &ring::signature::ECDSA_P384_SHA384_FIXED_SIGNING,
                private.as_slice(),
                public.as_bytes(),
            )?),
            KeypairData::Ed25519(kp) => Pair::Ed25519(
                Wiped::try_new(|| {
                    Ed25519KeyPair::from_seed_and_public_key(
                        kp.private.as_ref(),
                        kp.public.as_ref(),
                    )
                })
                .map_err(|_| Unsupported("invalid Ed25519 key pair".into()))?,
            ),
            _ => return Err(Unsupported(key.algorithm().as_str().to_string())),
        };
        // The constructors' temporaries (the scalar, its hash) were on this stack.
        scrub_stack();
        Ok(PreparedKey { pair })
    }

    /// An SSH signature blob (RFC 4253 §6.6; RFC 5656 §3.1.2 for ECDSA, RFC 8709 §6 for
    /// Ed25519) over `data`.
    pub fn sign(&self, data: &[u8]) -> Result<Vec<u8>, signature::Error> {
        let out = self.sign_inner(data);
        // ring leaves the nonce and intermediate values on the stack it used.
        scrub_stack();
        out
    }

    #[inline(never)]
    fn sign_inner(&self, data: &[u8]) -> Result<Vec<u8>, signature::Error> {
        match &self.pair {
            Pair::P256(k) | Pair::P384(k) => {
                let name: &[u8] = match &self.pair {
                    Pair::P256(_) => b"ecdsa-sha2-nistp256",
                    _ => b"ecdsa-sha2-nistp384",
                };
                let sig = k
                    .sign(&ring::rand::SystemRandom::new(), data)
                    .map_err(|_| signature::Error::new())?;
                Ok(ecdsa_blob(name, sig.as_ref()))
            }
            Pair::Ed25519(k) => {
                let sig = k.sign(data);
                let mut out = Vec::with_capacity(4 + 11 + 4 + 64);
                put_string(&mut out, b"ssh-ed25519");
                put_string(&mut out, sig.as_ref());
                Ok(out)
            }
        }
    }

    /// The SSH public key blob of this key (RFC 4253 §6.6).
    pub fn public_blob(&self) -> Vec<u8> {
        let mut out = vec![];
        match &self.pair {
            Pair::P256(k) | Pair::P384(k) => {
                let (name, curve): (&[u8], &[u8]) = match &self.pair {
                    Pair::P256(_) => (b"ecdsa-sha2-nistp256", b"nistp256"),
                    _ => (b"ecdsa-sha2-nistp384", b"nistp384"),
                };
                put_string(&mut out, name);
                put_string(&mut out, curve);
                put_string(&mut out, k.public_key().as_ref());
            }
            Pair::Ed25519(k) => {
                put_string(&mut out, b"ssh-ed25519");
                put_string(&mut out, k.public_key().as_ref());
            }
        }
        out
    }

    /// Where the key material lives and how large that allocation is: for the tests
    /// that prove it is wiped before it is freed.
    #[doc(hidden)]
    pub fn key_allocation(&self) -> (usize, usize) {
        match &self.pair {
            Pair::P256(k) | Pair::P384(k) => k.allocation(),
            Pair::Ed25519(k) => k.allocation(),
        }
    }
}

fn put_string(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s);
}

fn put_mpint(out: &mut Vec<u8>, n: &[u8]) {
    let n = &n[n.iter().position(|&b| b != 0).unwrap_or(n.len())..];
    let pad = n.first().is_some_and(|b| b & 0x80 != 0);
    out.extend_from_slice(&((n.len() + pad as usize) as u32).to_be_bytes());
    if pad {
        out.push(0);
    }
    out.extend_from_slice(n);
}

/// `string name, string (mpint r, mpint s)` from ring's fixed-width `r || s`.
fn ecdsa_blob(name: &[u8], rs: &[u8]) -> Vec<u8> {
    let (r, s) = rs.split_at(rs.len() / 2);
    let mut inner = Vec::with_capacity(rs.len() + 10);
    put_mpint(&mut inner, r);
    put_mpint(&mut inner, s);
    let mut out = Vec::with_capacity(4 + name.len() + 4 + inner.len());
    put_string(&mut out, name);
    put_string(&mut out, &inner);
    out
}

/// `SHA256:…` of an SSH public key blob, as `ssh-keygen -l` prints it.
///
/// The last blob's answer is kept per thread: every request names its key, nearly always
/// the same one, and for a certificate the decode and re-encode behind a fingerprint
/// cost about 8 % of the agent's CPU per session-certificate signature (perf).
pub fn key_fingerprint(blob: &[u8]) -> String {
    use ssh_key::encoding::Decode;
    thread_local! {
        static LAST: std::cell::RefCell<(Vec<u8>, String)> = const {
            std::cell::RefCell::new((Vec::new(), String::new()))
        };
    }
    if let Some(hit) = LAST.with_borrow(|(b, f)| (!b.is_empty() && b == blob).then(|| f.clone())) {
        return hit;
    }
    let fp = match ssh_key::public::KeyData::decode(&mut &blob[..]) {
        Ok(k) => k.fingerprint(ssh_key::HashAlg::Sha256).to_string(),
        Err(_) => "unparseable key".into(),
    };
    // A hostile client's 256 KiB "key" is not kept.
    if blob.len() <= 4096 {
        LAST.with_borrow_mut(|last| *last = (blob.to_vec(), fp.clone()));
    }
    fp
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
    use ssh_key::Algorithm;

    #[test]
    fn prepared_signatures_verify() {
        use ssh_key::encoding::Encode;
        let mut rng = ssh_key::rand_core::UnwrapErr(ssh_key::getrandom::SysRng);
        for alg in [
            Algorithm::Ed25519,
            Algorithm::Ecdsa {
                curve: ssh_key::EcdsaCurve::NistP256,
            },
            Algorithm::Ecdsa {
                curve: ssh_key::EcdsaCurve::NistP384,
            },
        ] {
            let key = PrivateKey::random(&mut rng, alg).unwrap();
            let prepared = PreparedKey::new(&key).unwrap();
            assert_eq!(
                prepared.public_blob(),
                key.public_key().key_data().encode_vec().unwrap()
            );
            // Many signatures, so that r or s with a high bit (an mpint with a leading
            // zero) and short ones are among them.
            for i in 0..64u32 {
                let data = i.to_be_bytes();
                let blob = prepared.sign(&data).unwrap();
                let sig = Signature::decode(&mut blob.as_slice()).unwrap();
                key.public_key().key_data().verify(&data, &sig).unwrap();
                assert_eq!(sig.encode_vec().unwrap(), blob);
            }
        }
    }

    #[test]
    fn fingerprints_follow_the_blob_not_the_last_answer() {
        use ssh_key::encoding::Encode;
        let mut rng = ssh_key::rand_core::UnwrapErr(ssh_key::getrandom::SysRng);
        let blobs: Vec<Vec<u8>> = (0..2)
            .map(|_| {
                let k = PrivateKey::random(&mut rng, Algorithm::Ed25519).unwrap();
                k.public_key().key_data().encode_vec().unwrap()
            })
            .collect();
        let expect = |b: &[u8]| {
            ssh_key::public::KeyData::decode(&mut &b[..])
                .unwrap()
                .fingerprint(ssh_key::HashAlg::Sha256)
                .to_string()
        };
        for b in [&blobs[0], &blobs[0], &blobs[1], &blobs[0]] {
            assert_eq!(key_fingerprint(b), expect(b));
        }
        // One byte changed: not the kept answer.
        let mut bad = blobs[0].clone();
        *bad.last_mut().unwrap() ^= 1;
        assert_ne!(key_fingerprint(&bad), expect(&blobs[0]));
        assert_eq!(key_fingerprint(&[]), "unparseable key");
    }
}
