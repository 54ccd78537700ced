//! Link messages (`RemoteSignerEnvelope`). JSON with base64 bytes; unknown fields are
//! ignored so that a newer peer can add optional fields without breaking us.
//!
//! `{"version":2,"message":{"signRequest":{…}}}`: the message is externally tagged,
//! so serde reads the tag, then decodes the body straight into its type. (A flattened
//! or internally tagged enum would first buffer the whole untrusted frame in a generic
//! tree, at many times its size.)

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The link protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 2;

/// One message on the link.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Envelope {
    pub version: u32,
    pub message: Message,
}

impl Envelope {
    pub fn new(message: Message) -> Self {
        Envelope {
            version: PROTOCOL_VERSION,
            message,
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("envelopes always serialize")
    }

    pub fn from_json(bytes: &[u8]) -> Result<Self, crate::ProtoError> {
        serde_json::from_slice(bytes).map_err(|e| crate::ProtoError::BadEnvelope(e.to_string()))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub enum Message {
    Hello(Hello),
    PairRequest(PairRequest),
    PairResponse(PairResponse),
    KeyListRequest,
    KeyList(KeyList),
    SignRequest(Box<SignRequest>),
    SignResponse(SignResponse),
    CertificateRequest(Box<CertificateRequest>),
    CertificateResponse(Box<CertificateResponse>),
    Cancel(Cancel),
    DeviceToken(DeviceToken),
    /// A refusal that is not tied to a request: `pairingInvalid` for an unknown device.
    Error(LinkError),
    Ping,
    Pong,
    /// Pairing, signer → agent: a commitment to the signer's nonce (see `pairing`).
    PairCommit(PairCommit),
    /// Pairing, agent → signer: the agent's nonce.
    PairReveal(PairNonce),
    /// Pairing, signer → agent: the committed nonce.
    PairOpen(PairNonce),
    /// Pairing, signer → agent: the person typed the workstation's code on the signer;
    /// the signer now shows its own code, for the person to type on the workstation.
    PairAccepted,
    /// Pairing, agent → signer: the person typed the signer's code on the workstation
    /// and it matched; `proof` binds that to this pairing's transcript.
    PairConfirm(PairConfirm),
    /// Signer → agent, after Hello: how to reach this signer beyond the local network
    /// (`reach anywhere`), or that it cannot be reached that way (`anywhere: false`).
    Reach(Reach),
}

/// How a signer can be reached beyond the local network: its iroh endpoint id (derived
/// from its link identity, so it survives restarts) and the relays it uses. Sent only
/// inside the Noise session (after Hello, and in the PairResponse), so the pinned key
/// vouches for it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Reach {
    /// Whether the signer accepts connections by its endpoint id now.
    pub anywhere: bool,
    /// The iroh endpoint id (an Ed25519 public key, hex).
    pub endpoint_id: String,
    /// Relay URLs the signer uses (empty: iroh's default public relays).
    #[serde(default)]
    pub relays: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PairCommit {
    #[serde(with = "b64")]
    pub commitment: Vec<u8>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PairConfirm {
    #[serde(with = "b64")]
    pub proof: Vec<u8>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PairNonce {
    #[serde(with = "b64")]
    pub nonce: Vec<u8>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum Role {
    Agent,
    Signer,
    Client,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Hello {
    pub device_id: String,
    pub device_name: String,
    pub role: Role,
    /// The sending program and its version, e.g. `vmux 0.1.0` (the link protocol
    /// version is the envelope's `version`).
    pub software: String,
    /// The sender's clock (Unix seconds) when it sent this: the agent compares it with
    /// its own to tell the person about a skew before requests expire for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<u64>,
}

/// Sent by an agent that is not paired yet; the signer queues it for a human, who
/// compares the 6-digit code both screens show.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PairRequest {
    pub device_name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PairResponse {
    pub approved: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorCode>,
    /// The signer's name, for the agent's list of paired signers.
    #[serde(default)]
    pub signer_name: String,
    /// How to reach the signer beyond the local network, bound to this pairing by the
    /// Noise handshake and the commitment round it follows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reach: Option<Reach>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KeyRecord {
    pub algorithm: String,
    #[serde(with = "b64")]
    pub public_key: Vec<u8>,
    pub comment: String,
    /// `tpm`, `pkcs11` or `software` (`providerKind` on the wire; `provider` is read too,
    /// as earlier versions wrote it).
    #[serde(rename = "providerKind", alias = "provider", default = "software")]
    pub provider: String,
    pub display_name: String,
    pub enabled: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KeyList {
    pub keys: Vec<KeyRecord>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum Origin {
    Agent,
    Client,
}

/// What the data to sign is, as far as the requesting side could tell.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Context {
    /// The calling process chain, e.g. `ssh (4242) ← git ← zsh`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requester: Option<String>,
    /// `login`, `sshsig` or `unknown`.
    #[serde(default = "unknown")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// `verified`, `bound`, `forwarded` or `unknown`.
    #[serde(default = "unknown")]
    pub quality: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_key_fingerprint: Option<String>,
    /// Forwarded connections: every hop, first to last.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hops: Vec<String>,
}

fn software() -> String {
    "software".into()
}

fn unknown() -> String {
    "unknown".into()
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SignRequest {
    pub request_id: Uuid,
    #[serde(with = "b64")]
    pub key_blob: Vec<u8>,
    pub algorithm: String,
    /// SSH_AGENT_RSA_SHA2_256 (2) / SSH_AGENT_RSA_SHA2_512 (4).
    pub flags: u32,
    pub device_id: String,
    pub device_name: String,
    pub origin: Origin,
    #[serde(with = "b64")]
    pub data: Vec<u8>,
    #[serde(with = "b64")]
    pub nonce: Vec<u8>,
    /// Unix seconds.
    pub issued: u64,
    pub expires: u64,
    /// What the requesting side claims about the request (requester, host name, kind):
    /// shown as claims; a claim that contradicts the data is refused (`contextMismatch`).
    #[serde(default)]
    pub context: Context,
    /// The session bindings the requesting side holds for the connection this request
    /// came on, first to last (`session-bind@openssh.com`, PROTOCOL.agent §1; or what an
    /// embedded client saw itself). The signer verifies them and names the host from its
    /// own pins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bindings: Vec<SessionBinding>,
    /// The key is the session certificate this signer's CA issued to the device: the
    /// device signs itself, and asks only for the person's approval (a login it cannot
    /// prove is its own, e.g. from a client that bound no session).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub session_cert: bool,
}

/// One `session-bind@openssh.com`: the server's host key, the session id (exchange
/// hash), the server's signature over the session id, and whether the connection that
/// bound it forwards the agent.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SessionBinding {
    #[serde(with = "b64")]
    pub host_key: Vec<u8>,
    #[serde(with = "b64")]
    pub session_id: Vec<u8>,
    #[serde(with = "b64")]
    pub signature: Vec<u8>,
    #[serde(default)]
    pub is_forwarding: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SignResponse {
    pub request_id: Uuid,
    pub approved: bool,
    /// The SSH signature blob (RFC 4253 §6.6 `string format, string blob`).
    #[serde(default, with = "b64opt", skip_serializing_if = "Option::is_none")]
    pub signature: Option<Vec<u8>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorCode>,
    /// Why, in words the requesting side can show its person (`error` set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Ask the signer's CA to certify an ephemeral key the agent holds in memory only.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CertificateRequest {
    pub request_id: Uuid,
    /// The ephemeral public key blob (RFC 4253 §6.6).
    #[serde(with = "b64")]
    pub public_key: Vec<u8>,
    /// Requested validity in seconds; the signer caps it by its policy.
    pub validity_secs: u64,
    /// Requested principals; empty means "what the policy gives".
    #[serde(default)]
    pub principals: Vec<String>,
    pub device_id: String,
    pub device_name: String,
    #[serde(with = "b64")]
    pub nonce: Vec<u8>,
    pub issued: u64,
    pub expires: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CertificateResponse {
    pub request_id: Uuid,
    /// The certificate blob (OpenSSH PROTOCOL.certkeys), absent on error.
    #[serde(default, with = "b64opt", skip_serializing_if = "Option::is_none")]
    pub certificate: Option<Vec<u8>>,
    #[serde(default, with = "b64opt", skip_serializing_if = "Option::is_none")]
    pub ca_public_key: Option<Vec<u8>>,
    #[serde(default)]
    pub valid_after: u64,
    #[serde(default)]
    pub valid_before: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorCode>,
    /// Why, in words the requesting side can show its person (`error` set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The signer's wake URL (its "device token"): where an agent POSTs a content-free
/// wake message when it needs the signer and the link is down.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DeviceToken {
    pub wake_url: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Cancel {
    pub request_id: Uuid,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LinkError {
    pub code: ErrorCode,
    pub message: String,
}

/// Why a request was not signed. Unknown codes from a newer peer decode as `Internal`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub enum ErrorCode {
    UserDenied,
    RequestExpired,
    ReplayDetected,
    PairingInvalid,
    KeyNotFound,
    KeyDisabled,
    PolicyDenied,
    /// The requesting side's claims about the request contradict the data to sign.
    ContextMismatch,
    PresenceFailed,
    UnsupportedAlgorithm,
    Busy,
    SignerUnavailable,
    #[serde(other)]
    Internal,
}

impl ErrorCode {
    pub fn as_str(&self) -> &'static str {
        match self {
            ErrorCode::UserDenied => "userDenied",
            ErrorCode::RequestExpired => "requestExpired",
            ErrorCode::ReplayDetected => "replayDetected",
            ErrorCode::PairingInvalid => "pairingInvalid",
            ErrorCode::KeyNotFound => "keyNotFound",
            ErrorCode::KeyDisabled => "keyDisabled",
            ErrorCode::PolicyDenied => "policyDenied",
            ErrorCode::ContextMismatch => "contextMismatch",
            ErrorCode::PresenceFailed => "presenceFailed",
            ErrorCode::UnsupportedAlgorithm => "unsupportedAlgorithm",
            ErrorCode::Busy => "busy",
            ErrorCode::SignerUnavailable => "signerUnavailable",
            ErrorCode::Internal => "internal",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Bytes as standard base64 strings.
pub mod b64 {
    use base64::{engine::general_purpose::STANDARD, Engine};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        STANDARD
            .decode(s.as_bytes())
            .map_err(serde::de::Error::custom)
    }
}

/// Optional bytes as base64.
pub mod b64opt {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match bytes {
            Some(b) => super::b64::serialize(b, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        #[derive(Deserialize)]
        struct W(#[serde(with = "super::b64")] Vec<u8>);
        Ok(Option::<W>::deserialize(d)?.map(|w| w.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_unknown_fields() {
        let e = Envelope::new(Message::SignResponse(SignResponse {
            request_id: Uuid::nil(),
            approved: true,
            signature: Some(vec![1, 2, 3]),
            error: None,
            message: None,
        }));
        let j = e.to_json();
        assert_eq!(Envelope::from_json(&j).unwrap(), e);
        let mut v: serde_json::Value = serde_json::from_slice(&j).unwrap();
        v["futureField"] = serde_json::json!(42);
        let back = Envelope::from_json(&serde_json::to_vec(&v).unwrap()).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn every_message_round_trips() {
        let msgs = vec![
            Message::Hello(Hello {
                device_id: "d".into(),
                device_name: "n".into(),
                role: Role::Agent,
                software: "vmux 0".into(),
                time: Some(1_700_000_000),
            }),
            Message::PairRequest(PairRequest {
                device_name: "n".into(),
            }),
            Message::KeyListRequest,
            Message::KeyList(KeyList { keys: vec![] }),
            Message::Cancel(Cancel {
                request_id: Uuid::nil(),
            }),
            Message::Ping,
            Message::Pong,
            Message::Reach(Reach {
                anywhere: true,
                endpoint_id: "ab".into(),
                relays: vec!["https://relay.example./".into()],
            }),
            Message::PairResponse(PairResponse {
                approved: true,
                error: None,
                signer_name: "s".into(),
                reach: Some(Reach::default()),
            }),
        ];
        for m in msgs {
            let e = Envelope::new(m);
            assert_eq!(Envelope::from_json(&e.to_json()).unwrap(), e);
        }
    }

    #[test]
    fn unknown_error_code_is_internal() {
        let j = br#"{"version":2,"message":{"signResponse":{"requestId":"00000000-0000-0000-0000-000000000000","approved":false,"error":"somethingNew"}}}"#;
        match Envelope::from_json(j).unwrap().message {
            Message::SignResponse(r) => assert_eq!(r.error, Some(ErrorCode::Internal)),
            m => panic!("{m:?}"),
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for g in [
            &b""[..],
            b"{",
            b"[]",
            b"{\"message\":\"hello\"}",
            b"\xff\xfe",
        ] {
            assert!(Envelope::from_json(g).is_err());
        }
    }
}
