use vmux_proto::ErrorCode;

/// Why `vmux ssh` stopped. Every message says what to do next.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    #[error("{0}")]
    Config(String),
    #[error("this device is not paired with a signer: run `vmux client pair HOST` first")]
    NotPaired,
    #[error("no signer found (is vmux signer run running, and is this device paired?)")]
    NoSigner,
    #[error("--signer {route}: {reason} (--signer is the only route tried)")]
    SignerRoute { route: String, reason: String },
    /// No signer answered on this network, and reach says what would reach it.
    #[error("no signer found: {0}")]
    NoRoute(String),
    #[error("the signer refused this device ({0}): pair it again with `vmux client pair HOST`")]
    Revoked(ErrorCode),
    #[error("ssh: connect to host {host} port {port}: {reason}")]
    Connect {
        host: String,
        port: u16,
        reason: String,
    },
    #[error("Host key verification failed.")]
    HostKey,
    #[error("{user}@{host}: Permission denied (publickey).{why}")]
    PermissionDenied {
        user: String,
        host: String,
        /// What the signer said, when it said no.
        why: String,
    },
    #[error("connection to {host} lost: {reason}")]
    Lost { host: String, reason: String },
    #[error("{0}")]
    Forward(String),
    #[error("the signer did not issue a session certificate ({0}); run without --cert to sign each login")]
    CertRefused(String),
    #[error(transparent)]
    Agent(#[from] vmux_agent::AgentError),
}
