//! What the agent keeps on disk, all under `<vmux home>/agent/`: `config.toml`,
//! `identity` (the link's Noise static key), `signers.json` (paired signers and their
//! pinned keys), `keys.json` (public key cache) and `requests.log`. No SSH private key.

use crate::AgentError;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use vmux_proto::envelope::KeyRecord;
use vmux_proto::store;

#[derive(Clone, Debug)]
pub struct AgentHome {
    pub dir: PathBuf,
    /// Set when `VMUX_HOME` is: then the socket lives there too.
    pub vmux_home_set: bool,
    /// `vmux ssh`'s state rather than the agent's.
    pub client: bool,
}

impl AgentHome {
    pub fn new(vmux_home: &Path) -> Self {
        AgentHome {
            dir: vmux_home.join("agent"),
            vmux_home_set: std::env::var_os("VMUX_HOME").is_some_and(|v| !v.is_empty()),
            client: false,
        }
    }
    /// `vmux ssh`'s own pairing: the same layout under `<vmux home>/client/`, with its
    /// own link identity (a device of its own on the signer).
    pub fn client(vmux_home: &Path) -> Self {
        AgentHome {
            dir: vmux_home.join("client"),
            vmux_home_set: std::env::var_os("VMUX_HOME").is_some_and(|v| !v.is_empty()),
            client: true,
        }
    }

    /// The name signers show for this device: the config's `name`, else the host name
    /// (`host (vmux ssh)` for the client, so the two devices of one machine differ).
    pub fn device_name(&self, config: &AgentConfig) -> String {
        match (&config.name, self.client) {
            (Some(n), _) => n.clone(),
            (None, false) => hostname(),
            (None, true) => format!("{} (vmux ssh)", hostname()),
        }
    }
    pub fn config(&self) -> PathBuf {
        self.dir.join("config.toml")
    }
    pub fn identity(&self) -> PathBuf {
        self.dir.join("identity")
    }
    pub fn signers(&self) -> PathBuf {
        self.dir.join("signers.json")
    }
    pub fn keys(&self) -> PathBuf {
        self.dir.join("keys.json")
    }
    pub fn log(&self) -> PathBuf {
        self.dir.join("requests.log")
    }
    pub fn status_file(&self) -> PathBuf {
        self.dir.join("status.json")
    }

    /// `--socket`, else the config's `socket`, else `$VMUX_HOME/agent.sock` when
    /// VMUX_HOME is set, else `~/.ssh/vmux-agent.sock`.
    pub fn socket(&self, config: &AgentConfig) -> PathBuf {
        if let Some(s) = &config.socket {
            return s.clone();
        }
        if self.vmux_home_set {
            return self.dir.parent().unwrap_or(&self.dir).join("agent.sock");
        }
        store::home_dir().join(".ssh/vmux-agent.sock")
    }

    pub fn load_config(&self) -> Result<AgentConfig, AgentError> {
        Ok(store::read_toml(&self.config())?)
    }

    pub fn load_signers(&self) -> Result<Vec<PairedSigner>, AgentError> {
        Ok(store::read_json(&self.signers())?.unwrap_or_default())
    }

    pub fn save_signers(&self, s: &[PairedSigner]) -> Result<(), AgentError> {
        Ok(store::write_json(&self.signers(), &s)?)
    }

    pub fn load_keys(&self) -> Result<Vec<CachedKey>, AgentError> {
        Ok(store::read_json(&self.keys())?.unwrap_or_default())
    }

    pub fn save_keys(&self, k: &[CachedKey]) -> Result<(), AgentError> {
        Ok(store::write_json(&self.keys(), &k)?)
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentConfig {
    /// The name signers show for this workstation (default: host name).
    pub name: Option<String>,
    pub socket: Option<PathBuf>,
    /// How long to wait for a signer's link before a signature fails, in seconds.
    pub connect_timeout_secs: u64,
    /// The window (expires − issued) of every request, in seconds.
    pub request_window_secs: u64,
    /// Ask the signer for a session certificate on connect and keep it renewed.
    pub session_certs: bool,
    /// Validity asked for (the signer caps it), in seconds.
    pub cert_validity_secs: u64,
    /// Renew when less than this remains and a signer is reachable, in seconds.
    pub cert_renew_before_secs: u64,
    /// Files that name host keys for the destination shown on the signer.
    pub known_hosts: Vec<PathBuf>,
    /// After a wake POST, how long to wait for the signer's link, in seconds.
    pub wake_timeout_secs: u64,
    /// Post wake messages to a URL on this machine or its local link too (a signer
    /// chooses its wake URL: by default it cannot make this agent call local services).
    pub wake_local: bool,
    /// mDNS discovery of signers: `auto` (all interfaces), `loopback` or `off`.
    pub discovery: String,
    /// Let the session certificate sign logins that come through agent forwarding
    /// (`ssh -A`): off by default, so a forwarded agent always reaches the signer.
    pub forwarded_cert: bool,
    /// `vmux ssh` only (its `client/config.toml`): log in with a session certificate of
    /// its own, as `--cert` does.
    pub ssh_cert: bool,
    /// Where the person hears what a request waits for and how it ended: `both` (the
    /// requester's terminal and a desktop notification), `tty`, `notify` or `off`.
    pub feedback: String,
    /// The tray item (StatusNotifierItem): `auto` (where the desktop has a tray) or `off`.
    pub tray: String,
    /// An upstream agent's socket (`upstream.rs`): its keys are listed after vmux's and
    /// sign without a prompt, outside vmux's promise.
    pub upstream: Option<PathBuf>,
    /// Let connections forwarded with `ssh -A` see and use the upstream's keys.
    pub upstream_forwarded: bool,
    /// The TPM that seals this device's identity (`vmux agent init --store tpm`):
    /// a TCTI such as `device:/dev/tpmrm0` or `swtpm:host=…,port=…`; default
    /// `TPM2TOOLS_TCTI`, `TCTI`, else the kernel's resource manager.
    pub tcti: Option<String>,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            name: None,
            socket: None,
            connect_timeout_secs: 10,
            request_window_secs: 60,
            session_certs: true,
            cert_validity_secs: 8 * 3600,
            cert_renew_before_secs: 3600,
            wake_timeout_secs: 15,
            wake_local: false,
            discovery: "auto".into(),
            forwarded_cert: false,
            ssh_cert: false,
            feedback: "both".into(),
            tray: "auto".into(),
            upstream: None,
            upstream_forwarded: false,
            tcti: None,
            known_hosts: vec![
                store::home_dir().join(".ssh/known_hosts"),
                PathBuf::from("/etc/ssh/ssh_known_hosts"),
            ],
        }
    }
}

impl AgentConfig {
    pub fn device_name(&self) -> String {
        self.name.clone().unwrap_or_else(hostname)
    }
}

/// The user this process runs as (`USER`, else the password database): the principal a
/// session certificate is asked for.
pub fn current_user() -> String {
    if let Some(u) = std::env::var("USER").ok().filter(|u| !u.is_empty()) {
        return u;
    }
    // SAFETY: getpwuid returns a pointer into static storage or null; read it at once.
    unsafe {
        let pw = libc::getpwuid(libc::geteuid());
        if pw.is_null() {
            return "root".into();
        }
        std::ffi::CStr::from_ptr((*pw).pw_name)
            .to_string_lossy()
            .into_owned()
    }
}

pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..end]).to_string();
    if ok && !name.is_empty() {
        name
    } else {
        "workstation".into()
    }
}

/// A signer this agent trusts: its Noise static key is pinned here.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PairedSigner {
    pub id: String,
    pub name: String,
    #[serde(with = "vmux_proto::envelope::b64")]
    pub public_key: Vec<u8>,
    /// `host:port` where it was last reached.
    pub address: String,
    pub paired_at: u64,
    /// The signer's wake URL, from its last DeviceToken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wake_url: Option<String>,
    /// The random token this agent's wake messages carry for this signer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wake_token: Option<String>,
    /// How to reach the signer beyond the local network, as it last said (in the
    /// pairing or over the link).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reach: Option<vmux_proto::envelope::Reach>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CachedKey {
    pub signer_id: String,
    #[serde(flatten)]
    pub record: KeyRecord,
}
