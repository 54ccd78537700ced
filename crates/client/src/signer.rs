//! The signer, as `vmux ssh` reaches it: its own paired device (`<vmux home>/client/`,
//! made by `vmux client pair`), the agent's link and routing code underneath, requests
//! sent with origin `client` and the session binding the client verified itself.

use crate::config::Target;
use crate::ClientError;
use russh::keys::agent::AgentIdentity;
use russh::keys::HashAlg;
use ssh_key::PublicKey;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use vmux_agent::{Agent, AgentError, AgentHome};
use vmux_proto::envelope::{Context, SessionBinding};
use vmux_proto::ErrorCode;

/// A key a signer offers, in the order the client tries them.
#[derive(Debug, Clone)]
pub struct Offer {
    pub blob: Vec<u8>,
    pub key: PublicKey,
    pub comment: String,
    pub signer: String,
}

#[derive(Clone)]
pub struct Signers {
    pub agent: Arc<Agent>,
    /// `--signer`: the one route to try (signer id, the route as given, the address
    /// the signer had before, restored when the route fails).
    explicit: Option<(String, String, String)>,
}

impl Signers {
    pub fn open(vmux_home: &Path) -> Result<Signers, ClientError> {
        let agent = Agent::open(AgentHome::client(vmux_home))?;
        if agent.signers().is_empty() {
            return Err(ClientError::NotPaired);
        }
        Ok(Signers {
            agent,
            explicit: None,
        })
    }

    /// `--signer HOST:PORT` (one paired signer) or `ID=HOST:PORT`: that route only. It
    /// is kept as the signer's address once the signer answered there.
    pub fn route(&mut self, route: &str) -> Result<(), ClientError> {
        let paired = self.agent.signers();
        let (id, addr) = match route.split_once('=') {
            Some((id, addr)) => (id.to_string(), addr),
            None if paired.len() == 1 => (paired[0].id.clone(), route),
            None => {
                return Err(ClientError::Config(format!(
                    "--signer {route}: several signers are paired; write ID=HOST:PORT"
                )))
            }
        };
        let before = paired
            .iter()
            .find(|s| s.id == id)
            .map(|s| s.address.clone());
        if self.agent.set_address(&id, addr) {
            self.explicit = Some((id, route.to_string(), before.unwrap_or_default()));
            Ok(())
        } else {
            Err(ClientError::Config(format!(
                "--signer {route}: no paired signer with id {id}"
            )))
        }
    }

    /// Follow paired signers that mDNS finds elsewhere, while this client runs (not
    /// with `--signer`: that route is the only one).
    pub fn discover(&self) {
        if self.explicit.is_some() {
            return;
        }
        let scope = vmux_proto::discovery::scope_for(&self.agent.config.discovery, None);
        let Ok(Some(scope)) = scope else {
            return;
        };
        let Ok(mut found) = vmux_proto::discovery::watch(scope) else {
            return;
        };
        let agent = self.agent.clone();
        tokio::spawn(async move {
            while let Some(f) = found.recv().await {
                if let Some(addr) = f.addrs.first() {
                    agent.try_address(&f.id, &addr.to_string()).await;
                }
            }
        });
    }

    /// Reach every paired signer (bounded by `connect_timeout_secs`, waking them when
    /// they gave a wake URL) and return the keys of those that answered.
    pub async fn connect(&self) -> Result<Vec<Offer>, ClientError> {
        if let Some((id, route, before)) = &self.explicit {
            // One try at the route given (with the wake URL if the signer gave one),
            // and its failure as it is: no other address, no discovery.
            let wakes = self
                .agent
                .signers()
                .iter()
                .any(|s| &s.id == id && s.wake_url.is_some());
            let linked = if wakes {
                self.agent.link_or_wake(id).await
            } else {
                self.agent.link(id).await
            };
            if let Err(e) = linked {
                if !before.is_empty() {
                    self.agent.set_address(id, before);
                }
                return Err(match e {
                    AgentError::Refused(code @ ErrorCode::PairingInvalid, _) => {
                        ClientError::Revoked(code)
                    }
                    e => ClientError::SignerRoute {
                        route: route.clone(),
                        reason: e.to_string(),
                    },
                });
            }
            return Ok(self.offers(std::slice::from_ref(id)));
        }
        let signers = self.agent.signers();
        let tries: Vec<_> = signers
            .iter()
            .map(|s| {
                let (agent, id) = (self.agent.clone(), s.id.clone());
                tokio::spawn(async move { agent.link_or_wake(&id).await.map(|_| ()) })
            })
            .collect();
        let mut results = vec![];
        for t in tries {
            results.push(
                t.await
                    .unwrap_or_else(|e| Err(AgentError::LinkLost(e.to_string()))),
            );
        }
        let mut up = vec![];
        let (mut revoked, mut reach_hint) = (None, None);
        for (s, r) in signers.iter().zip(results) {
            match r {
                Ok(_) => up.push(s.id.clone()),
                Err(AgentError::Refused(code @ ErrorCode::PairingInvalid, _)) => {
                    revoked = Some(code)
                }
                Err(e) => {
                    tracing::debug!("signer {}: {e}", s.name);
                    if e.to_string().contains(" reach anywhere") {
                        reach_hint.get_or_insert(e.to_string());
                    }
                }
            }
        }
        if up.is_empty() {
            return Err(match (revoked, reach_hint) {
                (Some(code), _) => ClientError::Revoked(code),
                (None, Some(hint)) => ClientError::NoRoute(hint),
                (None, None) => ClientError::NoSigner,
            });
        }
        Ok(self.offers(&up))
    }

    /// The cached keys of the signers in `up`, enabled ones only.
    fn offers(&self, up: &[String]) -> Vec<Offer> {
        let names: std::collections::HashMap<String, String> = self
            .agent
            .signers()
            .into_iter()
            .map(|s| (s.id, s.name))
            .collect();
        self.agent
            .cached_keys()
            .into_iter()
            .filter(|k| k.record.enabled && up.contains(&k.signer_id))
            .filter_map(|k| {
                Some(Offer {
                    key: PublicKey::from_bytes(&k.record.public_key).ok()?,
                    blob: k.record.public_key,
                    comment: k.record.comment,
                    signer: names.get(&k.signer_id).cloned().unwrap_or_default(),
                })
            })
            .collect()
    }
}

/// One login's signatures: russh calls this only after the server answered
/// `SSH_MSG_USERAUTH_PK_OK` for the key, so the person is asked once per login, for
/// the key the server accepts.
pub struct Approval<'a> {
    pub signers: &'a Signers,
    pub target: &'a Target,
    pub binding: SessionBinding,
    /// `verified` when known_hosts vouched for the host key, else `new`.
    pub quality: &'static str,
}

#[derive(Debug, thiserror::Error)]
pub enum SignFailed {
    #[error("the signer did not sign: {0}")]
    Refused(ErrorCode),
    #[error("the SSH session ended")]
    Session,
}

impl From<russh::SendError> for SignFailed {
    fn from(_: russh::SendError) -> Self {
        SignFailed::Session
    }
}

impl russh::Signer for Approval<'_> {
    type Error = SignFailed;

    async fn auth_sign(
        &mut self,
        key: &AgentIdentity,
        hash_alg: Option<HashAlg>,
        mut to_sign: Vec<u8>,
    ) -> Result<Vec<u8>, SignFailed> {
        let public = match key {
            AgentIdentity::PublicKey { key, .. } => key.clone(),
            AgentIdentity::Certificate { certificate, .. } => {
                PublicKey::from(certificate.public_key().clone())
            }
        };
        let blob = public
            .to_bytes()
            .map_err(|_| SignFailed::Refused(ErrorCode::Internal))?;
        // The agent protocol's RSA flags (PROTOCOL.agent §4.5.1).
        let flags = match hash_alg {
            Some(HashAlg::Sha256) => 2,
            Some(HashAlg::Sha512) => 4,
            _ => 0,
        };
        let name = self
            .signers
            .agent
            .signer_of(&blob)
            .map(|s| s.name)
            .unwrap_or_else(|| "?".into());
        eprintln!(
            "waiting for signer {}… approve the login to {}@{} on the signer",
            vmux_proto::text::field(&name),
            vmux_proto::text::field(&self.target.user),
            vmux_proto::text::field(&self.target.host_port())
        );
        let context = Context {
            requester: vmux_agent::requester::describe(Some(std::process::id() as i32), 4),
            kind: "login".into(),
            namespace: None,
            user: Some(self.target.user.clone()),
            host: Some(self.target.host_port()),
            quality: self.quality.into(),
            host_key_fingerprint: Some(crate::known_hosts::fingerprint(
                &<ssh_key::public::KeyData as ssh_key::encoding::Decode>::decode(
                    &mut &self.binding.host_key[..],
                )
                .map_err(|_| SignFailed::Refused(ErrorCode::Internal))?,
            )),
            hops: vec![],
        };
        match self
            .signers
            .agent
            .sign_direct(&blob, &to_sign, flags, context, self.binding.clone())
            .await
        {
            Ok(sig) => {
                // russh wants the data back with the signature appended as an SSH
                // string (RFC 4252 §7).
                to_sign.extend_from_slice(&(sig.len() as u32).to_be_bytes());
                to_sign.extend_from_slice(&sig);
                Ok(to_sign)
            }
            Err(r) => Err(SignFailed::Refused(r.code)),
        }
    }
}

/// Wait for the first link at most this long before saying no signer was found.
pub fn connect_timeout(signers: &Signers) -> Duration {
    Duration::from_secs(signers.agent.config.connect_timeout_secs)
}

/// Signs with this process's session certificate key, locally: the person approved the
/// certificate once, on the signer. The key lives only in this process's memory.
pub struct LocalCert(pub Arc<vmux_agent::cert::SessionCert>);

impl russh::Signer for LocalCert {
    type Error = SignFailed;

    async fn auth_sign(
        &mut self,
        _key: &AgentIdentity,
        _hash_alg: Option<HashAlg>,
        mut to_sign: Vec<u8>,
    ) -> Result<Vec<u8>, SignFailed> {
        let sig = self.0.sign(&to_sign).map_err(SignFailed::Refused)?;
        to_sign.extend_from_slice(&(sig.len() as u32).to_be_bytes());
        to_sign.extend_from_slice(&sig);
        Ok(to_sign)
    }
}

impl Signers {
    /// A session certificate for this process (`--cert`): one approval on the signer,
    /// then every login of this process signs locally until it expires.
    pub async fn session_cert(
        &self,
        validity_secs: u64,
    ) -> Result<Arc<vmux_agent::cert::SessionCert>, ClientError> {
        if let Some(c) = self.agent.valid_cert() {
            return Ok(c);
        }
        let names: Vec<String> = self
            .agent
            .signers()
            .iter()
            .map(|s| vmux_proto::text::field(&s.name))
            .collect();
        eprintln!(
            "waiting for signer {}… approve a session certificate for this vmux ssh on the signer",
            names.join(" or ")
        );
        match self.agent.request_cert(validity_secs, true, None).await {
            Ok(()) => self.agent.valid_cert().ok_or(ClientError::NoSigner),
            Err(r) if r.code == ErrorCode::PairingInvalid => Err(ClientError::Revoked(r.code)),
            Err(r) if r.code == ErrorCode::SignerUnavailable => Err(ClientError::NoSigner),
            Err(r) => Err(ClientError::CertRefused(r.reason)),
        }
    }
}
