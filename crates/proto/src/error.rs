use std::path::PathBuf;

/// Errors of the link and of the shared on-disk helpers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProtoError {
    #[error("the peer presented key {0}, not the pinned one")]
    PinMismatch(String),
    #[error("link I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("Noise handshake or decryption failed: {0}")]
    Noise(String),
    #[error(
        "link frame of {0} bytes is over the limit (4 KiB before authentication, 1 MiB after)"
    )]
    FrameTooLarge(usize),
    #[error("link message is not a valid envelope: {0}")]
    BadEnvelope(String),
    #[error("peer closed the link")]
    Closed,
    #[error("peer speaks link protocol version {0}, this build speaks {1}")]
    Version(u32, u32),
    #[error("reach: {0}")]
    Reach(String),
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
}

impl From<snow::Error> for ProtoError {
    fn from(e: snow::Error) -> Self {
        ProtoError::Noise(e.to_string())
    }
}

impl ProtoError {
    /// An error about a file, kept to one line (parsers like to print several).
    pub fn file(path: impl Into<PathBuf>, reason: impl std::fmt::Display) -> Self {
        let reason = reason.to_string();
        let reason: Vec<&str> = reason
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        ProtoError::File {
            path: path.into(),
            reason: reason.join("; "),
        }
    }
}
