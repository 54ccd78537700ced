use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignerError {
    #[error(transparent)]
    Proto(#[from] vmux_proto::ProtoError),
    #[error("{path}: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("{0}: wrong passphrase")]
    WrongPassphrase(PathBuf),
    #[error("{0} is encrypted: set VMUX_PASSPHRASE or run from a terminal to be asked")]
    NeedsPassphrase(PathBuf),
    #[error("no signer here: {0} does not exist; run `vmux signer init` first")]
    NotInitialized(PathBuf),
    #[error("a signer already exists in {0}")]
    AlreadyInitialized(PathBuf),
    #[error("no pending request with id {0}; `vmux signer pending` lists them")]
    UnknownRequest(String),
    #[error("id {0} matches more than one pending request; give more of it")]
    AmbiguousRequest(String),
    #[error("nothing is pending")]
    NothingPending,
    #[error("request {0} needs user verification after approval: approve it by id (`vmux signer approve ID`) to be asked for it")]
    VerificationNeeded(String),
    #[error("user verification failed ({0}): the request was refused (presenceFailed)")]
    VerificationFailed(String),
    #[error("request {0} is no longer what was displayed; look at `vmux signer pending` again")]
    DisplayChanged(String),
    #[error("the list {0} is no longer what was displayed (a request in it changed or left); nothing was decided; show it again with `vmux signer approve --list`")]
    ListChanged(String),
    #[error("a pairing is approved by typing the code the other device shows: `vmux signer approve --code NNNNNN`")]
    PairingNeedsCode,
    #[error("request {0} is not a sign request: only a device's sign requests can be muted")]
    NotMutable(String),
    #[error("several pairings are waiting ({0}): a typed code is approved only while one waits; deny the ones you did not start (`vmux signer deny ID`, `vmux signer pending` lists them) and type the code again")]
    SeveralPairings(String),
    #[error("no pending pairing has that code; compare it with the code the other device shows (`vmux signer pending` lists pairings)")]
    NoPairingWithCode,
    #[error("unsupported key type {0}: use ed25519 or ecdsa (ecdsa-sha2-nistp256); rsa only on a token or the TPM")]
    UnsupportedKeyType(String),
    #[error("security-key key: {0}")]
    SecurityKey(String),
    #[error("PKCS#11: {0}")]
    Token(String),
    #[error("TPM: {0}")]
    Tpm(String),
    #[error("this vmux was built without TPM support: rebuild with `cargo build --release --features tpm` (needs libtss2-dev)")]
    NoTpmSupport,
    #[error(
        "control socket {path}: {reason}; is the signer running (`vmux signer run`, or `vmux up`)?"
    )]
    Control { path: PathBuf, reason: String },
}
