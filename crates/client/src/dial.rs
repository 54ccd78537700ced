//! One SSH connection: TCP (or a `direct-tcpip` channel through the previous jump
//! host), key exchange (russh), the host key checked against known_hosts, then
//! public-key authentication in which the signer signs. The handler also answers what
//! the server opens towards this client: `-R` connections and `-A` agent channels,
//! when they were asked for; anything else is refused.

use crate::agent_forward::Forwarded;
use crate::config::{Strict, Target};
use crate::forward::Remotes;
use crate::known_hosts::{self, HostStatus};
use crate::signer::{Approval, Offer, Signers};
use crate::ClientError;
use russh::client::{self, AuthResult, Handle, Msg, Session};
use russh::keys::{HashAlg, PublicKeyOrCertificate};
use russh::{Channel, ChannelOpenFailure};
use ssh_key::PublicKey;
use std::io::{BufRead, Write};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use vmux_proto::envelope::SessionBinding;

/// What the server may open towards this client on one connection.
#[derive(Default)]
pub struct Services {
    /// `-R`: the ports the server listens on for us.
    pub remotes: Remotes,
    /// `-A`: set once the connection is authenticated.
    pub agent: OnceLock<Forwarded>,
}

/// The russh handler: the host key check, and the channels the server opens.
pub struct Client {
    target: Target,
    /// How known_hosts judged the host key (`verified`/`new`), for the signer's context.
    verdict: Arc<Mutex<Option<&'static str>>>,
    services: Arc<Services>,
}

impl client::Handler for Client {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        server: &PublicKeyOrCertificate,
    ) -> Result<bool, russh::Error> {
        let key = match server {
            PublicKeyOrCertificate::PublicKey { key, .. } => key.clone(),
            PublicKeyOrCertificate::Certificate(c) => PublicKey::from(c.public_key().clone()),
        };
        let target = self.target.clone();
        // The prompt reads the terminal: off the async runtime.
        let verdict = tokio::task::spawn_blocking(move || host_key_verdict(&target, &key))
            .await
            .unwrap_or(None);
        let ok = verdict.is_some();
        *self.verdict.lock().unwrap() = verdict;
        Ok(ok)
    }

    async fn auth_banner(
        &mut self,
        banner: &str,
        _session: &mut client::Session,
    ) -> Result<(), russh::Error> {
        for line in banner.lines().take(100) {
            eprintln!("{}", vmux_proto::text::inert(line, 1024));
        }
        Ok(())
    }

    async fn server_channel_open_forwarded_tcpip(
        &mut self,
        channel: Channel<Msg>,
        connected_address: &str,
        connected_port: u32,
        originator_address: &str,
        originator_port: u32,
        reply: client::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), russh::Error> {
        if !self.services.remotes.has(connected_port) {
            tracing::warn!(
                "the server opened a forwarded connection for {}:{connected_port}, which was not asked for; refused",
                vmux_proto::text::field(connected_address)
            );
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        }
        tracing::debug!(
            "-R {connected_port}: connection from {}:{originator_port}",
            vmux_proto::text::field(originator_address)
        );
        reply.accept().await;
        self.services.remotes.connect(connected_port, channel);
        Ok(())
    }

    async fn server_channel_open_agent_forward(
        &mut self,
        channel: Channel<Msg>,
        reply: client::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), russh::Error> {
        match self.services.agent.get() {
            Some(f) => {
                tracing::debug!("the server opened a forwarded agent connection");
                reply.accept().await;
                f.serve(channel);
            }
            None => {
                tracing::warn!("the server opened an agent channel, but -A was not given; refused");
                reply
                    .reject(ChannelOpenFailure::AdministrativelyProhibited)
                    .await;
            }
        }
        Ok(())
    }

    async fn server_channel_open_session(
        &mut self,
        _channel: Channel<Msg>,
        reply: client::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), russh::Error> {
        reply
            .reject(ChannelOpenFailure::AdministrativelyProhibited)
            .await;
        Ok(())
    }

    async fn server_channel_open_direct_tcpip(
        &mut self,
        _channel: Channel<Msg>,
        _host_to_connect: &str,
        _port_to_connect: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: client::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), russh::Error> {
        reply
            .reject(ChannelOpenFailure::AdministrativelyProhibited)
            .await;
        Ok(())
    }

    async fn server_channel_open_x11(
        &mut self,
        _channel: Channel<Msg>,
        _originator_address: &str,
        _originator_port: u32,
        reply: client::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), russh::Error> {
        reply
            .reject(ChannelOpenFailure::AdministrativelyProhibited)
            .await;
        Ok(())
    }

    async fn server_channel_open_forwarded_streamlocal(
        &mut self,
        _channel: Channel<Msg>,
        _socket_path: &str,
        reply: client::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), russh::Error> {
        reply
            .reject(ChannelOpenFailure::AdministrativelyProhibited)
            .await;
        Ok(())
    }

    async fn server_channel_open_direct_streamlocal(
        &mut self,
        _channel: Channel<Msg>,
        _socket_path: &str,
        reply: client::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), russh::Error> {
        reply
            .reject(ChannelOpenFailure::AdministrativelyProhibited)
            .await;
        Ok(())
    }
}

/// Accept (`Some(quality)`) or refuse (`None`, after saying why) a host key.
fn host_key_verdict(t: &Target, key: &PublicKey) -> Option<&'static str> {
    let name = t.known_hosts_name();
    let fp = known_hosts::fingerprint(key.key_data());
    let kind = key.algorithm().as_str().to_string();
    match known_hosts::check(&t.all_known_hosts(), &name, key.key_data()) {
        HostStatus::Known => {
            tracing::debug!("host key {kind} {fp} for {name} found in known_hosts");
            Some("verified")
        }
        HostStatus::Revoked { file, line } => {
            eprintln!(
                "Host key {fp} for {name} is marked as revoked ({}:{line}).\nThis could mean that a stolen key is being used to impersonate this host.",
                file.display()
            );
            None
        }
        HostStatus::Changed { file, line } => {
            let bar = "@".repeat(59);
            eprintln!(
                "{bar}\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\n{bar}\n\
                 IT IS POSSIBLE THAT SOMEONE IS DOING SOMETHING NASTY!\n\
                 Someone could be eavesdropping on you right now (man-in-the-middle attack)!\n\
                 It is also possible that a host key has just been changed.\n\
                 The fingerprint for the {kind} key sent by the remote host is\n{fp}.\n\
                 Offending {kind} key in {}:{line}\n\
                 If the host key was replaced on purpose, remove the old one with:\n  \
                 ssh-keygen -R '{name}' -f '{}'\n\
                 Host key for {name} has changed; vmux ssh never connects to a changed key.",
                file.display(),
                file.display(),
            );
            None
        }
        HostStatus::Unknown => {
            let accepted = match t.strict {
                Strict::Yes => {
                    eprintln!(
                        "No {kind} host key is known for {name} and you have requested strict checking.\n\
                         (fingerprint {fp}; add it to known_hosts, or use -o StrictHostKeyChecking=ask)"
                    );
                    false
                }
                Strict::AcceptNew | Strict::No => true,
                Strict::Ask if t.batch_mode => {
                    eprintln!(
                        "No {kind} host key is known for {name} (fingerprint {fp}), and BatchMode forbids asking."
                    );
                    false
                }
                Strict::Ask => ask(&name, &kind, &fp),
            };
            if !accepted {
                return None;
            }
            let file = t.known_hosts.first()?;
            match known_hosts::add(file, &name, key, t.hash_known_hosts) {
                Ok(()) => eprintln!(
                    "Warning: Permanently added '{name}' ({kind}) to the list of known hosts."
                ),
                Err(e) => eprintln!(
                    "vmux ssh: could not add the host key to {}: {e}",
                    file.display()
                ),
            }
            Some("new")
        }
    }
}

/// OpenSSH's question, on the controlling terminal: yes, no, or the fingerprint.
fn ask(name: &str, kind: &str, fp: &str) -> bool {
    let Ok(tty) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
    else {
        eprintln!(
            "The authenticity of host '{name}' can't be established ({kind} key {fp}), and there is no terminal to ask on.\n\
             Add the key to known_hosts, or use -o StrictHostKeyChecking=accept-new."
        );
        return false;
    };
    let mut out = match tty.try_clone() {
        Ok(t) => t,
        Err(_) => return false,
    };
    let _ = write!(
        out,
        "The authenticity of host '{name}' can't be established.\r\n{kind} key fingerprint is {fp}.\r\n\
         Are you sure you want to continue connecting (yes/no/[fingerprint])? "
    );
    let mut input = std::io::BufReader::new(tty);
    loop {
        let mut line = String::new();
        if input.read_line(&mut line).unwrap_or(0) == 0 {
            return false;
        }
        match line.trim() {
            "yes" => return true,
            "no" => return false,
            a if a == fp => return true,
            _ => {
                let _ = write!(out, "Please type 'yes', 'no' or the fingerprint: ");
            }
        }
    }
}

pub struct Connection {
    pub handle: Handle<Client>,
    pub binding: SessionBinding,
    pub quality: &'static str,
}

/// TCP (or a channel through `via`, the previous jump host) and key exchange, the
/// host key checked.
pub async fn connect(
    t: &Target,
    via: Option<&Handle<Client>>,
    services: Arc<Services>,
) -> Result<Connection, ClientError> {
    let fail = |reason: String| ClientError::Connect {
        host: t.host.clone(),
        port: t.port,
        reason,
    };
    let timeout = Duration::from_secs(t.connect_timeout.unwrap_or(30));
    let keepalive = t.server_alive_interval.unwrap_or(30);
    let mut preferred = russh::Preferred::default();
    preferred.key = known_hosts::preferred_algorithms(
        &t.all_known_hosts(),
        &t.known_hosts_name(),
        &preferred.key,
    )
    .into();
    let config = Arc::new(client::Config {
        inactivity_timeout: None,
        keepalive_interval: (keepalive > 0).then(|| Duration::from_secs(keepalive)),
        keepalive_max: t.server_alive_count_max.unwrap_or(3),
        preferred,
        ..Default::default()
    });
    let verdict = Arc::new(Mutex::new(None));
    let handler = Client {
        target: t.clone(),
        verdict: verdict.clone(),
        services,
    };
    let connected = match via {
        None => {
            tracing::debug!("connecting to {} port {}", t.host, t.port);
            let tcp = tokio::time::timeout(
                timeout,
                tokio::net::TcpStream::connect((t.host.as_str(), t.port)),
            )
            .await
            .map_err(|_| fail("Connection timed out".into()))?
            .map_err(|e| fail(os_reason(&e)))?;
            let _ = tcp.set_nodelay(true);
            client::connect_stream(config, tcp, handler).await
        }
        Some(jump) => {
            tracing::debug!(
                "connecting to {} port {} through the jump host",
                t.host,
                t.port
            );
            let ch = tokio::time::timeout(
                timeout,
                jump.channel_open_direct_tcpip(t.host.clone(), t.port.into(), "127.0.0.1", 0),
            )
            .await
            .map_err(|_| fail("Connection timed out (through the jump host)".into()))?
            .map_err(|e| fail(format!("the jump host could not connect to it ({e})")))?;
            client::connect_stream(config, ch.into_stream(), handler).await
        }
    };
    let handle = match connected {
        Ok(h) => h,
        Err(russh::Error::UnknownKey) => return Err(ClientError::HostKey),
        Err(e) if verdict.lock().unwrap().is_none() && checked(&e) => {
            return Err(ClientError::HostKey)
        }
        Err(e) => return Err(fail(e.to_string())),
    };
    let quality = verdict.lock().unwrap().ok_or(ClientError::HostKey)?;
    let b = handle
        .agent_session_binding()
        .ok_or_else(|| fail("the key exchange gave no session binding".into()))?;
    let binding = SessionBinding {
        host_key: b.host_key().to_vec(),
        session_id: b.session_id().to_vec(),
        signature: b.signature().to_vec(),
        is_forwarding: false,
    };
    Ok(Connection {
        handle,
        binding,
        quality,
    })
}

fn checked(e: &russh::Error) -> bool {
    matches!(e, russh::Error::UnknownKey | russh::Error::Disconnect)
}

fn os_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "Connection refused".into(),
        _ => e.to_string(),
    }
}

/// Offer the signer's keys one by one; the signer is asked only for a key the server
/// accepted. A person's "no" ends the login: the next key would ask them again.
pub async fn authenticate(
    conn: &mut Connection,
    t: &Target,
    signers: &Signers,
    offers: &[Offer],
    cert: Option<&std::sync::Arc<vmux_agent::cert::SessionCert>>,
) -> Result<(), ClientError> {
    let denied = |why: String| ClientError::PermissionDenied {
        user: t.user.clone(),
        host: t.host.clone(),
        why,
    };
    if let Some(c) = cert {
        let certificate = ssh_key::Certificate::from_bytes(&c.blob)
            .map_err(|e| ClientError::CertRefused(e.to_string()))?;
        let r = conn
            .handle
            .authenticate_certificate_with(
                &t.user,
                certificate,
                None,
                &mut crate::signer::LocalCert(c.clone()),
            )
            .await;
        match r {
            Ok(AuthResult::Success) => return Ok(()),
            Ok(AuthResult::Failure { .. }) => eprintln!(
                "vmux ssh: {} does not accept the session certificate (is the signer's CA in its TrustedUserCAKeys?); trying the signer's keys",
                t.host
            ),
            Err(_) => {
                return Err(ClientError::Lost {
                    host: t.host.clone(),
                    reason: "the server closed the connection during authentication".into(),
                })
            }
        }
    }
    for offer in offers {
        tracing::debug!(
            "offering {} key {} ({}, on signer {})",
            offer.key.algorithm(),
            known_hosts::fingerprint(offer.key.key_data()),
            vmux_proto::text::field(&offer.comment),
            vmux_proto::text::field(&offer.signer)
        );
        let hash = match offer.key.algorithm() {
            ssh_key::Algorithm::Rsa { .. } => conn
                .handle
                .best_supported_rsa_hash()
                .await
                .ok()
                .flatten()
                .flatten()
                .or(Some(HashAlg::Sha512)),
            _ => None,
        };
        let mut approval = Approval {
            signers,
            target: t,
            binding: conn.binding.clone(),
            quality: conn.quality,
        };
        let result = conn
            .handle
            .authenticate_publickey_with(&t.user, offer.key.clone(), hash, &mut approval)
            .await;
        match result {
            Ok(AuthResult::Success) => {
                tracing::debug!(
                    "authenticated to {} as {} with key {}",
                    t.host_port(),
                    t.user,
                    known_hosts::fingerprint(offer.key.key_data())
                );
                return Ok(());
            }
            Ok(AuthResult::Failure { .. }) if conn.handle.is_closed() => {
                return Err(ClientError::Lost {
                    host: t.host.clone(),
                    reason: "the server closed the connection during authentication".into(),
                })
            }
            Ok(AuthResult::Failure { .. }) => {
                tracing::debug!("the server does not accept key {}", offer.comment);
            }
            Err(crate::signer::SignFailed::Session) => {
                return Err(ClientError::Lost {
                    host: t.host.clone(),
                    reason: "the server closed the connection during authentication".into(),
                })
            }
            Err(crate::signer::SignFailed::Refused(code)) => {
                let why = match code {
                    vmux_proto::ErrorCode::UserDenied => " (denied on the signer)".to_string(),
                    vmux_proto::ErrorCode::SignerUnavailable => return Err(ClientError::NoSigner),
                    vmux_proto::ErrorCode::PairingInvalid => {
                        return Err(ClientError::Revoked(code))
                    }
                    code => format!(" (the signer answered {code})"),
                };
                return Err(denied(why));
            }
        }
    }
    Err(denied(if offers.is_empty() {
        " (the signer offers no keys: add one with `vmux signer keys add`)".into()
    } else {
        String::new()
    }))
}
