//! `vmux signer keys …`: make, import, list, enable, rename and remove keys.

use super::*;

pub(super) fn keys(home: &SignerHome, cmd: KeysCmd) -> anyhow::Result<()> {
    home.load_config()?;
    home.migrate()?;
    match cmd {
        KeysCmd::Pub => {
            for line in public_lines_of(home)? {
                println!("{line}");
            }
        }
        KeysCmd::List => {
            // From the public halves: no passphrase needed to see what is there.
            let states = vmux_signer::keys::load_states(home)?;
            software::check_dir(&home.keys())?;
            for k in software::public_keys(&home.keys())? {
                let st = states.get(&k.fingerprint).cloned().unwrap_or_default();
                // A token key: which slot holds the token now, if any.
                let mut store = if k.store.starts_with("pkcs11") && k.private_present {
                    vmux_signer::keystore::pkcs11::describe(&k.private)
                } else {
                    k.store
                };
                if let Some(app) = &k.security_key {
                    store += &format!(", security key ({app})");
                }
                println!(
                    "{}  {}  {}  ({}){}{}",
                    k.fingerprint,
                    k.algorithm,
                    st.name.as_deref().unwrap_or(&k.comment),
                    store,
                    if st.enabled { "" } else { "  DISABLED" },
                    if k.private_present {
                        ""
                    } else {
                        "  MISSING PRIVATE KEY (cannot sign)"
                    }
                );
            }
        }
        KeysCmd::Disable { key } | KeysCmd::Enable { key } | KeysCmd::Rename { key, .. }
            if !software::public_keys(&home.keys())?
                .iter()
                .any(|k| k.fingerprint == key) =>
        {
            bail!("no key {key} here; `vmux signer keys list` shows the fingerprints")
        }
        KeysCmd::Disable { key } => key_state(home, &key, "disabled", |s| s.enabled = false)?,
        KeysCmd::Enable { key } => key_state(home, &key, "enabled", |s| s.enabled = true)?,
        KeysCmd::Rename { key, name } => {
            let name = name.trim().to_string();
            anyhow::ensure!(!name.is_empty(), "give the key a name");
            key_state(home, &key, &format!("renamed to {name:?}"), |s| {
                s.name = Some(name.clone())
            })?
        }
        KeysCmd::Remove { key } => {
            let k = software::public_keys(&home.keys())?
                .into_iter()
                .find(|k| k.fingerprint == key)
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "no key {key} here; `vmux signer keys list` shows the fingerprints"
                    )
                })?;
            let dest = home.dir.join("removed-keys");
            vmux_proto::store::ensure_dir(&dest, 0o700)?;
            for f in [k.private.clone(), k.private.with_extension("pub")] {
                if f.exists() {
                    let to = dest.join(f.file_name().unwrap_or_default());
                    std::fs::rename(&f, &to).with_context(|| format!("moving {}", f.display()))?;
                }
            }
            println!(
                "removed {key}: moved to {} (delete it there to destroy the key)",
                dest.display()
            );
            changed_keys(home, &format!("removed {key}"));
        }
        KeysCmd::Import { file } => import_key(home, &file)?,
        KeysCmd::Policy {
            key,
            namespaces,
            hosts,
            verify,
            clear,
        } => {
            let mut config = home.load_config()?;
            let list = |s: Option<String>| {
                s.map(|s| {
                    s.split(',')
                        .map(str::trim)
                        .filter(|x| !x.is_empty())
                        .map(String::from)
                        .collect()
                })
            };
            if let Some(key) = key {
                let ks = open_keystore(home)?;
                let known = ks
                    .keys()
                    .iter()
                    .any(|k| vmux_proto::identity::key_fingerprint(&k.public_key) == key);
                anyhow::ensure!(
                    known,
                    "no key {key} here; `vmux signer keys list` shows the fingerprints"
                );
                // Verification stays as it was unless --verify says otherwise.
                let kept_verify = config
                    .policy
                    .iter()
                    .find(|p| p.key == key)
                    .and_then(|p| p.verify.clone());
                let verify = match verify.as_deref() {
                    Some("off") => None,
                    Some(v) => Some(v.to_string()),
                    None => kept_verify,
                };
                config.policy.retain(|p| p.key != key);
                let what = if clear {
                    format!("{key} cleared")
                } else {
                    format!(
                        "{key} namespaces={} hosts={} verify={}",
                        namespaces.clone().unwrap_or_default(),
                        hosts.clone().unwrap_or_default(),
                        verify.as_deref().unwrap_or("off")
                    )
                };
                if !clear {
                    config.policy.push(vmux_signer::state::KeyPolicy {
                        key,
                        namespaces: list(namespaces),
                        hosts: list(hosts),
                        verify,
                    });
                }
                home.save_config(&config)?;
                changed(home, "policy", &what);
            }
            if config.policy.is_empty() {
                println!("no key policies: every request is shown to a person");
            }
            for p in &config.policy {
                // A key limited in one way is for that use only (see KeyPolicy::check).
                let show = |l: &Option<Vec<String>>| {
                    l.as_ref().map(|l| l.join(",")).unwrap_or_else(|| {
                        if p.namespaces.is_some() || p.hosts.is_some() {
                            "none".into()
                        } else {
                            "any".into()
                        }
                    })
                };
                println!(
                    "{}  namespaces: {}  hosts: {}{}",
                    p.key,
                    show(&p.namespaces),
                    show(&p.hosts),
                    p.verify
                        .as_deref()
                        .map(|v| format!("  verify: {v}"))
                        .unwrap_or_default()
                );
            }
        }
        KeysCmd::Add {
            key_type,
            application,
            comment,
            store,
            use_existing,
            ..
        } if application.is_some() || sk::Curve::parse(&key_type).is_some() => {
            let curve = sk::Curve::parse(&key_type).ok_or_else(|| {
                anyhow::anyhow!(
                    "--application is for security-key keys (--type sk-ecdsa or sk-ed25519)"
                )
            })?;
            anyhow::ensure!(
                !use_existing,
                "--use-existing makes no security-key key: a token key made by vmux can be one (--type sk-ecdsa --store pkcs11)"
            );
            let app = application.unwrap_or_else(|| sk::DEFAULT_APPLICATION.into());
            sk::check_application(&app)?;
            if curve == sk::Curve::Ed25519 && store.store != "software" {
                bail!(
                    "--type sk-ed25519 is made in software only (a TPM and a PKCS#11 token hold P-256 here: --type sk-ecdsa)"
                );
            }
            let inner = if store.store == "software" {
                let pass = software_passphrase(home)?;
                software::generate(
                    &home.keys(),
                    software::parse_algorithm(curve.inner_type())?,
                    &comment,
                    pass.as_deref().map(|s| s.as_str()),
                )?
            } else {
                let config = home.load_config()?;
                super::super::stores::generate(
                    &config,
                    &home.keys(),
                    &store,
                    curve.inner_type(),
                    &comment,
                    None,
                )?
            };
            let public = sk::adopt(&home.keys(), &inner, &app)?;
            println!("{}", public.to_openssh()?);
            changed_keys(
                home,
                &format!(
                    "added {} ({}, security key {app})",
                    public.fingerprint(ssh_key::HashAlg::Sha256),
                    store.store
                ),
            );
        }
        KeysCmd::Add {
            comment,
            store,
            use_existing: true,
            label,
            id,
            ..
        } => {
            let config = home.load_config()?;
            let public = super::super::stores::use_existing(
                &config,
                &home.keys(),
                &store,
                label.as_deref(),
                id.as_deref(),
                &comment,
            )?;
            println!("{}", public.to_openssh()?);
            changed_keys(
                home,
                &format!(
                    "added {} (pkcs11)",
                    public.fingerprint(ssh_key::HashAlg::Sha256)
                ),
            );
        }
        KeysCmd::Add {
            key_type,
            comment,
            store,
            ..
        } if store.store != "software" => {
            let config = home.load_config()?;
            let public = super::super::stores::generate(
                &config,
                &home.keys(),
                &store,
                &key_type,
                &comment,
                None,
            )?;
            println!("{}", public.to_openssh()?);
            changed_keys(
                home,
                &format!(
                    "added {} ({})",
                    public.fingerprint(ssh_key::HashAlg::Sha256),
                    store.store
                ),
            );
        }
        KeysCmd::Add {
            key_type, comment, ..
        } => {
            let algorithm = software::parse_algorithm(&key_type)?;
            let pass = software_passphrase(home)?;
            let public = software::generate(
                &home.keys(),
                algorithm,
                &comment,
                pass.as_deref().map(|s| s.as_str()),
            )?;
            println!("{}", public.to_openssh()?);
            changed_keys(
                home,
                &format!("added {}", public.fingerprint(ssh_key::HashAlg::Sha256)),
            );
        }
    }
    Ok(())
}

/// The passphrase a new software key is encrypted with: the keystore's, checked, when
/// its keys are encrypted.
pub(super) fn software_passphrase(
    home: &SignerHome,
) -> anyhow::Result<Option<zeroize::Zeroizing<String>>> {
    if !software::any_encrypted(&home.keys())? {
        return Ok(None);
    }
    let p = super::super::passphrase("Keystore passphrase: ", false)?
        .ok_or_else(|| SignerError::NeedsPassphrase(home.keys()))?;
    SoftwareKeystore::open(&home.keys(), Some(&p))?; // checks it
    Ok(Some(p))
}

/// Change one key's state and tell the running signer.
pub(super) fn key_state(
    home: &SignerHome,
    key: &str,
    what: &str,
    change: impl FnOnce(&mut vmux_signer::keys::KeyState),
) -> anyhow::Result<()> {
    let mut states = vmux_signer::keys::load_states(home)?;
    let st = states.entry(key.to_string()).or_default();
    change(st);
    vmux_signer::keys::save_states(home, &states)?;
    println!("{key} {what}");
    changed_keys(home, &format!("{key} {what}"));
    Ok(())
}

/// Keys changed on disk: the running signer reloads them and pushes the new list to
/// its devices, and records the change; with no signer running, it is recorded here.
pub(super) fn changed_keys(home: &SignerHome, change: &str) {
    changed(home, "keys", change)
}

/// Record a change of keys or policy in the decision log (through the running signer,
/// which also reloads its keys; directly when none runs).
pub(super) fn changed(home: &SignerHome, event: &str, change: &str) {
    let req = ControlRequest::ReloadKeys {
        change: Some(format!("{event}: {change}")),
    };
    let reached = tokio::task::block_in_place(|| {
        tokio::runtime::Handle::current().block_on(control_call(&home.control_socket(), &req))
    });
    match reached {
        Ok(r) if r.ok && event == "keys" => {
            println!("the running signer now offers the new key list")
        }
        Ok(r) if r.ok => {}
        Ok(r) => eprintln!(
            "the running signer could not reload its keys: {}",
            r.error.unwrap_or_default()
        ),
        Err(_) => {
            let logged = vmux_proto::journal::Journal::open(&home.log()).and_then(|mut j| {
                let serde_json::Value::Object(m) = serde_json::json!({
                    "time": vmux_proto::now_unix(), "event": event, "change": change})
                else {
                    unreachable!("a JSON object")
                };
                j.append(m)
            });
            if let Err(e) = logged {
                eprintln!("{e}");
            }
        }
    }
}

/// `keys import FILE`: an existing OpenSSH private key into the key directory,
/// encrypted with the keystore's passphrase when the keystore is encrypted.
pub(super) fn import_key(home: &SignerHome, file: &std::path::Path) -> anyhow::Result<()> {
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?,
    );
    if vmux_signer::keystore::tss2::looks_like(&text) {
        let config = home.load_config()?;
        let public = super::super::stores::import_tpm(&config, &home.keys(), file, &text)?;
        println!("{}", public.to_openssh()?);
        eprintln!(
            "warning: imported, but {} still works with this TPM (through ssh-tpm-agent or \
             tpm2-openssl) without asking anyone: delete it and its backups",
            file.display()
        );
        changed_keys(
            home,
            &format!(
                "imported TPM key {}",
                public.fingerprint(ssh_key::HashAlg::Sha256)
            ),
        );
        return Ok(());
    }
    let mut key = ssh_key::PrivateKey::from_openssh(text.as_bytes())
        .with_context(|| format!("{}: not an OpenSSH private key", file.display()))?;
    if key.is_encrypted() {
        let p = read_secret(&format!("Passphrase for {}: ", file.display()))?;
        key = key
            .decrypt(p.as_bytes())
            .map_err(|_| anyhow::anyhow!("{}: wrong passphrase", file.display()))?;
    }
    let pass = keystore_passphrase(home)?;
    let public = software::store(&home.keys(), key, pass.as_deref().map(|s| s.as_str()))?;
    println!("{}", public.to_openssh()?);
    eprintln!(
        "warning: imported, but copies of this key still exist ({} and any backups): \
         delete them, or the key can still sign without asking anyone",
        file.display()
    );
    changed_keys(
        home,
        &format!("imported {}", public.fingerprint(ssh_key::HashAlg::Sha256)),
    );
    Ok(())
}

/// Public lines of the signing keys that can sign (the private key is there): no
/// passphrase needed to print them.
pub fn public_lines_of(home: &SignerHome) -> anyhow::Result<Vec<String>> {
    let signable: Vec<String> = software::public_keys(&home.keys())?
        .into_iter()
        .filter(|k| k.private_present)
        .map(|k| k.fingerprint)
        .collect();
    Ok(public_lines_in(&home.keys())?
        .into_iter()
        .filter(|l| {
            ssh_key::PublicKey::from_openssh(l).is_ok_and(|k| {
                signable.contains(&k.fingerprint(ssh_key::HashAlg::Sha256).to_string())
            })
        })
        .collect())
}

/// Public lines from the `.pub` files in `dir`.
pub(super) fn public_lines_in(dir: &std::path::Path) -> anyhow::Result<Vec<String>> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("{}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "pub"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|f| {
            Ok(std::fs::read_to_string(f)
                .with_context(|| format!("{}", f.display()))?
                .trim()
                .to_string())
        })
        .collect()
}
