//! The signer's shared state, under every path a request takes: its home and config,
//! its identity, the keys and the CA, the queue a person decides from, the paired
//! devices and their live links, the nonces seen, the host pins and the decision log.
//! `listener` → `session` → `request` use it; the surfaces decide through `decide`.

/// Rotated decision logs kept beside `decisions.log`.
pub const LOGS_KEPT: usize = 8;

use crate::keystore::Keystore;
use crate::queue::Queue;
use crate::state::{PairedDevice, SignerConfig, SignerHome};
use crate::SignerError;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use vmux_proto::envelope::{KeyList, Message};
use vmux_proto::identity::fingerprint;
use vmux_proto::journal::{Durable, Journal};
use vmux_proto::noise::Outbox;
use vmux_proto::{now_unix, Identity};

pub struct Signer {
    pub home: SignerHome,
    pub config: SignerConfig,
    pub identity: Identity,
    /// The signing keys (reloadable while running).
    pub keystore: crate::keys::Keys,
    /// The CA keystore; `None` when this signer has no CA key.
    pub ca: Option<Box<dyn Keystore>>,
    pub queue: Queue,
    pub(crate) paired: Mutex<Vec<PairedDevice>>,
    /// Nonces seen until their request's expiry (after it, a replay is refused as
    /// expired anyway).
    pub(crate) seen: Mutex<crate::nonces::SeenNonces>,
    /// The live link of each device: a device that reconnects supersedes its old link,
    /// whose queued requests can no longer be answered to anyone.
    links: Mutex<HashMap<String, Live>>,
    log: Mutex<Journal>,
    /// Bounds on what unauthenticated peers cost.
    pub(crate) gate: crate::guard::Gate,
    /// The host-key pins (`signer/known_hosts`), re-read when the file changes.
    pub(crate) pins: crate::hosts::PinCache,
    /// Reach beyond the local network (`signer/reach.toml`, followed while running).
    pub reach: crate::reach::Reachability,
    /// Requesters a person muted: their requests are denied at once.
    pub mutes: crate::mute::Mutes,
}

/// One device's live link: how to end it, and where to push key lists.
#[derive(Clone)]
pub(crate) struct Live {
    pub superseded: Arc<tokio::sync::Notify>,
    pub outbox: Outbox,
}

impl Signer {
    pub fn open(home: SignerHome, keystore: Box<dyn Keystore>) -> Result<Arc<Self>, SignerError> {
        Self::open_with_ca(home, keystore, None)
    }

    pub fn open_with_ca(
        home: SignerHome,
        keystore: Box<dyn Keystore>,
        ca: Option<Box<dyn Keystore>>,
    ) -> Result<Arc<Self>, SignerError> {
        let config = home.load_config()?;
        let identity = Identity::load_or_create(&home.identity())?;
        let paired = Mutex::new(home.load_paired()?);
        let log = Mutex::new(
            Journal::open(&home.log())?.rotate_at(config.log_max_mb.max(1) << 20, LOGS_KEPT),
        );
        let states = crate::keys::load_states(&home)?;
        let seen = crate::nonces::SeenNonces::load(&home)?;
        let reach = crate::reach::Reachability::load(&home.dir)?;
        Ok(Arc::new(Signer {
            reach,
            home,
            config,
            identity,
            keystore: crate::keys::Keys::new(keystore, states),
            ca,
            queue: Queue::default(),
            paired,
            seen: Mutex::new(seen),
            links: Default::default(),
            log,
            pins: Default::default(),
            gate: Default::default(),
            mutes: Default::default(),
        }))
    }

    /// What a person compares when pairing or pinning this signer by hand.
    pub fn fingerprint(&self) -> String {
        fingerprint(self.identity.public())
    }

    pub fn paired_devices(&self) -> Vec<PairedDevice> {
        self.paired.lock().unwrap().clone()
    }

    /// Whether `device_id` has a live link now.
    pub fn is_connected(&self, device_id: &str) -> bool {
        self.links.lock().unwrap().contains_key(device_id)
    }

    pub(crate) fn paired_device(&self, public: &[u8]) -> Option<PairedDevice> {
        self.paired
            .lock()
            .unwrap()
            .iter()
            .find(|d| d.public_key == public)
            .cloned()
    }

    /// Note that `id` was seen now (paired.json's `lastSeen`).
    pub(crate) fn touch(&self, id: &str) {
        let mut p = self.paired.lock().unwrap();
        if let Some(d) = p.iter_mut().find(|d| d.id == id) {
            d.last_seen = now_unix();
        }
        if let Err(e) = self.home.save_paired(&p) {
            tracing::warn!("{e}");
        }
    }

    /// Pin a newly paired device.
    pub(crate) fn add_paired(&self, d: PairedDevice) -> Result<(), SignerError> {
        let mut p = self.paired.lock().unwrap();
        p.retain(|x| x.public_key != d.public_key);
        p.push(d);
        self.home.save_paired(&p)
    }

    /// A device's link is up: it supersedes the device's older link, if any.
    pub(crate) fn link_up(&self, device_id: &str, live: Live) {
        if let Some(old) = self.links.lock().unwrap().insert(device_id.into(), live) {
            old.superseded.notify_one();
        }
    }

    /// A device's link ended (only that link: a newer one stays).
    pub(crate) fn link_down(&self, device_id: &str, superseded: &Arc<tokio::sync::Notify>) {
        let mut links = self.links.lock().unwrap();
        if links
            .get(device_id)
            .is_some_and(|l| Arc::ptr_eq(&l.superseded, superseded))
        {
            links.remove(device_id);
        }
    }

    /// Append a record to the decision log; it is in the kernel when this returns.
    pub(crate) fn record(&self, fields: Map<String, Value>) {
        if let Err(e) = self.append(fields) {
            tracing::error!("decision log: {e}");
        }
    }

    /// Append a record and hand back its durability ticket: a signature or certificate
    /// leaves only after [`Durable::wait`] says the record is on disk.
    pub(crate) fn append(&self, mut fields: Map<String, Value>) -> Result<Durable, SignerError> {
        fields.insert("time".into(), json!(now_unix()));
        Ok(self.log.lock().unwrap().append(fields)?)
    }

    /// A refused or failed connection from `addr`: logged at most once a minute per
    /// address, the rest summarised ("37 refused connections from 10.0.0.5 in the last
    /// minute"), so a peer cannot grow the log faster than that.
    pub(crate) fn refusal(&self, addr: std::net::IpAddr, device: &str, why: &str) {
        let (note, summary) = self.gate.refused(addr);
        for (a, n) in summary {
            self.record(obj(json!({"event": "refusedSummary", "address": a,
                "count": n, "window": "1m"})));
            tracing::info!("{n} more refused connections from {a} in the last minute");
        }
        if matches!(note, crate::guard::Note::Log) {
            let why = vmux_proto::text::inert(why, 200);
            tracing::info!("link from {addr}: {why}");
            self.record(obj(json!({"event": "refused", "address": addr.to_string(),
                "device": vmux_proto::text::inert(device, 64), "reason": why})));
        }
    }

    /// A decision was made but its requester was gone: say so in the log rather than
    /// letting the answer vanish.
    pub fn delivery_failed(&self, request_id: &str, device_id: &str) {
        tracing::warn!("request {request_id}: decided, but the requester had gone");
        self.record(obj(
            json!({"event": "deliveryFailed", "requestId": request_id,
            "deviceId": device_id}),
        ));
    }

    /// Read the keys from disk again and tell every connected device the new list.
    pub async fn reload_keys(&self) -> Result<usize, SignerError> {
        self.keystore.reload(&self.home)?;
        let keys = self.keystore.listed();
        let outs: Vec<Outbox> = self
            .links
            .lock()
            .unwrap()
            .values()
            .map(|l| l.outbox.clone())
            .collect();
        for o in &outs {
            let _ = o
                .send(Message::KeyList(KeyList { keys: keys.clone() }))
                .await;
        }
        self.record(obj(json!({"event": "keysReloaded", "keys": keys.len(),
            "pushedTo": outs.len()})));
        Ok(keys.len())
    }

    /// Where to reach every connected device now.
    pub(crate) fn outboxes(&self) -> Vec<Outbox> {
        self.links
            .lock()
            .unwrap()
            .values()
            .map(|l| l.outbox.clone())
            .collect()
    }

    /// Remove a paired device (by id); `Ok(false)` when there is none.
    pub fn revoke(&self, id: &str) -> Result<bool, SignerError> {
        let mut p = self.paired.lock().unwrap();
        let before = p.len();
        p.retain(|d| d.id != id);
        if p.len() == before {
            return Ok(false);
        }
        self.home.save_paired(&p)?;
        drop(p);
        // Its waiting requests are denied now and its link is closed: nothing it asked
        // for before the revocation can be approved afterwards.
        let denied = self.queue.deny_device(id);
        if let Some(live) = self.links.lock().unwrap().remove(id) {
            live.superseded.notify_one();
        }
        self.record(obj(
            json!({"event": "revoke", "deviceId": id, "denied": denied}),
        ));
        Ok(true)
    }
}

pub(crate) fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}
