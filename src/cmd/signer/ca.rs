//! `vmux signer ca …`: the CA key and the policy it issues under.

use super::*;

pub(super) fn ca(home: &SignerHome, cmd: CaCmd) -> anyhow::Result<()> {
    let mut config = home.load_config()?;
    home.migrate()?;
    match cmd {
        CaCmd::Init {
            store,
            key_type,
            force,
        } => {
            // ssh-key checks every certificate it builds, and vmux carries no RSA code
            // (RSA keys live only in hardware, for logins): a CA is ECDSA or Ed25519.
            if key_type
                .as_deref()
                .is_some_and(|t| t.to_ascii_lowercase().starts_with("rsa"))
            {
                bail!("a CA key is ECDSA (P-256 or P-384) or Ed25519, not RSA: every OpenSSH since 5.7 accepts ECDSA CAs");
            }
            let existing = public_lines_in(&home.ca())?;
            if !existing.is_empty() {
                anyhow::ensure!(
                    force,
                    "this signer already has a CA key ({}); --force replaces it, and every server that trusts it must then be given the new one",
                    existing[0]
                );
                let dest = home.dir.join("removed-keys");
                vmux_proto::store::ensure_dir(&dest, 0o700)?;
                let stamp = vmux_proto::now_unix();
                for f in std::fs::read_dir(home.ca())?.flatten() {
                    let to = dest.join(format!("ca-{stamp}-{}", f.file_name().to_string_lossy()));
                    std::fs::rename(f.path(), &to)
                        .with_context(|| format!("moving {}", f.path().display()))?;
                }
            }
            let key_type = key_type.unwrap_or_else(|| CA_TYPE.into());
            let pass = keystore_passphrase(home)?;
            let public = super::super::stores::generate(
                &config,
                &home.ca(),
                &store,
                &key_type,
                &format!("vmux-ca@{}", config.name),
                pass.as_deref().map(|s| s.as_str()),
            )?;
            changed(
                home,
                "ca",
                &format!(
                    "new CA key {} ({})",
                    public.fingerprint(ssh_key::HashAlg::Sha256),
                    store.store
                ),
            );
            println!("{}", public.to_openssh()?);
            println!("restart the signer to issue certificates with it; servers trust it with TrustedUserCAKeys");
        }
        CaCmd::Pub => {
            let lines = public_lines_in(&home.ca())?;
            anyhow::ensure!(!lines.is_empty(), "no CA key in {}", home.ca().display());
            println!("{}", lines[0]);
        }
        CaCmd::Policy {
            max_validity,
            principals,
            issue,
            extensions,
            source_address,
        } => {
            let changed = max_validity.is_some()
                || principals.is_some()
                || issue.is_some()
                || extensions.is_some()
                || source_address.is_some();
            let before = config.ca.clone();
            if let Some(e) = extensions {
                let list: Vec<String> = e
                    .split(',')
                    .map(str::trim)
                    .filter(|x| !x.is_empty())
                    .map(String::from)
                    .collect();
                for x in &list {
                    anyhow::ensure!(
                        vmux_signer::ca::KNOWN_EXTENSIONS.contains(&x.as_str()),
                        "unknown certificate extension {x:?}; known: {}",
                        vmux_signer::ca::KNOWN_EXTENSIONS.join(", ")
                    );
                }
                config.ca.extensions = list;
            }
            if let Some(src) = source_address {
                let src = src.trim().to_string();
                config.ca.source_address = (!src.is_empty()).then_some(src);
            }
            if let Some(v) = max_validity {
                config.ca.max_validity_secs = v;
            }
            if let Some(p) = principals {
                config.ca.principals = p
                    .split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(String::from)
                    .collect();
            }
            if let Some(i) = issue {
                config.ca.issue = i == "on";
            }
            if changed {
                home.save_config(&config)?;
                let what = ca_policy_change(&before, &config.ca);
                println!("changed: {what}");
                self::changed(home, "caPolicy", &what);
            }
            let p = &config.ca;
            println!("issue: {}", if p.issue { "on" } else { "off" });
            println!(
                "max validity: {}",
                vmux_proto::time::duration(p.max_validity_secs)
            );
            println!(
                "extensions: {}",
                if p.extensions.is_empty() {
                    "none".to_string()
                } else {
                    p.extensions.join(",")
                }
            );
            println!(
                "source address: {}",
                p.source_address.as_deref().unwrap_or("any")
            );
            if p.principals.is_empty() {
                println!("principals: the user the workstation asks for (its agent's user)");
            } else {
                println!(
                    "principals: only {} may be asked for",
                    p.principals.join(", ")
                );
            }
            println!(
                "approving a certificate grants, e.g.: {}",
                vmux_signer::ca::grants(p, &[example_principal(p)], p.max_validity_secs)
            );
        }
    }
    Ok(())
}

/// A principal to show what a certificate grants: the policy's first, else this user.
pub(super) fn example_principal(p: &vmux_signer::state::CaPolicy) -> String {
    p.principals
        .first()
        .cloned()
        .unwrap_or_else(vmux_agent::state::current_user)
}

/// What changed between two CA policies, in words (`principals any → alice,bob`).
pub(super) fn ca_policy_change(
    a: &vmux_signer::state::CaPolicy,
    b: &vmux_signer::state::CaPolicy,
) -> String {
    let list = |l: &[String]| {
        if l.is_empty() {
            "any".to_string()
        } else {
            l.join(",")
        }
    };
    let mut out = vec![];
    if a.issue != b.issue {
        out.push(format!("issue {} → {}", a.issue, b.issue));
    }
    if a.max_validity_secs != b.max_validity_secs {
        out.push(format!(
            "max validity {} → {}",
            vmux_proto::time::duration(a.max_validity_secs),
            vmux_proto::time::duration(b.max_validity_secs)
        ));
    }
    if a.principals != b.principals {
        out.push(format!(
            "principals {} → {}",
            list(&a.principals),
            list(&b.principals)
        ));
    }
    if a.extensions != b.extensions {
        out.push(format!(
            "extensions {} → {}",
            a.extensions.join(","),
            b.extensions.join(",")
        ));
    }
    if a.source_address != b.source_address {
        out.push(format!(
            "source address {} → {}",
            a.source_address.as_deref().unwrap_or("any"),
            b.source_address.as_deref().unwrap_or("any")
        ));
    }
    if out.is_empty() {
        "nothing (the same values again)".into()
    } else {
        out.join("; ")
    }
}
