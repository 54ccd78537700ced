//! The line prompt of `vmux up --no-ui`: each request as text, then `Approve? [y/N]`.
//! `y`/`yes` approves a request, the typed code approves a pairing; anything else
//! denies. Input typed before a request was on screen does not count, and a request
//! that leaves the queue meanwhile is withdrawn with a line saying why. At end of input
//! the prompt stops and requests wait for the control socket.

use crate::decide;
use crate::describe::describe;
use crate::queue::{Gone, PendingInfo};
use crate::signer::Signer;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use zeroize::Zeroizing;

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

/// Show each request and ask (see the module docs).
pub async fn prompt<W: AsyncWrite + Unpin>(
    signer: Arc<Signer>,
    mut input: tokio::sync::mpsc::Receiver<Typed>,
    mut output: W,
) {
    loop {
        let Some(p) = signer.queue.next(Duration::from_secs(3600), true).await else {
            continue;
        };
        let confirming = p.signer_code.is_some();
        let ask = if confirming {
            "Type this code on the other device to finish the pairing (nothing to answer here).\n"
        } else if p.kind == "pair" {
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
                    // Nothing typed here decides a pairing's last step.
                    Some(_) if confirming => continue,
                    // An answer counts once the request was on screen for a second.
                    Some((at, _)) if at < shown + crate::decide::SETTLE => {
                        let _ = output
                            .write_all(b"(too soon: read the request, then answer again) ")
                            .await;
                        let _ = output.flush().await;
                        continue;
                    }
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
            Some(a)
                if p.verify.is_some()
                    && p.kind == "pair"
                    && p.code.as_deref() == Some(a.trim()) =>
            {
                let _ = output
                    .write_all(b"User verification (PAM) before pairing: password: ")
                    .await;
                let _ = output.flush().await;
                let echo = EchoOff::new();
                let secret = input.recv().await.map(|(_, s)| Zeroizing::new(s));
                drop(echo);
                let _ = output.write_all(b"\n").await;
                match decide::pair_shown(&signer, &p.id, &p.compute_digest(), a.trim(), secret)
                    .await
                {
                    Ok(d) => format!(
                        "paired with {} once the code it asks for is typed there\n",
                        d.info.from
                    ),
                    Err(e) => format!("{e}\n"),
                }
            }
            Some(a) if p.verify.is_some() && p.kind != "pair" && is_yes(&a) => {
                let _ = output
                    .write_all(b"User verification (PAM): password: ")
                    .await;
                let _ = output.flush().await;
                let echo = EchoOff::new();
                let secret = input.recv().await.map(|(_, s)| Zeroizing::new(s));
                drop(echo);
                let _ = output.write_all(b"\n").await;
                match decide::approve(&signer, &p.id, &p.compute_digest(), secret).await {
                    Ok(_) => "approved\n".to_string(),
                    Err(e) => format!("{e}\n"),
                }
            }
            Some(a) => decide_typed(&signer, &p, &a).await,
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

async fn decide_typed(signer: &Signer, p: &PendingInfo, answer: &str) -> String {
    let answer = answer.trim();
    // The digest of exactly what this prompt printed.
    let shown = p.compute_digest();
    let result = if p.kind == "pair" {
        match decide::pair_shown(signer, &p.id, &shown, answer, None).await {
            Err(crate::SignerError::NoPairingWithCode) => {
                Ok("that is not the code of this pairing: denied\n".to_string())
            }
            r => r.map(|d| {
                format!(
                    "code accepted: now type the code shown below on {}\n",
                    d.info.from
                )
            }),
        }
    } else if is_yes(answer) {
        decide::approve(signer, &p.id, &shown, None)
            .await
            .map(|d| word("approved", d.delivered))
    } else {
        decide::deny(signer, &p.id, &shown).map(|d| word("denied", d.delivered))
    };
    result.unwrap_or_else(|e| match e {
        crate::SignerError::UnknownRequest(_) | crate::SignerError::DisplayChanged(_) => {
            "that request is no longer pending (expired, cancelled or decided elsewhere)\n".into()
        }
        e => format!("{e}\n"),
    })
}

fn word(w: &str, delivered: bool) -> String {
    if delivered {
        format!("{w}\n")
    } else {
        format!("{w}, but the requester had already gone\n")
    }
}
