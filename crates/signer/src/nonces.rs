//! What the signer remembers of the nonces it accepted (invariant 6, ARCHITECTURE.md):
//! in memory, bounded, and in `signer/replay.log` so a restart still refuses a replay.
//! `request::window` checks each request against it.

use std::collections::HashSet;
use vmux_proto::now_unix;

/// The longest request window any configuration may allow (ARCHITECTURE.md, invariants: at most 60 s).
pub const MAX_WINDOW_SECS: u64 = 60;
/// The most clock skew any configuration may allow.
pub const MAX_SKEW_SECS: u64 = 120;

/// At most this many nonces are remembered. Past it the oldest are forgotten and the
/// replay floor rises to their issue time, so what they would replay is refused as
/// expired instead: memory stays bounded (about 0.5 MiB) whatever the request rate,
/// and only a request that spent longer on its way than the forgotten ones have lived
/// (seconds, at thousands of requests a second) is refused for it.
pub const MAX_NONCES: usize = 16 * 1024;

/// Nonces in arrival order, so forgetting the expired ones costs only what expired
/// (not a scan of every nonce on every request). A nonce is remembered as 64 bits of
/// SHA-256(device ‖ nonce): two different nonces share them with a probability of
/// 2^-64 per pair, and then a request is refused, never let through.
#[derive(Default)]
pub(crate) struct SeenNonces {
    set: HashSet<u64>,
    /// (expires, issued, key) in arrival order.
    order: std::collections::VecDeque<(u64, u64, u64)>,
    /// Requests issued at or before this second are refused (see [`MAX_NONCES`]).
    floor: u64,
    /// `signer/replay.log`: `EXPIRES HEX` per accepted nonce (and `floor ISSUED`), so
    /// that a request from before a restart is still refused after it (until its window
    /// closes). Rewritten with only the live entries once it holds many dead ones.
    file: Option<std::fs::File>,
    path: Option<std::path::PathBuf>,
    /// Lines appended since the file was last rewritten.
    appended: usize,
    /// The floor the file says.
    floor_written: u64,
}

/// SHA-256 of device id and nonce: what is remembered of a nonce (its first 64 bits).
pub(crate) fn nonce_key(device: &str, nonce: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest([device.as_bytes(), b"\0", nonce].concat())[..8].to_vec()
}

pub(crate) fn key64(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.get(..8)?.try_into().ok()?))
}

impl SeenNonces {
    /// The nonces of earlier runs whose windows are still open; the file is rewritten
    /// with only those, then appended to.
    pub(crate) fn load(home: &crate::state::SignerHome) -> Result<Self, crate::SignerError> {
        let path = home.replay();
        let now = now_unix();
        let mut seen = SeenNonces::default();
        if let Ok(text) = std::fs::read_to_string(&path) {
            for line in text.lines() {
                let Some((a, b)) = line.split_once(' ') else {
                    continue;
                };
                if a == "floor" {
                    seen.floor = seen.floor.max(b.parse().unwrap_or(0));
                    continue;
                }
                // Older files hold the whole SHA-256; the first 64 bits are the key.
                let (Ok(exp), Some(key)) = (
                    a.parse::<u64>(),
                    vmux_proto::identity::unhex(b).as_deref().and_then(key64),
                ) else {
                    continue;
                };
                if exp >= now {
                    // Issue time unknown: as old as it can be (expiry less the window).
                    seen.insert(key, exp, exp.saturating_sub(MAX_WINDOW_SECS), 0);
                }
            }
        }
        seen.path = Some(path.clone());
        seen.rewrite()?;
        Ok(seen)
    }

    /// Write the live entries (and the floor) afresh, atomically, then append to it.
    fn rewrite(&mut self) -> Result<(), vmux_proto::ProtoError> {
        let Some(path) = self.path.clone() else {
            return Ok(());
        };
        let mut keep = format!("floor {}\n", self.floor);
        for (exp, _, key) in &self.order {
            keep += &format!("{exp} {key:016x}\n");
        }
        vmux_proto::store::write_atomic(&path, keep.as_bytes(), 0o600)?;
        self.floor_written = self.floor;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| vmux_proto::ProtoError::file(&path, e))?;
        self.file = Some(file);
        self.appended = 0;
        Ok(())
    }

    pub(crate) fn persist(&mut self, key: &[u8], expires: u64) -> std::io::Result<()> {
        use std::io::Write;
        // Mostly dead lines: start the file again (its cost is spread over the appends
        // that made it due, so each request pays the same).
        if self.appended > 4 * MAX_NONCES.max(self.order.len()) {
            self.rewrite().map_err(std::io::Error::other)?;
        }
        let Some(k) = key64(key) else {
            return Ok(());
        };
        let line = if self.floor != self.floor_written {
            self.floor_written = self.floor;
            format!("floor {}\n{expires} {k:016x}\n", self.floor)
        } else {
            format!("{expires} {k:016x}\n")
        };
        self.appended += 1;
        match self.file.as_mut() {
            Some(f) => f.write_all(line.as_bytes()),
            None => Ok(()),
        }
    }
}

impl SeenNonces {
    /// Whether a request issued at `issued` is below the replay floor.
    pub(crate) fn below_floor(&self, issued: u64) -> bool {
        issued <= self.floor && self.floor > 0
    }

    /// Remember `key` until `expires`; false if it was seen before. Forgets nonces
    /// that expired before `forget_before`, and the oldest past [`MAX_NONCES`].
    pub(crate) fn insert(
        &mut self,
        key: u64,
        expires: u64,
        issued: u64,
        forget_before: u64,
    ) -> bool {
        while self
            .order
            .front()
            .is_some_and(|(exp, _, _)| *exp < forget_before)
        {
            if let Some((_, _, k)) = self.order.pop_front() {
                self.set.remove(&k);
            }
        }
        if self.set.contains(&key) {
            return false;
        }
        while self.order.len() >= MAX_NONCES {
            if let Some((_, iss, k)) = self.order.pop_front() {
                self.set.remove(&k);
                self.floor = self.floor.max(iss);
            }
        }
        self.set.insert(key);
        self.order.push_back((expires, issued, key));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_is_bounded_and_a_forgotten_nonce_is_still_refused() {
        let mut s = SeenNonces::default();
        let now = 1_000_000;
        for i in 0..(MAX_NONCES as u64 + 100) {
            assert!(s.insert(i, now + 60, now - 10 + i / 10_000, 0));
        }
        assert_eq!(s.order.len(), MAX_NONCES);
        assert!(s.set.len() <= MAX_NONCES);
        // The first nonce was forgotten; its issue time is now below the floor.
        assert!(!s.set.contains(&0));
        assert!(s.below_floor(now - 10));
        // A remembered one is refused as a replay; a fresh one from now is accepted.
        assert!(!s.insert(MAX_NONCES as u64 + 50, now + 60, now, 0));
        assert!(!s.below_floor(now));
        assert!(s.insert(u64::MAX, now + 60, now, 0));
    }
}
