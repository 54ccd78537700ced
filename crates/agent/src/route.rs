//! Links to paired signers: dial the saved address (checking the pinned key), follow a
//! signer that moved (discovery, or the local signer's `listening.json` for one on
//! this machine), wake one that sleeps, and keep every link up with bounded backoff.

use crate::agent::Agent;
use crate::link::SignerLink;
use crate::state::PairedSigner;
use crate::AgentError;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use vmux_proto::{now_unix, ErrorCode};

impl Agent {
    /// A live link to `signer_id`, connecting if there is none.
    pub async fn link(&self, signer_id: &str) -> Result<SignerLink, AgentError> {
        let up = |agent: &Agent| {
            agent
                .links
                .lock()
                .unwrap()
                .get(signer_id)
                .filter(|l| l.is_up())
                .cloned()
        };
        if let Some(l) = up(self) {
            return Ok(l);
        }
        let gate = self
            .dialing
            .get(signer_id)
            .ok_or_else(|| AgentError::NoSuchSigner(signer_id.into()))?;
        let _one_dialer = gate.lock().await;
        if let Some(l) = up(self) {
            return Ok(l);
        }
        let s = self.paired(signer_id)?;
        let timeout = Duration::from_secs(self.config.connect_timeout_secs);
        let res = Box::pin(self.dial_signer(&s, timeout)).await;
        match res {
            Ok((link, keys)) => {
                let how = link.path().map(|p| p.0).unwrap_or_default();
                tracing::info!(
                    "connected to signer {} at {} ({how})",
                    link.signer_name,
                    s.address
                );
                self.update_keys(signer_id, keys);
                self.update_signer(signer_id, |s| s.wake_url = link.wake_url.clone());
                self.note_reach(signer_id, link.reach.borrow().clone());
                self.links
                    .lock()
                    .unwrap()
                    .insert(signer_id.into(), link.clone());
                let now = now_unix();
                self.link_info
                    .lock()
                    .unwrap()
                    .entry(signer_id.into())
                    .and_modify(|i| {
                        i.last_error = None;
                        i.since = Some(now);
                        i.last_seen = Some(now);
                    })
                    .or_insert(crate::agent::LinkInfo {
                        last_error: None,
                        last_seen: Some(now),
                        since: Some(now),
                        woken: None,
                    });
                self.write_status();
                Ok(link)
            }
            Err(e) => {
                let why = e.to_string();
                let changed = {
                    let mut info = self.link_info.lock().unwrap();
                    let i = info.entry(signer_id.into()).or_default();
                    let changed = i.last_error.as_deref() != Some(why.as_str());
                    if changed {
                        i.last_error = Some(why);
                        i.since = Some(now_unix());
                    }
                    changed
                };
                if changed {
                    tracing::warn!("signer {}: {e}", s.name);
                    // At once: the request that failed here tells its requester to
                    // look at `vmux agent status`, which must already say why.
                    self.write_status_now();
                    self.write_status();
                }
                Err(e)
            }
        }
    }

    fn paired(&self, signer_id: &str) -> Result<PairedSigner, AgentError> {
        self.signers()
            .into_iter()
            .find(|s| s.id == signer_id)
            .ok_or_else(|| AgentError::NoSuchSigner(signer_id.into()))
    }

    /// Whether the link to `signer_id` is up now.
    pub fn is_linked(&self, signer_id: &str) -> bool {
        self.links
            .lock()
            .unwrap()
            .get(signer_id)
            .is_some_and(|l| l.is_up())
    }

    /// Whether any signer is linked now.
    pub fn any_linked(&self) -> bool {
        self.links.lock().unwrap().values().any(|l| l.is_up())
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

    /// A paired signer on this machine that moved (a new port, or `vmux up` → the
    /// service unit): the local signer's `listening.json` names where it is now, and
    /// the pinned key must answer there.
    async fn follow_local_signer(&self, s: &PairedSigner) -> bool {
        let loopback = s
            .address
            .parse::<std::net::SocketAddr>()
            .is_ok_and(|a| a.ip().is_loopback())
            || s.address.starts_with("localhost:");
        let Some(vmux_home) = self.home.dir.parent() else {
            return false;
        };
        if !loopback {
            return false;
        }
        match vmux_proto::local::read(vmux_home) {
            Some(l) if l.device_id == s.id && l.address != s.address => {
                tracing::info!(
                    "signer {} is not at {} any more; the local signer says it listens on {}",
                    s.name,
                    s.address,
                    l.address
                );
                self.try_address(&s.id, &l.address).await
            }
            _ => false,
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
    pub(crate) fn update_signer(
        &self,
        signer_id: &str,
        change: impl Fn(&mut PairedSigner),
    ) -> bool {
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

    /// A link to `signer_id`, waiting for it: dial at once; if that fails, look for a
    /// local signer that moved, post the signer's wake URL (if it gave one) and keep
    /// dialling (discovery meanwhile moves the address if the signer turns up
    /// elsewhere) until `connect_timeout_secs` have passed; after a wake, up to
    /// `wake_timeout_secs`. A request started just after the signer came back therefore
    /// succeeds instead of failing.
    pub async fn link_or_wake(&self, signer_id: &str) -> Result<SignerLink, AgentError> {
        let started = tokio::time::Instant::now();
        let connect = Duration::from_secs(self.config.connect_timeout_secs);
        let mut deadline = started + connect;
        let (mut woken, mut looked) = (false, false);
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
            let s = self.paired(signer_id)?;
            if !looked {
                looked = true;
                if self.follow_local_signer(&s).await {
                    continue;
                }
            }
            if !woken {
                woken = true;
                self.wake(&s).await;
                if s.wake_url.is_some() {
                    deadline = deadline.max(
                        tokio::time::Instant::now()
                            + Duration::from_secs(self.config.wake_timeout_secs),
                    );
                }
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                tracing::warn!(
                    "signer {}: no link within {}s: {last}",
                    s.name,
                    (now - started).as_secs()
                );
                return Err(last);
            }
            tokio::time::sleep(Duration::from_millis(100).min(deadline - now)).await;
        }
    }

    /// Post the signer's wake URL, if it gave one.
    async fn wake(&self, s: &PairedSigner) {
        let Some(url) = s.wake_url.clone() else {
            return;
        };
        // Pairings from before tokens existed get one now.
        let token = match s.wake_token.clone() {
            Some(t) => t,
            None => {
                let t = crate::wake::new_token();
                self.update_signer(&s.id, |s| {
                    s.wake_token.get_or_insert_with(|| t.clone());
                });
                t
            }
        };
        let woke = crate::wake::post(&url, &token, self.config.wake_local).await;
        self.record(&json!({"time": now_unix(), "kind": "wake", "signer": s.id,
            "decision": if woke.is_ok() { "sent" } else { "failed" }}));
        match &woke {
            Ok(()) => {
                self.link_info
                    .lock()
                    .unwrap()
                    .entry(s.id.clone())
                    .or_default()
                    .woken = Some(now_unix());
            }
            Err(e) => tracing::warn!("{e}"),
        }
    }

    /// `alice-pi not reachable at 127.0.0.1:7227 (last seen 14:02; wake sent)`: why a
    /// request found no link, with the address tried and what to check.
    pub fn unreachable_reason(&self, signer_id: &str, e: &AgentError) -> String {
        let s = self.paired(signer_id).ok();
        let name = s.as_ref().map(|s| s.name.clone()).unwrap_or_default();
        let info = self
            .link_info
            .lock()
            .unwrap()
            .get(signer_id)
            .cloned()
            .unwrap_or_default();
        let mut notes = vec![];
        match info.last_seen {
            Some(t) => notes.push(format!("last seen {}", vmux_proto::time::hm(t))),
            None => notes.push("not seen since the agent started".into()),
        }
        match (s.as_ref().and_then(|s| s.wake_url.as_ref()), info.woken) {
            (Some(_), Some(_)) => notes.push("wake sent".into()),
            (Some(_), None) => notes.push("wake failed".into()),
            (None, _) => {}
        }
        let why = match e {
            AgentError::Unreachable { reason, .. } => reason.clone(),
            AgentError::Refused(ErrorCode::PairingInvalid, _) => {
                return format!(
                    "{name} no longer knows this device (revoked there?); pair again: vmux agent pair"
                )
            }
            AgentError::PinMismatch { got, .. } => {
                return format!(
                    "{name}: another key ({got}) answered at {}; refusing (re-pair if the signer was reset)",
                    s.map(|s| s.address).unwrap_or_default()
                )
            }
            other => other.to_string(),
        };
        format!(
            "{name} not reachable at {} ({}; {why}); is `vmux signer run` running there? `vmux status` shows where it listens",
            s.map(|s| s.address).unwrap_or_default(),
            notes.join("; ")
        )
    }

    /// Keep a link to every paired signer, reconnecting with bounded backoff; keep the
    /// session certificate and the status file up to date.
    pub fn spawn_keepers(self: &Arc<Self>) {
        self.spawn_status_writer();
        self.spawn_cert_keeper();
        for s in &self.signers() {
            let (agent, id) = (self.clone(), s.id.clone());
            tokio::spawn(async move {
                // Short backoff, capped at 1 s: a signer that comes back is served again
                // within about a second (a closed port costs one refused SYN per try).
                let mut backoff = Duration::from_millis(100);
                let mut failures = 0u32;
                loop {
                    match agent.link(&id).await {
                        Ok(link) => {
                            backoff = Duration::from_millis(100);
                            failures = 0;
                            agent.spawn_route_watch(&id, &link);
                            // Follow the key lists this signer pushes while linked.
                            let follow = {
                                let (agent, id, mut rx, mut reach) = (
                                    agent.clone(),
                                    id.clone(),
                                    link.keys.clone(),
                                    link.reach.clone(),
                                );
                                tokio::spawn(async move {
                                    loop {
                                        tokio::select! {
                                            r = rx.changed() => {
                                                if r.is_err() { return; }
                                                let pushed = rx.borrow().clone();
                                                if let Some(keys) = pushed {
                                                    agent.update_keys(&id, keys);
                                                }
                                            }
                                            r = reach.changed() => {
                                                if r.is_err() { return; }
                                                let told = reach.borrow().clone();
                                                agent.note_reach(&id, told);
                                            }
                                        }
                                    }
                                })
                            };
                            let why = link.wait_closed().await;
                            follow.abort();
                            let now = now_unix();
                            if let Some(i) = agent.link_info.lock().unwrap().get_mut(&id) {
                                i.last_error = Some(why);
                                i.last_seen = Some(now);
                                i.since = Some(now);
                            }
                            // At once, not debounced: nobody may read "connected" for a
                            // link that just died.
                            agent.write_status_now();
                            agent.write_status();
                        }
                        Err(_) => {
                            // Now and then, look whether a local signer moved.
                            failures += 1;
                            if failures % 8 == 1 {
                                if let Ok(s) = agent.paired(&id) {
                                    if agent.follow_local_signer(&s).await {
                                        continue;
                                    }
                                }
                            }
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(Duration::from_secs(1));
                        }
                    }
                }
            });
        }
    }
}
