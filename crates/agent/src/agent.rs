//! The agent's shared state: paired signers and their links, the public keys they
//! hold (cached), the session certificate's lifecycle, what waits right now and how
//! recent requests ended, the request log, and the status every surface reads.
//! The paths that use it: `route` (links to signers), `forward` (one signature),
//! `renew` (the session certificate), `session` (one client connection).

use crate::cert::{self, Lifecycle, SessionCert};
use crate::feedback::Feedback;
use crate::link::SignerLink;
use crate::state::{AgentConfig, AgentHome, CachedKey, PairedSigner};
use crate::status::{CertStatus, Outcome, SignerStatus, Status, Waiting};
use crate::AgentError;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use vmux_proto::envelope::KeyRecord;
use vmux_proto::journal::Journal;
use vmux_proto::{now_unix, random_bytes, Identity};

/// Who is on the other end of an agent connection.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    pub pid: Option<i32>,
    /// `ssh (4242) ← git ← zsh`
    pub requester: Option<String>,
    /// The caller's controlling terminal, when it belongs to this agent's user: where
    /// the waiting line and the outcome are written.
    pub tty: Option<PathBuf>,
    /// What ssh was asked for (`hostnames::candidates`), read from /proc and the ssh
    /// configs once per connection: a connection's process does not change.
    pub asked: std::sync::OnceLock<Vec<String>>,
}

impl Caller {
    /// The names ssh was asked for, read on first use.
    pub fn asked(&self) -> &[String] {
        self.asked
            .get_or_init(|| crate::hostnames::candidates(self.pid))
    }
}

/// What is known about the link to one signer, besides the link itself.
#[derive(Debug, Clone, Default)]
pub(crate) struct LinkInfo {
    pub last_error: Option<String>,
    /// When the link was last up.
    pub last_seen: Option<u64>,
    /// Since when the link is in its current state.
    pub since: Option<u64>,
    /// When a wake message was last sent.
    pub woken: Option<u64>,
}

/// How many outcomes `status` keeps.
const RECENT: usize = 10;

pub struct Agent {
    pub home: AgentHome,
    pub config: AgentConfig,
    pub identity: Identity,
    pub name: String,
    pub feedback: Feedback,
    /// Paired signers; addresses change as discovery finds them.
    pub(crate) signers: Mutex<Vec<PairedSigner>>,
    keys: Mutex<Vec<CachedKey>>,
    pub(crate) links: Mutex<HashMap<String, SignerLink>>,
    pub(crate) link_info: Mutex<HashMap<String, LinkInfo>>,
    pub(crate) dialing: HashMap<String, tokio::sync::Mutex<()>>,
    /// Salt and SHA-256 of the LOCK passphrase while locked.
    locked: Mutex<Option<([u8; 16], [u8; 32])>>,
    log: Mutex<Journal>,
    socket_path: Mutex<Option<String>>,
    pub(crate) certs: Mutex<Lifecycle>,
    /// Wakes whoever waits for a certificate request to end.
    pub(crate) cert_done: tokio::sync::Notify,
    waiting: Mutex<Vec<Waiting>>,
    recent: Mutex<VecDeque<Outcome>>,
    /// Bumped on every change of what `status` shows (the tray follows it).
    changes: tokio::sync::watch::Sender<u64>,
    /// Keys vmux does not hold, from another agent (`upstream.rs`).
    pub(crate) upstream: Mutex<Option<Arc<crate::upstream::Upstream>>>,
    /// Reach beyond the local network (`reach`).
    pub(crate) reach: AgentReach,
}

impl Agent {
    pub fn open(home: AgentHome) -> Result<Arc<Agent>, AgentError> {
        let config = home.load_config()?;
        let feedback = Feedback::parse(&config.feedback)
            .map_err(|e| AgentError::Proto(vmux_proto::ProtoError::file(home.config(), e)))?;
        if !["auto", "off"].contains(&config.tray.as_str()) {
            return Err(AgentError::Proto(vmux_proto::ProtoError::file(
                home.config(),
                format!("tray = {:?}: use \"auto\" or \"off\"", config.tray),
            )));
        }
        let identity = Identity::load_or_create(&home.identity())?;
        let signers = home.load_signers()?;
        let keys = home.load_keys()?;
        // The agent's log rotates at 64 MiB, 8 files kept, like the signer's default.
        let log = Journal::open(&home.log())?.rotate_at(64 << 20, 8);
        let dialing = signers
            .iter()
            .map(|s| (s.id.clone(), tokio::sync::Mutex::new(())))
            .collect();
        let certs = Lifecycle::new(config.session_certs, config.cert_validity_secs);
        let upstream = crate::upstream::from_config(&config);
        Ok(Arc::new(Agent {
            name: home.device_name(&config),
            home,
            config,
            identity,
            feedback,
            signers: Mutex::new(signers),
            keys: Mutex::new(keys),
            links: Default::default(),
            link_info: Default::default(),
            dialing,
            locked: Mutex::new(None),
            log: Mutex::new(log),
            socket_path: Mutex::new(None),
            certs: Mutex::new(certs),
            cert_done: Default::default(),
            waiting: Default::default(),
            recent: Default::default(),
            changes: tokio::sync::watch::channel(0).0,
            upstream: Mutex::new(upstream),
            reach: Default::default(),
        }))
    }

    pub fn signers(&self) -> Vec<PairedSigner> {
        self.signers.lock().unwrap().clone()
    }

    /// The name of a paired signer (its id when unknown).
    pub fn signer_name(&self, id: &str) -> String {
        self.signers()
            .into_iter()
            .find(|s| s.id == id)
            .map(|s| s.name)
            .unwrap_or_else(|| id.to_string())
    }

    pub fn is_locked(&self) -> bool {
        self.locked.lock().unwrap().is_some()
    }

    /// The session certificate, if there is one and it has not expired.
    pub fn valid_cert(&self) -> Option<Arc<SessionCert>> {
        self.certs.lock().unwrap().valid(now_unix())
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
        let signers = self.signers.lock().unwrap();
        ids.extend(
            self.keys
                .lock()
                .unwrap()
                .iter()
                .filter(|k| k.record.enabled && signers.iter().any(|s| s.id == k.signer_id))
                .map(|k| (k.record.public_key.clone(), k.record.comment.clone())),
        );
        ids
    }

    pub fn cached_keys(&self) -> Vec<CachedKey> {
        self.keys.lock().unwrap().clone()
    }

    /// The cached record of `key_blob` and the signer that holds it.
    pub fn key(&self, key_blob: &[u8]) -> Option<CachedKey> {
        self.keys
            .lock()
            .unwrap()
            .iter()
            .find(|k| k.record.public_key == key_blob)
            .cloned()
    }

    /// The paired signer that holds `key_blob`, from the cached key lists.
    pub fn signer_of(&self, key_blob: &[u8]) -> Option<PairedSigner> {
        let id = self.key(key_blob)?.signer_id;
        self.signers().into_iter().find(|s| s.id == id)
    }

    pub(crate) fn update_keys(&self, signer_id: &str, records: Vec<KeyRecord>) {
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
            drop(keys);
            self.write_status();
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

    /// Forget the session certificate and its key (`ssh-add -D`, LOCK, reset). Nothing
    /// is asked again until a login needs a certificate.
    pub fn drop_cert(&self, why: &str) -> bool {
        let had = self.certs.lock().unwrap().drop_cert(why);
        if had {
            tracing::info!("session certificate dropped: {why}");
        }
        self.write_status();
        had
    }

    pub(crate) fn record<T: serde::Serialize + ?Sized>(&self, rec: &T) {
        if let Err(e) = self.log.lock().unwrap().append_record(rec) {
            tracing::error!("request log: {e}");
        }
    }

    /// A request started waiting on `signer`; returns its id for [`Agent::done_waiting`].
    pub(crate) fn start_waiting(&self, mut w: Waiting) -> String {
        w.id = vmux_proto::identity::hex(&random_bytes::<6>());
        w.since = now_unix();
        let id = w.id.clone();
        self.waiting.lock().unwrap().push(w);
        self.write_status();
        id
    }

    pub(crate) fn set_waiting_phase(&self, id: &str, phase: &str) {
        if let Some(w) = self.waiting.lock().unwrap().iter_mut().find(|w| w.id == id) {
            w.phase = phase.to_string();
        }
        self.write_status();
    }

    /// A request stopped waiting; `outcome` says how it ended (`None`: cancelled).
    pub(crate) fn done_waiting(&self, id: &str, outcome: Option<Outcome>) {
        self.waiting.lock().unwrap().retain(|w| w.id != id);
        if let Some(o) = outcome {
            let mut r = self.recent.lock().unwrap();
            r.push_front(o);
            r.truncate(RECENT);
        }
        self.write_status();
    }

    /// Remember how a request that never waited ended (refused at once, or signed here).
    pub(crate) fn outcome(&self, o: Outcome) {
        let mut r = self.recent.lock().unwrap();
        r.push_front(o);
        r.truncate(RECENT);
        drop(r);
        self.write_status();
    }

    /// The connection in one line: `Connected to alice-pi`, `alice-pi asleep — a
    /// request wakes it`, `No signer paired`.
    pub fn connection_line(&self) -> String {
        let signers = self.signers();
        if signers.is_empty() {
            return "No signer paired (vmux agent pair HOST)".into();
        }
        let links = self.links.lock().unwrap();
        let info = self.link_info.lock().unwrap();
        let parts: Vec<String> = signers
            .iter()
            .map(|s| {
                if links.get(&s.id).is_some_and(|l| l.is_up()) {
                    return format!("Connected to {}", s.name);
                }
                let seen = info
                    .get(&s.id)
                    .and_then(|i| i.last_seen)
                    .map(|t| format!(" (last seen {})", vmux_proto::time::hm(t)))
                    .unwrap_or_default();
                if s.wake_url.is_some() {
                    format!("{} asleep — a request wakes it{seen}", s.name)
                } else {
                    format!("{} not connected{seen}", s.name)
                }
            })
            .collect();
        parts.join("; ")
    }

    pub fn status(&self) -> Status {
        let now = now_unix();
        let certs = self.certs.lock().unwrap();
        let valid = certs.valid(now);
        let certificate_line = certs.line(now);
        let certificate_expired = certificate_line.starts_with("expired");
        drop(certs);
        let connection_line = self.connection_line();
        let links = self.links.lock().unwrap();
        let info = self.link_info.lock().unwrap();
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
                .map(|s| {
                    let i = info.get(&s.id).cloned().unwrap_or_default();
                    SignerStatus {
                        id: s.id.clone(),
                        name: s.name.clone(),
                        address: s.address.clone(),
                        connected: links.get(&s.id).is_some_and(|l| l.is_up()),
                        last_error: i.last_error,
                        last_seen: i.last_seen,
                        since: i.since,
                        wakeable: s.wake_url.is_some(),
                        clock_skew_secs: links.get(&s.id).and_then(|l| l.clock_skew_secs),
                        ..route_status(links.get(&s.id), s)
                    }
                })
                .collect(),
            certificate: valid.map(|c| CertStatus {
                key_id: c.key_id.clone(),
                serial: c.serial,
                principals: c.principals.clone(),
                valid_after: c.valid_after,
                valid_before: c.valid_before,
                signer: c.signer_id.clone(),
            }),
            certificate_expired,
            certificate_line,
            connection_line,
            waiting: self.waiting.lock().unwrap().clone(),
            recent: self.recent.lock().unwrap().iter().cloned().collect(),
            written: now,
            upstream: self.upstream_info(),
        }
    }

    /// Record where this agent serves and write the status file.
    pub fn write_status_at(&self, socket: &std::path::Path) {
        *self.socket_path.lock().unwrap() = Some(socket.display().to_string());
        self.write_status_now();
    }

    /// The status changed: the status file is rewritten (by the writer task, at most
    /// every 50 ms) and whoever follows the status (the tray) hears of it.
    pub fn write_status(&self) {
        self.changes.send_modify(|n| *n += 1);
    }

    /// Write the status file now.
    pub fn write_status_now(&self) {
        if let Err(e) =
            vmux_proto::store::write_json_shown(&self.home.status_file(), &self.status())
        {
            tracing::warn!("{e}");
        }
    }

    /// Keep the status file up to date: one write for every burst of changes.
    pub(crate) fn spawn_status_writer(self: &Arc<Self>) {
        let (agent, mut rx) = (Arc::downgrade(self), self.watch_status());
        tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                rx.borrow_and_update();
                match agent.upgrade() {
                    Some(a) => a.write_status_now(),
                    None => return,
                }
            }
        });
    }

    /// Follow status changes (the tray redraws on each).
    pub fn watch_status(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
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

/// The agent's reach: its configuration (re-read when the file changes) and its iroh
/// endpoint, made on first use.
#[derive(Default)]
pub struct AgentReach {
    pub(crate) config: std::sync::Mutex<(
        Option<std::time::SystemTime>,
        vmux_proto::reach::ReachConfig,
    )>,
    #[cfg(feature = "reach")]
    pub(crate) endpoint:
        tokio::sync::Mutex<Option<(vmux_proto::reach::ReachConfig, iroh::Endpoint)>>,
}

/// The link's route for status: its path and round-trip time while connected, and
/// how reach stands between this device and the signer.
fn route_status(
    link: Option<&crate::link::SignerLink>,
    s: &crate::state::PairedSigner,
) -> crate::status::SignerStatus {
    let path = link.filter(|l| l.is_up()).and_then(|l| l.path());
    crate::status::SignerStatus {
        path: path.as_ref().map(|p| p.0.clone()),
        rtt_ms: path
            .and_then(|p| p.1)
            .map(|d| (d.as_secs_f64() * 10_000.0).round() / 10.0),
        reach: s
            .reach
            .as_ref()
            .map(|r| if r.anywhere { "anywhere" } else { "local" }.to_string()),
        ..Default::default()
    }
}
