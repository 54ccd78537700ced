//! Replay protection: every request carries a nonce and an issued/expires window; the
//! signer refuses expired windows and nonces it has seen (invariant 6).

use super::Refusal;
use crate::nonces::{key64, nonce_key};
use crate::signer::Signer;
use vmux_proto::{now_unix, ErrorCode};

pub use crate::nonces::{MAX_SKEW_SECS, MAX_WINDOW_SECS};
/// Nonce sizes accepted, in bytes.
pub const NONCE_LEN: std::ops::RangeInclusive<usize> = 16..=64;

/// Refuse expired windows and nonces seen before (ARCHITECTURE.md, invariant 6), also
/// across restarts.
pub(crate) fn check(
    signer: &Signer,
    device: &str,
    issued: u64,
    expires: u64,
    nonce: &[u8],
) -> Result<(), Refusal> {
    let now = now_unix();
    let c = &signer.config;
    let skew = c.max_skew_secs.min(MAX_SKEW_SECS);
    let window = c.max_window_secs.min(MAX_WINDOW_SECS);
    let expired = |why: String| Err(Refusal::new(ErrorCode::RequestExpired).why(why));
    if expires < now {
        return expired(format!(
            "the request expired {} s before it arrived (are both clocks right?)",
            now - expires
        ));
    }
    if issued > now + skew {
        return expired(format!(
            "the request is dated {} s in the signer's future (more than the {skew} s of clock skew allowed)",
            issued - now
        ));
    }
    if expires < issued || expires - issued > window {
        return expired(format!("the request's window is longer than {window} s"));
    }
    if !NONCE_LEN.contains(&nonce.len()) {
        return Err(
            Refusal::new(ErrorCode::ReplayDetected).why("the request's nonce has the wrong size")
        );
    }
    // Nonces are remembered per device (a hash of device and nonce).
    let key = nonce_key(device, nonce);
    let mut seen = signer.seen.lock().unwrap();
    // Older than the nonces forgotten to bound memory: refused as expired.
    if seen.below_floor(issued) {
        return expired("the request is older than the nonces this signer still remembers".into());
    }
    let Some(k) = key64(&key) else {
        return Err(Refusal::new(ErrorCode::Internal).why("a nonce could not be remembered"));
    };
    if !seen.insert(k, expires, issued, now.saturating_sub(skew)) {
        return Err(
            Refusal::new(ErrorCode::ReplayDetected).why("this request was seen before (a replay)")
        );
    }
    // Written before the request goes on, so a restart (or a killed process: the
    // bytes are in the kernel) still knows it.
    if let Err(e) = seen.persist(&key, expires) {
        tracing::error!("{}: {e}", signer.home.replay().display());
        return Err(
            Refusal::new(ErrorCode::Internal).why("the signer could not write its replay log")
        );
    }
    Ok(())
}
