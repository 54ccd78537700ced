//! Requests waiting for a person. FIFO; every entry holds the channel its requester
//! waits on, so deciding is just sending on it. Nothing here ever decides by itself.

use crate::SignerError;
use serde::{Deserialize, Serialize};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::{oneshot, Notify};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Approve,
    Deny,
}

/// What a person sees about a pending request (also the `pending --json` shape).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PendingInfo {
    pub id: String,
    /// `pair` or `sign`.
    pub kind: String,
    /// The requesting device's name.
    pub from: String,
    pub from_id: String,
    /// SHA256 fingerprint of the key (sign only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_comment: Option<String>,
    /// The 6-digit pairing code (pair only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requester: Option<String>,
    /// `login`, `sshsig`, `unknown` (sign only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
    /// Requested certificate validity in seconds (cert only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validity_secs: Option<u64>,
    /// Principals the certificate would carry (cert only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principals: Option<Vec<String>>,
    /// Unix seconds.
    pub created: u64,
    pub expires: u64,
}

impl PendingInfo {
    /// One line for a terminal: what, from where, with which key, how old.
    pub fn summary(&self) -> String {
        let age = vmux_proto::now_unix().saturating_sub(self.created);
        let mut s = format!(
            "{}  {:<4}  from {} ({})",
            self.id, self.kind, self.from, self.from_id
        );
        if let Some(c) = &self.code {
            s += &format!("  code {c}");
        }
        if let Some(k) = &self.key {
            s += &format!("  key {k}");
            if let Some(c) = self.key_comment.as_deref().filter(|c| !c.is_empty()) {
                s += &format!(" ({c})");
            }
        }
        if let Some(r) = &self.requester {
            s += &format!("  requester {r}");
        }
        if let Some(p) = &self.purpose {
            s += &format!("  {p}");
        }
        if let Some(d) = &self.destination {
            s += &format!(" → {d}");
        }
        if let Some(v) = self.validity_secs {
            s += &format!("  validity {v}s");
        }
        if let Some(p) = &self.principals {
            s += &format!("  principals {}", p.join(","));
        }
        s + &format!("  {age}s ago")
    }
}

struct Entry {
    info: PendingInfo,
    tx: oneshot::Sender<Decision>,
}

#[derive(Default)]
pub struct Queue {
    entries: Mutex<Vec<Entry>>,
    changed: Notify,
}

/// A submitted request: await `decision` for the person's answer.
pub struct Ticket {
    pub id: String,
    pub decision: oneshot::Receiver<Decision>,
}

impl Queue {
    pub fn submit(&self, info: PendingInfo) -> Ticket {
        let (tx, rx) = oneshot::channel();
        let id = info.id.clone();
        self.entries.lock().unwrap().push(Entry { info, tx });
        self.changed.notify_waiters();
        Ticket { id, decision: rx }
    }

    /// Everything pending, oldest first.
    pub fn pending(&self) -> Vec<PendingInfo> {
        self.entries
            .lock()
            .unwrap()
            .iter()
            .map(|e| e.info.clone())
            .collect()
    }

    pub fn depth(&self) -> usize {
        self.entries.lock().unwrap().len()
    }

    /// Take a request out of the queue without a decision (cancelled, expired, gone).
    pub fn remove(&self, id: &str) -> Option<PendingInfo> {
        let mut q = self.entries.lock().unwrap();
        let pos = q.iter().position(|e| e.info.id == id)?;
        let e = q.remove(pos);
        drop(q);
        self.changed.notify_waiters();
        Some(e.info)
    }

    /// Decide the request whose id is `id` or starts with it. Returns what was decided
    /// and whether the requester was still there to hear it.
    pub fn decide(&self, id: &str, d: Decision) -> Result<(PendingInfo, bool), SignerError> {
        let mut q = self.entries.lock().unwrap();
        let matches: Vec<usize> = q
            .iter()
            .enumerate()
            .filter(|(_, e)| !id.is_empty() && e.info.id.starts_with(id))
            .map(|(i, _)| i)
            .collect();
        let pos = match matches.as_slice() {
            [one] => *one,
            [] => return Err(SignerError::UnknownRequest(id.to_string())),
            _ => {
                if let Some(exact) = q.iter().position(|e| e.info.id == id) {
                    exact
                } else {
                    return Err(SignerError::AmbiguousRequest(id.to_string()));
                }
            }
        };
        let e = q.remove(pos);
        drop(q);
        self.changed.notify_waiters();
        let delivered = e.tx.send(d).is_ok();
        Ok((e.info, delivered))
    }

    /// The oldest pending request, waiting up to `wait` for one to arrive.
    pub async fn next(&self, wait: Duration) -> Option<PendingInfo> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(e) = self.entries.lock().unwrap().first() {
                return Some(e.info.clone());
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: &str) -> PendingInfo {
        PendingInfo {
            id: id.into(),
            kind: "sign".into(),
            from: "a".into(),
            from_id: "x".into(),
            key: None,
            key_comment: None,
            code: None,
            requester: None,
            purpose: None,
            destination: None,
            validity_secs: None,
            principals: None,
            created: 0,
            expires: 0,
        }
    }

    #[tokio::test]
    async fn fifo_prefix_and_wait() {
        let q = std::sync::Arc::new(Queue::default());
        let t1 = q.submit(info("abc1"));
        let _t2 = q.submit(info("abc2"));
        assert_eq!(q.next(Duration::ZERO).await.unwrap().id, "abc1");
        assert!(matches!(
            q.decide("abc", Decision::Deny),
            Err(SignerError::AmbiguousRequest(_))
        ));
        assert!(matches!(
            q.decide("zzz", Decision::Deny),
            Err(SignerError::UnknownRequest(_))
        ));
        let (i, delivered) = q.decide("abc1", Decision::Approve).unwrap();
        assert!(delivered && i.id == "abc1");
        assert_eq!(t1.decision.await.unwrap(), Decision::Approve);
        assert!(q.remove("abc2").is_some());
        assert!(q.next(Duration::from_millis(10)).await.is_none());
        let q2 = q.clone();
        let waiter = tokio::spawn(async move { q2.next(Duration::from_secs(5)).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let _t3 = q.submit(info("later"));
        assert_eq!(waiter.await.unwrap().unwrap().id, "later");
    }
}
