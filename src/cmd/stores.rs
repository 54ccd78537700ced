//! Where a new key is made (`--store software|tpm|pkcs11`), the PINs hardware keys
//! need, and opening a key directory whatever it holds.

use anyhow::{bail, Context as _};
use clap::Args;
use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use vmux_signer::keystore::{self, pkcs11, software, Keystore, Open};
use vmux_signer::state::SignerConfig;
use vmux_signer::SignerHome;
use zeroize::Zeroizing;

#[derive(Args, Clone, Debug)]
pub struct StoreArgs {
    /// Where the key is made: software (an OpenSSH file in the key directory), tpm
    /// (inside this machine's TPM 2.0) or pkcs11 (on a token: SoftHSM2, YubiKey, smart card).
    #[arg(long, default_value = "software", value_parser = ["software", "tpm", "pkcs11"])]
    pub store: String,
    /// The PKCS#11 module for --store pkcs11 (e.g. /usr/lib/softhsm/libsofthsm2.so,
    /// /usr/lib/x86_64-linux-gnu/libykcs11.so, /usr/lib/x86_64-linux-gnu/opensc-pkcs11.so).
    #[arg(long)]
    pub module: Option<PathBuf>,
    /// The token's label for --store pkcs11.
    #[arg(long)]
    pub token: Option<String>,
    /// Protect a TPM key with a PIN (asked on the terminal, or VMUX_PIN); the TPM's
    /// dictionary-attack lockout limits guesses.
    #[arg(long)]
    pub pin: bool,
}

impl Default for StoreArgs {
    fn default() -> Self {
        StoreArgs {
            store: "software".into(),
            module: None,
            token: None,
            pin: false,
        }
    }
}

/// PINs typed when the signer started (kept in this process only).
static TYPED: Mutex<Option<HashMap<String, Zeroizing<String>>>> = Mutex::new(None);

/// The PIN for a token label (`tpm` for TPM keys): the config's `[pins]` (unattended
/// tokens), `VMUX_PIN`, or what was typed at start.
pub fn pin_source(config: &SignerConfig) -> pkcs11::PinSource {
    let configured: HashMap<String, Zeroizing<String>> = config
        .pins
        .iter()
        .map(|(k, v)| (k.clone(), Zeroizing::new(v.clone())))
        .collect();
    Arc::new(move |token: &str| {
        if let Some(p) = configured.get(token) {
            return Some(p.clone());
        }
        if let Some(p) = super::env_pin() {
            return Some(p);
        }
        TYPED.lock().unwrap().as_ref()?.get(token).cloned()
    })
}

/// A PIN for `token` now: configured, `VMUX_PIN`, or asked on the terminal.
pub fn pin_for(
    config: &SignerConfig,
    token: &str,
    prompt: &str,
) -> anyhow::Result<Zeroizing<String>> {
    if let Some(p) = pin_source(config)(token) {
        return Ok(p);
    }
    if !std::io::stdin().is_terminal() {
        bail!("{prompt} is needed: run on a terminal, set VMUX_PIN, or add it under [pins] in the signer's config");
    }
    let p = Zeroizing::new(
        rpassword::prompt_password(format!("{prompt}: ")).context("reading the PIN")?,
    );
    TYPED
        .lock()
        .unwrap()
        .get_or_insert_with(HashMap::new)
        .insert(token.to_string(), p.clone());
    Ok(p)
}

fn forget_typed(token: &str) {
    if let Some(typed) = TYPED.lock().unwrap().as_mut() {
        typed.remove(token);
    }
}

/// At `signer run` on a terminal: ask now for the PINs the keys will need, so no request
/// waits on a prompt nobody sees.
pub fn ask_pins(home: &SignerHome, config: &SignerConfig) -> anyhow::Result<()> {
    if !std::io::stdin().is_terminal() {
        return Ok(());
    }
    let source = pin_source(config);
    for dir in [home.keys(), home.ca()] {
        for (token, module) in pkcs11::tokens_in(&dir) {
            if source(&token).is_some() {
                continue;
            }
            // Checked at once: a typo is told now, not at the first login. Each refusal
            // counts towards the token's lock, as it would at use, and is the person's.
            loop {
                let pin = pin_for(config, &token, &format!("PIN for token {token}"))?;
                match pkcs11::check_pin(&module, &token, &pin) {
                    pkcs11::PinCheck::Accepted => break,
                    pkcs11::PinCheck::NotChecked(why) => {
                        eprintln!("PIN for token {token} not checked now ({why}); it is tried when a key of the token signs");
                        break;
                    }
                    pkcs11::PinCheck::Refused(why) => {
                        eprintln!("{why}; type it again (Ctrl-C stops)");
                        forget_typed(&token);
                    }
                }
            }
        }
        let tpm_pin = keystore::tss2_files(&dir).iter().any(|f| {
            std::fs::read_to_string(f)
                .ok()
                .and_then(|t| keystore::tss2::TpmKey::from_pem(&t).ok())
                .is_some_and(|k| !k.empty_auth)
        });
        if tpm_pin && source("tpm").is_none() {
            pin_for(config, "tpm", "PIN for the TPM keys")?;
        }
    }
    Ok(())
}

pub fn open_how(config: &SignerConfig, passphrase: Option<Zeroizing<String>>) -> Open {
    Open {
        passphrase,
        pins: pin_source(config),
        tcti: config.tcti.clone(),
    }
}

/// Open every key in `dir` (software, PKCS#11 references, TPM blobs).
pub fn open_dir(dir: &Path, how: &Open) -> anyhow::Result<Box<dyn Keystore>> {
    Ok(keystore::open_dir(dir, how)?)
}

/// Make a key in `dir` in the store `s` names; returns its public key.
pub fn generate(
    config: &SignerConfig,
    dir: &Path,
    s: &StoreArgs,
    key_type: &str,
    comment: &str,
    passphrase: Option<&str>,
) -> anyhow::Result<ssh_key::PublicKey> {
    vmux_proto::store::ensure_dir(dir, 0o700)?;
    match s.store.as_str() {
        "software" => Ok(software::generate(
            dir,
            software::parse_algorithm(key_type)?,
            comment,
            passphrase,
        )?),
        "pkcs11" => {
            let (module, token) = token_of(s)?;
            let kind = pkcs11::Kind::parse(key_type)?;
            let pin = pin_for(config, &token, &format!("PIN for token {token}"))?;
            Ok(pkcs11::generate(dir, &module, &token, &pin, kind, comment)?)
        }
        "tpm" => tpm_generate(config, dir, s, key_type, comment),
        other => bail!("--store {other}: use software, tpm or pkcs11"),
    }
}

fn token_of(s: &StoreArgs) -> anyhow::Result<(PathBuf, String)> {
    match (&s.module, &s.token) {
        (Some(m), _) if !m.is_file() => bail!(
            "PKCS#11 module {} not found (SoftHSM2: /usr/lib/softhsm/libsofthsm2.so; YubiKey: libykcs11.so; smart cards: opensc-pkcs11.so)",
            m.display()
        ),
        (Some(m), Some(t)) => Ok((m.clone(), t.clone())),
        _ => bail!("--store pkcs11 needs --module PATH and --token LABEL"),
    }
}

#[cfg(feature = "tpm")]
fn tpm_generate(
    config: &SignerConfig,
    dir: &Path,
    s: &StoreArgs,
    key_type: &str,
    comment: &str,
) -> anyhow::Result<ssh_key::PublicKey> {
    use vmux_signer::keystore::tpm;
    let kind = tpm::Kind::parse(key_type)?;
    let pin = if s.pin {
        Some(pin_for(config, "tpm", "PIN for the new TPM key")?)
    } else {
        None
    };
    let tcti = tpm::tcti(config.tcti.as_deref());
    Ok(tpm::generate(
        dir,
        &tcti,
        kind,
        pin.as_deref().map(|p| p.as_str()),
        comment,
    )?)
}

/// `keys import` of a `TSS2 PRIVATE KEY`: the comment comes from `FILE.pub` beside it
/// (ssh-tpm-agent's layout), else the key's description.
#[cfg(feature = "tpm")]
pub fn import_tpm(
    config: &SignerConfig,
    dir: &Path,
    file: &Path,
    pem: &str,
) -> anyhow::Result<ssh_key::PublicKey> {
    use vmux_signer::keystore::tpm;
    let comment = std::fs::read_to_string(file.with_extension("pub"))
        .ok()
        .and_then(|l| ssh_key::PublicKey::from_openssh(l.trim()).ok())
        .map(|k| k.comment().to_string())
        .filter(|c| !c.is_empty());
    vmux_proto::store::ensure_dir(dir, 0o700)?;
    let tcti = tpm::tcti(config.tcti.as_deref());
    tpm::import(dir, &tcti, pem, comment.as_deref())
        .with_context(|| format!("importing {}", file.display()))
}

#[cfg(not(feature = "tpm"))]
pub fn import_tpm(
    _: &SignerConfig,
    _: &Path,
    _: &Path,
    _: &str,
) -> anyhow::Result<ssh_key::PublicKey> {
    Err(vmux_signer::SignerError::NoTpmSupport.into())
}

#[cfg(not(feature = "tpm"))]
fn tpm_generate(
    _: &SignerConfig,
    _: &Path,
    _: &StoreArgs,
    _: &str,
    _: &str,
) -> anyhow::Result<ssh_key::PublicKey> {
    Err(vmux_signer::SignerError::NoTpmSupport.into())
}

/// Reference a key already on a token (`--use-existing --label L | --id HEX`).
pub fn use_existing(
    config: &SignerConfig,
    dir: &Path,
    s: &StoreArgs,
    label: Option<&str>,
    id: Option<&str>,
    comment: &str,
) -> anyhow::Result<ssh_key::PublicKey> {
    anyhow::ensure!(
        s.store == "pkcs11",
        "--use-existing is for keys on a PKCS#11 token (--store pkcs11)"
    );
    let (module, token) = token_of(s)?;
    let pin = pin_for(config, &token, &format!("PIN for token {token}"))?;
    vmux_proto::store::ensure_dir(dir, 0o700)?;
    Ok(pkcs11::use_existing(
        dir, &module, &token, &pin, label, id, comment,
    )?)
}

#[cfg(test)]
mod tests {
    /// `--store tpm` in a build without the `tpm` feature says why it cannot be done.
    #[test]
    fn a_build_without_tpm_support_says_so() {
        let said = vmux_signer::SignerError::NoTpmSupport.to_string();
        assert!(said.contains("built without TPM support"), "{said}");
        #[cfg(not(feature = "tpm"))]
        {
            use super::*;
            let dir = std::env::temp_dir().join(format!("vmux-notpm-{}", std::process::id()));
            let store = StoreArgs {
                store: "tpm".into(),
                ..Default::default()
            };
            let e = generate(&SignerConfig::default(), &dir, &store, "ecdsa", "c", None)
                .unwrap_err()
                .to_string();
            let _ = std::fs::remove_dir_all(&dir);
            assert!(e.contains("built without TPM support"), "{e}");
        }
    }
}
