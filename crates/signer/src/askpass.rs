//! ssh-askpass as an approval surface, the way OpenSSH's `ssh-add -c` confirms: the
//! program named by `$SSH_ASKPASS` runs with `SSH_ASKPASS_PROMPT=confirm` and the
//! request text as its argument; exit status 0 approves, 1 denies. For a pairing it
//! runs as a plain prompt and what it prints must be the pairing code. A request that
//! leaves the queue kills its dialog; a dialog that dies by a signal decides nothing.

use crate::decide;
use crate::describe::describe;
use crate::queue::{Decision, PendingInfo};
use crate::signer::Signer;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

/// Ask through `program` about every request as it reaches the head of the queue.
pub async fn run(signer: Arc<Signer>, program: PathBuf) {
    let mut last = String::new();
    loop {
        let Some(p) = signer.queue.next(Duration::from_secs(3600), true).await else {
            continue;
        };
        if p.id == last {
            // Asked already (the dialog died without an answer): wait for a change.
            signer.queue.changed(Duration::from_secs(5)).await;
            continue;
        }
        last = p.id.clone();
        let asked = std::time::Instant::now();
        match ask(&signer, &program, &p).await {
            // An answer counts once the request was on screen for a second.
            Ok(Some(_)) if asked.elapsed() < crate::decide::SETTLE => {
                tracing::info!(
                    "ssh-askpass answered request {} within a second of showing it; asking again",
                    p.id
                );
                last.clear();
            }
            Ok(Some((d, typed))) => {
                // The digest of exactly what the dialog showed.
                let shown = p.compute_digest();
                let r = match (p.kind.as_str(), d) {
                    // Nothing typed is no answer (a confirm-only askpass): the pairing
                    // waits for its code elsewhere.
                    ("pair", _) if typed.trim().is_empty() => continue,
                    // The pairing's last step is typed on the other device.
                    ("pair", _) if p.signer_code.is_some() => continue,
                    ("pair", Decision::Approve) => {
                        let secret = match &p.verify {
                            Some(v) => {
                                let prompt =
                                    format!("User verification ({v}) before pairing: password");
                                match secret(&program, &prompt).await {
                                    Some(s) => Some(s),
                                    None => continue,
                                }
                            }
                            None => None,
                        };
                        decide::pair_shown(&signer, &p.id, &shown, typed.trim(), secret).await
                    }
                    (_, Decision::Approve) if p.verify.is_some() => {
                        let prompt = format!(
                            "User verification ({}): password",
                            p.verify.as_deref().unwrap_or("")
                        );
                        match secret(&program, &prompt).await {
                            Some(s) => decide::approve(&signer, &p.id, &shown, Some(s)).await,
                            None => continue,
                        }
                    }
                    (_, Decision::Approve) => decide::approve(&signer, &p.id, &shown, None).await,
                    _ => decide::deny(&signer, &p.id, &shown),
                };
                match r {
                    Ok(_) => tracing::info!("request {}: decided through ssh-askpass", p.id),
                    Err(e) => tracing::info!("ssh-askpass answer for {}: {e}", p.id),
                }
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(
                    "{}: {e}; requests wait for another surface",
                    program.display()
                );
                return;
            }
        }
    }
}

/// Ask `program` for a secret (a plain prompt: it prints what was typed).
async fn secret(program: &std::path::Path, prompt: &str) -> Option<zeroize::Zeroizing<String>> {
    let (program, prompt) = (program.to_path_buf(), prompt.to_string());
    let out = tokio::task::spawn_blocking(move || {
        Command::new(program)
            .arg(prompt)
            .env_remove("SSH_ASKPASS_PROMPT")
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
    })
    .await
    .ok()?
    .ok()?;
    if !out.status.success() {
        return None;
    }
    let s = zeroize::Zeroizing::new(String::from_utf8_lossy(&out.stdout).trim_end().to_string());
    let mut raw = out.stdout;
    zeroize::Zeroize::zeroize(&mut raw);
    Some(s)
}

/// Run the dialog for `p`. `Ok(None)`: no decision (the request left the queue, or the
/// dialog was killed).
async fn ask(
    signer: &Signer,
    program: &PathBuf,
    p: &PendingInfo,
) -> std::io::Result<Option<(Decision, String)>> {
    let text = if p.kind == "pair" {
        format!(
            "{}\n\nType the code the other device shows to pair it:",
            describe(p)
        )
    } else {
        format!("{}\n\nApprove this request?", describe(p))
    };
    let mut cmd = Command::new(program);
    cmd.arg(text)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if p.kind != "pair" {
        cmd.env("SSH_ASKPASS_PROMPT", "confirm");
    } else {
        cmd.env_remove("SSH_ASKPASS_PROMPT");
    }
    let mut child = cmd.spawn()?;
    loop {
        if let Some(status) = child.try_wait()? {
            let mut out = String::new();
            if let Some(o) = child.stdout.take() {
                use std::io::Read;
                let _ = o.take(256).read_to_string(&mut out);
            }
            return Ok(match status.code() {
                Some(0) => Some((Decision::Approve, out)),
                Some(_) => Some((Decision::Deny, out)),
                None => None,
            });
        }
        if !signer.queue.pending().iter().any(|q| q.id == p.id) {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        signer.queue.changed(Duration::from_millis(100)).await;
    }
}
