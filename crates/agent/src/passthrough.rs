//! What the agent passes to its upstream agent (`upstream.rs` is the client that talks
//! to it): the upstream's keys after vmux's own, signatures for keys vmux does not
//! hold, and `ssh-add`'s requests, each only where the connection may use the
//! upstream (not while locked; forwarded connections only with `upstream_forwarded`).

use crate::agent::{Agent, Caller};
use crate::status::UpstreamInfo;
use crate::upstream::{answer_ok, Conn, Upstream, OTHER_TIMEOUT, SIGN_TIMEOUT};
use crate::wire;
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

impl Agent {
    /// The upstream agent, if one is configured.
    pub fn upstream(&self) -> Option<Arc<Upstream>> {
        self.upstream.lock().unwrap().clone()
    }

    /// Use `socket` as the upstream agent (`--upstream`, over the config's).
    pub fn set_upstream(&self, socket: PathBuf) {
        let forwarded = self.config.upstream_forwarded;
        // The status file follows when the socket is bound (write_status_at): written
        // now, it could overwrite the file of an agent that still runs.
        *self.upstream.lock().unwrap() = Some(Arc::new(Upstream::new(socket, forwarded)));
    }

    /// What status.json says about the upstream.
    pub fn upstream_info(&self) -> Option<UpstreamInfo> {
        self.upstream().map(|u| UpstreamInfo {
            socket: u.name(),
            forwarded: u.forwarded,
        })
    }

    /// The upstream, if this connection may use it (not locked; forwarded connections
    /// only with `upstream_forwarded`).
    fn upstream_for(&self, forwarded: bool) -> Option<Arc<Upstream>> {
        self.upstream()
            .filter(|u| !self.is_locked() && (!forwarded || u.forwarded))
    }

    /// Whether vmux itself answers for this key (the session certificate or a signer key).
    fn holds(&self, key_blob: &[u8]) -> bool {
        self.valid_cert().is_some_and(|c| c.matches(key_blob)) || self.signer_of(key_blob).is_some()
    }
}

/// A session-bind the client sent: kept, and passed on if the line is open.
pub async fn bind(conn: &mut Conn, agent: &Agent, msg: &[u8]) {
    if conn.binds.len() >= 16 {
        return;
    }
    conn.binds.push(msg.to_vec());
    if conn.stream.is_none() {
        return;
    }
    if let Some(u) = agent.upstream() {
        let _ = u.call(conn, msg, OTHER_TIMEOUT).await;
    }
}

/// The upstream's keys for REQUEST_IDENTITIES, after `own` (those vmux lists itself
/// are not listed twice). Nothing when there is no upstream or it is gone.
pub async fn identities(
    agent: &Agent,
    conn: &mut Conn,
    forwarded: bool,
    own: &[(Vec<u8>, String)],
) -> Vec<(Vec<u8>, String)> {
    let Some(u) = agent.upstream_for(forwarded) else {
        return vec![];
    };
    match u.identities(conn).await {
        Ok(ids) => ids
            .into_iter()
            .filter(|(k, _)| !own.iter().any(|(o, _)| o == k))
            .collect(),
        Err(e) => {
            tracing::debug!("{e}; listing vmux's keys only");
            vec![]
        }
    }
}

/// A SIGN_REQUEST for a key vmux does not hold goes to the upstream, as it came; its
/// answer is the response. `None`: not the upstream's business (vmux holds the key, or
/// no upstream serves this connection).
pub async fn sign(
    agent: &Agent,
    conn: &mut Conn,
    forwarded: bool,
    caller: &Caller,
    key_blob: &[u8],
    data: &[u8],
    msg: &[u8],
) -> Option<wire::Response> {
    if agent.holds(key_blob) {
        return None;
    }
    let u = agent.upstream_for(forwarded)?;
    let started = Instant::now();
    let answer = u.call(conn, msg, SIGN_TIMEOUT).await;
    let (response, decision) = match answer {
        Ok(body) if answer_ok(wire::SIGN_REQUEST, &body) => {
            let signed = body[0] == wire::SIGN_RESPONSE;
            let d = if signed {
                "upstream"
            } else {
                "upstreamRefused"
            };
            (wire::Response::Raw(body), d.to_string())
        }
        Ok(body) => {
            tracing::warn!(
                "upstream agent {}: unexpected answer type {} to a sign request",
                u.name(),
                body[0]
            );
            (wire::Response::Failure, "upstreamMalformed".into())
        }
        Err(e) => {
            tracing::warn!("{e}");
            (wire::Response::Failure, "upstreamUnreachable".into())
        }
    };
    let parsed = crate::context::parse(data);
    agent.record(&json!({
        "time": vmux_proto::now_unix(),
        "key": vmux_proto::identity::key_fingerprint(key_blob),
        "pid": caller.pid,
        "requester": caller.requester,
        "kind": parsed.kind,
        "decision": decision,
        "upstream": u.name(),
        "latencyMs": started.elapsed().as_millis() as u64,
    }));
    Some(response)
}

/// `ssh-add KEY`, `-d`, `-D`, `-x`, `-X`: passed to the upstream as they came; its
/// answer, or `None` when no upstream serves this connection or it did not answer.
pub async fn pass(
    agent: &Agent,
    conn: &mut Conn,
    forwarded: bool,
    msg: &[u8],
    what: &str,
) -> Option<wire::Response> {
    let u = agent.upstream_for(forwarded).or_else(|| {
        // Unlocking must reach an upstream that vmux's own lock hid.
        agent
            .upstream()
            .filter(|u| msg.first() == Some(&wire::UNLOCK) && (!forwarded || u.forwarded))
    })?;
    match u.call(conn, msg, OTHER_TIMEOUT).await {
        Ok(body) if answer_ok(msg[0], &body) => {
            tracing::info!(
                "{what}: passed to upstream agent {} ({})",
                u.name(),
                if body == [wire::SUCCESS] {
                    "done"
                } else {
                    "refused there"
                }
            );
            Some(wire::Response::Raw(body))
        }
        Ok(_) => Some(wire::Response::Failure),
        Err(e) => {
            tracing::warn!("{what}: {e}");
            None
        }
    }
}
