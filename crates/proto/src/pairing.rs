//! Pairing: a short authentication string with a commitment, so that a man in the
//! middle cannot choose a matching code.
//!
//! 1. The agent (initiator) and the signer (responder) run Noise XX with empty
//!    payloads; each now holds the handshake hash `h` of *its own* handshake. Neither
//!    trusts the other's static key yet.
//! 2. The agent sends `PairRequest` (its device name).
//! 3. The signer draws a random 32-byte `Nb` and sends `PairCommit { commitment:
//!    SHA-256("vmux pair commit v2" ‖ h ‖ Nb) }`. It is bound to `h` and to `Nb`,
//!    which the signer cannot change any more.
//! 4. The agent draws `Na` and sends `PairReveal { nonce: Na }`.
//! 5. The signer sends `PairOpen { nonce: Nb }`. The agent checks that it opens the
//!    commitment; if not, the pairing is aborted (someone tampered).
//! 6. Both compute the code: SHA-256("vmux pairing code v2" ‖ h ‖ Na ‖ Nb), first 8
//!    bytes as a number, mod 10^6, six digits. The agent shows it; the person types it
//!    on the signer (`vmux signer approve --code`).
//! 7. The signer sends `PairAccepted` and shows its own code, SHA-256("vmux signer code
//!    v3" ‖ h ‖ Na ‖ Nb) the same way; the person types it on the workstation, which
//!    compares it with the one it computed. Only then does the agent send `PairConfirm {
//!    proof: SHA-256("vmux pair confirm v3" ‖ h ‖ Na ‖ Nb) }`; the signer pins the agent's
//!    key when the proof is right, and the agent pins the signer's once the signer says
//!    so. So each side is authenticated to the person: a rogue signer found by mDNS, or
//!    one in the middle, shows no code the person can type on the workstation, and a
//!    signer that only answers "approved" is pinned by nobody.
//!
//! Why a man in the middle gains nothing by grinding: he runs one handshake with each
//! side (`h1` with the agent, `h2` with the signer). Toward the agent he must commit to
//! his `Nb1` before he sees `Na1`; toward the signer he must reveal his `Na2` before he
//! sees `Nb2`. So each code depends on a value he did not know when he had to choose:
//! the two codes agree with probability 10^-6 per attempt, and every failed attempt is a
//! pairing the person sees fail on both sides.

use crate::identity::hex;
use sha2::{Digest, Sha256};

/// A random 32-byte pairing nonce.
pub fn nonce() -> [u8; 32] {
    crate::random_bytes()
}

/// The signer's commitment to `nb` for the handshake `h`.
pub fn commitment(h: &[u8], nb: &[u8]) -> Vec<u8> {
    Sha256::digest([b"vmux pair commit v2".as_slice(), h, nb].concat()).to_vec()
}

/// Whether `nb` opens `commitment` for `h` (constant time).
pub fn opens(commitment_sent: &[u8], h: &[u8], nb: &[u8]) -> bool {
    let c = commitment(h, nb);
    c.len() == commitment_sent.len()
        && c.iter()
            .zip(commitment_sent)
            .fold(0u8, |a, (x, y)| a | (x ^ y))
            == 0
}

/// The six-digit code both screens show.
pub fn code(h: &[u8], na: &[u8], nb: &[u8]) -> String {
    let d = Sha256::digest([b"vmux pairing code v2".as_slice(), h, na, nb].concat());
    let n = u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]) % 1_000_000;
    format!("{n:06}")
}

/// The six-digit code the signer shows once the workstation's code matched, for the
/// person to type on the workstation.
pub fn signer_code(h: &[u8], na: &[u8], nb: &[u8]) -> String {
    let d = Sha256::digest([b"vmux signer code v3".as_slice(), h, na, nb].concat());
    let n = u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]) % 1_000_000;
    format!("{n:06}")
}

/// The agent's proof that the person typed the signer's code for this transcript.
pub fn confirm(h: &[u8], na: &[u8], nb: &[u8]) -> Vec<u8> {
    Sha256::digest([b"vmux pair confirm v3".as_slice(), h, na, nb].concat()).to_vec()
}

/// Constant-time equality (codes and proofs).
pub fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A short label of the handshake, for logs on both sides.
pub fn label(h: &[u8]) -> String {
    hex(&h[..h.len().min(4)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commitment_opens_only_with_its_nonce_and_handshake() {
        let (h, nb) = ([1u8; 32], nonce());
        let c = commitment(&h, &nb);
        assert!(opens(&c, &h, &nb));
        assert!(!opens(&c, &[2u8; 32], &nb));
        assert!(!opens(&c, &h, &nonce()));
        assert!(!opens(&c[..31], &h, &nb));
        let na = nonce();
        assert_eq!(code(&h, &na, &nb).len(), 6);
        assert_eq!(code(&h, &na, &nb), code(&h, &na, &nb));
        assert_ne!(code(&h, &na, &nb), code(&[2u8; 32], &na, &nb));
        assert_ne!(signer_code(&h, &na, &nb), code(&h, &na, &nb));
        assert!(same(&confirm(&h, &na, &nb), &confirm(&h, &na, &nb)));
        assert!(!same(
            &confirm(&h, &na, &nb),
            &confirm(&[3u8; 32], &na, &nb)
        ));
    }
}
