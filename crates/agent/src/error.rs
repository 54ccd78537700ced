use std::path::PathBuf;
use vmux_proto::ErrorCode;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    #[error(transparent)]
    Proto(#[from] vmux_proto::ProtoError),
    #[error("cannot reach signer at {addr}: {reason}; is `vmux signer run` running there?")]
    Unreachable { addr: String, reason: String },
    #[error("signer at {addr} presented key {got}, but {pinned} is pinned: refusing (re-pair if the signer was reset)")]
    PinMismatch {
        addr: String,
        got: String,
        pinned: String,
    },
    #[error("signer refused: {0} ({1})")]
    Refused(ErrorCode, String),
    #[error("no answer from the signer within {0}s")]
    Timeout(u64),
    #[error("link to signer lost: {0}")]
    LinkLost(String),
    #[error("no paired signer with id {0}")]
    NoSuchSigner(String),
    #[error("agent socket {path}: {reason}")]
    Socket { path: PathBuf, reason: String },
}

impl AgentError {
    /// The link error code a failed request is logged under.
    pub fn code(&self) -> ErrorCode {
        match self {
            AgentError::Refused(c, _) => *c,
            AgentError::Timeout(_) => ErrorCode::RequestExpired,
            AgentError::Unreachable { .. }
            | AgentError::LinkLost(_)
            | AgentError::NoSuchSigner(_)
            | AgentError::PinMismatch { .. } => ErrorCode::SignerUnavailable,
            _ => ErrorCode::Internal,
        }
    }
}
