//! Requests waiting for a person. FIFO; the signer gives every entry an id of its own
//! (random, never reused) and a digest of exactly what is displayed. A decision names
//! both, and reaches only the task that queued that entry, so a peer can neither swap
//! the request behind an id nor reuse an id. Nothing here ever decides by itself.

use crate::SignerError;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::{oneshot, Notify};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Approve,
    Deny,
    /// Approved, but user verification (PAM) failed: refused as `presenceFailed`.
    Unverified,
    /// Denied because a person muted its device and requester ([`crate::mute`]).
    Muted,
}

/// What the deciding surface sends to the waiting request: the decision and the digest
/// of the display it was made on (checked again before the keystore signs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub decision: Decision,
    pub digest: String,
}

/// What a person sees about a pending request (also the `pending --json` shape). Every
/// string that came from a peer or a local process is already capped and escaped.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PendingInfo {
    /// The signer's id for this entry.
    pub id: String,
    /// `pair`, `sign` or `cert`.
    pub kind: String,
    /// The requesting device's name (its own claim about itself).
    pub from: String,
    pub from_id: String,
    /// `agent` or `client`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// The requesting device's own id for the request: a label, echoed in the answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Parsed from the data: login, git signature, file signature, signature (ns),
    /// unrecognised data, session certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
    /// The user the login is for (parsed from the data).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Where it goes, with who vouches for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
    /// `verified`, `new`, `changed`, `forwarded` or `unknown`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_quality: Option<String>,
    /// The host name the requesting device claims (a claim, never a fact).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_claim: Option<String>,
    /// The server's host key fingerprint, from a verified binding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_key: Option<String>,
    /// Something the person must read before deciding (a changed host key, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
    /// The calling process chain, as the requesting device claims it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requester: Option<String>,
    /// SHA256 fingerprint of the key that would sign.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_comment: Option<String>,
    /// Where the key lives: `software`, `tpm`, `pkcs11`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_store: Option<String>,
    /// The pairing code (pair only): approved by typing it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// The signer's own code (pair only, once the workstation's code matched): the
    /// person types it on the workstation to finish the pairing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer_code: Option<String>,
    /// Certificate validity in seconds (cert only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validity_secs: Option<u64>,
    /// Principals the certificate would carry (cert only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principals: Option<Vec<String>>,
    /// What approving grants, in words (cert only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grants: Option<String>,
    /// User verification that runs after Approve (`pam`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<String>,
    /// SHA-256 of the data to sign, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_digest: Option<String>,
    /// SHA-256 over everything above: what a decision is bound to.
    #[serde(default)]
    pub digest: String,
    /// Unix seconds.
    pub created: u64,
    pub expires: u64,
}

impl PendingInfo {
    /// The digest of this display (every field but the digest itself).
    pub fn compute_digest(&self) -> String {
        let mut shown = self.clone();
        shown.digest = String::new();
        let bytes = serde_json::to_vec(&shown).expect("pending info serializes");
        vmux_proto::identity::hex(&Sha256::digest(bytes))
    }
}

fn listable(p: &PendingInfo) -> bool {
    p.kind == "sign" && p.verify.is_none()
}

/// The digest of a displayed list: SHA-256 over each entry's display digest, in order.
pub fn list_digest(list: &[PendingInfo]) -> String {
    let mut h = Sha256::new();
    h.update(b"vmux list v1");
    for p in list {
        h.update(p.compute_digest().as_bytes());
    }
    vmux_proto::identity::hex(&h.finalize())
}

struct Entry {
    info: PendingInfo,
    tx: oneshot::Sender<Verdict>,
}

/// Why an entry left the queue without a decision from a surface that showed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gone {
    Approved,
    Denied,
    /// Cancelled by its requester, expired, or its device went away / was revoked.
    Withdrawn(String),
}

#[derive(Default)]
pub struct Queue {
    entries: Mutex<Vec<Entry>>,
    /// What became of recent entries, for surfaces that showed them.
    recent: Mutex<VecDeque<(String, Gone)>>,
    changed: Notify,
}

/// A submitted request: await `decision` for the person's answer.
pub struct Ticket {
    pub id: String,
    pub digest: String,
    pub decision: oneshot::Receiver<Verdict>,
}

const RECENT: usize = 64;

impl Queue {
    /// Queue `info` under a fresh id of the signer's; the digest is computed here.
    pub fn submit(&self, mut info: PendingInfo) -> Ticket {
        let (tx, rx) = oneshot::channel();
        info.id = vmux_proto::identity::hex(&vmux_proto::random_bytes::<16>());
        info.digest = info.compute_digest();
        let (id, digest) = (info.id.clone(), info.digest.clone());
        self.entries.lock().unwrap().push(Entry { info, tx });
        self.changed.notify_waiters();
        Ticket {
            id,
            digest,
            decision: rx,
        }
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

    /// The sign requests that may be approved together, oldest first, when there are
    /// two or more: signatures only (never a certificate or a pairing), and none that
    /// asks for user verification (that is typed per request).
    pub fn list(&self) -> Option<Vec<PendingInfo>> {
        let l: Vec<PendingInfo> = self
            .entries
            .lock()
            .unwrap()
            .iter()
            .filter(|e| listable(&e.info))
            .map(|e| e.info.clone())
            .collect();
        (l.len() >= 2).then_some(l)
    }

    /// Decide every entry of a displayed list at once, if each is still exactly what
    /// was displayed: `shown` is the list's digest ([`list_digest`]) over `ids`. Nothing
    /// is decided when one entry changed or left. Only `crate::decide` calls this.
    pub(crate) fn decide_list(
        &self,
        ids: &[String],
        shown: &str,
        d: Decision,
    ) -> Result<Vec<(PendingInfo, bool)>, SignerError> {
        let mut q = self.entries.lock().unwrap();
        let mut picked = vec![];
        for id in ids {
            let e = q
                .iter()
                .find(|e| &e.info.id == id && listable(&e.info))
                .ok_or_else(|| SignerError::ListChanged(shown.to_string()))?;
            picked.push(e.info.clone());
        }
        if picked.len() < 2 || list_digest(&picked) != shown {
            return Err(SignerError::ListChanged(shown.to_string()));
        }
        let mut taken = vec![];
        for id in ids {
            if let Some(pos) = q.iter().position(|e| &e.info.id == id) {
                taken.push(q.remove(pos));
            }
        }
        drop(q);
        Ok(taken
            .into_iter()
            .map(|e| {
                let digest = e.info.digest.clone();
                self.deliver(e, d, &digest)
            })
            .collect())
    }

    /// Wait until the queue changes (or `wait` passes).
    pub async fn changed(&self, wait: Duration) {
        let _ = tokio::time::timeout(wait, self.changed.notified()).await;
    }

    /// What became of `id` once it left the queue (`None` while pending or unknown).
    pub fn outcome(&self, id: &str) -> Option<Gone> {
        self.recent
            .lock()
            .unwrap()
            .iter()
            .find(|(i, _)| i == id)
            .map(|(_, g)| g.clone())
    }

    fn remember(&self, id: &str, gone: Gone) {
        let mut r = self.recent.lock().unwrap();
        if r.len() >= RECENT {
            r.pop_front();
        }
        r.push_back((id.to_string(), gone));
    }

    /// Take a request out of the queue without a decision (cancelled, expired, gone).
    pub fn remove(&self, id: &str, why: &str) -> Option<PendingInfo> {
        let mut q = self.entries.lock().unwrap();
        let pos = q.iter().position(|e| e.info.id == id)?;
        let e = q.remove(pos);
        drop(q);
        self.remember(id, Gone::Withdrawn(why.to_string()));
        self.changed.notify_waiters();
        Some(e.info)
    }

    /// The pending entry whose id is `id` or starts with it (what a CLI shows before it
    /// decides).
    pub fn find(&self, id: &str) -> Result<PendingInfo, SignerError> {
        let q = self.entries.lock().unwrap();
        if let Some(e) = q.iter().find(|e| e.info.id == id) {
            return Ok(e.info.clone());
        }
        let matches: Vec<&Entry> = q
            .iter()
            .filter(|e| !id.is_empty() && e.info.id.starts_with(id))
            .collect();
        match matches.as_slice() {
            [one] => Ok(one.info.clone()),
            [] => Err(SignerError::UnknownRequest(id.to_string())),
            _ => Err(SignerError::AmbiguousRequest(id.to_string())),
        }
    }

    /// Decide the entry `id` if it still is exactly what was displayed (`digest`: the
    /// digest of the display the deciding surface showed, carried in the verdict and
    /// checked again by the request before anything is signed). A pairing is approved
    /// only by its code ([`Queue::approve_code`]). Returns what was decided and whether
    /// the requester was still there to hear it. Only `crate::decide` calls this.
    pub(crate) fn decide(
        &self,
        id: &str,
        digest: &str,
        d: Decision,
    ) -> Result<(PendingInfo, bool), SignerError> {
        let mut q = self.entries.lock().unwrap();
        let pos = q
            .iter()
            .position(|e| e.info.id == id)
            .ok_or_else(|| SignerError::UnknownRequest(id.to_string()))?;
        if q[pos].info.digest != digest {
            return Err(SignerError::DisplayChanged(id.to_string()));
        }
        if q[pos].info.kind == "pair" && d == Decision::Approve {
            return Err(SignerError::PairingNeedsCode);
        }
        let e = q.remove(pos);
        drop(q);
        Ok(self.deliver(e, d, digest))
    }

    /// Approve the pairing whose code is `code`: only while exactly one pairing waits
    /// (with several, a typed code would be a guess against each of them).
    pub(crate) fn approve_code(&self, code: &str) -> Result<(PendingInfo, bool), SignerError> {
        let code = code.trim();
        let mut q = self.entries.lock().unwrap();
        let pairings: Vec<&Entry> = q
            .iter()
            .filter(|e| e.info.kind == "pair" && e.info.code.is_some())
            .collect();
        if pairings.len() > 1 {
            let who: Vec<String> = pairings
                .iter()
                .map(|e| format!("{} ({})", e.info.from, e.info.from_id))
                .collect();
            return Err(SignerError::SeveralPairings(who.join(", ")));
        }
        let pos = q
            .iter()
            .position(|e| e.info.kind == "pair" && e.info.code.as_deref() == Some(code))
            .filter(|_| !code.is_empty())
            .ok_or(SignerError::NoPairingWithCode)?;
        let e = q.remove(pos);
        drop(q);
        let digest = e.info.digest.clone();
        Ok(self.deliver(e, Decision::Approve, &digest))
    }

    /// Approve the pairing `id` (its code was checked by the caller against what it
    /// showed). Only `crate::decide` calls this.
    pub(crate) fn approve_entry(
        &self,
        id: &str,
        digest: &str,
    ) -> Result<(PendingInfo, bool), SignerError> {
        let mut q = self.entries.lock().unwrap();
        let pos = q
            .iter()
            .position(|e| e.info.id == id && e.info.digest == digest)
            .ok_or_else(|| SignerError::UnknownRequest(id.to_string()))?;
        let e = q.remove(pos);
        drop(q);
        Ok(self.deliver(e, Decision::Approve, digest))
    }

    /// Deny everything `device_id` has waiting (the device was revoked).
    pub(crate) fn deny_device(&self, device_id: &str) -> usize {
        let mut q = self.entries.lock().unwrap();
        let (gone, kept): (Vec<Entry>, Vec<Entry>) =
            q.drain(..).partition(|e| e.info.from_id == device_id);
        *q = kept;
        drop(q);
        let n = gone.len();
        for e in gone {
            let digest = e.info.digest.clone();
            self.deliver(e, Decision::Deny, &digest);
        }
        n
    }

    fn deliver(&self, e: Entry, d: Decision, shown: &str) -> (PendingInfo, bool) {
        self.remember(
            &e.info.id,
            match d {
                Decision::Approve => Gone::Approved,
                Decision::Deny | Decision::Unverified | Decision::Muted => Gone::Denied,
            },
        );
        self.changed.notify_waiters();
        let delivered =
            e.tx.send(Verdict {
                decision: d,
                digest: shown.to_string(),
            })
            .is_ok();
        (e.info, delivered)
    }

    /// The oldest pending request (pairings included or not), waiting up to `wait` for
    /// one to arrive.
    pub async fn next(&self, wait: Duration, pairings: bool) -> Option<PendingInfo> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(e) = self
                .entries
                .lock()
                .unwrap()
                .iter()
                .find(|e| pairings || e.info.kind != "pair")
            {
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

    fn info(kind: &str) -> PendingInfo {
        PendingInfo {
            kind: kind.into(),
            from: "a".into(),
            from_id: "x".into(),
            code: (kind == "pair").then(|| "123456".into()),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn ids_are_the_signers_and_decisions_are_bound_to_the_display() {
        let q = std::sync::Arc::new(Queue::default());
        let mut forged = info("sign");
        forged.id = "chosen-by-peer".into();
        let t1 = q.submit(forged);
        assert_ne!(t1.id, "chosen-by-peer");
        assert_eq!(t1.id.len(), 32);
        let t2 = q.submit(info("sign"));
        assert_ne!(t1.id, t2.id);
        assert_eq!(q.next(Duration::ZERO, true).await.unwrap().id, t1.id);
        assert!(matches!(
            q.decide(&t1.id, "not-the-digest", Decision::Approve),
            Err(SignerError::DisplayChanged(_))
        ));
        assert!(matches!(
            q.decide("zzz", &t1.digest, Decision::Deny),
            Err(SignerError::UnknownRequest(_))
        ));
        let (i, delivered) = q.decide(&t1.id, &t1.digest, Decision::Approve).unwrap();
        assert!(delivered && i.id == t1.id);
        let v = t1.decision.await.unwrap();
        assert_eq!(v.decision, Decision::Approve);
        assert_eq!(v.digest, t1.digest);
        assert_eq!(q.outcome(&t1.id), Some(Gone::Approved));
        assert!(q.remove(&t2.id, "cancelled").is_some());
        assert!(q.next(Duration::from_millis(10), true).await.is_none());
        let q2 = q.clone();
        let waiter = tokio::spawn(async move { q2.next(Duration::from_secs(5), true).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let t3 = q.submit(info("cert"));
        assert_eq!(waiter.await.unwrap().unwrap().id, t3.id);
    }

    #[tokio::test]
    async fn pairings_need_their_code_and_next_skips_them() {
        let q = Queue::default();
        let p = q.submit(info("pair"));
        assert!(q.next(Duration::from_millis(10), false).await.is_none());
        assert!(matches!(
            q.decide(&p.id, &p.digest, Decision::Approve),
            Err(SignerError::PairingNeedsCode)
        ));
        assert!(matches!(
            q.approve_code("654321"),
            Err(SignerError::NoPairingWithCode)
        ));
        assert!(matches!(
            q.approve_code(""),
            Err(SignerError::NoPairingWithCode)
        ));
        assert_eq!(q.approve_code("123456").unwrap().0.id, p.id);
        assert_eq!(p.decision.await.unwrap().decision, Decision::Approve);
    }
}
