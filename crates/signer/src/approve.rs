//! How a person decides: the control socket that `vmux signer pending/approve/deny`
//! talk to, and the terminal prompt of `vmux up`. A decision names the signer's id and
//! the digest of what was shown; a control-socket decision is bound to that CLI
//! connection and happens only while it is open; a pairing is approved only by typing
//! its code. Silence, EOF or an error decides nothing.

use crate::queue::{Decision, Gone, PendingInfo};
use crate::{Signer, SignerError};
use serde::{Deserialize, Serialize};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use zeroize::Zeroizing;

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
pub enum ControlRequest {
    Pending,
    /// Decide the entry `id` if it still shows exactly `digest` (what the CLI printed).
    /// `secret` answers the user verification (PAM) the entry asks for, if any.
    Decide {
        id: String,
        digest: String,
        approve: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        secret: Option<String>,
    },
    /// Decide the oldest pending request that is not a pairing, waiting up to
    /// `wait_secs` for one; the answer says what was decided.
    Next {
        #[serde(default)]
        wait_secs: u64,
        approve: bool,
    },
    /// Approve the pairing whose code is `code` (the code the other device shows).
    ApproveCode {
        code: String,
    },
    /// Un-pair a device: its waiting requests are denied, its link closed.
    Revoke {
        id: String,
    },
    /// Keys changed on disk: reload them and push the new list to connected devices;
    /// `change` says what changed, for the decision log.
    ReloadKeys {
        #[serde(default)]
        change: Option<String>,
    },
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ControlResponse {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<Vec<PendingInfo>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided: Option<PendingInfo>,
    /// Whether the requester was still waiting to hear the decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered: Option<bool>,
}

fn fail(e: impl std::fmt::Display) -> ControlResponse {
    ControlResponse {
        ok: false,
        error: Some(e.to_string()),
        ..Default::default()
    }
}

/// Bind the control socket (0600, same uid only) and serve it in the background.
pub async fn serve_control(signer: Arc<Signer>, path: &Path) -> Result<(), SignerError> {
    let ctl_err = |reason: String| SignerError::Control {
        path: path.to_path_buf(),
        reason,
    };
    if UnixStream::connect(path).await.is_ok() {
        return Err(ctl_err("another signer is already running here".into()));
    }
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path).map_err(|e| ctl_err(e.to_string()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| ctl_err(e.to_string()))?;
    let me = unsafe { libc::geteuid() };
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(10);
        loop {
            let stream = match listener.accept().await {
                Ok((s, _)) => s,
                Err(e) => {
                    crate::guard::accept_failed("control socket", &e, &mut backoff).await;
                    continue;
                }
            };
            backoff = Duration::from_millis(10);
            if stream.peer_cred().map(|c| c.uid()).ok() != Some(me) {
                continue;
            }
            let s = signer.clone();
            tokio::spawn(async move { control_conn(s, stream).await });
        }
    });
    Ok(())
}

/// One request at a time; while it is worked on (an `approve --next --wait` may wait
/// minutes), the connection is watched: if the CLI goes away (Ctrl-C, kill), the work
/// is dropped before it decides anything.
async fn control_conn(signer: Arc<Signer>, stream: UnixStream) {
    let (r, mut w) = stream.into_split();
    let mut lines = BufReader::new(r).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let resp = match serde_json::from_str::<ControlRequest>(&line) {
            Ok(req) => {
                tokio::select! {
                    biased;
                    // Anything more from the CLI before its answer (EOF above all) ends it.
                    _ = lines.next_line() => return,
                    resp = handle(&signer, req) => resp,
                }
            }
            Err(e) => fail(format!("bad control request: {e}")),
        };
        let mut out = serde_json::to_vec(&resp).expect("serializes");
        out.push(b'\n');
        if w.write_all(&out).await.is_err() {
            break;
        }
    }
}

async fn handle(signer: &Signer, req: ControlRequest) -> ControlResponse {
    match req {
        ControlRequest::Pending => ControlResponse {
            ok: true,
            pending: Some(signer.queue.pending()),
            ..Default::default()
        },
        ControlRequest::Revoke { id } => match signer.revoke(&id) {
            Ok(true) => ControlResponse {
                ok: true,
                ..Default::default()
            },
            Ok(false) => fail(format!(
                "no paired device with id {id}; `vmux signer devices` lists them"
            )),
            Err(e) => fail(e),
        },
        ControlRequest::Decide {
            id,
            digest,
            approve: true,
            secret,
        } => match signer.queue.find(&id) {
            Ok(p) if p.id == id && p.digest == digest => {
                let secret = secret.map(Zeroizing::new);
                decided(signer, approve_verified(signer, &p, secret).await)
            }
            Ok(_) => fail(SignerError::DisplayChanged(id)),
            Err(e) => fail(e),
        },
        ControlRequest::Decide {
            id,
            digest,
            approve: false,
            ..
        } => decided(signer, signer.queue.decide(&id, &digest, Decision::Deny)),
        ControlRequest::Next { wait_secs, approve } => {
            let wait = Duration::from_secs(wait_secs);
            match signer.queue.next(wait, false).await {
                Some(p) if approve => decided(signer, approve_verified(signer, &p, None).await),
                Some(p) => decided(
                    signer,
                    signer.queue.decide(&p.id, &p.digest, Decision::Deny),
                ),
                None if signer.queue.pending().iter().any(|p| p.kind == "pair") => fail(
                    "nothing but a pairing is pending; approve a pairing by typing its code: \
                     `vmux signer approve --code NNNNNN`",
                ),
                None => fail(SignerError::NothingPending),
            }
        }
        ControlRequest::ApproveCode { code } => decided(signer, signer.queue.approve_code(&code)),
        ControlRequest::ReloadKeys { change } => match signer.reload_keys().await {
            Ok(_) => {
                if let Some(c) = change {
                    let (event, what) = c.split_once(": ").unwrap_or(("keys", &c));
                    signer.record(crate::serve::obj(serde_json::json!({
                        "event": vmux_proto::text::field(event),
                        "change": vmux_proto::text::field(what)})));
                }
                ControlResponse {
                    ok: true,
                    ..Default::default()
                }
            }
            Err(e) => fail(e),
        },
    }
}

/// Approve `p`, running the user verification it asks for first (after the person said
/// yes, before anything is signed). A failed verification refuses the request
/// (`presenceFailed`), logged; no answer to a verification decides nothing.
pub async fn approve_verified(
    signer: &Signer,
    p: &PendingInfo,
    secret: Option<Zeroizing<String>>,
) -> Result<(PendingInfo, bool), SignerError> {
    if p.verify.as_deref() != Some("pam") || p.kind == "pair" {
        return signer.queue.decide(&p.id, &p.digest, Decision::Approve);
    }
    let Some(secret) = secret else {
        return Err(SignerError::VerificationNeeded(p.id.clone()));
    };
    let config = signer.home.load_config()?;
    let user = config
        .pam_user
        .clone()
        .unwrap_or_else(crate::verify::current_user);
    let service = config.pam_service.clone();
    let checked =
        tokio::task::spawn_blocking(move || crate::verify::pam(&service, &user, vec![secret]))
            .await
            .unwrap_or_else(|e| Err(crate::verify::VerifyError::NoPam(e.to_string())));
    match checked {
        Ok(()) => signer.queue.decide(&p.id, &p.digest, Decision::Approve),
        Err(e) => {
            tracing::warn!("request {}: {e}", p.id);
            signer.record(crate::serve::obj(serde_json::json!({
                "event": "verify", "requestId": p.id, "decision": "presenceFailed",
                "reason": e.to_string()})));
            signer
                .queue
                .decide(&p.id, &p.digest, Decision::Unverified)?;
            Err(SignerError::VerificationFailed(e.to_string()))
        }
    }
}

fn decided(signer: &Signer, r: Result<(PendingInfo, bool), SignerError>) -> ControlResponse {
    match r {
        Ok((info, delivered)) => {
            if !delivered {
                signer.delivery_failed(&info.id, &info.from_id);
            }
            ControlResponse {
                ok: true,
                decided: Some(info),
                delivered: Some(delivered),
                ..Default::default()
            }
        }
        Err(e) => fail(e),
    }
}

/// One request/response on the control socket (the CLI side). The connection stays
/// open until the answer arrives: closing it earlier withdraws the request.
pub async fn control_call(
    path: &Path,
    req: &ControlRequest,
) -> Result<ControlResponse, SignerError> {
    let err = |reason: String| SignerError::Control {
        path: PathBuf::from(path),
        reason,
    };
    let stream = UnixStream::connect(path)
        .await
        .map_err(|e| err(e.to_string()))?;
    let (r, mut w) = stream.into_split();
    let mut line = serde_json::to_vec(req).expect("serializes");
    line.push(b'\n');
    w.write_all(&line).await.map_err(|e| err(e.to_string()))?;
    let mut lines = BufReader::new(r).lines();
    let resp = lines
        .next_line()
        .await
        .map_err(|e| err(e.to_string()))?
        .ok_or_else(|| err("the signer closed the connection".into()))?;
    serde_json::from_str(&resp).map_err(|e| err(format!("bad answer: {e}")))
}

/// A line typed on the terminal and when it arrived.
pub type Typed = (Instant, String);

/// Read the terminal on a thread of its own (a blocked read must never hold up Ctrl-C
/// or shutdown), stamping each line with its arrival time.
pub fn read_terminal() -> tokio::sync::mpsc::Receiver<Typed> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        let mut line = String::new();
        loop {
            line.clear();
            match std::io::BufRead::read_line(&mut stdin.lock(), &mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    if tx
                        .blocking_send((Instant::now(), line.trim().to_string()))
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
    });
    rx
}

/// Throw away what was typed before `since`: the kernel's pending terminal input
/// (tcflush, as sudo does) and lines already read.
fn discard_typed_ahead(input: &mut tokio::sync::mpsc::Receiver<Typed>, since: Instant) {
    // SAFETY: tcflush on fd 0 only drops queued input; harmless if 0 is not a terminal.
    unsafe {
        if libc::isatty(0) == 1 {
            libc::tcflush(0, libc::TCIFLUSH);
        }
    }
    while let Ok((at, _)) = input.try_recv() {
        if at >= since {
            // Cannot push back into the channel; a line typed in the same instant the
            // request appeared is dropped too, which only ever errs toward asking again.
            break;
        }
    }
}

/// The `vmux up` prompt: show each request and ask. `y`/`yes` approves a request, the
/// typed code approves a pairing; anything else denies. A request that leaves the
/// queue meanwhile is withdrawn from the prompt with a line saying why. At end of input
/// the prompt stops and requests wait for the control socket.
pub async fn prompt<W: AsyncWrite + Unpin>(
    signer: Arc<Signer>,
    mut input: tokio::sync::mpsc::Receiver<Typed>,
    mut output: W,
) {
    loop {
        let Some(p) = signer.queue.next(Duration::from_secs(3600), true).await else {
            continue;
        };
        let ask = if p.kind == "pair" {
            "Type the code the other device shows to pair it (anything else denies): "
        } else {
            "Approve? [y/N] "
        };
        let mut more = signer.queue.depth().saturating_sub(1);
        let waiting = |n: usize| {
            if n > 0 {
                format!("\n  ({n} more waiting)")
            } else {
                String::new()
            }
        };
        let text = format!("\n\x07{}{}\n{ask}", describe(&p), waiting(more));
        if output.write_all(text.as_bytes()).await.is_err() {
            return;
        }
        let _ = output.flush().await;
        let shown = Instant::now();
        discard_typed_ahead(&mut input, shown);
        let answer: Option<String> = loop {
            tokio::select! {
                line = input.recv() => match line {
                    Some((at, _)) if at < shown => continue,
                    Some((_, a)) => break Some(a),
                    None => return,
                },
                _ = signer.queue.changed(Duration::from_secs(1)) => {
                    if signer.queue.pending().iter().all(|q| q.id != p.id) {
                        break None;
                    }
                    let now = signer.queue.depth().saturating_sub(1);
                    if now != more {
                        more = now;
                    }
                }
            }
        };
        let msg = match answer {
            None => format!(
                "withdrawn: request {} {}\n",
                p.id,
                match signer.queue.outcome(&p.id) {
                    Some(Gone::Approved) => "was approved elsewhere".to_string(),
                    Some(Gone::Denied) => "was denied elsewhere".to_string(),
                    Some(Gone::Withdrawn(why)) => format!("is gone ({why})"),
                    None => "is no longer pending".to_string(),
                }
            ),
            Some(a) if p.verify.is_some() && p.kind != "pair" && is_yes(&a) => {
                let _ = output
                    .write_all(b"User verification (PAM): password: ")
                    .await;
                let _ = output.flush().await;
                let echo = EchoOff::new();
                let secret = input.recv().await.map(|(_, s)| Zeroizing::new(s));
                drop(echo);
                let _ = output.write_all(b"\n").await;
                match approve_verified(&signer, &p, secret).await {
                    Ok(_) => "approved\n".to_string(),
                    Err(e) => format!("{e}\n"),
                }
            }
            Some(a) => decide_typed(&signer, &p, &a),
        };
        let _ = output.write_all(msg.as_bytes()).await;
    }
}

fn is_yes(a: &str) -> bool {
    matches!(a.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

/// Terminal echo off while a password is typed (restored on drop).
struct EchoOff(Option<libc::termios>);

impl EchoOff {
    fn new() -> EchoOff {
        // SAFETY: tcgetattr/tcsetattr on fd 0 with a termios we own.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::isatty(0) != 1 || libc::tcgetattr(0, &mut t) != 0 {
                return EchoOff(None);
            }
            let saved = t;
            t.c_lflag &= !libc::ECHO;
            libc::tcsetattr(0, libc::TCSANOW, &t);
            EchoOff(Some(saved))
        }
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        if let Some(t) = self.0 {
            // SAFETY: restores the settings read in `new`.
            unsafe {
                libc::tcsetattr(0, libc::TCSANOW, &t);
            }
        }
    }
}

fn decide_typed(signer: &Signer, p: &PendingInfo, answer: &str) -> String {
    let answer = answer.trim();
    let result = if p.kind == "pair" {
        if answer.is_empty() || p.code.as_deref() != Some(answer) {
            signer
                .queue
                .decide(&p.id, &p.digest, Decision::Deny)
                .map(|_| "that is not the code of this pairing: denied\n".to_string())
        } else {
            signer
                .queue
                .approve_code(answer)
                .map(|(i, _)| format!("paired with {}\n", i.from))
        }
    } else {
        let d = match answer.to_ascii_lowercase().as_str() {
            "y" | "yes" => Decision::Approve,
            _ => Decision::Deny,
        };
        signer
            .queue
            .decide(&p.id, &p.digest, d)
            .map(|(_, delivered)| {
                let word = if d == Decision::Approve {
                    "approved"
                } else {
                    "denied"
                };
                if delivered {
                    format!("{word}\n")
                } else {
                    format!("{word}, but the requester had already gone\n")
                }
            })
    };
    result.unwrap_or_else(|_| {
        "that request is no longer pending (expired, cancelled or decided elsewhere)\n".into()
    })
}

/// `14:03:07`: a Unix time as local wall-clock time.
pub fn clock(unix: u64) -> String {
    let t = unix as libc::time_t;
    // SAFETY: localtime_r writes only into the tm we own.
    unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&t, &mut tm).is_null() {
            return String::new();
        }
        format!("{:02}:{:02}:{:02}", tm.tm_hour, tm.tm_min, tm.tm_sec)
    }
}

/// `8h`, `30m`, `90s`, `1d 2h`: a duration for people.
pub fn duration(secs: u64) -> String {
    let (d, h, m, s) = (
        secs / 86_400,
        secs % 86_400 / 3600,
        secs % 3600 / 60,
        secs % 60,
    );
    let parts: Vec<String> = [(d, "d"), (h, "h"), (m, "m"), (s, "s")]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, u)| format!("{n}{u}"))
        .collect();
    if parts.is_empty() {
        "0s".into()
    } else {
        parts.join(" ")
    }
}

/// A multi-line description of a pending request for a person. What the signer
/// verified and what a device merely claims are on separate, labelled lines.
pub fn describe(p: &PendingInfo) -> String {
    let origin = p.origin.as_deref().unwrap_or("agent");
    let mut s = match p.kind.as_str() {
        "pair" => format!(
            "PAIRING request from a device calling itself {} ({})\n  code: {}  (approve only if the other device shows this same code)",
            p.from,
            p.from_id,
            p.code.as_deref().unwrap_or("?")
        ),
        "cert" => format!(
            "SESSION CERTIFICATE request from {} ({})\n  grants:      {}\n  principals:  {}\n  validity:    {}",
            p.from,
            p.from_id,
            p.grants.as_deref().unwrap_or("?"),
            p.principals.as_deref().unwrap_or_default().join(","),
            duration(p.validity_secs.unwrap_or(0)),
        ),
        _ => format!("SIGNATURE request from {} ({}, {origin})", p.from, p.from_id),
    };
    if let Some(w) = &p.warning {
        s += &format!("\n  WARNING:     {w}");
    }
    if let Some(purpose) = &p.purpose {
        if p.kind == "sign" {
            s += &format!("\n  purpose:     {purpose}  (parsed by this signer)");
        }
    }
    if let Some(u) = &p.user {
        s += &format!("\n  user:        {u}  (parsed by this signer)");
    }
    if let Some(d) = &p.destination {
        s += &format!("\n  destination: {d}");
    }
    if let Some(r) = &p.requester {
        s += &format!("\n  requester:   {r}  (claimed by the device)");
    }
    if let Some(v) = &p.verify {
        s += &format!("\n  verify:      {v} (asked after you approve)");
    }
    if let Some(k) = &p.key {
        s += &format!(
            "\n  key:         {k} {}{}",
            p.key_comment.as_deref().unwrap_or(""),
            p.key_store
                .as_deref()
                .map(|st| format!(" [{st}]"))
                .unwrap_or_default()
        );
    }
    s += &format!("\n  id:          {}", p.id);
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations_for_people() {
        assert_eq!(super::duration(28_800), "8h");
        assert_eq!(super::duration(2_592_000), "30d");
        assert_eq!(super::duration(5_400), "1h 30m");
        assert_eq!(super::duration(0), "0s");
    }
}
