//! One client connection: decode a request, answer it. Session bindings are kept per
//! connection, as OpenSSH's agent does, for the requests that follow on it.

use crate::agent::{Agent, Caller};
use crate::destination::Binding;
use crate::upstream;
use crate::wire::{self, Request, Response};
use std::sync::Arc;

pub struct Session {
    agent: Arc<Agent>,
    pub caller: Caller,
    pub bindings: Vec<Binding>,
    /// Names for hashed known_hosts entries, from the caller's command line (once).
    /// This connection's line to the upstream agent, if one is configured.
    upstream: upstream::Conn,
}

/// Extensions this agent answers. The `@vmux.dev` ones are how `vmux agent
/// request-cert` and `vmux agent reset` reach the running agent (same uid only).
pub const EXTENSIONS: &[&str] = &[
    "query",
    "session-bind@openssh.com",
    REQUEST_CERT,
    RESET,
    REFRESH,
    STATUS,
];
pub const REQUEST_CERT: &str = "request-cert@vmux.dev";
pub const RESET: &str = "reset@vmux.dev";
pub const REFRESH: &str = "refresh@vmux.dev";
/// The agent's status as JSON (what `vmux agent status` and `vmux status` show).
pub const STATUS: &str = "status@vmux.dev";

impl Session {
    pub fn new(agent: Arc<Agent>, caller: Caller) -> Self {
        Session {
            agent,
            caller,
            bindings: vec![],
            upstream: Default::default(),
        }
    }

    /// Whether this connection carries a forwarded agent (`ssh -A` on the far side).
    pub fn forwarded(&self) -> bool {
        self.bindings.iter().any(|b| b.bind.is_forwarding)
    }

    /// Answer one message body. A message that does not decode fails alone.
    pub async fn handle(&mut self, msg: &[u8]) -> Response {
        let req = match wire::parse_request(msg) {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!("{e}");
                return Response::Failure;
            }
        };
        let fwd = self.forwarded();
        // Keys vmux does not hold, and ssh-add's changes, go to the upstream agent.
        if let Some(r) = self.upstream_hook(&req, msg, fwd).await {
            return r;
        }
        match req {
            Request::RequestIdentities => {
                // A login (ssh binds the session before it lists keys) that would use a
                // session certificate asks for one first, and waits for the person.
                if !self.bindings.is_empty() && !fwd {
                    self.agent.cert_for_login(&self.caller).await;
                }
                let mut ids = self.agent.identities_for(fwd);
                let more =
                    crate::passthrough::identities(&self.agent, &mut self.upstream, fwd, &ids)
                        .await;
                ids.extend(more);
                Response::Identities(ids)
            }
            Request::Sign {
                key_blob,
                data,
                flags,
            } => match self
                .agent
                .sign(&key_blob, &data, flags, &self.caller, &self.bindings)
                .await
            {
                Ok(sig) => Response::Signature(sig),
                Err(code) => {
                    tracing::info!(
                        "sign request from {} failed: {code}",
                        self.caller
                            .requester
                            .as_deref()
                            .unwrap_or("an unknown process")
                    );
                    Response::Failure
                }
            },
            // This agent holds no long-term keys: nothing can be added here (an upstream
            // agent takes them, above). Removing all identities (`ssh-add -D`) drops the
            // session certificate, the one key held here.
            Request::AddKey => {
                tracing::info!(
                    "ssh-add: vmux holds no keys; an upstream agent (`upstream` in the agent's config) would take them"
                );
                Response::Failure
            }
            // Like OpenSSH's agent, success even when there was nothing to drop.
            Request::RemoveAllIdentities => {
                self.agent.drop_cert("dropped by ssh-add -D");
                Response::Success
            }
            Request::RemoveIdentity { key_blob } => {
                let is_cert = self
                    .agent
                    .valid_cert()
                    .is_some_and(|c| c.matches(&key_blob));
                ok(is_cert && self.agent.drop_cert("dropped by ssh-add -d"))
            }
            Request::Lock { passphrase } => ok(self.agent.lock(&passphrase)),
            Request::Unlock { passphrase } => {
                let unlocked = self.agent.unlock(&passphrase);
                if !unlocked {
                    // Slow down passphrase guessing, as OpenSSH does.
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
                ok(unlocked)
            }
            // vmux's own extensions are for this workstation's user, never for a host
            // that reached the agent through forwarding.
            Request::Extension { name, .. } if name.ends_with("@vmux.dev") && self.forwarded() => {
                tracing::warn!("refused {name} on a forwarded agent connection");
                Response::Failure
            }
            Request::Extension { name, .. } if name == REFRESH => {
                let asked = self.agent.refresh().await;
                tracing::info!("refresh: asked {asked} connected signer(s) for their keys");
                // Give the answers a moment to land, so `ssh-add -l` right after sees them.
                tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                ok(asked > 0)
            }
            Request::Extension { name, contents } if name == REQUEST_CERT => {
                let validity = match contents.as_slice() {
                    [] => self.agent.config.cert_validity_secs,
                    [a, b, c, d] => u32::from_be_bytes([*a, *b, *c, *d]) as u64,
                    _ => return Response::Failure,
                };
                match self
                    .agent
                    .request_cert(validity, true, self.caller.tty.clone())
                    .await
                {
                    Ok(()) => Response::Success,
                    Err(r) => {
                        tracing::warn!("session certificate: {}", r.reason);
                        Response::Failure
                    }
                }
            }
            Request::Extension { name, contents } => {
                let r = self.extension(&name, &contents);
                if name == "session-bind@openssh.com" && r == Response::Success {
                    crate::passthrough::bind(&mut self.upstream, &self.agent, msg).await;
                }
                r
            }
            Request::Unknown(_) => Response::Failure,
        }
    }

    /// The upstream agent's part of a request (`upstream.rs`): its keys' signatures,
    /// and ssh-add's additions and removals. `None`: vmux answers alone. Removing all
    /// keys and locking act on vmux as well, below.
    async fn upstream_hook(&mut self, req: &Request, msg: &[u8], fwd: bool) -> Option<Response> {
        let (agent, conn) = (&self.agent, &mut self.upstream);
        match req {
            Request::Sign { key_blob, data, .. } => {
                crate::passthrough::sign(agent, conn, fwd, &self.caller, key_blob, data, msg).await
            }
            Request::AddKey => crate::passthrough::pass(agent, conn, fwd, msg, "ssh-add").await,
            Request::RemoveIdentity { key_blob }
                if !agent.valid_cert().is_some_and(|c| c.matches(key_blob)) =>
            {
                crate::passthrough::pass(agent, conn, fwd, msg, "ssh-add -d").await
            }
            Request::RemoveAllIdentities => {
                crate::passthrough::pass(agent, conn, fwd, msg, "ssh-add -D").await;
                None
            }
            Request::Lock { .. } if !agent.is_locked() => {
                crate::passthrough::pass(agent, conn, fwd, msg, "ssh-add -x").await;
                None
            }
            Request::Unlock { .. } if agent.is_locked() => {
                crate::passthrough::pass(agent, conn, fwd, msg, "ssh-add -X").await;
                None
            }
            _ => None,
        }
    }

    fn extension(&mut self, name: &str, contents: &[u8]) -> Response {
        match name {
            "query" => Response::Extension {
                name: "query".into(),
                contents: wire::encode_strings(EXTENSIONS),
            },
            "session-bind@openssh.com" => match wire::parse_session_bind(contents) {
                Ok(b) => {
                    // OpenSSH caps bindings per connection; so do we, against a flood.
                    if self.bindings.len() >= 16 {
                        return Response::Failure;
                    }
                    // A binding that does not verify is kept: every signature on this
                    // connection is then refused (ssh goes on after a failed bind).
                    let b = Binding::check(b, &self.agent.config.known_hosts, self.caller.asked());
                    let ok = b.signature_ok != Some(false);
                    self.bindings.push(b);
                    if ok {
                        Response::Success
                    } else {
                        Response::Failure
                    }
                }
                Err(e) => {
                    tracing::debug!("{e}");
                    Response::Failure
                }
            },
            RESET => {
                self.agent.drop_cert("dropped by vmux agent reset");
                Response::Success
            }
            STATUS => Response::Extension {
                name: STATUS.into(),
                contents: serde_json::to_vec(&self.agent.status()).unwrap_or_default(),
            },
            _ => Response::Failure,
        }
    }
}

fn ok(b: bool) -> Response {
    if b {
        Response::Success
    } else {
        Response::Failure
    }
}
