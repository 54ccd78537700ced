//! Replay protection: every request carries a nonce and an issued/expires window; the
//! signer refuses expired windows and nonces it has seen (DESIGN.md invariant 6).

use crate::serve::Signer;
use std::collections::{HashMap, HashSet};
use vmux_proto::{now_unix, ErrorCode};

/// The longest request window any configuration may allow (DESIGN.md: at most 60 s).
pub const MAX_WINDOW_SECS: u64 = 60;
/// Nonce sizes accepted, in bytes.
pub const NONCE_LEN: std::ops::RangeInclusive<usize> = 16..=64;

/// Per device, the latest `issued` time seen, kept on disk (`signer/replay.json`) so
/// that after a restart a request from before it is refused: the in-memory nonces are
/// gone then, the floor is not.
#[derive(Default, Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct Floors(pub HashMap<String, u64>);

impl Signer {
    /// Refuse expired windows and nonces seen before (DESIGN.md invariant 6), also
    /// across restarts.
    pub(crate) fn check_window_and_nonce(
        &self,
        device: &str,
        issued: u64,
        expires: u64,
        nonce: &[u8],
    ) -> Result<(), ErrorCode> {
        let now = now_unix();
        let c = &self.config;
        if expires < now
            || issued > now + c.max_skew_secs
            || expires < issued
            || expires - issued > c.max_window_secs.min(MAX_WINDOW_SECS)
        {
            return Err(ErrorCode::RequestExpired);
        }
        if !NONCE_LEN.contains(&nonce.len()) {
            return Err(ErrorCode::ReplayDetected);
        }
        let mut seen = self.seen.lock().unwrap();
        if seen
            .floor_at_start
            .get(device)
            .is_some_and(|f| issued <= *f)
        {
            return Err(ErrorCode::ReplayDetected);
        }
        if !seen.insert(nonce, expires, now.saturating_sub(c.max_skew_secs)) {
            return Err(ErrorCode::ReplayDetected);
        }
        // Move the device's floor on disk when a new second starts (at most one
        // write a second per device).
        let stored = seen.floors.0.get(device).copied().unwrap_or(0);
        if issued > stored {
            seen.floors.0.insert(device.to_string(), issued);
            if let Err(e) = vmux_proto::store::write_json(&self.home.replay(), &seen.floors) {
                tracing::error!("{e}");
                return Err(ErrorCode::Internal);
            }
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
    /// What `replay.json` said when the signer started: requests issued at or before
    /// these times were (or could have been) seen by an earlier run.
    pub(crate) floor_at_start: HashMap<String, u64>,
    pub(crate) floors: Floors,
}

impl SeenNonces {
    pub(crate) fn load(home: &crate::state::SignerHome) -> Result<Self, crate::SignerError> {
        let floors: Floors = vmux_proto::store::read_json(&home.replay())?.unwrap_or_default();
        Ok(SeenNonces {
            floor_at_start: floors.0.clone(),
            floors,
            ..Default::default()
        })
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
