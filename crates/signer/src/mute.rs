//! Deny and mute: a person who denied a request can mute its device and requester chain
//! for a while; later requests from them are denied at once, logged as muted, and
//! counted on the sheet. Muting only ever denies: nothing here approves anything, and a
//! mute lasts at most until the signer restarts.

use serde::{Deserialize, Serialize};
use std::sync::Mutex;
use vmux_proto::now_unix;

/// One mute: requests from `device_id` whose requester chain reads `requester`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Mute {
    pub device_id: String,
    pub device: String,
    /// The requester chain without process ids (`ssh ← git ← zsh`).
    pub requester: String,
    /// Unix seconds; `None`: until the signer restarts.
    pub until: Option<u64>,
    /// Requests denied by it so far.
    pub denied: u64,
}

#[derive(Default)]
pub struct Mutes {
    list: Mutex<Vec<Mute>>,
}

/// What a mute matches for a request's requester claim (none claimed is a chain too).
fn key(requester: Option<&str>) -> String {
    requester.map_or_else(|| "(no requester named)".to_string(), chain)
}

/// A requester chain as a mute matches it: the process ids dropped, since every run of
/// `git pull` has new ones.
pub fn chain(requester: &str) -> String {
    let mut out = String::with_capacity(requester.len());
    let mut rest = requester;
    while let Some(open) = rest.find(" (") {
        let after = &rest[open + 2..];
        match after.find(')') {
            Some(close) if after[..close].chars().all(|c| c.is_ascii_digit()) => {
                out.push_str(&rest[..open]);
                rest = &after[close + 1..];
            }
            _ => {
                out.push_str(&rest[..open + 2]);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

impl Mutes {
    /// Mute `device_id` + `requester` for `secs` (`None`: until restart).
    pub fn add(&self, device_id: &str, device: &str, requester: Option<&str>, secs: Option<u64>) {
        let mut l = self.list.lock().unwrap();
        let requester = key(requester);
        l.retain(|m| !(m.device_id == device_id && m.requester == requester));
        l.push(Mute {
            device_id: device_id.into(),
            device: device.into(),
            requester,
            until: secs.map(|s| now_unix() + s),
            denied: 0,
        });
    }

    /// Whether a request from `device_id` by `requester` is muted now; counted when it is.
    pub fn check(&self, device_id: &str, requester: Option<&str>) -> Option<Mute> {
        let requester = key(requester);
        let now = now_unix();
        let mut l = self.list.lock().unwrap();
        l.retain(|m| m.until.is_none_or(|u| u > now));
        let m = l
            .iter_mut()
            .find(|m| m.device_id == device_id && m.requester == requester)?;
        m.denied += 1;
        Some(m.clone())
    }

    /// When the mute matching a request ends (`None`: at restart, or no mute), uncounted.
    pub fn until(&self, device_id: &str, requester: Option<&str>) -> Option<u64> {
        let requester = key(requester);
        let l = self.list.lock().unwrap();
        l.iter()
            .find(|m| m.device_id == device_id && m.requester == requester)
            .and_then(|m| m.until)
    }

    /// Whether a request matches a mute in force (not counted).
    pub fn matches(&self, device_id: &str, requester: Option<&str>) -> bool {
        let r = key(requester);
        self.list()
            .iter()
            .any(|m| m.device_id == device_id && m.requester == r)
    }

    /// Count a request a mute denied after it was queued.
    pub fn count(&self, device_id: &str, requester: Option<&str>) {
        let r = key(requester);
        let mut l = self.list.lock().unwrap();
        if let Some(m) = l
            .iter_mut()
            .find(|m| m.device_id == device_id && m.requester == r)
        {
            m.denied += 1;
        }
    }

    /// The mutes in force.
    pub fn list(&self) -> Vec<Mute> {
        let now = now_unix();
        let mut l = self.list.lock().unwrap();
        l.retain(|m| m.until.is_none_or(|u| u > now));
        l.clone()
    }

    /// Lift every mute; how many there were.
    pub fn clear(&self) -> usize {
        std::mem::take(&mut *self.list.lock().unwrap()).len()
    }

    /// Requests denied by mutes in force.
    pub fn denied(&self) -> u64 {
        self.list().iter().map(|m| m.denied).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutes_match_the_chain_without_pids_and_expire() {
        assert_eq!(chain("ssh (4242) ← git (17) ← zsh"), "ssh ← git ← zsh");
        assert_eq!(chain("weird (name) ← x"), "weird (name) ← x");
        let m = Mutes::default();
        m.add("d1", "laptop", Some("ssh (1) ← git ← zsh"), Some(300));
        assert!(m.check("d1", Some("ssh (99) ← git ← zsh")).is_some());
        assert!(m.check("d1", Some("ssh (99) ← make ← zsh")).is_none());
        assert!(m.check("d2", Some("ssh (99) ← git ← zsh")).is_none());
        assert!(m.check("d1", None).is_none());
        m.add("d1", "laptop", None, None);
        assert!(
            m.check("d1", None).is_some(),
            "no requester named is muted as such"
        );
        assert_eq!(m.denied(), 2);
        assert!(m.matches("d1", Some("ssh (5) ← git ← zsh")));
        assert_eq!(m.denied(), 2, "matching does not count");
        assert_eq!(m.clear(), 2);
        assert!(!m.matches("d1", Some("ssh (5) ← git ← zsh")));
        assert_eq!(m.denied(), 0);
        m.add("d1", "laptop", Some("x"), Some(0));
        assert!(m.list().is_empty(), "an expired mute is gone");
    }
}
