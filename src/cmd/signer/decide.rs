//! `vmux signer approve|deny`: print what is decided, then decide exactly that display
//! (one request by id, the oldest with --next, a pairing by code, or a list).

use super::*;

pub(super) async fn decide(
    home: &SignerHome,
    d: Decide,
    approve: bool,
) -> anyhow::Result<ExitCode> {
    let verb = if approve { "approved" } else { "denied" };
    if let Some(digest) = d.list {
        return decide_list(home, &digest, approve).await;
    }
    if let Some(code) = d.code {
        anyhow::ensure!(approve, "--code approves a pairing; deny one by its id");
        // With user verification configured, a new device is trusted only after it.
        let pending = call(home, &ControlRequest::Pending {})
            .await?
            .pending
            .unwrap_or_default();
        let secret = match pending
            .iter()
            .find(|p| p.kind == "pair" && p.code.as_deref() == Some(code.trim()))
            .and_then(|p| p.verify.clone())
        {
            Some(v) => Some(read_secret(&format!(
                "User verification ({v}) before pairing: password: "
            ))?),
            None => None,
        };
        let resp = call(
            home,
            &ControlRequest::ApproveCode {
                code,
                secret: secret.as_ref().map(|s| s.to_string()),
            },
        )
        .await?;
        if let Some(p) = resp.decided {
            println!(
                "code accepted for the device calling itself {} ({})",
                p.from, p.from_id
            );
        }
        match resp
            .pending
            .unwrap_or_default()
            .into_iter()
            .find_map(|p| p.signer_code)
        {
            Some(c) => println!(
                "signer code {c}: type it on that device to finish the pairing (it asks for it now)"
            ),
            None => println!("the pairing ended before this signer could show its code"),
        }
        return Ok(ExitCode::SUCCESS);
    }
    // Show what is being decided, then decide exactly that display.
    let p = if d.next {
        if d.wait > 0 {
            eprintln!(
                "waiting up to {}s for the next request (pairings excepted); Ctrl-C decides nothing",
                d.wait
            );
        }
        let resp = call(home, &ControlRequest::Next { wait_secs: d.wait }).await?;
        resp.pending
            .unwrap_or_default()
            .into_iter()
            .next()
            .ok_or_else(|| anyhow::anyhow!("{}", SignerError::NothingPending))?
    } else {
        let Some(id) = d.id else {
            bail!(
                "say which request: its id (from `vmux signer pending`), --next for the oldest \
                 one, or --code NNNNNN to approve a pairing by the code the other device shows"
            );
        };
        let pending = call(home, &ControlRequest::Pending {})
            .await?
            .pending
            .unwrap_or_default();
        let matches: Vec<_> = pending
            .into_iter()
            .filter(|p| !id.is_empty() && p.id.starts_with(&id))
            .collect();
        match <[_; 1]>::try_from(matches) {
            Ok([one]) => one,
            Err(m) if m.is_empty() => bail!("{}", SignerError::UnknownRequest(id)),
            Err(_) => bail!("{}", SignerError::AmbiguousRequest(id)),
        }
    };
    if p.kind == "pair" && approve {
        bail!("{}", SignerError::PairingNeedsCode);
    }
    // The digest of exactly what is printed here.
    let shown = p.compute_digest();
    println!("{}", describe(&p));
    println!("  digest:      {shown}");
    if let Some(want) = &d.digest {
        if want != &shown {
            bail!("{}", SignerError::DisplayChanged(p.id.clone()));
        }
    } else if d.next {
        // `--next` names no request: only a person who read it here decides it.
        if !std::io::stdin().is_terminal() {
            bail!(
                "--next decides only what a person read: answer on a terminal, or give the digest \
                 printed above (`vmux signer {} --next --digest {shown}`)",
                if approve { "approve" } else { "deny" }
            );
        }
        let q = if approve {
            "Approve this request? [y/N] "
        } else {
            "Deny this request? [y/N] "
        };
        if !confirm(q)? {
            println!("nothing decided");
            return Ok(ExitCode::from(1));
        }
    }
    // User verification after Approve: the answer is collected here and checked by
    // the signer's PAM stack before anything is signed.
    let secret = match (&p.verify, approve) {
        (Some(v), true) => Some(read_secret(&format!(
            "User verification ({v}): password: "
        ))?),
        _ => None,
    };
    let resp = call(
        home,
        &ControlRequest::Decide {
            id: p.id.clone(),
            digest: shown,
            approve,
            secret: secret.as_ref().map(|s| s.to_string()),
        },
    )
    .await?;
    println!("{verb}: request {}", p.id);
    if resp.delivered == Some(false) {
        println!("(the requester had already gone; recorded as a delivery failure)");
    }
    Ok(ExitCode::SUCCESS)
}

/// `approve|deny --list [DIGEST]`: print the list, or decide the one with that digest.
pub(super) async fn decide_list(
    home: &SignerHome,
    digest: &str,
    approve: bool,
) -> anyhow::Result<ExitCode> {
    let verb = if approve { "approve" } else { "deny" };
    if digest.is_empty() {
        let resp = call(home, &ControlRequest::List {}).await?;
        print_list(&resp.pending.unwrap_or_default());
        println!(
            "{verb} exactly these: vmux signer {verb} --list {}",
            resp.list_digest.unwrap_or_default()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let resp = call(
        home,
        &ControlRequest::DecideList {
            digest: digest.to_string(),
            approve,
        },
    )
    .await?;
    let decided = resp.decided_list.unwrap_or_default();
    println!(
        "{}: {} requests of list {digest}",
        if approve { "approved" } else { "denied" },
        decided.len()
    );
    for (i, p) in decided.iter().enumerate() {
        println!("{}", vmux_signer::describe::list_line(i + 1, p));
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn print_list(list: &[PendingInfo]) {
    println!("{} sign requests, to decide as one list:", list.len());
    for (i, p) in list.iter().enumerate() {
        println!("{}", vmux_signer::describe::list_line(i + 1, p));
    }
}

/// A y/N question on the terminal; anything but y/yes is no. An answer typed within a
/// second of the request being printed is not taken: the question is asked again.
pub(super) fn confirm(question: &str) -> anyhow::Result<bool> {
    use std::io::Write;
    let shown = std::time::Instant::now();
    loop {
        print!("{question}");
        std::io::stdout().flush()?;
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        if shown.elapsed() < vmux_signer::decide::SETTLE {
            println!("(too soon: read the request, then answer again)");
            continue;
        }
        return Ok(matches!(
            line.trim().to_ascii_lowercase().as_str(),
            "y" | "yes"
        ));
    }
}

/// A secret from the terminal (not echoed), or the first line of standard input when it
/// is not a terminal (scripts, tests).
pub(super) fn read_secret(prompt: &str) -> anyhow::Result<zeroize::Zeroizing<String>> {
    if std::io::stdin().is_terminal() {
        return Ok(zeroize::Zeroizing::new(rpassword::prompt_password(prompt)?));
    }
    let mut line = zeroize::Zeroizing::new(String::new());
    std::io::stdin().read_line(&mut line)?;
    let trimmed = line.trim_end_matches(['\r', '\n']).to_string();
    Ok(zeroize::Zeroizing::new(trimmed))
}
