//! The agent's core: which keys exist (cached from signers), which signer holds a key,
//! and the round trip of one signature, logged.

use crate::cert::{self, SessionCert};
use crate::context;
use crate::destination::{self, Binding};
use crate::link::SignerLink;
use crate::state::{AgentConfig, AgentHome, CachedKey, PairedSigner};
use crate::AgentError;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use uuid::Uuid;
use vmux_proto::envelope::{Context, KeyRecord, Origin, SessionBinding, SignRequest};
use vmux_proto::identity::key_fingerprint;
use vmux_proto::journal::Journal;
use vmux_proto::{now_unix, random_bytes, ErrorCode, Identity};

/// Who is on the other end of an agent connection.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    pub pid: Option<i32>,
    /// `ssh (4242) ← git ← zsh`
    pub requester: Option<String>,
}

pub struct Agent {
    pub home: AgentHome,
    pub config: AgentConfig,
    pub identity: Identity,
    pub name: String,
    /// Paired signers; addresses change as discovery finds them.
    pub(crate) signers: Mutex<Vec<PairedSigner>>,
    keys: Mutex<Vec<CachedKey>>,
    pub(crate) links: Mutex<HashMap<String, SignerLink>>,
    link_errors: Mutex<HashMap<String, String>>,
    dialing: HashMap<String, tokio::sync::Mutex<()>>,
    /// Salt and SHA-256 of the LOCK passphrase while locked.
    locked: Mutex<Option<([u8; 16], [u8; 32])>>,
    log: Mutex<Journal>,
    socket_path: Mutex<Option<String>>,
    pub(crate) cert: Mutex<Option<Arc<SessionCert>>>,
    pub(crate) cert_in_flight: AtomicBool,
    /// Set when a certificate expired with no renewal (for `status`).
    pub(crate) cert_expired: AtomicBool,
    /// No automatic certificate request before this time (after a denial or error).
    pub(crate) cert_retry_at: AtomicU64,
    /// Keys vmux does not hold, from another agent (`upstream.rs`).
    pub(crate) upstream: Mutex<Option<Arc<crate::upstream::Upstream>>>,
}

/// What `vmux agent status` reads: written by the running agent on every link change.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub pid: u32,
    pub socket: String,
    pub signers: Vec<SignerStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<CertStatus>,
    #[serde(default)]
    pub certificate_expired: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<crate::upstream::UpstreamInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CertStatus {
    pub key_id: String,
    pub serial: u64,
    pub principals: Vec<String>,
    pub valid_after: u64,
    pub valid_before: u64,
    pub signer: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SignerStatus {
    pub id: String,
    pub name: String,
    pub address: String,
    pub connected: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl Agent {
    pub fn open(home: AgentHome) -> Result<Arc<Agent>, AgentError> {
        let config = home.load_config()?;
        let identity = Identity::load_or_create(&home.identity())?;
        let signers = home.load_signers()?;
        let keys = home.load_keys()?;
        let log = Journal::open(&home.log())?;
        let dialing = signers
            .iter()
            .map(|s| (s.id.clone(), tokio::sync::Mutex::new(())))
            .collect();
        let upstream = crate::upstream::from_config(&config);
        Ok(Arc::new(Agent {
            name: home.device_name(&config),
            home,
            config,
            identity,
            signers: Mutex::new(signers),
            keys: Mutex::new(keys),
            links: Default::default(),
            link_errors: Default::default(),
            dialing,
            locked: Mutex::new(None),
            log: Mutex::new(log),
            socket_path: Mutex::new(None),
            cert: Mutex::new(None),
            cert_in_flight: AtomicBool::new(false),
            cert_expired: AtomicBool::new(false),
            cert_retry_at: AtomicU64::new(0),
            upstream: Mutex::new(upstream),
        }))
    }

    pub fn signers(&self) -> Vec<PairedSigner> {
        self.signers.lock().unwrap().clone()
    }

    pub fn is_locked(&self) -> bool {
        self.locked.lock().unwrap().is_some()
    }

    /// The identities to list: every cached key of every paired signer, nothing when
    /// locked (as OpenSSH's agent does).
    pub fn identities(&self) -> Vec<(Vec<u8>, String)> {
        self.identities_for(false)
    }

    /// The identities for a connection; a forwarded one (`ssh -A` on the far side) does
    /// not see the session certificate unless `forwarded_cert` lets it sign there.
    pub fn identities_for(&self, forwarded: bool) -> Vec<(Vec<u8>, String)> {
        if self.is_locked() {
            return vec![];
        }
        let mut ids: Vec<(Vec<u8>, String)> = self
            .valid_cert()
            .filter(|_| !forwarded || self.config.forwarded_cert)
            .map(|c| (c.blob.clone(), cert::COMMENT.to_string()))
            .into_iter()
            .collect();
        ids.extend(
            self.keys
                .lock()
                .unwrap()
                .iter()
                .filter(|k| {
                    k.record.enabled
                        && self
                            .signers
                            .lock()
                            .unwrap()
                            .iter()
                            .any(|s| s.id == k.signer_id)
                })
                .map(|k| (k.record.public_key.clone(), k.record.comment.clone())),
        );
        ids
    }

    pub fn cached_keys(&self) -> Vec<CachedKey> {
        self.keys.lock().unwrap().clone()
    }

    fn update_keys(&self, signer_id: &str, records: Vec<KeyRecord>) {
        let mut keys = self.keys.lock().unwrap();
        let mut next: Vec<CachedKey> = keys
            .iter()
            .filter(|k| k.signer_id != signer_id)
            .cloned()
            .collect();
        next.extend(records.into_iter().map(|record| CachedKey {
            signer_id: signer_id.to_string(),
            record,
        }));
        if *keys != next {
            if let Err(e) = self.home.save_keys(&next) {
                tracing::error!("{e}");
            }
            *keys = next;
        }
    }

    /// A live link to `signer_id`, connecting if there is none.
    pub async fn link(&self, signer_id: &str) -> Result<SignerLink, AgentError> {
        let up = |links: &HashMap<String, SignerLink>| {
            links.get(signer_id).filter(|l| l.is_up()).cloned()
        };
        if let Some(l) = up(&self.links.lock().unwrap()) {
            return Ok(l);
        }
        let gate = self
            .dialing
            .get(signer_id)
            .ok_or_else(|| AgentError::NoSuchSigner(signer_id.into()))?;
        let _one_dialer = gate.lock().await;
        if let Some(l) = up(&self.links.lock().unwrap()) {
            return Ok(l);
        }
        let s = self
            .signers()
            .into_iter()
            .find(|s| s.id == signer_id)
            .ok_or_else(|| AgentError::NoSuchSigner(signer_id.into()))?;
        let timeout = Duration::from_secs(self.config.connect_timeout_secs);
        let res = SignerLink::connect(
            &s.address,
            &self.identity,
            &self.name,
            &s.public_key,
            timeout,
        )
        .await;
        match res {
            Ok((link, keys)) => {
                tracing::info!("connected to signer {} at {}", link.signer_name, s.address);
                self.update_keys(signer_id, keys);
                self.update_signer(signer_id, |s| s.wake_url = link.wake_url.clone());
                self.links
                    .lock()
                    .unwrap()
                    .insert(signer_id.into(), link.clone());
                self.link_errors.lock().unwrap().remove(signer_id);
                self.write_status();
                Ok(link)
            }
            Err(e) => {
                let changed = self
                    .link_errors
                    .lock()
                    .unwrap()
                    .insert(signer_id.into(), e.to_string())
                    != Some(e.to_string());
                if changed {
                    tracing::warn!("signer {}: {e}", s.name);
                    self.write_status();
                }
                Err(e)
            }
        }
    }

    /// Ask every connected signer for its key list now; returns how many were asked.
    pub async fn refresh(&self) -> usize {
        let links: Vec<SignerLink> = self
            .links
            .lock()
            .unwrap()
            .values()
            .filter(|l| l.is_up())
            .cloned()
            .collect();
        let mut asked = 0;
        for l in links {
            if l.refresh().await.is_ok() {
                asked += 1;
            }
        }
        asked
    }

    /// An address discovery reported for a paired signer: dialled, and kept only if the
    /// pinned key answers there (the handshake stops before our key is sent otherwise).
    /// A spoofed record costs one failed dial, logged.
    pub async fn try_address(&self, signer_id: &str, address: &str) -> bool {
        let Some(s) = self.signers().into_iter().find(|s| s.id == signer_id) else {
            return false;
        };
        if s.address == address {
            return true;
        }
        let probe = async {
            let stream = crate::link::dial(address, Duration::from_secs(3)).await?;
            vmux_proto::noise::connect_pinned(stream, &self.identity, Some(&s.public_key))
                .await
                .map_err(AgentError::from)
        };
        match tokio::time::timeout(Duration::from_secs(5), probe).await {
            Ok(Ok(_)) => self.set_address(signer_id, address),
            Ok(Err(e)) => {
                tracing::warn!(
                    "discovery said signer {} is at {address}, but the pinned key did not answer there ({e}); ignored",
                    s.name
                );
                false
            }
            Err(_) => {
                tracing::warn!(
                    "discovery: no answer from {address} for signer {}; ignored",
                    s.name
                );
                false
            }
        }
    }

    /// A new address for a paired signer (from discovery or `--signer`): used from the
    /// next connection on, and kept as the address hint in signers.json.
    pub fn set_address(&self, signer_id: &str, address: &str) -> bool {
        let found = self.update_signer(signer_id, |s| {
            if s.address != address {
                tracing::info!("signer {} is now at {address}", s.name);
                s.address = address.to_string();
            }
        });
        self.write_status();
        found
    }

    /// Change a paired signer in memory and, if that changed it, in signers.json.
    /// Returns whether the signer exists.
    fn update_signer(&self, signer_id: &str, change: impl Fn(&mut PairedSigner)) -> bool {
        let mut signers = self.signers.lock().unwrap();
        let Some(s) = signers.iter_mut().find(|s| s.id == signer_id) else {
            return false;
        };
        let before = s.clone();
        change(s);
        if *s == before {
            return true;
        }
        drop(signers);
        let saved = self.home.load_signers().and_then(|mut all| {
            all.iter_mut()
                .filter(|s| s.id == signer_id)
                .for_each(&change);
            self.home.save_signers(&all)
        });
        if let Err(e) = saved {
            tracing::warn!("{e}");
        }
        true
    }

    /// A link to `signer_id`, waiting for it: dial at once; if that fails, post the
    /// signer's wake URL (if it gave one) and keep dialling (discovery meanwhile moves
    /// the address if the signer turns up elsewhere) until `connect_timeout_secs` have
    /// passed; after a wake, up to `wake_timeout_secs`. A request started just after the
    /// signer came back therefore succeeds instead of failing.
    pub async fn link_or_wake(&self, signer_id: &str) -> Result<SignerLink, AgentError> {
        let started = tokio::time::Instant::now();
        let connect = Duration::from_secs(self.config.connect_timeout_secs);
        let mut deadline = started + connect;
        let mut woken = false;
        let mut last;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            last = match tokio::time::timeout(
                left.max(Duration::from_millis(50)),
                self.link(signer_id),
            )
            .await
            {
                Ok(Ok(l)) => return Ok(l),
                Ok(Err(e)) => e,
                Err(_) => AgentError::Timeout(connect.as_secs()),
            };
            if matches!(
                last,
                AgentError::Refused(..) | AgentError::PinMismatch { .. }
            ) {
                return Err(last);
            }
            if !woken {
                woken = true;
                let s = self.signers().into_iter().find(|s| s.id == signer_id);
                if let Some((url, token)) = s.and_then(|s| Some((s.wake_url?, s.wake_token))) {
                    // Pairings from before tokens existed get one now.
                    let token = match token {
                        Some(t) => t,
                        None => {
                            let t = crate::wake::new_token();
                            self.update_signer(signer_id, |s| {
                                s.wake_token.get_or_insert_with(|| t.clone());
                            });
                            t
                        }
                    };
                    let woke = crate::wake::post(&url, &token).await;
                    self.record(
                        json!({"time": now_unix(), "kind": "wake", "signer": signer_id,
                        "decision": if woke.is_ok() { "sent" } else { "failed" }}),
                    );
                    if let Err(e) = &woke {
                        tracing::warn!("{e}");
                    }
                    deadline = deadline.max(
                        tokio::time::Instant::now()
                            + Duration::from_secs(self.config.wake_timeout_secs),
                    );
                }
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                tracing::warn!(
                    "signer {signer_id}: no link within {}s: {last}",
                    (now - started).as_secs()
                );
                return Err(last);
            }
            tokio::time::sleep(Duration::from_millis(100).min(deadline - now)).await;
        }
    }

    /// Keep a link to every paired signer, reconnecting with bounded backoff.
    pub fn spawn_keepers(self: &Arc<Self>) {
        self.spawn_cert_keeper();
        for s in &self.signers() {
            let (agent, id) = (self.clone(), s.id.clone());
            tokio::spawn(async move {
                // Short backoff, capped at 1 s: a signer that comes back is served again
                // within about a second (a closed port costs one refused SYN per try).
                let mut backoff = Duration::from_millis(100);
                loop {
                    match agent.link(&id).await {
                        Ok(link) => {
                            backoff = Duration::from_millis(100);
                            // Follow the key lists this signer pushes while linked.
                            let follow = {
                                let (agent, id, mut rx) =
                                    (agent.clone(), id.clone(), link.keys.clone());
                                tokio::spawn(async move {
                                    while rx.changed().await.is_ok() {
                                        let pushed = rx.borrow().clone();
                                        if let Some(keys) = pushed {
                                            agent.update_keys(&id, keys);
                                        }
                                    }
                                })
                            };
                            // A (re)connected signer may be asked for a certificate at once.
                            agent.cert_retry_at.store(0, Ordering::Relaxed);
                            let why = link.wait_closed().await;
                            follow.abort();
                            agent.link_errors.lock().unwrap().insert(id.clone(), why);
                            agent.write_status();
                        }
                        Err(_) => {
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(Duration::from_secs(1));
                        }
                    }
                }
            });
        }
    }

    pub fn status(&self) -> Status {
        let links = self.links.lock().unwrap();
        let errors = self.link_errors.lock().unwrap();
        Status {
            pid: std::process::id(),
            socket: self
                .socket_path
                .lock()
                .unwrap()
                .clone()
                .unwrap_or_else(|| self.home.socket(&self.config).display().to_string()),
            signers: self
                .signers()
                .iter()
                .map(|s| SignerStatus {
                    id: s.id.clone(),
                    name: s.name.clone(),
                    address: s.address.clone(),
                    connected: links.get(&s.id).is_some_and(|l| l.is_up()),
                    last_error: errors.get(&s.id).cloned(),
                })
                .collect(),
            certificate: self.valid_cert().map(|c| CertStatus {
                key_id: c.key_id.clone(),
                serial: c.serial,
                principals: c.principals.clone(),
                valid_after: c.valid_after,
                valid_before: c.valid_before,
                signer: c.signer_id.clone(),
            }),
            certificate_expired: self.cert_expired.load(Ordering::Relaxed),
            upstream: self.upstream_info(),
        }
    }

    /// Record where this agent serves and write the status file.
    pub fn write_status_at(&self, socket: &std::path::Path) {
        *self.socket_path.lock().unwrap() = Some(socket.display().to_string());
        self.write_status();
    }

    pub fn write_status(&self) {
        if let Err(e) = vmux_proto::store::write_json(&self.home.status_file(), &self.status()) {
            tracing::warn!("{e}");
        }
    }

    /// LOCK: remember a salted hash of the passphrase; false if already locked.
    pub fn lock(&self, passphrase: &[u8]) -> bool {
        let mut l = self.locked.lock().unwrap();
        if l.is_some() {
            return false;
        }
        let salt: [u8; 16] = random_bytes();
        *l = Some((salt, salted(&salt, passphrase)));
        drop(l);
        self.drop_cert("agent locked");
        true
    }

    /// UNLOCK: true when the passphrase matches the one given to LOCK.
    pub fn unlock(&self, passphrase: &[u8]) -> bool {
        let mut l = self.locked.lock().unwrap();
        match *l {
            Some((salt, hash)) if ct_eq(&salted(&salt, passphrase), &hash) => {
                *l = None;
                true
            }
            _ => false,
        }
    }

    /// One signature: route to the signer holding the key and wait for a person there.
    pub async fn sign(
        &self,
        key_blob: &[u8],
        data: &[u8],
        flags: u32,
        caller: &Caller,
        bindings: &[Binding],
    ) -> Result<Vec<u8>, ErrorCode> {
        let started = Instant::now();
        let request_id = Uuid::new_v4();
        let parsed = context::parse(data);
        let dest = destination::resolve(bindings, &parsed);
        let dest = match dest {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(
                    "refused a signature for {}: {e}",
                    caller.requester.as_deref().unwrap_or("an unknown process")
                );
                self.record(json!({
                    "time": now_unix(),
                    "requestId": request_id.to_string(),
                    "key": key_fingerprint(key_blob),
                    "pid": caller.pid,
                    "requester": caller.requester,
                    "kind": parsed.kind,
                    "decision": "bindingRefused",
                    "reason": e.to_string(),
                }));
                return Err(ErrorCode::PolicyDenied);
            }
        };
        let cert = self
            .valid_cert()
            .filter(|c| c.matches(key_blob) && !self.is_locked());
        // The session certificate signs logins of this workstation's own ssh only: not
        // git/file signatures or unrecognised data, and not for a host further along an
        // `ssh -A` chain (unless `forwarded_cert` says so). The signer never holds the
        // certificate's key, so such a request is refused here.
        let local = cert
            .clone()
            .filter(|_| parsed.kind == "login" && (!dest.forwarded || self.config.forwarded_cert));
        let result = match (&local, &cert) {
            (Some(c), _) => c.sign(data),
            (None, Some(_)) => Err(ErrorCode::PolicyDenied),
            (None, None) => {
                let context = Context {
                    requester: caller.requester.clone(),
                    kind: parsed.kind.to_string(),
                    namespace: parsed.namespace.clone(),
                    user: parsed.user.clone(),
                    host: dest.name.clone(),
                    quality: dest.quality.into(),
                    host_key_fingerprint: dest.host_key_fingerprint.clone(),
                    hops: dest.hops.clone(),
                };
                let bound = bindings
                    .iter()
                    .map(|b| SessionBinding {
                        host_key: b.bind.host_key.clone(),
                        session_id: b.bind.session_id.clone(),
                        signature: b.bind.signature.clone(),
                        is_forwarding: b.bind.is_forwarding,
                    })
                    .collect();
                self.forward(
                    request_id,
                    key_blob,
                    data,
                    flags,
                    (Origin::Agent, context),
                    bound,
                )
                .await
            }
        };
        let key = key_fingerprint(key_blob);
        let decision = match &result {
            Ok(_) if local.is_some() => "local-cert".to_string(),
            Ok(_) => "approved".to_string(),
            Err(c) => c.to_string(),
        };
        let mut rec = json!({
            "time": now_unix(),
            "requestId": request_id.to_string(),
            "key": key,
            "pid": caller.pid,
            "requester": caller.requester,
            "kind": parsed.kind,
            "decision": decision,
            "latencyMs": started.elapsed().as_millis() as u64,
        });
        if let Some(ns) = &parsed.namespace {
            rec["namespace"] = json!(ns);
        }
        if let Some(u) = &parsed.user {
            rec["user"] = json!(u);
        }
        rec["quality"] = json!(dest.quality);
        if let Some(h) = &dest.host {
            rec["host"] = json!(h);
        }
        if !dest.hops.is_empty() {
            rec["hops"] = json!(dest.hops);
        }
        self.record(rec);
        result
    }

    /// One signature for `vmux ssh` (origin `client`): the caller is the SSH client
    /// itself, so it knows the destination and hands over the session binding it
    /// verified during key exchange; the signer checks that binding again. Logged like
    /// an agent request.
    pub async fn sign_direct(
        &self,
        key_blob: &[u8],
        data: &[u8],
        flags: u32,
        context: Context,
        binding: SessionBinding,
    ) -> Result<Vec<u8>, ErrorCode> {
        let started = Instant::now();
        let request_id = Uuid::new_v4();
        let rec = json!({
            "time": now_unix(),
            "requestId": request_id.to_string(),
            "key": key_fingerprint(key_blob),
            "pid": std::process::id(),
            "requester": context.requester,
            "kind": context.kind,
            "user": context.user,
            "host": context.host,
            "quality": context.quality,
        });
        let result = self
            .forward(
                request_id,
                key_blob,
                data,
                flags,
                (Origin::Client, context),
                vec![binding],
            )
            .await;
        let mut rec = rec;
        rec["decision"] = json!(match &result {
            Ok(_) => "approved".to_string(),
            Err(c) => c.to_string(),
        });
        rec["latencyMs"] = json!(started.elapsed().as_millis() as u64);
        self.record(rec);
        result
    }

    /// The paired signer that holds `key_blob`, from the cached key lists.
    pub fn signer_of(&self, key_blob: &[u8]) -> Option<PairedSigner> {
        let id = self
            .keys
            .lock()
            .unwrap()
            .iter()
            .find(|k| k.record.public_key == key_blob)
            .map(|k| k.signer_id.clone())?;
        self.signers().into_iter().find(|s| s.id == id)
    }

    pub(crate) fn record(&self, rec: serde_json::Value) {
        if let serde_json::Value::Object(m) = rec {
            if let Err(e) = self.log.lock().unwrap().append(m) {
                tracing::error!("request log: {e}");
            }
        }
    }

    async fn forward(
        &self,
        request_id: Uuid,
        key_blob: &[u8],
        data: &[u8],
        flags: u32,
        (origin, context): (Origin, Context),
        bindings: Vec<SessionBinding>,
    ) -> Result<Vec<u8>, ErrorCode> {
        if self.is_locked() {
            return Err(ErrorCode::PolicyDenied);
        }
        let signer_id = self
            .keys
            .lock()
            .unwrap()
            .iter()
            .find(|k| k.record.public_key == key_blob)
            .map(|k| k.signer_id.clone())
            .ok_or(ErrorCode::KeyNotFound)?;
        let link = self.link_or_wake(&signer_id).await.map_err(|e| match e {
            // The signer answered and refused this device (revoked): say so.
            AgentError::Refused(code @ ErrorCode::PairingInvalid, _) => code,
            _ => ErrorCode::SignerUnavailable,
        })?;
        let issued = now_unix();
        let window = self.config.request_window_secs;
        let algorithm = self
            .keys
            .lock()
            .unwrap()
            .iter()
            .find(|k| k.record.public_key == key_blob)
            .map(|k| k.record.algorithm.clone())
            .unwrap_or_default();
        let req = SignRequest {
            request_id,
            key_blob: key_blob.to_vec(),
            algorithm,
            flags,
            device_id: self.identity.device_id(),
            device_name: self.name.clone(),
            origin,
            data: data.to_vec(),
            nonce: random_bytes::<16>().to_vec(),
            issued,
            expires: issued + window,
            context,
            bindings,
        };
        // A little past the window: the signer answers requestExpired itself at expiry.
        let wait = Duration::from_secs(window + 5);
        let sent = std::time::Instant::now();
        let resp = match link.sign(req.clone(), wait).await {
            // The link died under the request before the signer could have seen it (a
            // restart, a revocation): once more on a fresh link, with a fresh nonce.
            Err(AgentError::LinkLost(_) | AgentError::Proto(_))
                if sent.elapsed() < Duration::from_secs(2) =>
            {
                let link = self.link_or_wake(&signer_id).await.map_err(|e| match e {
                    AgentError::Refused(code @ ErrorCode::PairingInvalid, _) => code,
                    _ => ErrorCode::SignerUnavailable,
                })?;
                let mut again = req;
                again.nonce = random_bytes::<16>().to_vec();
                link.sign(again, wait).await.map_err(|e| e.code())?
            }
            r => r.map_err(|e| e.code())?,
        };
        match (resp.approved, resp.signature) {
            (true, Some(sig)) => Ok(sig),
            _ => Err(resp.error.unwrap_or(ErrorCode::Internal)),
        }
    }
}

fn salted(salt: &[u8], pass: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(pass);
    h.finalize().into()
}

fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
