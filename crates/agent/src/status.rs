//! What the running agent says about itself: written to `agent/status.json` on every
//! change, read by `vmux agent status`, `vmux status` and the tray. Every line is in the
//! person's words and true at the moment it is written.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub pid: u32,
    pub socket: String,
    pub signers: Vec<SignerStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<CertStatus>,
    #[serde(default)]
    pub certificate_expired: bool,
    /// The certificate in one line: `valid until 17:42`, `expired at 09:10 — asks again
    /// on the next login`, `none`, …
    #[serde(default)]
    pub certificate_line: String,
    /// The connection in one line: `Connected to alice-pi`, `alice-pi asleep — a
    /// request wakes it`, `No signer paired`.
    #[serde(default)]
    pub connection_line: String,
    /// Requests waiting on a signer right now.
    #[serde(default)]
    pub waiting: Vec<Waiting>,
    /// The latest outcomes, newest first, each with its reason.
    #[serde(default)]
    pub recent: Vec<Outcome>,
    /// When the status was written (Unix seconds).
    #[serde(default)]
    pub written: u64,
    /// The upstream agent, when one is configured (`upstream.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<UpstreamInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CertStatus {
    pub key_id: String,
    pub serial: u64,
    pub principals: Vec<String>,
    pub valid_after: u64,
    pub valid_before: u64,
    pub signer: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SignerStatus {
    pub id: String,
    pub name: String,
    pub address: String,
    pub connected: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When the link was last up (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<u64>,
    /// Since when the link has been in its current state (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<u64>,
    /// Whether the signer gave a wake URL (a request then wakes it).
    #[serde(default)]
    pub wakeable: bool,
    /// The signer's clock minus this machine's, measured when the link last came up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_skew_secs: Option<i64>,
    /// How the link travels while connected: `direct (LAN)`, `direct (hole-punched)` or
    /// `via relay <url>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The link's round-trip time (the last Ping answered), in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt_ms: Option<f64>,
    /// Whether the signer accepts links from anywhere (as it last said), and whether
    /// this device dials it that way: `anywhere`, `local`, or `signer only` / `here only`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reach: Option<String>,
}

impl SignerStatus {
    /// `(via relay https://relay.example/, rtt 41.0 ms)`, or nothing when not connected.
    pub fn path_line(&self) -> Option<String> {
        let path = self.path.as_ref().filter(|_| self.connected)?;
        Some(match self.rtt_ms {
            Some(ms) => format!("({path}, rtt {ms:.1} ms)"),
            None => format!("({path})"),
        })
    }
}

/// A request waiting on a signer: `Waiting for approval on alice-pi: login root@prod`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Waiting {
    pub id: String,
    pub signer: String,
    /// `login root@prod`, `git signature`, `session certificate for 8h`.
    pub what: String,
    /// `ssh (4242) ← git ← zsh`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requester: Option<String>,
    pub since: u64,
    /// `connecting` (the signer is not linked yet) or `approval`.
    pub phase: String,
}

impl Waiting {
    /// `Waiting for approval on alice-pi: login root@prod`
    pub fn line(&self) -> String {
        match self.phase.as_str() {
            "connecting" => format!("Waiting for {} to connect: {}", self.signer, self.what),
            _ => format!("Waiting for approval on {}: {}", self.signer, self.what),
        }
    }
}

/// How one request ended, with the reason in the person's words.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    pub time: u64,
    pub id: String,
    pub what: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requester: Option<String>,
    /// `approved`, `denied`, `expired`, `unreachable`, `refused`, `local-cert`.
    pub result: String,
    /// `denied on alice-pi`, `expired after 60 s on alice-pi`, …
    pub reason: String,
}

impl Status {
    /// The icon state: `waiting`, `connected` or `disconnected`.
    pub fn state(&self) -> &'static str {
        if !self.waiting.is_empty() {
            "waiting"
        } else if self.signers.iter().any(|s| s.connected) {
            "connected"
        } else {
            "disconnected"
        }
    }
}

/// What `vmux agent status` records about the upstream agent (in `status.json`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpstreamInfo {
    pub socket: String,
    pub forwarded: bool,
}
