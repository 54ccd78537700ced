//! `vmux signer …`

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use tokio::net::TcpListener;
use vmux_signer::control::{control_call, ControlRequest};
use vmux_signer::describe::describe;
use vmux_signer::keystore::sk;
use vmux_signer::keystore::software::{self, SoftwareKeystore};
use vmux_signer::queue::PendingInfo;
use vmux_signer::state::SignerConfig;
use vmux_signer::{Signer, SignerError, SignerHome};

#[derive(Subcommand)]
pub enum SignerCmd {
    /// Reach beyond the local network: `anywhere [--relay URL]...` (by iroh endpoint id,
    /// hole-punched or relayed) or `local` (the default); no action shows it.
    Reach(super::reach::ReachArgs),
    /// Create this device's identity and its first key (no prompt without a terminal).
    Init {
        /// The name paired devices show for this signer (e.g. alice-pi).
        #[arg(long)]
        name: String,
        /// Key type of the first key: ecdsa (ecdsa-sha2-nistp256), ecdsa-p384 or ed25519.
        #[arg(long = "type", default_value = "ecdsa")]
        key_type: String,
        /// The first key's comment (default `vmux@NAME`).
        #[arg(long, default_value = "")]
        comment: String,
        /// Encrypt keys with a passphrase (asked on the terminal, or VMUX_PASSPHRASE).
        #[arg(long)]
        passphrase: bool,
        /// Where agents POST a wake message when they need this signer (ntfy/UnifiedPush).
        #[arg(long)]
        wake_url: Option<String>,
        /// Where the first key and the CA key are made (software, tpm or pkcs11).
        #[command(flatten)]
        store: super::stores::StoreArgs,
    },
    /// Keys: `pub` prints authorized_keys lines, `list` shows fingerprints, `add` makes one.
    #[command(subcommand)]
    Keys(KeysCmd),
    /// Write a systemd user unit (or a launchd plist) that runs the signer at login, and
    /// say how to enable and remove it.
    InstallService(super::service::InstallArgs),
    /// Serve paired agents; prints the address it bound and its pairing fingerprint.
    Run {
        /// Address to listen on (port 0 = any free port). Default: the config's `listen`.
        #[arg(long)]
        listen: Option<String>,
        /// No full-screen sheet on a terminal: print one line per request instead
        /// (decide with `vmux signer approve/deny` from another shell).
        #[arg(long)]
        no_ui: bool,
    },
    /// What waits for a decision: id, kind, device, purpose, destination, key.
    Pending {
        /// Machine-readable output (every peer-supplied string is escaped).
        #[arg(long)]
        json: bool,
    },
    /// Approve a pending request: by id (shown, then approved if it is still exactly
    /// that), the oldest one with --next, or a pairing by typing its code with --code.
    #[command(
        after_help = "Without an id: use --next for the oldest request, or --code NNNNNN for a pairing."
    )]
    Approve(Decide),
    /// Deny a pending request (by id, the oldest one with --next, or a list with --list).
    Deny(Decide),
    /// PINs: `pin reset` tries again a PIN a token or the TPM refused (a refused PIN is
    /// not tried again, through key reloads, so a wrong one cannot lock the device).
    Pin {
        #[command(subcommand)]
        action: PinCmd,
    },
    /// Requesters muted from the sheet (denied at once until the mute ends): list them,
    /// or lift every mute.
    #[command(group = clap::ArgGroup::new("what").required(true))]
    Mute {
        /// The mutes in force: device, requester chain, until when, how many denied.
        #[arg(long, group = "what")]
        list: bool,
        /// Lift every mute: their requests are asked about again.
        #[arg(long, group = "what")]
        clear: bool,
    },
    /// Host keys this signer has pinned (recorded when you approve a login whose server
    /// proved its key); `hosts remove NAME|SHA256:…` forgets one.
    Hosts {
        #[command(subcommand)]
        action: Option<HostsCmd>,
    },
    /// Paired devices; `devices revoke ID` un-pairs one.
    Devices {
        #[command(subcommand)]
        action: Option<DevicesCmd>,
    },
    /// The session-certificate CA: `pub` for TrustedUserCAKeys, `policy` to show or set.
    #[command(subcommand)]
    Ca(CaCmd),
    /// The decision log; `--verify` checks its hash chain.
    Log {
        /// Check the hash chain and say where it breaks, if anywhere.
        #[arg(long)]
        verify: bool,
    },
}

#[derive(Subcommand)]
pub enum KeysCmd {
    /// The signing keys as authorized_keys lines (no passphrase needed).
    Pub,
    /// Fingerprint, type, comment and store of every signing key.
    List,
    /// Limit what a key may sign, checked before anyone is asked: without options, show.
    Policy {
        /// The key's SHA256 fingerprint (from `vmux signer keys list`).
        key: Option<String>,
        /// Allowed SSHSIG namespaces, comma-separated (e.g. git,file).
        #[arg(long)]
        namespaces: Option<String>,
        /// Allowed login hosts, comma-separated patterns (verified destinations only).
        #[arg(long)]
        hosts: Option<String>,
        /// User verification after Approve for this key: `pam` (PAM with the signer's
        /// `pam_service`), or `off`. A security-key key then sets user-verified in its
        /// signatures, which sshd's `verify-required` asks for.
        #[arg(long, value_parser = ["pam", "off"])]
        verify: Option<String>,
        /// Remove the key's policy.
        #[arg(long)]
        clear: bool,
    },
    /// Stop offering a key: not listed to agents, requests for it get keyDisabled.
    Disable {
        /// The key's SHA256 fingerprint (from `vmux signer keys list`).
        key: String,
    },
    /// Offer a disabled key again.
    Enable {
        /// The key's SHA256 fingerprint.
        key: String,
    },
    /// Give a key the name agents and prompts show.
    Rename {
        /// The key's SHA256 fingerprint.
        key: String,
        /// The new name.
        name: String,
    },
    /// Take a key out of the key directory (moved to signer/removed-keys/, so it can be
    /// restored or destroyed on purpose).
    Remove {
        /// The key's SHA256 fingerprint.
        key: String,
    },
    /// Bring in an existing OpenSSH private key (ed25519 or P-256, encrypted or not), or
    /// a TPM key of this machine's TPM (`TSS2 PRIVATE KEY`, from ssh-tpm-agent,
    /// tpm2-openssl or tpm2_encodeobject).
    Import {
        /// The private key file (its passphrase is asked on the terminal, or read from
        /// standard input).
        file: std::path::PathBuf,
    },
    /// Make a new signing key (a running signer offers it from its next key list), in
    /// software, inside the TPM, or on a PKCS#11 token.
    Add {
        /// ecdsa (ecdsa-sha2-nistp256), ecdsa-p384 or ed25519; in a TPM ecdsa or rsa; on a token
        /// ecdsa, ecdsa-p384 or rsa. Security-key keys (sk-ecdsa-sha2-nistp256@openssh.com,
        /// sk-ssh-ed25519@openssh.com), whose signatures tell the server that a person
        /// approved: sk-ecdsa (any store) or sk-ed25519 (software).
        #[arg(long = "type", default_value = "ecdsa")]
        key_type: String,
        /// A security-key key's application string (OpenSSH's; begins with `ssh:`).
        #[arg(long)]
        application: Option<String>,
        /// The key's comment, shown on every request it signs.
        #[arg(long, default_value = "")]
        comment: String,
        #[command(flatten)]
        store: super::stores::StoreArgs,
        /// Use a key pair already on the token (--store pkcs11) instead of making one.
        #[arg(long, requires = "token")]
        use_existing: bool,
        /// With --use-existing: the key's CKA_LABEL.
        #[arg(long, requires = "use_existing")]
        label: Option<String>,
        /// With --use-existing: the key's CKA_ID, hex.
        #[arg(long, requires = "use_existing")]
        id: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum HostsCmd {
    /// Pin a host key under a name by hand (what a `hosts` key policy can then match
    /// before the first login): the key as a public key line, a known_hosts line, or a
    /// file holding one (e.g. the server's /etc/ssh/ssh_host_ed25519_key.pub).
    Add {
        /// The host name logins to it are shown with (`host` or `host:port`).
        name: String,
        /// The host key: `ssh-ed25519 AAAA…`, a known_hosts line, or a file.
        key: String,
    },
    /// Forget the pins for a host name or a host-key fingerprint.
    Remove {
        /// A pinned name (as `hosts` lists it) or a `SHA256:…` host-key fingerprint.
        what: String,
    },
}

#[derive(Subcommand)]
pub enum DevicesCmd {
    /// Un-pair a device: its next connection or request gets `pairingInvalid`.
    Revoke {
        /// The device id, from `vmux signer devices`.
        id: String,
    },
}

#[derive(Subcommand)]
pub enum CaCmd {
    /// The CA public key line, for sshd's TrustedUserCAKeys.
    Pub,
    /// Make the CA key: in software, inside the TPM or on a PKCS#11 token. With --force
    /// an existing CA key is moved to signer/removed-keys/ first (servers that trust it
    /// must then be given the new one). Restart the signer to use it.
    Init {
        #[command(flatten)]
        store: super::stores::StoreArgs,
        /// ed25519, ecdsa or ecdsa-p384 in software; ecdsa in the TPM; ecdsa or ecdsa-p384 on a token
        /// (not RSA: vmux checks each certificate it issues and has no RSA code).
        /// Default: ed25519 in software, ecdsa elsewhere.
        #[arg(long = "type")]
        key_type: Option<String>,
        /// Replace an existing CA key.
        #[arg(long)]
        force: bool,
    },
    /// Show the issuance policy; with options, change it (applies to the next request).
    Policy {
        /// Longest validity granted, e.g. 8h, 30m, 90s.
        #[arg(long, value_parser = super::parse_duration)]
        max_validity: Option<u64>,
        /// Comma-separated user names a workstation may ask certificates for (empty
        /// string: any, the workstation's own user by default); others are refused.
        #[arg(long)]
        principals: Option<String>,
        /// Whether certificates are issued at all.
        #[arg(long, value_parser = ["on", "off"])]
        issue: Option<String>,
        /// Comma-separated certificate extensions (permit-pty, permit-port-forwarding,
        /// permit-agent-forwarding, permit-X11-forwarding, permit-user-rc); empty for none.
        #[arg(long)]
        extensions: Option<String>,
        /// Comma-separated CIDR list the certificate may be used from (source-address);
        /// empty to lift the limit.
        #[arg(long)]
        source_address: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum PinCmd {
    /// Fix the PIN first (the config's [pins], or restart with the right VMUX_PIN),
    /// then reset: the keys and the config's PINs are read again and tried at the
    /// next signature.
    Reset,
}

#[derive(Args)]
pub struct Decide {
    /// The request id (or a unique prefix of it), from `vmux signer pending`: the entry
    /// is printed, then decided.
    #[arg(conflicts_with_all = ["next", "code", "list"])]
    id: Option<String>,
    /// Two or more pending sign requests as one list: without DIGEST, print the list
    /// and its digest; with it, decide exactly the requests of that list (all or none).
    /// A request that arrived after the list was printed is not on it and stays pending.
    #[arg(long, value_name = "DIGEST", num_args = 0..=1, default_missing_value = "",
          conflicts_with_all = ["next", "code", "digest"])]
    list: Option<String>,
    /// The oldest pending request (never a pairing): printed with its digest, then
    /// decided only by an answer typed on this terminal, or by `--digest`.
    #[arg(long, conflicts_with = "code")]
    next: bool,
    /// With --next: wait up to this many seconds (at most 3600) for a request to
    /// arrive. The wait ends with this command: interrupt it and nothing is decided.
    #[arg(long, default_value_t = 0, requires = "next", value_parser = clap::value_parser!(u64).range(0..=3600))]
    wait: u64,
    /// Decide only if the entry still shows exactly this digest (printed by `pending
    /// --json`, `approve --next` and the sheet's details): how a script binds its
    /// decision to what it displayed.
    #[arg(long, value_name = "SHA256")]
    digest: Option<String>,
    /// Approve the pairing whose code the other device shows (`vmux agent pair` prints it).
    #[arg(long, value_name = "NNNNNN")]
    code: Option<String>,
}

pub fn home() -> SignerHome {
    SignerHome::new(&vmux_proto::store::vmux_home())
}

pub async fn run(cmd: SignerCmd) -> anyhow::Result<ExitCode> {
    let home = home();
    match cmd {
        SignerCmd::Init {
            name,
            key_type,
            comment,
            passphrase,
            wake_url,
            store,
        } => {
            let pass = if passphrase {
                let p = super::passphrase("Passphrase for the keystore: ", true)?;
                if p.is_none() {
                    bail!("--passphrase needs a terminal or VMUX_PASSPHRASE");
                }
                p
            } else {
                None
            };
            let public = init(
                &home,
                wake_url,
                &name,
                &key_type,
                &comment,
                pass.as_deref().map(|s| s.as_str()),
                &store,
            )?;
            println!("initialized signer {name:?} in {}", home.dir.display());
            println!("{public}");
        }
        SignerCmd::Keys(k) => keys(&home, k)?,
        SignerCmd::Reach(a) => {
            return super::reach::run(super::reach::Device::Signer, &home.dir, a).await
        }
        SignerCmd::InstallService(args) => super::service::install(
            super::service::Daemon::Signer,
            args,
            std::path::Path::new(""),
        )?,
        SignerCmd::Run { listen, no_ui } => {
            let signer = open(&home)?;
            let addr = listen.unwrap_or_else(|| signer.config.listen.clone());
            let listener = TcpListener::bind(&addr)
                .await
                .with_context(|| format!("cannot listen on {addr}"))?;
            start(&signer, &home).await?;
            println!(
                "vmux signer {:?} listening on {}",
                signer.config.name,
                listener.local_addr()?
            );
            println!("pairing fingerprint {}", signer.fingerprint());
            let _advert = advertise(&signer, listener.local_addr()?)?;
            let sheet = !no_ui && std::io::stdout().is_terminal() && std::io::stdin().is_terminal();
            if sheet {
                let opts = vmux_signer::sheet::Options {
                    header: vec![
                        format!(
                            "{:?} listening on {}, pairing fingerprint {}",
                            signer.config.name,
                            listener.local_addr()?,
                            signer.fingerprint()
                        ),
                        "Decide here, or from another shell with `vmux signer approve|deny`."
                            .into(),
                    ],
                    log: home.output_log(),
                    confirm_quit: None,
                };
                tokio::select! {
                    r = signer.clone().serve(listener) => r?,
                    r = vmux_signer::sheet::run(signer.clone(), opts) => r?,
                    _ = super::shutdown_signal() => {}
                }
            } else {
                tokio::spawn(announce(signer.clone()));
                tokio::select! {
                    r = signer.clone().serve(listener) => r?,
                    _ = super::shutdown_signal() => {}
                }
            }
            let _ = std::fs::remove_file(home.control_socket());
            signer.remove_listening();
        }
        SignerCmd::Pending { json } => {
            let resp = call(&home, &ControlRequest::Pending).await?;
            let pending = resp.pending.unwrap_or_default();
            if json {
                println!("{}", serde_json::to_string_pretty(&pending)?);
            } else if pending.is_empty() {
                println!("nothing pending");
            } else {
                for p in &pending {
                    println!("{}", vmux_signer::describe::summary(p));
                }
                let list = call(&home, &ControlRequest::List).await.ok();
                if let Some((l, digest)) = list.and_then(|r| r.pending.zip(r.list_digest)) {
                    println!();
                    print_list(&l);
                    println!("list digest {digest}: vmux signer approve --list {digest} (or deny --list)");
                }
            }
        }
        SignerCmd::Approve(d) => return decide(&home, d, true).await,
        SignerCmd::Deny(d) => return decide(&home, d, false).await,
        SignerCmd::Pin {
            action: PinCmd::Reset,
        } => {
            let cleared = call(&home, &ControlRequest::PinReset)
                .await?
                .pins_reset
                .unwrap_or_default();
            if cleared.is_empty() {
                println!("no PIN was refused: nothing to reset (keys and PINs read again)");
            }
            for d in cleared {
                println!("{d}: its PIN will be tried again at the next signature");
            }
        }
        SignerCmd::Mute { clear, .. } => {
            let req = if clear {
                ControlRequest::ClearMutes
            } else {
                ControlRequest::Mutes
            };
            let before = call(&home, &ControlRequest::Mutes).await?.mutes;
            let mutes = call(&home, &req).await?.mutes.unwrap_or_default();
            if clear {
                println!("lifted {} mutes", before.map_or(0, |m| m.len()));
            } else if mutes.is_empty() {
                println!("no mutes");
            }
            for m in &mutes {
                let until = m
                    .until
                    .map_or("until the signer restarts".to_string(), |u| {
                        format!(
                            "for {} more",
                            vmux_proto::time::duration(u.saturating_sub(vmux_proto::now_unix()))
                        )
                    });
                println!(
                    "muted: {} ({})  requester {}  {until}  denied {} so far",
                    m.device, m.device_id, m.requester, m.denied
                );
            }
        }
        SignerCmd::Devices {
            action: Some(DevicesCmd::Revoke { id }),
        } => {
            // Through the running signer when there is one, so it forgets at once.
            match control_call(
                &home.control_socket(),
                &ControlRequest::Revoke { id: id.clone() },
            )
            .await
            {
                Ok(r) if r.ok => {}
                Ok(r) => bail!("{}", r.error.unwrap_or_default()),
                Err(_) => {
                    let mut p = home.load_paired()?;
                    let before = p.len();
                    p.retain(|d| d.id != id);
                    anyhow::ensure!(
                        p.len() < before,
                        "no paired device with id {id}; `vmux signer devices` lists them"
                    );
                    home.save_paired(&p)?;
                }
            }
            println!("revoked {id}");
        }
        SignerCmd::Devices { action: None } => {
            let devices = home.load_paired()?;
            if devices.is_empty() {
                println!("no paired devices");
            }
            for d in devices {
                println!(
                    "{}  {}  paired {}  last seen {}",
                    d.id,
                    d.name,
                    super::local_time(d.paired_at),
                    super::local_time(d.last_seen)
                );
            }
        }
        SignerCmd::Log { verify } => return super::agent::print_log(&home.log(), verify),
        SignerCmd::Hosts { action } => hosts(&home, action)?,
        SignerCmd::Ca(c) => ca(&home, c)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Create config, identity and the first key. Refuses to touch an existing signer.
pub fn init(
    home: &SignerHome,
    wake_url: Option<String>,
    name: &str,
    key_type: &str,
    comment: &str,
    passphrase: Option<&str>,
    store: &super::stores::StoreArgs,
) -> anyhow::Result<String> {
    if let Some(url) = &wake_url {
        vmux_agent::wake::url_allowed(url, true).map_err(|e| anyhow::anyhow!(e))?;
    }
    if home.exists() {
        return Err(SignerError::AlreadyInitialized(home.dir.clone()).into());
    }
    if store.store == "software" {
        software::parse_algorithm(key_type)?;
    }
    let config = SignerConfig {
        name: name.to_string(),
        wake_url,
        ..Default::default()
    };
    let fresh = !home.dir.exists();
    vmux_proto::store::ensure_dir(&home.dir, 0o700)?;
    let comment = if comment.is_empty() {
        format!("vmux@{name}")
    } else {
        comment.to_string()
    };
    let made = (|| {
        let public =
            super::stores::generate(&config, &home.keys(), store, key_type, &comment, passphrase)?;
        let ca_type = if store.store == "software" {
            "ed25519"
        } else {
            "ecdsa"
        };
        super::stores::generate(
            &config,
            &home.ca(),
            store,
            ca_type,
            &format!("vmux-ca@{name}"),
            passphrase,
        )?;
        anyhow::Ok(public)
    })();
    let public = match made {
        Ok(p) => p,
        Err(e) => {
            // Nothing half-made stays behind: `init` can simply be run again.
            if fresh {
                let _ = std::fs::remove_dir_all(&home.dir);
            }
            return Err(e);
        }
    };
    vmux_proto::Identity::load_or_create(&home.identity())?;
    home.save_config(&config)?;
    Ok(public.to_openssh()?)
}

fn keys(home: &SignerHome, cmd: KeysCmd) -> anyhow::Result<()> {
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
                super::stores::generate(
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
            let public = super::stores::use_existing(
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
            let public =
                super::stores::generate(&config, &home.keys(), &store, &key_type, &comment, None)?;
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
fn software_passphrase(home: &SignerHome) -> anyhow::Result<Option<zeroize::Zeroizing<String>>> {
    if !software::any_encrypted(&home.keys())? {
        return Ok(None);
    }
    let p = super::passphrase("Keystore passphrase: ", false)?
        .ok_or_else(|| SignerError::NeedsPassphrase(home.keys()))?;
    SoftwareKeystore::open(&home.keys(), Some(&p))?; // checks it
    Ok(Some(p))
}

/// Change one key's state and tell the running signer.
fn key_state(
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
fn changed_keys(home: &SignerHome, change: &str) {
    changed(home, "keys", change)
}

/// Record a change of keys or policy in the decision log (through the running signer,
/// which also reloads its keys; directly when none runs).
fn changed(home: &SignerHome, event: &str, change: &str) {
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
fn import_key(home: &SignerHome, file: &std::path::Path) -> anyhow::Result<()> {
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?,
    );
    if vmux_signer::keystore::tss2::looks_like(&text) {
        let config = home.load_config()?;
        let public = super::stores::import_tpm(&config, &home.keys(), file, &text)?;
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
fn public_lines_in(dir: &std::path::Path) -> anyhow::Result<Vec<String>> {
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

pub fn open_keystore(
    home: &SignerHome,
) -> anyhow::Result<Box<dyn vmux_signer::keystore::Keystore>> {
    let pass = keystore_passphrase(home)?;
    let how = super::stores::open_how(&home.load_config()?, pass);
    super::stores::open_dir(&home.keys(), &how)
}

/// The passphrase, asked only when a key is encrypted.
fn keystore_passphrase(home: &SignerHome) -> anyhow::Result<Option<zeroize::Zeroizing<String>>> {
    if !software::any_encrypted(&home.keys())? && !software::any_encrypted(&home.ca())? {
        return Ok(None);
    }
    Ok(Some(
        super::passphrase("Keystore passphrase: ", false)?
            .ok_or_else(|| SignerError::NeedsPassphrase(home.keys()))?,
    ))
}

pub fn open(home: &SignerHome) -> anyhow::Result<Arc<Signer>> {
    let config = home.load_config()?;
    home.migrate()?;
    let pass = keystore_passphrase(home)?;
    super::stores::ask_pins(home, &config)?;
    let how = super::stores::open_how(&config, pass.clone());
    let ks = super::stores::open_dir(&home.keys(), &how)?;
    let ca = super::stores::open_dir(&home.ca(), &how)?;
    let ca = if ca.keys().is_empty() { None } else { Some(ca) };
    let signer = Signer::open_with_ca(home.clone(), ks, ca)?;
    // Keys added or imported while the signer runs are opened with the same passphrase
    // (kept in this process only, as the decrypted keys already are) and the PINs the
    // config holds now (one fixed after a refusal counts after `pin reset`).
    let h = home.clone();
    signer.keystore.set_reopen(Box::new(move || {
        let how = match h.load_config() {
            Ok(c) => super::stores::open_how(&c, pass.clone()),
            Err(_) => how.clone(),
        };
        vmux_signer::keystore::open_dir(&h.keys(), &how)
    }));
    Ok(signer)
}

fn ca(home: &SignerHome, cmd: CaCmd) -> anyhow::Result<()> {
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
            let key_type = key_type.unwrap_or_else(|| {
                if store.store == "software" {
                    "ed25519"
                } else {
                    "ecdsa"
                }
                .into()
            });
            let pass = keystore_passphrase(home)?;
            let public = super::stores::generate(
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

/// Advertise over mDNS as the config says; `None` when discovery is off or unavailable
/// (a signer with a static address works without it).
pub fn advertise(
    signer: &Signer,
    local: std::net::SocketAddr,
) -> anyhow::Result<Option<vmux_proto::discovery::Advert>> {
    use vmux_proto::discovery;
    let scope = discovery::scope_for(&signer.config.discovery, Some(local.ip()))
        .map_err(|e| anyhow::anyhow!("{}: {e}", signer.home.config().display()))?;
    let Some(scope) = scope else {
        return Ok(None);
    };
    let id = signer.identity.device_id();
    match discovery::advertise(scope, &id, &signer.config.name, local) {
        Ok(a) => {
            println!("advertising {} as id {id} ({scope:?})", discovery::SERVICE);
            Ok(Some(a))
        }
        Err(e) => {
            tracing::warn!("not advertised: {e}");
            Ok(None)
        }
    }
}

/// Bind the control socket and start the approval surfaces the config asks for:
/// desktop notifications and ssh-askpass.
pub async fn start(signer: &Arc<Signer>, home: &SignerHome) -> anyhow::Result<()> {
    vmux_signer::control::serve_control(signer.clone(), &home.control_socket()).await?;
    let c = &signer.config;
    if c.notify
        .unwrap_or_else(vmux_signer::desktop::session_bus_available)
    {
        tokio::spawn(vmux_signer::desktop::run(signer.clone()));
    }
    match c.approver.as_deref() {
        None | Some("sheet") | Some("terminal") => {}
        Some("askpass") => match std::env::var_os("SSH_ASKPASS").filter(|a| !a.is_empty()) {
            Some(program) => {
                tokio::spawn(vmux_signer::askpass::run(signer.clone(), program.into()));
            }
            None => tracing::warn!(
                "approver = \"askpass\" but SSH_ASKPASS is not set: requests wait for the terminal or the CLI"
            ),
        },
        Some(other) => tracing::warn!(
            "{}: unknown approver {other:?} (use \"askpass\"); ignored",
            home.config().display()
        ),
    }
    Ok(())
}

async fn call(
    home: &SignerHome,
    req: &ControlRequest,
) -> anyhow::Result<vmux_signer::control::ControlResponse> {
    let resp = control_call(&home.control_socket(), req).await?;
    if !resp.ok {
        bail!(
            "{}",
            resp.error
                .clone()
                .unwrap_or_else(|| "the signer refused".into())
        );
    }
    Ok(resp)
}

async fn decide(home: &SignerHome, d: Decide, approve: bool) -> anyhow::Result<ExitCode> {
    let verb = if approve { "approved" } else { "denied" };
    if let Some(digest) = d.list {
        return decide_list(home, &digest, approve).await;
    }
    if let Some(code) = d.code {
        anyhow::ensure!(approve, "--code approves a pairing; deny one by its id");
        // With user verification configured, a new device is trusted only after it.
        let pending = call(home, &ControlRequest::Pending)
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
        let pending = call(home, &ControlRequest::Pending)
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
async fn decide_list(home: &SignerHome, digest: &str, approve: bool) -> anyhow::Result<ExitCode> {
    let verb = if approve { "approve" } else { "deny" };
    if digest.is_empty() {
        let resp = call(home, &ControlRequest::List).await?;
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

fn print_list(list: &[PendingInfo]) {
    println!("{} sign requests, to decide as one list:", list.len());
    for (i, p) in list.iter().enumerate() {
        println!("{}", vmux_signer::describe::list_line(i + 1, p));
    }
}

/// A y/N question on the terminal; anything but y/yes is no. An answer typed within a
/// second of the request being printed is not taken: the question is asked again.
fn confirm(question: &str) -> anyhow::Result<bool> {
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
fn read_secret(prompt: &str) -> anyhow::Result<zeroize::Zeroizing<String>> {
    if std::io::stdin().is_terminal() {
        return Ok(zeroize::Zeroizing::new(rpassword::prompt_password(prompt)?));
    }
    let mut line = zeroize::Zeroizing::new(String::new());
    std::io::stdin().read_line(&mut line)?;
    let trimmed = line.trim_end_matches(['\r', '\n']).to_string();
    Ok(zeroize::Zeroizing::new(trimmed))
}

/// `vmux signer run` says when a request arrives, so a person knows to act: one line
/// per request, and the terminal bell.
async fn announce(signer: Arc<Signer>) {
    use std::io::Write;
    let bell = std::io::stdout().is_terminal();
    let mut seen = std::collections::HashSet::new();
    loop {
        let pending = signer.queue.pending();
        for p in &pending {
            if seen.insert(p.id.clone()) {
                let what = p.purpose.as_deref().unwrap_or(&p.kind);
                let dest = p
                    .destination
                    .as_deref()
                    .map(|d| format!(" → {d}"))
                    .unwrap_or_default();
                let how = match p.kind.as_str() {
                    "pair" => "compare its code (`vmux signer pending`) with the one the \
                               other device shows, then `vmux signer approve --code` it"
                        .to_string(),
                    _ => format!(
                        "approve with `vmux signer approve {}`, or deny",
                        &p.id[..12.min(p.id.len())]
                    ),
                };
                let line = format!(
                    "{}request {}: {} from {}: {what}{dest} ({how})",
                    if bell { "\x07" } else { "" },
                    p.id,
                    p.kind,
                    p.from
                );
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{line}");
                let _ = out.flush();
            }
        }
        seen.retain(|id| pending.iter().any(|p| &p.id == id));
        signer
            .queue
            .changed(std::time::Duration::from_secs(5))
            .await;
    }
}

fn hosts(home: &SignerHome, action: Option<HostsCmd>) -> anyhow::Result<()> {
    use vmux_signer::hosts::{self as pins, HostPins};
    let path = pins::path(&home.dir);
    let mut all = HostPins::load(&path);
    match action {
        None => {
            if all.pins.is_empty() {
                println!("no pinned hosts (a host is pinned when you approve a login whose server proved its key)");
            }
            for p in &all.pins {
                println!("{}  {}", p.name, p.fingerprint());
            }
        }
        Some(HostsCmd::Add { name, key }) => {
            let text = match std::fs::read_to_string(&key) {
                Ok(t) => t,
                Err(_) => key.clone(),
            };
            let parsed = text.lines().find_map(|l| {
                let l = l.trim();
                ssh_key::PublicKey::from_openssh(l).ok().or_else(|| {
                    l.parse::<ssh_key::known_hosts::Entry>()
                        .ok()
                        .map(|e| e.public_key().clone())
                })
            });
            let k = parsed.ok_or_else(|| {
                anyhow::anyhow!(
                    "{key}: not a public key line, a known_hosts line or a file holding one"
                )
            })?;
            let name = vmux_proto::ssh_config::canonical_name(name.trim());
            anyhow::ensure!(
                pins::pinnable_name(&name),
                "{name:?} is not a host name a login can be shown with"
            );
            let blob = ssh_key::encoding::Encode::encode_vec(k.key_data())?;
            if all.add(&name, &blob) {
                all.save(&path)?;
                changed(
                    home,
                    "hostPinned",
                    &format!("{name} {}", pins::fingerprint(&blob)),
                );
            }
            println!("{name}  {}", pins::fingerprint(&blob));
        }
        Some(HostsCmd::Remove { what }) => {
            let n = all.remove(&what);
            anyhow::ensure!(
                n > 0,
                "no pinned host {what}; `vmux signer hosts` lists them"
            );
            all.save(&path)?;
            println!("removed {n} pin(s) for {what}");
        }
    }
    Ok(())
}

/// A principal to show what a certificate grants: the policy's first, else this user.
fn example_principal(p: &vmux_signer::state::CaPolicy) -> String {
    p.principals
        .first()
        .cloned()
        .unwrap_or_else(vmux_agent::state::current_user)
}

/// What changed between two CA policies, in words (`principals any → alice,bob`).
fn ca_policy_change(a: &vmux_signer::state::CaPolicy, b: &vmux_signer::state::CaPolicy) -> String {
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
