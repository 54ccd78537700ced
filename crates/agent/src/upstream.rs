//! An upstream agent: keys vmux does not hold (an old key for one legacy box, a deploy
//! key), served by another agent (OpenSSH's ssh-agent, a hardware-token agent) that
//! vmux passes requests to. `agent run --upstream SOCKET` or `upstream = "…"` in the
//! agent's config.
//!
//! These keys are **outside vmux's promise**: no person approves their signatures on a
//! signer, vmux never sees their private halves, and whatever the upstream agent does
//! is its own business. What vmux does:
//! - lists them after its own keys (the session certificate, then the signers' keys);
//! - sends a SIGN_REQUEST for one of them to the upstream as it came (no prompt here),
//!   and logs it in the request log as `upstream`;
//! - passes `ssh-add` (add), `ssh-add -d`, `-D`, `-x`/`-X` to the upstream, and its
//!   answer back (`-D` and `-x` act on vmux too);
//! - on a forwarded connection (`ssh -A` on the far side), only with
//!   `upstream_forwarded = true`;
//! - costs nothing when the upstream is gone: its keys are not listed, and an upstream
//!   that does not answer is skipped for a while instead of being waited for.
//!
//! Each agent connection has its own connection to the upstream, opened on first use,
//! with the session bindings the client sent replayed on it, so the upstream applies
//! its own destination constraints (`ssh-add -h`).

use crate::wire::{self, MAX_MESSAGE};
use ssh_encoding::Decode;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// How long a listing may take before the upstream is skipped.
const LIST_TIMEOUT: Duration = Duration::from_secs(2);
/// A signature may wait for a person or a touch at the upstream (`ssh-add -c`, FIDO).
pub(crate) const SIGN_TIMEOUT: Duration = Duration::from_secs(60);
pub(crate) const OTHER_TIMEOUT: Duration = Duration::from_secs(10);
/// After an upstream timed out, it is skipped this long.
const SKIP_AFTER_TIMEOUT: Duration = Duration::from_secs(30);
/// More identities than this in one answer are not believed.
pub const MAX_IDENTITIES: usize = 2048;

/// The upstream agent of a running vmux agent.
pub struct Upstream {
    pub socket: PathBuf,
    /// Serve forwarded connections too (`upstream_forwarded = true`).
    pub forwarded: bool,
    skip_until: Mutex<Option<Instant>>,
}

pub use crate::status::UpstreamInfo;

/// Why the upstream did not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream agent {0}: {1}")]
    Unreachable(String, String),
    #[error("upstream agent {0}: no answer within {1}s")]
    Timeout(String, u64),
    #[error("upstream agent {0}: {1}")]
    Malformed(String, String),
    #[error("upstream agent {0} is this vmux agent's own socket")]
    Itself(String),
}

impl Upstream {
    pub fn new(socket: PathBuf, forwarded: bool) -> Upstream {
        Upstream {
            socket,
            forwarded,
            skip_until: Mutex::new(None),
        }
    }

    pub(crate) fn name(&self) -> String {
        self.socket.display().to_string()
    }

    /// One request on `conn` (opened if needed), one answer back: the body after the
    /// length, at most 256 KiB. A failure closes `conn`; a timeout also skips the
    /// upstream for a while.
    pub(crate) async fn call(
        &self,
        conn: &mut Conn,
        msg: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, UpstreamError> {
        if self
            .skip_until
            .lock()
            .unwrap()
            .is_some_and(|t| Instant::now() < t)
        {
            return Err(UpstreamError::Timeout(
                self.name(),
                SKIP_AFTER_TIMEOUT.as_secs(),
            ));
        }
        let r = tokio::time::timeout(timeout, self.call_inner(conn, msg)).await;
        let r = match r {
            Ok(r) => r,
            Err(_) => {
                *self.skip_until.lock().unwrap() = Some(Instant::now() + SKIP_AFTER_TIMEOUT);
                Err(UpstreamError::Timeout(self.name(), timeout.as_secs()))
            }
        };
        if r.is_err() {
            conn.stream = None;
        }
        r
    }

    async fn call_inner(&self, conn: &mut Conn, msg: &[u8]) -> Result<Vec<u8>, UpstreamError> {
        if conn.stream.is_none() {
            let mut s = open(&self.socket).await?;
            // The client's session bindings, before anything else (PROTOCOL.agent §1).
            for b in &conn.binds {
                round_trip(&mut s, b, &self.socket).await?;
            }
            conn.stream = Some(s);
        }
        let s = conn.stream.as_mut().expect("opened above");
        round_trip(s, msg, &self.socket).await
    }

    /// The upstream's keys, as it lists them now; nothing when it is gone.
    pub async fn identities(
        &self,
        conn: &mut Conn,
    ) -> Result<Vec<(Vec<u8>, String)>, UpstreamError> {
        let body = self
            .call(conn, &[wire::REQUEST_IDENTITIES], LIST_TIMEOUT)
            .await?;
        parse_identities(&body).map_err(|e| UpstreamError::Malformed(self.name(), e))
    }
}

/// Connect to an agent socket, refusing this process's own.
async fn open(socket: &Path) -> Result<UnixStream, UpstreamError> {
    let name = socket.display().to_string();
    let s = UnixStream::connect(socket)
        .await
        .map_err(|e| UpstreamError::Unreachable(name.clone(), e.to_string()))?;
    if s.peer_cred().ok().and_then(|c| c.pid()) == Some(std::process::id() as i32) {
        return Err(UpstreamError::Itself(name));
    }
    Ok(s)
}

async fn round_trip(
    s: &mut UnixStream,
    msg: &[u8],
    socket: &Path,
) -> Result<Vec<u8>, UpstreamError> {
    let name = || socket.display().to_string();
    let io = |e: std::io::Error| UpstreamError::Unreachable(name(), e.to_string());
    let mut out = (msg.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(msg);
    s.write_all(&out).await.map_err(io)?;
    let mut len = [0u8; 4];
    s.read_exact(&mut len).await.map_err(io)?;
    let n = u32::from_be_bytes(len) as usize;
    if n == 0 || n > MAX_MESSAGE {
        return Err(UpstreamError::Malformed(
            name(),
            format!("an answer of {n} bytes"),
        ));
    }
    let mut body = vec![0u8; n];
    s.read_exact(&mut body).await.map_err(io)?;
    Ok(body)
}

/// Parse an SSH_AGENT_IDENTITIES_ANSWER body: `12, uint32 n, (string key, string
/// comment) × n`. Untrusted bytes (another program's answer): bounded and fuzzed
/// (`fuzz/fuzz_targets/upstream_answers.rs`).
pub fn parse_identities(body: &[u8]) -> Result<Vec<(Vec<u8>, String)>, String> {
    let (&kind, mut r) = body.split_first().ok_or("an empty answer")?;
    if kind != wire::IDENTITIES_ANSWER {
        return Err(format!("answer type {kind} to a key list request"));
    }
    let n = u32::decode(&mut r).map_err(|e| e.to_string())? as usize;
    if n > MAX_IDENTITIES {
        return Err(format!("{n} keys listed"));
    }
    let mut out = Vec::with_capacity(n.min(64));
    for _ in 0..n {
        let key = Vec::<u8>::decode(&mut r).map_err(|e| e.to_string())?;
        let comment = Vec::<u8>::decode(&mut r).map_err(|e| e.to_string())?;
        out.push((key, String::from_utf8_lossy(&comment).into_owned()));
    }
    if !r.is_empty() {
        return Err(format!("{} bytes after the key list", r.len()));
    }
    Ok(out)
}

/// Whether an upstream's answer to a sign, add, remove or lock request is one the
/// client may be given as it is: SUCCESS, FAILURE or a SIGN_RESPONSE whose signature
/// is one SSH string.
pub fn answer_ok(request: u8, body: &[u8]) -> bool {
    match (request, body) {
        (_, [wire::SUCCESS | wire::FAILURE]) => true,
        (wire::SIGN_REQUEST, [wire::SIGN_RESPONSE, rest @ ..]) => {
            let mut r = rest;
            Vec::<u8>::decode(&mut r).is_ok() && r.is_empty()
        }
        _ => false,
    }
}

/// One agent connection's line to the upstream.
#[derive(Default)]
pub struct Conn {
    pub(crate) stream: Option<UnixStream>,
    /// The `session-bind@openssh.com` messages the client sent (replayed on reconnect).
    pub(crate) binds: Vec<Vec<u8>>,
}

/// The upstream a config names (`upstream`, `~/` expanded), if any.
pub fn from_config(config: &crate::state::AgentConfig) -> Option<Arc<Upstream>> {
    let p = config.upstream.as_ref()?;
    let p = match p.strip_prefix("~") {
        Ok(rest) => vmux_proto::store::home_dir().join(rest),
        Err(_) => p.clone(),
    };
    Some(Arc::new(Upstream::new(p, config.upstream_forwarded)))
}

/// For `vmux agent status`: the upstream's keys now, or why it cannot be reached.
pub async fn probe(socket: &Path) -> Result<Vec<(Vec<u8>, String)>, UpstreamError> {
    let u = Upstream::new(socket.to_path_buf(), false);
    u.identities(&mut Conn::default()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_answers() {
        let mut a = vec![wire::IDENTITIES_ANSWER, 0, 0, 0, 2];
        a.extend(wire::encode_strings(&["k1", "one", "k2", "two"]));
        assert_eq!(
            parse_identities(&a).unwrap(),
            vec![
                (b"k1".to_vec(), "one".into()),
                (b"k2".to_vec(), "two".into())
            ]
        );
        assert!(parse_identities(&a[..a.len() - 1]).is_err());
        assert!(parse_identities(&[wire::FAILURE]).is_err());
        assert!(parse_identities(&[wire::IDENTITIES_ANSWER, 255, 255, 255, 255]).is_err());
        let mut extra = a.clone();
        extra.push(0);
        assert!(parse_identities(&extra).is_err());
    }

    #[test]
    fn answers_passed_on() {
        assert!(answer_ok(wire::ADD_IDENTITY, &[wire::SUCCESS]));
        assert!(answer_ok(wire::SIGN_REQUEST, &[wire::FAILURE]));
        let mut sig = vec![wire::SIGN_RESPONSE];
        sig.extend(wire::encode_strings(&["sig"]));
        assert!(answer_ok(wire::SIGN_REQUEST, &sig));
        sig.push(1);
        assert!(!answer_ok(wire::SIGN_REQUEST, &sig));
        assert!(!answer_ok(wire::ADD_IDENTITY, &[wire::IDENTITIES_ANSWER]));
    }

    #[tokio::test]
    async fn a_missing_upstream_costs_nothing() {
        let u = Upstream::new("/nonexistent/agent.sock".into(), false);
        let started = Instant::now();
        let e = u.identities(&mut Conn::default()).await.unwrap_err();
        assert!(matches!(e, UpstreamError::Unreachable(..)), "{e}");
        assert!(started.elapsed() < Duration::from_millis(500));
    }
}
