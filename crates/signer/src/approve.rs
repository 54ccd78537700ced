//! How a person decides: the control socket that `vmux signer pending/approve/deny`
//! talk to, and the terminal prompt of `vmux up`. Both only ever act on an explicit
//! answer; silence, EOF or an error means the request stays pending or is denied.

use crate::queue::{Decision, PendingInfo};
use crate::{Signer, SignerError};
use serde::{Deserialize, Serialize};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
pub enum ControlRequest {
    Pending,
    /// Decide `id` (or a unique prefix of it), or with `next` the oldest pending request,
    /// waiting up to `wait_secs` for one.
    Decide {
        #[serde(default)]
        id: Option<String>,
        #[serde(default)]
        next: bool,
        #[serde(default)]
        wait_secs: u64,
        approve: bool,
    },
    /// Un-pair a device: its next request, and its next connection, get `pairingInvalid`.
    Revoke {
        id: String,
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
        while let Ok((stream, _)) = listener.accept().await {
            if stream.peer_cred().map(|c| c.uid()).ok() != Some(me) {
                continue;
            }
            let s = signer.clone();
            tokio::spawn(async move { control_conn(s, stream).await });
        }
    });
    Ok(())
}

async fn control_conn(signer: Arc<Signer>, stream: UnixStream) {
    let (r, mut w) = stream.into_split();
    let mut lines = BufReader::new(r).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let resp = match serde_json::from_str::<ControlRequest>(&line) {
            Ok(req) => handle(&signer, req).await,
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
            next,
            wait_secs,
            approve,
        } => {
            let id = match (id, next) {
                (Some(id), false) => id,
                (None, true) => match signer.queue.next(Duration::from_secs(wait_secs)).await {
                    Some(p) => p.id,
                    None => return fail(SignerError::NothingPending),
                },
                _ => return fail("give either an id or --next"),
            };
            let d = if approve {
                Decision::Approve
            } else {
                Decision::Deny
            };
            match signer.queue.decide(&id, d) {
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
    }
}

/// One request/response on the control socket (the CLI side).
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

/// The `vmux up` prompt: show each request and ask. Anything but `y`/`yes` denies; at
/// end of input the prompt stops and requests wait for the control socket.
pub async fn prompt<R: AsyncBufRead + Unpin, W: AsyncWrite + Unpin>(
    signer: Arc<Signer>,
    input: R,
    mut output: W,
) {
    let mut lines = input.lines();
    loop {
        let Some(p) = signer.queue.next(Duration::from_secs(3600)).await else {
            continue;
        };
        let text = format!("\n{}\nApprove? [y/N] ", describe(&p));
        if output.write_all(text.as_bytes()).await.is_err() {
            return;
        }
        let _ = output.flush().await;
        let answer = match lines.next_line().await {
            Ok(Some(a)) => a,
            _ => return,
        };
        let d = match answer.trim().to_ascii_lowercase().as_str() {
            "y" | "yes" => Decision::Approve,
            _ => Decision::Deny,
        };
        let msg = match signer.queue.decide(&p.id, d) {
            Ok(_) if d == Decision::Approve => "approved\n".to_string(),
            Ok(_) => "denied\n".to_string(),
            Err(_) => {
                "that request is no longer pending (expired, cancelled or decided elsewhere)\n"
                    .into()
            }
        };
        let _ = output.write_all(msg.as_bytes()).await;
    }
}

/// A multi-line description of a pending request for a person.
pub fn describe(p: &PendingInfo) -> String {
    let mut s = match p.kind.as_str() {
        "pair" => format!(
            "Pair request from {} ({})\n  code: {}  (it must match the code on that device)",
            p.from,
            p.from_id,
            p.code.as_deref().unwrap_or("?")
        ),
        "cert" => format!(
            "Session certificate request from {} ({})\n  validity: {}s  principals: {}",
            p.from,
            p.from_id,
            p.validity_secs.unwrap_or(0),
            p.principals.as_deref().unwrap_or_default().join(",")
        ),
        _ => format!("Signature request from {} ({})", p.from, p.from_id),
    };
    if let Some(r) = &p.requester {
        s += &format!("\n  requester: {r}");
    }
    if let Some(purpose) = &p.purpose {
        s += &format!("\n  purpose: {purpose}");
    }
    if let Some(d) = &p.destination {
        s += &format!("\n  destination: {d}");
    }
    if let Some(k) = &p.key {
        s += &format!("\n  key: {k} {}", p.key_comment.as_deref().unwrap_or(""));
    }
    s += &format!("\n  id: {}", p.id);
    s
}
