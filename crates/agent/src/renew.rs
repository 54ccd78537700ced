//! The session certificate's flows: asking a signer's CA for one (a person approves
//! there), renewing it, and asking at a login that would use one. When to ask is
//! decided by [`crate::cert::Lifecycle`]; this file does the asking.

use crate::agent::{Agent, Caller};
use crate::cert::{ephemeral_key, public_blob, Answer, SessionCert};
use crate::feedback::Notice;
use crate::forward::{refusal_reason, Refusal};
use crate::status::{Outcome, Waiting};
use crate::AgentError;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;
use vmux_proto::envelope::CertificateRequest;
use vmux_proto::time::{duration, hm};
use vmux_proto::{now_unix, random_bytes, ErrorCode};

impl Agent {
    /// Ask a reachable signer's CA for a session certificate for `validity` seconds,
    /// naming this workstation's user as the principal. `explicit`: asked for by the
    /// person (`request-cert`, the tray), which also lifts a hold after a denial.
    pub async fn request_cert(
        &self,
        validity: u64,
        explicit: bool,
        tty: Option<std::path::PathBuf>,
    ) -> Result<(), Refusal> {
        {
            let mut c = self.certs.lock().unwrap();
            if explicit {
                c.hold = crate::cert::Hold::Ask;
            }
            if let Some(s) = &c.asking {
                return Err(Refusal {
                    code: ErrorCode::Busy,
                    reason: format!("a certificate request is already waiting on {s}"),
                });
            }
            c.asking = Some("a signer".into());
        }
        self.write_status();
        let res = self.ask_for_cert(validity, tty).await;
        let now = now_unix();
        {
            let mut c = self.certs.lock().unwrap();
            let answer = match &res {
                Ok(cert) => {
                    c.cert = Some(cert.clone());
                    Answer::Approved(validity)
                }
                Err((r, signer)) => match r.code {
                    ErrorCode::UserDenied | ErrorCode::PolicyDenied => {
                        Answer::Denied(signer.clone())
                    }
                    ErrorCode::RequestExpired => {
                        Answer::Unanswered(format!("nobody answered on {signer} at {}", hm(now)))
                    }
                    _ => Answer::Failed,
                },
            };
            c.answered(answer, now);
        }
        self.cert_done.notify_waiters();
        self.write_status();
        match res {
            Ok(c) => {
                tracing::info!(
                    "session certificate {} valid until {}",
                    c.key_id,
                    vmux_proto::time::local_time(c.valid_before)
                );
                Ok(())
            }
            Err((r, _)) => Err(r),
        }
    }

    async fn ask_for_cert(
        &self,
        validity: u64,
        tty: Option<std::path::PathBuf>,
    ) -> Result<Arc<SessionCert>, (Refusal, String)> {
        // The first paired signer that answers; its CA certifies the key.
        let mut last: Option<(Refusal, String)> = None;
        let mut found = None;
        for s in &self.signers() {
            match self.link_or_wake(&s.id).await {
                Ok(l) => {
                    found = Some((s.id.clone(), s.name.clone(), l));
                    break;
                }
                Err(e) => {
                    let r = Refusal {
                        code: match e {
                            AgentError::Refused(c, _) => c,
                            _ => ErrorCode::SignerUnavailable,
                        },
                        reason: self.unreachable_reason(&s.id, &e),
                    };
                    last = Some((r, s.name.clone()));
                }
            }
        }
        let Some((signer_id, signer, link)) = found else {
            return Err(last.unwrap_or((
                Refusal {
                    code: ErrorCode::SignerUnavailable,
                    reason: "no signer is paired (vmux agent pair HOST)".into(),
                },
                String::new(),
            )));
        };
        self.certs.lock().unwrap().asking = Some(signer.clone());
        let what = format!("session certificate for {}", duration(validity));
        let notice = Notice::start(self.feedback, tty, &signer, &what, true);
        let waiting = self.start_waiting(Waiting {
            signer: signer.clone(),
            what: what.clone(),
            phase: "approval".into(),
            ..Default::default()
        });
        let key = ephemeral_key();
        let issued = now_unix();
        let window = self.config.request_window_secs;
        let req = CertificateRequest {
            request_id: Uuid::new_v4(),
            public_key: public_blob(&key),
            validity_secs: validity,
            principals: vec![crate::state::current_user()],
            device_id: self.identity.device_id(),
            device_name: self.name.clone(),
            nonce: random_bytes::<16>().to_vec(),
            issued,
            expires: issued + window,
        };
        let id = req.request_id;
        let resp = link.certificate(req, Duration::from_secs(window + 5)).await;
        let outcome = match resp {
            Ok(r) => match r.error {
                Some(code) => Err(Refusal {
                    code,
                    reason: refusal_reason(code, &signer, window, r.message.as_deref()),
                }),
                None => SessionCert::from_response(key, &r, &signer_id)
                    .map(Arc::new)
                    .map_err(|e| Refusal {
                        code: ErrorCode::Internal,
                        reason: format!(
                            "refused here: the certificate from {signer} is wrong: {e}"
                        ),
                    }),
            },
            Err(AgentError::Timeout(_)) => Err(Refusal {
                code: ErrorCode::RequestExpired,
                reason: format!("expired after {window} s on {signer} (no answer)"),
            }),
            Err(e) => Err(Refusal {
                code: e.code(),
                reason: format!("the link to {signer} broke while it waited: {e}"),
            }),
        };
        let (approved, reason) = match &outcome {
            Ok(c) => (
                true,
                format!(
                    "session certificate approved on {signer}, valid until {}",
                    hm(c.valid_before)
                ),
            ),
            Err(r) => (false, r.reason.clone()),
        };
        self.record(&json!({
            "time": now_unix(),
            "requestId": id.to_string(),
            "kind": "cert",
            "what": what,
            "decision": match &outcome { Ok(_) => "approved".to_string(), Err(r) => r.code.to_string() },
            "reason": (!approved).then_some(&reason),
            "validitySecs": validity,
            "validBefore": outcome.as_ref().ok().map(|c| c.valid_before),
        }));
        self.done_waiting(
            &waiting,
            Some(Outcome {
                time: now_unix(),
                id: id.to_string(),
                what,
                requester: None,
                result: match &outcome {
                    Ok(_) => "approved".into(),
                    Err(r) => r.result().into(),
                },
                reason: reason.clone(),
            }),
        );
        notice.finish(approved, &reason);
        outcome.map_err(|r| (r, signer))
    }

    /// A login is about to list keys (a local connection bound to a server): if it
    /// would use a session certificate and there is none, ask for one now (or wait for
    /// the request already on its way), so the login uses it. Bounded by the request
    /// window; a signer that is not linked is not waited for.
    pub async fn cert_for_login(&self, caller: &Caller) {
        let done = self.cert_done.notified();
        tokio::pin!(done);
        done.as_mut().enable();
        let now = now_unix();
        let (due, asking, validity) = {
            let c = self.certs.lock().unwrap();
            (c.due_for_login(now), c.asking.is_some(), c.validity)
        };
        if self.is_locked() || !self.any_linked() {
            return;
        }
        let wait = Duration::from_secs(self.config.request_window_secs + 5);
        if asking {
            let _ = tokio::time::timeout(wait, done).await;
        } else if due {
            let _ =
                tokio::time::timeout(wait, self.request_cert(validity, false, caller.tty.clone()))
                    .await;
        }
    }

    /// Once a second: forget an expired certificate; ask for one or renew it when the
    /// lifecycle says it is due.
    pub(crate) fn spawn_cert_keeper(self: &Arc<Self>) {
        let agent = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let Some(agent) = agent.upgrade() else { return };
                let now = now_unix();
                let expired = agent.certs.lock().unwrap().expire(now);
                if expired {
                    tracing::info!("session certificate expired");
                    agent.write_status();
                }
                if agent.is_locked() {
                    continue;
                }
                let due = agent.certs.lock().unwrap().due(
                    now,
                    agent.any_linked(),
                    agent.config.cert_renew_before_secs,
                );
                if let Some(validity) = due {
                    let a = agent.clone();
                    tokio::spawn(async move {
                        if let Err(r) = a.request_cert(validity, false, None).await {
                            tracing::warn!("session certificate: {}", r.reason);
                        }
                    });
                }
            }
        });
    }
}
