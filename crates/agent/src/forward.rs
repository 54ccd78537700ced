//! One signature: signed here with the session certificate (a local login), or routed
//! to the signer that holds the key, where a person decides. Either way the request is
//! logged with its outcome and reason, and the person at the workstation is told what
//! it waits for and how it ended (`feedback`).

use crate::agent::{Agent, Caller};
use crate::context;
use crate::destination::{self, Binding, Destination};
use crate::feedback::Notice;
use crate::status::{Outcome, Waiting};
use crate::AgentError;
use std::time::{Duration, Instant};
use uuid::Uuid;
use vmux_proto::envelope::{Context, Origin, SessionBinding, SignRequest};
use vmux_proto::identity::key_fingerprint;
use vmux_proto::sshdata::Parsed;
use vmux_proto::{now_unix, random_bytes, ErrorCode};

/// Why a request was not signed: the code for the log, the words for the person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: ErrorCode,
    /// `denied on alice-pi`, `expired after 60 s on alice-pi`, …
    pub reason: String,
}

impl Refusal {
    fn new(code: ErrorCode, reason: impl Into<String>) -> Refusal {
        Refusal {
            code,
            reason: reason.into(),
        }
    }

    /// The outcome word for the log and status (`denied`, `expired`, …).
    pub fn result(&self) -> &'static str {
        match self.code {
            ErrorCode::UserDenied => "denied",
            ErrorCode::RequestExpired => "expired",
            ErrorCode::SignerUnavailable => "unreachable",
            _ => "refused",
        }
    }
}

/// What a request is, for the person: `login root@prod`, `git signature`.
pub fn describe(parsed: &Parsed, dest: &Destination) -> String {
    match (parsed.kind, parsed.namespace.as_deref()) {
        ("login", _) => {
            let user = parsed
                .user
                .as_deref()
                .map(vmux_proto::text::field)
                .unwrap_or_default();
            let host = dest
                .name
                .clone()
                .or_else(|| dest.host.clone())
                .unwrap_or_else(|| "?".into());
            let via = if dest.forwarded { " (forwarded)" } else { "" };
            format!("login {user}@{}{via}", vmux_proto::text::field(&host))
        }
        ("sshsig", Some("git")) => "git signature".into(),
        ("sshsig", Some("file")) => "file signature".into(),
        ("sshsig", Some(ns)) => format!("signature ({})", vmux_proto::text::field(ns)),
        _ => "unrecognised data".into(),
    }
}

/// The person's words for a signer's refusal (`message`: what the signer said, if any).
pub fn refusal_reason(code: ErrorCode, signer: &str, window: u64, message: Option<&str>) -> String {
    let said = message
        .map(|m| vmux_proto::text::inert(m, 200))
        .filter(|m| !m.is_empty());
    match code {
        ErrorCode::UserDenied => format!("denied on {signer}"),
        ErrorCode::RequestExpired => {
            format!("expired after {window} s on {signer} (nobody answered)")
        }
        ErrorCode::PresenceFailed => format!(
            "refused: user verification failed on {signer}{}",
            said.map(|m| format!(" ({m})")).unwrap_or_default()
        ),
        c => match said {
            Some(m) => format!("refused: {m}"),
            None => format!("refused by {signer}: {c}"),
        },
    }
}

/// One line of the request log (`requests.log`), serialised as it is: a map built per
/// request showed in the agent's profile (scripts/bench). The journal adds the chain's
/// `seq` and `prev`.
#[derive(serde::Serialize, Default)]
#[serde(rename_all = "camelCase")]
struct Logged<'a> {
    time: u64,
    request_id: Uuid,
    key: &'a str,
    pid: Option<i32>,
    requester: Option<&'a str>,
    kind: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    quality: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    host: Option<&'a str>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    hops: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    what: Option<&'a str>,
    decision: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    latency_ms: Option<u64>,
}

impl Agent {
    /// One signature: route to the signer holding the key and wait for a person there,
    /// or sign here with the session certificate.
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
        let key = key_fingerprint(key_blob);
        let mut rec = Logged {
            time: now_unix(),
            request_id,
            key: &key,
            pid: caller.pid,
            requester: caller.requester.as_deref(),
            kind: parsed.kind,
            ..Logged::default()
        };
        let dest = match destination::resolve(bindings, &parsed) {
            Ok(d) => d,
            Err(e) => {
                let reason = format!("refused here: {e}");
                tracing::warn!(
                    "refused a signature for {}: {e}",
                    caller.requester.as_deref().unwrap_or("an unknown process")
                );
                rec.decision = "bindingRefused";
                rec.reason = Some(&reason);
                self.record(&rec);
                let r = Refusal::new(ErrorCode::PolicyDenied, reason);
                self.tell(caller, false, "a signature", &r);
                return Err(ErrorCode::PolicyDenied);
            }
        };
        let mut what = describe(&parsed, &dest);
        if parsed.kind == "login" && dest.name.is_none() && !dest.forwarded {
            // known_hosts does not name the server: say what ssh was asked for (this
            // line is for this workstation's own person; the signer never trusts it).
            if let Some(asked) = caller.asked().first() {
                let user = parsed.user.as_deref().map(vmux_proto::text::field);
                what = format!(
                    "login {}@{}",
                    user.unwrap_or_default(),
                    vmux_proto::text::field(&asked.replace(['[', ']'], ""))
                );
            }
        }
        rec.namespace = parsed.namespace.as_deref();
        rec.user = parsed.user.as_deref();
        rec.quality = Some(dest.quality);
        rec.host = dest.host.as_deref();
        rec.hops = &dest.hops;
        rec.what = Some(&what);
        let locked = self.is_locked();
        let listed_cert = self.certs.lock().unwrap().cert.clone();
        let here = listed_cert.as_ref().is_some_and(|c| c.matches(key_blob));
        // What the signer is sent when a person there must decide.
        let ask = |session_cert: Option<String>| Ask {
            request_id,
            key_blob,
            data,
            flags,
            origin: Origin::Agent,
            context: Context {
                requester: caller.requester.clone(),
                kind: parsed.kind.to_string(),
                namespace: parsed.namespace.clone(),
                user: parsed.user.clone(),
                host: dest.name.clone(),
                quality: dest.quality.into(),
                host_key_fingerprint: dest.host_key_fingerprint.clone(),
                hops: dest.hops.clone(),
            },
            bindings: bindings
                .iter()
                .map(|b| SessionBinding {
                    host_key: b.bind.host_key.clone(),
                    session_id: b.bind.session_id.clone(),
                    signature: b.bind.signature.clone(),
                    is_forwarding: b.bind.is_forwarding,
                })
                .collect(),
            what: &what,
            requester: caller.requester.clone(),
            // Never a terminal for a request that came through forwarding.
            tty: caller.tty.clone().filter(|_| !dest.forwarded),
            session_cert,
        };
        let result = match listed_cert.filter(|c| c.matches(key_blob)) {
            // The session certificate signs logins only: not git/file signatures or
            // unrecognised data, and not for a host further along an `ssh -A` chain
            // (unless `forwarded_cert` says so).
            Some(c) => {
                // Signed here without a prompt only for a login the agent can prove is
                // this workstation's own: a client that bound the session (OpenSSH ≥ 8.9)
                // and forwards nothing. A client that binds nothing (paramiko, Go, older
                // OpenSSH) may be relaying a forwarded agent: the person on the signer
                // approves each such login, then it is signed here.
                let bound = matches!(dest.quality, "verified" | "bound");
                let login = parsed.kind == "login" && !locked;
                if !c.is_valid_at(now_unix()) {
                    Err(Refusal::new(
                        ErrorCode::PolicyDenied,
                        format!(
                            "refused: the session certificate expired at {}; `vmux agent request-cert` asks for a new one",
                            vmux_proto::time::hm(c.valid_before)
                        ),
                    ))
                } else if login
                    && ((bound && !dest.forwarded)
                        || (dest.forwarded && self.config.forwarded_cert))
                {
                    c.sign(data).map_err(|code| {
                        Refusal::new(code, "refused: the session key could not sign")
                    })
                } else if login && !dest.forwarded {
                    match self.forward(ask(Some(c.signer_id.clone()))).await {
                        Ok(_) => c.sign(data).map_err(|code| {
                            Refusal::new(code, "refused: the session key could not sign")
                        }),
                        Err(r) => Err(r),
                    }
                } else {
                    Err(Refusal::new(
                        ErrorCode::PolicyDenied,
                        "refused: the session certificate signs only this workstation's own logins",
                    ))
                }
            }
            None => self.forward(ask(None)).await,
        };
        if let (true, Err(r)) = (here, &result) {
            // Refused here, without a round trip: say why all the same.
            self.tell(caller, dest.forwarded, &what, r);
        }
        self.log_outcome(rec, &result, here, started);
        result.map_err(|r| r.code)
    }

    /// One signature for `vmux ssh` (origin `client`): the caller is the SSH client
    /// itself, so it knows the destination and hands over the session binding it
    /// verified during key exchange; the signer checks that binding again. Logged like
    /// an agent request; the refusal's words come back for the client to print.
    pub async fn sign_direct(
        &self,
        key_blob: &[u8],
        data: &[u8],
        flags: u32,
        context: Context,
        binding: SessionBinding,
    ) -> Result<Vec<u8>, Refusal> {
        let started = Instant::now();
        let request_id = Uuid::new_v4();
        let what = format!(
            "login {}@{}",
            context.user.as_deref().unwrap_or("?"),
            context.host.as_deref().unwrap_or("?")
        );
        let (key, context_kept) = (key_fingerprint(key_blob), context.clone());
        let rec = Logged {
            time: now_unix(),
            request_id,
            key: &key,
            pid: Some(std::process::id() as i32),
            requester: context_kept.requester.as_deref(),
            kind: &context_kept.kind,
            user: context_kept.user.as_deref(),
            host: context_kept.host.as_deref(),
            quality: Some(&context_kept.quality),
            what: Some(&what),
            ..Logged::default()
        };
        let ask = Ask {
            request_id,
            key_blob,
            data,
            flags,
            origin: Origin::Client,
            requester: context.requester.clone(),
            context,
            bindings: vec![binding],
            what: &what,
            tty: None,
            session_cert: None,
        };
        let result = self.forward(ask).await;
        self.log_outcome(rec, &result, false, started);
        result
    }

    /// A request's line in the log, with how it ended (`here`: signed with the session
    /// certificate) and how long it took.
    fn log_outcome<T>(
        &self,
        rec: Logged<'_>,
        result: &Result<T, Refusal>,
        here: bool,
        started: Instant,
    ) {
        let code = result.as_ref().err().map(|r| r.code.to_string());
        self.record(&Logged {
            decision: match &code {
                Some(c) => c,
                None if here => "local-cert",
                None => "approved",
            },
            reason: result.as_ref().err().map(|r| r.reason.as_str()),
            latency_ms: Some(started.elapsed().as_millis() as u64),
            ..rec
        });
    }

    /// A request refused here at once: its reason on the requester's terminal (never
    /// through forwarding) and in the status.
    fn tell(&self, caller: &Caller, forwarded: bool, what: &str, r: &Refusal) {
        let tty = caller.tty.clone().filter(|_| !forwarded);
        crate::feedback::say(self.feedback, tty, &r.reason);
        self.outcome(Outcome {
            time: now_unix(),
            id: String::new(),
            what: what.to_string(),
            requester: caller.requester.clone(),
            result: r.result().into(),
            reason: r.reason.clone(),
        });
    }

    async fn forward(&self, ask: Ask<'_>) -> Result<Vec<u8>, Refusal> {
        if self.is_locked() {
            return Err(Refusal::new(
                ErrorCode::PolicyDenied,
                "refused: the agent is locked (ssh-add -X unlocks it)",
            ));
        }
        let held = ask
            .session_cert
            .clone()
            .or_else(|| self.key(ask.key_blob).map(|k| k.signer_id));
        let Some(signer_id) = held else {
            return Err(Refusal::new(
                ErrorCode::KeyNotFound,
                "refused: no paired signer holds this key (`vmux agent refresh` asks them again)",
            ));
        };
        let signer = self.signer_name(&signer_id);
        let linked = self.is_linked(&signer_id);
        let notice = Notice::start(self.feedback, ask.tty.clone(), &signer, ask.what, linked);
        let waiting = self.start_waiting(Waiting {
            signer: signer.clone(),
            what: ask.what.to_string(),
            requester: ask.requester.clone(),
            phase: if linked { "approval" } else { "connecting" }.into(),
            ..Default::default()
        });
        let mut guard = WaitGuard {
            agent: self,
            id: waiting.clone(),
            outcome: None,
        };
        let result = self
            .round_trip(&signer_id, &signer, &ask, &notice, &waiting)
            .await;
        let (approved, reason) = match &result {
            Ok(_) => (true, format!("approved on {signer}")),
            Err(r) => (false, r.reason.clone()),
        };
        guard.outcome = Some(Outcome {
            time: now_unix(),
            id: ask.request_id.to_string(),
            what: ask.what.to_string(),
            requester: ask.requester.clone(),
            result: match &result {
                Ok(_) => "approved".into(),
                Err(r) => r.result().into(),
            },
            reason: reason.clone(),
        });
        notice.finish(approved, &reason);
        result
    }

    /// Link, send, wait for the person: the request itself.
    async fn round_trip(
        &self,
        signer_id: &str,
        signer: &str,
        ask: &Ask<'_>,
        notice: &Notice,
        waiting: &str,
    ) -> Result<Vec<u8>, Refusal> {
        let unreachable = |e: &AgentError| {
            let code = match e {
                AgentError::Refused(code @ ErrorCode::PairingInvalid, _) => *code,
                _ => ErrorCode::SignerUnavailable,
            };
            Refusal::new(code, self.unreachable_reason(signer_id, e))
        };
        let link = self
            .link_or_wake(signer_id)
            .await
            .map_err(|e| unreachable(&e))?;
        notice.approval_phase();
        self.set_waiting_phase(waiting, "approval");
        let issued = now_unix();
        let window = self.config.request_window_secs;
        let algorithm = self
            .key(ask.key_blob)
            .map(|k| k.record.algorithm)
            .unwrap_or_default();
        let req = SignRequest {
            request_id: ask.request_id,
            key_blob: ask.key_blob.to_vec(),
            algorithm,
            flags: ask.flags,
            device_id: self.identity.device_id(),
            device_name: self.name.clone(),
            origin: ask.origin,
            data: ask.data.to_vec(),
            nonce: random_bytes::<16>().to_vec(),
            issued,
            expires: issued + window,
            context: ask.context.clone(),
            bindings: ask.bindings.clone(),
            session_cert: ask.session_cert.is_some(),
        };
        // A little past the window: the signer answers requestExpired itself at expiry.
        let wait = Duration::from_secs(window + 5);
        let sent = Instant::now();
        let lost = |e: AgentError| match e {
            AgentError::Timeout(_) => Refusal::new(
                ErrorCode::RequestExpired,
                format!("expired after {window} s on {signer} (no answer)"),
            ),
            e => Refusal::new(
                e.code(),
                format!("the link to {signer} broke while it waited: {e}"),
            ),
        };
        let resp = match link.sign(req.clone(), wait).await {
            // The link died under the request before the signer could have seen it (a
            // restart, a revocation): once more on a fresh link, with a fresh nonce.
            Err(AgentError::LinkLost(_) | AgentError::Proto(_))
                if sent.elapsed() < Duration::from_secs(2) =>
            {
                let link = self
                    .link_or_wake(signer_id)
                    .await
                    .map_err(|e| unreachable(&e))?;
                let mut again = req;
                again.nonce = random_bytes::<16>().to_vec();
                link.sign(again, wait).await.map_err(lost)?
            }
            r => r.map_err(lost)?,
        };
        match (resp.approved, resp.signature) {
            (true, Some(sig)) => Ok(sig),
            // Approved for the session certificate: the caller signs here.
            (true, None) if ask.session_cert.is_some() => Ok(vec![]),
            _ => {
                let code = resp.error.unwrap_or(ErrorCode::Internal);
                Err(Refusal::new(
                    code,
                    refusal_reason(code, signer, window, resp.message.as_deref()),
                ))
            }
        }
    }
}

/// What `forward` sends, and who to tell.
struct Ask<'a> {
    request_id: Uuid,
    key_blob: &'a [u8],
    data: &'a [u8],
    flags: u32,
    origin: Origin,
    context: Context,
    bindings: Vec<SessionBinding>,
    what: &'a str,
    requester: Option<String>,
    tty: Option<std::path::PathBuf>,
    /// The key is the session certificate this signer issued: the person approves,
    /// the agent signs (the signer's id).
    session_cert: Option<String>,
}

/// Takes a request off the waiting list however `forward` ends (an outcome, or the
/// requester going away, which drops the future).
struct WaitGuard<'a> {
    agent: &'a Agent,
    id: String,
    outcome: Option<Outcome>,
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        self.agent.done_waiting(&self.id, self.outcome.take());
    }
}
