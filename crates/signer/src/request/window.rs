//! Replay protection: every request carries a nonce and an issued/expires window; the
//! signer refuses expired windows and nonces it has seen (invariant 6).

use super::Refusal;
use crate::signer::Signer;
use std::collections::HashSet;
use vmux_proto::{now_unix, ErrorCode};

/// The longest request window any configuration may allow (DESIGN.md: at most 60 s).
pub const MAX_WINDOW_SECS: u64 = 60;
/// The most clock skew any configuration may allow.
pub const MAX_SKEW_SECS: u64 = 120;
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
        return Err(Refusal::new(ErrorCode::ReplayDetected).why("the request's nonce has the wrong size"));
    }
    // Nonces are remembered per device (a hash of device and nonce).
    let key = nonce_key(device, nonce);
    let mut seen = signer.seen.lock().unwrap();
    if !seen.insert(&key, expires, now.saturating_sub(skew)) {
        return Err(Refusal::new(ErrorCode::ReplayDetected).why("this request was seen before (a replay)"));
    }
    // Written before the request goes on, so a restart (or a killed process: the
    // bytes are in the kernel) still knows it.
    if let Err(e) = seen.persist(&key, expires) {
        tracing::error!("{}: {e}", signer.home.replay().display());
        return Err(Refusal::new(ErrorCode::Internal).why("the signer could not write its replay log"));
    }
    Ok(())
}

/// Nonces in arrival order, so forgetting the expired ones costs only what expired
/// (not a scan of every nonce on every request).
#[derive(Default)]
pub(crate) struct SeenNonces {
    set: HashSet<Vec<u8>>,
    order: std::collections::VecDeque<(u64, Vec<u8>)>,
    /// `signer/replay.log`: `EXPIRES HEX` per accepted nonce, so that a request from
    /// before a restart is still refused after it (until its window closes).
    file: Option<std::fs::File>,
}

/// SHA-256 of device id and nonce: what is remembered of a nonce.
fn nonce_key(device: &str, nonce: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest([device.as_bytes(), b"\0", nonce].concat()).to_vec()
}

impl SeenNonces {
    /// The nonces of earlier runs whose windows are still open; the file is rewritten
    /// with only those, then appended to.
    pub(crate) fn load(home: &crate::state::SignerHome) -> Result<Self, crate::SignerError> {
        let path = home.replay();
        let now = now_unix();
        let mut seen = SeenNonces::default();
        let mut keep = String::new();
        if let Ok(text) = std::fs::read_to_string(&path) {
            for line in text.lines() {
                let Some((exp, key)) = line.split_once(' ') else {
                    continue;
                };
                let (Ok(exp), Some(key)) = (exp.parse::<u64>(), vmux_proto::identity::unhex(key))
                else {
                    continue;
                };
                if exp >= now && seen.insert(&key, exp, 0) {
                    keep += &format!("{line}\n");
                }
            }
        }
        vmux_proto::store::write_atomic(&path, keep.as_bytes(), 0o600)?;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| vmux_proto::ProtoError::file(&path, e))?;
        seen.file = Some(file);
        Ok(seen)
    }

    fn persist(&mut self, key: &[u8], expires: u64) -> std::io::Result<()> {
        use std::io::Write;
        match self.file.as_mut() {
            Some(f) => {
                f.write_all(format!("{expires} {}\n", vmux_proto::identity::hex(key)).as_bytes())
            }
            None => Ok(()),
        }
    }
}

impl SeenNonces {
    /// Remember `nonce` until `expires`; false if it was seen before. Forgets nonces
    /// that expired before `forget_before`.
    fn insert(&mut self, nonce: &[u8], expires: u64, forget_before: u64) -> bool {
        while self
            .order
            .front()
            .is_some_and(|(exp, _)| *exp < forget_before)
        {
            if let Some((_, n)) = self.order.pop_front() {
                self.set.remove(&n);
            }
        }
        if !self.set.insert(nonce.to_vec()) {
            return false;
        }
        self.order.push_back((expires, nonce.to_vec()));
        true
    }
}
