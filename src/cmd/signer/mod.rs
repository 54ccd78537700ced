//! `vmux signer …`: the command line (this file), with the longer commands beside it:
//! `keys` (keys add/list/…), `ca` (the CA and its policy), `decide` (approve, deny,
//! lists: each shows what it decides before deciding it).

mod ca;
mod decide;
mod keys;

use ca::ca;
use decide::{decide, print_list, read_secret};
pub use keys::public_lines_of;
use keys::*;

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
        /// Default: ecdsa (P-256), the quickest for OpenSSH to check.
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
            let resp = call(&home, &ControlRequest::Pending {}).await?;
            let pending = resp.pending.unwrap_or_default();
            if json {
                println!("{}", serde_json::to_string_pretty(&pending)?);
            } else if pending.is_empty() {
                println!("nothing pending");
            } else {
                for p in &pending {
                    println!("{}", vmux_signer::describe::summary(p));
                }
                let list = call(&home, &ControlRequest::List {}).await.ok();
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
            let cleared = call(&home, &ControlRequest::PinReset {})
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
                ControlRequest::ClearMutes {}
            } else {
                ControlRequest::Mutes {}
            };
            let before = call(&home, &ControlRequest::Mutes {}).await?.mutes;
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

/// The CA key a new signer gets, in any store: ECDSA P-256. OpenSSH checks the CA's
/// signature each time it reads a certificate (`ssh` and `ssh-add -l` listing the
/// agent's keys, `sshd` at each login), and its own Ed25519 code took about 3 ms of CPU
/// for that where OpenSSL's P-256 takes a fraction of one (`ssh-keygen -L`, measured;
/// README, benchmarks). Every OpenSSH since 5.7 accepts an ECDSA CA.
const CA_TYPE: &str = "ecdsa";

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
        super::stores::generate(
            &config,
            &home.ca(),
            store,
            CA_TYPE,
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
