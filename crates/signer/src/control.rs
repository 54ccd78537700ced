//! The control socket (`signer/control.sock`, 0600, same uid only) that `vmux signer
//! pending/approve/deny/status` talk to. A decision names the signer's id and the
//! digest of what the CLI printed, goes through `decide`, and happens only while that
//! CLI connection is open; silence, EOF or an error decides nothing. The socket never
//! decides an entry nobody saw: `next` only shows the oldest request.

use crate::decide::{self, Decided};
use crate::queue::PendingInfo;
use crate::signer::{obj, Signer};
use crate::SignerError;
use serde::{Deserialize, Serialize};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use zeroize::Zeroizing;

/// A field the signer does not know is refused, naming it: a misspelt one (`wait_sec`)
/// would otherwise be dropped without a word and its default used. (Requests without
/// fields are `{}` variants: serde checks the fields of struct variants only.)
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase", deny_unknown_fields)]
pub enum ControlRequest {
    Pending {},
    /// Decide the entry `id` if it still shows exactly `digest` (what the CLI printed).
    /// `secret` answers the user verification (PAM) the entry asks for, if any.
    Decide {
        id: String,
        digest: String,
        approve: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        secret: Option<String>,
    },
    /// The oldest pending request that is not a pairing, waiting up to `wait_secs` for
    /// one (at most an hour): shown, never decided here.
    Next {
        #[serde(default)]
        wait_secs: u64,
    },
    /// Approve the pairing whose code is `code` (the code the other device shows);
    /// `secret` answers the user verification the signer asks for, if any. The answer
    /// lists the pairing's next step: this signer's code, to type on the other device.
    ApproveCode {
        code: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        secret: Option<String>,
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
    /// What the running signer is: where it listens, its devices and keys.
    Status {},
    /// The pending sign requests that may be decided as one list, with its digest.
    List {},
    /// Decide the list displayed with `digest` (all of it, or nothing).
    DecideList {
        digest: String,
        approve: bool,
    },
    /// The mutes in force.
    Mutes {},
    /// Lift every mute.
    ClearMutes {},
    /// Try PINs a token or the TPM refused again (after the PIN was fixed), reading
    /// the keys and the config's PINs again.
    PinReset {},
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<SignerStatus>,
    /// The digest of the list in `pending` (`List`), or of the list decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub list_digest: Option<String>,
    /// Every entry a `DecideList` decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_list: Option<Vec<PendingInfo>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mutes: Option<Vec<crate::mute::Mute>>,
    /// The devices whose refused PIN `PinReset` cleared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pins_reset: Option<Vec<String>>,
}

/// The running signer, for `vmux status`.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SignerStatus {
    pub pid: u32,
    pub name: String,
    pub device_id: String,
    pub fingerprint: String,
    #[serde(default)]
    pub address: Option<String>,
    pub devices: Vec<DeviceStatus>,
    pub keys: Vec<KeyStatus>,
    #[serde(default)]
    pub ca: Option<String>,
    pub pending: usize,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceStatus {
    pub id: String,
    pub name: String,
    pub connected: bool,
    pub last_seen: u64,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyStatus {
    pub fingerprint: String,
    pub comment: String,
    pub algorithm: String,
    pub store: String,
    pub enabled: bool,
}

fn fail(e: impl std::fmt::Display) -> ControlResponse {
    ControlResponse {
        ok: false,
        error: Some(e.to_string()),
        ..Default::default()
    }
}

fn decided(r: Result<Decided, SignerError>) -> ControlResponse {
    match r {
        Ok(d) => ControlResponse {
            ok: true,
            decided: Some(d.info),
            delivered: Some(d.delivered),
            ..Default::default()
        },
        Err(e) => fail(e),
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
    // Only a stale socket is replaced, never a file that is something else.
    match std::fs::symlink_metadata(path) {
        Ok(m) if std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()) => {
            let _ = std::fs::remove_file(path);
        }
        Ok(_) => return Err(ctl_err("exists and is not a socket; move it away".into())),
        Err(_) => {}
    }
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

/// One request at a time; while it is worked on (a `next --wait` may wait minutes), the
/// connection is watched: if the CLI goes away (Ctrl-C, kill), the work is dropped
/// before it decides anything.
async fn control_conn(signer: Arc<Signer>, stream: UnixStream) {
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let (mut line, mut more) = (Vec::new(), Vec::new());
    loop {
        let read = read_line(&mut r, &mut line).await;
        let resp = match read {
            Line::End => return,
            Line::TooLong => fail(format!(
                "bad control request: longer than {MAX_CONTROL_LINE} bytes; the connection is closed"
            )),
            Line::Read => match serde_json::from_slice::<ControlRequest>(&line) {
                Ok(req) => {
                    tokio::select! {
                        biased;
                        // Anything more from the CLI before its answer (EOF above all) ends it.
                        _ = read_line(&mut r, &mut more) => return,
                        resp = handle(&signer, req) => resp,
                    }
                }
                Err(e) => fail(format!("bad control request: {e}")),
            },
        };
        let mut out = serde_json::to_vec(&resp).expect("serializes");
        out.push(b'\n');
        if w.write_all(&out).await.is_err() || matches!(read, Line::TooLong) {
            return;
        }
    }
}

/// The longest control request line: the CLI's are a few hundred bytes. Without a cap a
/// process that never sends a newline would grow the signer's memory without end.
pub const MAX_CONTROL_LINE: usize = 64 * 1024;

enum Line {
    Read,
    TooLong,
    End,
}

/// One line into `buf` (without its newline), reading at most `MAX_CONTROL_LINE` + 1
/// bytes of it; a longer one is `TooLong`, and `buf` is then longer than the cap.
async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R, buf: &mut Vec<u8>) -> Line {
    use tokio::io::AsyncReadExt;
    buf.clear();
    match r
        .take(MAX_CONTROL_LINE as u64 + 1)
        .read_until(b'\n', buf)
        .await
    {
        Ok(0) | Err(_) => Line::End,
        Ok(_) if buf.last() == Some(&b'\n') => {
            buf.pop();
            Line::Read
        }
        Ok(_) if buf.len() > MAX_CONTROL_LINE => Line::TooLong,
        // The last line, without its newline.
        Ok(_) => Line::Read,
    }
}

/// The longest `next` wait the socket accepts.
pub const MAX_WAIT_SECS: u64 = 3600;

async fn handle(signer: &Signer, req: ControlRequest) -> ControlResponse {
    match req {
        ControlRequest::Pending {} => ControlResponse {
            ok: true,
            pending: Some(signer.queue.pending()),
            ..Default::default()
        },
        ControlRequest::List {} => match signer.queue.list() {
            Some(l) => ControlResponse {
                ok: true,
                list_digest: Some(crate::queue::list_digest(&l)),
                pending: Some(l),
                ..Default::default()
            },
            None => fail("fewer than two sign requests are pending: nothing to decide as a list"),
        },
        ControlRequest::DecideList { digest, approve } => {
            let r = decide::find_list(signer, &digest)
                .and_then(|ids| decide::list(signer, &ids, &digest, approve));
            match r {
                Ok(d) => ControlResponse {
                    ok: true,
                    list_digest: Some(digest),
                    decided_list: Some(d.into_iter().map(|d| d.info).collect()),
                    ..Default::default()
                },
                Err(e) => fail(e),
            }
        }
        ControlRequest::Mutes {} => ControlResponse {
            ok: true,
            mutes: Some(signer.mutes.list()),
            ..Default::default()
        },
        ControlRequest::ClearMutes {} => {
            let n = signer.mutes.clear();
            signer.record(obj(
                serde_json::json!({"event": "mutesCleared", "count": n}),
            ));
            ControlResponse {
                ok: true,
                mutes: Some(vec![]),
                ..Default::default()
            }
        }
        ControlRequest::PinReset {} => {
            let cleared = crate::keystore::reset_pins();
            signer.record(obj(
                serde_json::json!({"event": "pinReset", "devices": cleared}),
            ));
            match signer.keystore.reload(&signer.home) {
                Ok(()) => ControlResponse {
                    ok: true,
                    pins_reset: Some(cleared),
                    ..Default::default()
                },
                Err(e) => fail(format!(
                    "PINs reset, but the keys could not be read again: {e}"
                )),
            }
        }
        ControlRequest::Status {} => ControlResponse {
            ok: true,
            status: Some(status(signer)),
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
        } => decided(decide::approve(signer, &id, &digest, secret.map(Zeroizing::new)).await),
        ControlRequest::Decide {
            id,
            digest,
            approve: false,
            ..
        } => decided(decide::deny(signer, &id, &digest)),
        ControlRequest::Next { wait_secs } => {
            let wait = Duration::from_secs(wait_secs.min(MAX_WAIT_SECS));
            match signer.queue.next(wait, false).await {
                Some(p) => ControlResponse {
                    ok: true,
                    pending: Some(vec![p]),
                    ..Default::default()
                },
                None if signer.queue.pending().iter().any(|p| p.kind == "pair") => fail(
                    "nothing but a pairing is pending; approve a pairing by typing its code: \
                     `vmux signer approve --code NNNNNN`",
                ),
                None => fail(SignerError::NothingPending),
            }
        }
        ControlRequest::ApproveCode { code, secret } => {
            let r = decide::pair_by_code(signer, &code, secret.map(Zeroizing::new)).await;
            let mut resp = decided(r);
            // The pairing now shows this signer's code, for the person to type on the
            // workstation: hand it to the CLI that typed the first one.
            if let Some(d) = resp.decided.clone() {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
                loop {
                    let confirm = signer.queue.pending().into_iter().find(|p| {
                        p.kind == "pair" && p.from_id == d.from_id && p.signer_code.is_some()
                    });
                    if confirm.is_some() || tokio::time::Instant::now() >= deadline {
                        resp.pending = confirm.map(|c| vec![c]);
                        break;
                    }
                    signer.queue.changed(Duration::from_millis(100)).await;
                }
            }
            resp
        }
        ControlRequest::ReloadKeys { change } => match signer.reload_keys().await {
            Ok(_) => {
                if let Some(c) = change {
                    let (event, what) = c.split_once(": ").unwrap_or(("keys", &c));
                    signer.record(obj(serde_json::json!({
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

fn status(signer: &Signer) -> SignerStatus {
    let address = signer
        .home
        .dir
        .parent()
        .and_then(vmux_proto::local::read)
        .filter(|l| l.pid == std::process::id())
        .map(|l| l.address);
    SignerStatus {
        pid: std::process::id(),
        name: signer.config.name.clone(),
        device_id: signer.identity.device_id(),
        fingerprint: signer.fingerprint(),
        address,
        devices: signer
            .paired_devices()
            .into_iter()
            .map(|d| DeviceStatus {
                connected: signer.is_connected(&d.id),
                id: d.id,
                name: vmux_proto::text::field(&d.name),
                last_seen: d.last_seen,
            })
            .collect(),
        keys: signer
            .keystore
            .keys()
            .into_iter()
            .map(|k| KeyStatus {
                fingerprint: vmux_proto::identity::key_fingerprint(&k.public_key),
                comment: vmux_proto::text::field(&k.comment),
                algorithm: k.algorithm,
                store: k.provider,
                enabled: k.enabled,
            })
            .collect(),
        ca: signer.ca.as_deref().and_then(crate::ca::ca_line),
        pending: signer.queue.depth(),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<ControlRequest, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn an_unknown_field_is_named_and_refused() {
        assert!(matches!(
            parse(r#"{"op":"next","wait_secs":5}"#),
            Ok(ControlRequest::Next { wait_secs: 5 })
        ));
        let e = parse(r#"{"op":"next","wait_sec":5}"#).unwrap_err();
        assert!(e.contains("unknown field `wait_sec`"), "{e}");
        let e = parse(r#"{"op":"pending","id":"x"}"#).unwrap_err();
        assert!(e.contains("unknown field `id`"), "{e}");
        let e = parse(r#"{"op":"decide","id":"a","digest":"b","approve":true,"secrit":"1"}"#)
            .unwrap_err();
        assert!(e.contains("unknown field `secrit`"), "{e}");
        assert!(parse(r#"{"op":"decide","id":"a","digest":"b","approve":true}"#).is_ok());
        assert!(parse(r#"{"op":"launch"}"#).is_err());
    }

    #[tokio::test]
    async fn lines_are_read_up_to_the_cap_and_a_longer_one_is_refused() {
        let mut input = b"{\"op\":\"pending\"}\nlast".to_vec();
        let mut r = &input[..];
        let mut buf = vec![];
        assert!(matches!(read_line(&mut r, &mut buf).await, Line::Read));
        assert_eq!(buf, b"{\"op\":\"pending\"}");
        assert!(matches!(read_line(&mut r, &mut buf).await, Line::Read));
        assert_eq!(buf, b"last");
        assert!(matches!(read_line(&mut r, &mut buf).await, Line::End));

        input = vec![b'x'; MAX_CONTROL_LINE];
        input.push(b'\n');
        let mut r = &input[..];
        assert!(matches!(read_line(&mut r, &mut buf).await, Line::Read));
        assert_eq!(buf.len(), MAX_CONTROL_LINE);

        input = vec![b'x'; 10 * MAX_CONTROL_LINE];
        let mut r = &input[..];
        assert!(matches!(read_line(&mut r, &mut buf).await, Line::TooLong));
        assert_eq!(
            buf.len(),
            MAX_CONTROL_LINE + 1,
            "read no further than the cap"
        );
    }
}
