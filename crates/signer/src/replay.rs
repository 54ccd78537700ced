//! Replay protection: every request carries a nonce and an issued/expires window; the
//! signer refuses expired windows and nonces it has seen (DESIGN.md invariant 6).

use crate::serve::Signer;
use std::collections::HashSet;
use vmux_proto::{now_unix, ErrorCode};

impl Signer {
    /// Refuse expired windows and nonces seen before (DESIGN.md invariant 4).
    pub(crate) fn check_window_and_nonce(
        &self,
        issued: u64,
        expires: u64,
        nonce: &[u8],
    ) -> Result<(), ErrorCode> {
        let now = now_unix();
        let c = &self.config;
        if expires < now
            || issued > now + c.max_skew_secs
            || expires.saturating_sub(issued) > c.max_window_secs
        {
            return Err(ErrorCode::RequestExpired);
        }
        if nonce.len() < 16 {
            return Err(ErrorCode::ReplayDetected);
        }
        if !self
            .seen
            .lock()
            .unwrap()
            .insert(nonce, expires, now.saturating_sub(c.max_skew_secs))
        {
            return Err(ErrorCode::ReplayDetected);
        }
        Ok(())
    }
}

/// Nonces in arrival order, so forgetting the expired ones costs only what expired
/// (not a scan of every nonce on every request).
#[derive(Default)]
pub(crate) struct SeenNonces {
    set: HashSet<Vec<u8>>,
    order: std::collections::VecDeque<(u64, Vec<u8>)>,
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
