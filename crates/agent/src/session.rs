//! One client connection: decode a request, answer it. Session bindings are kept per
//! connection, as OpenSSH's agent does, for the requests that follow on it.

use crate::forward::{Agent, Caller};
use crate::wire::{self, Request, Response, SessionBind};
use std::sync::Arc;

pub struct Session {
    agent: Arc<Agent>,
    pub caller: Caller,
    pub bindings: Vec<SessionBind>,
}

const EXTENSIONS: &[&str] = &["query", "session-bind@openssh.com"];

impl Session {
    pub fn new(agent: Arc<Agent>, caller: Caller) -> Self {
        Session {
            agent,
            caller,
            bindings: vec![],
        }
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
        match req {
            Request::RequestIdentities => Response::Identities(self.agent.identities()),
            Request::Sign {
                key_blob,
                data,
                flags,
            } => match self.agent.sign(&key_blob, &data, flags, &self.caller).await {
                Ok(sig) => Response::Signature(sig),
                Err(code) => {
                    tracing::info!(
                        "sign request from {:?} failed: {code}",
                        self.caller.requester
                    );
                    Response::Failure
                }
            },
            // This agent holds no keys: nothing can be added or removed.
            Request::AddKey | Request::RemoveIdentity { .. } | Request::RemoveAllIdentities => {
                Response::Failure
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
            Request::Extension { name, contents } => self.extension(&name, &contents),
            Request::Unknown(_) => Response::Failure,
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
                    self.bindings.push(b);
                    Response::Success
                }
                Err(e) => {
                    tracing::debug!("{e}");
                    Response::Failure
                }
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
